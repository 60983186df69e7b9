// Annotating cells and fixing masks, in the field viewer (the pinned cell) and the gallery (ticked cells).
// Everything goes through the REST API with the page's session and CSRF token; the viewer is reached only
// through its hooks: the `hpaweb:cell-pinned` event and window.hpawebViewer ({select, redraw, cells}).
// Keys (not while typing): 1-9 classes 0-8, Shift+1-9 classes 9-17, x Negative, Enter save,
// Shift+N not a cell, Shift+B badly outlined, z undo (viewer); a ticks every tile (gallery).
(function () {
  "use strict";
  const csrf = (() => {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
    } catch (error) {
      return "";
    }
  })();

  async function api(method, url, body) {
    const response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf, Accept: "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = {};
    try {
      data = await response.json();
    } catch (error) {
      data = {};
    }
    if (!response.ok) {
      const detail = data.detail || Object.values(data).flat().join(" ") || `The server answered ${response.status}.`;
      const failure = new Error(detail);
      failure.status = response.status;
      throw failure;
    }
    return data;
  }

  // The class a key stands for, or null: 1-9 -> 0-8, Shift+1-9 -> 9-17, x -> 18 (Negative).
  function classForKey(event) {
    const digit = /^Digit([1-9])$/.exec(event.code || "");
    if (digit) return Number(digit[1]) - 1 + (event.shiftKey ? 9 : 0);
    if (!event.shiftKey && (event.key === "x" || event.key === "X")) return 18;
    return null;
  }

  function typing(event) {
    return event.target.closest && event.target.closest("input:not([type=checkbox]):not([type=radio]), select, textarea, [contenteditable]");
  }

  function classPicker(root) {
    const buttons = [...root.querySelectorAll("[data-curation-class]")];
    const chosen = new Set();
    function show() {
      buttons.forEach((button) => button.setAttribute("aria-pressed", String(chosen.has(Number(button.dataset.curationClass)))));
    }
    buttons.forEach((button) => button.addEventListener("click", () => toggle(Number(button.dataset.curationClass))));
    function toggle(index) {
      if (chosen.has(index)) chosen.delete(index);
      else chosen.add(index);
      show();
    }
    return {
      chosen,
      toggle,
      set(classes) {
        chosen.clear();
        classes.forEach((index) => chosen.add(index));
        show();
      },
    };
  }

  // ---- the field viewer ------------------------------------------------------------------------
  const panel = document.querySelector("[data-curation]");
  if (panel) {
    const fieldId = panel.dataset.fieldId;
    const fieldWidth = Number(panel.dataset.fieldWidth);
    const fieldHeight = Number(panel.dataset.fieldHeight);
    const status = panel.querySelector("[data-curation-status]");
    const current = panel.querySelector("[data-curation-current]");
    const cellName = panel.querySelector("[data-curation-cell]");
    const undoButton = panel.querySelector("[data-curation-undo]");
    const maskUndo = panel.querySelector("[data-mask-undo]");
    const picker = classPicker(panel);
    const cells = new Map(); // label -> API cell (id, annotation, annotation_version)
    let label = 0;
    let merging = 0; // the label waiting for its merge partner
    let lastEdit = null;

    const say = (text, isError) => {
      status.textContent = text;
      status.classList.toggle("error", Boolean(isError));
    };

    async function loadCells() {
      let url = `/api/fields/${fieldId}/cells/?page_size=500`;
      while (url) {
        const page = await api("GET", url);
        page.results.forEach((cell) => cells.set(cell.label, cell));
        url = page.next;
      }
      const edits = await api("GET", `/api/fields/${fieldId}/mask-edits/?page_size=1`);
      lastEdit = edits.results.find((edit) => !edit.undone_at) || null;
      maskUndo.hidden = !lastEdit;
    }

    function describe(cell) {
      const annotation = cell && cell.annotation;
      if (!annotation) return "Not annotated yet.";
      const names = window.hpawebViewer && document.getElementById("viewer-data")
        ? JSON.parse(document.getElementById("viewer-data").textContent).classNames
        : [];
      const what = annotation.kind === "classes"
        ? annotation.classes.map((index) => names[index] || index).join(", ")
        : annotation.kind === "not_a_cell" ? "not a cell" : "badly outlined";
      return `Annotated by ${annotation.author} (${annotation.created_at.replace("T", " ")}): ${what}.`;
    }

    function showCell() {
      const cell = cells.get(label);
      panel.hidden = !label || !cell;
      if (!cell) return;
      cellName.textContent = `cell ${label}`;
      current.textContent = describe(cell);
      picker.set(cell.annotation && cell.annotation.kind === "classes" ? cell.annotation.classes : []);
      undoButton.disabled = !cell.annotation;
    }

    async function refreshCell(cellId) {
      const fresh = await api("GET", `/api/cells/${cellId}/`);
      cells.set(fresh.label, fresh);
      if (fresh.label === label) showCell();
    }

    async function annotate(kind) {
      const cell = cells.get(label);
      if (!cell) return;
      const classes = kind === "classes" ? [...picker.chosen].sort((a, b) => a - b) : [];
      if (kind === "classes" && !classes.length) {
        say("Choose at least one class first (keys 1-9, Shift+1-9, x), or mark the cell as not a cell or badly outlined.", true);
        return;
      }
      let message = `Saved for cell ${cell.label}.`;
      let failed = false;
      try {
        await api("POST", `/api/cells/${cell.id}/annotations/`, { kind, classes, version: cell.annotation_version });
      } catch (error) {
        [message, failed] = [error.message, true];
      }
      await refreshCell(cell.id); // the current annotation and version, also after a conflict
      say(message, failed);
    }

    async function undo() {
      const cell = cells.get(label);
      if (!cell || !cell.annotation) return;
      let message = `The annotation of cell ${cell.label} was undone.`;
      let failed = false;
      try {
        await api("POST", `/api/annotations/${cell.annotation.id}/undo/`, { version: cell.annotation_version });
      } catch (error) {
        [message, failed] = [error.message, true];
      }
      await refreshCell(cell.id);
      say(message, failed);
    }

    async function maskFix(url, body, done) {
      say("Fixing the mask; the field's pictures and predictions are made again…");
      try {
        await api("POST", url, body);
        say(done);
        window.location.reload();
      } catch (error) {
        say(error.message, true);
      }
    }

    // The split line, drawn on an SVG laid over the field in its own pixels (it zooms and pans with it).
    const layers = document.querySelector("[data-layers]");
    // The SVG namespace, taken from the viewer's own sizing SVG.
    const svgNs = document.querySelector("svg.viewer-sizer").namespaceURI;
    const sketch = document.createElementNS(svgNs, "svg");
    sketch.setAttribute("viewBox", `0 0 ${fieldWidth} ${fieldHeight}`);
    sketch.setAttribute("class", "layer split-sketch");
    sketch.setAttribute("aria-hidden", "true");
    const stroke = document.createElementNS(svgNs, "polyline");
    stroke.setAttribute("class", "split-line");
    sketch.append(stroke);
    sketch.setAttribute("hidden", ""); // an SVG element has no .hidden property
    if (layers) layers.append(sketch);
    let points = [];

    function fieldPoint(event) {
      const box = sketch.getBoundingClientRect();
      return [((event.clientY - box.top) / box.height) * fieldHeight, ((event.clientX - box.left) / box.width) * fieldWidth];
    }
    function drawStroke() {
      stroke.setAttribute("points", points.map(([row, col]) => `${col.toFixed(1)},${row.toFixed(1)}`).join(" "));
    }
    sketch.addEventListener("pointerdown", (event) => {
      event.preventDefault();
      event.stopPropagation();
      sketch.setPointerCapture(event.pointerId);
      points = [fieldPoint(event)];
      drawStroke();
    });
    sketch.addEventListener("pointermove", (event) => {
      if (!points.length) return;
      event.stopPropagation();
      points.push(fieldPoint(event));
      drawStroke();
    });
    sketch.addEventListener("pointerup", (event) => {
      event.stopPropagation();
      const line = points.length > 20 ? points.filter((_, i) => i % Math.ceil(points.length / 20) === 0 || i === points.length - 1) : points;
      sketch.setAttribute("hidden", ""); // an SVG element has no .hidden property
      const cell = cells.get(label);
      points = [];
      drawStroke();
      if (cell && line.length >= 2) {
        maskFix(`/api/cells/${cell.id}/mask/split/`, { line }, `Cell ${cell.label} was split.`);
      }
    });

    panel.querySelector("[data-curation-save]").addEventListener("click", () => annotate("classes"));
    panel.querySelectorAll("[data-curation-kind]").forEach((button) => button.addEventListener("click", () => annotate(button.dataset.curationKind)));
    undoButton.addEventListener("click", undo);
    maskUndo.addEventListener("click", () => {
      if (lastEdit) maskFix(`/api/mask-edits/${lastEdit.id}/undo/`, {}, "The last mask fix was undone.");
    });
    panel.querySelectorAll("[data-mask-action]").forEach((button) => button.addEventListener("click", () => {
      const cell = cells.get(label);
      if (!cell) return;
      const action = button.dataset.maskAction;
      if (action === "delete") {
        maskFix(`/api/cells/${cell.id}/mask/delete/`, undefined, `Cell ${cell.label} was deleted.`);
      } else if (action === "merge") {
        merging = cell.label;
        say(`Now click the cell that touches cell ${cell.label} to merge the two.`);
      } else {
        sketch.removeAttribute("hidden");
        say(`Draw a line right across cell ${cell.label} (press, drag, release).`);
      }
    }));

    document.addEventListener("hpaweb:cell-pinned", (event) => {
      const next = Number(event.detail.label) || 0;
      if (merging && next && next !== merging) {
        const first = cells.get(merging);
        const second = cells.get(next);
        merging = 0;
        if (first && second) {
          maskFix(`/api/cells/${first.id}/mask/merge/`, { other: second.id }, `Cells ${first.label} and ${second.label} were merged.`);
        }
        return;
      }
      label = next;
      say("");
      showCell();
    });

    document.addEventListener("keydown", (event) => {
      if (!label || panel.hidden || event.ctrlKey || event.metaKey || event.altKey || typing(event)) return;
      const index = classForKey(event);
      if (index !== null) {
        event.preventDefault();
        picker.toggle(index);
      } else if (event.key === "Enter") {
        event.preventDefault();
        annotate("classes");
      } else if (event.key === "N") {
        event.preventDefault();
        annotate("not_a_cell");
      } else if (event.key === "B") {
        event.preventDefault();
        annotate("badly_outlined");
      } else if (event.key === "z") {
        event.preventDefault();
        undo();
      }
    });

    loadCells().then(() => {
      panel.dataset.ready = "true";
      const match = /^#cell-(\d+)$/.exec(window.location.hash);
      if (match && !label) {
        label = Number(match[1]);
        showCell();
      }
    }).catch((error) => say(`Annotations cannot be loaded (${error.message}); reload the page.`, true));
  }

  // ---- the gallery -----------------------------------------------------------------------------
  const gallery = document.querySelector("[data-curation-gallery]");
  if (gallery) {
    const jobId = gallery.dataset.jobId;
    const status = gallery.querySelector("[data-curation-status]");
    const count = gallery.querySelector("[data-curation-selected]");
    const picker = classPicker(gallery);
    const boxes = [...document.querySelectorAll("[data-select-tile]")];
    const versions = new Map();
    const say = (text, isError) => {
      status.textContent = text;
      status.classList.toggle("error", Boolean(isError));
    };
    const selected = () => boxes.filter((box) => box.checked).map((box) => Number(box.value));
    const showCount = () => {
      const n = selected().length;
      count.textContent = `${n} cell${n === 1 ? "" : "s"} selected`;
    };
    boxes.forEach((box) => box.addEventListener("change", showCount));

    async function loadVersions(ids) {
      await Promise.all(ids.map(async (id) => {
        const cell = await api("GET", `/api/cells/${id}/`);
        versions.set(id, cell.annotation_version);
        const badge = document.querySelector(`[data-tile-annotation="${id}"]`);
        if (badge) {
          badge.hidden = !cell.annotation;
          badge.textContent = cell.annotation ? "annotated" : "";
        }
      }));
    }

    async function annotate(kind) {
      const ids = selected();
      const classes = kind === "classes" ? [...picker.chosen].sort((a, b) => a - b) : [];
      if (!ids.length) {
        say("Tick the cells to annotate first.", true);
        return;
      }
      if (kind === "classes" && !classes.length) {
        say("Choose at least one class first.", true);
        return;
      }
      try {
        await api("POST", `/api/jobs/${jobId}/annotations/`, {
          kind,
          classes,
          cells: ids.map((id) => ({ id, version: versions.has(id) ? versions.get(id) : null })),
        });
        say(`Saved for ${ids.length} cell${ids.length === 1 ? "" : "s"}.`);
        boxes.forEach((box) => { box.checked = false; });
        showCount();
      } catch (error) {
        say(error.message, true);
      }
      await loadVersions(ids);
    }

    gallery.querySelector("[data-curation-save]").addEventListener("click", () => annotate("classes"));
    gallery.querySelectorAll("[data-curation-kind]").forEach((button) => button.addEventListener("click", () => annotate(button.dataset.curationKind)));
    document.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey || typing(event)) return;
      const index = classForKey(event);
      if (index !== null) {
        event.preventDefault();
        picker.toggle(index);
      } else if (event.key === "Enter") {
        event.preventDefault();
        annotate("classes");
      } else if (event.key === "a") {
        event.preventDefault();
        const all = boxes.every((box) => box.checked);
        boxes.forEach((box) => { box.checked = !all; });
        showCount();
      }
    });
    loadVersions(boxes.map((box) => Number(box.value)))
      .then(() => { gallery.dataset.ready = "true"; })
      .catch((error) => say(`Annotations cannot be loaded (${error.message}); reload the page.`, true));
  }
})();
