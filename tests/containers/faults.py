"""Container fault tests: a real cluster in Docker, hurt on purpose.

A stock Locust master (the image's pinned Locust 2.47.0 with
locustfiles/llm.py), three tokenswarm workers and `tokenswarm sim` run as
containers on a user-defined network. Four faults are injected with the
Docker CLI, one per phase, each in a run of its own:

1. the simulator stopped for about 10 s (`docker stop`, `docker start`);
2. a worker cut off for about 10 s (`docker network disconnect`, `connect`);
3. a worker killed (`docker kill`);
4. the master killed and started again (`docker kill`, `docker start`).

Why containers: these faults cannot be made on one loopback interface. A
killed process, a vanished route, a master that comes back on the same name
with no memory, are what the worker's reconnect, heartbeat and failure
paths are for, and the unit tests only simulate them.

What is asserted are counts and states, read from the master's web API
(`/stats/requests`: request and failure totals, failure rows, worker
states and user counts), from the workers' own per-request logs
(`tokenswarm worker --requests-out`, one JSON line per finished request,
flushed line by line, on a host directory) and from the simulator's
`/sim/stats`. No duration is ever asserted: every wait is a bounded poll
for a state (its bound only ends a hung test), and the ~10 s outages are
how long a fault lasts, not something measured.

Run by scripts/container-faults (which builds the image first) and so by
scripts/test where a Docker engine is usable. Every container and the
network carry the label `tokenswarm.faults=<run id>` and are removed at the
end, on failure, and on SIGINT/SIGTERM. Logs of every container, the
master's stats after each phase and a JSON report go to
target/container-faults/.

Environment: TOKENSWARM_IMAGE (default tokenswarm:local),
FAULTS_LOGS (default target/container-faults), FAULTS_PHASES="worker kill,..." (only these phases, in the usual order),
FAULTS_KEEP=1 (leave the
containers up after the run, for inspection; they still carry the label).
"""

from __future__ import annotations

import collections
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("TOKENSWARM_IMAGE", "tokenswarm:local")
LOGS = Path(os.environ.get("FAULTS_LOGS", ROOT / "target" / "container-faults"))

WORKERS = 3
USERS = 6  # two per worker
SPAWN_RATE = 6
# How long the simulator is down and a worker is cut off: the fault's
# length, from the issue ("for 10 s"). Never asserted.
OUTAGE_S = 10.0
# How long the master stays dead before `docker start`. Never asserted.
MASTER_DOWN_S = 4.0
# Requests that must succeed to call a run "going" (after a start, after a
# recovery): enough to be more than a stray in-flight request.
PROGRESS = 20
# Locust's worker report interval is 3 s: totals are settled when they did
# not change for this many 1 s polls after the master stopped.
SETTLE_POLLS = 5
MASTER_WEB = 8089
SIM_PORT = 8000


class Failed(Exception):
    """A check or a bounded wait failed; the message says which and the values."""


def log(msg: str) -> None:
    print(f"container-faults [{time.monotonic() - T0:5.0f}s]: {msg}", file=sys.stderr, flush=True)


T0 = time.monotonic()


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise Failed(msg)


