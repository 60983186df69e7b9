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
  const BARE_CHANNEL_FILE = new RegExp(page.bareChannelFilePattern, "i"); // blue.png: group 1 channel
  const input = form.querySelector('input[type="file"][name="files"]');
  const folderInput = form.querySelector("[data-folder-input]");
  const paths = form.querySelector('input[name="paths"]');
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

  // Files keep their folder (a folder upload or a dropped folder): folders name fields as the server
  // names them (cells.uploads): a bare blue.png belongs to the field named after its folder, and an
  // ID_channel file keeps its ID unless that ID comes from several folders ({folder}_{ID}).
  function describe(file, path) {
    const parts = path.split(/[\\/]/).filter((part) => part && part !== "." && part !== "..");
    const folder = parts.slice(0, -1);
    const entry = { file, path: [...folder, file.name].join("/"), folder, kind: "image", field: "", channel: "", auto: true, id: "", bare: false };
    if (/\.zip$/i.test(file.name)) return { ...entry, kind: "zip" };
    const match = FIELD_FILE.exec(file.name);
    const bare = BARE_CHANNEL_FILE.exec(file.name);
    if (match) return { ...entry, id: match[1], channel: match[2].toLowerCase() };
    if (bare) return { ...entry, bare: true, channel: bare[1].toLowerCase() };
    if (/\.tiff?$/i.test(file.name)) return { ...entry, id: stem(file.name), channel: "multichannel" };
    return { ...entry, auto: false };
  }

  function folderId(name) {
    const cleaned = name.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^[._-]+/, "").slice(0, 200).replace(/-+$/, "");
    return cleaned || "field";
  }

  // Each folder's field ID: its last component, or as many trailing ones as tell it from the others.
  function folderLabels(folders) {
    const keys = [...new Set(folders.filter((f) => f.length).map((f) => f.join("/")))].map((k) => k.split("/"));
    const labels = new Map();
    for (const folder of keys) {
      let depth = 1;
      for (; depth < folder.length; depth++) {
        const suffix = folder.slice(-depth).join("/");
        if (!keys.some((other) => other.join("/") !== folder.join("/") && other.slice(-depth).join("/") === suffix)) break;
      }
      labels.set(folder.join("/"), folderId(folder.slice(-depth).join("_")));
    }
    return labels;
  }

  function relabel() {
    const images = entries.filter((e) => e.kind === "image");
    const labels = folderLabels(images.map((e) => e.folder));
    const folders = new Map();
    for (const e of images) {
      if (!e.id) continue;
      if (!folders.has(e.id)) folders.set(e.id, new Set());
      folders.get(e.id).add(e.folder.join("/"));
    }
    // Files without a folder: the job's name, as a field ID, else "field".
    const jobName = form.querySelector('input[name="name"]');
    const fallback = jobName && jobName.value.trim() ? folderId(jobName.value.trim()) : "field";
    for (const e of images) {
      if (!e.auto) continue;
      const label = labels.get(e.folder.join("/")) || "";
      if (e.bare) e.field = label || fallback;
      else if (e.id) e.field = label && folders.get(e.id).size > 1 ? `${label}_${e.id}` : e.id;
    }
    for (const e of images) {
      // A file of no recognised name: the field of the last one named in its folder, else its folder's.
      if (!e.auto && !e.field) {
        const sibling = images.filter((o) => o !== e && o.field && o.folder.join("/") === e.folder.join("/")).pop();
        e.field = sibling ? sibling.field : labels.get(e.folder.join("/")) || fallback;
      }
    }
  }

  function addFiles(items) {
    const refused = [];
    for (const { file, path } of items) {
      const entry = describe(file, path || file.webkitRelativePath || file.name);
      // A second file at the same relative path is refused, never a silent replacement.
      if (entries.some((e) => e.path === entry.path)) refused.push(entry.path);
      else entries.push(entry);
    }
    relabel();
    render();
    if (refused.length) {
      const list = refused.map(() => "<li><strong></strong>: a file at this path is in the list already; remove that one first to upload this one instead.</li>").join("");
      showErrors(`<div class="error-box" role="alert" tabindex="-1"><p><strong>Some files were not added.</strong></p><ul>${list}</ul></div>`);
      errors.querySelectorAll("li strong").forEach((strong, i) => { strong.textContent = refused[i]; });
    } else {
      errors.replaceChildren();
    }
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
      nameCell.textContent = entry.path;
      const size = document.createElement("span");
      size.className = "size";
      size.textContent = sizeText(entry.file.size);
      nameCell.append(size);
      row.append(nameCell);
      if (entry.kind === "zip") {
        const cell = document.createElement("td");
        cell.colSpan = 2;
        cell.className = "muted";
        cell.textContent = "Zip of fields: files inside are read by their ID_channel names, and its folders name fields.";
        row.append(cell);
      } else {
        const fieldCell = document.createElement("td");
        const fieldInput = document.createElement("input");
        fieldInput.type = "text";
        fieldInput.value = entry.field;
        fieldInput.id = `file-field-${index}`;
        fieldInput.setAttribute("aria-label", `Field ID of ${entry.path}`);
        fieldInput.addEventListener("input", () => { entry.field = fieldInput.value.trim(); entry.auto = false; updateSummary(); });
        fieldCell.append(fieldInput);
        const channelCell = document.createElement("td");
        const select = document.createElement("select");
        select.id = `file-channel-${index}`;
        select.setAttribute("aria-label", `Channel of ${entry.path}`);
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
      remove.setAttribute("aria-label", `Remove ${entry.path}`);
      remove.addEventListener("click", () => { entries.splice(index, 1); relabel(); render(); });
      removeCell.append(remove);
      row.append(removeCell);
      rows.append(row);
    });
    table.hidden = entries.length === 0;
    form.classList.toggle("has-files", entries.length > 0);
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
  // A dropped folder is read entry by entry, so its files keep their paths.
  function readEntry(entry) {
    if (entry.isFile) return new Promise((resolve) => entry.file((file) => resolve([{ file, path: entry.fullPath.replace(/^\//, "") }]), () => resolve([])));
    if (!entry.isDirectory) return Promise.resolve([]);
    const reader = entry.createReader();
    return new Promise((resolve) => {
      const found = [];
      const next = () => reader.readEntries(async (batch) => {
        if (!batch.length) { resolve((await Promise.all(found.map(readEntry))).flat()); return; }
        found.push(...batch);
        next();
      }, () => resolve([]));
      next();
    });
  }

  zone.addEventListener("drop", async (event) => {
    event.preventDefault();
    const dropped = [...(event.dataTransfer.items || [])].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
    if (dropped.some((entry) => entry.isDirectory)) addFiles((await Promise.all(dropped.map(readEntry))).flat());
    else addFiles([...event.dataTransfer.files].map((file) => ({ file, path: file.name })));
  });
  input.addEventListener("change", () => {
    addFiles([...input.files].map((file) => ({ file, path: file.name })));
    input.value = ""; // the list above holds the files; choosing again adds more
  });
  if (folderInput) {
    folderInput.addEventListener("change", () => {
      addFiles([...folderInput.files].map((file) => ({ file, path: file.webkitRelativePath || file.name })));
      folderInput.value = "";
    });
  }
  // Buttons stand in for the native inputs, whose "No file chosen" would sit beside the list.
  form.classList.add("js-upload");
  input.tabIndex = -1;
  form.querySelectorAll("[data-choose]").forEach((button) => {
    button.hidden = false;
    button.addEventListener("click", () => (button.dataset.choose === "folder" ? folderInput : input).click());
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
      errors.querySelectorAll("li strong").forEach((strong, i) => { strong.textContent = unassigned[i].path; });
      return;
    }
    const data = new FormData(form);
    data.delete("files");
    data.delete("folder");
    const chosen = {};
    const sent = [];
    for (const entry of entries) {
      data.append("files", entry.file, entry.file.name);
      sent.push(entry.path);
      if (entry.kind === "image") chosen[entry.path] = { field: entry.field, channel: entry.channel };
    }
    data.set("assignments", JSON.stringify(chosen));
    data.set("paths", JSON.stringify(sent));

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
    paths.value = data.get("paths");
    request.send(data);
  });
})();
