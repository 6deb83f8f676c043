"""Renders the LLM tab and the charts page in headless Chromium (Debian's
`chromium`, installed with apt when absent) with data from fake workers,
checks the rendered DOM holds the merged numbers, and saves screenshots to
tests/artifacts/ (gitignored) for a human to look at."""

import json
import os
import shutil
import subprocess

import pytest

from conftest import ARTIFACTS, http_get, http_post, wait_for, wait_for_url


def chromium():
    """Path of chromium, installing Debian's package if needed."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    try:
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=True, timeout=600, capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"chromium is not installed and `apt-get install -y chromium` failed: {e}")
    return shutil.which("chromium") or pytest.skip("chromium missing after apt-get install")


def browse(binary, url, tmp_path, screenshot=None):
    """Loads `url` headless; returns the DOM after scripts ran (virtual time)."""
    common = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chromium-profile'}", "--no-first-run",
              "--window-size=1500,1100", "--virtual-time-budget=6000"]
    dom = subprocess.run(common + ["--dump-dom", url], check=True, timeout=60, capture_output=True, text=True)
    if screenshot:
        subprocess.run(common + ["--run-all-compositor-stages-before-draw", f"--screenshot={screenshot}", url],
                       check=True, timeout=60, capture_output=True)
    return dom.stdout


def test_llm_tab_and_charts_render_with_merged_numbers(procs, tmp_path):
    binary = chromium()
    os.makedirs(ARTIFACTS, exist_ok=True)
    master = procs.master("--expect-workers", "2")
    wait_for_url(master.url + "/")
    for i in (0, 1):
        procs.worker(master, i, "--warn", "ChatShort:output tokens 20 % off target", "--interval", "0.3")
    wait_for(lambda: len(json.loads(http_get(master.url + "/stats/requests"))["workers"]) == 2, what="workers")
    assert json.loads(http_post(master.url + "/swarm", {"user_count": 4, "spawn_rate": 4}))["success"]
    doc = wait_for(lambda: (d := json.loads(http_get(master.url + "/llm/json")))["total"]["requests"] == 14 and d,
                   what="all reports merged")
    wait_for(lambda: "ChatShort p50" in http_get(master.url + "/llm/charts"), what="chart history")

    ttft = doc["scenarios"]["ChatShort"]["metrics"]["ttft"]
    # The UI renders after its first poll; on a loaded machine that can miss
    # the virtual-time budget, so load the page again (bounded) until it has.
    for _attempt in range(4):
        tab = browse(binary, master.url + "/?tab=llm", tmp_path, os.path.join(ARTIFACTS, "llm_tab.png"))
        if f"{ttft['max_ms']:,.2f}" in tab:
            break
    assert "ChatShort" in tab and "TTFT" in tab
    assert f"{ttft['p50_ms']:,.2f}" in tab and f"{ttft['max_ms']:,.2f}" in tab  # 80.00, 1,200.00
    assert "output tokens 20 % off target" in tab
    assert f"{doc['total']['input_tokens']:,}" in tab

    charts = browse(binary, master.url + "/llm/charts?refresh=0", tmp_path, os.path.join(ARTIFACTS, "llm_charts.png"))
    assert charts.count("<svg") == 3 and "ChatShort p50" in charts and "Output tokens/s" in charts
    assert f"{doc['total']['output_tokens']}" in charts

    reports = browse(binary, master.url + "/?tab=reports", tmp_path, os.path.join(ARTIFACTS, "download_tab.png"))
    assert "Download LLM metrics CSV" in reports and "LLM charts" in reports
    for name in ("llm_tab.png", "llm_charts.png"):
        assert os.path.getsize(os.path.join(ARTIFACTS, name)) > 10_000
