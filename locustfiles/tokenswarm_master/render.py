"""Presentation of merged LLM metrics: summaries (JSON), table rows for the
web UI tab, CSV, a console table, SVG charts and a standalone HTML report.

Everything here is a pure function of an `Aggregator` (plus SLOs, warnings
and the abort reason), so the web routes, the end-of-run files and the
tests all show the same numbers. Times are shown in ms; the aggregate keeps
µs. Nothing references external assets: the pages must work offline.
"""

import csv
import datetime
import html
import io
import time

from .aggregate import METRICS

SHOWN = ("ttft", "ttfa", "tpot", "itl", "e2e")
PCTS = (("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99))
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _ms(us):
    return None if us is None else round(us / 1000.0, 3)


def dist_summary(d):
    out = {"count": d.count, "avg_ms": _ms(d.avg()), "min_ms": _ms(d.min)}
    for key, p in PCTS:
        out[f"{key}_ms"] = _ms(d.percentile(p))
    out["max_ms"] = _ms(d.max)
    return out


def cache_ratios(c):
    """(cached / input, cached / what a perfect prefix cache would serve),
    as percentages; None where the denominator is 0."""
    hit = round(100.0 * c["cached_tokens"] / c["input_tokens"], 2) if c.get("input_tokens") else None
    ideal = c.get("ideal_cached_tokens") or 0
    vs_ideal = round(100.0 * c["cached_tokens"] / ideal, 2) if ideal else None
    return hit, vs_ideal


def prefix_cache_text(s):
    hit, vs_ideal = s["cache_hit_pct"], s["cache_vs_ideal_pct"]
    return (f"{_fmt(hit)} % of input tokens cached; {_fmt(vs_ideal)} % of what a perfect prefix cache would serve "
            f"({s['cached_tokens']:,} of {s['ideal_cached_tokens']:,})")


def scenario_summary(agg, now, span_s=None):
    c = agg.counts
    return {
        **c,
        "failure_kinds": dict(sorted(agg.failure_kinds.items())),
        "target_prompt_tokens": agg.targets[0],
        "target_output_tokens": agg.targets[1],
        "metrics": {m: dist_summary(agg.metrics[m]) for m in METRICS if m in agg.metrics},
        "out_tps_current": round(agg.current_rate("out_tokens_per_sec", now), 3),
        "out_tps_total": round(agg.total_rate("out_tokens_per_sec", span_s), 3),
        "good_rps_current": round(agg.current_rate("good_per_sec", now), 3),
        "goodput_rps": round(agg.total_rate("good_per_sec", span_s), 3),
        "goodput_pct": round(100.0 * c["good"] / c["requests"], 2) if c["requests"] else None,
        "cache_hit_pct": cache_ratios(c)[0],
        "cache_vs_ideal_pct": cache_ratios(c)[1],
        "span_s": round(span_s, 3) if span_s is not None else agg.span_s(),
    }


def document(state, now=None):
    """The /llm/json document: everything the tab, CSV and report show."""
    now = time.time() if now is None else now
    agg = state.aggregator
    span = agg.run_span_s(now) if hasattr(agg, "run_span_s") else None
    return {
        "v": 1,
        "generated_at": now,
        "slo": dict(state.slo),
        "scenarios": {name: scenario_summary(a, now, span) for name, a in sorted(agg.scenarios.items())},
        "total": scenario_summary(agg.total, now, span),
        "warnings": list(state.warnings),
        "abort": state.abort,
        "saturated": [{"worker": w, "reason": r} for w, r in sorted(getattr(state, "saturated", {}).items())],
        "config_error": state.config_error,
        "reports_merged": agg.reports,
    }


def slo_text(slo):
    parts = [f"{k[:-3].upper()} ≤ {v:g} ms" for k, v in sorted(slo.items()) if v is not None]
    return ", ".join(parts) if parts else "no SLO set: every success counts"


def _fmt(x, digits=1):
    return "" if x is None else f"{x:,.{digits}f}"


# --------------------------------------------------------------- web UI tab

TABLE_STRUCTURE = [
    {"key": "scenario", "title": "Scenario"},
    {"key": "metric", "title": "Metric"},
    {"key": "count", "title": "Count"},
    {"key": "p50", "title": "p50 ms"},
    {"key": "p90", "title": "p90 ms"},
    {"key": "p99", "title": "p99 ms"},
    {"key": "max", "title": "max ms"},
    {"key": "avg", "title": "avg ms"},
    {"key": "value", "title": "Value"},
]


def table_rows(doc):
    """Rows of the LLM tab: latency rows carry percentiles; the other rows
    carry a text `value`. Each row has a unique `name` (React's row key)."""
    rows = []

    def row(scenario, metric, value="", **cols):
        # the table sorts by `name` by default: a sequence number keeps our order
        rows.append({"name": f"{len(rows):03d} {scenario} {metric}", "scenario": scenario, "metric": metric,
                     "count": "", "p50": "", "p90": "", "p99": "", "max": "", "avg": "", "value": value, **cols})

    if doc.get("abort"):
        row("Total", "ABORTED", f"run aborted by {doc['abort'].get('worker', '?')}: {doc['abort']['reason']}")
    if doc.get("config_error"):
        row("Total", "NOT STARTED", doc["config_error"])
    for sat in doc.get("saturated", []):
        row("Total", "SATURATED", f"worker {sat['worker']} could not keep up, its timings are not valid: "
            f"{sat['reason']}")
    sections = list(doc["scenarios"].items()) + [("Total", doc["total"])]
    for name, s in sections:
        for m in SHOWN:
            d = s["metrics"].get(m)
            if not d or not d["count"]:
                continue
            row(name, m.upper(), count=d["count"], p50=_fmt(d["p50_ms"], 2), p90=_fmt(d["p90_ms"], 2),
                p99=_fmt(d["p99_ms"], 2), max=_fmt(d["max_ms"], 2), avg=_fmt(d["avg_ms"], 2))
        row(name, "Requests", f"{s['requests']} ({s['failures']} failed)"
            + (": " + ", ".join(f"{k} {v}" for k, v in s["failure_kinds"].items()) if s["failure_kinds"] else "")
            + (f"; {s['unsent']} due but never sent (in-flight cap full at stop)" if s.get("unsent") else ""))
        row(name, "Output tok/s", f"current {_fmt(s['out_tps_current'])} / total {_fmt(s['out_tps_total'])}")
        row(name, "Tokens in / out / cached",
            f"{s['input_tokens']:,} / {s['output_tokens']:,} / {s['cached_tokens']:,}")
        if s.get("ideal_cached_tokens"):
            row(name, "Prefix cache", prefix_cache_text(s))
        pct = "" if s["goodput_pct"] is None else f", {s['goodput_pct']:.1f} % of requests"
        row(name, "Goodput", f"{_fmt(s['goodput_rps'], 2)} good req/s{pct} ({slo_text(doc['slo'])})")
        if s["prompt_divergent"] or s["output_divergent"]:
            row(name, "Token divergence",
                f"WARNING: {s['prompt_divergent']} prompt / {s['output_divergent']} output counts >10 % off target")
    for i, w in enumerate(doc.get("warnings", [])):
        rows.append({**rows[-1], "name": f"{len(rows):03d} warning {i}", "scenario": w.get("scenario") or "", "metric": "Warning",
                     "count": "", "p50": "", "p90": "", "p99": "", "max": "", "avg": "", "value": w["message"]})
    row("Total", "Charts", "open ./llm/charts (also linked under Download data)")
    return rows


# ---------------------------------------------------------------------- CSV

CSV_COUNTERS = ("requests", "failures", "good", "input_tokens", "output_tokens", "cached_tokens",
                "ideal_cached_tokens", "reasoning_tokens", "estimated_output", "prompt_divergent", "output_divergent", "unsent")


def csv_text(doc):
    """One row per scenario plus "Aggregated", Locust-style."""
    out = io.StringIO()
    w = csv.writer(out)
    header = ["Scenario", *CSV_COUNTERS, "goodput_rps", "goodput_pct", "out_tps_current", "out_tps_total",
              "cache_hit_pct", "cache_vs_ideal_pct"]
    for m in SHOWN + ("queue", "lag"):
        header += [f"{m}_{k}" for k in ("count", "avg_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")]
    header += ["failure_kinds", "saturated_workers"]
    saturated = ";".join(f"{x['worker']}: {x['reason']}" for x in doc.get("saturated", []))
    w.writerow(header)
    for name, s in list(doc["scenarios"].items()) + [("Aggregated", doc["total"])]:
        line = [name, *(s[k] for k in CSV_COUNTERS), s["goodput_rps"], _blank(s["goodput_pct"]),
                s["out_tps_current"], s["out_tps_total"], _blank(s["cache_hit_pct"]),
                _blank(s["cache_vs_ideal_pct"])]
        for m in SHOWN + ("queue", "lag"):
            d = s["metrics"].get(m, {})
            line += [_blank(d.get(k)) for k in ("count", "avg_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms",
                                                 "p99_ms", "max_ms")]
        line += [";".join(f"{k}={v}" for k, v in s["failure_kinds"].items()), saturated]
        w.writerow(line)
    return out.getvalue()


def _blank(x):
    return "" if x is None else x


def history_csv_text(history):
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["Timestamp", "User Count", "Scenario", "TTFT p50 ms", "TTFT p95 ms", "Output tok/s"])
    for p in history:
        for name, s in p["scenarios"].items():
            w.writerow([p["time"], p["user_count"], name, _blank(s["ttft_p50_ms"]), _blank(s["ttft_p95_ms"]),
                        s["out_tps"]])
    return out.getvalue()


# ------------------------------------------------------------------ console


def console_lines(doc):
    """End-of-run summary in the style of Locust's console tables."""
    lines = [f"{'LLM metrics (ms)':<28} {'Metric':<6} {'# samples':>10} {'p50':>10} {'p90':>10} {'p99':>10}"
             f" {'max':>10} {'avg':>10}", "-" * 99]
    sections = list(doc["scenarios"].items()) + [("Aggregated", doc["total"])]
    for name, s in sections:
        if name == "Aggregated":
            lines.append("-" * 99)
        for m in SHOWN:
            d = s["metrics"].get(m)
            if d and d["count"]:
                lines.append(f"{name[:28]:<28} {m.upper():<6} {d['count']:>10} {_fmt(d['p50_ms'], 2):>10}"
                             f" {_fmt(d['p90_ms'], 2):>10} {_fmt(d['p99_ms'], 2):>10} {_fmt(d['max_ms'], 2):>10}"
                             f" {_fmt(d['avg_ms'], 2):>10}")
    lines += ["", f"{'LLM tokens':<28} {'# reqs':>8} {'# fails':>8} {'good %':>8} {'good/s':>8} {'in tok':>12}"
              f" {'out tok':>12} {'cached':>12} {'out tok/s':>10}", "-" * 114]
    for name, s in sections:
        if name == "Aggregated":
            lines.append("-" * 114)
        lines.append(f"{name[:28]:<28} {s['requests']:>8} {s['failures']:>8} {_fmt(s['goodput_pct']):>8}"
                     f" {_fmt(s['goodput_rps'], 2):>8} {s['input_tokens']:>12} {s['output_tokens']:>12}"
                     f" {s['cached_tokens']:>12} {_fmt(s['out_tps_total']):>10}")
    lines.append(f"Goodput SLOs: {slo_text(doc['slo'])}")
    for w in doc.get("warnings", []):
        lines.append(f"WARNING [{w.get('scenario')}]: {w['message']}")
    if doc.get("abort"):
        lines.append(f"ABORTED: {doc['abort']['reason']}")
    for sat in doc.get("saturated", []):
        lines.append(f"SATURATED: worker {sat['worker']}, timings not valid: {sat['reason']}")
    return lines


# ------------------------------------------------------------------- charts


def _clock(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%H:%M:%S")


def svg_chart(title, series, unit, width=900, height=240, x_range=None, xfmt=None):
    """A line chart as inline SVG; `series` is [(label, [(t, value|None)], dashed)].
    x is Unix time (labelled HH:MM:SS) unless `xfmt` formats it otherwise;
    `x_range` (t0, t1) puts charts of one page on one time axis."""
    pts = [(t, v) for _, data, _ in series for t, v in data if v is not None]
    xfmt = xfmt or _clock
    left, right, top, bottom = 70, 170, 28, 30
    w, h = width - left - right, height - top - bottom
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(title)}"><rect width="100%" height="100%" fill="#fff"/>',
             f'<text x="{left}" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>',
             f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" stroke="#888"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + h}" stroke="#888"/>']
    if not pts:
        parts.append(f'<text x="{left + 10}" y="{top + h / 2}" fill="#888">no data yet</text></svg>')
        return "".join(parts)
    t0, t1 = x_range or (min(t for t, _ in pts), max(t for t, _ in pts))
    vmax = max(v for _, v in pts) * 1.1 or 1.0
    x = lambda t: left + (w * (t - t0) / (t1 - t0) if t1 > t0 else w / 2)  # noqa: E731
    y = lambda v: top + h - h * v / vmax  # noqa: E731
    for frac in (0.5, 1.0):
        parts.append(f'<line x1="{left}" y1="{y(vmax * frac):.1f}" x2="{left + w}" y2="{y(vmax * frac):.1f}" '
                     f'stroke="#eee"/><text x="{left - 6}" y="{y(vmax * frac) + 4:.1f}" font-size="11" '
                     f'text-anchor="end">{vmax * frac:,.1f}</text>')
    parts.append(f'<text x="{left - 6}" y="{top + h + 4}" font-size="11" text-anchor="end">0 {html.escape(unit)}</text>')
    for t, anchor in ((t0, "start"), (t1, "end")):
        label = html.escape(xfmt(t))
        parts.append(f'<text x="{x(t):.1f}" y="{top + h + 18}" font-size="11" text-anchor="{anchor}">{label}</text>')
    for i, (label, data, dashed) in enumerate(series):
        # p50/p95 pairs share a colour; otherwise one colour per series
        paired = any(d for *_, d in series)
        color = COLORS[(i // 2 if paired else i) % len(COLORS)]
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in data if v is not None)
        dash = ' stroke-dasharray="5,4"' if dashed else ""
        if coords:
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{coords}"/>')
        last = next((v for _, v in reversed(data) if v is not None), None)
        ly = top + 14 + 16 * i
        parts.append(f'<line x1="{left + w + 10}" y1="{ly - 4}" x2="{left + w + 28}" y2="{ly - 4}" stroke="{color}" '
                     f'stroke-width="2"{dash}/>'
                     f'<text x="{left + w + 32}" y="{ly}" font-size="11">{html.escape(label)}'
                     f'{"" if last is None else f" {last:,.1f}"}</text>')
    parts.append("</svg>")
    return "".join(parts)


def charts_svgs(history, x_range=None):
    history = list(history)
    names = []
    for p in history:
        for n in p["scenarios"]:
            if n not in names and n != "Total":
                names.append(n)
    ttft, tps = [], []
    for n in names:
        ttft.append((f"{n} p50", [(p["time"], p["scenarios"].get(n, {}).get("ttft_p50_ms")) for p in history], False))
        ttft.append((f"{n} p95", [(p["time"], p["scenarios"].get(n, {}).get("ttft_p95_ms")) for p in history], True))
    for n in names + ["Total"]:
        tps.append((n, [(p["time"], p["scenarios"].get(n, {}).get("out_tps")) for p in history], False))
    users = [("users", [(p["time"], p["user_count"]) for p in history], False)]
    return [svg_chart("TTFT p50 (solid) / p95 (dashed) per scenario, last 10 s", ttft, "ms", x_range=x_range),
            svg_chart("Output tokens/s (10 s window)", tps, "tok/s", x_range=x_range),
            svg_chart("Users", users, "users", height=180, x_range=x_range)]


PAGE_STYLE = """body{font-family:system-ui,sans-serif;margin:20px;color:#222}
table{border-collapse:collapse;margin:8px 0 18px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}.warn{color:#a60}.abort{color:#c00;font-weight:bold}"""


def summary_tables_html(doc):
    """The merged numbers as HTML tables (charts page and HTML report)."""
    out = []
    if doc.get("abort"):
        out.append(f'<p class="abort">Run aborted: {html.escape(doc["abort"]["reason"])}</p>')
    if doc.get("config_error"):
        out.append(f'<p class="abort">Not started: {html.escape(doc["config_error"])}</p>')
    for sat in doc.get("saturated", []):
        out.append(f'<p class="abort">Saturated: worker {html.escape(sat["worker"])} could not keep up, its '
                   f'timings are not valid: {html.escape(sat["reason"])}</p>')
    out.append("<table><tr><th>Scenario</th><th>Metric</th><th>Count</th><th>p50 ms</th><th>p90 ms</th>"
               "<th>p95 ms</th><th>p99 ms</th><th>max ms</th><th>avg ms</th></tr>")
    sections = list(doc["scenarios"].items()) + [("Total", doc["total"])]
    for name, s in sections:
        for m in SHOWN:
            d = s["metrics"].get(m)
            if d and d["count"]:
                cells = "".join(f"<td>{_fmt(d[k], 2)}</td>" for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms",
                                                                       "max_ms", "avg_ms"))
                out.append(f"<tr><td>{html.escape(name)}</td><td>{m.upper()}</td><td>{d['count']}</td>{cells}</tr>")
    out.append("</table><table><tr><th>Scenario</th><th>Requests</th><th>Failures</th><th>Good %</th>"
               "<th>Good req/s</th><th>Input tokens</th><th>Output tokens</th><th>Cached tokens</th>"
               "<th>Output tok/s (current)</th><th>Output tok/s (total)</th><th>Divergent prompt/output</th></tr>")
    for name, s in sections:
        out.append(f"<tr><td>{html.escape(name)}</td><td>{s['requests']}</td><td>{s['failures']}</td>"
                   f"<td>{_fmt(s['goodput_pct'])}</td><td>{_fmt(s['goodput_rps'], 2)}</td>"
                   f"<td>{s['input_tokens']}</td><td>{s['output_tokens']}</td><td>{s['cached_tokens']}</td>"
                   f"<td>{_fmt(s['out_tps_current'])}</td><td>{_fmt(s['out_tps_total'])}</td>"
                   f"<td>{s['prompt_divergent']} / {s['output_divergent']}</td></tr>")
    out.append(f"</table><p>Goodput SLOs: {html.escape(slo_text(doc['slo']))}</p>")
    for w in doc.get("warnings", []):
        out.append(f'<p class="warn">Warning [{html.escape(str(w.get("scenario")))}]: '
                   f'{html.escape(w["message"])}</p>')
    return "".join(out)


def charts_page(doc, history, refresh_s=5, x_range=None, extra=""):
    """`extra`: more charts (HTML) after the client ones, on `x_range`."""
    charts = "".join(f"<div>{svg}</div>" for svg in charts_svgs(history, x_range)) + extra
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    return (f"<!doctype html><html><head><meta charset=\"utf-8\">{refresh}<title>tokenswarm LLM charts</title>"
            f"<style>{PAGE_STYLE}</style></head><body><h2>tokenswarm LLM charts</h2>"
            f'<p><a href="../?tab=llm">back to the LLM tab</a> · <a href="./json">JSON</a> · '
            f'<a href="./csv">CSV</a></p>{charts}<h3>Merged so far</h3>{summary_tables_html(doc)}</body></html>')


def html_report(doc, history, title="tokenswarm LLM report", x_range=None, extra=""):
    """A self-contained report (no scripts, no external assets)."""
    when = datetime.datetime.fromtimestamp(doc["generated_at"], datetime.timezone.utc).isoformat(timespec="seconds")
    charts = "".join(f"<div>{svg}</div>" for svg in charts_svgs(history, x_range)) + extra
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{PAGE_STYLE}</style></head><body><h2>{html.escape(title)}</h2><p>Generated {when}</p>"
            f"{summary_tables_html(doc)}<h3>Over time</h3>{charts}</body></html>")