def wait_for(what: str, probe, bound_s: float, poll_s: float = 0.5):
    """Polls `probe()` until it returns something truthy, at most `bound_s`.
    The bound only ends a hung test; the time taken is not a result."""
    deadline = time.monotonic() + bound_s
    last = None
    while True:
        try:
            last = probe()
        except (OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
            last = f"error: {e}"
        else:
            if last and not isinstance(last, str):
                return last
        if time.monotonic() >= deadline:
            raise Failed(f"{what}: not reached within {bound_s:.0f} s (last probe: {last})")
        time.sleep(poll_s)


def docker(*args: str, timeout: float = 60, check_rc: bool = True) -> str:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check_rc and r.returncode != 0:
        raise Failed(f"docker {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout.strip()


@dataclass
class Lines:
    """What one worker's --requests-out file says: finished requests, failed
    ones and failures by kind."""

    total: int = 0
    failed: int = 0
    kinds: collections.Counter = field(default_factory=collections.Counter)

    def __sub__(self, other: Lines) -> Lines:
        return Lines(self.total - other.total, self.failed - other.failed, self.kinds - other.kinds)

    def __add__(self, other: Lines) -> Lines:
        return Lines(self.total + other.total, self.failed + other.failed, self.kinds + other.kinds)


@dataclass
class Master:
    """One read of the master's /stats/requests."""

    state: str
    requests: int
    failures: int
    user_count: int
    workers: dict  # node id -> (state, user_count)
    errors: collections.Counter  # failure kind -> occurrences
    raw: dict

    @property
    def ok(self) -> int:
        return self.requests - self.failures

    def worker_state(self, node: str) -> str | None:
        w = self.workers.get(node)
        return w[0] if w else None


class Cluster:
    def __init__(self) -> None:
        # scripts/container-faults picks the id, so its trap can clean up too.
        self.run_id = os.environ.get("FAULTS_RUN_ID") or f"{os.getpid()}{secrets.token_hex(3)}"
        self.label = f"tokenswarm.faults={self.run_id}"
        p = f"tsfault-{self.run_id}"
        self.net = f"{p}-net"
        self.sim = f"{p}-sim"
        self.master_name = f"{p}-master"
        self.workers = [f"{p}-w{i}" for i in range(1, WORKERS + 1)]
        self.out = LOGS / "requests"
        self.master_ip = ""
        self.sim_ip = ""

    # ---- lifecycle -------------------------------------------------------

    def create(self) -> None:
        if self.out.exists():
            shutil.rmtree(self.out)
        for w in self.workers:
            d = self.out / w
            d.mkdir(parents=True)
            d.chmod(0o777)  # the image runs as uid 10001
        self._network()
        run = ["run", "-d", "--init", "--label", self.label, "--network", self.net]
        docker(*run, "--name", self.sim, IMAGE, "tokenswarm", "sim", "--host", "0.0.0.0", "--port", str(SIM_PORT))
        docker(
            *run, "--name", self.master_name,
            "-v", f"{ROOT / 'tests' / 'containers'}:/faults:ro",
            IMAGE, "locust", "-f", "/app/locustfiles/llm.py", "--master",
            "--autostart", "-u", str(USERS), "-r", str(SPAWN_RATE),
            "--expect-workers", str(WORKERS), "--expect-workers-max-wait", "120",
            # a missing worker's users move to the others (Locust's option)
            "--enable-rebalancing",
            # a stop lets streams finish: none is cut, so counts compare
            "--stop-timeout", "10",
            "--host", f"http://{self.sim}:{SIM_PORT}",
            "--llm-scenarios", "/faults/scenarios.yaml",
        )  # fmt: skip
        for w in self.workers:
            self.start_worker(w)
        self.master_ip = self.ip(self.master_name)
        self.sim_ip = self.ip(self.sim)

    def start_worker(self, w: str) -> None:
        docker(
            "run", "-d", "--init", "--label", self.label, "--network", self.net, "--name", w,
            "-v", f"{self.out / w}:/out", "-e", "TOKENSWARM_LOG=info", "-e", "NO_COLOR=1",
            IMAGE, "tokenswarm", "worker", "--master-host", self.master_name,
            "--node-id", w, "--requests-out", "/out/requests.jsonl", "--master-timeout", "120",
        )  # fmt: skip

    def _network(self) -> None:
        """A network with a subnet of our own: `docker network connect --ip`
        (the worker back on its old address, as a re-plugged cable) needs a
        user-configured subnet. Tries a few free /24s, bounded."""
        routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
        taken = []
        for word in routes.split():
            try:
                taken.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                pass
        last = ""
        for _ in range(8):
            subnet = ipaddress.ip_network(f"172.29.{secrets.randbelow(254) + 1}.0/24")
            if any(subnet.overlaps(t) for t in taken if t.prefixlen > 0):
                continue
            r = subprocess.run(
                ["docker", "network", "create", "--label", self.label, "--subnet", str(subnet), self.net],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            if r.returncode == 0:
                return
            last = r.stderr.strip()
        raise Failed(f"could not create a docker network with a free 172.29.x.0/24 subnet: {last}")

    def cleanup(self) -> None:
        for c in [self.sim, self.master_name, *self.workers]:
            r = subprocess.run(["docker", "logs", c], capture_output=True, text=True, timeout=30)
            if r.returncode == 0:
                (LOGS / f"{c.split('-')[-1]}.log").write_text(r.stdout + r.stderr)
        if os.environ.get("FAULTS_KEEP"):
            log(f"FAULTS_KEEP: leaving containers labelled {self.label}")
            return
        ids = docker("ps", "-aq", "--filter", f"label={self.label}", check_rc=False).split()
        if ids:
            docker("rm", "-f", *ids, timeout=120, check_rc=False)
        nets = docker("network", "ls", "-q", "--filter", f"label={self.label}", check_rc=False).split()
        if nets:
            docker("network", "rm", *nets, check_rc=False)

    # ---- reading state ---------------------------------------------------

    def ip(self, c: str) -> str:
        ip = docker("inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{self.net}").IPAddress}}}}', c)
        check(bool(ip), f"{c} has no address on {self.net}")
        return ip

    def container(self, c: str) -> tuple[bool, str, int]:
        """(running, started at, restart count) of a container."""
        out = docker("inspect", "-f", "{{.State.Running}} {{.State.StartedAt}} {{.RestartCount}}", c)
        running, started, restarts = out.split()
        return running == "true", started, int(restarts)

    def http(self, url: str, data: dict | None = None, timeout: float = 5) -> bytes:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        with urllib.request.urlopen(url, data=body, timeout=timeout) as r:
            return r.read()

    def master(self) -> Master:
        raw = json.loads(self.http(f"http://{self.master_ip}:{MASTER_WEB}/stats/requests"))
        total = next(s for s in raw["stats"] if s["name"] == "Aggregated")
        errors = collections.Counter()
        for e in raw.get("errors", []):
            errors[str(e["error"]).split(":", 1)[0].strip()] += int(e["occurrences"])
        workers = {w["id"]: (w["state"], int(w["user_count"])) for w in raw.get("workers", [])}
        return Master(
            raw["state"], int(total["num_requests"]), int(total["num_failures"]),
            int(raw.get("user_count", 0)), workers, errors, raw,
        )  # fmt: skip

    def lines(self, w: str) -> Lines:
        p = self.out / w / "requests.jsonl"
        n = Lines()
        if not p.exists():
            return n
        data = p.read_bytes()
        for line in data[: data.rfind(b"\n") + 1].splitlines():  # complete lines only
            row = json.loads(line)
            n.total += 1
            if row["status"] != "ok":
                n.failed += 1
                n.kinds[row["failure_kind"]] += 1
        return n

    def all_lines(self, ws=None) -> dict[str, Lines]:
        return {w: self.lines(w) for w in (ws or self.workers)}

    def sim_requests(self) -> int:
        return int(json.loads(self.http(f"http://{self.sim_ip}:{SIM_PORT}/sim/stats"))["requests"])

    # ---- driving runs ----------------------------------------------------

    def running_with_all(self, ws=None):
        """The master is running its full user count on the given workers."""
        m = self.master()
        ws = ws or self.workers
        states = [m.worker_state(w) for w in ws]
        good = m.state == "running" and m.user_count == USERS and all(s == "running" for s in states)
        return m if good else f"state {m.state}, users {m.user_count}, workers {m.workers}"

    def start_run(self) -> tuple[dict[str, Lines], int]:
        """Baselines (the workers' lines, the sim's count), then POST /swarm,
        which clears the master's stats, and waits for the full user count."""
        base = (self.all_lines(), self.sim_requests())
        r = json.loads(self.http(
            f"http://{self.master_ip}:{MASTER_WEB}/swarm",
            {"user_count": USERS, "spawn_rate": SPAWN_RATE, "host": f"http://{self.sim}:{SIM_PORT}"},
            timeout=30,
        ))  # fmt: skip
        check(r.get("success") is True, f"POST /swarm refused: {r}")
        wait_for("run started on every worker", self.running_with_all, 60)
        return base

    def progress(self, what: str, at: int, n: int = PROGRESS, bound_s: float = 60) -> Master:
        """Waits for `n` more successful requests at the master than `at`."""
        def probe():
            m = self.master()
            return m if m.ok >= at + n else f"{m.ok} ok requests, want {at + n}"
        return wait_for(what, probe, bound_s)

    def stop_and_settle(self, ws=None) -> tuple[Master, dict[str, Lines]]:
        """POST /stop, then waits until every worker has reported its stop
        and the master's totals and the workers' lines no longer change (the
        last reports are in)."""
        # Locust answers /stop only once the workers have stopped (streams
        # finish within --stop-timeout 10 s; a request stalled by a fault
        # takes up to its first-token timeout), so the call gets more time.
        self.http(f"http://{self.master_ip}:{MASTER_WEB}/stop", {}, timeout=60)
        prev, same, seen = None, 0, []
        deadline = time.monotonic() + 60
        while True:
            try:
                m, ls = self.master(), self.all_lines(ws)
            except OSError as e:  # a slow answer under load: poll again
                if time.monotonic() > deadline:
                    raise Failed(f"master's /stats/requests after /stop: {e}") from e
                time.sleep(1)
                continue
            key = (m.state, m.requests, m.failures, tuple(x.total for x in ls.values()))
            # Locust stays "stopping" while a worker is missing (until it
            # drops it, 60 s later): what counts is that every present
            # worker has reported its stop ("ready" again).
            present = [st for st, _ in m.workers.values() if st != "missing"]
            stopped = m.state in ("stopped", "stopping") and all(st == "ready" for st in present)
            same = same + 1 if key == prev and stopped else 0
            if key != prev:
                seen = [*seen[-4:], key]
            prev = key
            if same >= SETTLE_POLLS:
                return m, ls
            if time.monotonic() > deadline:
                raise Failed(f"run did not settle after /stop within 60 s (last values: {seen})")
            time.sleep(1)

    def lost_master_logs(self) -> dict[str, int]:
        """How often each worker logged losing the master (information for
        the report, not asserted: the states and counts are)."""
        out = {}
        for w in self.workers:
            r = subprocess.run(["docker", "logs", w], capture_output=True, text=True, timeout=30)
            out[w.rsplit("-", 1)[-1]] = (r.stdout + r.stderr).count("lost the master")
        return out

    def save(self, name: str, m: Master) -> None:
        (LOGS / f"{name}.stats.json").write_text(json.dumps(m.raw, indent=1))


