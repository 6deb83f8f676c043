//! One standalone run, start to end: read and translate the two files (or
//! the scenarios file given with `--host`), print the token estimate and
//! ask (or refuse), run the open-loop phases through the worker's own
//! [`Engine`] (warm-up, error limit, divergence warnings included), show
//! progress, and write the results folder.
//!
//! Sinks of the run: the engine's Locust window (unused here), the
//! [`RunAggregate`], the per-request [`RequestLog`] and the caller's own
//! ([`RunOptions::sinks`]: Prometheus with `--metrics-addr`).

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::aggregate::{PhaseClock, RunAggregate, Table};
use super::results::{self, EndpointSummary, FailOnResult, PhaseSummary, Summary};
use super::spec::{self, EndpointSpec, RunSuite};
use crate::engine::{Engine, EngineEvent, RunContext};
use crate::metrics::export::{Format, RequestLog};
use crate::metrics::{OutcomeSink, RequestRecord};
use crate::scenario::{Slo, TestConfig};

/// How a standalone run went wrong; [`RunError::exit_code`] maps it.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A file could not be read or is invalid.
    #[error("{0}")]
    Config(String),
    /// The run was not started (budget, no confirmation).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Io(String),
    /// The warm-up failed or the error limit stopped the run; the results
    /// folder holds what was measured.
    #[error("run aborted: {reason} (results in {})", dir.display())]
    Aborted { reason: String, dir: PathBuf },
    /// Ctrl-C (or SIGTERM) ended the run early; results are written.
    #[error("run interrupted (results in {})", dir.display())]
    Interrupted { dir: PathBuf },
    /// `--fail-on` thresholds were breached.
    #[error("--fail-on thresholds breached: {} (results in {})", breached.join("; "), dir.display())]
    Breached { breached: Vec<String>, dir: PathBuf },
}

impl RunError {
    /// 2 for configuration and refusals, 1 for a run that ended badly,
    /// 130 for an interrupted one.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_) | RunError::Refused(_) | RunError::Io(_) => 2,
            RunError::Aborted { .. } | RunError::Breached { .. } => 1,
            RunError::Interrupted { .. } => 130,
        }
    }
}

/// One `--fail-on METRIC=LIMIT`: breached when the run's value is above.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub text: String,
    metric: Metric,
    stat: Option<f64>,
    pub limit: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Metric {
    ErrorRate,
    Latency,
    Ttft,
    Tpot,
    Itl,
}

/// What `--fail-on` accepts.
pub const FAIL_ON_HELP: &str = "error_rate=FRACTION or {latency,ttft,tpot,itl}_{mean,pNN}_ms=MS (e.g. ttft_p99_ms=500)";

impl std::str::FromStr for Threshold {
    type Err = String;

    fn from_str(s: &str) -> Result<Threshold, String> {
        let bad = || format!("--fail-on {s:?}: use {FAIL_ON_HELP}");
        let (key, value) = s.split_once('=').ok_or_else(bad)?;
        let limit: f64 = value.trim().parse().map_err(|_| bad())?;
        if !limit.is_finite() || limit < 0.0 {
            return Err(bad());
        }
        let key = key.trim();
        if key == "error_rate" {
            return Ok(Threshold {
                text: s.to_string(),
                metric: Metric::ErrorRate,
                stat: None,
                limit,
            });
        }
        let rest = key.strip_suffix("_ms").ok_or_else(bad)?;
        let (name, stat) = rest.rsplit_once('_').ok_or_else(bad)?;
        let metric = match name {
            "latency" | "e2e" => Metric::Latency,
            "ttft" => Metric::Ttft,
            "tpot" => Metric::Tpot,
            "itl" => Metric::Itl,
            _ => return Err(bad()),
        };
        let stat = match stat {
            "mean" => None,
            p => {
                let v: f64 = p.strip_prefix('p').and_then(|v| v.parse().ok()).ok_or_else(bad)?;
                if !(v > 0.0 && v <= 100.0) {
                    return Err(bad());
                }
                Some(v)
            }
        };
        Ok(Threshold {
            text: s.to_string(),
            metric,
            stat,
            limit,
        })
    }
}

