"""Unit tests of the pure parts of issue 15.3/15.4: the Prometheus text
parser and the vLLM / SGLang / llama.cpp name mapping (`scrape`), the
capacity ladder and its step judgement (`capacity`), and their CSV/SVG
rendering (`render_server`). No sockets, no Locust runner."""

import gevent
import pytest

from tokenswarm_master import capacity, scrape
from tokenswarm_master.config import OptionError
from tokenswarm_master.render_server import capacity_csv_text, capacity_svgs, page_extras, server_csv_text, tab_rows

VLLM = """# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="a",engine="0"} 3.0
vllm:num_requests_running{model_name="a",engine="1"} 2.0
vllm:num_requests_waiting{model_name="a"} 4.0
vllm:kv_cache_usage_perc{model_name="a",engine="0"} 0.5
vllm:kv_cache_usage_perc{model_name="a",engine="1"} 0.25
vllm:gpu_cache_usage_perc{model_name="a"} 0.99
vllm:prompt_tokens_total{model_name="a"} 1.5e+03
vllm:prompt_tokens_created{model_name="a"} 1.7e+09
vllm:generation_tokens_total{model_name="a"} 900
vllm:time_to_first_token_seconds_bucket{le="0.5",model_name="a"} 7
"""

SGLANG = """sglang:num_running_reqs{model_name="m"} 7
sglang:num_queue_reqs{model_name="m"} 1
sglang:token_usage{model_name="m"} 0.28
sglang:prompt_tokens_total{model_name="m"} 8.128902e+06
sglang:generation_tokens_total{model_name="m"} 7.557572e+06
"""

LLAMACPP = """# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
llamacpp:requests_deferred 5
llamacpp:kv_cache_usage_ratio 0.125
llamacpp:prompt_tokens_total 33065
llamacpp:tokens_predicted_total 7801
"""


def test_vllm_series_sum_across_label_sets_and_cache_usage_is_their_mean():
    """Two engines: running adds up, KV usage is the mean, the newer
    kv_cache_usage_perc wins over the older gpu_ name, and _created,
    histogram and unknown series are not mistaken for the counters."""
    p = scrape.reading(scrape.parse_text(VLLM))
    assert p == {"server": "vllm", "running": 5.0, "waiting": 4.0, "kv_cache_usage": 0.375,
                 "prompt_tokens_total": 1500.0, "generation_tokens_total": 900.0}


def test_older_vllm_cache_name_is_used_when_the_newer_is_absent():
    text = "vllm:gpu_cache_usage_perc{model_name=\"a\"} 0.6\nvllm:num_requests_running 1\n"
    p = scrape.reading(scrape.parse_text(text))
    assert p["kv_cache_usage"] == 0.6 and p["running"] == 1.0 and p["waiting"] is None


@pytest.mark.parametrize(("text", "expected"), [
    (SGLANG, {"server": "sglang", "running": 7.0, "waiting": 1.0, "kv_cache_usage": 0.28,
              "prompt_tokens_total": 8128902.0, "generation_tokens_total": 7557572.0}),
    (LLAMACPP, {"server": "llamacpp", "running": 2.0, "waiting": 5.0, "kv_cache_usage": 0.125,
                "prompt_tokens_total": 33065.0, "generation_tokens_total": 7801.0}),
])
def test_sglang_and_llamacpp_names_map_to_the_same_fields(text, expected):
    assert scrape.reading(scrape.parse_text(text)) == expected


def test_parser_honours_quoted_braces_and_skips_malformed_lines():
    """A `}` or space inside a label value does not end the labels; lines
    without a number, an unclosed label set and NaN values are skipped."""
    text = ('vllm:num_requests_running{model_name="we}ird name \\" x"} 6 1700000000000\n'
            'vllm:num_requests_waiting{model_name="open 3\n'
            'vllm:num_requests_waiting garbage\n'
            'vllm:kv_cache_usage_perc NaN\n')
    p = scrape.reading(scrape.parse_text(text))
    assert p["running"] == 6.0 and p["waiting"] is None and p["kv_cache_usage"] is None


