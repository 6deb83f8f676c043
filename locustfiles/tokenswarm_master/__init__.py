"""Master-side support for tokenswarm's locustfile (`locustfiles/llm.py`).

The Locust master never sends LLM traffic itself; Rust workers do. This
package covers what the master has to do on their behalf:

- `config`: turn the scenarios YAML plus command-line / web-form overrides
  into the `TestConfig` document the workers validate (`src/scenario/`, via `schema.json`),
  with errors that name the option or field, the value and what is valid.
- `aggregate`: merge the `llm` key of every worker stats report (deltas)
  into per-scenario and total aggregates, and keep a per-second history.
- `render`: turn aggregates into table rows, CSV, JSON, console text, an
  SVG charts page and a self-contained HTML report.
- `capacity`: the capacity-search load shape and its step judgement
  (`--llm-capacity`).
- `scrape`: poll the target's Prometheus endpoint (vLLM, SGLang,
  llama.cpp names) during a run (`--llm-server-metrics-url`).
- `render_server`: CSV and charts of the capacity curve and the scrape.
- `plugin`: wire all of that into Locust's events and web UI.

It depends only on Locust's public events and web-UI extension keys, not on
`StatsEntry` internals, which change between Locust versions.
"""
