// The bloodseg web page: upload smears to POST /segment and show counts, pictures and cells.
"use strict";

const COLUMNS = ["id", "label", "x_min", "y_min", "x_max", "y_max",
  "centroid_x", "centroid_y", "area", "score", "diameter", "on_border"];
let model = null; // GET /model: classes, colours, training scale

function $(selector, root = document) { return root.querySelector(selector); }

function showError(message) {
  const line = document.createElement("p");
  line.textContent = message;
  $("#errors").append(line);
}

async function apiError(response) {
  // the API answers every failure with {"error": {"code", "message"}}
  try {
    const body = await response.json();
    return `${body.error.message} (HTTP ${response.status})`;
  } catch {
    return `the server answered HTTP ${response.status}`;
  }
}

async function loadModel() {
  const response = await fetch("/model");
  if (!response.ok) {
    showError(`The model is not available: ${await apiError(response)}. Reload the page later.`);
    return;
  }
  model = await response.json();
  $("#model-name").textContent = `Model ${model.name} ${model.version} on ${model.provider}.`;
  $("#training-scale").textContent =
    `The model works at RBCs of ${model.working_rbc_diameter_px} px; other sizes are resampled to it. ` +
    "Left blank, the size is estimated from each image.";
}

function classColor(name) {
  const found = model && model.classes.find((c) => c.name === name);
  return found ? `rgb(${found.color.join(",")})` : "#999";
}

function rowsOf(cells) {
  return cells.map((c) => ({
    id: c.id, label: c.label,
    x_min: c.bbox[0], y_min: c.bbox[1], x_max: c.bbox[2], y_max: c.bbox[3],
    centroid_x: c.centroid[0], centroid_y: c.centroid[1], area: c.area, score: c.score,
    diameter: c.diameter, on_border: c.on_border,
  }));
}

function download(name, type, data) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([data], { type }));
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

function base64Bytes(text) {
  const raw = atob(text);
  return Uint8Array.from(raw, (ch) => ch.charCodeAt(0));
}

async function colourMask(maskBase64) {
  // the mask PNG holds class ids (0, 1, 2): paint each with its class colour to show it
  const image = new Image();
  image.src = `data:image/png;base64,${maskBase64}`;
  await image.decode();
  const canvas = document.createElement("canvas");
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
  const colours = new Map(model.classes.map((c) => [c.id, c.color]));
  for (let i = 0; i < pixels.data.length; i += 4) {
    const colour = colours.get(pixels.data[i]) || [0, 0, 0];
    pixels.data.set(colour, i);
    pixels.data[i + 3] = 255;
  }
  context.putImageData(pixels, 0, 0);
  return canvas.toDataURL("image/png");
}

