//! The Locust worker protocol.
//!
//! - [`wire`]: frames <-> typed messages; the only msgpack code.
//! - [`transport`]: one disposable ZeroMQ DEALER connection.
//! - [`worker`]: the loop that registers, heartbeats, spawns, stops, reports.
//! - [`process`]: CPU and memory figures for the heartbeat.

pub mod process;
pub mod transport;
pub mod wire;
pub mod worker;

pub use worker::{WorkerError, WorkerOptions, run};
