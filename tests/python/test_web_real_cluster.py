"""The LLM tab with real parts: the built-in simulator, a real master and
two real tokenswarm workers (not fake ones). Headless Chromium renders the
tab while the run goes on; the DOM must show the numbers the master merged
from the workers' reports, and a screenshot is saved to tests/artifacts/."""

import json
import os

from test_web_screenshots import browse, chromium

from conftest import ARTIFACTS, REPO, free_port, http_get, http_post, wait_for, wait_for_url

BINARY = os.environ.get("TOKENSWARM_BIN") or os.path.join(REPO, "target", "release", "tokenswarm")


def test_llm_tab_renders_numbers_merged_from_real_workers(procs, tmp_path):
    binary = chromium()
    os.makedirs(ARTIFACTS, exist_ok=True)
    sim_port = free_port()
    procs.start("sim", [BINARY, "sim", "--port", str(sim_port), "--ttft-ms", "30", "--tpot-ms", "5"])
    wait_for_url(f"http://127.0.0.1:{sim_port}/v1/models")
    master = procs.master("-H", f"http://127.0.0.1:{sim_port}", "--expect-workers", "2")
    wait_for_url(master.url + "/")
    for i in (0, 1):
        procs.start(f"rust-worker{i}", [BINARY, "worker", "--master-port", str(master.master_port)])
    wait_for(lambda: len(json.loads(http_get(master.url + "/stats/requests"))["workers"]) == 2, what="workers")
    assert json.loads(http_post(master.url + "/swarm", {"user_count": 6, "spawn_rate": 6}))["success"]
    doc = wait_for(lambda: (d := json.loads(http_get(master.url + "/llm/json")))["total"]["requests"] >= 30 and d,
                   timeout=60, what="30 merged requests")

    # The run goes on while the page renders, so compare with the numbers of
    # the same moment: fetch the document again right after each render.
    for _attempt in range(4):
        tab = browse(binary, master.url + "/?tab=llm", tmp_path, os.path.join(ARTIFACTS, "llm_tab_real.png"))
        doc = json.loads(http_get(master.url + "/llm/json"))
        if "ChatShort" in tab and "TTFT" in tab and "Goodput" in tab:
            break
    assert "ChatShort" in tab and "TTFT" in tab, tab[-2000:]
    ttft = doc["scenarios"]["ChatShort"]["metrics"]["ttft"]
    # TTFT min is stable once seen: the simulator's 30 ms base plus prefill.
    assert 30.0 <= ttft["min_ms"] < 100.0, ttft
    assert "Tokens in / out / cached" in tab
    charts = browse(binary, master.url + "/llm/charts?refresh=0", tmp_path,
                    os.path.join(ARTIFACTS, "llm_charts_real.png"))
    assert "ChatShort p50" in charts and "Output tokens/s" in charts
    http_post(master.url + "/stop", {})
    stats = json.loads(http_get(master.url + "/stats/requests"))
    names = [s["name"] for s in stats["stats"]]
    assert set(names) <= {"ChatShort", "ChatLong", "Aggregated"}, names
