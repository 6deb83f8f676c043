"""Soak: one tokenswarm worker under moderate load for a long time (default
one hour), to show that its memory and file descriptors stay flat.

Not part of the test command (it takes an hour). What it does:
- starts the simulator on CPU 1 (default latency model, so streams are real
  per-token streams) and one tokenswarm worker on CPU 0;
- a Locust master (bench/locustfile_tokenswarm.py, headless) runs
  `--users` closed-loop users for `--duration` seconds;
- every `--sample-s` seconds it reads the worker's VmRSS from
  /proc/<pid>/status and its open descriptors from /proc/<pid>/fd;
- at the end: RSS after warm-up (the first sample at or after `--warmup-s`)
  against the last sample and the maximum, as growth in percent; fd min/max
  after warm-up; the master's request count against the simulator's.

Prints a Markdown table and writes bench/results/soak-<UTC>.json.
    .venv/bin/python bench/soak.py                 # 1 hour, 64 users
    .venv/bin/python bench/soak.py --duration 120  # a quick trial
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


def alive(pid):
    """True while the child runs (a zombie is not alive; it is not reaped
    here so that Proc.wait can still read its rusage)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=3600, help="seconds of load (-t)")
    ap.add_argument("--users", type=int, default=64)
    ap.add_argument("--warmup-s", type=int, default=300, help="RSS growth is measured from here")
    ap.add_argument("--sample-s", type=float, default=10.0)
    ap.add_argument("--output-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--worker-cpu", default="0")
    ap.add_argument("--sim-cpu", default="1")
    ap.add_argument("--out", default=os.path.join(c.BENCH, "results"))
    ap.add_argument("--keep-logs")
    args = ap.parse_args()
    logs = args.keep_logs or tempfile.mkdtemp(prefix="tokenswarm-soak-")
    os.makedirs(logs, exist_ok=True)
    warmup = min(args.warmup_s, args.duration // 2)

    sim, sim_url = c.start_sim(logs, "soak", [], args.sim_cpu)
    port = c.free_port()
    env = dict(os.environ, BENCH_PROMPT_TOKENS=str(args.prompt_tokens), BENCH_OUTPUT_TOKENS=str(args.output_tokens))
    worker = c.Proc(
        "worker",
        c.pinned(args.worker_cpu, [c.TOKENSWARM, "worker", "--master-port", str(port)]),
        os.path.join(logs, "soak.worker.log"),
        env=env,
    )
    csv_prefix = os.path.join(logs, "soak")
    master = c.Proc(
        "master",
        c.master_argv(port, sim_url, args.users, args.duration, csv_prefix),
        os.path.join(logs, "soak.master.log"),
        env=env,
    )
    samples = []
    t0 = time.monotonic()
    try:
        while alive(master.pid) and time.monotonic() - t0 < args.duration + 120:
            samples.append({"t_s": round(time.monotonic() - t0, 1), "rss_kib": rss_kib(worker.pid),
                            "fds": fd_count(worker.pid)})
            time.sleep(args.sample_s)
        master.wait(60)
        worker.wait(30)
        served = c.http_json(sim_url + "/sim/stats")
    finally:
        master.stop()
        worker.stop()
        sim.stop()
    row = c.read_csv_row(csv_prefix) or {}
    after = [s for s in samples if s["t_s"] >= warmup and s["rss_kib"] is not None]
    base = after[0]["rss_kib"] if after else None
    last = after[-1]["rss_kib"] if after else None
    peak = max((s["rss_kib"] for s in after), default=None)
    fds = [s["fds"] for s in after if s["fds"] is not None]
    result = {
        "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": c.machine(),
        "git": c.git_head(),
        "version": c.tokenswarm_version(),
        "args": vars(args),
        "master_requests": int(row.get("Request Count", 0) or 0),
        "master_failures": int(row.get("Failure Count", 0) or 0),
        "sim_requests": served.get("requests"),
        "worker_exit": worker.returncode,
        "master_exit": master.returncode,
        "worker_cpu_s": worker.rusage_cpu,
        "rss_after_warmup_kib": base,
        "rss_end_kib": last,
        "rss_peak_kib": peak,
        "rss_growth_pct": None if not base else round(100.0 * (last - base) / base, 2),
        "rss_peak_growth_pct": None if not base else round(100.0 * (peak - base) / base, 2),
        "fd_min": min(fds, default=None),
        "fd_max": max(fds, default=None),
        "samples": samples,
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "soak-%s.json" % time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print("| duration | users | requests (master / sim) | failures | RSS after warm-up | RSS end | growth | peak growth | fds (min-max) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("| %d s | %d | %d / %s | %d | %s KiB | %s KiB | %s %% | %s %% | %s-%s |" % (
        args.duration, args.users, result["master_requests"], result["sim_requests"], result["master_failures"],
        base, last, result["rss_growth_pct"], result["rss_peak_growth_pct"], result["fd_min"], result["fd_max"]))
    print("results: %s; logs: %s" % (path, logs))


if __name__ == "__main__":
    main()
