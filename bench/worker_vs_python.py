#!/usr/bin/env python3
"""One tokenswarm worker against one Locust Python worker, side by side.

For each simulator configuration (``--no-latency``, then the default latency
model), the same Locust master (headless, ``--expect-workers 1``,
``-u U -r U -t T``) drives first one tokenswarm worker, then one Python
worker (``locust -f bench/locustfile_python.py --worker``), each against a
fresh simulator. Every request is a streamed OpenAI chat request of 64
output tokens. The worker runs on CPU 0 (``taskset -c 0``), the simulator on
CPU 1, the master unpinned.

Per run: requests (master CSV and the simulator's /sim/stats, which must
agree), completed streams (/sim/stats streams_completed, the basis of the
rates: see run_one on what happens to in-flight requests at the -t limit), req/s, the worker's CPU seconds (/proc/<pid>/stat when the load
starts; at the end the exact rusage of the reaped process, cross-checked with
the last /proc sample), CPU µs per request and per output token, and the
simulator's CPU. Then the ratio tokenswarm / python of requests per worker
CPU-second, per configuration.

A last part runs tokenswarm alone on the no-latency simulator at several user
counts to find the highest rate one worker core sustains.

Usage: bench/worker_vs_python.py [--users 128] [--duration 20]
           [--max-rate-users 64,256] [--out bench/results]
Results: <out>/worker_vs_python-<UTC stamp>.json and a Markdown table on stdout.
"""

import argparse
import datetime
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402

SIM_CONFIGS = {
    "no-latency": ["--no-latency"],
    # The simulator's default latency model: TTFT 40 ms + 20 µs/prompt token,
    # 12 ms per output token, 256 slots, 0.2 % decode slowdown per stream.
    "default-latency": [],
}


def worker_argv(kind, master_port, cpu):
    if kind == "tokenswarm":
        return c.pinned(cpu, [c.TOKENSWARM, "worker", "--master-port", str(master_port)])
    return c.pinned(
        cpu,
        [
            c.LOCUST,
            "-f",
            os.path.join(c.BENCH, "locustfile_python.py"),
            "--worker",
            "--master-host",
            "127.0.0.1",
            "--master-port",
            str(master_port),
        ],
    )


