//! The Locust worker protocol.
//!
//! - [`wire`]: frames <-> typed messages; the only msgpack code.
//! - [`transport`]: one disposable connection: a minimal, bounded ZMTP 3.0 DEALER.
//! - [`state`]: the protocol as a pure state machine (no I/O, table-tested).
//! - [`worker`]: the driver that performs its actions: registers, heartbeats, spawns, stops, reports.
//! - [`process`]: CPU and memory figures for the heartbeat.

pub mod process;
pub mod state;
pub mod transport;
pub mod wire;
pub mod worker;

pub use worker::{WorkerError, WorkerOptions, run};
