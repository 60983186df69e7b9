// The field viewer: the channels (grayscale JPEGs at viewer resolution) combined on a canvas with
// per-channel toggles, contrast, black and white levels and gamma (over each channel's histogram) or
// one channel alone in grey; outline overlays (the nucleus outline recoloured yellow with a dark halo,
// visible on bright nuclei), cells coloured by predicted class, cell numbers, a filter by class,
// confidence and flag, a scale bar, zoom and pan by CSS transform, and the cell under the pointer
// looked up in an RGB-encoded cell-id image (id = R * 65536 + G * 256 + B).
//
// Other scripts hook in without editing this one: every pin and unpin dispatches
// `hpaweb:cell-pinned` on document (detail {label, cellId}; label 0 and cellId null when unpinned),
// and window.hpawebViewer = {select(label), redraw(), cells} (redraw re-reads the cells' flags).
(function () {
  "use strict";
  const root = document.querySelector("[data-viewer]");
  const dataNode = document.getElementById("viewer-data");
  if (!root || !dataNode) return;
  const config = JSON.parse(dataNode.textContent);
  if (!config.images["cell-ids"] || !config.images.green) return; // not processed yet: the preview stays

  const CHANNELS = ["red", "green", "blue", "yellow"];
  // 19 colours apart from one another (the classes), in HPA label order.
  const CLASS_COLOURS = [
    [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75],
    [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207], [174, 199, 232], [255, 187, 120],
    [152, 223, 138], [255, 152, 150], [197, 176, 213], [196, 156, 148], [247, 182, 210], [219, 219, 141],
    [158, 218, 229],
  ];
  const NUCLEUS_OUTLINE = [255, 214, 0, 255]; // yellow: apart from blue nuclei, white cells and magenta selection
  const HALO = [0, 0, 0, 210];
  const stage = root.querySelector("[data-stage]");
  const layers = root.querySelector("[data-layers]");
  const composite = layers.querySelector("[data-composite]");
  const highlight = layers.querySelector("[data-highlight]");
  const classFill = layers.querySelector("[data-class-fill]");
  const dimLayer = layers.querySelector("[data-dim]");
  const nucleusLayer = layers.querySelector("[data-nucleus-outlines]");
  const numbersLayer = layers.querySelector("[data-numbers]");
  const unfamiliarLayer = layers.querySelector("[data-unfamiliar]");
  const fallback = layers.querySelector("[data-fallback]");
  const hint = root.querySelector("[data-viewer-hint]");
  const zoomLevel = root.querySelector("[data-zoom-level]");
  const scaleBar = root.querySelector("[data-scale-bar]");
  const scaleLine = root.querySelector("[data-scale-line]");
  const scaleText = root.querySelector("[data-scale-text]");
  const classLegend = root.querySelector("[data-class-legend]");
  const filterCount = root.querySelector("[data-filter-count]");
  const panel = document.querySelector("[data-cell-panel]");
  const table = document.querySelector("[data-cell-table]");
  const tableCount = document.querySelector("[data-table-count]");
  const shortcuts = document.querySelector("[data-shortcuts]");
  const cellsByLabel = new Map(config.cells.map((cell) => [cell.label, cell]));
  const touch = window.matchMedia("(hover: none), (pointer: coarse)").matches;
  const narrow = window.matchMedia("(max-width: 900px)");

  let width = 0; // viewer image size in its own pixels
  let height = 0;
  let scale = 1; // screen px per viewer px
  let fitScale = 1;
  let x = 0; // translation of the image's top-left corner inside the stage, screen px
  let y = 0;
  let fitted = true;
  let ids = null; // Uint32Array: cell id of every viewer pixel
  const planes = {}; // channel -> Uint8Array of its pixels
  const histograms = {}; // channel -> Uint32Array(256)
  const gains = { red: 1, green: 1, blue: 1, yellow: 1 };
  const visible = { red: true, green: true, blue: true, yellow: true };
  const levels = {}; // channel -> {black, white, gamma}
  CHANNELS.forEach((c) => { levels[c] = { black: 0, white: 255, gamma: 1 }; });
  let viewMode = "composite"; // or a channel shown alone in grey
  let colourBy = "";
  const filter = { classIndex: null, minConfidence: 0, flag: "" };
  let pinned = 0; // the clicked cell; 0 = none
  let shown = 0; // the cell in the panel

  function loadImage(url) {
    return new Promise((resolve, reject) => {
      const image = new Image();
      image.onload = () => resolve(image);
      image.onerror = () => reject(new Error(`Could not load ${url}`));
      image.src = url;
    });
  }

  function rgba(image) {
    const canvas = document.createElement("canvas");
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.drawImage(image, 0, 0);
    return context.getImageData(0, 0, canvas.width, canvas.height).data;
  }

  // ---- cells: classes and flags --------------------------------------------------------------
  function topClass(cell) {
    if (!cell.probabilities) return null;
    let best = 0;
    cell.probabilities.forEach((p, index) => { if (p > cell.probabilities[best]) best = index; });
    return best;
  }

  function topConfidence(cell) {
    return cell.probabilities ? cell.probabilities[topClass(cell)] : null;
  }

  // Every flag the cell carries: "unfamiliar", and whatever list of flags the cell dict holds (qc_flags).
  function flagsOf(cell) {
    const flags = cell.unfamiliar ? ["unfamiliar"] : [];
    for (const key of ["qc_flags", "flags"]) if (Array.isArray(cell[key])) flags.push(...cell[key]);
    return [...new Set(flags)];
  }

  function passes(cell) {
    if (filter.classIndex !== null && topClass(cell) !== filter.classIndex) return false;
    if (filter.minConfidence > 0 && !(topConfidence(cell) >= filter.minConfidence)) return false;
    const flags = flagsOf(cell);
    if (filter.flag === "none" && flags.length) return false;
    if (filter.flag && filter.flag !== "none" && !flags.includes(filter.flag)) return false;
    return true;
  }

  function filterActive() {
    return filter.classIndex !== null || filter.minConfidence > 0 || filter.flag !== "";
  }

  // ---- compositing -------------------------------------------------------------------------
  const compositeContext = composite.getContext("2d");
  let output = null;
  let drawPending = false;

  function lookup(channel, grey) {
    const table = new Uint8ClampedArray(256);
    const shownHere = grey ? channel === viewMode : visible[channel];
    const gain = shownHere && planes[channel] ? gains[channel] : 0;
    const { black, white, gamma } = levels[channel];
    const span = Math.max(1, white - black);
    for (let value = 0; value < 256; value++) {
      const unit = Math.min(1, Math.max(0, (value - black) / span));
      table[value] = 255 * Math.pow(unit, 1 / gamma) * gain;
    }
    return table;
  }

  function draw() {
    drawPending = false;
    if (!output) output = compositeContext.createImageData(width, height);
    const pixels = output.data;
    const n = width * height;
    if (viewMode !== "composite" && planes[viewMode]) {
      const plane = planes[viewMode];
      const lut = lookup(viewMode, true);
      for (let i = 0, j = 0; i < n; i++, j += 4) {
        const v = lut[plane[i]];
        pixels[j] = v; pixels[j + 1] = v; pixels[j + 2] = v; pixels[j + 3] = 255;
      }
    } else {
      const [red, green, blue, yellow] = CHANNELS.map((c) => planes[c] || planes.zero);
      const [redLut, greenLut, blueLut, yellowLut] = CHANNELS.map((c) => lookup(c, false));
      // HPA colouring: red = microtubules, green = protein, blue = nucleus, yellow adds half to red and green.
      for (let i = 0, j = 0; i < n; i++, j += 4) {
        const half = yellowLut[yellow[i]] >> 1;
        pixels[j] = redLut[red[i]] + half;
        pixels[j + 1] = greenLut[green[i]] + half;
        pixels[j + 2] = blueLut[blue[i]];
        pixels[j + 3] = 255;
      }
    }
    compositeContext.putImageData(output, 0, 0);
    drawHistogram();
  }

  function requestDraw() {
    if (!drawPending) {
      drawPending = true;
      requestAnimationFrame(draw);
    }
  }

  // ---- overlays: nucleus outlines, class colours, dimming, numbers -----------------------------
  function drawNucleusOutlines(image) {
    const source = rgba(image);
    const context = nucleusLayer.getContext("2d");
    const patch = context.createImageData(width, height);
    const on = (row, col) => row >= 0 && col >= 0 && row < height && col < width && source[(row * width + col) * 4 + 3] > 0;
    for (let row = 0; row < height; row++) {
      for (let col = 0; col < width; col++) {
        const j = (row * width + col) * 4;
        if (on(row, col)) { patch.data.set(NUCLEUS_OUTLINE, j); continue; }
        // A dark halo around the outline keeps it visible on a bright nucleus.
        let near = false;
        for (let dr = -1; dr <= 1 && !near; dr++) for (let dc = -1; dc <= 1; dc++) if (on(row + dr, col + dc)) { near = true; break; }
        if (near) patch.data.set(HALO, j);
      }
    }
    context.putImageData(patch, 0, 0);
  }

  function paintCells(canvas, colourOf) {
    const context = canvas.getContext("2d");
    const patch = context.createImageData(width, height);
    const colours = new Map();
    for (const cell of config.cells) {
      const colour = colourOf(cell);
      if (colour) colours.set(cell.label, colour);
    }
    for (let i = 0; i < ids.length; i++) {
      const colour = ids[i] && colours.get(ids[i]);
      if (colour) patch.data.set(colour, i * 4);
    }
    context.putImageData(patch, 0, 0);
  }

  function drawClassFill() {
    classFill.hidden = colourBy !== "class";
    classLegend.hidden = colourBy !== "class";
    if (colourBy !== "class") return;
    paintCells(classFill, (cell) => {
      const index = topClass(cell);
      return index === null || !passes(cell) ? null : [...CLASS_COLOURS[index], 150];
    });
    const counts = new Map();
    for (const cell of config.cells) {
      const index = topClass(cell);
      if (index !== null && passes(cell)) counts.set(index, (counts.get(index) || 0) + 1);
    }
    classLegend.replaceChildren();
    [...counts.entries()].sort((a, b) => b[1] - a[1]).forEach(([index, count]) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "class-swatch";
      swatch.style.background = `rgb(${CLASS_COLOURS[index].join(",")})`;
      item.append(swatch, `${config.classNames[index]} (${count})`);
      classLegend.append(item);
    });
  }

  function drawDim() {
    dimLayer.hidden = !filterActive();
    if (filterActive()) paintCells(dimLayer, (cell) => (passes(cell) ? null : [0, 0, 0, 170]));
  }

  const numbersToggle = root.querySelector("[data-numbers-toggle]");
  function drawNumbers() {
    numbersLayer.hidden = !numbersToggle.checked;
    if (!numbersToggle.checked) return;
    const context = numbersLayer.getContext("2d");
    context.clearRect(0, 0, width, height);
    const s = width / config.width;
    const size = Math.max(9, Math.round(width / 64));
    context.font = `600 ${size}px system-ui, sans-serif`;
    context.textAlign = "center";
    context.textBaseline = "middle";
    context.lineWidth = Math.max(2, size / 5);
    context.strokeStyle = "rgba(0, 0, 0, 0.85)";
    context.fillStyle = "#fff";
    for (const cell of config.cells) {
      if (!passes(cell)) continue;
      const [top, left, bottom, right] = cell.bbox.map((v) => v * s);
      const text = String(cell.label);
      context.strokeText(text, (left + right) / 2, (top + bottom) / 2);
      context.fillText(text, (left + right) / 2, (top + bottom) / 2);
    }
  }

  function drawUnfamiliar() {
    paintCells(unfamiliarLayer, (cell) => (cell.unfamiliar ? [255, 140, 0, 120] : null)); // orange tint
  }

  // The filter acts on the image, the legend, the numbers, the table and the next/previous keys.
  function applyFilter() {
    drawDim();
    drawClassFill();
    drawNumbers();
    const kept = config.cells.filter(passes);
    filterCount.textContent = filterActive() ? `${kept.length} of ${config.cells.length} cells match the filter.` : "";
    if (table) {
      const keptLabels = new Set(kept.map((cell) => cell.label));
      table.querySelectorAll("tbody tr").forEach((row) => { row.hidden = !keptLabels.has(Number(row.dataset.label)); });
      tableCount.textContent = filterActive() ? `Showing the ${kept.length} of ${config.cells.length} cells the filter keeps.` : "";
      // The crops links download what the table shows.
      document.querySelectorAll("[data-crops-link]").forEach((link) => {
        const url = new URL(link.href, window.location.href);
        if (filterActive()) url.searchParams.set("cells", kept.map((cell) => cell.label).join(",") || "0");
        else url.searchParams.delete("cells");
        link.href = url.pathname + url.search;
      });
    }
  }

  // ---- zoom and pan --------------------------------------------------------------------------
  function apply() {
    layers.style.transform = `translate(${x}px, ${y}px) scale(${scale})`;
    layers.classList.toggle("pixelated", scale >= 2);
    // 100% = one pixel of the original field per screen pixel.
    zoomLevel.textContent = `${Math.round((scale * width * 100) / config.width)}%`;
    updateScaleBar();
  }

  // A bar of a round length: micrometres from the field's pixel size, else pixels of the original field.
  function updateScaleBar() {
    const screenPerField = (scale * width) / config.width; // screen px per original pixel
    const unitPerScreen = config.pixelSizeUm ? config.pixelSizeUm / screenPerField : 1 / screenPerField;
    const steps = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];
    const length = steps.find((step) => step / unitPerScreen >= 70) || steps[steps.length - 1];
    scaleLine.style.width = `${Math.round(length / unitPerScreen)}px`;
    scaleText.textContent = config.pixelSizeUm ? `${length} µm` : `${length} px (pixel size not given)`;
    scaleBar.hidden = false;
  }

  function stageBox() {
    return stage.getBoundingClientRect();
  }

  // On a laptop the stage takes the image's shape and the height left above the fold, so the whole
  // field shows without scrolling and without bars around it.
  function sizeStage() {
    if (narrow.matches) {
      stage.style.maxWidth = "";
      return;
    }
    const top = stage.getBoundingClientRect().top + window.scrollY;
    const available = Math.max(320, window.innerHeight - top - 12);
    stage.style.maxWidth = `${Math.floor((available * config.width) / config.height)}px`;
  }

  function fit() {
    const box = stageBox();
    fitScale = Math.min(box.width / width, box.height / height);
    scale = fitScale;
    x = (box.width - width * scale) / 2;
    y = (box.height - height * scale) / 2;
    fitted = true;
    apply();
  }

  function zoomAt(factor, cx, cy) {
    const next = Math.min(Math.max(scale * factor, fitScale * 0.5), Math.max(fitScale, 12));
    x = cx - ((cx - x) * next) / scale;
    y = cy - ((cy - y) * next) / scale;
    scale = next;
    fitted = false;
    apply();
  }

  function zoomAtCentre(factor) {
    const box = stageBox();
    zoomAt(factor, box.width / 2, box.height / 2);
  }

  function centreOn(cell) {
    const box = stageBox();
    const s = width / config.width;
    const [top, left, bottom, right] = cell.bbox.map((v) => v * s);
    scale = Math.max(scale, Math.min(fitScale * 3, (0.5 * Math.min(box.width, box.height)) / Math.max(bottom - top, right - left)));
    x = box.width / 2 - ((left + right) / 2) * scale;
    y = box.height / 2 - ((top + bottom) / 2) * scale;
    fitted = false;
    apply();
  }

  stage.addEventListener("wheel", (event) => {
    event.preventDefault();
    const box = stageBox();
    zoomAt(Math.exp(-event.deltaY * 0.0015), event.clientX - box.left, event.clientY - box.top);
  }, { passive: false });

  const pointers = new Map();
  let downAt = null;
  let moved = false;

  stage.addEventListener("pointerdown", (event) => {
    stage.setPointerCapture(event.pointerId);
    pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    if (pointers.size === 1) {
      downAt = { x: event.clientX, y: event.clientY };
      moved = false;
    } else {
      moved = true; // a second finger: a pinch, not a click
    }
  });

  stage.addEventListener("pointermove", (event) => {
    const previous = pointers.get(event.pointerId);
    if (!previous) {
      if (event.pointerType === "mouse" && !pinned) showCell(cellAt(event.clientX, event.clientY));
      return;
    }
    if (pointers.size === 1) {
      if (Math.hypot(event.clientX - downAt.x, event.clientY - downAt.y) > 4) moved = true;
      if (moved) {
        stage.classList.add("panning");
        x += event.clientX - previous.x;
        y += event.clientY - previous.y;
        fitted = false;
        apply();
      }
    } else if (pointers.size === 2) {
      const [a, b] = [...pointers.values()];
      const other = a === previous ? b : a;
      const current = { x: event.clientX, y: event.clientY };
      const before = Math.hypot(previous.x - other.x, previous.y - other.y);
      const after = Math.hypot(current.x - other.x, current.y - other.y);
      const box = stageBox();
      const midX = (current.x + other.x) / 2 - box.left;
      const midY = (current.y + other.y) / 2 - box.top;
      x += (current.x - previous.x) / 2;
      y += (current.y - previous.y) / 2;
      if (before > 0) zoomAt(after / before, midX, midY);
    }
    pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
  });

  function release(event, isClick) {
    if (!pointers.has(event.pointerId)) return;
    const click = isClick && !moved && pointers.size === 1;
    pointers.delete(event.pointerId);
    stage.classList.remove("panning");
    if (click) {
      const label = cellAt(event.clientX, event.clientY);
      select(label && label !== pinned ? label : 0, false);
    }
  }
  stage.addEventListener("pointerup", (event) => release(event, true));
  stage.addEventListener("pointercancel", (event) => release(event, false));
  stage.addEventListener("pointerleave", (event) => {
    if (event.pointerType === "mouse" && !pinned && !pointers.size) showCell(0);
  });

  stage.addEventListener("keydown", (event) => {
    const step = 60;
    const actions = {
      "+": () => zoomAtCentre(1.25), "=": () => zoomAtCentre(1.25), "-": () => zoomAtCentre(0.8), "0": fit,
      ArrowLeft: () => { x += step; apply(); }, ArrowRight: () => { x -= step; apply(); },
      ArrowUp: () => { y += step; apply(); }, ArrowDown: () => { y -= step; apply(); },
    };
    if (actions[event.key]) {
      event.preventDefault();
      actions[event.key]();
    }
  });

  root.querySelectorAll("[data-zoom]").forEach((button) => button.addEventListener("click", () => {
    const action = button.dataset.zoom;
    if (action === "fit") fit();
    else zoomAtCentre(action === "in" ? 1.5 : 1 / 1.5);
  }));

  window.addEventListener("resize", () => {
    sizeStage();
    if (fitted && width) fit();
  });

  // ---- cells ---------------------------------------------------------------------------------
  function cellAt(clientX, clientY) {
    const box = stageBox();
    const col = Math.floor((clientX - box.left - x) / scale);
    const row = Math.floor((clientY - box.top - y) / scale);
    if (!ids || col < 0 || row < 0 || col >= width || row >= height) return 0;
    return ids[row * width + col];
  }

  const highlightContext = highlight.getContext("2d");

  function drawHighlight(label) {
    highlightContext.clearRect(0, 0, width, height);
    const cell = cellsByLabel.get(label);
    if (!cell) return;
    const s = width / config.width;
    const top = Math.max(0, Math.floor(cell.bbox[0] * s));
    const left = Math.max(0, Math.floor(cell.bbox[1] * s));
    const bottom = Math.min(height, Math.ceil(cell.bbox[2] * s));
    const right = Math.min(width, Math.ceil(cell.bbox[3] * s));
    if (bottom <= top || right <= left) return;
    const patch = highlightContext.createImageData(right - left, bottom - top);
    const inside = (row, col) => row >= 0 && col >= 0 && row < height && col < width && ids[row * width + col] === label;
    for (let row = top; row < bottom; row++) {
      for (let col = left; col < right; col++) {
        if (ids[row * width + col] !== label) continue;
        const j = ((row - top) * (right - left) + (col - left)) * 4;
        let edge = false;
        for (let dr = -1; dr <= 1 && !edge; dr++) for (let dc = -1; dc <= 1; dc++) if (!inside(row + dr, col + dc)) { edge = true; break; }
        // A magenta outline over a light tint: visible on every channel colour.
        patch.data.set(edge ? [255, 0, 255, 255] : [255, 255, 255, 56], j);
      }
    }
    highlightContext.putImageData(patch, left, top);
  }

  function barRow(name, confidence) {
    const row = document.createElement("div");
    row.className = "bar-row";
    const label = document.createElement("span");
    label.className = "bar-label";
    label.textContent = name;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("role", "presentation");
    const fill = document.createElement("span");
    fill.style.width = `${(confidence * 100).toFixed(1)}%`;
    bar.append(fill);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = confidence.toFixed(2);
    row.append(label, bar, value);
    return row;
  }

  const title = panel.querySelector("[data-cell-title]");
  const empty = panel.querySelector("[data-cell-empty]");
  const details = panel.querySelector("[data-cell-details]");
  const thumbnail = panel.querySelector("[data-cell-thumbnail]");
  const meta = panel.querySelector("[data-cell-meta]");
  const bars = panel.querySelector("[data-cell-bars]");
  const allDetails = panel.querySelector("[data-cell-all]");
  const allBars = panel.querySelector("[data-cell-all-bars]");
  const modelLine = panel.querySelector("[data-cell-model]");
  const flagLine = panel.querySelector("[data-cell-flags]");

  // How far to trust this cell's classes: the model that made them and how familiar the cell looks to it.
  function describeTrust(cell) {
    if (!config.model) return "";
    const model = `By ${config.model.name} v${config.model.version}.`;
    if (cell.familiarity === null || cell.familiarity === undefined) return model;
    const familiarity = `Familiarity ${cell.familiarity.toFixed(2)}`;
    return cell.unfamiliar
      ? `${model} ${familiarity}: unlike the cells this model was trained on, so its classes here are guesses.`
      : `${model} ${familiarity}: like the cells it was trained on.`;
  }

  function showCell(label) {
    if (label === shown) return;
    shown = label;
    drawHighlight(label);
    const cell = cellsByLabel.get(label);
    details.hidden = !cell;
    empty.hidden = Boolean(cell);
    if (!cell) {
      title.textContent = "Cell";
      return;
    }
    title.textContent = `Cell ${cell.label}${pinned === label ? " (selected)" : ""}`;
    thumbnail.src = config.thumbnailUrl.replace("{id}", cell.id);
    thumbnail.alt = `Cell ${cell.label}, centred, neighbours dimmed`;
    const [top, left, bottom, right] = cell.bbox;
    meta.textContent = `${cell.area_px.toLocaleString()} px · rows ${top}–${bottom}, columns ${left}–${right}`;
    bars.replaceChildren();
    allBars.replaceChildren();
    modelLine.textContent = describeTrust(cell);
    modelLine.classList.toggle("caution", Boolean(cell.unfamiliar));
    const flags = flagsOf(cell);
    flagLine.hidden = !flags.length;
    flagLine.textContent = flags.length ? `Flags: ${flags.join(", ")}` : "";
    if (!cell.probabilities) {
      const note = document.createElement("p");
      note.className = "muted";
      note.textContent = "Not classified: the job ran without a classifier.";
      bars.append(note);
      allDetails.hidden = true;
      return;
    }
    allDetails.hidden = false;
    const ranked = cell.probabilities.map((p, index) => [config.classNames[index], p]).sort((a, b) => b[1] - a[1]);
    const likely = ranked.filter(([, p], rank) => rank < 5 && (p >= 0.1 || rank === 0));
    likely.forEach(([name, p]) => bars.append(barRow(name, p)));
    ranked.forEach(([name, p]) => allBars.append(barRow(name, p)));
  }

  function select(label, centre) {
    const changed = label !== pinned;
    pinned = label;
    shown = -1; // redraw the panel even for the same cell
    showCell(label);
    document.querySelectorAll(".cell-list tr.selected").forEach((row) => row.classList.remove("selected"));
    const row = document.getElementById(`cell-row-${label}`);
    if (row) row.classList.add("selected");
    const cell = cellsByLabel.get(label);
    if (label && centre && cell) centreOn(cell);
    if (label) history.replaceState(null, "", `#cell-${label}`);
    // On a phone the panel comes up as a sheet over the bottom of the screen, where the user looks, and the
    // image moves to the top of the screen so the cell stays in sight above the sheet.
    panel.classList.toggle("sheet", Boolean(label) && narrow.matches);
    if (label && narrow.matches) window.scrollTo({ top: stage.getBoundingClientRect().top + window.scrollY - 4, behavior: "instant" });
    if (changed) {
      document.dispatchEvent(new CustomEvent("hpaweb:cell-pinned", { detail: { label, cellId: cell ? cell.id : null } }));
    }
  }

  // Next and previous among the cells the filter keeps, in the table's current order.
  function step(direction) {
    const order = table
      ? [...table.querySelectorAll("tbody tr")].filter((row) => !row.hidden).map((row) => Number(row.dataset.label))
      : config.cells.filter(passes).map((cell) => cell.label);
    if (!order.length) return;
    const at = order.indexOf(pinned || shown);
    const next = at < 0 ? (direction > 0 ? 0 : order.length - 1) : (at + direction + order.length) % order.length;
    select(order[next], true);
  }

  document.querySelectorAll("[data-select-cell]").forEach((button) => button.addEventListener("click", () => {
    select(Number(button.dataset.selectCell), true);
    stage.scrollIntoView({ behavior: "smooth", block: "nearest" });
  }));
  document.querySelectorAll("[data-step-cell]").forEach((button) => button.addEventListener("click", () => step(Number(button.dataset.stepCell))));
  const sheetClose = panel.querySelector("[data-sheet-close]");
  sheetClose.addEventListener("click", () => select(0, false));

  // ---- the cell table: sorting ---------------------------------------------------------------
  if (table) {
    const body = table.querySelector("tbody");
    const value = (row, key) => {
      if (key === "class") return row.dataset.class || "\uffff";
      const number = Number(row.dataset[key === "label" ? "label" : key]);
      return row.dataset[key] === "" ? -Infinity : number;
    };
    table.querySelectorAll("[data-sort]").forEach((button) => button.addEventListener("click", () => {
      const header = button.closest("th");
      const key = button.dataset.sort;
      const ascending = header.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th[aria-sort]").forEach((th) => th.setAttribute("aria-sort", "none"));
      header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      const rows = [...body.rows].sort((a, b) => {
        const va = value(a, key);
        const vb = value(b, key);
        const order = typeof va === "string" ? va.localeCompare(vb) : va - vb;
        return (ascending ? order : -order) || Number(a.dataset.label) - Number(b.dataset.label);
      });
      body.append(...rows);
    }));
  }

  // ---- levels, histogram, view mode, colours, filter -------------------------------------------
  const levelsChannel = root.ownerDocument.querySelector("[data-levels-channel]");
  const histogramCanvas = document.querySelector("[data-histogram]");
  const levelInputs = {};
  document.querySelectorAll("[data-level]").forEach((input) => { levelInputs[input.dataset.level] = input; });

  function currentLevelsChannel() {
    return levelsChannel ? levelsChannel.value : "green";
  }

  function showLevels() {
    if (!levelsChannel) return;
    const current = levels[currentLevelsChannel()];
    for (const key of ["black", "white", "gamma"]) {
      levelInputs[key].value = current[key];
      document.querySelector(`[data-level-value="${key}"]`).textContent = key === "gamma" ? Number(current.gamma).toFixed(2) : current[key];
    }
    drawHistogram();
  }

  function drawHistogram() {
    if (!histogramCanvas || !histograms[currentLevelsChannel()]) return;
    const counts = histograms[currentLevelsChannel()];
    const context = histogramCanvas.getContext("2d");
    const w = histogramCanvas.width;
    const h = histogramCanvas.height;
    context.clearRect(0, 0, w, h);
    context.fillStyle = "#f3f4f6";
    context.fillRect(0, 0, w, h);
    const most = Math.log1p(Math.max(...counts));
    context.fillStyle = "#4b5563";
    for (let v = 0; v < 256; v++) {
      const bar = (Math.log1p(counts[v]) / most) * (h - 4);
      context.fillRect((v * w) / 256, h - bar, Math.max(1, w / 256), bar);
    }
    const { black, white, gamma } = levels[currentLevelsChannel()];
    // The transfer curve from black to white with its gamma, and the two levels as lines.
    context.strokeStyle = "#1f6feb";
    context.lineWidth = 2;
    context.beginPath();
    for (let v = 0; v < 256; v++) {
      const unit = Math.min(1, Math.max(0, (v - black) / Math.max(1, white - black)));
      const py = h - 2 - Math.pow(unit, 1 / gamma) * (h - 4);
      if (v === 0) context.moveTo(0, py); else context.lineTo((v * w) / 255, py);
    }
    context.stroke();
    context.fillStyle = "#b42318";
    context.fillRect((black * w) / 255 - 1, 0, 2, h);
    context.fillRect((white * w) / 255 - 1, 0, 2, h);
  }

  if (levelsChannel) {
    levelsChannel.addEventListener("change", showLevels);
    for (const [key, input] of Object.entries(levelInputs)) {
      input.addEventListener("input", () => {
        const current = levels[currentLevelsChannel()];
        current[key] = Number(input.value);
        if (key === "black" && current.black >= current.white) current.white = Math.min(255, current.black + 1);
        if (key === "white" && current.white <= current.black) current.black = Math.max(0, current.white - 1);
        showLevels();
        requestDraw();
      });
    }
    document.querySelector("[data-levels-reset]").addEventListener("click", () => {
      levels[currentLevelsChannel()] = { black: 0, white: 255, gamma: 1 };
      showLevels();
      requestDraw();
    });
  }

  const viewModeSelect = document.querySelector("[data-view-mode]");
  if (viewModeSelect) {
    viewModeSelect.addEventListener("change", () => {
      viewMode = viewModeSelect.value;
      if (viewMode !== "composite" && levelsChannel) { levelsChannel.value = viewMode; showLevels(); }
      requestDraw();
    });
  }

  const colourBySelect = document.querySelector("[data-colour-by]");
  if (colourBySelect) {
    colourBySelect.addEventListener("change", () => { colourBy = colourBySelect.value; drawClassFill(); });
  }

  const filterClass = document.querySelector("[data-filter-class]");
  const filterConfidence = document.querySelector("[data-filter-confidence]");
  const filterFlag = document.querySelector("[data-filter-flag]");
  function populateFlags() {
    if (!filterFlag) return;
    const known = new Set([...filterFlag.options].map((option) => option.value));
    const flags = [...new Set(config.cells.flatMap(flagsOf))].sort();
    for (const flag of flags) {
      if (known.has(flag)) continue;
      const option = document.createElement("option");
      option.value = flag;
      const count = config.cells.filter((cell) => flagsOf(cell).includes(flag)).length;
      option.textContent = `${flag.replace(/_/g, " ")} (${count})`;
      filterFlag.append(option);
    }
  }
  if (filterClass) filterClass.addEventListener("change", () => { filter.classIndex = filterClass.value === "" ? null : Number(filterClass.value); applyFilter(); });
  if (filterConfidence) {
    filterConfidence.addEventListener("input", () => {
      filter.minConfidence = Number(filterConfidence.value);
      document.querySelector("[data-filter-confidence-value]").textContent = filter.minConfidence.toFixed(2);
      applyFilter();
    });
  }
  if (filterFlag) filterFlag.addEventListener("change", () => { filter.flag = filterFlag.value; applyFilter(); });

  // ---- controls ------------------------------------------------------------------------------
  root.querySelectorAll("[data-channel-toggle]").forEach((box) => box.addEventListener("change", () => {
    visible[box.dataset.channelToggle] = box.checked;
    requestDraw();
  }));
  root.querySelectorAll("[data-channel-contrast]").forEach((slider) => slider.addEventListener("input", () => {
    gains[slider.dataset.channelContrast] = Number(slider.value);
    requestDraw();
  }));
  const overlayOf = { "cell-outlines": layers.querySelector('[data-overlay="cell-outlines"]'), "nucleus-outlines": nucleusLayer };
  root.querySelectorAll("[data-overlay-toggle]").forEach((box) => {
    box.addEventListener("change", () => { overlayOf[box.dataset.overlayToggle].hidden = !box.checked; });
  });
  numbersToggle.addEventListener("change", drawNumbers);
  const unfamiliarToggle = root.querySelector("[data-unfamiliar-toggle]");
  if (unfamiliarToggle) {
    unfamiliarToggle.addEventListener("change", () => { unfamiliarLayer.hidden = !unfamiliarToggle.checked; });
  }

  // ---- shortcuts -----------------------------------------------------------------------------
  let returnFocus = null;
  function openShortcuts() {
    returnFocus = document.activeElement;
    shortcuts.hidden = false;
    shortcuts.querySelector("[data-shortcuts-close]").focus();
  }
  function closeShortcuts() {
    shortcuts.hidden = true;
    if (returnFocus) returnFocus.focus();
  }
  document.querySelector("[data-shortcuts-open]").addEventListener("click", openShortcuts);
  shortcuts.querySelector("[data-shortcuts-close]").addEventListener("click", closeShortcuts);
  shortcuts.addEventListener("click", (event) => { if (event.target === shortcuts) closeShortcuts(); });

  function toggleBox(box) {
    if (!box) return;
    box.checked = !box.checked;
    box.dispatchEvent(new Event("change"));
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (!shortcuts.hidden) {
      if (event.key === "Escape" || event.key === "?") { event.preventDefault(); closeShortcuts(); }
      // The list's one control keeps the focus while it is open (a modal dialog traps Tab).
      if (event.key === "Tab") { event.preventDefault(); shortcuts.querySelector("[data-shortcuts-close]").focus(); }
      return;
    }
    const typing = event.target.closest && event.target.closest("input, select, textarea, [contenteditable]");
    if (typing && event.key !== "Escape") return;
    const actions = {
      n: () => step(1), "]": () => step(1), p: () => step(-1), "[": () => step(-1),
      Escape: () => select(0, false),
      "?": openShortcuts,
      c: () => {
        if (!colourBySelect || colourBySelect.options.length < 2) return;
        colourBySelect.value = colourBySelect.value ? "" : "class";
        colourBySelect.dispatchEvent(new Event("change"));
      },
      g: () => {
        if (!viewModeSelect) return;
        const grey = viewMode === "composite" ? (planes.green ? "green" : viewModeSelect.options[1].value) : "composite";
        viewModeSelect.value = grey;
        viewModeSelect.dispatchEvent(new Event("change"));
      },
      l: () => toggleBox(numbersToggle),
      o: () => root.querySelectorAll("[data-overlay-toggle]").forEach(toggleBox),
    };
    if (actions[event.key]) {
      event.preventDefault();
      actions[event.key]();
    }
  });

  // ---- touch ---------------------------------------------------------------------------------
  if (touch) {
    empty.textContent = "Tap a cell to see its predicted classes; tap it again to let it go.";
    stage.setAttribute("aria-label", stage.getAttribute("aria-label").replace("hover or click a cell", "tap a cell"));
  }

  // ---- start ---------------------------------------------------------------------------------
  async function start() {
    const kinds = CHANNELS.filter((c) => config.images[c]);
    hint.textContent = "Loading channels…";
    const [idImage, nucleusImage, ...channelImages] = await Promise.all([
      loadImage(config.images["cell-ids"]),
      loadImage(config.images["nucleus-outlines"]),
      ...kinds.map((kind) => loadImage(config.images[kind])),
    ]);
    width = idImage.naturalWidth;
    height = idImage.naturalHeight;
    const idPixels = rgba(idImage);
    ids = new Uint32Array(width * height);
    for (let i = 0, j = 0; i < ids.length; i++, j += 4) ids[i] = (idPixels[j] << 16) | (idPixels[j + 1] << 8) | idPixels[j + 2];
    kinds.forEach((kind, index) => {
      const pixels = rgba(channelImages[index]);
      const plane = new Uint8Array(width * height);
      const counts = new Uint32Array(256);
      for (let i = 0; i < plane.length; i++) {
        plane[i] = pixels[i * 4];
        counts[plane[i]] += 1;
      }
      planes[kind] = plane;
      histograms[kind] = counts;
    });
    planes.zero = new Uint8Array(width * height);
    for (const canvas of [composite, highlight, unfamiliarLayer, classFill, dimLayer, nucleusLayer, numbersLayer]) {
      canvas.width = width;
      canvas.height = height;
    }
    layers.style.width = `${width}px`;
    layers.style.height = `${height}px`;
    const cellOutlines = layers.querySelector('[data-overlay="cell-outlines"]');
    cellOutlines.src = config.images["cell-outlines"];
    cellOutlines.hidden = !root.querySelector('[data-overlay-toggle="cell-outlines"]').checked;
    drawNucleusOutlines(nucleusImage);
    nucleusLayer.hidden = !root.querySelector('[data-overlay-toggle="nucleus-outlines"]').checked;
    draw();
    if (unfamiliarToggle) drawUnfamiliar();
    populateFlags();
    applyFilter();
    showLevels();
    composite.hidden = false;
    if (fallback) fallback.hidden = true;
    sizeStage();
    fit();
    hint.textContent = "";
    root.dataset.ready = "true";
    const match = /^#cell-(\d+)$/.exec(window.location.hash);
    if (match && cellsByLabel.has(Number(match[1]))) select(Number(match[1]), true);
  }

  window.hpawebViewer = {
    select: (label) => select(Number(label) || 0, Boolean(label)),
    redraw: () => {
      populateFlags();
      applyFilter();
      if (unfamiliarToggle) drawUnfamiliar();
      requestDraw();
      shown = -1;
      showCell(pinned);
    },
    cells: config.cells,
  };

  start().catch((error) => {
    hint.textContent = `The interactive viewer could not start (${error.message}); the preview is shown instead.`;
  });
})();