def test_rates_come_from_counter_deltas_and_not_across_a_reset():
    a = {"time": 100.0, "prompt_tokens_total": 1000.0, "generation_tokens_total": 50.0}
    b = {"time": 102.0, "prompt_tokens_total": 1600.0, "generation_tokens_total": 10.0}
    r = scrape.with_rates(b, a)
    assert r["prompt_tps"] == 300.0 and r["generation_tps"] is None  # generation counter reset
    assert scrape.with_rates(a, None)["prompt_tps"] is None


def test_scraper_counts_failures_and_keeps_going():
    """A failing fetch is counted and yields no point; an answer with no
    known series is a failure too; good answers become points with rates."""
    answers = iter([scrape.ScrapeError("HTTP 503"), "nothing: 1\n", VLLM,
                    VLLM.replace("1.5e+03", "2.5e+03")])

    def fetch(_url):
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    s = scrape.Scraper("http://u:secret@127.0.0.1:9/metrics?token=x", fetch_text=fetch)
    assert s.scrape_once(now=10.0) is None and s.scrape_once(now=11.0) is None
    assert s.failures == 2 and "no vLLM" in s.last_error
    s.scrape_once(now=12.0)
    p = s.scrape_once(now=13.0)
    assert p["prompt_tps"] == 1000.0 and len(s.history) == 2
    assert s.summary()["url"] == "http://127.0.0.1:9/metrics"  # no credentials, no query


def test_resolve_url_takes_paths_relative_to_host_and_refuses_other_schemes():
    assert scrape.resolve_url("/metrics", "http://10.0.0.1:8000/v1") == "http://10.0.0.1:8000/metrics"
    assert scrape.resolve_url("http://a:9/m", None) == "http://a:9/m"
    for bad in ("ftp://a/m", "metrics", "http://"):
        with pytest.raises(ValueError, match="--llm-server-metrics-url"):
            scrape.resolve_url(bad, "http://h")
    with pytest.raises(ValueError, match="needs --host"):
        scrape.resolve_url("/metrics", None)


