//! Per-request export: one row per finished request, as CSV
//! (`llm_requests.csv` of a standalone run, with `errors.csv` beside it) or
//! JSON lines (`tokenswarm worker --requests-out FILE`), same fields.
//!
//! Rows are written through a buffer under one lock; nothing is kept in
//! memory beyond it. The first write error stops the export (and is
//! returned by [`RequestLog::finish`]) rather than failing requests.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

use super::{OutcomeSink, RecordNote, RequestRecord};

/// Names a request's phase (standalone: `warmup`, `1`, `2`, ...).
pub type PhaseLabel = Box<dyn Fn(&RequestRecord<'_>) -> String + Send + Sync>;

/// The per-request columns, in order.
pub const COLUMNS: [&str; 15] = [
    "request_id",
    "phase",
    "load_type",
    "scheduled_unix_s",
    "sent_unix_s",
    "ttft_ms",
    "ttfa_ms",
    "tpot_ms",
    "e2e_ms",
    "latency_ms",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "status",
    "failure_kind",
];

/// The columns of `errors.csv`.
pub const ERROR_COLUMNS: [&str; 7] = [
    "request_id",
    "sent_unix_s",
    "phase",
    "load_type",
    "failure_kind",
    "summary",
    "detail",
];

/// One row; `None` is an empty CSV cell or a JSON null.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub request_id: String,
    pub phase: String,
    pub load_type: String,
    pub scheduled_unix_s: f64,
    pub sent_unix_s: f64,
    pub ttft_ms: Option<f64>,
    pub ttfa_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2e_ms: Option<f64>,
    /// Send -> end of the response (the Locust entry's response time).
    pub latency_ms: f64,
    pub input_tokens: Option<u64>,
    pub output_tokens: u64,
    pub cached_tokens: Option<u64>,
    /// `ok` or `failed`.
    pub status: &'static str,
    /// `FailureKind::label` (`http_429`, `timeout`, ...), empty on success.
    pub failure_kind: String,
}

impl Row {
    pub fn new(r: &RequestRecord<'_>, phase: String, load_type: &str) -> Row {
        let o = r.outcome;
        let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1e3);
        Row {
            request_id: r.request_id(),
            phase,
            load_type: load_type.to_string(),
            scheduled_unix_s: r.scheduled_unix_s(),
            sent_unix_s: o.sent_unix_s,
            ttft_ms: ms(o.ttft),
            ttfa_ms: ms(o.ttfa),
            tpot_ms: if o.failure.is_none() { ms(o.tpot()) } else { None },
            e2e_ms: if o.failure.is_none() { ms(o.e2e) } else { None },
            latency_ms: o.total.as_secs_f64() * 1e3,
            input_tokens: o.usage.input_tokens,
            output_tokens: o.output_tokens(),
            cached_tokens: o.usage.cached_tokens,
            status: if o.failure.is_none() { "ok" } else { "failed" },
            failure_kind: o.failure.as_ref().map(|f| f.kind().label()).unwrap_or_default(),
        }
    }

    fn csv(&self) -> String {
        let f = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
        let u = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        [
            csv_cell(&self.request_id),
            csv_cell(&self.phase),
            csv_cell(&self.load_type),
            format!("{:.6}", self.scheduled_unix_s),
            format!("{:.6}", self.sent_unix_s),
            f(self.ttft_ms),
            f(self.ttfa_ms),
            f(self.tpot_ms),
            f(self.e2e_ms),
            format!("{:.3}", self.latency_ms),
            u(self.input_tokens),
            self.output_tokens.to_string(),
            u(self.cached_tokens),
            self.status.to_string(),
            csv_cell(&self.failure_kind),
        ]
        .join(",")
    }
}

