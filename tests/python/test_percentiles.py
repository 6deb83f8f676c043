"""The master's merge reads the same percentiles as the Rust run aggregate
from the same histograms (issue 14.1).

tests/fixtures/percentiles/cases.json holds distributions as workers send
them and the exact percentiles of their merge (rational arithmetic in the
fixture's generator); tests/percentiles.rs checks the Rust side against the
same file.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from tokenswarm_master.aggregate import Dist

FIXTURE_DIR = os.path.join(REPO, "tests", "fixtures", "percentiles")
CASES = json.load(open(os.path.join(FIXTURE_DIR, "cases.json"), encoding="utf-8"))["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_merged_dist_gives_the_fixture_percentiles(case):
    """Dist.merge + Dist.percentile give every expected value, with the
    fraction computed as a caller computes it from a configured percent
    (p / 100) and in either merge order."""
    for reports in (case["reports"], list(reversed(case["reports"]))):
        d = Dist()
        for r in reports:
            d.merge(r)
        for e in case["expected"]:
            assert d.percentile(e["p"] / 100) == e["us"], (case["name"], e["p"])


def test_fixture_covers_the_float_traps():
    """The cases that made float ranks wrong stay in the fixture."""
    names = {c["name"] for c in CASES}
    assert {"hundred_whole_ms", "thousand_whole_ms", "huge_counts", "bucket_above_max"} <= names


def test_regenerating_the_fixture_gives_the_committed_file(tmp_path):
    """cases.json is exactly what generate.py writes (no hand edits, and the
    generator is deterministic)."""
    out = tmp_path / "cases.json"
    subprocess.run([sys.executable, os.path.join(FIXTURE_DIR, "generate.py"), "--out", str(out)],
                   check=True, timeout=60)
    with open(os.path.join(FIXTURE_DIR, "cases.json"), "rb") as f:
        assert out.read_bytes() == f.read()
