//! The Locust wire format: the only module that sees msgpack.
//!
//! Every ZeroMQ frame between a Locust master and a worker is one msgpack
//! array `[type: str, data: any, node_id: str]` (Locust's `rpc/protocol.py`).
//! This module turns frames into [`MasterMsg`] and [`WorkerMsg`] into frames;
//! the rest of the crate deals in those typed messages only.
//!
//! Encoding rules that the master depends on (Locust's `rpc/protocol.py`
//! and `runners.py`; tests/wire_golden.rs pins them with Locust's own
//! encoder and decoder):
//! - payload structs are msgpack **maps** (`rmp_serde::to_vec_named`);
//! - strings are msgpack `str`, never `bin` (the master unpacks with `raw=False`);
//! - histogram and per-second maps have **integer** keys.
//!
//! Decoding is generic (`rmpv::Value`) because `spawn.parsed_options` is the
//! master's whole argparse namespace, with mixed types and nulls; we pick the
//! few keys we use and ignore the rest.
//!
//! Limits. The master link comes from the network, so what a frame can make
//! this process allocate is bounded before decoding: a frame is at most
//! [`MAX_FRAME_BYTES`] (the transport refuses bigger ones unread), and
//! [`scan`] walks the msgpack bytes without allocating to refuse more than
//! [`MAX_VALUES`] values, nesting deeper than [`MAX_DEPTH`], or a string
//! or binary longer than [`MAX_STRING_BYTES`]. A decoded `spawn` is then
//! held to [`MAX_USERS_PER_WORKER`] users (summed with saturation) over at
//! most [`MAX_USER_CLASSES`] classes, with a finite timestamp. A message
//! over a limit is a [`WireError::Limit`]: the worker reports it to the
//! master as an `exception` and carries on (docs/contracts.md §5).

use std::collections::BTreeMap;

use rmpv::Value;
use serde::Serialize;

use crate::metrics::report::{LlmReport, RequestEntry, StatsError};
use crate::scenario::TestConfig;

/// The Locust version whose protocol this worker speaks; sent in `client_ready`.
/// A master of another major.minor only logs a warning.
pub const LOCUST_PROTOCOL_VERSION: &str = "2.47.0";

/// Largest message from the master, in bytes. A `spawn` with the master's
/// whole `parsed_options` and a test definition of many scenarios is tens
/// of KiB; anything near this bound is not a Locust master.
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// Most msgpack values (scalars and containers) in one message. Bounds the
/// decoded tree (about 40 bytes a value): a few MiB at most.
pub const MAX_VALUES: usize = 100_000;
/// Deepest nesting of arrays and maps in one message.
pub const MAX_DEPTH: usize = 32;
/// Longest string or binary value in one message.
pub const MAX_STRING_BYTES: usize = 1024 * 1024;
/// Most users one worker accepts in a `spawn` (all classes together).
pub const MAX_USERS_PER_WORKER: u32 = 100_000;
/// Most user classes in a `spawn`.
pub const MAX_USER_CLASSES: usize = 1_000;
/// Largest `worker_count` the master can announce.
pub const MAX_WORKERS: u32 = 100_000;

/// Errors decoding a frame from the master.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("message refused: {0}")]
    Limit(String),
    #[error("frame is not valid msgpack: {0}")]
    Msgpack(String),
    #[error("frame is not a [type, data, node_id] array")]
    Envelope,
    #[error("`{kind}` message has a bad `{field}`: {detail}")]
    Field {
        kind: &'static str,
        field: &'static str,
        detail: String,
    },
}

