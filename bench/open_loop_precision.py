#!/usr/bin/env python3
"""Open-loop precision of tokenswarm at a high rate.

Two tokenswarm workers share one open-loop phase of RATE req/s (default
1,667, constant inter-arrival times) for DURATION s (default 20) against
``tokenswarm sim --no-latency --log-requests FILE``. The master runs
``-u 2 -r 2`` so that each worker holds one user, i.e. half of the rate
(``cluster_users`` = 2 goes to the workers inside tokenswarm_config, set from
``environment.runner.target_user_count`` at test_start; see
bench/locustfile_tokenswarm.py).

From the simulator's request log (``arrival_unix_s`` of every request):
- achieved rate over the steady part (first and last --skip seconds of the
  arrivals left out) and its error against RATE;
- requests per one-second bin (min, max, std);
- send jitter: the std of the inter-arrival gaps (all workers merged: the
  log does not say which worker sent a request) against 1/RATE, and how far
  the arrival times stray from a straight line fitted to them (arrival time
  against index), which shows bursts and stalls whatever the interleaving;
- the p50/p99/max of tokenswarm's own ``lag`` metric (dispatch time minus
  scheduled time), summed from the workers' reports by the master.

Usage: bench/open_loop_precision.py [--rate 1667] [--duration 20] [--workers 2]
Results: <out>/open_loop_precision-<UTC stamp>.json and Markdown on stdout.
"""

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402


def line_residuals(times):
    """Std and p99 |residual| (seconds) of the arrival times around the
    least-squares line t = a + b * index: how far sends stray from an even
    schedule, whatever the interleaving of the workers."""
    n = len(times)
    xm = (n - 1) / 2
    tm = statistics.fmean(times)
    sxx = sum((i - xm) ** 2 for i in range(n))
    b = sum((i - xm) * (t - tm) for i, t in enumerate(times)) / sxx
    res = sorted(abs(t - (tm + b * (i - xm))) for i, t in enumerate(times))
    std = math.sqrt(sum(r * r for r in res) / n)
    return {"fitted_rate": 1 / b, "std_us": std * 1e6, "p99_abs_us": res[int(0.99 * (n - 1))] * 1e6, "max_abs_us": res[-1] * 1e6}


def gap_stats(times, ideal):
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    if len(gaps) < 2:
        return None
    dev = [g - ideal for g in gaps]
    rms = math.sqrt(sum(d * d for d in dev) / len(dev))
    absdev = sorted(abs(d) for d in dev)
    return {
        "n_gaps": len(gaps),
        "ideal_us": ideal * 1e6,
        "mean_us": statistics.fmean(gaps) * 1e6,
        "std_us": statistics.pstdev(gaps) * 1e6,
        "rms_vs_ideal_us": rms * 1e6,
        "p99_abs_dev_us": absdev[int(0.99 * (len(absdev) - 1))] * 1e6,
        "max_abs_dev_us": absdev[-1] * 1e6,
    }


