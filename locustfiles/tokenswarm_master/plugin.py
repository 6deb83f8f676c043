"""Wires the aggregator, config builder and renderers into Locust's master.

Why each hook:
- `init_command_line_parser`: the --llm-* options, shown in the start form.
- `runner.start` is wrapped (on the runner instance, no Locust patching):
  it is the one place every start passes through (CLI, web form, shape
  class, rescaling), so it refuses a run whose config is invalid or over
  budget, and refreshes `cluster_users` before each dispatch. Locust builds
  each `spawn` message from `vars(parsed_options)` at send time
  (`MasterRunner.start`), so the update reaches every worker.
- `test_start` builds the config and sets `parsed_options.tokenswarm_config`
  (contracts §3); it also clears the previous run's LLM numbers.
- `worker_report` merges `data["llm"]` and caps the failure rows of
  `data["errors"]` per scenario (`aggregate.FailureRows`) before Locust
  merges them (this listener is registered at import, before the runner
  registers Locust's own); `reset_stats` (and --reset-stats after ramp-up)
  clears both, like Locust's own stats.
- The exit code: a run whose only failures are of kind `cancelled` (in the
  merged `failure_kinds` of the `llm` reports) exits 0, not Locust's 1.
- Custom messages `tokenswarm_warning` / `tokenswarm_abort` from workers.
- Files are written on `quit`, which fires after `runner.quit()` has waited
  for the workers' final stats reports, so they hold the whole run.
- Capacity search (`capacity.py`): `--llm-capacity` checked in `preflight`
  (an SLO is required; in open loop the rate ladder becomes the phases);
  the shape asks `State.new_capacity_search` for its search, every worker
  report is folded into it, and the last steps are judged after the flush
  at `test_stop`.
- Server metrics (`scrape.py`): with `--llm-server-metrics-url`, a greenlet
  scrapes the target from `test_start` to `test_stop` (one last scrape
  there).
"""

import argparse
import json
import logging
import os
import time

import gevent
from flask import Response, jsonify, request
from locust import events as default_events
from locust.runners import STATE_RUNNING, STATE_SPAWNING, MasterRunner

from . import capacity as capmod
from . import config as cfgmod
from . import render, render_server
from . import scrape as scrapemod
from .aggregate import Aggregator, FailureRows

logger = logging.getLogger("tokenswarm")
console = logging.getLogger("locust.stats_logger")


class State:
    """What the master knows about the LLM side of the current run."""

    def __init__(self, scenarios_path, user_class_names):
        self.default_path = scenarios_path
        self.user_class_names = list(user_class_names)
        self.aggregator = Aggregator()
        self.failure_rows = FailureRows()
        self.slo = {}
        self.warnings = []
        self._warned = set()
        self.abort = None
        self.config_error = None
        self.config = None
        self.environment = None
        self.budget_used = {}
        self.run_token = None
        self.flushed = set()  # workers that answered tokenswarm_flush
        self.saturated = {}  # worker id -> why it could not keep up (this run)
        self.capacity = None  # capacity.Search of the current (or last) search
        self.scraper = None  # scrape.Scraper of the current (or last) run
        self.scrape_token = None

    def new_capacity_search(self, shape):
        """A new search for `shape` (called by CapacityShape at its first tick)."""
        opts = self.environment.parsed_options
        cfg, error = preflight(self, opts, quiet=True)
        if error:
            raise capmod.CapacityError(error)
        self.capacity = capmod.Search(capacity_spec(self, opts), cfg["load"]["mode"])
        return self.capacity

    def doc(self):
        doc = render.document(self)
        doc["capacity"] = self.capacity.result() if self.capacity is not None else None
        doc["server_metrics"] = self.scraper.summary() if self.scraper is not None else None
        return doc

    def server_points(self):
        return list(self.scraper.history) if self.scraper is not None else []

    def page_extras(self, doc):
        """(x_range, html) of the server and capacity charts for `doc`."""
        return render_server.page_extras(self.aggregator.history, self.server_points(), doc["server_metrics"],
                                         doc["capacity"])

    def new_run(self):
        self.aggregator.reset()
        self.failure_rows.reset()
        self.warnings, self._warned, self.abort, self.config_error = [], set(), None, None
        self.saturated = {}
        self.budget_used = {}


