#!/usr/bin/env python3
"""RSS per open stream of one tokenswarm worker (issue 12.3).

The simulator (its own process; ``--slots 0 --tpot-ms 200``, so 1,000-token
answers stay open for minutes) and one tokenswarm worker, driven by a
headless Locust master (bench/locustfile_tokenswarm.py) with STREAMS users
in closed loop. The worker's VmRSS is read when it is idle (joined, before
the master starts the load) and again once the simulator holds STREAMS
requests and the RSS has settled. Per stream = (loaded - idle) / STREAMS.

``--malloc-stats`` also asks glibc, through gdb, for the worker's heap
figures (bytes in use vs bytes taken from the system), written to the
worker's log, to tell live allocations from allocator overhead.

The assertion of the bound is tests/stream_memory.rs; this script gives the
figures of bench/README.md.

Usage: bench/stream_memory.py [--streams 10000] [--worker-env K=V ...]
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402


def status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=10000)
    ap.add_argument("--output-tokens", type=int, default=1000)
    ap.add_argument("--worker-env", action="append", default=[], help="K=V for the worker only (e.g. MALLOC_ARENA_MAX=1)")
    ap.add_argument("--malloc-stats", action="store_true")
    ap.add_argument("--worker-prefix", default="", help='command before the worker, e.g. "valgrind --tool=massif --massif-out-file=/tmp/m.out"')
    ap.add_argument("--out", default=os.path.join(c.BENCH, "results"))
    ap.add_argument("--keep-logs")
    a = ap.parse_args()
    workdir = a.keep_logs or tempfile.mkdtemp(prefix="tokenswarm-mem-")
    os.makedirs(workdir, exist_ok=True)
    os.makedirs(a.out, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    env = dict(os.environ)
    env["BENCH_OUTPUT_TOKENS"] = str(a.output_tokens)
    env.setdefault("RUST_LOG", "warn")
    wenv = dict(env)
    for kv in a.worker_env:
        k, v = kv.split("=", 1)
        wenv[k] = v
    sim, url = c.start_sim(workdir, "mem", ["--slots", "0", "--tpot-ms", "200", "--batch-slowdown", "0"], None)
    mport = c.free_port()
    worker = c.Proc("worker", a.worker_prefix.split() + [c.TOKENSWARM, "worker", "--master-port", str(mport)], os.path.join(workdir, "worker.log"), env=wenv)
    master = None
    try:
        time.sleep(1.0)
        idle = status_kib(worker.pid, "VmRSS")
        margv = c.master_argv(mport, url, a.streams, 600, os.path.join(workdir, "mem"))
        margv[margv.index("-r") + 1] = "2500"
        master = c.Proc("master", margv, os.path.join(workdir, "master.log"), env=env)
        end = time.monotonic() + 180
        while c.http_json(url + "/sim/stats")["requests"] < a.streams:
            if time.monotonic() > end:
                raise RuntimeError("the simulator never saw %d requests" % a.streams)
            time.sleep(0.5)
        rss = status_kib(worker.pid, "VmRSS")
        for _ in range(30):
            time.sleep(2)
            now = status_kib(worker.pid, "VmRSS")
            settled = abs(now - rss) * 100 < rss
            rss = max(rss, now)
            if settled:
                break
        fds = len(os.listdir("/proc/%d/fd" % worker.pid))
        stats = c.http_json(url + "/sim/stats")
        malloc = None
        if a.malloc_stats and shutil.which("gdb"):
            subprocess.run(["gdb", "-p", str(worker.pid), "-batch", "-ex", "call (void)malloc_stats()"], capture_output=True, timeout=60)
            time.sleep(0.5)
            with open(os.path.join(workdir, "worker.log")) as f:
                malloc = [ln.rstrip() for ln in f if "bytes" in ln or "Arena" in ln]
    finally:
        for p in (master, worker, sim):
            if p is not None:
                p.stop()
    per = (rss - idle) / a.streams
    result = {
        "benchmark": "stream_memory",
        "started_utc": started.isoformat(timespec="seconds"),
        "git_head": c.git_head(),
        "settings": vars(a),
        "idle_rss_kib": idle,
        "loaded_rss_kib": rss,
        "per_stream_kib": per,
        "worker_fds": fds,
        "sim_stats": stats,
        "malloc_stats": malloc,
        "logs": workdir,
    }
    path = os.path.join(a.out, "stream_memory-%s.json" % started.strftime("%Y%m%dT%H%M%SZ"))
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print("worker RSS idle %d KiB, with %d streams %d KiB: %.2f KiB per stream (goal 16); fds %d; sim requests %d, completed %d"
          % (idle, a.streams, rss, per, fds, stats["requests"], stats["streams_completed"]))
    if malloc:
        print("\n".join(malloc[-8:]))
    print("results: %s" % os.path.relpath(path, c.ROOT))


if __name__ == "__main__":
    main()
