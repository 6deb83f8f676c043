"""Presentation of the capacity search and the scraped server metrics:
CSV text, SVG charts and one-line summaries, as pure functions of the
search result (`capacity.Search.result()`) and the scraped points
(`scrape.Scraper.history`). Kept apart from `render.py`, which owns the
client-side LLM numbers, so each file stays about one thing; the charts
reuse `render.svg_chart`, on the same time axis as the TTFT and tokens/s
charts where the x axis is time.
"""

import csv
import html
import io

from .render import _blank, svg_chart

SERVER_COLUMNS = (("time", "Timestamp"), ("server", "Server"), ("running", "Running"), ("waiting", "Waiting"),
                  ("kv_cache_usage", "KV cache usage"), ("prompt_tokens_total", "Prompt tokens total"),
                  ("generation_tokens_total", "Generation tokens total"), ("prompt_tps", "Prompt tok/s"),
                  ("generation_tps", "Generation tok/s"))

CAPACITY_COLUMNS = (("step", "Step"), ("value", "Value"), ("unit", "Unit"), ("start_unix_s", "Start"),
                    ("window_s", "Window s"), ("requests", "Requests"), ("good", "Good"),
                    ("attainment", "Attainment"), ("goodput_rps", "Goodput req/s"), ("request_rps", "Requests/s"),
                    ("held", "Held"))


def server_csv_text(points):
    """One row per scrape."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow([title for _, title in SERVER_COLUMNS])
    for p in points:
        w.writerow([_blank(p.get(k)) for k, _ in SERVER_COLUMNS])
    return out.getvalue()


def capacity_csv_text(result):
    """One row per judged step, then the verdict as a last row."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow([title for _, title in CAPACITY_COLUMNS])
    for s in (result or {}).get("curve", []):
        w.writerow([result["unit"] if k == "unit" else _blank(s.get(k)) for k, _ in CAPACITY_COLUMNS])
    if result:
        held = result.get("held")
        w.writerow(["result", "" if held is None else held["value"], result["unit"], "", "", "", "", "",
                    "" if held is None else held["goodput_rps"], "", result.get("reason") or ""])
    return out.getvalue()


def time_range(*series_lists):
    """(t0, t1) over every (t, v) with a value in the given series lists."""
    ts = [t for series in series_lists for _, data, _ in series for t, v in data if v is not None]
    return (min(ts), max(ts)) if ts else None


def server_series(points):
    """The three server charts' series: requests, KV cache %, tokens/s."""
    pts = list(points)
    col = lambda k, scale=1.0: [(p["time"], None if p.get(k) is None else p[k] * scale) for p in pts]  # noqa: E731
    return (
        [("running", col("running"), False), ("waiting", col("waiting"), True)],
        [("KV cache usage", col("kv_cache_usage", 100.0), False)],
        [("prompt tok/s", col("prompt_tps"), False), ("generation tok/s", col("generation_tps"), False)],
    )


def server_svgs(points, x_range=None, summary=None):
    """The server-side charts, on `x_range` (the client charts' time axis)."""
    if not points and not summary:
        return []
    reqs, kv, tps = server_series(points)
    where = ""
    if summary:
        where = f" ({summary.get('server') or '?'} at {summary['url']})"
    return [svg_chart(f"Server: running (solid) / waiting (dashed) requests{where}", reqs, "reqs",
                      x_range=x_range),
            svg_chart("Server: KV cache usage", kv, "%", x_range=x_range),
            svg_chart("Server: prompt / generation tokens/s (from its counters)", tps, "tok/s", x_range=x_range)]


def capacity_svgs(result):
    """Attainment and goodput against the step value (x = users or req/s)."""
    if not result or not result.get("curve"):
        return []
    curve = result["curve"]
    unit = result["unit"]
    fmt = lambda v: f"{v:g} {unit}"  # noqa: E731
    target = result["attainment_target"] * 100
    att = [("attainment %", [(s["value"], None if s["attainment"] is None else s["attainment"] * 100) for s in curve],
            False), (f"target {target:g} %", [(s["value"], target) for s in curve], True)]
    good = [("goodput req/s", [(s["value"], s["goodput_rps"]) for s in curve], False),
            ("requests/s", [(s["value"], s["request_rps"]) for s in curve], True)]
    return [svg_chart(f"Capacity search: SLO attainment per step ({unit})", att, "%", xfmt=fmt),
            svg_chart(f"Capacity search: goodput per step ({unit})", good, "req/s", xfmt=fmt)]


def capacity_html(result):
    """The verdict and the curve as a table."""
    if not result:
        return ""
    held = result.get("held")
    head = (f"<p><b>Highest step that held: {held['value']:g} {html.escape(result['unit'])}</b>, goodput "
            f"{held['goodput_rps']:g} req/s, attainment {held['attainment']:.1%}" if held else
            "<p><b>No step held</b>")
    out = [f"{head} (target {result['attainment_target']:.0%} within the SLOs; "
           f"{html.escape(result.get('reason') or 'search running')})</p>",
           "<table><tr><th>Step</th><th>Value</th><th>Requests</th><th>Good</th><th>Attainment</th>"
           "<th>Goodput req/s</th><th>Held</th></tr>"]
    for s in result["curve"]:
        att = "" if s["attainment"] is None else f"{s['attainment']:.1%}"
        out.append(f"<tr><td>{s['step']}</td><td>{s['value']:g}</td><td>{s['requests']}</td><td>{s['good']}</td>"
                   f"<td>{att}</td><td>{s['goodput_rps']:g}</td><td>{'yes' if s['held'] else 'no'}</td></tr>")
    out.append("</table>")
    return "".join(out)


def page_extras(history, points, summary=None, capacity=None):
    """(x_range, html) for the charts page and the HTML report: one time
    axis over the client history and the scraped points, the server charts
    and the capacity search (charts and table)."""
    times = [p["time"] for p in history] + [p["time"] for p in points]
    x_range = (min(times), max(times)) if times else None
    svgs = server_svgs(points, x_range, summary) + capacity_svgs(capacity)
    out = "".join(f"<div>{svg}</div>" for svg in svgs)
    if summary and summary.get("failures"):
        out += (f'<p class="warn">Server metrics: {summary["failures"]} failed scrapes, last: '
                f'{html.escape(str(summary["last_error"]))}</p>')
    if capacity:
        out += "<h3>Capacity search</h3>" + capacity_html(capacity)
    return x_range, out


def tab_rows(doc, first_index):
    """Rows for the LLM tab (after `render.table_rows`' rows, numbered on
    from `first_index` so the tab's sort by name keeps them last)."""
    texts = []
    cap = doc.get("capacity")
    if cap:
        held = cap.get("held")
        verdict = (f"{held['value']:g} {cap['unit']} held, goodput {held['goodput_rps']:g} req/s" if held
                   else "no step held yet")
        texts.append(("Capacity", f"{verdict}; {cap.get('reason') or 'search running'} "
                                  f"({len(cap['curve'])} of {len(cap['values'])} steps judged)"))
    sm = doc.get("server_metrics")
    if sm:
        texts.append(("Server metrics", f"{sm['points']} scrapes of {sm['url']} ({sm.get('server') or '?'})"
                                        + (f", {sm['failures']} failed: {sm['last_error']}" if sm["failures"] else "")))
    return [{"name": f"{first_index + i:03d} Total {metric}", "scenario": "Total", "metric": metric, "count": "",
             "p50": "", "p90": "", "p99": "", "max": "", "avg": "", "value": value}
            for i, (metric, value) in enumerate(texts)]
