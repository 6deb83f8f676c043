//! The results folder `results/<UTC timestamp>_<suite name>/` and the
//! files in it that are written at the end: `summary.yml`,
//! `network_latency.csv`, `latency_quantiles.svg`/`.png` and copies of both
//! inputs. (`llm_requests.csv` and `errors.csv` are written while the run
//! goes, by [`crate::metrics::export::RequestLog`].)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::aggregate::{LatencyStats, Table, Tables, percentile_label};
use super::network::Sample;
use super::plot::{self, PALETTE, Series};

/// `YYYYMMDDTHHMMSSZ` of a Unix time (UTC, proleptic Gregorian).
pub fn utc_stamp(unix_s: u64) -> String {
    let (days, secs) = (unix_s / 86_400, unix_s % 86_400);
    let (y, m, d) = civil(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// ISO 8601 UTC of a Unix time.
pub fn utc_iso(unix_s: f64) -> String {
    let s = utc_stamp(unix_s.max(0.0) as u64);
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    )
}

/// Days since 1970-01-01 -> (year, month, day) (H. Hinnant's algorithm).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Creates `root/<stamp>_<name>` (with a numeric suffix if it exists).
pub fn create_dir(root: &Path, name: &str, unix_s: u64) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(root)?;
    let base = format!("{}_{name}", utc_stamp(unix_s));
    for k in 0..100 {
        let dir = if k == 0 {
            root.join(&base)
        } else {
            root.join(format!("{base}_{k}"))
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(format!(
        "{} exists 100 times",
        root.join(base).display()
    )))
}

/// Network latency of a set of samples, ms.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct NetStats {
    pub probes: u64,
    pub failed: u64,
    pub mean: Option<f64>,
    pub percentiles: BTreeMap<String, Option<f64>>,
}

pub fn net_stats(samples: &[&Sample], percentiles: &[f64]) -> NetStats {
    let mut v: Vec<f64> = samples.iter().filter_map(|s| s.connect_ms).collect();
    v.sort_by(f64::total_cmp);
    let at = |p: f64| {
        (!v.is_empty()).then(|| {
            let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
            v[rank.min(v.len()) - 1]
        })
    };
    NetStats {
        probes: samples.len() as u64,
        failed: samples.iter().filter(|s| s.connect_ms.is_none()).count() as u64,
        mean: (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64),
        percentiles: percentiles.iter().map(|&p| (percentile_label(p), at(p))).collect(),
    }
}

#[derive(Debug, Serialize)]
pub struct PhaseSummary {
    pub phase: usize,
    pub requests_per_second: f64,
    /// The phase's length (phases of tokenswarm's own file may differ).
    pub duration_s: f64,
    #[serde(flatten)]
    pub table: Table,
    pub network_latency_ms: NetStats,
    pub load_types: BTreeMap<String, Table>,
}

#[derive(Debug, Serialize)]
pub struct EndpointSummary {
    pub provider: String,
    pub model: String,
    pub url: String,
}

#[derive(Debug, Serialize)]
pub struct FailOnResult {
    pub threshold: String,
    pub limit: f64,
    pub value: Option<f64>,
    pub breached: bool,
}

/// `summary.yml`.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub name: String,
    pub started_utc: String,
    pub finished_utc: String,
    /// `completed`, `interrupted`, or `aborted: <reason>`.
    pub outcome: String,
    pub endpoint: EndpointSummary,
    pub phase_length_s: f64,
    pub percentiles: Vec<f64>,
    pub estimated_input_tokens: u64,
    pub estimated_output_tokens: u64,
    /// Successful requests whose token counts diverged by more than 10 %.
    pub diverging_requests: u64,
    pub warnings: Vec<String>,
    pub warmup: Table,
    pub phases: Vec<PhaseSummary>,
    pub total: Table,
    pub network_latency_ms: NetStats,
    pub fail_on: Vec<FailOnResult>,
}

/// Writes `network_latency.csv`.
pub fn write_network(path: &Path, samples: &[Sample], phase: impl Fn(&Sample) -> String) -> std::io::Result<()> {
    let mut s = String::from("unix_s,phase,connect_ms,error\n");
    for x in samples {
        s.push_str(&format!(
            "{:.6},{},{},{}\n",
            x.unix_s,
            phase(x),
            x.connect_ms.map(|v| format!("{v:.3}")).unwrap_or_default(),
            crate::metrics::export::csv_cell(&x.error)
        ));
    }
    std::fs::write(path, s)
}

/// The plot's series: mean and each percentile of the latency, and the
/// mean network round trip, per phase.
pub fn series(tables: &Tables, percentiles: &[f64], net: &[NetStats]) -> Vec<Series> {
    let mut out = Vec::new();
    let col = |f: &dyn Fn(&LatencyStats) -> Option<f64>| tables.phases.iter().map(|(t, _)| f(&t.latency_ms)).collect();
    out.push(Series {
        name: "mean".into(),
        color: PALETTE[0],
        values: col(&|l| l.mean),
    });
    for (i, &p) in percentiles.iter().enumerate() {
        out.push(Series {
            name: percentile_label(p),
            color: PALETTE[(i + 1) % (PALETTE.len() - 1)],
            values: col(&|l| l.at(p)),
        });
    }
    out.push(Series {
        name: "network (TCP connect)".into(),
        color: PALETTE[PALETTE.len() - 1],
        values: net.iter().map(|n| n.mean).collect(),
    });
    out
}

/// Writes the plot files.
pub fn write_plots(dir: &Path, title: &str, rates: &[f64], series: &[Series]) -> std::io::Result<()> {
    std::fs::write(dir.join("latency_quantiles.svg"), plot::svg(title, rates, series))?;
    std::fs::write(dir.join("latency_quantiles.png"), plot::png(rates, series))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps_match_known_dates() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        assert_eq!(utc_stamp(1_796_292_245), "20261203T100405Z");
        assert_eq!(utc_iso(1_796_292_245.5), "2026-12-03T10:04:05Z");
    }
}
