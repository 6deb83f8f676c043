"""The capacity search started from the web UI (issue 15.3): the simulator,
a real master with `--llm-capacity` (so llm.py defines the load shape) and a
real tokenswarm worker. The start button runs the shape; the search stops
the run by itself at the step above the simulator's slots, and the live
routes (`/llm/capacity`, its CSV, the LLM tab rows) show the verdict."""

import csv
import io
import json
import os

from conftest import REPO, free_port, http_get, http_post, wait_for, wait_for_url

BINARY = os.environ.get("TOKENSWARM_BIN") or os.path.join(REPO, "target", "release", "tokenswarm")
SLOTS = 2


def test_web_started_capacity_search_stops_itself_above_the_slots(procs, tmp_path):
    """Proves: the start form runs CapacityShape; with 2 slots the search
    holds 2 users, fails at 3 and stops the run itself (state `stopped`,
    before the 4-user step); /llm/capacity, its CSV and the tab agree."""
    sim_port = free_port()
    procs.start("sim", [BINARY, "sim", "--port", str(sim_port), "--slots", str(SLOTS), "--ttft-ms", "10",
                        "--tpot-ms", "5", "--batch-slowdown", "0"])
    wait_for_url(f"http://127.0.0.1:{sim_port}/v1/models")
    scenarios = tmp_path / "scenarios.yaml"
    scenarios.write_text("scenarios:\n  - {name: Chat, provider: openai-chat, model: tokenswarm-sim, "
                         "prompt_length: 64, output_length: 100}\n")
    master = procs.master("-H", f"http://127.0.0.1:{sim_port}", "--llm-scenarios", str(scenarios),
                          "--llm-capacity", "1:1:4:5:1", "--llm-slo-ttft-ms", "80")
    wait_for_url(master.url + "/")
    procs.start("rust-worker", [BINARY, "worker", "--master-port", str(master.master_port)])
    wait_for(lambda: len(json.loads(http_get(master.url + "/stats/requests"))["workers"]) == 1, what="worker")
    started = json.loads(http_post(master.url + "/swarm", {}))
    assert started["success"] and "CapacityShape" in started["message"], started

    def finished():
        cap = json.loads(http_get(master.url + "/llm/capacity"))
        state = json.loads(http_get(master.url + "/stats/requests"))["state"]
        return cap if cap and cap["done"] and state == "stopped" else None

    cap = wait_for(finished, timeout=75, interval=0.5, what="the search to end the run")
    assert cap["held"]["value"] == SLOTS and cap["failed"]["value"] == SLOTS + 1, cap
    assert [s["value"] for s in cap["curve"]] == [1, 2, 3] and cap["unit"] == "users"
    rows = list(csv.reader(io.StringIO(http_get(master.url + "/llm/capacity/csv"))))
    assert rows[0][:2] == ["Step", "Value"] and rows[-1][:3] == ["result", str(SLOTS), "users"], rows
    tab = json.loads(http_get(master.url + "/stats/requests"))["extended_stats"][0]["data"]
    verdict = [r["value"] for r in tab if r["metric"] == "Capacity"]
    assert verdict and verdict[0].startswith(f"{SLOTS} users held"), tab