def add_options(parser, default_path):
    """The --llm-* options; blank means "use the scenarios file's value"."""
    g = parser  # argument groups lose include_in_web_ui, so options go on the parser
    g.add_argument("--llm-scenarios", env_var="LOCUST_LLM_SCENARIOS", default=default_path, help="Scenarios YAML file (user classes are defined from it at startup)")
    g.add_argument("--llm-mode", env_var="LOCUST_LLM_MODE", default="", help="closed (users) or open (arrival rate)")
    g.add_argument("--llm-rate-phases", env_var="LOCUST_LLM_RATE_PHASES", default="", help='Open loop: rate:duration_s[:ramp_s],... e.g. "200:30,400:30:5" (cluster req/s)')
    g.add_argument("--llm-arrival", env_var="LOCUST_LLM_ARRIVAL", default="", help="Open loop arrivals: constant, poisson or gamma")
    g.add_argument("--llm-burstiness", env_var="LOCUST_LLM_BURSTINESS", default="", help="Gamma shape (1 = Poisson, <1 burstier, >1 smoother)")
    g.add_argument("--llm-max-in-flight", env_var="LOCUST_LLM_MAX_IN_FLIGHT", default="", help="Open loop: cap on in-flight requests per worker")
    g.add_argument("--llm-slo-ttft-ms", env_var="LOCUST_LLM_SLO_TTFT_MS", default="", help="Goodput SLO on time to first token, ms")
    g.add_argument("--llm-slo-tpot-ms", env_var="LOCUST_LLM_SLO_TPOT_MS", default="", help="Goodput SLO on time per output token, ms")
    g.add_argument("--llm-slo-e2e-ms", env_var="LOCUST_LLM_SLO_E2E_MS", default="", help="Goodput SLO on end-to-end latency, ms")
    g.add_argument("--llm-error-limit", env_var="LOCUST_LLM_ERROR_LIMIT", default="", help="Abort when this fraction of recent requests fail (0 disables)")
    g.add_argument("--llm-warmup", dest="llm_warmup", action="store_const", const="true", default="",
                   help="One successful request per scenario before load (true/false; default from file)")
    g.add_argument("--llm-no-warmup", dest="llm_warmup", action="store_const", const="false",
                   include_in_web_ui=False, help="Skip the warm-up requests")
    g.add_argument("--llm-input-token-budget", env_var="LOCUST_LLM_INPUT_TOKEN_BUDGET", default="", help="Open loop: refuse to start above this input token estimate")
    g.add_argument("--llm-output-token-budget", env_var="LOCUST_LLM_OUTPUT_TOKEN_BUDGET", default="", help="Open loop: refuse to start above this output token estimate")
    g.add_argument("--llm-capacity", env_var="LOCUST_LLM_CAPACITY", default="",
                   help="Capacity search START:STEP:MAX:HOLD_S[:SETTLE_S] (users, or req/s in open loop); set at startup")
    g.add_argument("--llm-capacity-attainment", env_var="LOCUST_LLM_CAPACITY_ATTAINMENT", default="",
                   help="Capacity search: fraction of requests within the SLOs a step must reach (default 0.95)")
    g.add_argument("--llm-server-metrics-url", env_var="LOCUST_LLM_SERVER_METRICS_URL", default="",
                   help="Scrape the target's Prometheus metrics (vLLM, SGLang, llama.cpp) each second: URL or path (/metrics)")