impl Threshold {
    /// The percentile this threshold needs computed, if any.
    pub fn percentile(&self) -> Option<f64> {
        self.stat
    }

    fn value(&self, t: &Table) -> Option<f64> {
        let l = match self.metric {
            Metric::ErrorRate => return Some(t.error_rate),
            Metric::Latency => &t.latency_ms,
            Metric::Ttft => &t.ttft_ms,
            Metric::Tpot => &t.tpot_ms,
            Metric::Itl => &t.itl_ms,
        };
        match self.stat {
            None => l.mean,
            Some(p) => l.at(p),
        }
    }
}

/// Options of `tokenswarm run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The run suite, or tokenswarm's scenarios file (with `host`).
    pub run_suite: PathBuf,
    /// tokenflood's endpoint spec; None with `host`.
    pub endpoint: Option<PathBuf>,
    /// The target for tokenswarm's own scenarios file.
    pub host: Option<String>,
    /// Start without asking.
    pub yes: bool,
    /// Where run folders go (default `results`).
    pub results: PathBuf,
    pub fail_on: Vec<Threshold>,
    pub slo: Slo,
    /// More sinks for every request (`--metrics-addr`: the Prometheus registry).
    pub sinks: crate::metrics::sink::Sinks,
}

fn read(path: &Path) -> Result<String, RunError> {
    std::fs::read_to_string(path).map_err(|e| RunError::Config(format!("cannot read {}: {e}", path.display())))
}

fn say(line: &str) {
    eprintln!("{line}");
}

