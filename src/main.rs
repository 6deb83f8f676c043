//! The `tokenswarm` binary: parses the command line, sets up logging and
//! the runtime, and maps results to exit codes (README, "Exit codes"):
//! 0 ok, 2 usage or configuration error, 3 master lost, 101 panic; `run`
//! adds 1 (aborted or a `--fail-on` limit exceeded) and 130 (interrupted),
//! from `standalone::RunError::exit_code`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokenswarm::locust::{WorkerError, WorkerOptions};
use tokenswarm::scenario::TestConfig;

#[derive(Parser, Debug)]
#[command(
    name = "tokenswarm",
    version,
    about = "A Rust Locust worker for load-testing LLM inference"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Join a Locust master and run the LLM load it distributes.
    Worker(WorkerArgs),
    /// Run the built-in OpenAI/Anthropic-compatible LLM server simulator.
    Sim(Box<tokenswarm::sim::SimArgs>),
    /// Run a tokenflood run suite against an endpoint spec, without a
    /// master; writes results/<UTC timestamp>_<suite name>/.
    Run(RunArgs),
    /// Write a starter run_suite.yml and endpoint_spec.yml that run
    /// against `tokenswarm sim --port 8000`.
    Init {
        /// Directory to write them in.
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Validate a scenarios file and print what it defines.
    Check {
        /// Path to the scenarios YAML file.
        file: std::path::PathBuf,
    },
    /// Print the JSON Schema of the scenarios file (limits and defaults), as
    /// committed in locustfiles/tokenswarm_master/schema.json.
    Schema,
}

#[derive(Args, Debug)]
struct WorkerArgs {
    /// Host of the Locust master.
    #[arg(long, env = "LOCUST_MASTER_NODE_HOST", default_value = "127.0.0.1")]
    master_host: String,
    /// Port of the Locust master (its --master-bind-port).
    #[arg(long, env = "LOCUST_MASTER_NODE_PORT", default_value_t = 5557,
          value_parser = clap::value_parser!(u16).range(1..))]
    master_port: u16,
    /// Seconds without a reachable master before giving up (exit code 3).
    #[arg(long, default_value = "60", value_parser = tokenswarm::units::positive_seconds_flag,
          allow_negative_numbers = true)]
    master_timeout: Duration,
    /// Node id (ZeroMQ identity); default `<hostname>_<random hex>`.
    #[arg(long)]
    node_id: Option<String>,
    /// Only send requests to this HOST[:PORT] (repeat for more; IPv6 as
    /// [::1]:8000). Default: any host the master names.
    #[arg(
        long = "allow-host",
        value_name = "HOST[:PORT]",
        env = "TOKENSWARM_ALLOW_HOSTS",
        value_delimiter = ','
    )]
    allow_hosts: Vec<String>,
    /// Only read API keys from this environment variable (repeat for more).
    /// Default: any variable a scenario's api_key_env names.
    #[arg(
        long = "allow-key-env",
        value_name = "NAME",
        env = "TOKENSWARM_ALLOW_KEY_ENVS",
        value_delimiter = ','
    )]
    allow_key_envs: Vec<String>,
    /// Append one JSON line per finished request to FILE (request id,
    /// scenario, send time, TTFT, TTFA, TPOT, E2E, tokens, status, failure kind).
    #[arg(long, value_name = "FILE")]
    requests_out: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics on HOST:PORT at /metrics.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// tokenflood run suite (YAML), or tokenswarm's scenarios file with --host.
    run_suite: std::path::PathBuf,
    /// tokenflood endpoint spec (YAML); leave out with --host.
    #[arg(required_unless_present = "host")]
    endpoint: Option<std::path::PathBuf>,
    /// Target base URL for a tokenswarm scenarios file (open loop; phases
    /// of any length, ramps allowed): `tokenswarm run scenarios.yaml --host http://HOST:PORT`.
    #[arg(long, conflicts_with = "endpoint")]
    host: Option<String>,
    /// Start without asking for confirmation (required without a terminal).
    #[arg(long, short = 'y')]
    yes: bool,
    /// Folder that receives the run folder.
    #[arg(long, default_value = "results")]
    results: std::path::PathBuf,
    /// Exit 1 when the whole run's value is above the limit (repeatable):
    /// error_rate=FRACTION or {latency,ttft,tpot,itl}_{mean,pNN}_ms=MS.
    #[arg(long = "fail-on", value_name = "METRIC=LIMIT")]
    fail_on: Vec<tokenswarm::standalone::Threshold>,
    /// Goodput SLO: time to first token, ms.
    #[arg(long)]
    slo_ttft_ms: Option<f64>,
    /// Goodput SLO: time per output token, ms.
    #[arg(long)]
    slo_tpot_ms: Option<f64>,
    /// Goodput SLO: end to end, ms.
    #[arg(long)]
    slo_e2e_ms: Option<f64>,
    /// Serve Prometheus metrics on HOST:PORT at /metrics while the run goes.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
}

