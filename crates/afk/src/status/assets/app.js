// afk's dashboard: reads /api/v1/state, and reads it again whenever /api/v1/events says the
// ledger changed (every 5 s as well, should the stream drop). Everything is built with
// textContent: no text from an issue or an agent is ever read as HTML.
"use strict";

const STATE_ORDER = ["queued", "dispatching", "running", "retry_wait", "needs_input", "in_review",
  "succeeded", "merged", "closed", "failed", "timed_out", "lost", "cancelled", "given_up"];

let last = null;
let fetching = false;
let again = false;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function link(text, href, cls) {
  if (!href) return el("span", { class: cls }, text);
  return el("a", { href, class: cls, target: "_blank", rel: "noopener" }, text);
}

function issueCell(item) {
  const td = el("td", { "data-label": "issue" });
  td.append(link(item.issue_identifier, item.issue_url || item.api_path, "issue-link"));
  if (item.title) td.append(el("div", { class: "muted" }, item.title));
  return td;
}

function duration(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

function when(iso) {
  if (!iso) return "-";
  const d = new Date(iso);
  return d.toLocaleTimeString();
}

function threadCell(item) {
  const td = el("td", { "data-label": "thread" });
  if (item.thread_url || item.thread_id) {
    td.append(link(item.thread_id ? item.thread_id.slice(0, 8) + "…" : "thread", item.thread_url, "thread-link"));
  } else td.append("-");
  return td;
}

function fill(id, rows, render) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(...rows.map(render));
  document.getElementById(`${id}-empty`).hidden = rows.length > 0;
  document.getElementById(id).hidden = rows.length === 0;
}

function render(state) {
  last = { state, at: Date.now() };
  document.getElementById("generated").textContent = "as of " + when(state.generated_at);
  const counts = document.getElementById("counts");
  const names = Object.keys(state.counts).filter((s) => s !== "retrying");
  names.sort((a, b) => (STATE_ORDER.indexOf(a) + 1 || 99) - (STATE_ORDER.indexOf(b) + 1 || 99));
  counts.replaceChildren(...names.map((s) =>
    el("li", { class: `state-${s}`, "data-state": s }, el("b", {}, state.counts[s]), s.replace("_", " "))));
  document.getElementById("totals").textContent =
    `${state.totals.jobs} jobs, ${state.totals.attempts} attempts, agent time ${duration(state.totals.agent_seconds)}`;

  document.getElementById("running-count").textContent = state.running.length;
  fill("running", state.running, (r) => el("tr", { "data-issue": r.issue_identifier, "data-thread": r.thread_id, class: "running-row" },
    issueCell(r),
    el("td", { "data-label": "attempt", class: "num" }, r.attempt),
    // A thread waiting for a person shows as such, not as running.
    el("td", { "data-label": "state", class: `state-${r.job_state === "needs_input" ? r.job_state : r.state}` },
      (r.job_state === "needs_input" ? r.job_state : r.state).replace("_", " ")),
    el("td", { "data-label": "running for", class: "num elapsed", "data-started": r.started_at }, duration(r.seconds_running)),
    threadCell(r)));

  document.getElementById("needs-count").textContent = state.needs_person.length;
  fill("needs", state.needs_person, (j) => el("tr", { "data-issue": j.issue_identifier },
    issueCell(j),
    el("td", { "data-label": "state", class: `state-${j.state}` }, j.state.replace("_", " ")),
    el("td", { "data-label": "attempts", class: "num" }, j.attempts),
    el("td", { "data-label": "error", class: "error" }, j.error || "-"),
    threadCell(j)));

  document.getElementById("retrying-count").textContent = state.retrying.length;
  fill("retrying", state.retrying, (r) => el("tr", { "data-issue": r.issue_identifier },
    issueCell(r),
    el("td", { "data-label": "next attempt", class: "num" }, r.attempt),
    el("td", { "data-label": "due", class: "num due", "data-due": r.due_at }, dueText(r.due_at)),
    el("td", { "data-label": "last error", class: "error" }, r.error || "-")));

  fill("recent", state.recent, (o) => el("tr", { "data-issue": o.issue_identifier, "data-thread": o.thread_id, class: "outcome-row" },
    issueCell(o),
    el("td", { "data-label": "attempt", class: "num" }, o.attempt),
    el("td", { "data-label": "outcome", class: `outcome state-${o.outcome}` }, o.outcome.replace("_", " ")),
    el("td", { "data-label": "took", class: "num" }, duration(o.seconds)),
    el("td", { "data-label": "ended", class: "num" }, when(o.ended_at)),
    threadCell(o)));
}

function dueText(iso) {
  if (!iso) return "-";
  const seconds = (new Date(iso).getTime() - Date.now()) / 1000;
  return seconds <= 0 ? "due now" : `in ${duration(seconds)} (${when(iso)})`;
}

// Between reads, the clocks move on their own.
function tickClocks() {
  for (const cell of document.querySelectorAll("td.elapsed")) {
    cell.textContent = duration((Date.now() - new Date(cell.dataset.started).getTime()) / 1000);
  }
  for (const cell of document.querySelectorAll("td.due")) cell.textContent = dueText(cell.dataset.due);
}

async function refresh() {
  if (fetching) { again = true; return; }
  fetching = true;
  try {
    const response = await fetch("/api/v1/state", { cache: "no-store" });
    if (response.ok) render(await response.json());
  } catch (_) {
    // The next change or poll tries again.
  } finally {
    fetching = false;
    if (again) { again = false; refresh(); }
  }
}

function follow() {
  const live = document.getElementById("live");
  if (!window.EventSource) { live.textContent = "polling"; return; }
  const source = new EventSource("/api/v1/events");
  source.addEventListener("open", () => { live.textContent = "live"; live.classList.add("on"); refresh(); });
  source.addEventListener("change", () => refresh());
  source.addEventListener("error", () => { live.textContent = "reconnecting…"; live.classList.remove("on"); });
}

window.afkLoadedAt = Date.now();
refresh();
follow();
setInterval(refresh, 5000);
setInterval(tickClocks, 1000);
