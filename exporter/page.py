"""The jobs page: the HTML of a `JobsPage` and of the companies' poll health.

Plain HTML built on the server: it works with JavaScript off, and the script shipped beside it
(static/jobs.js) only refreshes it. No inline script or style: the page is served with a strict
Content-Security-Policy (`CSP`). Every text from IPS is escaped, shown inside `<bdi>` (a
right-to-left mark in a job name cannot turn the rest of the row around) and cut to
`MAX_SHOWN` characters, the whole of it in the title. Links are relative, so the page works
behind a reverse proxy under any prefix.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

from exporter import APP_NAME, __version__
from exporter.jobsview import MAX_TEXT_FILTER, STUCK_AFTER_SECONDS, FinishedRow, JobRow, JobsPage, Query, TaskRow, iso

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
MAX_SHOWN = 120
NONE = "&ndash;"  # an empty cell
_BAD = '<span class="badge bad">{}</span>'  # a mark in words: stuck, failed, failing


def render(page: JobsPage, status: Mapping[str, Any], filters: Mapping[str, list[str]], *,
           metrics_href: str = "metrics") -> str:
    """The page; `metrics_href` is the telemetry path relative to the page (a checked plain path)."""
    query = page.query
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Scene7 jobs · {APP_NAME}</title>
<link rel="stylesheet" href="static/jobs.css">
<link rel="icon" href="static/favicon.svg" type="image/svg+xml">
<script src="static/jobs.js" defer></script>
</head><body>
<header><h1>Scene7 jobs</h1>
<nav><a href="{_text(metrics_href)}">Metrics</a> · <a href="api/v1/jobs">Jobs JSON</a>
 · <a href="api/v1/status">Status JSON</a> · <a href="healthz">Health</a> · <a href="readyz">Readiness</a></nav>
<p class="generated">{APP_NAME} {_text(__version__)} · as of <time datetime="{_text(status["generated"])}">\
{_text(status["generated"])}</time></p></header>
<main>
<section aria-labelledby="polls"><h2 id="polls">Polls</h2>
{_companies(status["companies"])}
</section>
<section aria-labelledby="active"><h2 id="active">Active jobs</h2>
{_filter_form(query, filters)}
<p id="summary" role="status">{page.matching} job{"s" if page.matching != 1 else ""} match; \
<strong>{page.stuck} with a stuck task</strong> (no progress for {STUCK_AFTER_SECONDS / 60:.0f} min), \
<strong>{page.failed} with a failed task</strong>. Page {query.page} of {page.pages}.</p>
{_jobs(page.jobs)}
{_pager(page)}
</section>
<section aria-labelledby="finished"><h2 id="finished">Recently finished jobs</h2>
<p>Worst first: {len(page.finished)} of the {page.finished_known} the exporter keeps.</p>
{_finished(page.finished)}
</section>
</main></body></html>
"""


def _text(value: object) -> str:
    return html.escape(str(value), quote=True)


def _name(value: str) -> str:
    """An untrusted name: escaped, isolated, cut to MAX_SHOWN characters (the whole in the title)."""
    shown = value if len(value) <= MAX_SHOWN else value[: MAX_SHOWN - 1] + "…"
    title = f' title="{_text(value)}"' if shown != value else ""
    return f"<bdi{title}>{_text(shown)}</bdi>"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def _companies(companies: Iterable[Mapping[str, Any]]) -> str:
    rows = []
    for company in companies:
        if not company["polled"]:
            health = '<span class="badge wait">not polled yet</span>'
        elif company["up"]:
            health = '<span class="badge ok">up</span>'
        else:
            health = _BAD.format("failing")
        error = company["last_error"]
        error_text = f'{_text(error["reason"])}: {_name(error["message"])}' if error else NONE
        rows.append(
            f"<tr><th scope=\"row\">{_name(company['company'])}</th><td data-label=\"Poll\">{health}</td>"
            f"<td data-label=\"Last success\">{_time(company['last_success'])}</td>"
            f"<td data-label=\"Last error\">{error_text}</td>"
            f"<td data-label=\"Next poll\">{_time(company['next_poll'])}</td>"
            f"<td class=\"num\" data-label=\"Active jobs\">{company['active_jobs']}</td></tr>"
        )
    body = "\n".join(rows) or '<tr><td colspan="6">No company is polled yet.</td></tr>'
    return ("<table class=\"companies\"><thead><tr><th scope=\"col\">Company</th><th scope=\"col\">Poll</th>"
            "<th scope=\"col\">Last success</th><th scope=\"col\">Last error</th><th scope=\"col\">Next poll</th>"
            f"<th scope=\"col\">Active jobs</th></tr></thead><tbody>\n{body}\n</tbody></table>")


def _time(moment: str | None) -> str:
    return f"<time datetime=\"{_text(moment)}\">{_text(moment)}</time>" if moment else NONE


