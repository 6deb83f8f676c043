#!/usr/bin/env python3
"""CPU per request of tokenswarm against its own floor and Locust's Python
worker, side by side in one run (issue 12.1).

Three clients do the same work, one after the other, against the same
target: a streamed OpenAI chat request with a 256-word prompt and 64 output
tokens, closed loop over keep-alive connections.

- ``floor``: ``examples/bare_client.rs``, one connection per user on one
  thread, which only finds the first content event and the end of the body.
  Nothing that does more can cost less.
- ``tokenswarm``: a ``tokenswarm worker`` driven by a real Locust master
  (``bench/locustfile_tokenswarm.py``).
- ``python``: Locust's own Python worker on ``bench/locustfile_python.py``
  (parses every chunk, counts tokens, TTFT), same master.

Two targets, each on CPU 1 (``taskset -c 1``, the master too):

- ``nginx``: nginx (one process) serving ``tests/fixtures/sse/vllm_chat_64.sse``
  as a static ``text/event-stream`` body, realistic vLLM chunks with ``id``,
  ``object``, ``created``, ``model``: the whole answer arrives in one or two
  reads.
- ``sim``: ``tokenswarm sim`` with its default latency model (TTFT 40 ms,
  12 ms per token) and no prefix cache: every token arrives in its own read.

The client runs on CPU 0 (``taskset -c 0``). Only the client process's CPU
is measured (utime+stime from ``/proc/<pid>/stat``), over a fixed window that
starts ``--warmup`` s after the target saw its first completed request, and
divided by the requests the *target* completed in the same window (nginx
``stub_status`` requests, the simulator's ``streams_completed``), so that
start-up and the end of the run count for nobody.

Usage: bench/cpu_per_request.py [--window 20] [--warmup 3] [--rounds 1]
           [--targets nginx,sim] [--clients floor,tokenswarm,python]
Results: <out>/cpu_per_request-<UTC stamp>.json and Markdown on stdout.
Needs nginx (``apt-get install -y nginx``), the release binary and the
example (``cargo build --release --example bare_client``), and the venv.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402

FIXTURE = os.path.join(c.ROOT, "tests", "fixtures", "sse", "vllm_chat_64.sse")
BARE = os.environ.get("BENCH_BARE_CLIENT", os.path.join(c.ROOT, "target", "release", "examples", "bare_client"))
PROMPT_TOKENS = 256
OUTPUT_TOKENS = 64
CHAT_PATH = "/v1/chat/completions"

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx.error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port};
        root {dir}/www;
        location = /nginx_status {{ stub_status; }}
        location = {path} {{
            default_type text/event-stream;
            # A POST to a static file is a 405; serve the file instead.
            error_page 405 =200 $uri;
        }}
    }}
}}
"""