def capacity_spec(state, opts):
    """The capacity search's Spec for this start, or None without one.
    Raises OptionError when the option and the load shape do not match."""
    shape = getattr(state.environment, "shape_class", None) if state.environment else None
    is_shape = isinstance(shape, capmod.CapacityShape)
    text = getattr(opts, "llm_capacity", "") or (shape.spec if is_shape else "")
    attainment = getattr(opts, "llm_capacity_attainment", "") or (shape.attainment if is_shape else None)
    if not str(text or "").strip():
        if is_shape:
            raise cfgmod.OptionError("option", capmod.OPTION, "", f"the capacity load shape needs {capmod.FORMAT}")
        return None
    if not is_shape:
        raise cfgmod.OptionError("option", capmod.OPTION, text,
                                 "the capacity load shape is chosen when the locustfile loads: start locust with "
                                 "--llm-capacity (or LOCUST_LLM_CAPACITY), or import CapacityShape in your locustfile")
    return capmod.parse_spec(text, attainment)


def _build_config(state, opts, path):
    """The validated config: the file plus the options, and for a capacity
    search in open loop its rate ladder as the phases. A capacity search
    needs an SLO (it measures their attainment) and whole users in closed
    loop. Dataset files are shipped in it (`config.ship_datasets`)."""
    cfg = _validated_config(state, opts, path)
    cfgmod.ship_datasets(cfg, os.path.dirname(os.path.abspath(path)))
    return cfg


def _validated_config(state, opts, path):
    raw = cfgmod.apply_overrides(cfgmod.load_yaml(path), opts)
    spec = capacity_spec(state, opts)
    if spec is None:
        return cfgmod.validate(raw)
    load = raw.get("load") if isinstance(raw.get("load"), dict) else {}
    mode = load.get("mode", "closed")
    spec.values(mode)
    if mode == "open":
        raw["load"] = {**load, "phases": capmod.ladder_phases(spec)}
    cfg = cfgmod.validate(raw)
    if all(cfg["slo"].get(k) is None for k in ("ttft_ms", "tpot_ms", "e2e_ms")):
        raise cfgmod.OptionError("option", capmod.OPTION, spec.text,
                                 "a capacity search measures SLO attainment: set --llm-slo-ttft-ms and/or "
                                 "--llm-slo-tpot-ms (or slo: in the scenarios file)")
    return cfg


def preflight(state, opts, quiet=False):
    """Builds the config for `opts`; returns (config, None) or (None, error).
    Also prints the open-loop token estimate and applies the budgets."""
    path = getattr(opts, "llm_scenarios", None) or state.default_path
    try:
        cfg = _build_config(state, opts, path)
        if getattr(opts, "llm_server_metrics_url", ""):
            scrapemod.resolve_url(opts.llm_server_metrics_url, getattr(opts, "host", None))
    except (cfgmod.ConfigError, ValueError) as e:
        return None, f"invalid tokenswarm configuration: {e}"
    names = [s["name"] for s in cfg["scenarios"]]
    if sorted(names) != sorted(state.user_class_names):
        return None, (f"invalid tokenswarm configuration: option `--llm-scenarios` has value {path!r} whose scenarios "
                      f"{names} differ from the user classes defined at startup {state.user_class_names}; "
                      "restart locust with --llm-scenarios to change scenarios")
    message, ok = cfgmod.check_budget(cfg)
    if message and ok and not quiet:
        logger.info(message)  # the estimate; the caller logs a refusal
    return (cfg, None) if ok else (None, message)


def _stop_run(environment, reason, quit_process=None):
    """Stops the run: quit (exit code 1) when headless, stop when a web UI
    user is watching. Runs in its own greenlet: a message handler must not
    kill the runner greenlet it runs in."""
    environment.process_exit_code = 1
    opts = environment.parsed_options
    runner = environment.runner
    if quit_process is None:
        quit_process = opts is not None and opts.headless

    def stop():
        if quit_process:
            logger.error(f"tokenswarm: quitting: {reason}")
            runner.quit()
            if environment.web_ui:  # with --autostart the web UI is the main greenlet
                environment.web_ui.stop()
        else:
            runner.stop()

    gevent.spawn(stop)


