// The pinned cell's measurements and quality-control flags in the field viewer's cell panel.
// Self-contained: listens for the viewer's `hpaweb:cell-pinned` event (detail {label, cellId}) and
// reads each cell's `measurements` and `qc_flags` from the viewer's JSON (#viewer-data).
(function () {
  "use strict";

  var LABELS = {
    area_px: "Area (px)",
    perimeter_px: "Perimeter (px)",
    eccentricity: "Eccentricity",
    solidity: "Solidity",
    form_factor: "Form factor",
    major_axis_px: "Major axis (px)",
    minor_axis_px: "Minor axis (px)",
    nucleus_area_px: "Nucleus area (px)",
    red_mean: "Red mean",
    green_mean: "Green mean",
    green_median: "Green median",
    green_std: "Green std",
    green_max: "Green max",
    green_integrated: "Green integrated",
    blue_mean: "Blue mean",
    yellow_mean: "Yellow mean",
    green_nucleus_cytoplasm_ratio: "Green nucleus / cytoplasm",
    green_red_correlation: "Green-red correlation",
    green_blue_correlation: "Green-blue correlation",
    green_yellow_correlation: "Green-yellow correlation",
    focus: "Focus score",
    haralick_contrast: "Haralick contrast",
    haralick_correlation: "Haralick correlation",
    haralick_entropy: "Haralick entropy",
    haralick_homogeneity: "Haralick homogeneity",
  };
  var FLAGS = {
    out_of_focus: "out of focus",
    cut_by_border: "cut by the border",
    merged: "merged",
    failed_contour: "failed contour",
    too_small: "too small",
  };

  function format(value) {
    if (value === null || value === undefined) return "n/a";
    if (Number.isInteger(value) && Math.abs(value) < 1e7) return String(value);
    var magnitude = Math.abs(value);
    return magnitude !== 0 && (magnitude < 0.01 || magnitude >= 1e5) ? value.toExponential(3) : value.toFixed(3);
  }

  function start() {
    var panel = document.querySelector("[data-cell-measurements]");
    var data = document.getElementById("viewer-data");
    if (!panel || !data) return;
    var cells = {};
    (JSON.parse(data.textContent).cells || []).forEach(function (cell) {
      cells[cell.label] = cell;
    });
    var list = panel.querySelector("[data-cell-measurement-list]");
    var qc = panel.querySelector("[data-cell-qc]");

    function show(cell) {
      list.replaceChildren();
      if (!cell || !cell.measurements) {
        panel.hidden = true;
        return;
      }
      Object.keys(LABELS).forEach(function (name) {
        if (!(name in cell.measurements)) return;
        var term = document.createElement("dt");
        term.textContent = LABELS[name];
        var value = document.createElement("dd");
        value.textContent = format(cell.measurements[name]);
        list.append(term, value);
      });
      var flags = cell.qc_flags || [];
      qc.textContent = flags.length
        ? "Quality control: " + flags.map(function (flag) { return FLAGS[flag] || flag; }).join(", ") + "."
        : "Quality control: no flags.";
      panel.hidden = false;
    }

    document.addEventListener("hpaweb:cell-pinned", function (event) {
      var detail = event.detail || {};
      show(detail.label === null || detail.label === undefined ? null : cells[detail.label]);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