def run_one(kind, sim_name, users, duration, workdir, worker_cpu, sim_cpu, output_tokens, prompt_tokens):
    tag = "%s.%s.u%d" % (sim_name, kind, users)
    env = dict(os.environ)
    env["BENCH_OUTPUT_TOKENS"] = str(output_tokens)
    env["BENCH_PROMPT_TOKENS"] = str(prompt_tokens)
    env["BENCH_LLM_OUT"] = os.path.join(workdir, tag + ".llm.json")
    env.setdefault("RUST_LOG", "warn")
    sim, sim_url = c.start_sim(workdir, tag, SIM_CONFIGS[sim_name], sim_cpu)
    master_port = c.free_port()
    worker = c.Proc(kind, worker_argv(kind, master_port, worker_cpu), os.path.join(workdir, tag + ".worker.log"), env=env)
    master = None
    try:
        c.wait_idle(worker)  # Python's imports are not part of the load
        w0 = worker.cpu_now()
        s0 = sim.cpu_now()
        b0 = c.cpu_busy_s()
        load0 = c.loadavg()
        csv_prefix = os.path.join(workdir, tag)
        master = c.Proc(
            "master",
            c.master_argv(master_port, sim_url, users, duration, csv_prefix),
            os.path.join(workdir, tag + ".master.log"),
            env=env,
        )
        master.wait(duration + 90)
        worker.wait(20)  # the master's quit ends the worker
        s1 = sim.cpu_now()
        b1 = c.cpu_busy_s()
        stats = c.http_json(sim_url + "/sim/stats")
    finally:
        for p in (master, worker, sim):
            if p is not None:
                p.stop()
    row = c.read_csv_row(csv_prefix)
    llm = {}
    try:
        with open(env["BENCH_LLM_OUT"]) as f:
            llm = json.load(f)
    except (OSError, ValueError):
        pass
    master_requests = int(row["Request Count"]) if row else None
    master_failures = int(row["Failure Count"]) if row else None
    worker_cpu_s = worker.rusage_cpu - w0
    # Completed = streams the simulator finished: the work actually done,
    # whatever the master heard of it. At the -t limit the master sends
    # `quit`: tokenswarm cancels what is still in flight after 100 ms and
    # reports it failed; a Python worker lets it finish (--stop-timeout) but
    # the master stops listening 0.5 s after quit, so those go unreported.
    ok = stats.get("streams_completed") or 0
    master_ok = (master_requests or 0) - (master_failures or 0)
    out_tokens = stats.get("output_tokens", 0)
    if kind == "tokenswarm":
        s = (llm.get("scenarios") or {}).get("Chat") or {}
        ttft = (s.get("metrics") or {}).get("ttft", {}).get("hist") or {}
        ttft_p50_ms = (c.hist_percentile(ttft, 0.5) or 0) / 1000 or None
        ttft_p99_ms = (c.hist_percentile(ttft, 0.99) or 0) / 1000 or None
        worker_out_tokens = s.get("output_tokens")
        worker_counted = s.get("requests")
    else:
        p = llm.get("python") or {}
        ttft_p50_ms = c.hist_percentile(p.get("ttft_ms_hist") or {}, 0.5)
        ttft_p99_ms = c.hist_percentile(p.get("ttft_ms_hist") or {}, 0.99)
        worker_out_tokens = p.get("output_tokens")
        worker_counted = p.get("requests")
    return {
        "worker": kind,
        "sim": sim_name,
        "users": users,
        "duration_s": duration,
        "master_requests": master_requests,
        "master_failures": master_failures,
        "sim_requests": stats.get("requests"),
        "sim_streams_completed": stats.get("streams_completed"),
        "sim_by_endpoint": stats.get("by_endpoint"),
        "completed": ok,
        "master_successes": master_ok,
        # Every request the master counts reached the simulator, and every
        # success is a stream the simulator finished.
        "counts_agree": master_requests == stats.get("requests") and master_ok == ok,
        "worker_counted_requests": worker_counted,
        "worker_counted_output_tokens": worker_out_tokens,
        "sim_output_tokens": out_tokens,
        "req_per_s": ok / duration,
        "locust_req_per_s": float(row["Requests/s"]) if row else None,
        "resp_ms_p50": float(row["50%"]) if row else None,
        "resp_ms_p99": float(row["99%"]) if row else None,
        "ttft_ms_p50": ttft_p50_ms,
        "ttft_ms_p99": ttft_p99_ms,
        "worker_cpu_s": worker_cpu_s,
        "worker_cpu_s_proc_last_sample": worker.last_proc_cpu - w0,
        "worker_core_busy": worker_cpu_s / duration,
        "sim_cpu_s": s1 - s0,
        "sim_core_busy": (s1 - s0) / duration,
        "master_cpu_s": master.rusage_cpu if master else None,
        "cpu_us_per_request": worker_cpu_s / ok * 1e6 if ok else None,
        "cpu_us_per_output_token": worker_cpu_s / out_tokens * 1e6 if out_tokens else None,
        "requests_per_cpu_s": ok / worker_cpu_s if worker_cpu_s else None,
        # Machine-wide busy CPU-s during the run, and what is left after our
        # three processes: other work on this machine (compilers, tests).
        "machine_busy_cpu_s": {k: round(b1[k] - b0[k], 2) for k in b1},
        "other_processes_cpu_s": round((b1["all"] - b0["all"]) - worker_cpu_s - (s1 - s0) - (master.rusage_cpu if master else 0), 2),
        "loadavg_1m_at_start": load0,
        "worker_exit": worker.returncode,
        "master_exit": master.returncode if master else None,
    }


def fmt(x, nd=0):
    if x is None:
        return "-"
    if isinstance(x, float):
        return "{:,.{}f}".format(x, nd)
    return "{:,}".format(x)