FLUSH_WAIT_S = 15.0


def flush_workers(runner, state, wait_s=FLUSH_WAIT_S):
    """Asks every still-running worker for its final stats and waits for them.

    Locust's master, quitting, sends `quit` and waits only 0.5 s for final
    stats; a worker ending thousands of streams on a busy machine can miss
    that, and its last requests would be lost. `quit()` fires `test_stop`
    before it sends `quit`, so this listener runs first: each running worker
    gets `tokenswarm_flush`, ends its requests, sends its stats and then
    `tokenswarm_flushed` on the same connection (so the stats are merged by
    the time the answer is seen). A worker that does not answer within
    `wait_s` (a Python worker, a dead one) is not waited for longer. After a
    normal stop the workers are stopped already and nothing is sent."""
    pending = {c.id for c in runner.clients.all if c.state in (STATE_RUNNING, STATE_SPAWNING)}
    if not pending:
        return set()
    state.flushed = set()
    for node_id in pending:
        runner.send_message("tokenswarm_flush", {}, client_id=node_id)
    deadline = time.monotonic() + wait_s
    while not pending <= state.flushed and time.monotonic() < deadline:
        gevent.sleep(0.02)
    missing = pending - state.flushed
    if missing:
        logger.warning(f"tokenswarm: no final stats from {sorted(missing)} within {wait_s:.0f} s; their last requests may be missing")
    return missing


def budget_reached(cfg, counts):
    """The first token budget the merged totals have reached, as a message."""
    safety = (cfg or {}).get("safety", {})
    for kind in ("input", "output"):
        budget = safety.get(f"{kind}_token_budget")
        used = counts.get(f"{kind}_tokens", 0)
        if budget is not None and used >= budget:
            return (f"token budget reached: {used} {kind} tokens used across all workers, "
                    f"--llm-{kind}-token-budget / safety.{kind}_token_budget is {budget}")
    return None


def _enforce_budgets(state):
    """Budgets are cluster totals, so only the master, which merges every
    worker's tokens, can tell when one is reached; it then stops the run."""
    env = state.environment
    if env is None or state.abort is not None or env.runner is None:
        return
    if env.runner.state not in (STATE_RUNNING, STATE_SPAWNING):
        return
    reason = budget_reached(state.config, state.budget_used)
    if reason:
        state.abort = {"reason": reason, "worker": "master"}
        logger.error(f"tokenswarm: run stopped: {reason}")
        _stop_run(env, reason)


def _count_budget_tokens(state, llm):
    """Tokens against the budgets: the whole run's, which "Reset stats"
    (which clears the displayed numbers) must not give back."""
    if not isinstance(llm, dict) or not isinstance(llm.get("scenarios"), dict):
        return
    for r in llm["scenarios"].values():
        for k in ("input_tokens", "output_tokens"):
            state.budget_used[k] = state.budget_used.get(k, 0) + int(r.get(k, 0) or 0)


def _end_when_schedule_ends(environment, state, cfg):
    """An open-loop run has a known length: the sum of its phases. Once the
    last phase is over (plus a grace second for the last reports) the run
    ends by itself, as a `-t` run would, instead of idling with users that
    send nothing."""
    length = sum(float(p["duration_s"]) for p in cfg["load"]["phases"]) + 1.0
    run = object()
    state.run_token = run

    def end():
        gevent.sleep(length)
        runner = environment.runner
        if state.run_token is not run or runner.state not in (STATE_RUNNING, STATE_SPAWNING):
            return
        logger.info(f"tokenswarm: the open-loop schedule ({length - 1.0:g} s of phases) is over; ending the run")
        opts = environment.parsed_options
        if opts is not None and opts.headless:
            runner.quit()
            if environment.web_ui:
                environment.web_ui.stop()
        else:
            runner.stop()

    gevent.spawn(end)


