// The worklist: cases with critical cells first (the server orders them), keyboard navigation.
"use strict";

async function loadWorklist() {
  const state = document.getElementById("state").value;
  const cases = await api("GET", "/api/cases" + (state ? "?status=" + encodeURIComponent(state) : ""));
  const body = document.querySelector("#worklist tbody");
  body.replaceChildren();
  for (const item of cases) {
    const badges = element("td");
    for (const [code, count] of Object.entries(item.critical)) {
      badges.append(element("span", { class: "badge critical", title: code + " cells" }, `${code} ${count}`));
    }
    const row = element("tr", { tabindex: "0", "data-url": item.url, "data-accession": item.accession },
      element("td", {}, element("a", { href: item.url }, item.accession)),
      element("td", {}, item.patient.name || ""),
      element("td", { class: "state" }, item.status),
      badges,
      element("td", {}, (item.ordered_at || "").slice(0, 16).replace("T", " ")));
    row.addEventListener("keydown", (event) => {
      if (event.key === "Enter") window.location = row.dataset.url;
      if (event.key === "ArrowDown") row.nextElementSibling?.focus();
      if (event.key === "ArrowUp") row.previousElementSibling?.focus();
    });
    row.addEventListener("dblclick", () => { window.location = row.dataset.url; });
    body.append(row);
  }
  body.querySelector("tr")?.focus();
}

document.getElementById("state").addEventListener("change", loadWorklist);
loadWorklist();
