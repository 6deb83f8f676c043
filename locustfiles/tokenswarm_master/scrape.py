"""The server-side view: polls the target's Prometheus endpoint during a run.

Why on the master: the charts page already shows the client's view (TTFT,
output tokens/s) on the master's clock; the server's own numbers (requests
running and waiting, KV-cache usage, prompt and generation tokens) on the
same timeline show *why* TTFT moved (a queue forming, the cache filling).
Workers are not involved, so the scrape costs the target one small request
a second however many workers there are.

Opt-in with `--llm-server-metrics-url` (a URL, or a path such as `/metrics`
taken relative to `--host`). One GET about once a second, each bounded: at
most `MAX_BYTES` of body (a larger answer is an error, not a truncated
parse) and `TIMEOUT_S` for the whole exchange. A failed scrape is counted
and logged once per distinct error; the run goes on.

Series names understood (the first one present wins for each field):

| field | vLLM | SGLang | llama.cpp |
|---|---|---|---|
| running | vllm:num_requests_running | sglang:num_running_reqs | llamacpp:requests_processing |
| waiting | vllm:num_requests_waiting | sglang:num_queue_reqs | llamacpp:requests_deferred |
| kv_cache_usage (0..1) | vllm:kv_cache_usage_perc, vllm:gpu_cache_usage_perc | sglang:token_usage | llamacpp:kv_cache_usage_ratio |
| prompt_tokens_total | vllm:prompt_tokens_total | sglang:prompt_tokens_total | llamacpp:prompt_tokens_total |
| generation_tokens_total | vllm:generation_tokens_total | sglang:generation_tokens_total | llamacpp:tokens_predicted_total |

Several series of one name (one per model, engine or rank label) are
summed, except the cache usage, which is their mean. Token rates are the
counters' change between consecutive scrapes over the time between them
(none after a counter reset). Redirects are not followed (as workers
follow none): a 3xx is a failed scrape. Pure parsing and the point arithmetic have no
I/O and are unit-tested; `Scraper.run` is the gevent loop.
"""

import logging
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque

import gevent

logger = logging.getLogger("tokenswarm")

#: Largest /metrics body read; vLLM's, histograms included, is some 100 KiB.
MAX_BYTES = 4 << 20
#: The whole exchange (connect, headers, body) of one scrape.
TIMEOUT_S = 2.0
INTERVAL_S = 1.0
READ_CHUNK = 64 << 10

NAMES = {
    "running": ("vllm:num_requests_running", "sglang:num_running_reqs", "llamacpp:requests_processing"),
    "waiting": ("vllm:num_requests_waiting", "sglang:num_queue_reqs", "llamacpp:requests_deferred"),
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage",
                       "llamacpp:kv_cache_usage_ratio"),
    "prompt_tokens_total": ("vllm:prompt_tokens_total", "sglang:prompt_tokens_total", "llamacpp:prompt_tokens_total"),
    "generation_tokens_total": ("vllm:generation_tokens_total", "sglang:generation_tokens_total",
                                "llamacpp:tokens_predicted_total"),
}
FIELDS = tuple(NAMES)
MEAN_FIELDS = ("kv_cache_usage",)
COUNTERS = (("prompt_tokens_total", "prompt_tps"), ("generation_tokens_total", "generation_tps"))
WANTED = frozenset(n for names in NAMES.values() for n in names)


class ScrapeError(Exception):
    """One scrape failed (the message says how); the loop carries on."""


def _series_name_end(line):
    """Index where the metric name of a sample line ends."""
    for i, c in enumerate(line):
        if c in "{ \t":
            return i
    return len(line)


def _skip_labels(line, i):
    """Index just after the `{...}` starting at `i` (quotes and escapes
    honoured, so a `}` inside a label value does not end it); -1 if open."""
    quoted, escaped = False, False
    for j in range(i + 1, len(line)):
        c = line[j]
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == "}" and not quoted:
            return j + 1
    return -1


def parse_text(text, wanted=WANTED):
    """The samples of the `wanted` series in a Prometheus text body, as
    {name: [value, ...]} (one value per label set). Comments, other series
    and malformed lines are skipped; values are floats (NaN and ±Inf kept
    as such, callers drop non-finite ones)."""
    out = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        end = _series_name_end(line)
        name = line[:end]
        if name not in wanted:
            continue
        rest = end
        if rest < len(line) and line[rest] == "{":
            rest = _skip_labels(line, rest)
            if rest < 0:
                continue
        fields = line[rest:].split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        out.setdefault(name, []).append(value)
    return out


def server_kind(name):
    """'vllm', 'sglang' or 'llamacpp' from a series name."""
    return name.split(":", 1)[0]


