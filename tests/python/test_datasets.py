"""The master's side of dataset prompts (`config.ship_datasets`): the file's
text is shipped in `dataset.content` (relative paths resolved against the
scenarios file), and a file that is missing, over the shipping limit or not
UTF-8 is refused before the run with an error naming the scenario, the field
and the path; `shared_storage` ships nothing."""

import types

import pytest

from tokenswarm_master import config

YAML = """scenarios:
  - {name: D, provider: openai-chat, model: m, prompt_length: 20, output_length: 4,
     dataset: {path: %s%s}}
"""


def build(tmp_path, path, extra=""):
    scenarios = tmp_path / "scenarios.yaml"
    scenarios.write_text(YAML % (path, extra))
    return config.build(str(scenarios), types.SimpleNamespace())


def test_the_file_text_is_shipped_from_beside_the_scenarios_file(tmp_path, monkeypatch):
    text = '{"prompt": "caf\u00e9 \\"q\\""}\n'
    (tmp_path / "p.jsonl").write_text(text, encoding="utf-8")
    monkeypatch.chdir("/")
    cfg = build(tmp_path, "p.jsonl")
    d = cfg["scenarios"][0]["dataset"]
    assert d["content"] == text
    # defaults filled in as workers read them
    assert (d["format"], d["seed"], d["output"], d["shared_storage"]) == ("jsonl", 0, {"kind": "fixed"}, False)


def test_shared_storage_ships_nothing(tmp_path):
    cfg = build(tmp_path, "/nowhere/p.jsonl", ", shared_storage: true")
    assert "content" not in cfg["scenarios"][0]["dataset"]


@pytest.mark.parametrize("case", ["missing", "too big", "not utf-8"])
def test_unusable_files_are_refused_naming_the_path(tmp_path, case):
    f = tmp_path / "p.jsonl"
    if case == "too big":
        f.write_bytes(b"x" * (config.MAX_SHIPPED_DATASET_BYTES + 1))
    elif case == "not utf-8":
        f.write_bytes(b'{"prompt": "\xff"}\n')
    with pytest.raises(config.ConfigError) as e:
        build(tmp_path, "p.jsonl")
    msg = str(e.value)
    assert msg.startswith('scenario "D": field `dataset.path` has value "p.jsonl"; '), msg
    want = {"missing": "cannot be read", "too big": "shared_storage: true", "not utf-8": "not UTF-8 text (byte 12)"}
    assert want[case] in msg, msg


def test_the_worker_parser_accepts_a_shipped_dataset(tmp_path):
    import json
    import os
    import subprocess

    from conftest import REPO

    binary = os.environ.get("TOKENSWARM_BIN") or os.path.join(REPO, "target", "release", "tokenswarm")
    if not os.access(binary, os.X_OK):
        pytest.skip(f"no worker binary at {binary}")
    (tmp_path / "p.jsonl").write_text('{"prompt": "a b", "output_length": 3}\n')
    cfg = build(tmp_path, "p.jsonl", ", output: {kind: dataset}")
    sent = tmp_path / "sent.yaml"
    sent.write_text(json.dumps(cfg))
    result = subprocess.run([binary, "check", str(sent)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