def test_fetch_refuses_an_oversized_answer_a_slow_one_and_a_redirect():
    """The body bound, the whole-exchange deadline and no redirects, against
    loopback servers that send too much, never finish, or redirect."""
    from gevent.server import StreamServer

    def big(sock, _addr):
        sock.recv(4096)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n" + b"x" * 300000)
        sock.close()

    def slow(sock, _addr):
        sock.recv(4096)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nvllm:num_requests_running 1\n")
        gevent.sleep(5)
        sock.close()

    def redirect(sock, _addr):
        sock.recv(4096)
        sock.sendall(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/elsewhere\r\nContent-Length: 0\r\n\r\n")
        sock.close()

    for handler, limit, match in ((big, 100_000, "larger than 100000"), (slow, 10_000, "no complete answer"),
                                  (redirect, 10_000, "HTTP 302")):
        server = StreamServer(("127.0.0.1", 0), handler)
        server.start()
        try:
            with pytest.raises(scrape.ScrapeError, match=match):
                scrape.fetch(f"http://127.0.0.1:{server.server_port}/metrics", timeout_s=0.5, max_bytes=limit)
        finally:
            server.stop()


# ------------------------------------------------------------------ capacity


def test_spec_ladder_and_messages():
    s = capacity.parse_spec("2:2:8:10")
    assert s.values("closed") == [2, 4, 6, 8] and s.settle_s == 2.5 and s.attainment == 0.95
    assert capacity.parse_spec("0.5:0.5:2:6:1", "0.9").values("open") == [0.5, 1.0, 1.5, 2.0]
    assert capacity.ladder_phases(capacity.parse_spec("10:10:20:5"))[1] == {"rate": 20.0, "duration_s": 5.0,
                                                                            "ramp_s": 0.0}
    for text, attainment, match in (("2:2:8", None, "START:STEP:MAX:HOLD_S"), ("2:0:8:10", None, "> 0"),
                                    ("8:1:2:10", None, "at least START"), ("1:1:5:10:8.5", None, "at least 2 s"),
                                    ("1:x:5:10", None, "STEP"), ("1:1:5:10", "1.5", "fraction"),
                                    ("1:1:5000:10", None, "at most 1000 steps")):
        with pytest.raises(OptionError, match=match) as e:
            capacity.parse_spec(text, attainment)
        assert "option" in str(e.value)
    with pytest.raises(OptionError, match="whole numbers"):
        capacity.parse_spec("1.5:1:5:10").values("closed")
    # the shortest measurable step keeps a whole second however it is cut
    tight = capacity.Search(capacity.parse_spec("1:1:2:3:1"), "closed")
    for t0 in (0.0, 0.01, 0.5, 0.99):
        tight.begin(t0)
        first, end = tight.window(0)
        assert end - first >= 1 and first >= t0 + 1 and end <= t0 + 3, t0


def report(requests, good):
    """A worker report with per-second requests and good counts."""
    return {"stats_total": {"num_reqs_per_sec": dict(requests)},
            "llm": {"v": 1, "scenarios": {"A": {"good_per_sec": {str(k): v for k, v in good.items()}}}}}


def test_search_judges_steps_on_their_windows_and_stops_at_the_first_miss():
    """Steps of 10 s, 2 s settling: step 1's window is seconds 1002..1009.
    Completions in the settling seconds do not count; a step is judged only
    `grace_s` after its window; step 2 holds at 19/20 = 95 %; step 3 misses
    at 15/16 and ends the search, which reports step 2."""
    s = capacity.Search(capacity.parse_spec("2:2:8:10:2"), "closed", grace_s=5)
    s.begin(1000.0)
    assert [s.step_index(t) for t in (1000.0, 1009.9, 1010.0, 1031.0)] == [0, 0, 1, 3]
    # step 1: failures while settling (ignored), then all good
    s.fold(report({1000: 5, 1001: 5, **{t: 2 for t in range(1002, 1010)}},
                  {1000: 0, 1001: 0, **{t: 2 for t in range(1002, 1010)}}))
    assert not s.poll(1014.9) and s.steps == []
    assert not s.poll(1015.0) and s.steps[0]["attainment"] == 1.0 and s.steps[0]["requests"] == 16
    # step 2 arrives in two reports (a late one too): 19 of 20 good
    s.fold(report({t: 2 for t in range(1012, 1018)}, {t: 2 for t in range(1012, 1018)}))
    s.fold(report({1018: 4, 1019: 4}, {1018: 4, 1019: 3}))
    assert not s.poll(1025.0)
    assert s.steps[1]["attainment"] == 0.95 and s.steps[1]["held"] and s.steps[1]["goodput_rps"] == 19 / 8
    s.fold(report({t: 2 for t in range(1022, 1030)}, {**{t: 2 for t in range(1022, 1030)}, 1029: 1}))
    assert s.poll(1035.0)
    r = s.result()
    assert r["held"]["value"] == 4 and r["failed"]["value"] == 6 and r["failed"]["attainment"] == 0.9375
    assert len(r["curve"]) == 3 and r["steps_held"] == 2


def test_search_verdict_highest_held_step_and_goodput():
    s = capacity.Search(capacity.parse_spec("1:1:4:10:2", "0.9"), "closed", grace_s=0)
    s.begin(0.0)
    for step, (req, good) in enumerate(((4, 4), (8, 8), (12, 11), (16, 8))):
        base = step * 10
        s.fold(report({base + t: req for t in range(2, 10)}, {base + t: good for t in range(2, 10)}))
    assert s.poll(100.0)
    r = s.result()
    assert [c["held"] for c in r["curve"]] == [True, True, True, False]  # 11/12 = 91.7 % >= 90 %
    assert r["held"]["value"] == 3 and r["held"]["goodput_rps"] == 11.0 and r["failed"]["value"] == 4
    assert "step 4 (4 users) did not hold: attainment 50.0% < 90.0%" in r["reason"]
    assert capacity.summary_line(r).startswith("capacity: 3 users held (attainment 91.7%, goodput 11 req/s)")
    csv = capacity_csv_text(r).splitlines()
    assert csv[0].startswith("Step,Value,Unit") and len(csv) == 6 and csv[-1].startswith("result,3,users")
    svgs = capacity_svgs(r)
    assert len(svgs) == 2 and "4 users" in svgs[0] and "attainment %" in svgs[0]


def test_a_step_without_completions_does_not_hold_and_final_poll_skips_a_cut_step():
    s = capacity.Search(capacity.parse_spec("1:1:3:10:2"), "open", grace_s=5)
    s.begin(0.0)
    s.fold(report({t: 3 for t in range(2, 10)}, {t: 3 for t in range(2, 10)}))
    assert s.poll(25.0)
    assert not s.steps[1]["held"] and s.steps[1]["requests"] == 0 and "no request completed" in s.reason
    cut = capacity.Search(capacity.parse_spec("1:1:3:10:2"), "open", grace_s=5)
    cut.begin(0.0)
    cut.fold(report({t: 3 for t in range(2, 10)}, {t: 3 for t in range(2, 10)}))
    assert cut.poll(14.0, final=True)
    assert len(cut.steps) == 1 and cut.result()["held"]["value"] == 1.0 and "ended during step 2" in cut.reason


def test_every_step_holding_says_raise_max():
    s = capacity.Search(capacity.parse_spec("1:1:2:4:1"), "closed", grace_s=0)
    s.begin(0.0)
    s.fold(report({t: 1 for t in range(0, 8)}, {t: 1 for t in range(0, 8)}))
    assert s.poll(10.0) and "every step held" in s.reason and s.result()["held"]["value"] == 2


def test_server_csv_and_shared_time_axis():
    pts = [{"time": 100.0, "server": "vllm", "running": 2.0, "waiting": 0.0, "kv_cache_usage": 0.5,
            "prompt_tokens_total": 10.0, "generation_tokens_total": 5.0, "prompt_tps": None, "generation_tps": None}]
    lines = server_csv_text(pts).splitlines()
    assert lines[0].startswith("Timestamp,Server,Running,Waiting,KV cache usage")
    assert lines[1] == "100.0,vllm,2.0,0.0,0.5,10.0,5.0,,"
    x_range, html = page_extras([{"time": 90}], pts, {"url": "http://h/metrics", "server": "vllm", "failures": 0})
    assert x_range == (90, 100.0) and "Server: running" in html and "KV cache usage" in html


def test_tab_rows_show_the_verdict_and_the_scrape_after_the_other_rows():
    s = capacity.Search(capacity.parse_spec("1:1:2:4:1"), "closed", grace_s=0)
    s.begin(0.0)
    s.fold(report({t: 1 for t in range(0, 8)}, {t: 1 for t in range(0, 8)}))
    s.poll(10.0)
    doc = {"capacity": s.result(), "server_metrics": {"url": "http://h/metrics", "points": 3, "server": "vllm",
                                                       "failures": 1, "last_error": "HTTP 503"}}
    rows = tab_rows(doc, 7)
    assert [r["name"] for r in rows] == ["007 Total Capacity", "008 Total Server metrics"]
    assert rows[0]["value"].startswith("2 users held, goodput 1 req/s") and "2 of 2 steps" in rows[0]["value"]
    assert "3 scrapes of http://h/metrics (vllm), 1 failed: HTTP 503" == rows[1]["value"]
    assert tab_rows({}, 0) == []