def only_cancellations(failure_kinds, locust_failures):
    """True when every failure is a request the end of the run cancelled:
    the merged `failure_kinds` of the workers' `llm` reports are all of
    kind `cancelled`, and they account for every failure Locust counted
    (a failure no `llm` report classified is not known to be one)."""
    kinds = {k: int(n or 0) for k, n in (failure_kinds or {}).items() if int(n or 0) > 0}
    cancelled = kinds.get("cancelled", 0)
    return cancelled > 0 and set(kinds) == {"cancelled"} and cancelled == locust_failures


def _exit_code_ignoring_cancellations(environment, state):
    """Locust exits 1 on any failure. Streams still running when a run ends
    are cancelled and counted (as failures of kind `cancelled`: nothing sent
    goes uncounted), but they are not errors of the target: exit 0 then."""
    runner = environment.runner
    if environment.process_exit_code is not None or not isinstance(runner, MasterRunner):
        return
    n = sum(e.occurrences for e in runner.stats.errors.values())
    if runner.exceptions or not only_cancellations(state.aggregator.total.failure_kinds, n):
        return
    logger.info(f"tokenswarm: {n} requests in flight at the end were cancelled and counted as "
                "failures of kind 'cancelled'; they are not target errors, so the exit code is 0")
    environment.process_exit_code = 0


SATURATED_EXIT_CODE = 4


def _exit_code_when_saturated(environment, state):
    """A run whose numbers a saturated worker measured is not a clean run:
    exit 4 where it would otherwise exit 0 (a run that fails for other
    reasons keeps its own code)."""
    runner = environment.runner
    if not state.saturated or not isinstance(runner, MasterRunner):
        return
    clean = environment.process_exit_code == 0 or (
        environment.process_exit_code is None and not runner.errors and not runner.exceptions
    )
    if clean:
        logger.warning(f"tokenswarm: exit code {SATURATED_EXIT_CODE}: saturated workers {sorted(state.saturated)}")
        environment.process_exit_code = SATURATED_EXIT_CODE


def _start_scraping(environment, state):
    """Starts the scrape greenlet of this run (when the option is set)."""
    opts = environment.parsed_options
    url = getattr(opts, "llm_server_metrics_url", "") if opts is not None else ""
    state.scrape_token = None
    if not url:
        state.scraper = None
        return
    try:
        url = scrapemod.resolve_url(url, getattr(opts, "host", None))
    except ValueError as e:  # preflight refuses this; only a racing change gets here
        logger.error(f"tokenswarm: {e}")
        return
    state.scraper = scrapemod.Scraper(url)
    token = object()
    state.scrape_token = token
    logger.info(f"tokenswarm: scraping server metrics from {scrapemod.display_url(url)} every second")
    gevent.spawn(state.scraper.run, lambda: state.scrape_token is token)


FINAL_SCRAPE_TRIES = 10


def _stop_scraping(state):
    """Ends the scrape loop with a last scrape taken, when it can be, once
    the server is idle (the workers' requests have ended by now, but the
    server may notice a cut stream a moment later), so the last row holds
    the run's final counters; at most FINAL_SCRAPE_TRIES tries 0.2 s apart,
    since a server shared with other traffic may never be idle."""
    if state.scraper is None or state.scrape_token is None:
        return
    state.scrape_token = None
    for _ in range(FINAL_SCRAPE_TRIES):
        point = state.scraper.scrape_once()
        if point is None or not (point.get("running") or point.get("waiting")):
            return
        gevent.sleep(0.2)