def analyse(log_path, rate, duration, skip, workers):
    arrivals = []
    sim_ttft_us = []
    statuses = {}
    with open(log_path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            arrivals.append(rec["arrival_unix_s"])
            if rec.get("ttft_us") is not None:
                sim_ttft_us.append(rec["ttft_us"])
            statuses[str(rec.get("status"))] = statuses.get(str(rec.get("status")), 0) + 1
    arrivals.sort()
    if len(arrivals) < 10:
        return {"arrivals": len(arrivals), "statuses": statuses}
    t0, tn = arrivals[0], arrivals[-1]
    a, b = t0 + skip, t0 + duration - skip
    steady = [t for t in arrivals if a <= t < b]
    achieved = len(steady) / (b - a)
    bins = {}
    for t in arrivals:
        k = int(t - t0)
        if k < int(duration):
            bins[k] = bins.get(k, 0) + 1
    full_bins = [bins.get(k, 0) for k in range(int(skip), int(duration - skip))]
    sim_ttft_us.sort()
    return {
        "arrivals": len(arrivals),
        "sim_ttft_us": {
            "count": len(sim_ttft_us),
            "p50": sim_ttft_us[int(0.5 * (len(sim_ttft_us) - 1))] if sim_ttft_us else None,
            "p99": sim_ttft_us[int(0.99 * (len(sim_ttft_us) - 1))] if sim_ttft_us else None,
        },
        "expected_arrivals": rate * duration,
        "statuses": statuses,
        "first_arrival_unix_s": t0,
        "span_s": tn - t0,
        "overall_rate": (len(arrivals) - 1) / (tn - t0) if tn > t0 else None,
        "steady_window_s": [skip, duration - skip],
        "steady_arrivals": len(steady),
        "achieved_rate": achieved,
        "rate_error_pct": 100 * (achieved - rate) / rate,
        "per_second": {
            "min": min(full_bins),
            "max": max(full_bins),
            "std": statistics.pstdev(full_bins),
            "counts": full_bins,
        },
        "merged_gaps": gap_stats(steady, 1 / rate),
        "schedule_residuals": line_residuals(steady),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1667)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--arrival", default="constant", choices=["constant", "poisson", "gamma"])
    ap.add_argument("--skip", type=float, default=1.0, help="seconds left out at each end")
    ap.add_argument("--sim-args", default="--no-latency",
                    help='simulator latency flags, e.g. "--ttft-ms 40 --tpot-ms 0 --prefill-us-per-token 0" (issue 12.4: TTFT 40 ms, answer in one write)')
    ap.add_argument("--sim-cpu", default=None, help="pin the simulator (default: unpinned)")
    ap.add_argument("--worker-cpu", default=None, help="pin the workers (default: unpinned)")
    ap.add_argument("--plugin-master", action="store_true",
                    help="run the master on locustfiles/llm.py (the tokenswarm plugin: final flush, `saturated` warnings, exit code 4) instead of bench/locustfile_tokenswarm.py")
    ap.add_argument("--out", default=os.path.join(c.BENCH, "results"))
    ap.add_argument("--keep-logs", help="directory for the process logs (default: a temporary one)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    workdir = a.keep_logs or tempfile.mkdtemp(prefix="tokenswarm-openloop-")
    os.makedirs(workdir, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    log_path = os.path.join(workdir, "requests.jsonl")
    if os.path.exists(log_path):
        os.unlink(log_path)
    load = {
        "mode": "open",
        "phases": [{"rate": a.rate, "duration_s": a.duration}],
        "arrival": a.arrival,
    }
    env = dict(os.environ)
    env["BENCH_LOAD"] = json.dumps(load)
    env["BENCH_LLM_OUT"] = os.path.join(workdir, "llm.json")
    env.setdefault("RUST_LOG", "warn")
    scenarios_yaml = os.path.join(workdir, "scenarios.yaml")
    with open(scenarios_yaml, "w") as f:
        # The scenario of bench/locustfile_tokenswarm.py (defaults), for --plugin-master.
        json.dump(
            {
                "scenarios": [{"name": "Chat", "provider": "openai-chat", "model": "bench", "prompt_length": 32, "prefix_length": 0, "output_length": 64}],
                "load": load,
                "safety": {"warmup": False, "error_limit": 0},
            },
            f,
        )
    sim, sim_url = c.start_sim(workdir, "open", a.sim_args.split() + ["--log-requests", log_path], a.sim_cpu)
    master_port = c.free_port()
    workers = [
        c.Proc(
            "worker%d" % i,
            c.pinned(
                a.worker_cpu,
                [c.TOKENSWARM, "worker", "--master-port", str(master_port), "--requests-out", os.path.join(workdir, "worker%d.requests.jsonl" % i)],
            ),
            os.path.join(workdir, "worker%d.log" % i),
            env=env,
        )
        for i in range(a.workers)
    ]
    master = None
    b0 = c.cpu_busy_s()
    load0 = c.loadavg()
    try:
        run_time = int(math.ceil(a.duration + 3))
        csv_prefix = os.path.join(workdir, "open")
        margv = c.master_argv(master_port, sim_url, a.workers, run_time, csv_prefix, expect_workers=a.workers)
        if a.plugin_master:
            margv[2] = os.path.join(c.ROOT, "locustfiles", "llm.py")
            margv[3:3] = ["--llm-scenarios", scenarios_yaml]
        master = c.Proc(
            "master",
            margv,
            os.path.join(workdir, "master.log"),
            env=env,
        )
        master.wait(run_time + 90)
        for w in workers:
            w.wait(20)
        stats = c.http_json(sim_url + "/sim/stats")
    finally:
        for p in [master] + workers:
            if p is not None:
                p.stop()
        sim.stop()  # the request log is complete once the simulator ends
    b1 = c.cpu_busy_s()
    res = analyse(log_path, a.rate, a.duration, a.skip, a.workers)
    row = c.read_csv_row(csv_prefix)
    lag = {}
    ttft = {}
    try:
        with open(env["BENCH_LLM_OUT"]) as f:
            llm = json.load(f)
        t = llm["scenarios"]["Chat"]["metrics"].get("ttft") or {}
        ttft = {
            "count": t.get("count"),
            "p50_us": c.hist_percentile(t.get("hist") or {}, 0.5),
            "p99_us": c.hist_percentile(t.get("hist") or {}, 0.99),
        }
        m = llm["scenarios"]["Chat"]["metrics"].get("lag") or {}
        h = m.get("hist") or {}
        lag = {
            "count": m.get("count"),
            "p50_us": c.hist_percentile(h, 0.5),
            "p99_us": c.hist_percentile(h, 0.99),
            "max_us": m.get("max"),
            "mean_us": m["sum"] / m["count"] if m.get("count") else None,
        }
    except (OSError, ValueError, KeyError):
        pass
    # Client TTFT of every request, from the workers' --requests-out files.
    client_ttft_ms = []
    worker_failures = 0
    for i in range(a.workers):
        try:
            with open(os.path.join(workdir, "worker%d.requests.jsonl" % i)) as f:
                for line in f:
                    rec = json.loads(line)
                    if rec.get("ttft_ms") is not None:
                        client_ttft_ms.append(rec["ttft_ms"])
                    if rec.get("failure_kind"):
                        worker_failures += 1
        except OSError:
            pass
    client_ttft_ms.sort()
    if client_ttft_ms:
        ttft = {
            "count": len(client_ttft_ms),
            "p50_us": 1000 * client_ttft_ms[int(0.5 * (len(client_ttft_ms) - 1))],
            "p99_us": 1000 * client_ttft_ms[int(0.99 * (len(client_ttft_ms) - 1))],
            "source": "--requests-out",
        }
    with open(os.path.join(workdir, "master.log")) as f:
        master_log = f.read()
    saturated_lines = [ln for ln in master_log.splitlines() if "saturated" in ln]
    result = {
        "benchmark": "open_loop_precision",
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": c.machine(),
        "tokenswarm": c.tokenswarm_version(),
        "git_head": c.git_head(),
        "settings": vars(a),
        "load": load,
        "master_requests": int(row["Request Count"]) if row else None,
        "master_failures": int(row["Failure Count"]) if row else None,
        "sim_stats": stats,
        "analysis": res,
        "lag": lag,
        "client_ttft": ttft,
        "master_exit": master.returncode if master else None,
        "master_saturated_lines": saturated_lines,
        "worker_failures": worker_failures,
        "machine_busy_cpu_s": {k: round(b1[k] - b0[k], 2) for k in b1},
        "loadavg_1m_at_start": load0,
        "worker_cpu_s": [w.rusage_cpu for w in workers],
        "sim_cpu_s": sim.rusage_cpu,
        "master_cpu_s": master.rusage_cpu if master else None,
        "other_processes_cpu_s": round(
            (b1["all"] - b0["all"]) - sum(w.rusage_cpu or 0 for w in workers) - (sim.rusage_cpu or 0) - ((master.rusage_cpu or 0) if master else 0), 2
        ),
        "logs": workdir,
    }
    path = os.path.join(a.out, "open_loop_precision-%s.json" % started.strftime("%Y%m%dT%H%M%SZ"))
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    r = res
    print("## open_loop_precision, %s, %s\n" % (started.strftime("%Y-%m-%d %H:%M UTC"), result["tokenswarm"]))
    print("| target req/s | workers | arrival | arrivals (sim log / expected) | master requests / sim requests | achieved req/s (steady %g–%g s) | rate error | per-second min / max / std |" % tuple(r.get("steady_window_s", [0, 0])))
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    if "achieved_rate" in r:
        print(
            "| %g | %d | %s | %d / %d | %s / %s | %.1f | %+.3f %% | %d / %d / %.1f |"
            % (
                a.rate,
                a.workers,
                a.arrival,
                r["arrivals"],
                r["expected_arrivals"],
                result["master_requests"],
                stats.get("requests"),
                r["achieved_rate"],
                r["rate_error_pct"],
                r["per_second"]["min"],
                r["per_second"]["max"],
                r["per_second"]["std"],
            )
        )
        g, lr = r["merged_gaps"], r["schedule_residuals"]
        print("\n| ideal gap µs | mean gap µs | gap std µs | gap p99 abs dev µs | gap max µs dev | send time vs fitted line: std µs | p99 µs | max µs |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(
            "| %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f |"
            % (g["ideal_us"], g["mean_us"], g["std_us"], g["p99_abs_dev_us"], g["max_abs_dev_us"], lr["std_us"], lr["p99_abs_us"], lr["max_abs_us"])
        )
        if lag:
            print(
                "\n- tokenswarm `lag` metric (dispatch − schedule): %s samples, p50 %s µs, p99 %s µs, max %s µs"
                % (lag["count"], lag["p50_us"], lag["p99_us"], lag["max_us"])
            )
        print("- CPU-s during the run: workers %s, simulator %.2f, other processes on the machine %.1f (of %.1f busy)" % (
            ", ".join("%.2f" % (x or 0) for x in result["worker_cpu_s"]), result["sim_cpu_s"] or 0, result["other_processes_cpu_s"], result["machine_busy_cpu_s"]["all"]))
        verdict = "meets" if abs(r["rate_error_pct"]) <= 1.0 else "does NOT meet"
        print("- %s the 1 %% rate-error target at %g req/s" % (verdict, a.rate))
        worst_bin = max(abs(n - a.rate) / a.rate * 100 for n in r["per_second"]["counts"])
        print("- every full second's arrivals within %.2f %% of the target (goal 2 %%): %s" % (worst_bin, "yes" if worst_bin <= 2 else "NO"))
        st = r["sim_ttft_us"]
        if ttft.get("p50_us") is not None and st["p50"] is not None:
            d50, d99 = (ttft["p50_us"] - st["p50"]) / 1000, (ttft["p99_us"] - st["p99"]) / 1000
            print("- TTFT p50 client %.2f ms vs simulator %.2f ms (%+.2f ms, goal 1 ms); p99 client %.2f ms vs simulator %.2f ms (%+.2f ms, goal 5 ms)" % (
                ttft["p50_us"] / 1000, st["p50"] / 1000, d50, ttft["p99_us"] / 1000, st["p99"] / 1000, d99))
        print("- master: exit code %s, %d log line(s) with `saturated`%s" % (
            result["master_exit"], len(saturated_lines), (": " + saturated_lines[0].strip()) if saturated_lines else ""))
        exact = result["master_requests"] == stats.get("requests")
        print("- counts: master %s, simulator %s: %s" % (result["master_requests"], stats.get("requests"), "exact" if exact else "NOT exact"))
    else:
        print("too few arrivals: %s" % r)
    print("\nresults: %s\nlogs: %s" % (os.path.relpath(path, c.ROOT), workdir))


if __name__ == "__main__":
    main()
