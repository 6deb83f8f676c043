"""Master locustfile for the tokenswarm benchmarks (bench/README.md).

One user class, ``Chat``; the master never runs it. At ``test_start`` the
test definition goes to the workers in ``parsed_options.tokenswarm_config``
(docs/contracts.md section 3). The same master serves the Python-worker runs
of worker_vs_python.py, whose worker ignores the config and runs its own
``Chat`` class (bench/locustfile_python.py).

Environment (all optional):
  BENCH_PROMPT_TOKENS   prompt length in words (default 32)
  BENCH_OUTPUT_TOKENS   output length, max_tokens (default 64)
  BENCH_LOAD            JSON for the ``load`` section (default: closed loop)
  BENCH_LLM_OUT         file to write the summed ``llm`` worker reports to
                        (request counts and the lag/ttft histograms), as JSON
"""

import json
import os

from locust import User, events, task


class Chat(User):
    @task
    def noop(self):
        pass


def _config(environment):
    load = json.loads(os.environ.get("BENCH_LOAD") or '{"mode": "closed"}')
    return {
        "v": 1,
        "cluster_users": environment.runner.target_user_count,
        "scenarios": [
            {
                "name": "Chat",
                "provider": "openai-chat",
                "model": "bench",
                "prompt_length": int(os.environ.get("BENCH_PROMPT_TOKENS", "32")),
                "prefix_length": 0,
                "output_length": int(os.environ.get("BENCH_OUTPUT_TOKENS", "64")),
                "weight": 1,
            }
        ],
        "load": load,
        "safety": {"warmup": False, "error_limit": 0},
    }


@events.test_start.add_listener
def send_config(environment, **_kwargs):
    environment.parsed_options.tokenswarm_config = _config(environment)


# Sum of the workers' `llm` reports: plain counters are added, metric
# histograms merged bucket by bucket.
_llm = {"reports": 0, "scenarios": {}}


def _merge_metric(dst, src):
    for k in ("count", "sum"):
        dst[k] = dst.get(k, 0) + src.get(k, 0)
    if "min" in src:
        dst["min"] = min(dst.get("min", src["min"]), src["min"])
    if "max" in src:
        dst["max"] = max(dst.get("max", src["max"]), src["max"])
    hist = dst.setdefault("hist", {})
    for bucket, n in (src.get("hist") or {}).items():
        hist[str(bucket)] = hist.get(str(bucket), 0) + n


@events.worker_report.add_listener
def on_worker_report(client_id, data, **_kwargs):
    py = data.get("python_llm")  # from bench/locustfile_python.py workers
    if isinstance(py, dict):
        acc = _llm.setdefault("python", {"ttft_ms_hist": {}})
        for k in ("requests", "output_tokens"):
            acc[k] = acc.get(k, 0) + py.get(k, 0)
        for bucket, n in (py.get("ttft_ms_hist") or {}).items():
            acc["ttft_ms_hist"][str(bucket)] = acc["ttft_ms_hist"].get(str(bucket), 0) + n
    llm = data.get("llm")
    if not isinstance(llm, dict):
        return
    _llm["reports"] += 1
    for name, s in (llm.get("scenarios") or {}).items():
        acc = _llm["scenarios"].setdefault(name, {"metrics": {}})
        for k, v in s.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                acc[k] = acc.get(k, 0) + v
        for metric, m in (s.get("metrics") or {}).items():
            _merge_metric(acc["metrics"].setdefault(metric, {}), m)


@events.quitting.add_listener
def write_llm(environment, **_kwargs):
    path = os.environ.get("BENCH_LLM_OUT")
    if path:
        with open(path, "w") as f:
            json.dump(_llm, f)
