//! The Locust wire format: the only module that sees msgpack.
//!
//! Every ZeroMQ frame between a Locust master and a worker is one msgpack
//! array `[type: str, data: any, node_id: str]` (Locust's `rpc/protocol.py`).
//! This module turns frames into [`MasterMsg`] and [`WorkerMsg`] into frames;
//! the rest of the crate deals in those typed messages only.
//!
//! Encoding rules that the master depends on (see `shared/notes/locust-protocol.md`):
//! - payload structs are msgpack **maps** (`rmp_serde::to_vec_named`);
//! - strings are msgpack `str`, never `bin` (the master unpacks with `raw=False`);
//! - histogram and per-second maps have **integer** keys.
//!
//! Decoding is generic (`rmpv::Value`) because `spawn.parsed_options` is the
//! master's whole argparse namespace, with mixed types and nulls; we pick the
//! few keys we use and ignore the rest.

use std::collections::BTreeMap;

use rmpv::Value;
use serde::Serialize;

use crate::metrics::report::{LlmReport, RequestEntry, StatsError};
use crate::scenario::TestConfig;

/// The Locust version whose protocol this worker speaks; sent in `client_ready`.
/// A master of another major.minor only logs a warning.
pub const LOCUST_PROTOCOL_VERSION: &str = "2.47.0";

/// Errors decoding a frame from the master.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
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
        WorkerMsg::Custom { kind, data } => pack(kind, data, node_id),
    }
}

/// Decodes one frame from the master.
pub fn decode(frame: &[u8]) -> Result<MasterMsg, WireError> {
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
    let mut user_classes_count = BTreeMap::new();
    let counts = get(&data, "user_classes_count")
        .and_then(Value::as_map)
        .ok_or_else(|| field("user_classes_count", "missing or not a map".into()))?;
    for (k, v) in counts {
        let name = k
            .as_str()
            .ok_or_else(|| field("user_classes_count", format!("key {k} is not a string")))?;
        let n = v
            .as_u64()
            .ok_or_else(|| field("user_classes_count", format!("count {v} for {name} is not a count")))?;
        user_classes_count.insert(name.to_string(), u32::try_from(n).unwrap_or(u32::MAX));
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
    let mut cluster_users = None;
    if let Some(Value::Map(entries)) = config_value.as_mut()
        && let Some(pos) = entries.iter().position(|(k, _)| k.as_str() == Some("cluster_users"))
    {
        let (_, v) = entries.remove(pos);
        cluster_users = v.as_u64().map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    }
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
        spawn_rate,
    })
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
}