def install(environment, state):
    """Hooks one master environment (called from the `init` event)."""
    runner = environment.runner
    original_start = runner.start

    def start(user_count, spawn_rate, *args, **kwargs):
        opts = environment.parsed_options
        if runner.state not in (STATE_RUNNING, STATE_SPAWNING):
            _, error = preflight(state, opts)
            if error:
                state.new_run()
                state.config_error = error
                logger.error(error)
                if opts is not None and (opts.headless or opts.autostart):
                    # nobody can fix the form of an unattended run: exit 1
                    _stop_run(environment, error, quit_process=True)
                return None
        elif isinstance(getattr(opts, "tokenswarm_config", None), dict):
            opts.tokenswarm_config["cluster_users"] = user_count
            opts.tokenswarm_config["worker_count"] = runner.worker_count
        return original_start(user_count, spawn_rate, *args, **kwargs)

    runner.start = start

    def on_warning(environment, msg, **_kw):
        data = msg.data or {}
        scenario, text = data.get("scenario"), str(data.get("message", ""))
        if (scenario, text) in state._warned:
            return
        state._warned.add((scenario, text))
        state.warnings.append({"scenario": scenario, "message": text, "worker": msg.node_id})
        logger.warning(f"tokenswarm warning from worker {msg.node_id} [{scenario}]: {text}")

    def on_abort(environment, msg, **_kw):
        reason = str((msg.data or {}).get("reason", "no reason given"))
        if state.abort is None:
            state.abort = {"reason": reason, "worker": msg.node_id}
            logger.error(f"tokenswarm: run ABORTED by worker {msg.node_id}: {reason}")
            _stop_run(environment, reason)

    def on_saturated(environment, msg, **_kw):
        reason = str((msg.data or {}).get("reason", "no reason given"))
        if msg.node_id not in state.saturated:
            state.saturated[msg.node_id] = reason
            logger.warning(f"tokenswarm: worker {msg.node_id} is saturated: {reason}. Its timings are not valid "
                           "from here on: lower the load per worker or add workers")

    runner.register_message("tokenswarm_saturated", on_saturated)

    def on_flushed(environment, msg, **_kw):
        state.flushed.add(msg.node_id)

    runner.register_message("tokenswarm_flushed", on_flushed)
    runner.register_message("tokenswarm_warning", on_warning)
    runner.register_message("tokenswarm_abort", on_abort)

    def sampler():
        while True:
            gevent.sleep(1.0)
            if runner.state in (STATE_RUNNING, STATE_SPAWNING):
                state.aggregator.sample(time.time(), runner.user_count)

    gevent.spawn(sampler)
    if environment.web_ui:
        install_web(environment, state)


