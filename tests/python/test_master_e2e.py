"""End-to-end tests: a real `locust` master running locustfiles/llm.py and
fake Python workers (fakeworker.py) sending deterministic `llm` reports."""

import csv
import io
import json
import time

import llm_reports

from conftest import http_get, http_post, log_text, received, wait_for, wait_for_url

EXPECTED_REQUESTS = 14  # all windows of llm_reports, both workers


def base_now():
    return int(time.time()) - 5


def spawn_config(worker):
    spawns = received(worker, "spawn")
    assert spawns, "the fake worker got no spawn"
    return spawns[-1]["data"]["parsed_options"]["tokenswarm_config"]


def csv_rows(text):
    return {row["Scenario"]: row for row in csv.DictReader(io.StringIO(text))}


def check_csv_against_expected(rows, base):
    want = llm_reports.expected(base)
    for name, key in (("ChatShort", "ChatShort"), ("ChatLong", "ChatLong"), ("Aggregated", "Total")):
        row, w = rows[name], want[key]
        for field in ("requests", "failures", "good", "input_tokens", "output_tokens", "cached_tokens"):
            assert int(row[field]) == w[field], (name, field)
        for m in ("ttft", "tpot", "itl", "e2e"):
            for stat in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "min_ms"):
                assert float(row[f"{m}_{stat}"]) == w["metrics"][m][stat], (name, m, stat)
        # Whole-run rates divide by the real run's length (wall clock), so
        # only their consistency is checked here; test_aggregate pins them.
        assert 0 < float(row["out_tps_total"]) <= w["output_tokens"]
        assert float(row["goodput_pct"]) == w["goodput_pct"]


def test_headless_run_writes_files_and_ships_config(procs, tmp_path):
    base = base_now()
    master = procs.master("--headless", "-u", "4", "-r", "4", "-t", "5s", "--expect-workers", "2",
                          "--csv", str(tmp_path / "run"), "--csv-full-history", "--html", str(tmp_path / "rep.html"),
                          "--llm-slo-ttft-ms", "150", web=False)
    workers = [procs.worker(master, i, "--warn", "ChatShort:output tokens 20 % off target", base=base)
               for i in (0, 1)]
    assert master.wait(timeout=40) == 0, log_text(master)[-3000:]
    log = log_text(master)

    cfg = spawn_config(workers[0])
    assert cfg["cluster_users"] == 4
    assert [s["name"] for s in cfg["scenarios"]] == ["ChatShort", "ChatLong"]
    assert cfg["scenarios"][0]["prompt_length"] == 512 and cfg["scenarios"][1]["weight"] == 1
    assert cfg["slo"] == {"ttft_ms": 150.0, "tpot_ms": 100.0}
    assert set(cfg) == {"v", "scenarios", "load", "slo", "safety", "timeouts", "cluster_users", "worker_count"}
    assert cfg["load"]["mode"] == "closed" and cfg["safety"]["warmup"] is True

    rows = csv_rows((tmp_path / "run_llm.csv").read_text())
    check_csv_against_expected(rows, base)
    history = (tmp_path / "run_llm_stats_history.csv").read_text().splitlines()
    assert history[0].startswith("Timestamp,User Count,Scenario") and len(history) > 3
    # Locust's own request counts: one entry per LLM request, nothing more
    stats = csv_rows_by_name((tmp_path / "run_stats.csv").read_text())
    assert int(stats["Aggregated"]["Request Count"]) == EXPECTED_REQUESTS
    assert set(stats) == {"ChatShort", "ChatLong", "Aggregated"}
    report = (tmp_path / "rep_llm.html").read_text()
    assert "1,200.00" in report and "<svg" in report and "http" not in report.split("<body>")[1].replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    assert "LLM metrics (ms)" in log and "ChatShort                    TTFT" in log
    assert log.count("tokenswarm warning from worker") == 1


def csv_rows_by_name(text):
    return {row["Name"]: row for row in csv.DictReader(io.StringIO(text))}


