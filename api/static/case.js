// The case page: the differential as it stands, the gallery of cell crops grouped by class (critical
// forms first, then the unidentified bin), keyboard reclassification, sign-off and corrections.
"use strict";
const ACCESSION = PAGE.accession;
const CLASSES = PAGE.classes; // [{code, name, critical, key}]
const BY_KEY = Object.fromEntries(CLASSES.map((c) => [c.key, c.code]));
const NAMES = Object.fromEntries(CLASSES.map((c) => [c.code, c.name]));
const ORDER = [...CLASSES.filter((c) => c.critical).map((c) => c.code), "UNIDENTIFIED",
  ...CLASSES.filter((c) => !c.critical).map((c) => c.code)];
let tiles = [];
let selected = -1;
let caseState = "";

function renderDifferential(differential) {
  const body = document.querySelector("#differential tbody");
  body.replaceChildren();
  for (const code of ORDER) {
    const count = differential.counts[code] || 0;
    if (!count) continue;
    const critical = CLASSES.find((c) => c.code === code)?.critical;
    body.append(element("tr", { "data-class": code },
      element("td", { title: NAMES[code] || "below the confidence threshold: review" },
        critical ? element("span", { class: "badge critical" }, code) : code),
      element("td", { class: "num" }, String(count)),
      element("td", { class: "num" }, differential.percent[code] !== undefined ? differential.percent[code].toFixed(1) : "")));
  }
  const ratio = differential.me_ratio === null ? "n/a" : differential.me_ratio.toFixed(2);
  document.querySelector("#differential tfoot").replaceChildren(
    element("tr", {}, element("td", {}, "Counted"), element("td", { class: "num", id: "total-classed" },
      String(differential.total_classed)), element("td", { class: "num" }, "")),
    element("tr", {}, element("td", {}, "All cells"), element("td", { class: "num", id: "total" },
      String(differential.total)), element("td", { class: "num" }, "")),
    element("tr", {}, element("td", {}, "M:E"), element("td", { class: "num" }, ratio), element("td", {}, "")));
}

function renderChanges(changes) {
  const box = document.getElementById("changes");
  if (!changes) return;
  const parts = [`${changes.reclassified} reclassified`, `${changes.deleted} deleted`, `${changes.added} added`];
  const rows = Object.entries(changes.counts).sort().map(([code, c]) =>
    element("li", {}, `${code}: ${c.ai} → ${c.now}`));
  box.replaceChildren(element("h3", {}, "Changes since the AI result"), element("p", {}, parts.join(" · ")),
    element("ul", {}, ...rows));
}

function renderState(item) {
  caseState = item.status;
  document.getElementById("case-title").textContent = "Case " + item.accession;
  document.getElementById("case-patient").textContent =
    [item.patient.name, item.patient.birth_date, item.patient.sex].filter(Boolean).join(" · ");
  document.getElementById("case-state").textContent = item.status;
  const open = ["preliminary", "in_review", "correcting"].includes(item.status);
  const sign = document.getElementById("sign");
  sign.disabled = !(open && PAGE.role === "pathologist");
  sign.textContent = item.status === "correcting" ? "Sign the correction" : "Sign (pathologist)";
  document.getElementById("reopen").hidden = !(["final", "corrected"].includes(item.status) && PAGE.role === "pathologist");
}

// A slide has up to ~12,000 cells: the gallery keeps at most CHUNK tiles per class in the page until a
// person scrolls or arrows further, fetches the cells page by page and shows the first page at once.
const CHUNK = 120;
const groups = new Map();
const CELLS = new Map(); // id -> the cell as the API gave it
let observer = null;

function group(code) {
  let entry = groups.get(code);
  if (entry) return entry;
  const critical = CLASSES.find((c) => c.code === code)?.critical;
  const heading = element("h2", { class: critical ? "critical" : "" });
  const list = element("div", { class: "tiles" });
  const more = element("button", { class: "secondary more", hidden: "" }, "more");
  const section = element("section", { "data-group": code }, heading, list, more);
  entry = { code, cells: [], rendered: 0, heading, list, more, section };
  more.addEventListener("click", () => renderMore(entry));
  observer?.observe(more);
  groups.set(code, entry);
  // Sections stay in ORDER (critical forms, the unidentified bin, the rest); unknown codes go last.
  const rank = (c) => (ORDER.indexOf(c) < 0 ? ORDER.length : ORDER.indexOf(c));
  const next = [...groups.values()].filter((g) => rank(g.code) > rank(code))
    .sort((a, b) => rank(a.code) - rank(b.code))[0];
  document.getElementById("gallery").insertBefore(section, next ? next.section : null);
  return entry;
}