def delta(after: dict[str, Lines], before: dict[str, Lines], ws) -> Lines:
    total = Lines()
    for w in ws:
        total = total + (after[w] - before.get(w, Lines()))
    return total


# ---- the faults ----------------------------------------------------------


def sim_outage(c: Cluster, report: dict) -> None:
    """Proves: with the target down for ~10 s, requests fail with the kind
    `connect` (the master's failure rows say so), no worker exits or
    restarts and the master keeps all of them running, and requests succeed
    again once the simulator is back; after the stop, the master's request
    and failure totals equal the sum of the workers' own per-request logs,
    and its `connect` count equals theirs (nothing lost, nothing counted
    twice)."""
    m0 = wait_for("the autostarted run on all workers", c.running_with_all, 120)
    base_lines = {w: Lines() for w in c.workers}  # autostart: the files start with the run
    started = {w: c.container(w)[1] for w in c.workers}
    m = c.progress("load before the outage", m0.ok)
    before_connect = m.errors["connect"]
    docker("stop", "-t", "5", c.sim)
    t_down = time.monotonic()
    log("simulator stopped")

    def connect_failures():
        x = c.master()
        return x if x.errors["connect"] >= before_connect + PROGRESS else f"connect failures {x.errors['connect']}"

    wait_for("connect failures at the master while the sim is down", connect_failures, 30)
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t_down)))
    during = c.master()
    for w in c.workers:
        running, st, restarts = c.container(w)
        check(running and st == started[w] and restarts == 0, f"{w} exited or restarted during the outage")
        check(during.worker_state(w) == "running", f"master sees {w} as {during.worker_state(w)} during the outage")
    docker("start", c.sim)
    c.sim_ip = c.ip(c.sim)
    log("simulator started again")
    after = c.progress("successful requests after the sim is back", during.ok)
    m, ls = c.stop_and_settle()
    c.save("1-sim-outage", m)
    d = delta(ls, base_lines, c.workers)
    report.update(
        master_requests=m.requests, master_failures=m.failures, master_failure_kinds=dict(m.errors),
        worker_lines=d.total, worker_failed=d.failed, worker_failure_kinds=dict(d.kinds),
        ok_during_outage_start=during.ok, ok_after_recovery=after.ok,
    )  # fmt: skip
    check(m.errors["connect"] > 0, f"no `connect` failure row at the master: {dict(m.errors)}")
    check(m.requests == d.total, f"master counts {m.requests} requests, the workers logged {d.total}")
    check(m.failures == d.failed, f"master counts {m.failures} failures, the workers logged {d.failed}")
    check(
        m.errors["connect"] == d.kinds["connect"],
        f"master's connect failures {m.errors['connect']} != workers' {d.kinds['connect']}",
    )


