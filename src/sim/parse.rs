//! Request parsing and validation, and error bodies shaped like the real APIs'.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value};

use super::cache::count_and_hash;

/// Which API a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Completions,
    Messages,
}

impl Api {
    pub fn path(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Completions => "/v1/completions",
            Api::Messages => "/v1/messages",
        }
    }
}

/// An error answered before any streaming, in the API's own shape.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    /// OpenAI `type` / Anthropic `error.type`.
    pub kind: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
    pub retry_after_s: Option<u32>,
}

impl ApiError {
    pub fn bad(param: Option<&'static str>, message: String) -> Self {
        ApiError {
            status: 400,
            kind: "invalid_request_error",
            message,
            param,
            code: None,
            retry_after_s: None,
        }
    }

    pub fn body(&self, api: Api) -> String {
        let v = match api {
            Api::Messages => serde_json::json!({
                "type": "error",
                "error": {"type": self.anthropic_kind(), "message": self.message},
            }),
            _ => serde_json::json!({
                "error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code},
            }),
        };
        v.to_string()
    }

    fn anthropic_kind(&self) -> &'static str {
        match self.status {
            400 => "invalid_request_error",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            _ => "api_error",
        }
    }

    pub fn response(&self, api: Api) -> Response {
        let mut r = Response::new(Body::from(self.body(api)));
        *r.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(s) = self.retry_after_s {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// A validated request, reduced to what the simulator needs.
#[derive(Debug)]
pub struct Req {
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    pub max_tokens: Option<u64>,
    pub ignore_eos: bool,
    pub min_tokens: u64,
    pub wants_reasoning: bool,
    pub prompt_tokens: u64,
    pub block_hashes: Vec<u64>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(api: Api, field: &'static str, expected: &str, got: &Value) -> ApiError {
    let msg = match api {
        Api::Messages => format!("{field}: Input should be {expected}, got {}", type_name(got)),
        _ => format!(
            "Invalid type for '{field}': expected {expected}, but got {} instead.",
            type_name(got)
        ),
    };
    ApiError::bad(Some(field), msg)
}

fn missing(api: Api, field: &'static str) -> ApiError {
    let msg = match api {
        Api::Messages => format!("{field}: Field required"),
        _ => format!("Missing required parameter: '{field}'."),
    };
    ApiError::bad(Some(field), msg)
}

fn opt_bool(api: Api, o: &Map<String, Value>, field: &'static str) -> Result<bool, ApiError> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(wrong_type(api, field, "a boolean", v)),
    }
}

fn opt_int(api: Api, o: &Map<String, Value>, field: &'static str, min: i64) -> Result<Option<u64>, ApiError> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) if i >= min => Ok(Some(i as u64)),
            Some(i) => Err(ApiError::bad(
                Some(field),
                match api {
                    Api::Messages => format!("{field}: Input should be greater than or equal to {min}, got {i}"),
                    _ => format!(
                        "Invalid '{field}': integer below minimum value. Expected a value >= {min}, but got {i} instead."
                    ),
                },
            )),
            None => match n.as_u64() {
                Some(u) => Ok(Some(u)),
                None => Err(wrong_type(api, field, "an integer", &Value::Number(n.clone()))),
            },
        },
        Some(v) => Err(wrong_type(api, field, "an integer", v)),
    }
}

/// Collects the text of a message `content` (a string or an array of parts).
fn content_texts<'a>(api: Api, field: &'static str, v: &'a Value, out: &mut Vec<&'a str>) -> Result<(), ApiError> {
    match v {
        Value::String(s) => out.push(s),
        Value::Null if api != Api::Messages => {}
        Value::Array(parts) => {
            for p in parts {
                match p {
                    Value::Object(po) => {
                        if let Some(t) = po.get("text") {
                            match t {
                                Value::String(s) => out.push(s),
                                other => return Err(wrong_type(api, field, "a string in 'text'", other)),
                            }
                        }
                        // Anthropic tool results may nest content.
                        if let Some(c @ (Value::String(_) | Value::Array(_))) = po.get("content") {
                            content_texts(api, field, c, out)?;
                        }
                    }
                    Value::String(s) => out.push(s),
                    other => return Err(wrong_type(api, field, "an object", other)),
                }
            }
        }
        other => return Err(wrong_type(api, field, "a string or an array of content parts", other)),
    }
    Ok(())
}