function renderMore(entry, count = CHUNK) {
  const start = entry.rendered;
  for (const cell of entry.cells.slice(start, start + count)) {
    const caption = element("span", { class: "caption" }, cell.class +
      (cell.probability !== null && !cell.reviewed_class ? ` ${Math.round(cell.probability * 100)}%` : ""));
    const tile = element("figure", { class: "tile", "data-cell": String(cell.id), "data-class": cell.class,
      tabindex: "-1", title: `AI: ${cell.ai_class}` },
      element("img", { src: cell.image + "?size=96", loading: "lazy", alt: `cell ${cell.id}` }), caption);
    tile.addEventListener("click", () => select(tiles.indexOf(tile)));
    entry.list.append(tile);
  }
  entry.rendered = Math.min(entry.cells.length, start + count);
  const left = entry.cells.length - entry.rendered;
  entry.more.hidden = left <= 0;
  entry.more.textContent = `${left} more`;
  const current = selected >= 0 ? tiles[selected] : null;
  tiles = [...document.querySelectorAll("#gallery .tile")];
  selected = current ? tiles.indexOf(current) : selected;
}

function addCells(page) {
  const touched = new Set();
  for (const cell of page) {
    CELLS.set(String(cell.id), cell);
    const entry = group(cell.class);
    entry.cells.push(cell);
    touched.add(entry);
  }
  for (const entry of touched) {
    entry.heading.textContent =
      `${entry.code} — ${NAMES[entry.code] || "Unidentified (below the confidence threshold)"} (${entry.cells.length})`;
    if (entry.rendered < Math.min(CHUNK, entry.cells.length)) renderMore(entry, CHUNK - entry.rendered);
    else renderMore(entry, 0);
  }
}

async function loadGallery() {
  document.getElementById("gallery").replaceChildren();
  groups.clear();
  tiles = [];
  selected = -1;
  observer = new IntersectionObserver((seen) => {
    for (const item of seen) {
      if (!item.isIntersecting) continue;
      const entry = [...groups.values()].find((g) => g.more === item.target);
      if (entry) renderMore(entry);
    }
  }, { rootMargin: "600px" });
  let after = 0;
  for (;;) {
    const page = await api("GET", `/api/cases/${encodeURIComponent(ACCESSION)}/cells?limit=2000&after=${after}`);
    addCells(page);
    if (selected < 0 && tiles.length) select(0);
    document.body.dataset.galleryStarted = "true";
    if (page.length < 2000) break;
    after = page[page.length - 1].id;
  }
}

function select(index) {
  const target = tiles[Math.max(0, Math.min(index, tiles.length - 1))];
  const entry = target && groups.get(target.closest("section").dataset.group);
  if (entry && entry.rendered < entry.cells.length && target === entry.list.lastElementChild) renderMore(entry);
  if (selected >= 0 && tiles[selected]) tiles[selected].classList.remove("selected");
  selected = Math.max(-1, Math.min(index, tiles.length - 1));
  if (selected >= 0) {
    showDetail(tiles[selected]);
    tiles[selected].classList.add("selected");
    tiles[selected].focus({ preventScroll: true });
    tiles[selected].scrollIntoView({ block: "nearest" });
  }
}

function showDetail(tile, given = null) {
  // The selected cell larger, with the classifier's most likely classes: what a reviewer weighs.
  const cell = given || CELLS.get(tile.dataset.cell);
  if (!cell) return;
  const current = tile ? tile.dataset.class : cell.class;
  const rows = Object.entries(cell.probabilities || {}).map(([code, p]) =>
    element("tr", {}, element("td", {}, code), element("td", {}, NAMES[code] || ""),
      element("td", { class: "num" }, `${(p * 100).toFixed(1)}%`)));
  const image = element("img", { src: cell.image + "?size=256", alt: `cell ${cell.id}, enlarged`, width: "256",
    height: "256", title: "A cell the AI missed here? Click on it, then press its class key." });
  image.addEventListener("click", (event) => markMissed(cell, image, event));
  document.getElementById("detail").replaceChildren(
    element("h3", {}, `Cell ${cell.id}: ${current}`),
    image,
    element("p", {}, `AI: ${cell.ai_class}` + (cell.reviewed_class ? ` · reviewed: ${cell.reviewed_class}` : "")),
    element("table", { class: "probabilities" }, ...rows));
}

// A click on a cell's outline in the slide viewer: select its crop (or show it when not in the page yet).
window.onSlideCell = (cell) => {
  CELLS.set(String(cell.id), cell);
  const tile = tiles.find((t) => t.dataset.cell === String(cell.id));
  if (tile) select(tiles.indexOf(tile));
  else showDetail(null, cell);
};

let missed = null; // {region, point}: a place on a crop where a person saw a cell the AI missed

function markMissed(cell, image, event) {
  const [column, row, side] = cell.crop;
  const scale = side / image.clientWidth;
  missed = { region: cell.region, point: [column + event.offsetX * scale, row + event.offsetY * scale] };
  say("A missed cell: press its class key to add it (Escape cancels).");
}

