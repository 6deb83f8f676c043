//! The engine: one test run on this worker. (stub: load and LLM land later)

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::metrics::{Recorder, Window};
use crate::scenario::TestConfig;

/// Something the worker loop must tell the master.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    Warning { scenario: String, message: String },
    Abort { reason: String },
    Exception { msg: String, traceback: String },
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Setup(String),
}

pub struct Engine {
    recorder: Recorder,
    counts: BTreeMap<String, u32>,
    _events: mpsc::Sender<EngineEvent>,
}

impl Engine {
    pub fn start(config: TestConfig, _host: &str, events: mpsc::Sender<EngineEvent>) -> Result<Engine, EngineError> {
        let recorder = Recorder::new(&config.scenarios, config.slo);
        Ok(Engine {
            recorder,
            counts: BTreeMap::new(),
            _events: events,
        })
    }

    pub fn apply(&mut self, targets: &BTreeMap<String, u32>, _cluster_users: u32) {
        self.counts = targets.clone();
    }

    pub fn user_counts(&self) -> BTreeMap<String, u32> {
        self.counts.clone()
    }

    pub fn spawn_done(&self) -> bool {
        true
    }

    pub fn take_window(&self) -> Window {
        self.recorder.take()
    }

    pub fn recorder(&self) -> Recorder {
        self.recorder.clone()
    }

    pub async fn stop(self, _grace: Duration) {}
}
