"""A minimal, fair Locust LLM user: the Python baseline of worker_vs_python.py.

It does what one tokenswarm request does, with nothing extra: POST the same
OpenAI chat body (same prompt length in words, a unique leading part per
request, ``max_tokens`` = 64, ``stream: true``, usage included), read the
SSE stream line by line as it arrives, parse every ``data:`` chunk as JSON,
count content deltas as output tokens, and take the time to first token.

Locust's table gets one entry per request (name ``Chat``, response time =
send to end of stream, like tokenswarm); TTFT and the token count are
accumulated in a small histogram and sent to the master with each stats
report (``report_to_master``), the way tokenswarm ships its ``llm`` report.

Run as a worker only: ``locust -f bench/locustfile_python.py --worker``.
Environment: BENCH_PROMPT_TOKENS (default 32), BENCH_OUTPUT_TOKENS (64).
"""

import itertools
import json
import os
import time

from locust import events, task
from locust.contrib.fasthttp import FastHttpUser

PROMPT_TOKENS = int(os.environ.get("BENCH_PROMPT_TOKENS", "32"))
OUTPUT_TOKENS = int(os.environ.get("BENCH_OUTPUT_TOKENS", "64"))
_WORDS = [chr(ord("A") + i % 26) for i in range(PROMPT_TOKENS - 1)]
_HEADERS = {"content-type": "application/json", "accept": "text/event-stream"}
_seq = itertools.count()

# Deltas since the last report: TTFT histogram (ms, 2 significant digits).
_ttft_hist = {}
_totals = {"output_tokens": 0, "requests": 0}


def _body():
    # One unique leading word (per-request part), then fixed letters: the
    # prompt has PROMPT_TOKENS whitespace-separated words.
    prompt = "r%d %s" % (next(_seq), " ".join(_WORDS))
    return json.dumps(
        {
            "model": "bench",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": OUTPUT_TOKENS,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )


class Chat(FastHttpUser):
    @task
    def chat(self):
        start = time.perf_counter()
        ttft = None
        tokens = 0
        done = False
        with self.client.post(
            "/v1/chat/completions",
            data=_body(),
            headers=_HEADERS,
            stream=True,
            catch_response=True,
            name="Chat",
        ) as resp:
            if resp.status_code != 200:
                resp.failure("HTTP %s" % resp.status_code)
                return
            raw = resp._response  # geventhttpclient response: reads as bytes arrive
            while True:
                line = raw.readline(b"\n")
                if not line:
                    break
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    done = True  # read on to the end so the connection is reused
                    continue
                chunk = json.loads(payload)
                for choice in chunk.get("choices") or ():
                    if (choice.get("delta") or {}).get("content"):
                        if ttft is None:
                            ttft = time.perf_counter() - start
                        tokens += 1
            # Response time = send to end of stream, as tokenswarm reports it.
            resp.request_meta["response_time"] = (time.perf_counter() - start) * 1000
            if not done:
                resp.failure("stream ended without [DONE]")
                return
        if ttft is not None:
            key = float("%.2g" % (ttft * 1000))
            _ttft_hist[key] = _ttft_hist.get(key, 0) + 1
        _totals["output_tokens"] += tokens
        _totals["requests"] += 1


@events.report_to_master.add_listener
def report(client_id, data, **_kwargs):
    data["python_llm"] = {"ttft_ms_hist": dict(_ttft_hist), **_totals}
    _ttft_hist.clear()
    _totals["output_tokens"] = 0
    _totals["requests"] = 0