def network_cut(c: Cluster, report: dict) -> None:
    """Proves: a worker cut off the network for ~10 s is marked `missing`
    by the master, whose users then go to the other workers, which keep
    sending; once reconnected (same address) it is `running` again under
    the same node id and sends requests again; after the stop, the master's
    totals equal the sum of all workers' own logs, the cut worker's
    included: what it measured while cut off reached the master after."""
    base, _ = c.start_run()
    cut = c.workers[1]
    others = [w for w in c.workers if w != cut]
    m = c.progress("load before the cut", 0)
    ip = c.ip(cut)
    docker("network", "disconnect", c.net, cut)
    t_cut = time.monotonic()
    log(f"{cut} disconnected")

    def missing():
        x = c.master()
        return x if x.worker_state(cut) == "missing" else f"{cut} is {x.worker_state(cut)}"

    wait_for("the master marks the cut worker missing", missing, 30)

    def rebalanced():
        x = c.master()
        users = sum(x.workers[w][1] for w in others if w in x.workers)
        return x if users == USERS else f"the other workers run {users} users, want {USERS}"

    at_missing = wait_for("the cut worker's users moved to the others", rebalanced, 30)
    c.progress("the other workers go on while one is cut off", at_missing.ok, bound_s=30)
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t_cut)))
    docker("network", "connect", "--ip", ip, c.net, cut)
    log(f"{cut} reconnected")
    at_back = c.lines(cut)

    def back():
        x = c.master()
        return x if x.worker_state(cut) == "running" and len(x.workers) == WORKERS else f"workers {x.workers}"

    wait_for("the cut worker running again at the master", back, 45)

    def sends_again():
        n = c.lines(cut)
        return n if n.total - n.failed >= at_back.total - at_back.failed + 5 else f"{n}"

    wait_for("the cut worker's requests succeed again", sends_again, 45)
    m, ls = c.stop_and_settle()
    c.save("2-network-cut", m)
    d = delta(ls, base, c.workers)
    dc = ls[cut] - base[cut]
    report.update(
        master_requests=m.requests, master_failures=m.failures, master_failure_kinds=dict(m.errors),
        worker_lines=d.total, worker_failed=d.failed, cut_worker_lines=dc.total,
        cut_worker_failure_kinds=dict(dc.kinds), workers_at_end=sorted(m.workers),
        workers_logged_lost_master=c.lost_master_logs(),
    )  # fmt: skip
    check(sorted(m.workers) == sorted(c.workers), f"master's workers at the end {sorted(m.workers)}")
    check(m.requests == d.total, f"master counts {m.requests} requests, the workers logged {d.total}")
    check(m.failures == d.failed, f"master counts {m.failures} failures, the workers logged {d.failed}")


