"""The master's side of multi-turn sessions: the open-loop token estimate
counts an arrival of a session scenario as all its turns, each resending
the conversation (`Scenario::target_prompt_tokens` in src/scenario/mod.rs);
the cache ratios the LLM table and CSV show (of input, of a perfect cache)."""

from tokenswarm_master import config, render


def doc(session):
    s = {"name": "C", "provider": "openai-chat", "model": "m", "prompt_length": 40, "prefix_length": 16,
         "output_length": 20}
    if session is not None:
        s["session"] = session
    return config.validate({"scenarios": [s], "load": {"mode": "open", "phases": [{"rate": 2, "duration_s": 5}]}})


def test_token_estimate_counts_every_turn_and_the_growing_conversation():
    # 10 arrivals; turn k sends 40 + (k - 1) * (20 answer + 24 new message)
    assert config.token_estimate(doc({"turns": 3, "turn_length": 24})) == (30, 10 * (40 + 84 + 128), 10 * 60)
    # without turn_length the new message is prompt_length - prefix_length
    assert config.token_estimate(doc({"turns": 2})) == (20, 10 * (40 + 40 + 20 + 24), 10 * 40)
    assert config.token_estimate(doc(None)) == (10, 400, 200)


def test_prefix_cache_row_and_ratios():
    assert render.cache_ratios({"cached_tokens": 48, "input_tokens": 96, "ideal_cached_tokens": 60}) == (50.0, 80.0)
    assert render.cache_ratios({"cached_tokens": 0, "input_tokens": 0}) == (None, None)
