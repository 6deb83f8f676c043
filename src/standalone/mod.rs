//! Standalone runs without a Locust master: `tokenswarm run RUN_SUITE
//! ENDPOINT` (tokenflood's formats, [`spec`]), `tokenswarm run
//! SCENARIOS.yaml --host URL` (tokenswarm's own file, open loop) and
//! `tokenswarm init`.
//!
//! Owns the translation of tokenflood's files ([`spec`]), the run's
//! aggregate sink ([`aggregate`]), the network probe ([`network`]), the
//! plot ([`plot`]), the results folder ([`results`]) and the run itself
//! ([`mod@run`]). It reuses the worker's engine, load controller, LLM client and
//! histograms and must not re-implement them.
pub mod aggregate;
pub mod network;
pub mod plot;
pub mod results;
pub mod run;
pub mod spec;

pub use run::{RunError, RunOptions, Threshold, run};

/// The starter pair `tokenswarm init` writes: the seed's `ripple` suite
/// and an endpoint spec pointing at `tokenswarm sim --port 8000`.
pub const INIT_RUN_SUITE: &str = include_str!("../../examples/tokenflood/run_suite.yml");
pub const INIT_ENDPOINT: &str = include_str!("../../examples/tokenflood/endpoint_spec.yml");