/// A CSV cell, quoted when it holds a comma, a quote or a line break.
pub fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Output format of a [`RequestLog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A header line, then one row per request; failures also go to the
    /// errors file when there is one.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

struct Files {
    rows: BufWriter<File>,
    errors: Option<BufWriter<File>>,
    error: Option<std::io::Error>,
}

/// The per-request writer sink.
pub struct RequestLog {
    format: Format,
    phase: PhaseLabel,
    files: Mutex<Files>,
}

impl RequestLog {
    /// Creates `path` (and `errors`, CSV only) and writes the headers.
    pub fn create(
        format: Format,
        path: &Path,
        errors: Option<&Path>,
        phase: PhaseLabel,
    ) -> std::io::Result<RequestLog> {
        let mut rows = BufWriter::new(File::create(path)?);
        if format == Format::Csv {
            writeln!(rows, "{}", COLUMNS.join(","))?;
        }
        let errors = match errors {
            Some(p) => {
                let mut w = BufWriter::new(File::create(p)?);
                writeln!(w, "{}", ERROR_COLUMNS.join(","))?;
                Some(w)
            }
            None => None,
        };
        Ok(RequestLog {
            format,
            phase,
            files: Mutex::new(Files {
                rows,
                errors,
                error: None,
            }),
        })
    }

    /// Flushes both files; the first write error of the run, if any.
    pub fn finish(&self) -> std::io::Result<()> {
        let mut f = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = f.error.take() {
            return Err(e);
        }
        f.rows.flush()?;
        if let Some(w) = &mut f.errors {
            w.flush()?;
        }
        Ok(())
    }
}

impl OutcomeSink for RequestLog {
    fn record(&self, r: &RequestRecord<'_>) -> RecordNote {
        let name = r.scenario;
        let row = Row::new(r, (self.phase)(r), name);
        let line = match self.format {
            Format::Csv => row.csv(),
            Format::Jsonl => serde_json::to_string(&row).unwrap_or_default(),
        };
        let mut f = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if f.error.is_some() {
            return RecordNote::default();
        }
        let mut result = writeln!(f.rows, "{line}");
        if let (Some(fail), Some(w)) = (&r.outcome.failure, &mut f.errors) {
            let err_line = [
                csv_cell(&row.request_id),
                format!("{:.6}", row.sent_unix_s),
                csv_cell(&row.phase),
                csv_cell(name),
                csv_cell(&row.failure_kind),
                csv_cell(fail.summary()),
                csv_cell(fail.detail()),
            ]
            .join(",");
            result = result.and_then(|()| writeln!(w, "{err_line}"));
        }
        // A worker's log is read while it runs and never finished: JSON
        // lines are flushed one by one.
        if self.format == Format::Jsonl {
            result = result.and_then(|()| f.rows.flush());
        }
        if let Err(e) = result {
            f.error = Some(e);
        }
        RecordNote::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Failure, FailureKind, Outcome};

    /// CSV rows have one cell per column, failures go to errors.csv with
    /// their kind, and JSONL lines carry the same fields.
    #[test]
    fn rows_and_errors_are_written_with_every_column() {
        let dir = std::env::temp_dir().join(format!("tokenswarm-export-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (rows, errs, jl) = (dir.join("r.csv"), dir.join("e.csv"), dir.join("r.jsonl"));
        let csv = RequestLog::create(Format::Csv, &rows, Some(&errs), Box::new(|_| "1".into())).unwrap();
        let json = RequestLog::create(Format::Jsonl, &jl, None, Box::new(|_| String::new())).unwrap();
        let ok = Outcome::default();
        let bad = Outcome {
            failure: Some(Failure::new(FailureKind::HttpStatus(429), "HTTP 429, slow down", "x")),
            ..Outcome::default()
        };
        for (seq, o) in [(1, &ok), (2, &bad)] {
            let r = RequestRecord {
                class: 0,
                scenario: "a",
                seq,
                scheduled: tokio::time::Instant::now(),
                warmup: false,
                outcome: o,
                turn: None,
            };
            csv.record(&r);
            json.record(&r);
        }
        csv.finish().unwrap();
        json.finish().unwrap();
        let text = std::fs::read_to_string(&rows).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.split(',').count() == COLUMNS.len()), "{text}");
        assert!(lines[2].starts_with("0000000000000002,1,a,") && lines[2].ends_with(",failed,http_429"));
        let e = std::fs::read_to_string(&errs).unwrap();
        assert!(
            e.lines().nth(1).unwrap().contains("\"http_429: HTTP 429, slow down\""),
            "{e}"
        );
        let j: Vec<serde_json::Value> = std::fs::read_to_string(&jl)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(j.len(), 2);
        assert_eq!(j[1]["failure_kind"], "http_429");
        assert_eq!(j[0].as_object().unwrap().len(), COLUMNS.len());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