def reading(samples):
    """One scrape's fields from `parse_text` output: {field: value or None,
    "server": kind or None}."""
    point = {"server": None}
    for field, names in NAMES.items():
        point[field] = None
        for name in names:
            values = [v for v in samples.get(name, ()) if math.isfinite(v)]
            if values:
                total = sum(values)
                point[field] = total / len(values) if field in MEAN_FIELDS else total
                point["server"] = point["server"] or server_kind(name)
                break
    return point


def with_rates(point, previous):
    """`point` plus prompt_tps / generation_tps from the previous point's
    counters (None for the first point, after a gap, or a counter reset)."""
    out = dict(point)
    for counter, rate in COUNTERS:
        out[rate] = None
        if previous is None:
            continue
        now, before = point.get(counter), previous.get(counter)
        dt = point["time"] - previous["time"]
        if now is not None and before is not None and dt > 0 and now >= before:
            out[rate] = round((now - before) / dt, 3)
    return out


def resolve_url(url, host):
    """The scrape URL from the option's value: a full http(s) URL, or a path
    (`/metrics`) relative to `--host`. Raises ValueError naming the option."""
    text = str(url or "").strip()
    if text.startswith("/"):
        if not host:
            raise ValueError(f"option `--llm-server-metrics-url` has value {url!r}, a path; "
                             "a path needs --host (or give a full http:// URL)")
        base = urllib.parse.urlsplit(str(host))
        text = urllib.parse.urlunsplit((base.scheme, base.netloc, text, "", ""))
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"option `--llm-server-metrics-url` has value {url!r}; "
                         "use an http:// or https:// URL, or a path such as /metrics (relative to --host)")
    return text


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Turns every redirect into an HTTPError (3xx) instead of following it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def display_url(url):
    """`url` without user info and query, for logs and pages (a token in a
    URL must not end up in a log)."""
    parts = urllib.parse.urlsplit(str(url))
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def fetch(url, timeout_s=TIMEOUT_S, max_bytes=MAX_BYTES):
    """GETs `url`: the body as text, at most `max_bytes`, within `timeout_s`
    in total (a server that trickles its answer is cut at the deadline)."""
    try:
        with gevent.Timeout(timeout_s, ScrapeError(f"no complete answer within {timeout_s:g} s")):
            req = urllib.request.Request(url, headers={"Accept": "text/plain"})
            with _OPENER.open(req, timeout=timeout_s) as r:
                chunks, size = [], 0
                while True:
                    chunk = r.read(READ_CHUNK)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > max_bytes:
                        raise ScrapeError(f"answer larger than {max_bytes} bytes")
                    chunks.append(chunk)
    except urllib.error.HTTPError as e:
        raise ScrapeError(f"HTTP {e.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ScrapeError(str(getattr(e, "reason", e))) from None
    return b"".join(chunks).decode("utf-8", errors="replace")


class Scraper:
    """The scraped history of one run (one point per successful scrape)."""

    def __init__(self, url, interval_s=INTERVAL_S, fetch_text=None, history_len=86_400):
        self.url = url
        self.interval_s = interval_s
        self._fetch = fetch_text or fetch
        self.history = deque(maxlen=history_len)
        self.failures = 0
        self.last_error = None
        self._logged = set()

    def reset(self):
        self.history.clear()
        self.failures, self.last_error, self._logged = 0, None, set()

    def scrape_once(self, now=None):
        """One scrape; returns the point appended, or None when it failed
        (counted, logged once per distinct error) or named no known series."""
        try:
            text = self._fetch(self.url)
        except ScrapeError as e:
            return self._failed(str(e))
        point = reading(parse_text(text))
        if point["server"] is None:
            return self._failed("no vLLM, SGLang or llama.cpp series in the answer")
        point["time"] = round(time.time() if now is None else now, 3)
        previous = self.history[-1] if self.history else None
        if previous is not None and point["time"] - previous["time"] > 10 * self.interval_s:
            previous = None  # a gap (paused run): no rate across it
        point = with_rates(point, previous)
        self.history.append(point)
        return point

    def _failed(self, reason):
        self.failures += 1
        self.last_error = reason
        if reason not in self._logged and len(self._logged) < 20:
            self._logged.add(reason)
            logger.warning(f"tokenswarm: scraping {display_url(self.url)} failed: {reason} (the run goes on)")
        return None

    def run(self, active):
        """Scrapes every `interval_s` while `active()`; returns when it is not."""
        while active():
            started = time.monotonic()
            self.scrape_once()
            gevent.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    def summary(self):
        """For the JSON document: where, how many points, the last error."""
        return {"url": display_url(self.url), "points": len(self.history), "failures": self.failures,
                "last_error": self.last_error,
                "server": next((p["server"] for p in reversed(self.history) if p.get("server")), None)}