async function addMissed(code) {
  const body = { region: missed.region, point: missed.point, class: code };
  missed = null;
  try {
    const cell = await api("POST", `/api/cases/${encodeURIComponent(ACCESSION)}/cells`, body);
    addCells([cell]);
    if (cell.differential) renderDifferential(cell.differential);
    if (cell.changes) renderChanges(cell.changes);
    say(`Added a ${code} cell.`);
  } catch (error) {
    say(error.message, true);
  }
}

function perRow() {
  if (tiles.length < 2) return 1;
  const top = tiles[0].offsetTop;
  const count = tiles.findIndex((t) => t.offsetTop !== top);
  return count > 0 ? count : tiles.length;
}

async function change(method, tile, body) {
  const id = tile.dataset.cell;
  try {
    const answer = await api(method, `/api/cells/${id}`, body);
    if (answer.differential) renderDifferential(answer.differential);
    if (answer.changes) renderChanges(answer.changes);
    return answer;
  } catch (error) {
    say(error.message, true);
    return null;
  }
}

document.addEventListener("keydown", async (event) => {
  if (event.target.closest("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
  if (missed && event.key === "Escape") { missed = null; say("Nothing added."); return; }
  if (missed && BY_KEY[event.key.toLowerCase()]) {
    event.preventDefault();
    await addMissed(BY_KEY[event.key.toLowerCase()]);
    return;
  }
  if (event.key === "ArrowRight") { select(selected + 1); event.preventDefault(); return; }
  if (event.key === "ArrowLeft") { select(selected - 1); event.preventDefault(); return; }
  if (event.key === "ArrowDown") { select(selected + perRow()); event.preventDefault(); return; }
  if (event.key === "ArrowUp") { select(selected - perRow()); event.preventDefault(); return; }
  if (selected < 0) return;
  const tile = tiles[selected];
  if (event.key === "Delete" || event.key === "Backspace") {
    event.preventDefault();
    if (await change("DELETE", tile)) {
      tile.classList.add("changed");
      tile.querySelector(".caption").textContent = "not a cell";
      tile.dataset.class = "DELETED";
      select(selected + 1);
    }
    return;
  }
  const code = BY_KEY[event.key.toLowerCase()];
  if (!code) return;
  event.preventDefault();
  const answer = await change("PATCH", tile, { class: code });
  if (answer) {
    tile.classList.add("changed");
    tile.dataset.class = code;
    tile.querySelector(".caption").textContent = code;
    select(selected + 1);
  }
});

document.getElementById("sign").addEventListener("click", async () => {
  try {
    const signed = await api("POST", `/api/cases/${encodeURIComponent(ACCESSION)}/sign`);
    say(`Signed: ${signed.status} report stored` + (signed.outbox_id ? `, ORU queued (#${signed.outbox_id}).` : "."));
    await load(false);
  } catch (error) {
    say(error.message, true);
  }
});

document.getElementById("reopen").addEventListener("click", async () => {
  const reason = window.prompt("Why is the signed result corrected?", "") ?? "";
  try {
    await api("POST", `/api/cases/${encodeURIComponent(ACCESSION)}/corrections`, { reason });
    say("Reopened: change the cells, then sign the correction.");
    await load(false);
  } catch (error) {
    say(error.message, true);
  }
});

function renderKeys() {
  const keys = document.getElementById("keys");
  keys.replaceChildren(...CLASSES.map((c) => element("div", {}, element("kbd", {}, c.key), " ", c.code, " ",
    element("span", { class: "name" }, c.name))));
}

let slideShown = false;

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = element("script", { src });
    script.onload = resolve;
    script.onerror = () => reject(new Error("cannot load " + src));
    document.body.append(script);
  });
}

async function openSlide(viewerInfo) {
  // After the gallery's first page: the viewer's scripts are large, the crops are what people start with.
  for (const src of PAGE.viewer_scripts || []) await loadScript(src);
  if (typeof showSlide === "function") await showSlide(viewerInfo);
}

async function load(withCells = true) {
  const item = await api("GET", `/api/cases/${encodeURIComponent(ACCESSION)}`);
  renderState(item);
  if (item.differential) renderDifferential(item.differential);
  renderChanges(item.changes);
  const gallery = withCells && item.differential ? loadGallery() : Promise.resolve();
  if (!slideShown && item.viewer && (PAGE.viewer_scripts || []).length) {
    slideShown = true;
    const started = new Promise((resolve) => {
      const check = () => (document.body.dataset.galleryStarted ? resolve() : setTimeout(check, 50));
      check();
    });
    started.then(() => openSlide(item.viewer))
      .catch((error) => say("The slide viewer could not open the slide: " + error.message, true));
  }
  await gallery;
  document.body.dataset.ready = "true";
}

renderKeys();
load().catch((error) => say(error.message, true));