/// A `spawn` message: one ramp step with absolute per-class user targets.
#[derive(Debug, Clone, PartialEq)]
pub struct Spawn {
    /// Master's wall clock when it sent the step; stale steps are ignored.
    pub timestamp: f64,
    /// Absolute target users per user class (not a delta).
    pub user_classes_count: BTreeMap<String, u32>,
    pub host: Option<String>,
    /// Seconds users may take to finish in-flight work on stop.
    pub stop_timeout: Option<f64>,
    /// `parsed_options.tokenswarm_config`: `None` when the master's
    /// locustfile sent none, `Some(Err(text))` when it did not parse.
    pub config: Option<Result<TestConfig, String>>,
    /// `tokenswarm_config.cluster_users`: all users across the cluster when
    /// the run started (the open-loop rate share is my users / this).
    pub cluster_users: Option<u32>,
    /// `tokenswarm_config.worker_count`: workers in the cluster when the
    /// step was sent; with the `ack` index it spreads starts across workers.
    pub worker_count: Option<u32>,
    /// The master's spawn rate (users/s, cluster total), for logging.
    pub spawn_rate: Option<f64>,
}

/// A message from the master, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum MasterMsg {
    Ack {
        index: Option<i64>,
    },
    Spawn(Box<Spawn>),
    Stop,
    Quit,
    Reconnect,
    Heartbeat,
    /// The whole ramp is done (2.47.0 sends it; older masters do not).
    SpawningComplete {
        user_count: Option<i64>,
    },
    /// Class editing from the web UI; we log it and carry on.
    UpdateUserClass,
    /// `tokenswarm_flush`: our master plugin is about to quit and waits for
    /// every request's stats (Locust's own master waits only 0.5 s after
    /// `quit`); answered with [`WorkerMsg::Flushed`] after the final stats.
    Flush,
    /// A custom message (`runner.send_message`), data converted to JSON.
    Custom {
        kind: String,
        data: serde_json::Value,
    },
}

/// A worker's lifecycle state, as the master's heartbeat expects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    Ready,
    Spawning,
    Running,
    Stopped,
}

/// The `stats` payload: Locust's own keys plus our versioned `llm` key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsPayload {
    pub stats: Vec<RequestEntry>,
    pub stats_total: RequestEntry,
    pub errors: BTreeMap<String, StatsError>,
    pub user_classes_count: BTreeMap<String, u32>,
    pub user_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmReport>,
}

/// A message to the master.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerMsg {
    ClientReady,
    Heartbeat {
        state: WorkerState,
        cpu_percent: f64,
        memory_bytes: u64,
    },
    Spawning,
    SpawningComplete {
        user_classes_count: BTreeMap<String, u32>,
        user_count: u32,
    },
    Stats(Box<StatsPayload>),
    ClientStopped,
    Quit,
    Exception {
        msg: String,
        traceback: String,
    },
    /// `tokenswarm_flushed`: the answer to [`MasterMsg::Flush`], sent on
    /// the same connection after the final stats (so they arrive first).
    Flushed,
    Custom {
        kind: String,
        data: serde_json::Value,
    },
}

#[derive(Serialize)]
struct HeartbeatData {
    state: WorkerState,
    current_cpu_usage: f64,
    current_memory_usage: u64,
}

#[derive(Serialize)]
struct SpawningCompleteData<'a> {
    user_classes_count: &'a BTreeMap<String, u32>,
    user_count: u32,
}

#[derive(Serialize)]
struct ExceptionData<'a> {
    msg: &'a str,
    traceback: &'a str,
}

fn pack<T: Serialize>(kind: &str, data: &T, node_id: &str) -> Vec<u8> {
    // Serializing plain structs, strings and maps into a Vec cannot fail;
    // an error here would be a bug in a payload type, so fall back to nil data.
    rmp_serde::to_vec_named(&(kind, data, node_id))
        .unwrap_or_else(|_| rmp_serde::to_vec_named(&(kind, (), node_id)).unwrap_or_default())
}

