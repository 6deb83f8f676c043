"""The master validates with the schema the workers own (issue 11 item 1):
every document of tests/fixtures/schema_corpus gets, from
`tokenswarm_master.config`, the verdict and the exact message its header
states; tests/config_schema.rs holds the Rust worker to the same headers.
Valid open-loop documents plan the stated number of requests (the token
estimate's arithmetic, mirrored from `RateSchedule::total`)."""

import glob
import json
import math
import os

import pytest
import yaml

from conftest import REPO
from tokenswarm_master import config

CORPUS = sorted(glob.glob(os.path.join(REPO, "tests", "fixtures", "schema_corpus", "*.yaml")))


def header(text, key):
    for line in text.splitlines():
        if line.startswith(f"# {key}: "):
            return line[len(f"# {key}: "):]
    return None


def test_the_corpus_is_there():
    assert len(CORPUS) >= 50


@pytest.mark.parametrize("path", CORPUS, ids=[os.path.basename(p)[:-5] for p in CORPUS])
def test_corpus_verdict_and_message(path):
    text = open(path, encoding="utf-8").read()
    expect = header(text, "expect")
    assert expect is not None, "no `# expect:` line"
    doc = yaml.safe_load(text)
    if expect == "valid":
        cfg = config.validate(doc)
        planned = header(text, "planned_requests")
        if planned is not None:
            assert math.isclose(config.planned_requests(cfg["load"]["phases"]), float(planned), rel_tol=1e-9)
        json.dumps(cfg)  # what goes to workers is plain data
    else:
        with pytest.raises(config.ConfigError) as e:
            config.validate(doc)
        assert str(e.value) == expect


def test_defaults_are_filled_and_numbers_sent_as_floats():
    cfg = config.validate({"scenarios": [{"name": "A", "provider": "openai-chat", "model": "m", "prompt_length": 10,
                                          "output_length": 5, "wait": {"kind": "constant", "seconds": 2}}],
                           "load": {"phases": [{"rate": 5, "duration_s": 10}]}})
    s = cfg["scenarios"][0]
    assert (s["weight"], s["prefix_length"], s["headers"]) == (1, 0, {})
    assert s["wait"] == {"kind": "constant", "seconds": 2.0} and isinstance(s["wait"]["seconds"], float)
    assert cfg["load"]["phases"] == [{"rate": 5.0, "duration_s": 10.0, "ramp_s": 0.0}]
    assert cfg["load"]["mode"] == "closed" and cfg["load"]["max_in_flight"] == 10000
    assert cfg["timeouts"] == {"connect_s": 10.0, "first_token_s": 120.0, "total_s": 600.0}
    assert cfg["safety"]["error_window"] == 30 and cfg["v"] == 1


def test_name_rule_is_the_schemas():
    assert config.is_valid_name("Chat_2") and config.is_valid_name("_x")
    for bad in ("2chat", "chat-short", "Café", "a\n", "", None):
        assert not config.is_valid_name(bad), bad