def table(runs):
    lines = [
        "| sim | worker | users | requests (master / sim) | master failures / sim unfinished | completed streams (sim) | req/s | worker CPU-s (core busy) | CPU µs/req | CPU µs/token | req per CPU-s | sim core busy | TTFT p50 ms | resp p50/p99 ms | other procs CPU-s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            "| %s | %s | %d | %s / %s%s | %s / %s | %s | %s | %s (%s %%) | %s | %s | %s | %s %% | %s | %s / %s | %s |"
            % (
                r["sim"],
                r["worker"],
                r["users"],
                fmt(r["master_requests"]),
                fmt(r["sim_requests"]),
                "" if r["counts_agree"] else " **MISMATCH**",
                fmt(r["master_failures"]),
                fmt((r["sim_requests"] or 0) - (r["sim_streams_completed"] or 0)),
                fmt(r["completed"]),
                fmt(r["req_per_s"]),
                fmt(r["worker_cpu_s"], 2),
                fmt(100 * r["worker_core_busy"]),
                fmt(r["cpu_us_per_request"], 1),
                fmt(r["cpu_us_per_output_token"], 2),
                fmt(r["requests_per_cpu_s"]),
                fmt(100 * r["sim_core_busy"]),
                fmt(r["ttft_ms_p50"], 1),
                fmt(r["resp_ms_p50"]),
                fmt(r["resp_ms_p99"]),
                fmt(r["other_processes_cpu_s"], 1),
            )
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=128)
    ap.add_argument("--duration", type=int, default=20, help="seconds per run (-t)")
    ap.add_argument("--sims", default="no-latency,default-latency")
    ap.add_argument("--max-rate-users", default="64,256", help="tokenswarm-only no-latency runs ('' skips)")
    ap.add_argument("--output-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--worker-cpu", default="0")
    ap.add_argument("--sim-cpu", default="1")
    ap.add_argument("--out", default=os.path.join(c.BENCH, "results"))
    ap.add_argument("--keep-logs", help="directory for the process logs (default: a temporary one)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    workdir = a.keep_logs or tempfile.mkdtemp(prefix="tokenswarm-bench-")
    os.makedirs(workdir, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    runs = []
    for sim_name in [x for x in a.sims.split(",") if x]:
        for kind in ("tokenswarm", "python"):
            print("# %s, %s worker, %d users, %d s ..." % (sim_name, kind, a.users, a.duration), file=sys.stderr)
            runs.append(
                run_one(kind, sim_name, a.users, a.duration, workdir, a.worker_cpu, a.sim_cpu, a.output_tokens, a.prompt_tokens)
            )
    ratios = {}
    for sim_name in [x for x in a.sims.split(",") if x]:
        ts = next(r for r in runs if r["sim"] == sim_name and r["worker"] == "tokenswarm")
        py = next(r for r in runs if r["sim"] == sim_name and r["worker"] == "python")
        if ts["requests_per_cpu_s"] and py["requests_per_cpu_s"]:
            ratios[sim_name] = ts["requests_per_cpu_s"] / py["requests_per_cpu_s"]
    max_runs = []
    for u in [int(x) for x in a.max_rate_users.split(",") if x.strip()]:
        print("# max rate: no-latency, tokenswarm worker, %d users, %d s ..." % (u, a.duration), file=sys.stderr)
        max_runs.append(
            run_one("tokenswarm", "no-latency", u, a.duration, workdir, a.worker_cpu, a.sim_cpu, a.output_tokens, a.prompt_tokens)
        )
    result = {
        "benchmark": "worker_vs_python",
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": c.machine(),
        "tokenswarm": c.tokenswarm_version(),
        "git_head": c.git_head(),
        "settings": vars(a),
        "runs": runs,
        "ratio_requests_per_cpu_s_tokenswarm_over_python": ratios,
        "max_rate_runs": max_runs,
        "logs": workdir,
    }
    path = os.path.join(a.out, "worker_vs_python-%s.json" % started.strftime("%Y%m%dT%H%M%SZ"))
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print("## worker_vs_python, %s, %s, %d CPUs (%s)\n" % (started.strftime("%Y-%m-%d %H:%M UTC"), result["tokenswarm"], result["machine"]["nproc"], result["machine"]["cpu_model"]))
    print(table(runs))
    print()
    for k, v in ratios.items():
        print("- ratio tokenswarm / python, requests per worker CPU-second, %s: **%.1f×**" % (k, v))
    if max_runs:
        print("\n### tokenswarm alone, no-latency simulator\n")
        print(table(max_runs))
        best = max(max_runs, key=lambda r: r["req_per_s"])
        print(
            "\n- highest achieved: %s req/s (worker core %s %% busy, simulator core %s %% busy); "
            "worker cost %s µs/request = %s req/s per fully busy worker core"
            % (
                fmt(best["req_per_s"]),
                fmt(100 * best["worker_core_busy"]),
                fmt(100 * best["sim_core_busy"]),
                fmt(best["cpu_us_per_request"], 1),
                fmt(best["requests_per_cpu_s"]),
            )
        )
    print("\nresults: %s\nlogs: %s" % (os.path.relpath(path, c.ROOT), workdir))
    bad = [r for r in runs + max_runs if not r["counts_agree"]]
    if bad:
        print("WARNING: master and simulator counts differ in %d run(s): %s" % (len(bad), ", ".join("%s/%s/u%d" % (r["sim"], r["worker"], r["users"]) for r in bad)))


if __name__ == "__main__":
    main()