/// Encodes a worker message as one frame.
pub fn encode(msg: &WorkerMsg, node_id: &str) -> Vec<u8> {
    match msg {
        WorkerMsg::ClientReady => pack("client_ready", &LOCUST_PROTOCOL_VERSION, node_id),
        WorkerMsg::Heartbeat {
            state,
            cpu_percent,
            memory_bytes,
        } => pack(
            "heartbeat",
            &HeartbeatData {
                state: *state,
                current_cpu_usage: *cpu_percent,
                current_memory_usage: *memory_bytes,
            },
            node_id,
        ),
        WorkerMsg::Spawning => pack("spawning", &(), node_id),
        WorkerMsg::SpawningComplete {
            user_classes_count,
            user_count,
        } => pack(
            "spawning_complete",
            &SpawningCompleteData {
                user_classes_count,
                user_count: *user_count,
            },
            node_id,
        ),
        WorkerMsg::Stats(payload) => pack("stats", payload.as_ref(), node_id),
        WorkerMsg::ClientStopped => pack("client_stopped", &(), node_id),
        WorkerMsg::Quit => pack("quit", &(), node_id),
        WorkerMsg::Exception { msg, traceback } => pack("exception", &ExceptionData { msg, traceback }, node_id),
        WorkerMsg::Flushed => pack("tokenswarm_flushed", &serde_json::json!({}), node_id),
        WorkerMsg::Custom { kind, data } => pack(kind, data, node_id),
    }
}

/// Decodes one frame from the master.
pub fn decode(frame: &[u8]) -> Result<MasterMsg, WireError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(WireError::Limit(format!(
            "a frame of {} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes",
            frame.len()
        )));
    }
    scan(frame)?;
    let mut cursor = frame;
    let value = rmpv::decode::read_value(&mut cursor).map_err(|e| WireError::Msgpack(e.to_string()))?;
    let Value::Array(mut parts) = value else {
        return Err(WireError::Envelope);
    };
    if parts.len() != 3 {
        return Err(WireError::Envelope);
    }
    let data = std::mem::replace(&mut parts[1], Value::Nil);
    let kind = parts[0].as_str().ok_or(WireError::Envelope)?;
    Ok(match kind {
        "ack" => MasterMsg::Ack {
            index: get(&data, "index").and_then(Value::as_i64),
        },
        "spawn" => MasterMsg::Spawn(Box::new(decode_spawn(data)?)),
        "stop" => MasterMsg::Stop,
        "quit" => MasterMsg::Quit,
        "reconnect" => MasterMsg::Reconnect,
        "heartbeat" => MasterMsg::Heartbeat,
        "spawning_complete" => MasterMsg::SpawningComplete {
            user_count: get(&data, "user_count").and_then(Value::as_i64),
        },
        "update_user_class" => MasterMsg::UpdateUserClass,
        "tokenswarm_flush" => MasterMsg::Flush,
        other => MasterMsg::Custom {
            kind: other.to_string(),
            data: to_json(&data),
        },
    })
}

fn get<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

fn number(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_i64().map(|i| i as f64))
        .or_else(|| v.as_u64().map(|u| u as f64))
}

fn decode_spawn(data: Value) -> Result<Spawn, WireError> {
    let field = |field: &'static str, detail: String| WireError::Field {
        kind: "spawn",
        field,
        detail,
    };
    let timestamp = get(&data, "timestamp")
        .and_then(number)
        .ok_or_else(|| field("timestamp", "missing".into()))?;
    if !timestamp.is_finite() {
        return Err(field("timestamp", format!("{timestamp} is not a time")));
    }
    let mut user_classes_count = BTreeMap::new();
    let counts = get(&data, "user_classes_count")
        .and_then(Value::as_map)
        .ok_or_else(|| field("user_classes_count", "missing or not a map".into()))?;
    if counts.len() > MAX_USER_CLASSES {
        return Err(WireError::Limit(format!(
            "spawn has {} user classes; the limit is {MAX_USER_CLASSES}",
            counts.len()
        )));
    }
    let mut users = 0u64;
    for (k, v) in counts {
        let name = k
            .as_str()
            .ok_or_else(|| field("user_classes_count", format!("key {k} is not a string")))?;
        let n = v
            .as_u64()
            .ok_or_else(|| field("user_classes_count", format!("count {v} for {name} is not a count")))?;
        users = users.saturating_add(n);
        if users > u64::from(MAX_USERS_PER_WORKER) {
            return Err(WireError::Limit(format!(
                "spawn asks this worker for {users} or more users; the limit is {MAX_USERS_PER_WORKER} per worker \
                 (run more workers)"
            )));
        }
        // Fits: users <= MAX_USERS_PER_WORKER < u32::MAX.
        user_classes_count.insert(name.to_string(), n as u32);
    }
    let host = get(&data, "host").and_then(Value::as_str).map(str::to_string);
    let stop_timeout = get(&data, "stop_timeout").and_then(number);
    let options = get(&data, "parsed_options");
    let mut config_value = options
        .and_then(|o| get(o, "tokenswarm_config"))
        .filter(|v| !v.is_nil())
        .cloned();
    // `cluster_users` rides along in the config map but is not part of the
    // test definition; take it out before the strict schema sees it.
    let mut take_count = |key: &str| {
        let Some(Value::Map(entries)) = config_value.as_mut() else {
            return None;
        };
        let pos = entries.iter().position(|(k, _)| k.as_str() == Some(key))?;
        let (_, v) = entries.remove(pos);
        v.as_u64().map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    let cluster_users = take_count("cluster_users");
    let worker_count = take_count("worker_count").map(|n| n.min(MAX_WORKERS));
    let config = config_value.map(|v| {
        // Through JSON: rmpv's deserializer cannot read enums written as strings.
        TestConfig::from_json(to_json(&v))
            .map_err(|e| format!("the master's tokenswarm_config does not match this worker's schema: {e}"))
    });
    let spawn_rate = options.and_then(|o| get(o, "spawn_rate")).and_then(number);
    Ok(Spawn {
        timestamp,
        user_classes_count,
        host,
        stop_timeout,
        config,
        cluster_users,
        worker_count,
        spawn_rate,
    })
}

