"""The simulator against the official SDKs: every stream and body must parse
without error, and usage / cached tokens / reasoning must come through.

Starts the binary from $TOKENSWARM_BIN or target/release/tokenswarm (built with
`cargo build --release` when missing) on a free port.
"""

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import anthropic
import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]
WORDS = "A B C D E F G H I J K L M N O P Q R S T U V W X Y Z".split()


def _binary() -> str:
    env = os.environ.get("TOKENSWARM_BIN")
    if env:
        return env
    path = ROOT / "target" / "release" / "tokenswarm"
    if not path.exists():
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    return str(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sim():
    port = _free_port()
    proc = subprocess.Popen(
        [_binary(), "sim", "--port", str(port), "--ttft-ms", "2", "--tpot-ms", "0.2", "--seed", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(base + "/v1/models", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode()) from None
            time.sleep(0.05)
    yield base
    proc.terminate()
    assert proc.wait(timeout=10) == 0


def _prompt(n: int, seed: int) -> str:
    return " ".join(WORDS[(i * 7 + seed) % 26] for i in range(n))


def _oa(base):
    return openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)


def _an(base):
    return anthropic.Anthropic(base_url=base, api_key="x", max_retries=0)


def test_openai_chat_stream_usage(sim):
    stream = _oa(sim).chat.completions.create(
        model="m",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": _prompt(40, 1)}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
            sim_obj = chunk.model_extra["sim"]
    assert len(text.split()) == 12
    assert finish == "length"
    assert usage.prompt_tokens == 42 and usage.completion_tokens == 12 and usage.total_tokens == 54
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert sim_obj["output_tokens"] == 12 and len(sim_obj["token_offsets_us"]) == 12


def test_openai_chat_cached_prefix(sim):
    prefix = _prompt(64, 3)
    client = _oa(sim)
    cached = []
    for i in range(2):
        stream = client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": f"{prefix} unique{i} tail"}],
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            if chunk.usage:
                cached.append(chunk.usage.prompt_tokens_details.cached_tokens)
    assert cached == [0, 64]


def test_openai_chat_reasoning(sim):
    stream = _oa(sim).chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": _prompt(10, 2)}],
        max_tokens=30,
        reasoning_effort="low",
        stream=True,
        stream_options={"include_usage": True},
    )
    reasoning, text, usage = "", "", None
    for chunk in stream:
        if chunk.choices:
            d = chunk.choices[0].delta
            reasoning += (d.model_extra or {}).get("reasoning_content") or ""
            text += d.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert len(reasoning.split()) == 16 and len(text.split()) == 14
    assert usage.completion_tokens == 30
    assert usage.completion_tokens_details.reasoning_tokens == 16


def test_openai_chat_non_stream(sim):
    r = _oa(sim).chat.completions.create(
        model="m", messages=[{"role": "user", "content": _prompt(20, 4)}], max_completion_tokens=5
    )
    assert r.choices[0].message.content.split() == ["tok"] * 5
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == 20 and r.usage.completion_tokens == 5
    assert r.model_extra["sim"]["output_tokens"] == 5


def test_openai_completions_stream_and_not(sim):
    client = _oa(sim)
    stream = client.completions.create(
        model="m", prompt=_prompt(30, 5), max_tokens=7, stream=True, stream_options={"include_usage": True}
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].text
        if chunk.usage:
            usage = chunk.usage
    assert len(text.split()) == 7 and usage.prompt_tokens == 30 and usage.completion_tokens == 7
    r = client.completions.create(model="m", prompt=_prompt(30, 6), max_tokens=3)
    assert r.choices[0].text.split() == ["tok"] * 3 and r.usage.completion_tokens == 3


def test_openai_models(sim):
    assert [m.id for m in _oa(sim).models.list()] == ["tokenswarm-sim"]


def test_anthropic_stream_usage_and_cache(sim):
    client = _an(sim)
    prefix = _prompt(48, 7)
    finals = []
    for i in range(2):
        with client.messages.stream(
            model="m",
            system="be brief",
            max_tokens=9,
            messages=[{"role": "user", "content": f"{prefix} unique{i}"}],
        ) as stream:
            text = "".join(stream.text_stream)
            msg = stream.get_final_message()
        assert len(text.split()) == 9
        finals.append(msg)
    for m in finals:
        assert m.stop_reason == "max_tokens"
        assert m.usage.output_tokens == 9
        assert m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0) == 51
    assert finals[0].usage.cache_read_input_tokens == 0
    assert finals[1].usage.cache_read_input_tokens == 48


def test_anthropic_thinking(sim):
    with _an(sim).messages.stream(
        model="m",
        max_tokens=40,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": _prompt(12, 8)}],
    ) as stream:
        for _ in stream:
            pass
        msg = stream.get_final_message()
    kinds = [b.type for b in msg.content]
    assert kinds == ["thinking", "text"]
    assert len(msg.content[0].thinking.split()) == 16
    assert msg.content[0].signature
    assert len(msg.content[1].text.split()) == 24
    assert msg.usage.output_tokens == 40


def test_anthropic_non_stream(sim):
    m = _an(sim).messages.create(
        model="m", max_tokens=6, messages=[{"role": "user", "content": [{"type": "text", "text": _prompt(15, 9)}]}]
    )
    assert m.content[0].text.split() == ["tok"] * 6
    assert m.usage.output_tokens == 6 and m.usage.input_tokens == 15
    assert m.stop_reason == "max_tokens"


def test_sdk_errors_are_typed(sim):
    with pytest.raises(openai.BadRequestError) as e:
        _oa(sim).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], max_tokens=0)
    assert "max_tokens" in str(e.value)
    with pytest.raises(anthropic.BadRequestError) as e:
        _an(sim).messages.create(model="m", max_tokens=10000, messages=[{"role": "user", "content": "A " * 30000}])
    assert "too long" in str(e.value)
