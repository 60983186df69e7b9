// The upload page: drag and drop of channel files, multi-channel TIFFs and zips; each loose image is
// assigned a field and channel (from its ID_channel name, or by the user), then everything is sent
// in one request with upload progress. Without this script the plain form still works.
(function () {
  "use strict";
  const form = document.querySelector("[data-upload-form]");
  const dataNode = document.getElementById("upload-data");
  if (!form || !dataNode) return;

  // The server's own file-name pattern and channels (ml.io, ml.constants), so both group files alike.
  const page = JSON.parse(dataNode.textContent);
  const CHANNELS = page.channels;
  const REQUIRED_CHANNELS = page.requiredChannels;
  const FIELD_FILE = new RegExp(page.fieldFilePattern, "i"); // groups: 1 field ID, 2 channel
  const input = form.querySelector('input[type="file"][name="files"]');
  const zone = form.querySelector("[data-dropzone]");
  const table = form.querySelector("[data-file-table]");
  const rows = form.querySelector("[data-file-rows]");
  const summary = form.querySelector("[data-field-summary]");
  const errors = form.querySelector("[data-upload-errors]");
  const progress = form.querySelector("[data-upload-progress]");
  const progressBar = progress.querySelector("progress");
  const progressText = form.querySelector("[data-upload-percent]");
  const submit = form.querySelector("[data-upload-submit]");
  const assignments = form.querySelector('input[name="assignments"]');
  let entries = []; // {file, kind: "zip" | "image", field, channel}

  function stem(name) { return name.replace(/\.[^.]+$/, ""); }
  function sizeText(bytes) {
    if (bytes >= 1024 ** 3) return (bytes / 1024 ** 3).toFixed(1) + " GB";
    if (bytes >= 1024 ** 2) return (bytes / 1024 ** 2).toFixed(1) + " MB";
    return Math.max(1, Math.round(bytes / 1024)) + " kB";
  }

  function describe(file) {
    if (/\.zip$/i.test(file.name)) return { file, kind: "zip", field: "", channel: "" };
    const match = FIELD_FILE.exec(file.name);
    if (match) return { file, kind: "image", field: match[1], channel: match[2].toLowerCase() };
    if (/\.tiff?$/i.test(file.name)) return { file, kind: "image", field: stem(file.name), channel: "multichannel" };
    // No ID_channel name: the user picks the channel; the field defaults to the last one named.
    const last = entries.filter((e) => e.kind === "image").pop();
    return { file, kind: "image", field: last ? last.field : "field1", channel: "" };
  }

  function addFiles(fileList) {
    for (const file of fileList) {
      entries = entries.filter((e) => e.file.name !== file.name); // the same name again replaces it
      entries.push(describe(file));
    }
    render();
  }

  function option(value, text, selected) {
    const element = document.createElement("option");
    element.value = value;
    element.textContent = text;
    element.selected = selected;
    return element;
  }

  function render() {
    rows.replaceChildren();
    entries.forEach((entry, index) => {
      const row = document.createElement("tr");
      const nameCell = document.createElement("td");
      nameCell.className = "file-name";
      nameCell.textContent = entry.file.name;
      const size = document.createElement("span");
      size.className = "size";
      size.textContent = sizeText(entry.file.size);
      nameCell.append(size);
      row.append(nameCell);
      if (entry.kind === "zip") {
        const cell = document.createElement("td");
        cell.colSpan = 2;
        cell.className = "muted";
        cell.textContent = "Zip of fields: files inside are read by their ID_channel names.";
        row.append(cell);
      } else {
        const fieldCell = document.createElement("td");
        const fieldInput = document.createElement("input");
        fieldInput.type = "text";
        fieldInput.value = entry.field;
        fieldInput.id = `file-field-${index}`;
        fieldInput.setAttribute("aria-label", `Field ID of ${entry.file.name}`);
        fieldInput.addEventListener("input", () => { entry.field = fieldInput.value.trim(); updateSummary(); });
        fieldCell.append(fieldInput);
        const channelCell = document.createElement("td");
        const select = document.createElement("select");
        select.id = `file-channel-${index}`;
        select.setAttribute("aria-label", `Channel of ${entry.file.name}`);
        select.append(option("", "Choose…", entry.channel === ""));
        CHANNELS.forEach((c) => select.append(option(c, c, entry.channel === c)));
        if (/\.tiff?$/i.test(entry.file.name)) select.append(option("multichannel", "all 4 (multi-channel TIFF)", entry.channel === "multichannel"));
        select.addEventListener("change", () => { entry.channel = select.value; updateSummary(); });
        channelCell.append(select);
        row.append(fieldCell, channelCell);
      }
      const removeCell = document.createElement("td");
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "secondary";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", `Remove ${entry.file.name}`);
      remove.addEventListener("click", () => { entries.splice(index, 1); render(); });
      removeCell.append(remove);
      row.append(removeCell);
      rows.append(row);
    });
    table.hidden = entries.length === 0;
    updateSummary();
  }

  // A quick count of what will be sent; the server checks every file properly.
  function updateSummary() {
    const fields = new Map();
    let zips = 0;
    for (const entry of entries) {
      if (entry.kind === "zip") { zips += 1; continue; }
      if (!fields.has(entry.field)) fields.set(entry.field, new Set());
      fields.get(entry.field).add(entry.channel);
    }
    const parts = [];
    for (const [name, channels] of fields) {
      const missing = channels.has("multichannel") ? [] : REQUIRED_CHANNELS.filter((c) => !channels.has(c));
      parts.push(missing.length ? `${name} (missing ${missing.join(" and ")})` : name);
    }
    let text = `${fields.size} field${fields.size === 1 ? "" : "s"}${parts.length ? ": " + parts.join(", ") : ""}`;
    if (zips) text += ` and ${zips} zip${zips === 1 ? "" : "s"} of fields`;
    summary.textContent = text + ".";
  }

  ["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  }));
  ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, () => zone.classList.remove("dragging")));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    addFiles(event.dataTransfer.files);
  });
  input.addEventListener("change", () => {
    addFiles(input.files);
    input.value = ""; // the list above holds the files; choosing again adds more
  });

  function showErrors(html) {
    errors.innerHTML = html;
    const box = errors.querySelector("[role=alert]");
    if (box) box.focus();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const unassigned = entries.filter((e) => e.kind === "image" && (!e.channel || !e.field));
    if (unassigned.length) {
      const list = unassigned.map((e) => `<li><strong></strong>: choose its field ID and channel.</li>`).join("");
      showErrors(`<div class="error-box" role="alert" tabindex="-1"><p><strong>Some files have no field or channel yet.</strong></p><ul>${list}</ul></div>`);
      errors.querySelectorAll("li strong").forEach((strong, i) => { strong.textContent = unassigned[i].file.name; });
      return;
    }
    const data = new FormData(form);
    data.delete("files");
    const chosen = {};
    for (const entry of entries) {
      data.append("files", entry.file, entry.file.name);
      if (entry.kind === "image") chosen[entry.file.name] = { field: entry.field, channel: entry.channel };
    }
    data.set("assignments", JSON.stringify(chosen));

    const request = new XMLHttpRequest();
    request.open("POST", form.action);
    request.setRequestHeader("HX-Request", "true");
    request.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable) return;
      progressBar.value = e.loaded / e.total;
      progressText.textContent = e.loaded < e.total ? `${Math.round((100 * e.loaded) / e.total)}%` : "checking every field…";
    });
    request.addEventListener("load", () => {
      const target = request.getResponseHeader("HX-Redirect");
      if (target) { window.location.assign(target); return; }
      progress.hidden = true;
      submit.disabled = false;
      showErrors(request.responseText);
    });
    request.addEventListener("error", () => {
      progress.hidden = true;
      submit.disabled = false;
      showErrors('<div class="error-box" role="alert" tabindex="-1">The upload was interrupted; check the connection and try again.</div>');
    });
    progress.hidden = false;
    progressBar.value = 0;
    progressText.textContent = "0%";
    submit.disabled = true;
    assignments.value = data.get("assignments");
    request.send(data);
  });
})();