/// The Prometheus registry served on `addr` (`--metrics-addr`, both modes).
async fn prometheus(addr: &str) -> anyhow::Result<std::sync::Arc<dyn tokenswarm::metrics::OutcomeSink>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics-addr {addr}: cannot listen (use HOST:PORT, e.g. 127.0.0.1:9100)"))?;
    let registry = tokenswarm::metrics::prometheus::Prometheus::new();
    tokio::spawn(registry.clone().serve(listener));
    Ok(registry)
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("tokenswarm panicked (a bug; please report it): {info}");
        std::process::exit(101);
    }));
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TOKENSWARM_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result: anyhow::Result<()> = rt.block_on(async {
        match cli.command {
            Command::Worker(args) => {
                let allow = tokenswarm::llm::AllowList::new(&args.allow_hosts, &args.allow_key_envs)?;
                let mut sinks = tokenswarm::metrics::sink::Sinks::default();
                if let Some(path) = &args.requests_out {
                    let log = tokenswarm::metrics::export::RequestLog::create(
                        tokenswarm::metrics::export::Format::Jsonl,
                        path,
                        None,
                        Box::new(|_| String::new()),
                    )
                    .with_context(|| format!("--requests-out {}: cannot create the file", path.display()))?;
                    sinks.0.push(std::sync::Arc::new(log));
                }
                if let Some(addr) = &args.metrics_addr {
                    sinks.0.push(prometheus(addr).await?);
                }
                let opts = WorkerOptions {
                    master_host: args.master_host,
                    master_port: args.master_port,
                    master_timeout: args.master_timeout,
                    node_id: args.node_id,
                    allow,
                    sinks,
                };
                tokenswarm::locust::run(opts, tokenswarm::shutdown::signal())
                    .await
                    .map_err(anyhow::Error::from)
            }
            Command::Run(a) => {
                let mut sinks = tokenswarm::metrics::sink::Sinks::default();
                if let Some(addr) = &a.metrics_addr {
                    sinks.0.push(prometheus(addr).await?);
                }
                let opts = tokenswarm::standalone::RunOptions {
                    run_suite: a.run_suite,
                    endpoint: a.endpoint,
                    host: a.host,
                    yes: a.yes,
                    results: a.results,
                    fail_on: a.fail_on,
                    slo: tokenswarm::scenario::Slo {
                        ttft_ms: a.slo_ttft_ms,
                        tpot_ms: a.slo_tpot_ms,
                        e2e_ms: a.slo_e2e_ms,
                    },
                    sinks,
                };
                tokenswarm::standalone::run(opts, tokenswarm::shutdown::signal())
                    .await
                    .map(|_| ())
                    .map_err(anyhow::Error::from)
            }
            Command::Init { dir, force } => {
                std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
                for (name, text) in [
                    ("run_suite.yml", tokenswarm::standalone::INIT_RUN_SUITE),
                    ("endpoint_spec.yml", tokenswarm::standalone::INIT_ENDPOINT),
                ] {
                    let path = dir.join(name);
                    if path.exists() && !force {
                        anyhow::bail!("{} exists; pass --force to overwrite it", path.display());
                    }
                    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
                    println!("wrote {}", path.display());
                }
                println!(
                    "next: tokenswarm sim --port 8000 &  then  tokenswarm run {} {}",
                    dir.join("run_suite.yml").display(),
                    dir.join("endpoint_spec.yml").display()
                );
                Ok(())
            }
            Command::Sim(args) => tokenswarm::sim::run(*args).await.map_err(anyhow::Error::from),
            Command::Check { file } => {
                let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
                let cfg = TestConfig::from_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                for s in &cfg.scenarios {
                    println!(
                        "{}: {:?} {} prompt={} prefix={} output={} weight={}",
                        s.name, s.provider, s.model, s.prompt_length, s.prefix_length, s.output_length, s.weight
                    );
                    if let Some(d) = &s.dataset {
                        check_dataset(&file, &s.name, d)?;
                    }
                }
                if cfg.load.mode == tokenswarm::scenario::LoadMode::Open {
                    let planned = tokenswarm::load::arrivals::RateSchedule::new(&cfg.load.phases).total();
                    println!("open loop: {planned:.0} requests planned");
                }
                Ok(())
            }
            Command::Schema => {
                print!("{}", tokenswarm::scenario::schema::emit());
                Ok(())
            }
        }
    });
    // Leave at once: stray tasks (e.g. a socket reader) must not delay exit.
    rt.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = match (
                e.downcast_ref::<WorkerError>(),
                e.downcast_ref::<tokenswarm::standalone::RunError>(),
            ) {
                (Some(WorkerError::MasterLost { .. }), _) => 3,
                (_, Some(r)) => r.exit_code(),
                _ => 2,
            };
            ExitCode::from(code)
        }
    }
}

/// `check`: reads and parses a scenario's dataset as the run will (relative
/// paths: to the scenarios file), so a bad line shows before a run.
fn check_dataset(file: &std::path::Path, scenario: &str, d: &tokenswarm::scenario::Dataset) -> anyhow::Result<()> {
    use tokenswarm::dataset::{MAX_SHIPPED_DATASET_BYTES, Prompts};
    let mut local = d.clone();
    if local.content.is_none() {
        let path = std::path::Path::new(&d.path);
        let full = if path.is_absolute() {
            path.to_path_buf()
        } else {
            file.parent().unwrap_or(std::path::Path::new(".")).join(path)
        };
        if !d.shared_storage
            && let Ok(meta) = std::fs::metadata(&full)
            && meta.len() > MAX_SHIPPED_DATASET_BYTES
        {
            anyhow::bail!(
                "scenario {scenario:?}: dataset {} is {} bytes, over the {MAX_SHIPPED_DATASET_BYTES} the master ships; \
                 set shared_storage: true with a path every worker can read",
                d.path,
                meta.len()
            );
        }
        local.path = full.to_string_lossy().into_owned();
        local.shared_storage = true;
    }
    let prompts = Prompts::load(&local).map_err(|e| anyhow::anyhow!("scenario {scenario:?}: {e}"))?;
    println!(
        "  dataset {}: {} records ({} skipped)",
        d.path,
        prompts.len(),
        prompts.skipped
    );
    Ok(())
}