function fillTable(card, rows) {
  const head = $("thead tr", card);
  const body = $("tbody", card);
  head.replaceChildren(...COLUMNS.map((name) => {
    const th = document.createElement("th");
    th.scope = "col";
    th.tabIndex = 0;
    th.textContent = name;
    const sort = () => {
      const ascending = th.getAttribute("aria-sort") !== "ascending";
      head.querySelectorAll("th").forEach((other) => other.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      rows.sort((a, b) => {
        const order = typeof a[name] === "number" ? a[name] - b[name]
          : String(a[name]).localeCompare(String(b[name]));
        return ascending ? order : -order;
      });
      drawRows();
    };
    th.addEventListener("click", sort);
    th.addEventListener("keydown", (event) => { if (event.key === "Enter") sort(); });
    return th;
  }));
  function drawRows() {
    body.replaceChildren(...rows.map((row) => {
      const tr = document.createElement("tr");
      for (const name of COLUMNS) {
        const td = document.createElement("td");
        td.textContent = row[name];
        tr.append(td);
      }
      return tr;
    }));
  }
  drawRows();
}

async function render(card, file, body) {
  const stem = file.name.replace(/\.[^.]+$/, "");
  const counts = $(".counts", card);
  counts.replaceChildren(...Object.entries(body.counts).map(([label, count]) => {
    const item = document.createElement("div");
    item.style.setProperty("--swatch", classColor(label));
    const term = document.createElement("dt");
    term.textContent = label.toUpperCase();
    const value = document.createElement("dd");
    value.dataset.testid = `count-${label}`;
    value.textContent = count;
    item.append(term, value);
    return item;
  }));

  const how = {
    given: "given",
    estimated: "estimated from the image",
    default: "the model's training scale",
  }[body.scale_source];
  const sizes = body.rbc_sizes;
  const measured = sizes
    ? ` Measured RBCs: median ${sizes.median_diameter_px.toFixed(1)} px, ` +
      `CV ${(100 * sizes.diameter_cv).toFixed(1)} % over ${sizes.cells} away from the border.`
    : "";
  const surround = body.field_of_view < 1
    ? ` The dark surround outside the microscope's field of view ` +
      `(${(100 * (1 - body.field_of_view)).toFixed(0)} % of the image) was read as empty glass.`
    : "";
  $(".magnification", card).textContent =
    `Magnification ${how}: RBCs of ${body.rbc_diameter_px.toFixed(1)} px, resampled by ×${body.scale}.` +
    measured + surround;
  const warnings = $(".warnings", card);
  warnings.replaceChildren(...body.warnings.map((w) => {
    const item = document.createElement("li");
    item.dataset.code = w.code;
    item.textContent = w.message;
    return item;
  }));
  warnings.hidden = body.warnings.length === 0;

  const views = {
    overlay: `data:image/png;base64,${body.overlay}`,
    mask: await colourMask(body.mask),
    original: card.dataset.original,
  };
  const view = $(".view", card);
  const radios = card.querySelectorAll(".views input");
  radios.forEach((radio) => {
    radio.name = `view-${card.dataset.index}`;
    radio.onchange = () => {
      view.src = views[radio.value];
      view.alt = `${radio.value} of ${file.name}`;
    };
  });
  const chosen = [...radios].find((r) => r.checked) || radios[0];
  view.src = views[chosen.value];
  view.alt = `${chosen.value} of ${file.name}`;

  const rows = rowsOf(body.cells);
  fillTable(card, rows);
  $(".download-csv", card).onclick = () => {
    const lines = [["image", ...COLUMNS].join(",")];
    for (const row of rowsOf(body.cells)) {
      lines.push([JSON.stringify(file.name), ...COLUMNS.map((c) => row[c])].join(","));
    }
    download(`${stem}-cells.csv`, "text/csv", lines.join("\n") + "\n");
  };
  $(".download-geojson", card).onclick = () =>
    download(`${stem}.geojson`, "application/geo+json", JSON.stringify(body.geojson));
  $(".download-mask", card).onclick = () =>
    download(`${stem}-mask.png`, "image/png", base64Bytes(body.mask));
  $(".result-body", card).hidden = false;
}

async function segment(card, file) {
  const status = $(".status", card);
  const diameter = $("#rbc-diameter").value.trim();
  card.dataset.diameter = diameter;
  status.className = "status";
  status.textContent = "Segmenting…";
  const params = new URLSearchParams({ include: "mask,overlay,geojson" });
  if (diameter) params.set("rbc_diameter", diameter);
  const form = new FormData();
  form.append("image", file, file.name);
  try {
    const response = await fetch(`/segment?${params}`, { method: "POST", body: form });
    if (!response.ok) {
      status.className = "status error";
      status.textContent = `Could not segment ${file.name}: ${await apiError(response)}`;
      $(".result-body", card).hidden = true;
      return;
    }
    const body = await response.json();
    await render(card, file, body);
    status.textContent = `${body.cells.length} cells in ${Math.round(body.timings_ms.total)} ms.`;
  } catch (error) {
    status.className = "status error";
    status.textContent = `Could not reach the service: ${error.message}`;
  }
}

let cardCount = 0;
function addFiles(files) {
  for (const file of files) {
    const card = $("#result-template").content.firstElementChild.cloneNode(true);
    card.dataset.index = String(cardCount++);
    card.dataset.original = URL.createObjectURL(file);
    $(".file-name", card).textContent = file.name;
    $(".rerun", card).onclick = () => segment(card, file);
    $("#results").prepend(card);
    segment(card, file);
  }
}

$("#files").addEventListener("change", (event) => {
  addFiles(event.target.files);
  event.target.value = "";
});
const zone = $("#dropzone");
zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (event) => {
  event.preventDefault();
  zone.classList.remove("over");
  addFiles(event.dataTransfer.files);
});
loadModel();