def test_web_mode_tab_json_polling_rows_and_files(procs, tmp_path):
    base = base_now()
    master = procs.master("--autostart", "-u", "4", "-r", "4", "-t", "8s", "--autoquit", "2", "--expect-workers", "2",
                          "--csv", str(tmp_path / "run"), "--html", str(tmp_path / "rep.html"))
    wait_for_url(master.url + "/")
    workers = [procs.worker(master, i, *(("--warn", "ChatLong:prompt tokens off") if i else ()), base=base)
               for i in (0, 1)]
    doc = wait_for(lambda: (d := json.loads(http_get(master.url + "/llm/json")))["total"]["requests"]
                   == EXPECTED_REQUESTS and d, what="all reports merged")
    want = llm_reports.expected(base)
    assert doc["scenarios"]["ChatShort"]["metrics"]["ttft"]["p90_ms"] == want["ChatShort"]["metrics"]["ttft"]["p90_ms"]
    assert doc["total"]["output_tokens"] == want["Total"]["output_tokens"]
    assert doc["warnings"] == [{"scenario": "ChatLong", "message": "prompt tokens off", "worker": doc["warnings"][0]["worker"]}]

    page = http_get(master.url + "/?tab=llm")
    args = json.loads(page.split("window.templateArgs = ")[1].split("\n")[0].rstrip(";").strip())
    assert args["extended_tabs"] == [{"title": "LLM", "key": "llm"}]
    assert {f["href"] for f in args["extended_csv_files"]} >= {"./llm/csv", "./llm/charts"}

    polled = json.loads(http_get(master.url + "/stats/requests"))
    rows = polled["extended_stats"][0]["data"]
    assert polled["extended_stats"][0]["key"] == "llm"
    ttft = next(r for r in rows if r["scenario"] == "ChatShort" and r["metric"] == "TTFT")
    assert ttft["p50"] == "80.00" and ttft["count"] == 8
    assert any(r["metric"] == "Warning" and r["value"] == "prompt tokens off" for r in rows)
    total = next(s for s in polled["stats"] if s["name"] == "Aggregated")
    assert total["num_requests"] == EXPECTED_REQUESTS, "LLM metrics must not inflate Locust's counts"
    assert {s["name"] for s in polled["stats"]} == {"ChatShort", "ChatLong", "Aggregated"}

    live_csv = http_get(master.url + "/llm/csv")
    check_csv_against_expected(csv_rows(live_csv), base)
    charts = wait_for(lambda: (c := http_get(master.url + "/llm/charts")) and "ChatShort p50" in c and c,
                      what="chart history")
    assert charts.count("<svg") == 3
    assert "<script" not in charts and "src=" not in charts, "nothing fetched: works offline"

    assert master.wait(timeout=40) == 0, log_text(master)[-3000:]
    check_csv_against_expected(csv_rows((tmp_path / "run_llm.csv").read_text()), base)
    final = csv_rows((tmp_path / "run_llm.csv").read_text())
    for name, row in csv_rows(live_csv).items():
        same = {k: v for k, v in row.items() if k != "out_tps_current"}
        assert same == {k: v for k, v in final[name].items() if k != "out_tps_current"}, name
    report = (tmp_path / "rep_llm.html").read_text()
    assert "prompt tokens off" in report and f"{want['Total']['output_tokens']}" in report
    assert spawn_config(workers[1])["cluster_users"] == 4


def test_abort_in_headless_mode_quits_with_exit_code_1(procs, tmp_path):
    master = procs.master("--headless", "-u", "2", "-r", "2", "-t", "60s", "--expect-workers", "1", web=False)
    procs.worker(master, 0, "--abort", "error limit: 12 of the last 30 requests failed")
    t0 = time.monotonic()
    assert master.wait(timeout=40) == 1
    assert time.monotonic() - t0 < 30, "the abort must end the run well before -t 60s"
    log = log_text(master)
    assert "run ABORTED by worker" in log and "error limit: 12 of the last 30 requests failed" in log
    assert "ABORTED: error limit" in log  # console summary