/// Parses and validates a request body.
pub fn parse(api: Api, body: &[u8]) -> Result<Req, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad(
            None,
            match api {
                Api::Messages => format!("There was an issue with the JSON body of your request: {e}"),
                _ => format!("We could not parse the JSON body of your request: {e}"),
            },
        )
    })?;
    let Value::Object(o) = &v else {
        return Err(ApiError::bad(
            None,
            format!("The request body must be a JSON object, got {}.", type_name(&v)),
        ));
    };
    let model = match o.get("model") {
        None | Some(Value::Null) => return Err(missing(api, "model")),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(ApiError::bad(Some("model"), "model: must not be empty".into())),
        Some(other) => return Err(wrong_type(api, "model", "a string", other)),
    };
    let stream = opt_bool(api, o, "stream")?;
    let include_usage = match o.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(so)) => match so.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(wrong_type(api, "stream_options", "a boolean in 'include_usage'", other)),
        },
        Some(other) => return Err(wrong_type(api, "stream_options", "an object", other)),
    };
    let mut max_tokens = opt_int(api, o, "max_tokens", 1)?;
    if api == Api::Chat
        && let Some(m) = opt_int(api, o, "max_completion_tokens", 1)?
    {
        max_tokens = Some(m);
    }
    if api == Api::Messages && max_tokens.is_none() {
        return Err(missing(api, "max_tokens"));
    }
    let ignore_eos = opt_bool(api, o, "ignore_eos")?;
    let min_tokens = opt_int(api, o, "min_tokens", 0)?.unwrap_or(0);

    let mut texts: Vec<&str> = Vec::new();
    let mut wants_reasoning = false;
    match api {
        Api::Chat | Api::Messages => {
            if api == Api::Messages {
                match o.get("system") {
                    None | Some(Value::Null) => {}
                    Some(s) => content_texts(api, "system", s, &mut texts)?,
                }
            }
            let msgs = match o.get("messages") {
                None | Some(Value::Null) => return Err(missing(api, "messages")),
                Some(Value::Array(a)) => a,
                Some(other) => return Err(wrong_type(api, "messages", "an array", other)),
            };
            if msgs.is_empty() {
                return Err(ApiError::bad(
                    Some("messages"),
                    match api {
                        Api::Messages => "messages: at least one message is required".into(),
                        _ => "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.".into(),
                    },
                ));
            }
            for m in msgs {
                let Value::Object(mo) = m else {
                    return Err(wrong_type(api, "messages", "an array of objects", m));
                };
                match mo.get("role") {
                    Some(Value::String(_)) => {}
                    None => {
                        return Err(ApiError::bad(
                            Some("messages"),
                            match api {
                                Api::Messages => "messages.role: Field required".into(),
                                _ => "Missing required parameter: 'messages[].role'.".into(),
                            },
                        ));
                    }
                    Some(other) => return Err(wrong_type(api, "messages", "a string in 'role'", other)),
                }
                match mo.get("content") {
                    Some(c) => content_texts(api, "messages", c, &mut texts)?,
                    None if api == Api::Messages => {
                        return Err(ApiError::bad(
                            Some("messages"),
                            "messages.content: Field required".into(),
                        ));
                    }
                    None => {}
                }
            }
            if api == Api::Chat {
                wants_reasoning = matches!(o.get("reasoning_effort"), Some(Value::String(s)) if s != "none")
                    || matches!(o.get("reasoning"), Some(Value::Object(_)));
            } else {
                wants_reasoning = match o.get("thinking") {
                    Some(Value::Object(t)) => matches!(t.get("type"), Some(Value::String(s)) if s == "enabled"),
                    _ => false,
                };
            }
        }
        Api::Completions => match o.get("prompt") {
            None | Some(Value::Null) => return Err(missing(api, "prompt")),
            Some(Value::String(s)) => texts.push(s),
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
                texts.extend(a.iter().filter_map(Value::as_str));
            }
            Some(other) => return Err(wrong_type(api, "prompt", "a string or an array of strings", other)),
        },
    }
    let (prompt_tokens, block_hashes) = count_and_hash(texts.into_iter());
    Ok(Req {
        model,
        stream,
        include_usage,
        max_tokens,
        ignore_eos,
        min_tokens,
        wants_reasoning,
        prompt_tokens,
        block_hashes,
    })
}