/// Asks on the terminal; true for y/yes.
async fn confirm(question: String) -> bool {
    tokio::task::spawn_blocking(move || {
        eprint!("{question} [y/N] ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).is_ok()
            && matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
    })
    .await
    .unwrap_or(false)
}

fn phase_name(p: Option<usize>) -> String {
    p.map_or("warmup".into(), |p| (p + 1).to_string())
}

/// Runs the suite; returns the results folder. `shutdown` ends it early
/// (results are still written).
pub async fn run(opts: RunOptions, shutdown: impl Future<Output = ()>) -> Result<PathBuf, RunError> {
    let suite_text = read(&opts.run_suite)?;
    let at = |e: &dyn std::fmt::Display, p: &Path| RunError::Config(format!("{}: {e}", p.display()));
    let (mut plan, inputs) = match (&opts.endpoint, &opts.host) {
        (Some(ep), None) => {
            let endpoint_text = read(ep)?;
            let suite = RunSuite::from_yaml(&suite_text).map_err(|e| at(&e, &opts.run_suite))?;
            let endpoint = EndpointSpec::from_yaml(&endpoint_text).map_err(|e| at(&e, ep))?;
            let plan = spec::plan(suite, endpoint).map_err(|e| RunError::Config(e.to_string()))?;
            let inputs = vec![("run_suite.yml", suite_text), ("endpoint_spec.yml", endpoint_text)];
            (plan, inputs)
        }
        (None, Some(host)) => {
            let config = TestConfig::from_yaml(&suite_text).map_err(|e| at(&e, &opts.run_suite))?;
            let name = opts.run_suite.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            let plan = spec::plan_from_scenarios(config, host, name).map_err(|e| at(&e, &opts.run_suite))?;
            (plan, vec![("scenarios.yaml", suite_text)])
        }
        _ => {
            return Err(RunError::Config(
                "give RUN_SUITE ENDPOINT_SPEC (tokenflood's files) or SCENARIOS.yaml --host URL (tokenswarm's own)"
                    .into(),
            ));
        }
    };
    plan.config.slo = opts.slo;
    let suite = &plan.suite;
    let url = plan.url.clone();

    // Safety before anything is sent: estimate, budgets, confirmation.
    let load_phases = plan.config.load.phases.clone();
    let expected = spec::expected_requests_of(&load_phases);
    let (est_in, est_out) = suite.token_estimate_for(expected);
    let shape: Vec<String> = load_phases
        .iter()
        .map(|p| {
            let ramp = if p.ramp.is_zero() {
                String::new()
            } else {
                format!(", ramp {} s", p.ramp.as_secs_f64())
            };
            format!("{} req/s for {} s{ramp}", p.rate, p.duration.as_secs_f64())
        })
        .collect();
    say(&format!(
        "tokenswarm run {:?}: {} phase(s) [{}], {} load type(s), against {} ({} {})",
        suite.name,
        load_phases.len(),
        shape.join("; "),
        suite.load_types.len(),
        url,
        plan.provider,
        plan.model
    ));
    say(&format!(
        "estimated usage: about {:.0} requests, {est_in} input tokens, {est_out} output tokens (budgets: input {}, output {})",
        expected + suite.load_types.len() as f64,
        suite.input_token_budget.map_or("none".into(), |b| b.to_string()),
        suite.output_token_budget.map_or("none".into(), |b| b.to_string()),
    ));
    for (what, est, budget) in [
        ("input", est_in, suite.input_token_budget),
        ("output", est_out, suite.output_token_budget),
    ] {
        if let Some(b) = budget
            && est > b
        {
            return Err(RunError::Refused(format!(
                "not started: the estimated {what} tokens ({est}) exceed {what}_token_budget ({b}); \
                 lower the rates, the phase length or the token counts, or raise the budget"
            )));
        }
    }
    if !opts.yes {
        if !std::io::stdin().is_terminal() {
            return Err(RunError::Refused(
                "not started: confirmation needs a terminal; pass --yes to start without asking".into(),
            ));
        }
        if !confirm("Start the run?".into()).await {
            return Err(RunError::Refused("not started: not confirmed".into()));
        }
    }

    // The results folder, with copies of both inputs.
    let started_unix = crate::metrics::unix_now();
    let dir = results::create_dir(&opts.results, &suite.name, started_unix as u64)
        .map_err(|e| RunError::Io(format!("cannot create a run folder in {}: {e}", opts.results.display())))?;
    let io = |what: &str, e: std::io::Error| RunError::Io(format!("cannot write {what} in {}: {e}", dir.display()));
    for (name, text) in &inputs {
        std::fs::write(dir.join(name), text).map_err(|e| io(name, e))?;
    }

    let phases = suite.requests_per_second_rates.len();
    let clock = Arc::new(PhaseClock::new(load_phases.iter().map(|p| p.duration).collect()));
    let names: Vec<String> = plan.config.scenarios.iter().map(|s| s.name.clone()).collect();
    let aggregate = Arc::new(RunAggregate::new(
        &plan.config.scenarios,
        plan.config.slo,
        clock.clone(),
    ));
    let label_clock = clock.clone();
    let log = Arc::new(
        RequestLog::create(
            Format::Csv,
            &dir.join("llm_requests.csv"),
            Some(&dir.join("errors.csv")),
            Box::new(move |r: &RequestRecord<'_>| {
                phase_name(if r.warmup {
                    None
                } else {
                    label_clock.phase_at(r.scheduled)
                })
            }),
        )
        .map_err(|e| io("llm_requests.csv", e))?,
    );
    let mut sinks: Vec<Arc<dyn OutcomeSink>> = vec![aggregate.clone(), log.clone()];
    sinks.extend(opts.sinks.0.iter().cloned());
    let (events_tx, mut events) = mpsc::channel(64);
    let ctx = RunContext {
        host: plan.host.clone(),
        seed: rand::random(),
        stop_timeout: Duration::from_secs(30),
        allow: crate::llm::AllowList::any(),
        sinks: Default::default(),
        slot: Default::default(),
    };
    let mut engine = Engine::start_with_sinks(plan.config.clone(), ctx, events_tx, sinks)
        .map_err(|e| RunError::Config(e.to_string()))?;
    let targets: BTreeMap<String, u32> = names.iter().map(|n| (n.clone(), 1)).collect();
    engine.apply(&targets, names.len() as u32);

    // The network probe runs from the start to the end.
    let parsed = reqwest::Url::parse(&url).map_err(|e| RunError::Config(format!("endpoint URL {url:?}: {e}")))?;
    let probe_cancel = CancellationToken::new();
    let probe = tokio::spawn(super::network::probe(
        parsed
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_string(),
        parsed.port_or_known_default().unwrap_or(443),
        Duration::from_secs(1),
        probe_cancel.clone(),
    ));

    let tty = std::io::stderr().is_terminal();
    let mut warnings = Vec::new();
    let mut outcome = "completed".to_string();
    let mut aborted = None;
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_plain = Instant::now();
    let mut running = false;
    say("warm-up: one request per load type");
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                outcome = "interrupted".into();
                break;
            }
            ev = events.recv() => match ev {
                Some(EngineEvent::Warning { message, .. }) => {
                    if tty { eprint!("\r\x1b[K"); }
                    say(&format!("warning: {message}"));
                    warnings.push(message);
                }
                Some(EngineEvent::Saturated { reason }) => {
                    if tty { eprint!("\r\x1b[K"); }
                    let m = format!("this machine cannot keep up, timings are not valid: {reason}");
                    say(&format!("warning: {m}"));
                    warnings.push(m);
                }
                Some(EngineEvent::Abort { reason }) | Some(EngineEvent::Exception { msg: reason, .. }) => {
                    outcome = format!("aborted: {reason}");
                    aborted = Some(reason);
                    break;
                }
                None => break,
            },
            _ = tick.tick() => {
                if !running {
                    // Taken before the call that may start the load, so no
                    // arrival of the first phase is scheduled before it.
                    let t = Instant::now();
                    let done = engine.spawn_done();
                    if engine.load_started() {
                        clock.start(t);
                    }
                    if done {
                        running = true;
                        say("warm-up succeeded; load started");
                    } else if engine.warmup_failed() {
                        continue;
                    }
                } else if engine.is_schedule_finished() {
                    break;
                }
                if let Some(origin) = clock.origin() {
                    let elapsed = origin.elapsed().as_secs_f64();
                    let phase = clock.phase_at(Instant::now()).unwrap_or(0);
                    let (sent, failed, p50) = aggregate.live();
                    let line = format!(
                        "phase {}/{phases} ({} req/s) | {:>5.1} s | {sent} ended | {} in flight | {:.2} req/s | TTFT p50 {} | errors {failed}",
                        phase + 1,
                        suite.requests_per_second_rates[phase],
                        elapsed,
                        engine.in_flight(),
                        sent as f64 / elapsed.max(1e-3),
                        p50.map_or("-".into(), |v| format!("{v:.1} ms")),
                    );
                    if tty {
                        eprint!("\r\x1b[K{line}");
                        let _ = std::io::stderr().flush();
                    } else if last_plain.elapsed() >= Duration::from_secs(2) {
                        last_plain = Instant::now();
                        say(&line);
                    }
                }
            }
        }
    }
    if tty {
        eprintln!();
    }
    // Let requests in flight finish (bounded), then stop everything.
    let grace = if aborted.is_some() || outcome == "interrupted" {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(60)
    };
    engine.stop(grace).await;
    probe_cancel.cancel();
    let samples = probe.await.unwrap_or_default();
    let log_result = log.finish();

    let mut percentiles = suite.percentiles.clone();
    for t in &opts.fail_on {
        if let Some(p) = t.percentile()
            && !percentiles.contains(&p)
        {
            percentiles.push(p);
        }
    }
    let tables = aggregate.finish(&percentiles);
    let net_phase = |s: &super::network::Sample| clock.phase_at(s.at);
    let per_phase_net: Vec<_> = (0..phases)
        .map(|p| {
            let v: Vec<_> = samples.iter().filter(|s| net_phase(s) == Some(p)).collect();
            results::net_stats(&v, &percentiles)
        })
        .collect();
    let all_net: Vec<_> = samples.iter().collect();
    results::write_network(&dir.join("network_latency.csv"), &samples, |s| phase_name(net_phase(s)))
        .map_err(|e| io("network_latency.csv", e))?;
    let series = results::series(&tables, &percentiles, &per_phase_net);
    results::write_plots(
        &dir,
        &format!("{}: latency (E2E) per phase", suite.name),
        &suite.requests_per_second_rates,
        &series,
    )
    .map_err(|e| io("latency_quantiles", e))?;

    // The average divergence at the end (per-request ones were printed).
    let d = &tables.total.divergence;
    for (what, rel) in [("prompt", d.prompt_rel), ("output", d.output_rel)] {
        if let Some(r) = rel
            && r > 0.10
        {
            let m = format!(
                "the average {what} token count differs from the target by {:.1} % (more than 10 %); \
                 the results do not describe the configured load",
                r * 100.0
            );
            say(&format!("warning: {m}"));
            warnings.push(m);
        }
    }
    let diverging = aggregate.diverging();
    if diverging > super::aggregate::DIVERGENCE_WARNINGS {
        warnings.push(format!(
            "{diverging} requests diverged by more than 10 % from the target tokens"
        ));
    }

    let fail_on: Vec<FailOnResult> = opts
        .fail_on
        .iter()
        .map(|t| {
            let value = t.value(&tables.total);
            FailOnResult {
                threshold: t.text.clone(),
                limit: t.limit,
                value,
                breached: value.is_some_and(|v| v > t.limit),
            }
        })
        .collect();
    let summary = Summary {
        name: suite.name.clone(),
        started_utc: results::utc_iso(started_unix),
        finished_utc: results::utc_iso(crate::metrics::unix_now()),
        outcome: outcome.clone(),
        endpoint: EndpointSummary {
            provider: plan.provider.clone(),
            model: plan.model.clone(),
            url: url.clone(),
        },
        phase_length_s: suite.test_length_in_seconds,
        percentiles: percentiles.clone(),
        estimated_input_tokens: est_in,
        estimated_output_tokens: est_out,
        diverging_requests: diverging,
        warnings,
        warmup: tables.warmup.clone(),
        phases: tables
            .phases
            .iter()
            .enumerate()
            .map(|(i, (t, lts))| PhaseSummary {
                phase: i + 1,
                requests_per_second: suite.requests_per_second_rates[i],
                duration_s: clock.length(i).as_secs_f64(),
                table: t.clone(),
                network_latency_ms: per_phase_net[i].clone(),
                load_types: lts.clone(),
            })
            .collect(),
        total: tables.total.clone(),
        network_latency_ms: results::net_stats(&all_net, &percentiles),
        fail_on,
    };
    let yaml = serde_yaml::to_string(&summary).map_err(|e| RunError::Io(format!("cannot render summary.yml: {e}")))?;
    std::fs::write(dir.join("summary.yml"), yaml).map_err(|e| io("summary.yml", e))?;
    log_result.map_err(|e| io("llm_requests.csv", e))?;

    let t = &tables.total;
    say(&format!(
        "{outcome}: {} requests ({} warm-up), {} failed; E2E mean {} ms; TTFT p50 {} ms; results in {}",
        t.requests + tables.warmup.requests,
        tables.warmup.requests,
        t.failures + tables.warmup.failures,
        t.latency_ms.mean.map_or("-".into(), |v| format!("{v:.1}")),
        t.ttft_ms.at(50.0).map_or("-".into(), |v| format!("{v:.1}")),
        dir.display()
    ));
    if let Some(reason) = aborted {
        return Err(RunError::Aborted { reason, dir });
    }
    if outcome == "interrupted" {
        return Err(RunError::Interrupted { dir });
    }
    let breached: Vec<String> = summary
        .fail_on
        .iter()
        .filter(|f| f.breached)
        .map(|f| format!("{} (measured {:.3})", f.threshold, f.value.unwrap_or(f64::NAN)))
        .collect();
    if !breached.is_empty() {
        return Err(RunError::Breached { breached, dir });
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_on_thresholds_parse_or_name_the_valid_forms() {
        let t: Threshold = "ttft_p99_ms=500".parse().unwrap();
        assert_eq!((t.metric, t.stat, t.limit), (Metric::Ttft, Some(99.0), 500.0));
        let t: Threshold = "error_rate=0.05".parse().unwrap();
        assert_eq!(t.metric, Metric::ErrorRate);
        let t: Threshold = "latency_mean_ms=20".parse().unwrap();
        assert_eq!((t.metric, t.stat), (Metric::Latency, None));
        for bad in ["ttft=5", "ttft_p0_ms=5", "foo_p50_ms=1", "ttft_p50_ms=-1", "error_rate"] {
            let e = bad.parse::<Threshold>().unwrap_err();
            assert!(e.contains("error_rate=FRACTION"), "{e}");
        }
    }
}