def test_abort_in_web_mode_stops_the_run_and_shows_the_reason(procs, tmp_path):
    master = procs.master("--expect-workers", "1")
    wait_for_url(master.url + "/")
    procs.worker(master, 0, "--abort", "warm-up failed: ChatShort got HTTP 404")
    wait_for(lambda: json.loads(http_get(master.url + "/stats/requests"))["workers"], what="worker connected")
    assert json.loads(http_post(master.url + "/swarm", {"user_count": 2, "spawn_rate": 2}))["success"]
    doc = wait_for(lambda: (d := json.loads(http_get(master.url + "/llm/json")))["abort"] and d, what="abort")
    assert doc["abort"]["reason"] == "warm-up failed: ChatShort got HTTP 404"
    wait_for(lambda: json.loads(http_get(master.url + "/stats/requests"))["state"] == "stopped", what="stopped")
    rows = json.loads(http_get(master.url + "/stats/requests"))["extended_stats"][0]["data"]
    assert rows[0]["metric"] == "ABORTED" and "HTTP 404" in rows[0]["value"]
    # "Reset stats" clears the LLM numbers as it clears Locust's
    wait_for(lambda: json.loads(http_get(master.url + "/llm/json"))["total"]["requests"] > 0, what="some data")
    http_post(master.url + "/stats/reset", {})
    assert json.loads(http_get(master.url + "/llm/json"))["total"]["requests"] == 0


def test_open_loop_over_budget_refuses_to_start(procs, tmp_path):
    master = procs.master("--headless", "-u", "2", "-t", "20s", "--expect-workers", "1", "--llm-mode", "open",
                          "--llm-rate-phases", "10:10", "--llm-output-token-budget", "1000", web=False)
    worker = procs.worker(master, 0)
    assert master.wait(timeout=30) == 1
    log = log_text(master)
    # 100 requests, 3/4 ChatShort (64 tokens) + 1/4 ChatLong (256 tokens)
    assert "token estimate: 100 requests, 89600 input tokens, 11200 output tokens" in log
    assert "refusing to start" in log and "--llm-output-token-budget" in log
    assert received(worker, "spawn") == []


def test_invalid_options_name_option_value_and_valid_values(procs, tmp_path):
    master = procs.master("--headless", "-u", "1", "-t", "20s", "--expect-workers", "1", "--llm-arrival", "bursty",
                          web=False)
    procs.worker(master, 0)
    assert master.wait(timeout=30) == 1
    log = log_text(master)
    assert "--llm-arrival" in log and "'bursty'" in log and "constant, poisson, gamma" in log


def test_autostart_with_invalid_options_exits_1(procs, tmp_path):
    master = procs.master("--autostart", "-u", "1", "-t", "20s", "--expect-workers", "1", "--llm-rate-phases", "fast")
    procs.worker(master, 0)
    assert master.wait(timeout=30) == 1
    assert "--llm-rate-phases" in log_text(master) and "rate:duration_s" in log_text(master)


def test_options_also_come_from_locust_env_vars(procs, tmp_path):
    master = procs.master("--headless", "-u", "1", "-t", "20s", "--expect-workers", "1", web=False,
                          env={"LOCUST_LLM_MODE": "sideways"})
    procs.worker(master, 0)
    assert master.wait(timeout=30) == 1
    assert "--llm-mode" in log_text(master) and "'sideways'" in log_text(master)


def test_web_form_rejects_bad_values_and_rescale_updates_cluster_users(procs, tmp_path):
    master = procs.master("--expect-workers", "1")
    wait_for_url(master.url + "/")
    worker = procs.worker(master, 0, "--no-reports")
    wait_for(lambda: json.loads(http_get(master.url + "/stats/requests"))["workers"], what="worker connected")
    page = http_get(master.url + "/")
    assert "llm_rate_phases" in page and "llm_slo_ttft_ms" in page, "options show in the start form"
    bad = json.loads(http_post(master.url + "/swarm", {"user_count": 2, "spawn_rate": 2, "llm_mode": "sideways"}))
    assert not bad["success"] and "--llm-mode" in bad["message"] and "closed, open" in bad["message"]
    ok = json.loads(http_post(master.url + "/swarm", {"user_count": 2, "spawn_rate": 10, "llm_slo_e2e_ms": "900"}))
    assert ok["success"]
    wait_for(lambda: received(worker, "spawn"), what="spawn")
    cfg = spawn_config(worker)
    assert cfg["cluster_users"] == 2 and cfg["slo"]["e2e_ms"] == 900.0
    wait_for(lambda: json.loads(http_get(master.url + "/stats/requests"))["state"] == "running", what="running")
    assert json.loads(http_post(master.url + "/swarm", {"user_count": 5, "spawn_rate": 10}))["success"]
    wait_for(lambda: spawn_config(worker)["cluster_users"] == 5, what="rescaled spawn")
