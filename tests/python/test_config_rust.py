"""Cross-checks the master's config against the workers' own parser: the
documents `tokenswarm_master.config` builds (what goes to workers in
`spawn.parsed_options.tokenswarm_config`, minus `cluster_users`) must pass
`tokenswarm check` (src/scenario/, deny_unknown_fields). Uses
$TOKENSWARM_BIN (scripts/test sets it) or the release build in target/."""

import json
import os
import subprocess
import types

import pytest

from conftest import REPO
from tokenswarm_master import config

BINARY = os.environ.get("TOKENSWARM_BIN") or os.path.join(REPO, "target", "release", "tokenswarm")

OVERRIDES = {
    "defaults": {},
    "open loop with everything set": {
        "llm_mode": "open", "llm_rate_phases": "200:30,400:30:5", "llm_arrival": "gamma", "llm_burstiness": "0.5",
        "llm_max_in_flight": "256", "llm_slo_ttft_ms": "500", "llm_slo_tpot_ms": "50", "llm_slo_e2e_ms": "20000",
        "llm_error_limit": "0.2", "llm_warmup": "false", "llm_input_token_budget": "10000000",
        "llm_output_token_budget": "1000000",
    },
}


@pytest.mark.skipif(not os.access(BINARY, os.X_OK), reason=f"no worker binary at {BINARY} (run cargo build)")
@pytest.mark.parametrize("scenarios", ["scenarios.yaml", "scenarios-mixed.yaml"])
@pytest.mark.parametrize("case", list(OVERRIDES))
def test_worker_parser_accepts_what_the_master_sends(scenarios, case, tmp_path):
    cfg = config.build(os.path.join(REPO, "locustfiles", scenarios), types.SimpleNamespace(**OVERRIDES[case]))
    path = tmp_path / "sent.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    result = subprocess.run([BINARY, "check", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
