"""Shared helpers of the tokenswarm benchmarks: processes, ports, CPU time,
the simulator's stats, the master's CSV and histogram percentiles.

Nothing here measures by itself; worker_vs_python.py and
open_loop_precision.py put the pieces together.
"""

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
TOKENSWARM = os.environ.get("TOKENSWARM_BIN", os.path.join(ROOT, "target", "release", "tokenswarm"))
VENV_BIN = os.environ.get("BENCH_VENV_BIN", os.path.join(ROOT, ".venv", "bin"))
LOCUST = os.path.join(VENV_BIN, "locust")
CLK_TCK = os.sysconf("SC_CLK_TCK")
HAVE_TASKSET = shutil.which("taskset") is not None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu, argv):
    """argv run on one CPU (taskset execs, so the pid is the program's)."""
    if cpu is None or not HAVE_TASKSET:
        return argv
    return ["taskset", "-c", str(cpu)] + argv


def proc_cpu_s(pid):
    """utime + stime of a live process from /proc/<pid>/stat, seconds
    (None once it is gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Proc:
    """A child process with its log file, its /proc CPU time sampled every
    50 ms while it lives, and its exact rusage CPU time once reaped."""

    def __init__(self, name, argv, log_path, env=None, cwd=None):
        self.name = name
        self.argv = argv
        self.log = open(log_path, "w")
        self.p = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
        self.pid = self.p.pid
        self.last_proc_cpu = 0.0
        self.rusage_cpu = None
        self.returncode = None
        self._stop = False
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self):
        while not self._stop:
            c = proc_cpu_s(self.pid)
            if c is None:
                return
            self.last_proc_cpu = c
            time.sleep(0.05)

    def cpu_now(self):
        c = proc_cpu_s(self.pid)
        return self.last_proc_cpu if c is None else c

    def wait(self, timeout):
        """Reaps the process (wait4, for its rusage); kills it after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                break
            if time.monotonic() > deadline:
                self.signal(signal.SIGKILL)
                pid, status, ru = os.wait4(self.pid, 0)
                break
            time.sleep(0.02)
        self._stop = True
        self.rusage_cpu = ru.ru_utime + ru.ru_stime
        self.returncode = os.waitstatus_to_exitcode(status)
        self.p.returncode = self.returncode
        self.log.close()
        return self.returncode

    def signal(self, sig):
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout=5.0):
        if self.returncode is None:
            self.signal(signal.SIGTERM)
            self.wait(timeout)


def http_json(url, method="GET", timeout=2.0):
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def start_sim(outdir, tag, sim_args, cpu):
    port = free_port()
    sim = Proc(
        "sim",
        pinned(cpu, [TOKENSWARM, "sim", "--port", str(port)] + list(sim_args)),
        os.path.join(outdir, "%s.sim.log" % tag),
    )
    url = "http://127.0.0.1:%d" % port
    for _ in range(200):
        try:
            http_json(url + "/sim/stats")
            return sim, url
        except OSError:
            time.sleep(0.05)
    sim.stop()
    raise RuntimeError("the simulator did not come up; see %s.sim.log" % tag)


def wait_idle(proc, settle_s=0.5, max_s=15.0):
    """Waits until a process stops using CPU (e.g. Python imports done)."""
    end = time.monotonic() + max_s
    prev = proc.cpu_now()
    quiet_since = time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.1)
        cur = proc.cpu_now()
        if cur != prev:
            prev, quiet_since = cur, time.monotonic()
        elif time.monotonic() - quiet_since >= settle_s:
            return


def master_argv(port, host, users, run_time_s, csv_prefix, stop_timeout=5, expect_workers=1):
    return [
        LOCUST,
        "-f",
        os.path.join(BENCH, "locustfile_tokenswarm.py"),
        "--master",
        "--headless",
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        str(port),
        "--expect-workers",
        str(expect_workers),
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        "%ds" % run_time_s,
        "-H",
        host,
        "--csv",
        csv_prefix,
        "--stop-timeout",
        str(stop_timeout),
        "--only-summary",
    ]


def read_csv_row(csv_prefix, name="Chat"):
    with open(csv_prefix + "_stats.csv") as f:
        for row in csv.DictReader(f):
            if row["Name"] == name:
                return row
    return None


def hist_percentile(hist, q):
    """q-quantile (0..1) of a {bucket: count} histogram (keys may be text)."""
    items = sorted((float(k), n) for k, n in hist.items())
    total = sum(n for _, n in items)
    if not total:
        return None
    target = q * total
    seen = 0
    for v, n in items:
        seen += n
        if seen >= target:
            return v
    return items[-1][0]


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": os.uname().release, "python": sys.version.split()[0]}


def tokenswarm_version():
    try:
        return subprocess.run([TOKENSWARM, "--version"], capture_output=True, text=True, timeout=5).stdout.strip()
    except OSError:
        return "?"


def git_head():
    try:
        return subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except OSError:
        return "?"


def cpu_busy_s():
    """Busy CPU-seconds so far from /proc/stat: {"all": s, "cpu0": s, ...}
    (user+nice+system+irq+softirq+steal), to see how much of the machine
    other processes used during a run."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            name, *v = line.split()
            v = [int(x) for x in v]
            busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
            out["all" if name == "cpu" else name] = busy / CLK_TCK
    return out


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]