def _filter_form(query: Query, filters: Mapping[str, list[str]]) -> str:
    def select(name: str, label: str, current: str | None) -> str:
        options = [f'<option value=""{" selected" if current is None else ""}>any</option>']
        for value in filters.get(name, []):
            chosen = " selected" if value == current else ""
            options.append(f'<option value="{_text(value)}"{chosen}>{_text(value[:MAX_SHOWN])}</option>')
        return (f'<label>{label} <select name="{name}">{"".join(options)}</select></label>')

    checked = " checked" if query.attention else ""
    return (
        '<form class="filters" method="get" action="./">'
        f'{select("company", "Company", query.company)}{select("state", "State", query.state)}'
        f'{select("type", "Type", query.job_type)}'
        f'<label>Name contains <input type="search" name="q" value="{_text(query.text or "")}" '
        f'maxlength="{MAX_TEXT_FILTER}">'
        f'</label><label><input type="checkbox" name="attention" value="1"{checked}> stuck or failed only</label>'
        '<button type="submit">Show</button></form>'
    )


def _jobs(jobs: Iterable[JobRow]) -> str:
    rows = [_job(job) for job in jobs]
    body = "\n".join(rows) or '<tr><td colspan="6">No active job matches.</td></tr>'
    return ('<table class="jobs"><thead><tr><th scope="col">Job</th><th scope="col">Company</th>'
            '<th scope="col">Type</th><th scope="col">State</th><th scope="col">Started</th>'
            f'<th scope="col">Tasks</th></tr></thead><tbody id="jobs">\n{body}\n</tbody></table>')


def _job(job: JobRow) -> str:
    marks = (_BAD.format("stuck") + " " if job.stuck else "") + (_BAD.format("failed") + " " if job.failed else "")
    classes = " ".join(c for c, on in (("stuck", job.stuck), ("failed", job.failed)) if on)
    tasks = "".join(_task(task) for task in job.tasks) or "<li>no task reported</li>"
    return (
        f'<tr{f" class={classes!r}" if classes else ""} data-job="{_text(job.job_handle)}">'
        f'<th scope="row">{marks}{_name(job.name)}</th><td data-label="Company">{_name(job.company)}</td>'
        f'<td data-label="Type">{_name(job.job_type)}</td><td data-label="State">{_name(job.state)}</td>'
        f'<td data-label="Started">{_time(iso(job.start))} ({duration(job.age)} ago)</td>'
        f'<td data-label="Tasks"><ul class="tasks">{tasks}</ul></td></tr>'
    )


def _task(task: TaskRow) -> str:
    total = task.processed + task.processing + task.pending
    percent = "?" if task.progress is None else f"{task.progress * 100:.0f}%"
    value = "" if task.progress is None else f' value="{task.progress:.4f}"'  # no value: indeterminate
    mark = " " + _BAD.format("stuck") if task.stuck else (" " + _BAD.format("failed") if task.failed else "")
    if task.eta is not None:
        eta = f"ETA {duration(task.eta)}"
    elif task.stuck or task.failed:
        eta = "no ETA"
    elif task.rate is None:
        eta = "no ETA yet: rate not measured"
    else:
        eta = "no ETA: no progress measured"
    label = f"{task.task_type}: {percent}"
    return (
        f'<li><span class="task">{_task_type(task.task_type)}</span> {_name(task.state)}{mark} '
        f'<progress max="1"{value} aria-label="{_text(label)}">{percent}</progress> '
        f'<span class="counts">{task.processed} done · {task.processing} processing · {task.pending} pending'
        f" of {total}</span> "
        f'<span class="since">last progress {duration(task.since_progress)} ago · {eta}</span></li>'
    )


def _task_type(value: str) -> str:
    """A task type by the last part of its Java name (UploadAsyncTaskMonitor), the whole in the title."""
    short = value.rsplit(".", 1)[-1] or value
    if short == value:
        return _name(value)
    return f'<bdi title="{_text(value)}">{_text(short[:MAX_SHOWN])}</bdi>'


def _pager(page: JobsPage) -> str:
    query = page.query
    links = []
    if query.page > 1:
        links.append(f'<a rel="prev" href="./?{_text(urlencode(query.params(page=query.page - 1)))}">previous</a>')
    if query.page < page.pages:
        links.append(f'<a rel="next" href="./?{_text(urlencode(query.params(page=query.page + 1)))}">next</a>')
    return f'<nav class="pager" aria-label="pages">{" · ".join(links)}</nav>' if links else ""


def _finished(rows: Iterable[FinishedRow]) -> str:
    body = "\n".join(
        f'<tr class="{_text(row.outcome)}"><th scope="row">{_name(row.name)}</th>'
        f'<td data-label="Company">{_name(row.company)}</td><td data-label="Type">{_name(row.log_type)}</td>'
        f'<td data-label="Outcome">{_text(row.outcome)}</td><td data-label="Ended">{_time(iso(row.end))}</td>'
        f'<td data-label="Took">{duration(row.duration)}</td>'
        f"<td class=\"num\" data-label=\"Files ok\">{row.files.get('success', 0)}</td>"
        f"<td class=\"num\" data-label=\"Errors\">{row.files.get('error', 0)}</td>"
        f"<td class=\"num\" data-label=\"Warnings\">{row.files.get('warning', 0)}</td></tr>"
        for row in rows
    ) or '<tr><td colspan="9">No finished job seen yet.</td></tr>'
    return ('<table class="finished"><thead><tr><th scope="col">Job</th><th scope="col">Company</th>'
            '<th scope="col">Type</th><th scope="col">Outcome</th><th scope="col">Ended</th>'
            '<th scope="col">Took</th><th scope="col">Files ok</th><th scope="col">Errors</th>'
            f'<th scope="col">Warnings</th></tr></thead><tbody>\n{body}\n</tbody></table>')