def worker_kill(c: Cluster, report: dict) -> None:
    """Proves: a killed worker is marked `missing`, its users go to the
    others, which keep sending; after the stop, the master has counted at
    least every request the survivors logged and at most those plus what the
    killed worker logged (it loses only the killed worker's unreported
    last window), and no more than the simulator received."""
    base, sim0 = c.start_run()
    dead = c.workers[2]
    others = [w for w in c.workers if w != dead]
    c.progress("load before the kill", 0)
    docker("kill", dead)
    log(f"{dead} killed")

    def missing_and_rebalanced():
        x = c.master()
        users = sum(x.workers[w][1] for w in others if w in x.workers)
        good = x.worker_state(dead) == "missing" and users == USERS
        return x if good else f"{dead} is {x.worker_state(dead)}, the others run {users} users"

    at_missing = wait_for("killed worker missing, its users on the others", missing_and_rebalanced, 30)
    surv0 = delta(c.all_lines(others), {}, others)

    def survivors_go_on():
        n = delta(c.all_lines(others), {}, others)
        return n if n.total >= surv0.total + PROGRESS else f"survivors logged {n.total}, want {surv0.total + PROGRESS}"

    wait_for("the surviving workers go on", survivors_go_on, 45)
    m, ls = c.stop_and_settle(others)
    c.save("3-worker-kill", m)
    sim1 = c.sim_requests()
    surv = delta(ls, base, others)
    killed = c.lines(dead) - base[dead]
    report.update(
        master_requests=m.requests, survivors_lines=surv.total, killed_worker_lines=killed.total,
        sim_requests=sim1 - sim0, lost_with_the_killed_worker=surv.total + killed.total - m.requests,
        killed_state=m.worker_state(dead), master_ok_at_missing=at_missing.ok,
    )  # fmt: skip
    check(m.worker_state(dead) == "missing", f"killed worker is {m.worker_state(dead)} at the end")
    check(m.requests >= surv.total, f"master counts {m.requests}, fewer than the survivors' {surv.total}")
    check(
        m.requests <= surv.total + killed.total,
        f"master counts {m.requests}, more than every worker logged ({surv.total} + {killed.total})",
    )
    check(m.requests <= sim1 - sim0, f"master counts {m.requests}, more than the sim received ({sim1 - sim0})")
    # The same worker again (same node id), for the next phase.
    docker("start", dead)

    def rejoined():
        x = c.master()
        good = x.worker_state(dead) == "ready" and x.state == "stopped"
        return x if good else f"{dead} is {x.worker_state(dead)}, the master {x.state}"

    wait_for("the restarted worker registers again and the master is stopped", rejoined, 60)


