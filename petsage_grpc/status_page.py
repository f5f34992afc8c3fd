"""The operator's status page on the admin port (`GET /` from a browser): is it serving, which
check fails and since when, what changed lately.

One HTML page, rendered on the server with the state as it stands (it shows everything with
JavaScript off), its style and script served by the admin port itself (`/status.css`,
`/status.js`; no other origin, a strict Content-Security-Policy). The script refreshes it from
`/api/v1/health` at most once a second while the tab is visible. Colour is never the only
signal: every status is written out. It shows no check targets and no secrets: check errors are
words that name none (see `checks.base.words`).
"""

from __future__ import annotations

import datetime
import html
import time
from typing import TYPE_CHECKING, Any

from petsage_grpc.health import status_name

if TYPE_CHECKING:
    from petsage_grpc.history import Transition
    from petsage_grpc.monitor import HealthMonitor

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HISTORY = 50
"""Transitions the page shows, newest first."""


def _iso(seconds: float | None) -> str:
    if seconds is None:
        return ""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def transition_json(change: Transition) -> dict[str, Any]:
    return {
        "time": _iso(change.time),
        "kind": change.kind,
        "name": change.name,
        "old": change.old,
        "new": change.new,
        "reason": change.reason,
    }


def overview(
    monitor: HealthMonitor,
    *,
    status: str,
    message: str,
    version: str,
    instance: str,
    started: float,
) -> dict[str, Any]:
    """Everything the page shows, as JSON (`/api/v1/health`). `started`: monotonic time."""
    now = time.monotonic()
    statuses = monitor.state.statuses()
    order = {"liveness": 0, "readiness": 1, "": 2}
    services = sorted(statuses, key=lambda name: (order.get(name, 3), name))
    history = monitor.state.history
    changes = history.recent(PAGE_HISTORY) if history is not None else []
    return {
        "instance": instance,
        "version": version,
        "uptime_seconds": round(now - started, 1),
        "started": _iso(time.time() - (now - started)),
        "status": status,
        "message": message,
        "services": [{"name": name, "status": status_name(statuses[name])} for name in services],
        "checks": [
            {
                "name": runner.spec.name,
                "kind": runner.spec.kind,
                "required": runner.spec.required,
                "passing": runner.is_passing(),
                "latency_ms": None
                if runner.last_latency is None
                else round(runner.last_latency * 1000, 2),
                "error": runner.why_failing(),
                "since": _iso(runner.last_change_time),
            }
            for runner in monitor.runners
        ],
        "history": [transition_json(change) for change in reversed(changes)],
    }


