// The jobs page, live: every few seconds the page asks the JSON API for what it shows (the same
// filters and page, from its own query string) and redraws the tables in place. Text goes in
// with textContent only, never as HTML: names from IPS stay text. Without JavaScript the page
// is the same, as of its loading.
"use strict";

(function () {
  const REFRESH_MS = 5000;
  const STUCK_MINUTES = 30;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "\u2013";
    seconds = Math.floor(seconds);
    if (seconds < 60) return seconds + "s";
    let minutes = Math.floor(seconds / 60);
    seconds %= 60;
    if (minutes < 60) return minutes + "m " + String(seconds).padStart(2, "0") + "s";
    let hours = Math.floor(minutes / 60);
    minutes %= 60;
    if (hours < 48) return hours + "h " + String(minutes).padStart(2, "0") + "m";
    const days = Math.floor(hours / 24);
    hours %= 24;
    return days + "d " + String(hours).padStart(2, "0") + "h";
  }

  const MAX_SHOWN = 120;
  function name(value) {
    const shown = value.length <= MAX_SHOWN ? value : value.slice(0, MAX_SHOWN - 1) + "\u2026";
    return el("bdi", { title: shown === value ? null : value }, shown);
  }

  function taskType(value) {
    const short = value.split(".").pop() || value;
    return short === value ? name(value) : el("bdi", { title: value }, short.slice(0, MAX_SHOWN));
  }

  function cell(label, ...children) {
    return el("td", { "data-label": label }, ...children);
  }

  function time(iso) {
    return iso ? el("time", { datetime: iso }, iso) : "\u2013";
  }

  function badge(kind, text) {
    return el("span", { class: "badge " + kind }, text);
  }

  function task(t) {
    const percent = t.progress_ratio === null ? "?" : Math.round(t.progress_ratio * 100) + "%";
    let eta;
    if (t.eta_seconds !== null) eta = "ETA " + duration(t.eta_seconds);
    else if (t.stuck || t.failed) eta = "no ETA";
    else if (t.items_per_second === null) eta = "no ETA yet: rate not measured";
    else eta = "no ETA: no progress measured";
    const mark = t.stuck ? badge("bad", "stuck") : t.failed ? badge("bad", "failed") : null;
    const bar = el("progress", { max: "1", "aria-label": t.task_type + ": " + percent }, percent);
    if (t.progress_ratio !== null) bar.value = t.progress_ratio;
    const total = t.processed + t.processing + t.pending;
    return el("li", {},
      el("span", { class: "task" }, taskType(t.task_type)), " ", name(t.state), mark ? " " : null, mark, " ", bar, " ",
      el("span", { class: "counts" },
        `${t.processed} done \u00b7 ${t.processing} processing \u00b7 ${t.pending} pending of ${total}`),
      " ", el("span", { class: "since" }, `last progress ${duration(t.seconds_since_progress)} ago \u00b7 ${eta}`));
  }

  function job(j) {
    const classes = [j.stuck ? "stuck" : null, j.failed ? "failed" : null].filter(Boolean).join(" ");
    const tasks = j.tasks.length ? j.tasks.map(task) : [el("li", {}, "no task reported")];
    return el("tr", { class: classes || null, "data-job": j.job_handle },
      el("th", { scope: "row" }, j.stuck ? badge("bad", "stuck") : null, j.stuck ? " " : null,
        j.failed ? badge("bad", "failed") : null, j.failed ? " " : null, name(j.name)),
      cell("Company", name(j.company)), cell("Type", name(j.type)), cell("State", name(j.state)),
      cell("Started", time(j.start), ` (${duration(j.age_seconds)} ago)`),
      cell("Tasks", el("ul", { class: "tasks" }, ...tasks)));
  }

  function company(c) {
    const health = !c.polled ? badge("wait", "not polled yet") : c.up ? badge("ok", "up") : badge("bad", "failing");
    const error = c.last_error ? el("span", {}, c.last_error.reason + ": ", name(c.last_error.message)) : "\u2013";
    return el("tr", {}, el("th", { scope: "row" }, name(c.company)), cell("Poll", health),
      cell("Last success", time(c.last_success)), cell("Last error", error), cell("Next poll", time(c.next_poll)),
      el("td", { class: "num", "data-label": "Active jobs" }, c.active_jobs));
  }

  function finished(f) {
    const num = (label, value) => el("td", { class: "num", "data-label": label }, value);
    return el("tr", { class: f.outcome }, el("th", { scope: "row" }, name(f.name)), cell("Company", name(f.company)),
      cell("Type", name(f.log_type)), cell("Outcome", f.outcome), cell("Ended", time(f.end)),
      cell("Took", duration(f.duration_seconds)), num("Files ok", f.files.success),
      num("Errors", f.files.error), num("Warnings", f.files.warning));
  }

  function fill(tbody, rows, empty, columns) {
    if (!tbody) return;
    tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: columns }, empty))]));
  }

  async function fetchJson(path) {
    const response = await fetch(path + window.location.search, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(path + ": HTTP " + response.status);
    return response.json();
  }

  async function refresh() {
    if (document.hidden) return;
    const [jobs, status] = await Promise.all([fetchJson("api/v1/jobs"), fetchJson("api/v1/status")]);
    fill(document.getElementById("jobs"), jobs.jobs.map(job), "No active job matches.", 6);
    fill(document.querySelector("table.companies tbody"), status.companies.map(company),
      "No company is polled yet.", 6);
    fill(document.querySelector("table.finished tbody"), jobs.finished.map(finished),
      "No finished job seen yet.", 9);
    const summary = document.getElementById("summary");
    summary.replaceChildren(
      `${jobs.matching} job${jobs.matching === 1 ? "" : "s"} match; `,
      el("strong", {}, `${jobs.stuck} with a stuck task`), ` (no progress for ${STUCK_MINUTES} min), `,
      el("strong", {}, `${jobs.failed} with a failed task`), `. Page ${jobs.page} of ${jobs.pages}.`);
    const generated = document.querySelector(".generated time");
    if (generated) {
      generated.dateTime = jobs.generated;
      generated.textContent = jobs.generated;
    }
    document.body.dataset.refreshed = jobs.generated;
  }

  function loop() {
    refresh().catch((error) => { document.body.dataset.refreshError = String(error); })
      .finally(() => window.setTimeout(loop, REFRESH_MS));
  }

  window.setTimeout(loop, REFRESH_MS);
})();
