// The field viewer: the channels (grayscale JPEGs at viewer resolution) combined on a canvas with
// per-channel toggles and contrast, outline overlays, zoom and pan by CSS transform, and the cell
// under the pointer looked up in an RGB-encoded cell-id image (id = R * 65536 + G * 256 + B).
(function () {
  "use strict";
  const root = document.querySelector("[data-viewer]");
  const dataNode = document.getElementById("viewer-data");
  if (!root || !dataNode) return;
  const config = JSON.parse(dataNode.textContent);
  if (!config.images["cell-ids"] || !config.images.green) return; // not processed yet: the preview stays

  const CHANNELS = ["red", "green", "blue", "yellow"];
  const stage = root.querySelector("[data-stage]");
  const layers = root.querySelector("[data-layers]");
  const composite = layers.querySelector("[data-composite]");
  const highlight = layers.querySelector("[data-highlight]");
  const fallback = layers.querySelector("[data-fallback]");
  const hint = root.querySelector("[data-viewer-hint]");
  const zoomLevel = root.querySelector("[data-zoom-level]");
  const panel = document.querySelector("[data-cell-panel]");
  const cellsByLabel = new Map(config.cells.map((cell) => [cell.label, cell]));

  let width = 0; // viewer image size in its own pixels
  let height = 0;
  let scale = 1; // screen px per viewer px
  let fitScale = 1;
  let x = 0; // translation of the image's top-left corner inside the stage, screen px
  let y = 0;
  let fitted = true;
  let ids = null; // Uint32Array: cell id of every viewer pixel
  const planes = {}; // channel -> Uint8Array of its pixels
  const gains = { red: 1, green: 1, blue: 1, yellow: 1 };
  const visible = { red: true, green: true, blue: true, yellow: true };
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

  // ---- compositing -------------------------------------------------------------------------
  const compositeContext = composite.getContext("2d");
  let output = null;
  let drawPending = false;

  function lookup(channel) {
    const table = new Uint8ClampedArray(256);
    const gain = visible[channel] && planes[channel] ? gains[channel] : 0;
    for (let value = 0; value < 256; value++) table[value] = value * gain;
    return table;
  }

  function draw() {
    drawPending = false;
    if (!output) output = compositeContext.createImageData(width, height);
    const pixels = output.data;
    const [red, green, blue, yellow] = CHANNELS.map((c) => planes[c] || planes.zero);
    const [redLut, greenLut, blueLut, yellowLut] = CHANNELS.map(lookup);
    // HPA colouring: red = microtubules, green = protein, blue = nucleus, yellow adds half to red and green.
    for (let i = 0, j = 0, n = width * height; i < n; i++, j += 4) {
      const half = yellowLut[yellow[i]] >> 1;
      pixels[j] = redLut[red[i]] + half;
      pixels[j + 1] = greenLut[green[i]] + half;
      pixels[j + 2] = blueLut[blue[i]];
      pixels[j + 3] = 255;
    }
    compositeContext.putImageData(output, 0, 0);
  }

  function requestDraw() {
    if (!drawPending) {
      drawPending = true;
      requestAnimationFrame(draw);
    }
  }

  // ---- zoom and pan --------------------------------------------------------------------------
  function apply() {
    layers.style.transform = `translate(${x}px, ${y}px) scale(${scale})`;
    layers.classList.toggle("pixelated", scale >= 2);
    // 100% = one pixel of the original field per screen pixel.
    zoomLevel.textContent = `${Math.round((scale * width * 100) / config.width)}%`;
  }

  function stageBox() {
    return stage.getBoundingClientRect();
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
      Escape: () => select(0, false),
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

  window.addEventListener("resize", () => { if (fitted && width) fit(); });

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
    pinned = label;
    shown = -1; // redraw the panel even for the same cell
    showCell(label);
    document.querySelectorAll(".cell-list tr.selected").forEach((row) => row.classList.remove("selected"));
    const row = document.getElementById(`cell-row-${label}`);
    if (row) row.classList.add("selected");
    if (label && centre) centreOn(cellsByLabel.get(label));
    if (label) history.replaceState(null, "", `#cell-${label}`);
  }

  document.querySelectorAll("[data-select-cell]").forEach((button) => button.addEventListener("click", () => {
    select(Number(button.dataset.selectCell), true);
    stage.scrollIntoView({ behavior: "smooth", block: "nearest" });
  }));

  // ---- unfamiliar cells ----------------------------------------------------------------------
  const unfamiliarLayer = layers.querySelector("[data-unfamiliar]");
  const unfamiliarToggle = root.querySelector("[data-unfamiliar-toggle]");

  function drawUnfamiliar() {
    const flagged = new Set(config.cells.filter((cell) => cell.unfamiliar).map((cell) => cell.label));
    const context = unfamiliarLayer.getContext("2d");
    const patch = context.createImageData(width, height);
    for (let i = 0; i < ids.length; i++) {
      // An orange tint: apart from every channel colour and from the magenta selection.
      if (flagged.has(ids[i])) patch.data.set([255, 140, 0, 120], i * 4);
    }
    context.putImageData(patch, 0, 0);
  }

  if (unfamiliarToggle) {
    unfamiliarToggle.addEventListener("change", () => { unfamiliarLayer.hidden = !unfamiliarToggle.checked; });
  }

  // ---- controls ------------------------------------------------------------------------------
  root.querySelectorAll("[data-channel-toggle]").forEach((box) => box.addEventListener("change", () => {
    visible[box.dataset.channelToggle] = box.checked;
    requestDraw();
  }));
  root.querySelectorAll("[data-channel-contrast]").forEach((slider) => slider.addEventListener("input", () => {
    gains[slider.dataset.channelContrast] = Number(slider.value);
    requestDraw();
  }));
  root.querySelectorAll("[data-overlay-toggle]").forEach((box) => {
    const overlay = layers.querySelector(`[data-overlay="${box.dataset.overlayToggle}"]`);
    box.addEventListener("change", () => { overlay.hidden = !box.checked; });
  });

  // ---- start ---------------------------------------------------------------------------------
  async function start() {
    const kinds = CHANNELS.filter((c) => config.images[c]);
    hint.textContent = "Loading channels…";
    const [idImage, ...channelImages] = await Promise.all([
      loadImage(config.images["cell-ids"]),
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
      for (let i = 0; i < plane.length; i++) plane[i] = pixels[i * 4];
      planes[kind] = plane;
    });
    planes.zero = new Uint8Array(width * height);
    for (const canvas of [composite, highlight, unfamiliarLayer]) {
      canvas.width = width;
      canvas.height = height;
    }
    layers.style.width = `${width}px`;
    layers.style.height = `${height}px`;
    layers.querySelectorAll("[data-overlay]").forEach((overlay) => {
      overlay.src = config.images[overlay.dataset.overlay];
      overlay.hidden = !root.querySelector(`[data-overlay-toggle="${overlay.dataset.overlay}"]`).checked;
    });
    draw();
    if (unfamiliarToggle) drawUnfamiliar();
    composite.hidden = false;
    if (fallback) fallback.hidden = true;
    fit();
    hint.textContent = "";
    root.dataset.ready = "true";
    const match = /^#cell-(\d+)$/.exec(window.location.hash);
    if (match && cellsByLabel.has(Number(match[1]))) select(Number(match[1]), true);
  }

  start().catch((error) => {
    hint.textContent = `The interactive viewer could not start (${error.message}); the preview is shown instead.`;
  });
})();