def _uptime(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{days}d"] if days else []
    if days or hours:
        parts.append(f"{hours}h")
    if days or hours or minutes:
        parts.append(f"{minutes}m")
    parts.append(f"{secs}s")
    return " ".join(parts)


def render(document: dict[str, Any]) -> bytes:
    """The whole page, with the state of `document` written in."""
    e = html.escape
    services = "".join(
        f"<tr><td>{e(s['name'] or chr(34) * 2)}</td>"
        f'<td><span class="state {_css(s["status"])}">{e(s["status"])}</span></td></tr>'
        for s in document["services"]
    )
    checks = (
        "".join(
            f"<tr><td>{e(c['name'])}</td><td>{e(c['kind'])}</td>"
            f"<td>{'required' if c['required'] else 'optional'}</td>"
            f'<td><span class="state {"serving" if c["passing"] else "not-serving"}">'
            f"{'passing' if c['passing'] else 'FAILING'}</span></td>"
            f"<td>{'' if c['latency_ms'] is None else e(str(c['latency_ms'])) + ' ms'}</td>"
            f"<td>{e(c['error'])}</td><td>{e(c['since'])}</td></tr>"
            for c in document["checks"]
        )
        or '<tr><td colspan="7">no dependency checks</td></tr>'
    )
    history = (
        "".join(
            f"<li><time>{e(t['time'])}</time> <b>{e(t['kind'])} {e(t['name'] or chr(34) * 2)}</b>"
            f' {e(t["old"])} → {e(t["new"])}<span class="reason">{e(t["reason"])}</span></li>'
            for t in document["history"]
        )
        or "<li>no changes yet</li>"
    )
    word = document["status"]
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>PetSage {e(document["instance"])}: {e(word.upper())}</title>
<link rel="stylesheet" href="/status.css">
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<script src="/status.js" defer></script>
</head>
<body>
<header>
<h1>PetSage <span id="instance">{e(document["instance"])}</span></h1>
<p>version <span id="version">{e(document["version"])}</span> · up
<span id="uptime">{e(_uptime(document["uptime_seconds"]))}</span> · since
<span id="started">{e(document["started"])}</span></p>
<p id="overall" class="overall {_css(word)}"><b id="status">{e(word.upper())}</b>
<span id="message">{e(document["message"])}</span></p>
</header>
<main>
<section><h2>Services</h2>
<table><thead><tr><th>service</th><th>status</th></tr></thead>
<tbody id="services">{services}</tbody></table></section>
<section><h2>Dependency checks</h2>
<div class="scroll"><table><thead><tr><th>check</th><th>kind</th><th></th><th>result</th>
<th>latency</th><th>last error</th><th>since</th></tr></thead>
<tbody id="checks">{checks}</tbody></table></div></section>
<section><h2>Changes</h2><ul id="history">{history}</ul></section>
</main>
<footer><p id="refresh">updated when loaded</p></footer>
</body>
</html>
""".encode()


def _css(status: str) -> str:
    return {"SERVING": "serving", "ok": "serving", "degraded": "degraded"}.get(
        status, "not-serving"
    )


ICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    b'<circle cx="8" cy="8" r="7" fill="#2d6a4f"/></svg>'
)

STYLE = b"""
:root { font-family: system-ui, sans-serif; color: #1b1b1b; background: #fafafa; }
body { margin: 0 auto; max-width: 60rem; padding: 0.5rem 1rem; }
h1 { font-size: 1.4rem; margin: 0.5rem 0; }
h2 { font-size: 1.1rem; margin: 1.2rem 0 0.4rem; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
th, td { text-align: left; padding: 0.25rem 0.5rem; border-bottom: 1px solid #ddd; }
.scroll { overflow-x: auto; }
.state, .overall b { font-weight: 700; padding: 0 0.3rem; border-radius: 0.2rem; }
.serving { background: #d8f3dc; color: #0b5d1e; }
.not-serving { background: #ffd6d6; color: #8a0000; }
.degraded { background: #fff1c2; color: #6b4e00; }
.overall { padding: 0.5rem; border-radius: 0.3rem; }
ul { list-style: none; padding-left: 0; font-size: 0.9rem; }
li { margin: 0.2rem 0; }
.reason { display: block; color: #555; }
time { color: #555; font-variant-numeric: tabular-nums; }
footer { color: #777; font-size: 0.8rem; margin-top: 1rem; }
"""

SCRIPT = b"""
"use strict";
(function () {
  const PERIOD = 1000;  // at most one request a second, and none while the tab is hidden
  let timer = null;

  function cell(row, text, className) {
    const td = document.createElement("td");
    if (className) {
      const span = document.createElement("span");
      span.className = "state " + className;
      span.textContent = text;
      td.appendChild(span);
    } else {
      td.textContent = text;
    }
    row.appendChild(td);
  }

  function css(status) {
    return {SERVING: "serving", ok: "serving", degraded: "degraded"}[status] || "not-serving";
  }

  function uptime(seconds) {
    let s = Math.floor(seconds), out = [];
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
    const m = Math.floor(s % 3600 / 60);
    if (d) out.push(d + "d");
    if (d || h) out.push(h + "h");
    if (d || h || m) out.push(m + "m");
    out.push(s % 60 + "s");
    return out.join(" ");
  }

  function show(doc) {
    document.getElementById("instance").textContent = doc.instance;
    document.getElementById("version").textContent = doc.version;
    document.getElementById("uptime").textContent = uptime(doc.uptime_seconds);
    document.getElementById("started").textContent = doc.started;
    document.getElementById("status").textContent = doc.status.toUpperCase();
    document.getElementById("message").textContent = doc.message;
    document.getElementById("overall").className = "overall " + css(doc.status);
    document.title = "PetSage " + doc.instance + ": " + doc.status.toUpperCase();
    const services = document.getElementById("services");
    services.replaceChildren(...doc.services.map(function (s) {
      const row = document.createElement("tr");
      cell(row, s.name || '""');
      cell(row, s.status, css(s.status));
      return row;
    }));
    const checks = document.getElementById("checks");
    checks.replaceChildren(...doc.checks.map(function (c) {
      const row = document.createElement("tr");
      cell(row, c.name);
      cell(row, c.kind);
      cell(row, c.required ? "required" : "optional");
      cell(row, c.passing ? "passing" : "FAILING", c.passing ? "serving" : "not-serving");
      cell(row, c.latency_ms === null ? "" : c.latency_ms + " ms");
      cell(row, c.error);
      cell(row, c.since);
      return row;
    }));
    const history = document.getElementById("history");
    history.replaceChildren(...doc.history.map(function (t) {
      const item = document.createElement("li");
      const when = document.createElement("time");
      when.textContent = t.time;
      const what = document.createElement("b");
      what.textContent = t.kind + " " + (t.name || '""');
      const reason = document.createElement("span");
      reason.className = "reason";
      reason.textContent = t.reason;
      item.append(when, " ", what, " " + t.old + " \\u2192 " + t.new, reason);
      return item;
    }));
    document.getElementById("refresh").textContent =
      "updated " + new Date().toLocaleTimeString() + ", every second while this tab is visible";
  }

  async function refresh() {
    timer = null;
    if (document.hidden) return;
    try {
      const answer = await fetch("/api/v1/health", {cache: "no-store"});
      show(await answer.json());
    } catch (error) {
      document.getElementById("refresh").textContent = "the server does not answer";
    }
    schedule();
  }

  function schedule() {
    if (timer === null && !document.hidden) timer = setTimeout(refresh, PERIOD);
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      if (timer !== null) clearTimeout(timer);
      timer = null;
    } else {
      schedule();
    }
  });
  schedule();
})();
"""
