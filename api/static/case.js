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

async function loadCells() {
  let cells = [];
  let after = 0;
  for (;;) {
    const page = await api("GET", `/api/cases/${encodeURIComponent(ACCESSION)}/cells?limit=2000&after=${after}`);
    cells = cells.concat(page);
    if (page.length < 2000) break;
    after = page[page.length - 1].id;
  }
  return cells;
}

function renderGallery(cells) {
  const gallery = document.getElementById("gallery");
  gallery.replaceChildren();
  tiles = [];
  const groups = new Map(ORDER.map((code) => [code, []]));
  for (const cell of cells) (groups.get(cell.class) || groups.set(cell.class, []).get(cell.class)).push(cell);
  for (const [code, members] of groups) {
    if (!members.length) continue;
    const critical = CLASSES.find((c) => c.code === code)?.critical;
    const heading = element("h2", { class: critical ? "critical" : "" },
      `${code} — ${NAMES[code] || "Unidentified (below the confidence threshold)"} (${members.length})`);
    const list = element("div", { class: "tiles" });
    for (const cell of members) {
      const caption = element("span", { class: "caption" }, cell.class +
        (cell.probability !== null && !cell.reviewed_class ? ` ${Math.round(cell.probability * 100)}%` : ""));
      const tile = element("figure", { class: "tile", "data-cell": String(cell.id), "data-class": cell.class,
        tabindex: "-1", title: `AI: ${cell.ai_class}` },
        element("img", { src: cell.image + "?size=96", loading: "lazy", alt: `cell ${cell.id}` }), caption);
      tile.addEventListener("click", () => select(tiles.indexOf(tile)));
      tiles.push(tile);
      list.append(tile);
    }
    gallery.append(element("section", { "data-group": code }, heading, list));
  }
  select(tiles.length ? 0 : -1);
}

function select(index) {
  if (selected >= 0 && tiles[selected]) tiles[selected].classList.remove("selected");
  selected = Math.max(-1, Math.min(index, tiles.length - 1));
  if (selected >= 0) {
    tiles[selected].classList.add("selected");
    tiles[selected].focus({ preventScroll: true });
    tiles[selected].scrollIntoView({ block: "nearest" });
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
    return answer;
  } catch (error) {
    say(error.message, true);
    return null;
  }
}

document.addEventListener("keydown", async (event) => {
  if (event.target.closest("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
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

async function load(withCells = true) {
  const item = await api("GET", `/api/cases/${encodeURIComponent(ACCESSION)}`);
  renderState(item);
  if (!slideShown && typeof showSlide === "function" && item.viewer) {
    slideShown = true;
    showSlide(item.viewer).catch((error) => say("The slide viewer could not open the slide: " + error.message, true));
  }
  if (item.differential) renderDifferential(item.differential);
  if (withCells && item.differential) renderGallery(await loadCells());
  document.body.dataset.ready = "true";
}

renderKeys();
load().catch((error) => say(error.message, true));
