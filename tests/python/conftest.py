"""Shared helpers for the master tests: free ports, a real `locust` master
process running locustfiles/llm.py, fake workers, and URL polling. Every
process started here is killed at the end of its test (bounded waits)."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "locustfiles"))

BIN = os.path.dirname(sys.executable)
LOCUST = os.path.join(BIN, "locust")
LOCUSTFILE = os.path.join(REPO, "locustfiles", "llm.py")
ARTIFACTS = os.path.join(REPO, "tests", "artifacts")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def http_post(url, form, timeout=5):
    data = urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout) as r:
        return r.read().decode()


def wait_for(predicate, timeout=20, interval=0.2, what="condition"):
    """Polls `predicate` until it returns a truthy value; fails on timeout."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, urllib.error.URLError, ValueError, KeyError) as e:
            last_error = e
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


def wait_for_url(url, timeout=20):
    return wait_for(lambda: http_get(url), timeout=timeout, what=url)


class Procs:
    """Starts processes with output to files; kills them all at teardown."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.procs = []

    def start(self, name, argv, env=None):
        out = open(self.tmp / f"{name}.log", "w")
        p = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        p.log_path = self.tmp / f"{name}.log"
        self.procs.append(p)
        return p

    def master(self, *args, web=True, name="master", env=None):
        """A real Locust master on free ports; returns (process, base_url, master_port)."""
        mport, wport = free_port(), free_port()
        argv = [LOCUST, "-f", LOCUSTFILE, "--master", "--master-bind-host", "127.0.0.1",
                "--master-bind-port", str(mport), "-H", "http://127.0.0.1:9"]
        if web:
            argv += ["--web-host", "127.0.0.1", "--web-port", str(wport)]
        p = self.start(name, argv + list(args), env=env)
        p.master_port = mport
        p.url = f"http://127.0.0.1:{wport}" if web else None
        return p

    def worker(self, master, index=0, *args, base=None):
        out = self.tmp / f"worker{index}.jsonl"
        argv = [sys.executable, os.path.join(HERE, "fakeworker.py"), "--port", str(master.master_port),
                "--worker", str(index), "--out", str(out), "--max-seconds", "60"]
        if base is not None:
            argv += ["--base", str(base)]
        p = self.start(f"worker{index}", argv + list(args))
        p.out = out
        return p

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def received(worker, msg_type):
    """Messages of one type the fake worker got from the master."""
    if not worker.out.exists():
        return []
    with open(worker.out, encoding="utf-8") as f:
        return [m for m in map(json.loads, f) if m["type"] == msg_type]


def log_text(proc):
    return proc.log_path.read_text(errors="replace")


@pytest.fixture
def procs(tmp_path):
    p = Procs(tmp_path)
    yield p
    p.stop_all()
