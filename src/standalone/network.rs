//! `network_latency.csv`: the TCP connect round trip to the target about
//! once a second through the run, so server latency can be told apart
//! from the network's. A probe connects and closes; nothing is sent.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most samples kept (about 28 hours at one a second); later ones are dropped.
pub const MAX_SAMPLES: usize = 100_000;
/// A connect slower than this is recorded as an error.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub unix_s: f64,
    pub connect_ms: Option<f64>,
    pub error: String,
}

/// Probes `host:port` every `interval` until `cancel` fires.
pub async fn probe(host: String, port: u16, interval: Duration, cancel: CancellationToken) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return out,
            _ = tick.tick() => {}
        }
        let at = Instant::now();
        let unix_s = crate::metrics::unix_now();
        let r = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect((host.as_str(), port))).await;
        let (connect_ms, error) = match r {
            Ok(Ok(_stream)) => (Some(at.elapsed().as_secs_f64() * 1e3), String::new()),
            Ok(Err(e)) => (None, e.kind().to_string()),
            Err(_) => (None, "timeout".to_string()),
        };
        if out.len() < MAX_SAMPLES {
            out.push(Sample {
                at,
                unix_s,
                connect_ms,
                error,
            });
        }
    }
}