/// Walks one msgpack value in `bytes` without allocating and refuses it if
/// it breaks [`MAX_VALUES`], [`MAX_DEPTH`] or [`MAX_STRING_BYTES`], or
/// announces more elements than bytes remain (each takes at least one).
/// Truncated or invalid data is left for the decoder to report.
pub fn scan(bytes: &[u8]) -> Result<(), WireError> {
    let limit = |what: String| Err(WireError::Limit(what));
    // Elements still to read in each open container, innermost last.
    let mut open: Vec<u64> = Vec::new();
    let mut values = 0usize;
    let mut pos = 0usize;
    let be = |at: usize, n: usize| -> Option<u64> {
        let b = bytes.get(at..at.checked_add(n)?)?;
        Some(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    };
    loop {
        let Some(&marker) = bytes.get(pos) else {
            return Ok(()); // truncated: the decoder says so
        };
        values += 1;
        if values > MAX_VALUES {
            return limit(format!("more than {MAX_VALUES} msgpack values in one message"));
        }
        // (header bytes, payload bytes, child elements)
        let (header, payload, children): (usize, u64, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0, 0),
            0x80..=0x8f => (1, 0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (1, 0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (1, u64::from(marker & 0x1f), 0),
            0xc1 => return Ok(()), // never used: the decoder rejects it
            0xc4 | 0xd9 => (2, be(pos + 1, 1).unwrap_or(0), 0),
            0xc5 | 0xda => (3, be(pos + 1, 2).unwrap_or(0), 0),
            0xc6 | 0xdb => (5, be(pos + 1, 4).unwrap_or(0), 0),
            0xc7 => (3, be(pos + 1, 1).unwrap_or(0), 0),
            0xc8 => (4, be(pos + 1, 2).unwrap_or(0), 0),
            0xc9 => (6, be(pos + 1, 4).unwrap_or(0), 0),
            0xca => (1, 4, 0),
            0xcb => (1, 8, 0),
            0xcc | 0xd0 => (1, 1, 0),
            0xcd | 0xd1 => (1, 2, 0),
            0xce | 0xd2 => (1, 4, 0),
            0xcf | 0xd3 => (1, 8, 0),
            0xd4 => (2, 1, 0),
            0xd5 => (2, 2, 0),
            0xd6 => (2, 4, 0),
            0xd7 => (2, 8, 0),
            0xd8 => (2, 16, 0),
            0xdc => (3, 0, be(pos + 1, 2).unwrap_or(0)),
            0xdd => (5, 0, be(pos + 1, 4).unwrap_or(0)),
            0xde => (3, 0, 2 * be(pos + 1, 2).unwrap_or(0)),
            0xdf => (5, 0, 2 * be(pos + 1, 4).unwrap_or(0)),
        };
        if payload > MAX_STRING_BYTES as u64 {
            return limit(format!(
                "a msgpack string or binary of {payload} bytes exceeds the limit of {MAX_STRING_BYTES} bytes"
            ));
        }
        pos = pos.saturating_add(header).saturating_add(payload as usize);
        // This value fills one slot of the container it is in.
        if let Some(left) = open.last_mut() {
            *left -= 1;
        }
        if children > 0 {
            if children > bytes.len().saturating_sub(pos) as u64 {
                return limit(format!(
                    "a msgpack container announces {children} elements in {} remaining bytes",
                    bytes.len().saturating_sub(pos)
                ));
            }
            if open.len() >= MAX_DEPTH {
                return limit(format!("msgpack nesting deeper than {MAX_DEPTH}"));
            }
            open.push(children);
        }
        while open.last() == Some(&0) {
            open.pop();
        }
        if open.is_empty() {
            return Ok(());
        }
    }
}

/// Converts msgpack data to JSON for custom messages, so that callers never
/// see msgpack values. Binary becomes an array of bytes; non-string map keys
/// become their text.
fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => i
            .as_i64()
            .map(J::from)
            .or_else(|| i.as_u64().map(J::from))
            .unwrap_or(J::Null),
        Value::F32(f) => serde_json::Number::from_f64(f64::from(*f)).map_or(J::Null, J::Number),
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::String(s) => J::String(s.as_str().unwrap_or_default().to_string()),
        Value::Binary(b) => J::Array(b.iter().map(|x| J::from(*x)).collect()),
        Value::Array(a) => J::Array(a.iter().map(to_json).collect()),
        Value::Map(m) => J::Object(
            m.iter()
                .map(|(k, v)| {
                    (
                        k.as_str().map(str::to_string).unwrap_or_else(|| k.to_string()),
                        to_json(v),
                    )
                })
                .collect(),
        ),
        Value::Ext(_, _) => J::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: &str, data: Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &Value::Array(vec![kind.into(), data, "master".into()])).unwrap();
        out
    }

    #[test]
    fn heartbeat_is_a_map_with_the_keys_the_master_reads() {
        // The master does data["state"] and data["current_cpu_usage"]: a map, not an array.
        let bytes = encode(
            &WorkerMsg::Heartbeat {
                state: WorkerState::Running,
                cpu_percent: 12.5,
                memory_bytes: 1024,
            },
            "w1",
        );
        let v = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
        let parts = v.as_array().unwrap();
        assert_eq!(parts[0].as_str(), Some("heartbeat"));
        assert_eq!(get(&parts[1], "state").and_then(Value::as_str), Some("running"));
        assert_eq!(get(&parts[1], "current_cpu_usage").and_then(Value::as_f64), Some(12.5));
        assert_eq!(parts[2].as_str(), Some("w1"));
    }

    #[test]
    fn unknown_types_become_custom_messages_with_json_data() {
        let data = Value::Map(vec![("x".into(), Value::from(3))]);
        let msg = decode(&frame("llm_info", data)).unwrap();
        assert_eq!(
            msg,
            MasterMsg::Custom {
                kind: "llm_info".into(),
                data: serde_json::json!({"x": 3})
            }
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(&[0xc1]).is_err());
        assert!(decode(&frame("ack", Value::Nil)[..3]).is_err());
        assert!(matches!(
            decode(&frame("spawn", Value::Nil)),
            Err(WireError::Field { field: "timestamp", .. })
        ));
    }

    fn spawn_with(counts: Vec<(Value, Value)>) -> Vec<u8> {
        frame(
            "spawn",
            Value::Map(vec![
                ("timestamp".into(), Value::F64(1.0)),
                ("user_classes_count".into(), Value::Map(counts)),
            ]),
        )
    }

    #[test]
    fn spawn_users_are_limited_per_worker_with_saturating_sums() {
        // Issue 13: 4,294,967,295 users made the worker abort allocating.
        let huge = spawn_with(vec![("Chat".into(), Value::from(4_294_967_295u64))]);
        assert!(matches!(decode(&huge), Err(WireError::Limit(m)) if m.contains("100000")));
        // Two classes whose sum overflows u64 saturate and are refused.
        let two = spawn_with(vec![
            ("A".into(), Value::from(u64::MAX)),
            ("B".into(), Value::from(u64::MAX)),
        ]);
        assert!(matches!(decode(&two), Err(WireError::Limit(_))));
        let ok = spawn_with(vec![
            ("A".into(), Value::from(60_000)),
            ("B".into(), Value::from(40_000)),
        ]);
        assert!(matches!(decode(&ok), Ok(MasterMsg::Spawn(_))));
        let over = spawn_with(vec![
            ("A".into(), Value::from(60_000)),
            ("B".into(), Value::from(40_001)),
        ]);
        assert!(matches!(decode(&over), Err(WireError::Limit(_))));
        let classes = (0..=MAX_USER_CLASSES)
            .map(|i| (Value::from(format!("C{i}")), Value::from(0)))
            .collect();
        assert!(matches!(decode(&spawn_with(classes)), Err(WireError::Limit(m)) if m.contains("classes")));
    }

    #[test]
    fn non_finite_timestamps_are_refused() {
        let f = frame(
            "spawn",
            Value::Map(vec![
                ("timestamp".into(), Value::F64(f64::NAN)),
                ("user_classes_count".into(), Value::Map(vec![])),
            ]),
        );
        assert!(matches!(decode(&f), Err(WireError::Field { field: "timestamp", .. })));
    }

    #[test]
    fn msgpack_bombs_are_refused_before_decoding() {
        // An array header announcing 2^32-1 elements in a 5-byte frame.
        assert!(matches!(
            scan(&[0xdd, 0xff, 0xff, 0xff, 0xff]),
            Err(WireError::Limit(_))
        ));
        // A string header announcing 4 GiB.
        assert!(matches!(
            scan(&[0xdb, 0xff, 0xff, 0xff, 0xff]),
            Err(WireError::Limit(_))
        ));
        // Nesting deeper than the limit.
        let mut deep = vec![0x91u8; MAX_DEPTH + 1];
        deep.push(0xc0);
        assert!(matches!(scan(&deep), Err(WireError::Limit(m)) if m.contains("nesting")));
        // More values than the limit (each is one byte, so the frame is small).
        let mut many = vec![0xdd];
        many.extend_from_slice(&((MAX_VALUES as u32) + 1).to_be_bytes());
        many.extend(std::iter::repeat_n(0xc0u8, MAX_VALUES + 1));
        assert!(matches!(scan(&many), Err(WireError::Limit(m)) if m.contains("values")));
        // Exactly at the limits passes.
        let mut fits = vec![0xdd];
        fits.extend_from_slice(&((MAX_VALUES - 1) as u32).to_be_bytes());
        fits.extend(std::iter::repeat_n(0xc0u8, MAX_VALUES - 1));
        assert!(scan(&fits).is_ok());
        let mut nested = vec![0x91u8; MAX_DEPTH];
        nested.push(0xc0);
        assert!(scan(&nested).is_ok());
    }

    #[test]
    fn real_frames_pass_the_scan() {
        for f in [
            frame("ack", Value::Map(vec![("index".into(), Value::from(3))])),
            spawn_with(vec![("Chat".into(), Value::from(5))]),
            frame("quit", Value::Nil),
        ] {
            assert!(scan(&f).is_ok());
            assert!(decode(&f).is_ok());
        }
    }

    #[test]
    fn mutated_frames_never_panic() {
        // Seeded byte flips, truncations and insertions of a real spawn frame.
        let base = spawn_with(vec![("Chat".into(), Value::from(5)), ("Other".into(), Value::from(2))]);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let mut f = base.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % f.len();
                match next() % 3 {
                    0 => f[at] = next() as u8,
                    1 => f.truncate(at),
                    _ => f.insert(at, next() as u8),
                }
                if f.is_empty() {
                    break;
                }
            }
            let _ = decode(&f);
        }
    }
}
