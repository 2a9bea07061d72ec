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

const OPERATORS = ["technologist", "pathologist", "admin"];
const UNFINISHED = ["waiting", "queued", "running", "failed"];

// Jobs that are not done, newest first; failed ones can be retried and unfinished ones cancelled.
async function loadJobs() {
  const jobs = (await api("GET", "/api/jobs?limit=200")).filter((job) => UNFINISHED.includes(job.state));
  const body = document.querySelector("#jobs tbody");
  body.replaceChildren();
  for (const job of jobs) {
    const actions = element("td");
    if (OPERATORS.includes(PAGE.role)) {
      if (job.state === "failed") actions.append(jobButton(job, "retry", "Retry"));
      actions.append(jobButton(job, "cancel", "Cancel"));
    }
    body.append(element("tr", { "data-job": String(job.id) },
      element("td", {}, String(job.id)), element("td", {}, job.step), element("td", {}, job.slide),
      element("td", { class: "state" }, job.state), element("td", {}, `${job.attempts}/${job.max_attempts}`),
      element("td", {}, job.reason || ""), actions));
  }
  if (!jobs.length) body.append(element("tr", {}, element("td", { colspan: "7" }, "Nothing waits and nothing failed.")));
}

function jobButton(job, action, label) {
  const button = element("button", { class: action === "cancel" ? "secondary" : "" }, label);
  button.addEventListener("click", async () => {
    try {
      const after = await api("POST", `/api/jobs/${job.id}/${action}`);
      say(`Job ${after.id} (${after.step} ${after.slide}) is ${after.state}.`);
    } catch (error) {
      say(error.message, true);
    }
    loadJobs();
  });
  return button;
}

document.getElementById("state").addEventListener("change", loadWorklist);
loadWorklist();
loadJobs();
setInterval(loadJobs, 10000);