def install_web(environment, state):
    """The LLM tab (an `extended_stats` table of the stock UI), routes and links."""
    web_ui = environment.web_ui
    web_ui.template_args["extended_tabs"] = [{"title": "LLM", "key": "llm"}]
    web_ui.template_args["extended_tables"] = [{"key": "llm", "structure": render.TABLE_STRUCTURE}]
    web_ui.template_args["extended_csv_files"] = [
        {"href": "./llm/csv", "title": "Download LLM metrics CSV"},
        {"href": "./llm/json", "title": "Download LLM metrics JSON"},
        {"href": "./llm/charts", "title": "LLM charts (TTFT, output tokens/s, users, server, capacity)"},
        {"href": "./llm/server-metrics/csv", "title": "Download server metrics CSV (--llm-server-metrics-url)"},
        {"href": "./llm/capacity/csv", "title": "Download capacity search CSV (--llm-capacity)"},
    ]
    app = web_ui.app

    @app.route("/llm/json")
    @web_ui.auth_required_if_enabled
    def llm_json():
        return jsonify(state.doc())

    @app.route("/llm/csv")
    @web_ui.auth_required_if_enabled
    def llm_csv():
        return Response(render.csv_text(state.doc()), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=llm_stats.csv"})

    @app.route("/llm/history")
    @web_ui.auth_required_if_enabled
    def llm_history():
        return jsonify(list(state.aggregator.history))

    @app.route("/llm/charts")
    @web_ui.auth_required_if_enabled
    def llm_charts():
        try:  # ?refresh=0 gives a static page (printing, headless browsers)
            refresh = max(0, int(request.args.get("refresh", 5)))
        except ValueError:
            refresh = 5
        doc = state.doc()
        x_range, extra = state.page_extras(doc)
        return Response(render.charts_page(doc, state.aggregator.history, refresh, x_range, extra),
                        mimetype="text/html")

    @app.route("/llm/server-metrics")
    @web_ui.auth_required_if_enabled
    def llm_server_metrics():
        return jsonify({"summary": state.doc()["server_metrics"], "points": state.server_points()})

    @app.route("/llm/server-metrics/csv")
    @web_ui.auth_required_if_enabled
    def llm_server_metrics_csv():
        return Response(render_server.server_csv_text(state.server_points()), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=llm_server_metrics.csv"})

    @app.route("/llm/capacity")
    @web_ui.auth_required_if_enabled
    def llm_capacity():
        return jsonify(state.doc()["capacity"])

    @app.route("/llm/capacity/csv")
    @web_ui.auth_required_if_enabled
    def llm_capacity_csv():
        return Response(render_server.capacity_csv_text(state.doc()["capacity"]), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=llm_capacity.csv"})

    @app.before_request
    def check_swarm_form():
        """Rejects a start from the web form whose --llm-* values are invalid,
        so the form shows the message instead of a run that never starts."""
        if request.method != "POST" or not request.path.endswith("/swarm"):
            return None
        runner = environment.runner
        if runner is None or runner.state in (STATE_RUNNING, STATE_SPAWNING):
            return None
        opts = argparse.Namespace(**vars(environment.parsed_options or argparse.Namespace()))
        for key, value in request.form.items():
            if key.startswith("llm_"):
                setattr(opts, key, value)
        _, error = preflight(state, opts)
        if error:
            logger.error(error)
            return jsonify({"success": False, "message": error, "host": environment.host})
        return None

    @app.after_request
    def add_llm_rows(response):
        if request.path.endswith("/stats/requests") and response.is_json:
            data = response.get_json()
            doc = state.doc()
            rows = render.table_rows(doc)
            rows += render_server.tab_rows(doc, len(rows))
            data["extended_stats"] = [{"key": "llm", "data": rows}]
            response.set_data(json.dumps(data))
        return response


def write_files(environment, state):
    """End-of-run outputs: CSVs, the HTML report, the console summary."""
    opts = environment.parsed_options
    doc = state.doc()
    if opts is None:
        return
    if opts.csv_prefix:
        with open(f"{opts.csv_prefix}_llm.csv", "w", encoding="utf-8", newline="") as f:
            f.write(render.csv_text(doc))
        if opts.stats_history_enabled:
            with open(f"{opts.csv_prefix}_llm_stats_history.csv", "w", encoding="utf-8", newline="") as f:
                f.write(render.history_csv_text(state.aggregator.history))
        if state.scraper is not None:
            with open(f"{opts.csv_prefix}_llm_server_metrics.csv", "w", encoding="utf-8", newline="") as f:
                f.write(render_server.server_csv_text(state.server_points()))
        if doc["capacity"] is not None:
            with open(f"{opts.csv_prefix}_llm_capacity.csv", "w", encoding="utf-8", newline="") as f:
                f.write(render_server.capacity_csv_text(doc["capacity"]))
    if opts.html_file:
        path = os.path.splitext(opts.html_file)[0] + "_llm.html"
        x_range, extra = state.page_extras(doc)
        with open(path, "w", encoding="utf-8") as f:
            f.write(render.html_report(doc, state.aggregator.history, x_range=x_range, extra=extra))
        logger.info(f"tokenswarm: LLM report written to {path}")
    if opts.headless or state.aggregator.reports:
        for line in render.console_lines(doc):
            console.info(line)
        if doc["capacity"] is not None:
            console.info(capmod.summary_line(doc["capacity"]))
        console.info("")


def setup(scenarios_path, user_class_names, events=default_events):
    """Registers every listener; returns the State (for tests and llm.py)."""
    state = State(scenarios_path, user_class_names)

    @events.init_command_line_parser.add_listener
    def _options(parser, **_kw):
        add_options(parser, scenarios_path)

    @events.init.add_listener
    def _init(environment, **_kw):
        state.environment = environment
        environment.tokenswarm = state  # CapacityShape finds the plugin here
        if isinstance(environment.runner, MasterRunner):
            install(environment, state)
            opts = environment.parsed_options
            if opts is not None and (opts.headless or opts.autostart):
                # Nobody will fix the form of an unattended run: refuse a bad
                # configuration now, not once the expected workers arrived.
                _, error = preflight(state, opts, quiet=True)
                if error:
                    logger.error(error)
                    raise SystemExit(1)
        elif environment.runner is not None and not environment.parsed_options.worker:
            logger.warning("tokenswarm: run this locustfile with --master; only tokenswarm workers send requests")

    @events.test_start.add_listener
    def _test_start(environment, **_kw):
        if not isinstance(environment.runner, MasterRunner):
            return
        state.new_run()
        cfg, error = preflight(state, environment.parsed_options, quiet=True)
        if error:  # start() checked already; only a racing form change gets here
            state.config_error = error
            logger.error(error)
            return
        if cfg["load"]["mode"] == "open":
            # One phase clock for every worker, late joiners included.
            cfg["load"]["start_unix_s"] = time.time()
            _end_when_schedule_ends(environment, state, cfg)
        state.config = cfg
        state.slo = {k: v for k, v in cfg["slo"].items() if v is not None}
        if state.capacity is not None and not state.capacity.done and cfg["load"]["mode"] == "open":
            state.capacity.begin(cfg["load"]["start_unix_s"])  # the phase clock is the step clock
        _start_scraping(environment, state)
        environment.parsed_options.tokenswarm_config = {
            **cfg,
            "cluster_users": environment.runner.target_user_count,
            # with the ack index, workers spread their starts across the cluster
            "worker_count": environment.runner.worker_count,
        }

    @events.spawning_complete.add_listener
    def _spawned(**_kw):
        env = state.environment
        if env is not None and env.reset_stats and isinstance(env.runner, MasterRunner):
            state.aggregator.reset(keep_history=True)  # --reset-stats: Locust resets its stats here too
            state.failure_rows.reset()

    @events.worker_report.add_listener
    def _worker_report(client_id, data, **_kw):
        if state.capacity is not None and not state.capacity.done:
            state.capacity.fold(data)  # before anything rewrites the report
        state.failure_rows.fold(data.get("errors"))
        if "llm" in data:
            state.aggregator.merge_report(data["llm"])
            _count_budget_tokens(state, data["llm"])
            _enforce_budgets(state)

    @events.test_stop.add_listener
    def _test_stop(environment, **_kw):
        if isinstance(environment.runner, MasterRunner):
            flush_workers(environment.runner, state)
            _stop_scraping(state)
            if state.capacity is not None and not state.capacity.done:
                state.capacity.poll(time.time(), final=True)
                logger.info(f"tokenswarm: {capmod.summary_line(state.capacity.result())}")

    @events.quitting.add_listener
    def _quitting(environment, **_kw):
        _exit_code_ignoring_cancellations(environment, state)
        _exit_code_when_saturated(environment, state)

    @events.reset_stats.add_listener
    def _reset(**_kw):
        state.aggregator.reset(keep_history=True)
        state.failure_rows.reset()

    @events.quit.add_listener
    def _quit(**_kw):
        env = state.environment
        if env is not None and isinstance(env.runner, MasterRunner):
            try:
                write_files(env, state)
            except OSError as e:
                logger.error(f"tokenswarm: could not write LLM files: {e}")

    return state