def master_restart(c: Cluster, report: dict) -> None:
    """Proves: when the master is killed and started again (same command,
    `--autostart`), the three workers (same processes: not restarted) register
    with the new master under their node ids and the new run goes on by
    itself; the next run then counts exactly: the master's total equals the
    requests the simulator received and the sum of the workers' logs."""
    c.start_run()
    c.progress("load before the master dies", 0)
    started = {w: c.container(w)[1] for w in c.workers}
    docker("kill", c.master_name)
    log("master killed")
    time.sleep(MASTER_DOWN_S)
    for w in c.workers:
        check(c.container(w)[0], f"{w} exited while the master was down")
    docker("start", c.master_name)
    c.master_ip = c.ip(c.master_name)
    log("master started again")
    m = wait_for("the restarted master runs on all three workers", c.running_with_all, 120)
    for w in c.workers:
        running, st, restarts = c.container(w)
        check(running and st == started[w] and restarts == 0, f"{w} was restarted; it should have reconnected")
    c.progress("the run goes on after the restart", m.ok)
    m1, _ = c.stop_and_settle()
    c.save("4a-after-master-restart", m1)
    base, sim0 = c.start_run()
    c.progress("the next run", 0)
    m2, ls = c.stop_and_settle()
    c.save("4b-next-run", m2)
    sim1 = c.sim_requests()
    d = delta(ls, base, c.workers)
    report.update(
        restarted_run_requests=m1.requests, restarted_run_workers=sorted(m1.workers),
        next_run_master_requests=m2.requests, next_run_master_failures=m2.failures,
        next_run_sim_requests=sim1 - sim0, next_run_worker_lines=d.total,
        workers_logged_lost_master=c.lost_master_logs(),
    )  # fmt: skip
    check(sorted(m1.workers) == sorted(c.workers), f"restarted master's workers {sorted(m1.workers)}")
    check(m2.failures == 0, f"{m2.failures} failures in the next run: {dict(m2.errors)}")
    check(m2.requests == sim1 - sim0, f"master counts {m2.requests}, the sim received {sim1 - sim0}")
    check(m2.requests == d.total, f"master counts {m2.requests}, the workers logged {d.total}")


PHASES = [
    ("sim outage", sim_outage),
    ("network cut", network_cut),
    ("worker kill", worker_kill),
    ("master restart", master_restart),
]


def main() -> int:
    LOGS.mkdir(parents=True, exist_ok=True)
    c = Cluster()

    def on_signal(sig, _frame):
        raise SystemExit(128 + sig)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    only = [p.strip() for p in os.environ.get("FAULTS_PHASES", "").split(",") if p.strip()]
    phases = [(n, f) for n, f in PHASES if not only or n in only]
    if not phases:
        log(f"FAULTS_PHASES={only} names none of {[n for n, _ in PHASES]}")
        return 2
    results = {}
    try:
        log(f"cluster {c.label}: {IMAGE}, {WORKERS} workers, {USERS} users")
        c.create()
        if phases[0][1] is not sim_outage:  # it takes over the autostarted run
            wait_for("the autostarted run", c.running_with_all, 120)
            c.stop_and_settle()
        for name, phase in phases:
            log(f"--- {name}")
            report: dict = {}
            try:
                phase(c, report)
                results[name] = {"ok": True, **report}
                log(f"{name}: OK {json.dumps(report)}")
            except (Failed, OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
                results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}", **report}
                log(f"{name}: FAIL: {e} {json.dumps(report)}")
                break  # the cluster is in an unknown state: later phases would not say much
    except Failed as e:
        results["setup"] = {"ok": False, "error": str(e)}
        log(f"FAIL: {e}")
    finally:
        (LOGS / "report.json").write_text(json.dumps(results, indent=1))
        c.cleanup()
    ok = len(results) == len(phases) and all(r["ok"] for r in results.values())
    log(f"{'OK' if ok else 'FAIL'}: {sum(r['ok'] for r in results.values())}/{len(phases)} faults passed; "
        f"report {LOGS / 'report.json'}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
