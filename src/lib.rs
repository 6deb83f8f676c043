//! # tokenswarm
//!
//! A Locust worker, written in Rust, that load-tests LLM inference servers.
//! A stock Locust master drives it over Locust's own ZeroMQ + msgpack
//! protocol; it sends token-shaped, streamed LLM requests and reports LLM
//! metrics beside Locust's request table.
//!
//! # Layout (one owner per concern)
//! - [`scenario`]: the test definition (scenarios, load, SLOs) and its validation.
//! - [`dataset`]: prompts read from JSONL / ShareGPT files and their sampling.
//! - [`outcome`]: what one request measured; the only type from `llm` to `metrics`.
//! - [`llm`]: token-shaped prompts, request bodies per provider, SSE parsing,
//!   per-request timings.
//! - [`load`]: users and arrival schedules: ramps, wait times, open-loop rates.
//! - [`metrics`]: the one pipeline of sinks (`metrics::sink`): Locust windows
//!   and LLM histograms, per-request export, Prometheus.
//! - [`locust`]: the Locust worker protocol; `locust::wire` alone sees msgpack.
//! - [`engine`]: one test run on a worker: wires load, LLM client and metrics.
//! - [`shutdown`]: SIGINT/SIGTERM for every subcommand.
//! - [`sim`]: the built-in OpenAI/Anthropic-compatible server simulator.
//! - [`standalone`]: `tokenswarm run` without a master (tokenflood's run
//!   suites and endpoint specs) and its results folder.
//! - [`units`]: float seconds from users to bounded `Duration`s (the only place).

pub mod dataset;
pub mod engine;
pub mod llm;
pub mod load;
pub mod locust;
pub mod metrics;
pub mod outcome;
pub mod scenario;
pub mod shutdown;
pub mod sim;
pub mod standalone;
pub mod units;