def bare_body():
    """The request body tokenswarm and the Python worker send: 256 words
    (one unique first word), max_tokens 64, stream, usage included."""
    words = [chr(ord("A") + i % 26) for i in range(PROMPT_TOKENS - 1)]
    return json.dumps(
        {
            "model": "bench",
            "messages": [{"role": "user", "content": "r0 " + " ".join(words)}],
            "max_tokens": OUTPUT_TOKENS,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()


class Nginx:
    name = "nginx"

    def __init__(self, workdir, cpu):
        self.dir = os.path.join(workdir, "nginx")
        os.makedirs(os.path.join(self.dir, "www", os.path.dirname(CHAT_PATH.lstrip("/"))), exist_ok=True)
        shutil.copyfile(FIXTURE, os.path.join(self.dir, "www", CHAT_PATH.lstrip("/")))
        self.port = c.free_port()
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(dir=self.dir, port=self.port, path=CHAT_PATH))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = c.Proc("nginx", c.pinned(cpu, [nginx, "-c", conf, "-p", self.dir]), os.path.join(workdir, "nginx.log"))
        self.url = "http://127.0.0.1:%d" % self.port
        for _ in range(100):
            try:
                self.completed()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("nginx did not come up; see %s" % self.dir)
        # The trick must hold: a POST gets the whole stream with a 200.
        req = urllib.request.Request(self.url + CHAT_PATH, data=bare_body(), method="POST")
        with urllib.request.urlopen(req, timeout=2) as r:
            body = r.read()
            assert r.status == 200 and body.endswith(b"data: [DONE]\n\n"), (r.status, body[-40:])

    def completed(self):
        with urllib.request.urlopen(self.url + "/nginx_status", timeout=2) as r:
            text = r.read().decode()
        # "server accepts handled requests\n A H R"
        return int(re.search(r"\n\s*\d+\s+\d+\s+(\d+)", text).group(1))

    def stop(self):
        self.proc.stop()


class Sim:
    name = "sim"

    def __init__(self, workdir, cpu):
        # Default latency model; no prefix cache, so the fixed body of the
        # floor gets the same prefill time as the varying prompts.
        self.proc, self.url = c.start_sim(workdir, "sim", ["--prefix-cache-blocks", "0"], cpu)

    def completed(self):
        return c.http_json(self.url + "/sim/stats")["streams_completed"]

    def stop(self):
        self.proc.stop()


def measure(client_proc, target, warmup, window, limit_s):
    """Waits for the first completed request, then `warmup` s, then reads
    client CPU and target completions over `window` s."""
    end = time.monotonic() + limit_s
    base = target.completed()
    while target.completed() == base:
        if time.monotonic() > end or client_proc.p.poll() is not None:
            raise RuntimeError("no request completed; see the logs")
        time.sleep(0.1)
    time.sleep(warmup)
    t0, cpu0, n0, b0 = time.monotonic(), client_proc.cpu_now(), target.completed(), c.cpu_busy_s()
    tc0 = target.proc.cpu_now()
    time.sleep(window)
    t1, cpu1, n1, b1 = time.monotonic(), client_proc.cpu_now(), target.completed(), c.cpu_busy_s()
    tc1 = target.proc.cpu_now()
    # Each stub_status read is itself one request.
    n = (n1 - n0 - 1) if target.name == "nginx" else (n1 - n0)
    wall = t1 - t0
    cpu = cpu1 - cpu0
    return {
        "window_s": round(wall, 3),
        "completed": n,
        "req_per_s": n / wall,
        "client_cpu_s": round(cpu, 3),
        "client_core_busy": cpu / wall,
        "target_core_busy": (tc1 - tc0) / wall,
        "cpu_us_per_request": cpu / n * 1e6 if n else None,
        "requests_per_cpu_s": n / cpu if cpu else None,
        "machine_busy_cpu_s": {k: round(b1[k] - b0[k], 2) for k in b1},
        "other_processes_cpu_s": round((b1["all"] - b0["all"]) - cpu - (tc1 - tc0), 2),
    }


def run_client(kind, target, users, a, workdir, tag):
    env = dict(os.environ)
    env["BENCH_OUTPUT_TOKENS"] = str(OUTPUT_TOKENS)
    env["BENCH_PROMPT_TOKENS"] = str(PROMPT_TOKENS)
    env.setdefault("RUST_LOG", "warn")
    limit = a.warmup + a.window + 30
    master = None
    if kind == "floor":
        body = os.path.join(workdir, "body.json")
        with open(body, "wb") as f:
            f.write(bare_body())
        secs = int(a.warmup + a.window + 15)
        argv = c.pinned(a.client_cpu, [BARE, target.url[len("http://") :], CHAT_PATH, str(users), str(secs), body])
        client = c.Proc(kind, argv, os.path.join(workdir, tag + ".log"), env=env)
    else:
        master_port = c.free_port()
        if kind == "tokenswarm":
            argv = [c.TOKENSWARM, "worker", "--master-port", str(master_port)]
        else:
            argv = [c.LOCUST, "-f", os.path.join(c.BENCH, "locustfile_python.py"), "--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port)]
        client = c.Proc(kind, c.pinned(a.client_cpu, argv), os.path.join(workdir, tag + ".worker.log"), env=env)
        c.wait_idle(client)  # imports are not part of the load
        margv = c.master_argv(master_port, target.url, users, int(limit), os.path.join(workdir, tag), stop_timeout=1)
        master = c.Proc("master", c.pinned(a.target_cpu, margv), os.path.join(workdir, tag + ".master.log"), env=env)
    try:
        r = measure(client, target, a.warmup, a.window, limit)
    finally:
        if master is not None:
            master.stop(10)
        client.stop(10)
    r.update({"client": kind, "target": target.name, "users": users})
    return r


def fmt(x, nd=0):
    if x is None:
        return "-"
    if isinstance(x, float):
        return "{:,.{}f}".format(x, nd)
    return "{:,}".format(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--window", type=float, default=20, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=3, help="seconds after the first completion before the window")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the whole comparison")
    ap.add_argument("--targets", default="nginx,sim")
    ap.add_argument("--clients", default="floor,tokenswarm,python")
    ap.add_argument("--nginx-users", type=int, default=64)
    ap.add_argument("--sim-users", type=int, default=128)
    ap.add_argument("--client-cpu", default="0")
    ap.add_argument("--target-cpu", default="1")
    ap.add_argument("--out", default=os.path.join(c.BENCH, "results"))
    ap.add_argument("--keep-logs", help="directory for the process logs (default: a temporary one)")
    a = ap.parse_args()
    for p in (BARE, c.TOKENSWARM):
        if not os.access(p, os.X_OK):
            sys.exit("missing %s: cargo build --release --example bare_client" % p)
    os.makedirs(a.out, exist_ok=True)
    workdir = a.keep_logs or tempfile.mkdtemp(prefix="tokenswarm-cpu-")
    os.makedirs(workdir, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    load0 = c.loadavg()
    runs = []
    for rnd in range(a.rounds):
        for tname in [x for x in a.targets.split(",") if x]:
            target = Nginx(workdir, a.target_cpu) if tname == "nginx" else Sim(workdir, a.target_cpu)
            users = a.nginx_users if tname == "nginx" else a.sim_users
            try:
                for kind in [x for x in a.clients.split(",") if x]:
                    print("# round %d, %s, %s, %d users ..." % (rnd + 1, tname, kind, users), file=sys.stderr)
                    r = run_client(kind, target, users, a, workdir, "r%d.%s.%s" % (rnd, tname, kind))
                    r["round"] = rnd + 1
                    runs.append(r)
                    print("#   %s µs/request, %s req/s" % (fmt(r["cpu_us_per_request"], 1), fmt(r["req_per_s"])), file=sys.stderr)
            finally:
                target.stop()
    ratios = []
    for rnd in range(1, a.rounds + 1):
        for tname in [x for x in a.targets.split(",") if x]:
            by = {r["client"]: r for r in runs if r["round"] == rnd and r["target"] == tname}
            row = {"round": rnd, "target": tname}
            if "floor" in by and "tokenswarm" in by:
                row["tokenswarm_over_floor_cpu_per_request"] = by["tokenswarm"]["cpu_us_per_request"] / by["floor"]["cpu_us_per_request"]
            if "python" in by and "tokenswarm" in by:
                row["tokenswarm_over_python_requests_per_cpu_s"] = by["tokenswarm"]["requests_per_cpu_s"] / by["python"]["requests_per_cpu_s"]
            ratios.append(row)
    result = {
        "benchmark": "cpu_per_request",
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": c.machine(),
        "loadavg_1m_at_start": load0,
        "tokenswarm": c.tokenswarm_version(),
        "git_head": c.git_head(),
        "settings": vars(a),
        "prompt_tokens": PROMPT_TOKENS,
        "output_tokens": OUTPUT_TOKENS,
        "runs": runs,
        "ratios": ratios,
        "goals": {"nginx_over_floor_max": 1.5, "sim_over_floor_max": 1.25, "over_python_min": 20},
        "logs": workdir,
    }
    path = os.path.join(a.out, "cpu_per_request-%s.json" % started.strftime("%Y%m%dT%H%M%SZ"))
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print("## cpu_per_request, %s, %s, load %s at start\n" % (started.strftime("%Y-%m-%d %H:%M UTC"), result["tokenswarm"], load0))
    print("| round | target | client | users | completed | req/s | client CPU-s (core busy) | CPU µs / request | requests per CPU-s | target core busy | other procs CPU-s |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(
            "| %d | %s | %s | %d | %s | %s | %s (%s %%) | %s | %s | %s %% | %s |"
            % (
                r["round"], r["target"], r["client"], r["users"], fmt(r["completed"]), fmt(r["req_per_s"]),
                fmt(r["client_cpu_s"], 2), fmt(100 * r["client_core_busy"]), fmt(r["cpu_us_per_request"], 1),
                fmt(r["requests_per_cpu_s"]), fmt(100 * r["target_core_busy"]), fmt(r["other_processes_cpu_s"], 1),
            )
        )
    print("\n| round | target | tokenswarm / floor (CPU per request) | tokenswarm / python (requests per CPU-s) |")
    print("|---:|---|---:|---:|")
    for q in ratios:
        print("| %d | %s | %s× | %s× |" % (q["round"], q["target"], fmt(q.get("tokenswarm_over_floor_cpu_per_request"), 2), fmt(q.get("tokenswarm_over_python_requests_per_cpu_s"), 1)))
    print("\nresults: %s\nlogs: %s" % (os.path.relpath(path, c.ROOT), workdir))


if __name__ == "__main__":
    main()
