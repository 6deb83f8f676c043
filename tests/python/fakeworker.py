"""A fake tokenswarm worker in Python, speaking Locust's worker protocol.

It stands in for the Rust worker in tests of the master locustfile: it
registers (client_ready), sends heartbeats, answers spawn with spawning /
spawning_complete, and sends `stats` messages carrying real Locust request
entries (built with Locust's own RequestStats, one request per LLM request)
plus the deterministic `llm` reports of `llm_reports.py`. Every message it
receives from the master is appended to --out as one JSON line, so tests
can check what reached the worker (e.g. spawn.parsed_options).

    python fakeworker.py --port 5557 --worker 0 --out msgs.jsonl
"""

import argparse
import json
import os
import sys
import time

import gevent
import gevent.event
from locust import __version__
from locust.rpc import Message, zmqrpc
from locust.stats import RequestStats

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llm_reports  # noqa: E402


class FakeWorker:
    def __init__(self, args):
        self.args = args
        self.node_id = f"fake_{args.worker}_{os.getpid()}"
        self.client = zmqrpc.Client("127.0.0.1", args.port, self.node_id)
        self.reports = llm_reports.worker_reports(args.worker, args.base or int(time.time()) - 5) if args.send_reports else []
        self.state = "ready"
        self.user_classes_count = {}
        self.sent_first = False
        self.done = gevent.event.Event()

    def send(self, msg_type, data=None):
        self.client.send(Message(msg_type, data, self.node_id))

    def record(self, msg):
        with open(self.args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps({"type": msg.type, "data": msg.data}, default=str) + "\n")

    def stats_message(self, llm):
        """The five keys the master's listeners need, plus `llm`."""
        stats = RequestStats()
        for name, r in (llm or {}).get("scenarios", {}).items():
            e2e = r["metrics"]["e2e"]
            avg_ms = e2e["sum"] / e2e["count"] / 1000 if e2e["count"] else 1
            for _ in range(r["requests"]):
                stats.log_request("POST", name, avg_ms, 100)
        data = {
            "stats": stats.serialize_stats(),
            "stats_total": stats.total.get_stripped_report(),
            "errors": stats.serialize_errors(),
            "user_classes_count": self.user_classes_count,
            "user_count": sum(self.user_classes_count.values()),
        }
        if llm is not None:
            data["llm"] = llm
        return data

    def heartbeats(self):
        while True:
            self.send("heartbeat", {"state": self.state, "current_cpu_usage": 1.0, "current_memory_usage": 1000})
            gevent.sleep(1.0)

    def reporter(self):
        while True:
            gevent.sleep(self.args.interval)
            if self.state != "running":
                continue
            llm = self.reports.pop(0) if self.reports else None
            self.send("stats", self.stats_message(llm))
            if llm is not None and not self.sent_first:
                self.sent_first = True
                gevent.spawn(self.custom_messages)

    def custom_messages(self):
        if self.args.warn:
            scenario, text = self.args.warn.split(":", 1)
            for _ in range(2):  # the master must show it once
                self.send("tokenswarm_warning", {"scenario": scenario, "message": text})
        if self.args.abort:
            gevent.sleep(0.5)
            self.send("tokenswarm_abort", {"reason": self.args.abort})

    def listen(self):
        while True:
            msg = self.client.recv()
            self.record(msg)
            if msg.type == "spawn":
                self.send("spawning")
                self.user_classes_count = msg.data["user_classes_count"]
                self.state = "running"
                self.send("spawning_complete", {"user_classes_count": self.user_classes_count,
                                                "user_count": sum(self.user_classes_count.values())})
            elif msg.type == "stop":
                self.state = "ready"
                self.user_classes_count = {}
                self.send("client_stopped")
                self.send("client_ready", __version__)
            elif msg.type == "quit":
                self.send("stats", self.stats_message(None))  # the final flush
                gevent.sleep(0.2)
                self.done.set()
                return

    def run(self):
        self.send("client_ready", __version__)
        greenlets = [gevent.spawn(f) for f in (self.listen, self.heartbeats, self.reporter)]
        self.done.wait(timeout=self.args.max_seconds)
        gevent.killall(greenlets, block=False)
        self.client.close()


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--worker", type=int, default=0, help="which report set of llm_reports.py to send")
    p.add_argument("--out", required=True, help="JSON-lines file of messages received from the master")
    p.add_argument("--base", type=int, default=0, help="first Unix second of the reports (default: now - 5)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between stats messages")
    p.add_argument("--no-reports", dest="send_reports", action="store_false")
    p.add_argument("--warn", default="", help="SCENARIO:MESSAGE, sent (twice) after the first report")
    p.add_argument("--abort", default="", help="reason of a tokenswarm_abort sent after the first report")
    p.add_argument("--max-seconds", type=float, default=60.0, help="exit after this long no matter what")
    FakeWorker(p.parse_args()).run()


if __name__ == "__main__":
    main()
