//! Request parsing and validation, and error bodies shaped like the real APIs'.
//!
//! The body is deserialized into typed structs (strings borrowed from the
//! body where they need no unescaping, unknown fields skipped, no JSON tree
//! built). Each field is a [`Field`]: absent, null, of the expected type, or
//! of another type whose name is kept, so deserialization fails only on
//! malformed JSON and validation then answers a 400 that names the field,
//! worded as the real API words it. A model name is at most
//! [`MAX_MODEL_BYTES`] long (it is echoed in every chunk and logged).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::cache::Chain;

/// Longest model name accepted, bytes.
pub const MAX_MODEL_BYTES: usize = 256;

/// Which API a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Completions,
    Messages,
    /// Gemini `generateContent` / `streamGenerateContent` (model in the path).
    Gemini,
}

impl Api {
    pub fn path(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Completions => "/v1/completions",
            Api::Messages => "/v1/messages",
            Api::Gemini => "/v1beta/models/{model}:streamGenerateContent",
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
            Api::Gemini => serde_json::json!({
                "error": {"code": self.status, "message": self.message, "status": self.google_status()},
            }),
            _ => serde_json::json!({
                "error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code},
            }),
        };
        v.to_string()
    }

    /// The Google RPC status name Gemini puts in `error.status`.
    fn google_status(&self) -> &'static str {
        match self.status {
            400 | 413 => "INVALID_ARGUMENT",
            404 => "NOT_FOUND",
            429 => "RESOURCE_EXHAUSTED",
            503 => "UNAVAILABLE",
            _ => "INTERNAL",
        }
    }

    fn anthropic_kind(&self) -> &'static str {
        match self.status {
            400 => "invalid_request_error",
            413 => "request_too_large",
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
    /// The prompt's hash chain, to go on with the answer (`cache::Chain`).
    pub chain: Chain,
    /// The prompt's texts in order (system, then each message's content),
    /// kept only for `--log-prompts`.
    pub prompt_texts: Option<Vec<String>>,
}

/// One field of the body as it was sent.
#[derive(Debug, Default)]
enum Field<T> {
    #[default]
    Absent,
    Null,
    Ok(T),
    /// Another JSON type came; its name, for the error message.
    Wrong(&'static str),
}

/// A type a [`Field`] can hold: which JSON values it accepts.
trait Kind<'de>: Sized {
    /// Whether strings are accepted (so a wrong-typed string is not copied).
    const STR: bool = false;
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn from_int(_: i128) -> Option<Self> {
        None
    }
    fn from_str(_: Cow<'de, str>) -> Option<Self> {
        None
    }
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

impl<'de, T: Kind<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor(PhantomData))
    }
}

struct FieldVisitor<T>(PhantomData<T>);

fn field<T>(v: Option<T>, got: &'static str) -> Field<T> {
    v.map_or(Field::Wrong(got), Field::Ok)
}

impl<'de, T: Kind<'de>> Visitor<'de> for FieldVisitor<T> {
    type Value = Field<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Field<T>, E> {
        Ok(field(T::from_bool(v), "a boolean"))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Field<T>, E> {
        Ok(field(T::from_int(v.into()), "an integer"))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Field<T>, E> {
        Ok(field(T::from_int(v.into()), "an integer"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Field<T>, E> {
        Ok(Field::Wrong("a number"))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Field<T>, E> {
        Ok(field(T::from_str(Cow::Borrowed(v)), "a string"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Field<T>, E> {
        if !T::STR {
            return Ok(Field::Wrong("a string"));
        }
        Ok(field(T::from_str(Cow::Owned(v.to_owned())), "a string"))
    }
    fn visit_string<E>(self, v: String) -> Result<Field<T>, E> {
        Ok(field(T::from_str(Cow::Owned(v)), "a string"))
    }
    fn visit_unit<E>(self) -> Result<Field<T>, E> {
        Ok(Field::Null)
    }
    fn visit_none<E>(self) -> Result<Field<T>, E> {
        Ok(Field::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<T>, A::Error> {
        Ok(field(T::from_seq(seq)?, "an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<T>, A::Error> {
        Ok(field(T::from_map(map)?, "an object"))
    }
}

impl Kind<'_> for bool {
    fn from_bool(b: bool) -> Option<Self> {
        Some(b)
    }
}

impl Kind<'_> for i128 {
    fn from_int(i: i128) -> Option<Self> {
        Some(i)
    }
}

impl<'de: 'a, 'a> Kind<'de> for Cow<'a, str> {
    const STR: bool = true;
    fn from_str(s: Cow<'de, str>) -> Option<Self> {
        Some(s)
    }
}

/// Any object (only its presence matters).
#[derive(Debug)]
struct AnyObject;

impl<'de> Kind<'de> for AnyObject {
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Some(AnyObject))
    }
}

impl<'de, T: Kind<'de>> Kind<'de> for Vec<Field<T>> {
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut v = Vec::new();
        while let Some(x) = seq.next_element::<Field<T>>()? {
            v.push(x);
        }
        Ok(Some(v))
    }
}

/// Implements [`Kind`] for a derived struct: it is accepted as a JSON object.
macro_rules! object_kind {
    ($t:ident) => {
        impl<'de: 'a, 'a> Kind<'de> for $t<'a> {
            fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
                $t::deserialize(MapAccessDeserializer::new(map)).map(Some)
            }
        }
    };
}

/// The fields of all three APIs' bodies that the simulator reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RequestBody<'a> {
    #[serde(borrow)]
    model: Field<Cow<'a, str>>,
    stream: Field<bool>,
    stream_options: Field<StreamOptions>,
    max_tokens: Field<i128>,
    max_completion_tokens: Field<i128>,
    ignore_eos: Field<bool>,
    min_tokens: Field<i128>,
    #[serde(borrow)]
    system: Field<Content<'a>>,
    #[serde(borrow)]
    messages: Field<Vec<Field<Message<'a>>>>,
    #[serde(borrow)]
    prompt: Field<Prompt<'a>>,
    #[serde(borrow)]
    reasoning_effort: Field<Cow<'a, str>>,
    reasoning: Field<AnyObject>,
    #[serde(borrow)]
    thinking: Field<Thinking<'a>>,
    /// Gemini: the conversation, the system instruction, the output limit.
    #[serde(borrow)]
    contents: Field<Vec<Field<GeminiContent<'a>>>>,
    #[serde(borrow, rename = "systemInstruction")]
    system_instruction: Field<GeminiContent<'a>>,
    #[serde(rename = "generationConfig")]
    generation_config: Field<GenerationConfig>,
}

object_kind!(RequestBody);

/// A Gemini `Content`: a role and an array of parts with `text`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GeminiContent<'a> {
    #[serde(borrow)]
    role: Field<Cow<'a, str>>,
    #[serde(borrow)]
    parts: Field<Content<'a>>,
}
object_kind!(GeminiContent);

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GenerationConfig {
    #[serde(rename = "maxOutputTokens")]
    max_output_tokens: Field<i128>,
    #[serde(rename = "thinkingConfig")]
    thinking_config: Field<ThinkingConfig>,
}

impl<'de> Kind<'de> for GenerationConfig {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        GenerationConfig::deserialize(MapAccessDeserializer::new(map)).map(Some)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ThinkingConfig {
    #[serde(rename = "includeThoughts")]
    include_thoughts: Field<bool>,
}

impl<'de> Kind<'de> for ThinkingConfig {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        ThinkingConfig::deserialize(MapAccessDeserializer::new(map)).map(Some)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StreamOptions {
    include_usage: Field<bool>,
}

impl<'de> Kind<'de> for StreamOptions {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        StreamOptions::deserialize(MapAccessDeserializer::new(map)).map(Some)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Thinking<'a> {
    #[serde(borrow, rename = "type")]
    kind: Field<Cow<'a, str>>,
}
object_kind!(Thinking);

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Message<'a> {
    #[serde(borrow)]
    role: Field<Cow<'a, str>>,
    #[serde(borrow)]
    content: Field<Content<'a>>,
}
object_kind!(Message);

/// A message `content` (or Anthropic `system`): a string or an array of parts.
#[derive(Debug)]
enum Content<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<Field<Part<'a>>>),
}

impl<'de: 'a, 'a> Kind<'de> for Content<'a> {
    const STR: bool = true;
    fn from_str(s: Cow<'de, str>) -> Option<Self> {
        Some(Content::Text(s))
    }
    fn from_seq<A: SeqAccess<'de>>(seq: A) -> Result<Option<Self>, A::Error> {
        Ok(Vec::<Field<Part<'a>>>::from_seq(seq)?.map(Content::Parts))
    }
}

/// A content part: a bare string, or an object with `text` and (Anthropic
/// tool results) nested `content`.
#[derive(Debug)]
enum Part<'a> {
    Text(Cow<'a, str>),
    Object(PartObject<'a>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PartObject<'a> {
    #[serde(borrow)]
    text: Field<Cow<'a, str>>,
    #[serde(borrow)]
    content: Field<Content<'a>>,
}

impl<'de: 'a, 'a> Kind<'de> for Part<'a> {
    const STR: bool = true;
    fn from_str(s: Cow<'de, str>) -> Option<Self> {
        Some(Part::Text(s))
    }
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        PartObject::deserialize(MapAccessDeserializer::new(map)).map(|p| Some(Part::Object(p)))
    }
}

/// A completions `prompt`: a string or an array of strings.
#[derive(Debug)]
enum Prompt<'a> {
    One(Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
}

impl<'de: 'a, 'a> Kind<'de> for Prompt<'a> {
    const STR: bool = true;
    fn from_str(s: Cow<'de, str>) -> Option<Self> {
        Some(Prompt::One(s))
    }
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut all = Some(Vec::new());
        while let Some(x) = seq.next_element::<Field<Cow<'a, str>>>()? {
            match (x, &mut all) {
                (Field::Ok(s), Some(v)) => v.push(s),
                _ => all = None,
            }
        }
        Ok(all.map(Prompt::Many))
    }
}

fn wrong_type(api: Api, field: &'static str, expected: &str, got: &str) -> ApiError {
    let msg = match api {
        Api::Messages => format!("{field}: Input should be {expected}, got {got}"),
        _ => format!("Invalid type for '{field}': expected {expected}, but got {got} instead."),
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

fn opt_bool(api: Api, f: &Field<bool>, field: &'static str) -> Result<bool, ApiError> {
    match f {
        Field::Absent | Field::Null => Ok(false),
        Field::Ok(b) => Ok(*b),
        Field::Wrong(got) => Err(wrong_type(api, field, "a boolean", got)),
    }
}

fn opt_int(api: Api, f: &Field<i128>, field: &'static str, min: i64) -> Result<Option<u64>, ApiError> {
    match f {
        Field::Absent | Field::Null => Ok(None),
        Field::Ok(i) if *i >= i128::from(min) => Ok(Some(u64::try_from(*i).unwrap_or(u64::MAX))),
        Field::Ok(i) => Err(ApiError::bad(
            Some(field),
            match api {
                Api::Messages => format!("{field}: Input should be greater than or equal to {min}, got {i}"),
                _ => format!(
                    "Invalid '{field}': integer below minimum value. Expected a value >= {min}, but got {i} instead."
                ),
            },
        )),
        Field::Wrong(got) => Err(wrong_type(api, field, "an integer", got)),
    }
}

/// Collects the text of a message `content` (a string or an array of parts).
fn content_texts<'a>(
    api: Api,
    field: &'static str,
    c: &'a Content<'_>,
    out: &mut Vec<&'a str>,
) -> Result<(), ApiError> {
    match c {
        Content::Text(s) => out.push(s),
        Content::Parts(parts) => {
            for p in parts {
                match p {
                    Field::Ok(Part::Text(s)) => out.push(s),
                    Field::Ok(Part::Object(po)) => {
                        match &po.text {
                            Field::Absent => {}
                            Field::Ok(s) => out.push(s),
                            Field::Null => return Err(wrong_type(api, field, "a string in 'text'", "null")),
                            Field::Wrong(got) => return Err(wrong_type(api, field, "a string in 'text'", got)),
                        }
                        // Anthropic tool results may nest content.
                        if let Field::Ok(c) = &po.content {
                            content_texts(api, field, c, out)?;
                        }
                    }
                    Field::Absent | Field::Null => return Err(wrong_type(api, field, "an object", "null")),
                    Field::Wrong(got) => return Err(wrong_type(api, field, "an object", got)),
                }
            }
        }
    }
    Ok(())
}

/// A `content` or `system` field: `null` is allowed where `null_ok`.
fn content_field<'a>(
    api: Api,
    field: &'static str,
    f: &'a Field<Content<'_>>,
    null_ok: bool,
    out: &mut Vec<&'a str>,
) -> Result<(), ApiError> {
    const EXPECTED: &str = "a string or an array of content parts";
    match f {
        Field::Ok(c) => content_texts(api, field, c, out),
        Field::Absent => Ok(()),
        Field::Null if null_ok => Ok(()),
        Field::Null => Err(wrong_type(api, field, EXPECTED, "null")),
        Field::Wrong(got) => Err(wrong_type(api, field, EXPECTED, got)),
    }
}

fn model_name(api: Api, f: &Field<Cow<'_, str>>) -> Result<String, ApiError> {
    match f {
        Field::Absent | Field::Null => Err(missing(api, "model")),
        Field::Ok(s) if s.is_empty() => Err(ApiError::bad(Some("model"), "model: must not be empty".into())),
        Field::Ok(s) if s.len() > MAX_MODEL_BYTES => Err(ApiError::bad(
            Some("model"),
            match api {
                Api::Messages => format!(
                    "model: String should have at most {MAX_MODEL_BYTES} bytes, got {}",
                    s.len()
                ),
                _ => format!(
                    "Invalid 'model': string too long. Expected a string with maximum length {MAX_MODEL_BYTES}, but got a string with length {} instead.",
                    s.len()
                ),
            },
        )),
        Field::Ok(s) => Ok(s.to_string()),
        Field::Wrong(got) => Err(wrong_type(api, "model", "a string", got)),
    }
}

/// Parses and validates a request body (the model in the body).
#[cfg(test)]
pub fn parse(api: Api, body: &[u8]) -> Result<Req, ApiError> {
    parse_request(api, body, None, false)
}

/// Parses and validates a request body. `path_model` is the model named in
/// the path (Gemini; the caller sets `stream` from the method);
/// `keep_texts` keeps the prompt's texts in order (`--log-prompts`).
pub fn parse_request(api: Api, body: &[u8], path_model: Option<&str>, keep_texts: bool) -> Result<Req, ApiError> {
    let top: Field<RequestBody> = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad(
            None,
            match api {
                Api::Messages => format!("There was an issue with the JSON body of your request: {e}"),
                _ => format!("We could not parse the JSON body of your request: {e}"),
            },
        )
    })?;
    let o = match top {
        Field::Ok(o) => o,
        Field::Absent | Field::Null => {
            return Err(ApiError::bad(
                None,
                "The request body must be a JSON object, got null.".into(),
            ));
        }
        Field::Wrong(got) => {
            return Err(ApiError::bad(
                None,
                format!("The request body must be a JSON object, got {got}."),
            ));
        }
    };
    let model = match path_model {
        Some(m) => model_name(api, &Field::Ok(Cow::Borrowed(m)))?,
        None => model_name(api, &o.model)?,
    };
    let stream = opt_bool(api, &o.stream, "stream")?;
    let include_usage = match &o.stream_options {
        Field::Absent | Field::Null => false,
        Field::Ok(so) => match so.include_usage {
            Field::Absent | Field::Null => false,
            Field::Ok(b) => b,
            Field::Wrong(got) => {
                return Err(wrong_type(api, "stream_options", "a boolean in 'include_usage'", got));
            }
        },
        Field::Wrong(got) => return Err(wrong_type(api, "stream_options", "an object", got)),
    };
    let mut max_tokens = opt_int(api, &o.max_tokens, "max_tokens", 1)?;
    let mut gemini_thoughts = false;
    if api == Api::Gemini {
        match &o.generation_config {
            Field::Absent | Field::Null => {}
            Field::Ok(g) => {
                max_tokens = opt_int(api, &g.max_output_tokens, "generationConfig.maxOutputTokens", 1)?;
                if let Field::Ok(t) = &g.thinking_config {
                    gemini_thoughts = opt_bool(
                        api,
                        &t.include_thoughts,
                        "generationConfig.thinkingConfig.includeThoughts",
                    )?;
                }
            }
            Field::Wrong(got) => return Err(wrong_type(api, "generationConfig", "an object", got)),
        }
    }
    if api == Api::Chat
        && let Some(m) = opt_int(api, &o.max_completion_tokens, "max_completion_tokens", 1)?
    {
        max_tokens = Some(m);
    }
    if api == Api::Messages && max_tokens.is_none() {
        return Err(missing(api, "max_tokens"));
    }
    let ignore_eos = opt_bool(api, &o.ignore_eos, "ignore_eos")?;
    let min_tokens = opt_int(api, &o.min_tokens, "min_tokens", 0)?.unwrap_or(0);

    let mut texts: Vec<&str> = Vec::new();
    let mut wants_reasoning = false;
    match api {
        Api::Chat | Api::Messages => {
            if api == Api::Messages {
                content_field(api, "system", &o.system, true, &mut texts)?;
            }
            let msgs = match &o.messages {
                Field::Absent | Field::Null => return Err(missing(api, "messages")),
                Field::Ok(a) => a,
                Field::Wrong(got) => return Err(wrong_type(api, "messages", "an array", got)),
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
                let mo = match m {
                    Field::Ok(mo) => mo,
                    Field::Absent | Field::Null => {
                        return Err(wrong_type(api, "messages", "an array of objects", "null"));
                    }
                    Field::Wrong(got) => return Err(wrong_type(api, "messages", "an array of objects", got)),
                };
                match &mo.role {
                    Field::Ok(_) => {}
                    Field::Absent => {
                        return Err(ApiError::bad(
                            Some("messages"),
                            match api {
                                Api::Messages => "messages.role: Field required".into(),
                                _ => "Missing required parameter: 'messages[].role'.".into(),
                            },
                        ));
                    }
                    Field::Null => return Err(wrong_type(api, "messages", "a string in 'role'", "null")),
                    Field::Wrong(got) => return Err(wrong_type(api, "messages", "a string in 'role'", got)),
                }
                if api == Api::Messages && matches!(mo.content, Field::Absent) {
                    return Err(ApiError::bad(
                        Some("messages"),
                        "messages.content: Field required".into(),
                    ));
                }
                content_field(api, "messages", &mo.content, api != Api::Messages, &mut texts)?;
            }
            if api == Api::Chat {
                wants_reasoning =
                    matches!(&o.reasoning_effort, Field::Ok(s) if s != "none") || matches!(o.reasoning, Field::Ok(_));
            } else {
                wants_reasoning =
                    matches!(&o.thinking, Field::Ok(t) if matches!(&t.kind, Field::Ok(s) if s == "enabled"));
            }
        }
        Api::Gemini => {
            if let Field::Ok(sys) = &o.system_instruction {
                content_field(api, "systemInstruction", &sys.parts, true, &mut texts)?;
            }
            let contents = match &o.contents {
                Field::Absent | Field::Null => return Err(missing(api, "contents")),
                Field::Ok(a) if a.is_empty() => {
                    return Err(ApiError::bad(Some("contents"), "contents is not specified".into()));
                }
                Field::Ok(a) => a,
                Field::Wrong(got) => return Err(wrong_type(api, "contents", "an array", got)),
            };
            for c in contents {
                match c {
                    Field::Ok(c) => content_field(api, "contents", &c.parts, false, &mut texts)?,
                    Field::Absent | Field::Null => {
                        return Err(wrong_type(api, "contents", "an array of objects", "null"));
                    }
                    Field::Wrong(got) => return Err(wrong_type(api, "contents", "an array of objects", got)),
                }
            }
            wants_reasoning = gemini_thoughts;
        }
        Api::Completions => match &o.prompt {
            Field::Absent | Field::Null => return Err(missing(api, "prompt")),
            Field::Ok(Prompt::One(s)) => texts.push(s),
            Field::Ok(Prompt::Many(v)) => texts.extend(v.iter().map(|s| s.as_ref())),
            Field::Wrong(got) => {
                return Err(wrong_type(api, "prompt", "a string or an array of strings", got));
            }
        },
    }
    let prompt_texts = keep_texts.then(|| texts.iter().map(|s| s.to_string()).collect());
    let chain = Chain::of(texts.into_iter());
    let (prompt_tokens, block_hashes) = (chain.words, chain.hashes.clone());
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
        chain,
        prompt_texts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(api: Api, body: &str) -> ApiError {
        parse(api, body.as_bytes()).unwrap_err()
    }

    #[test]
    fn typed_fields_and_prompt_words() {
        let r = parse(
            Api::Chat,
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":9,
                "messages":[{"role":"system","content":"a b"},{"role":"user","content":[{"type":"text","text":"c\nd e"},"f"]}],
                "reasoning_effort":"low","unknown":[1,{"x":null}]}"#,
        )
        .unwrap();
        assert_eq!((r.model.as_str(), r.stream, r.include_usage), ("m", true, true));
        assert_eq!((r.max_tokens, r.prompt_tokens, r.wants_reasoning), (Some(9), 6, true));
        let r = parse(
            Api::Messages,
            br#"{"model":"m","max_tokens":3,"system":[{"type":"text","text":"s"}],"thinking":{"type":"enabled"},
                "messages":[{"role":"user","content":[{"type":"tool_result","content":[{"type":"text","text":"t u"}]}]}]}"#,
        )
        .unwrap();
        assert_eq!((r.prompt_tokens, r.wants_reasoning), (3, true));
        let r = parse(
            Api::Completions,
            br#"{"model":"m","prompt":["a b","c"],"max_tokens":18446744073709551615}"#,
        )
        .unwrap();
        assert_eq!((r.prompt_tokens, r.max_tokens), (3, Some(u64::MAX)));
    }

    /// A wrong type names the field and the type that came, in the API's wording.
    #[test]
    fn wrong_types_name_the_field() {
        let e = err(
            Api::Chat,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"9"}"#,
        );
        assert_eq!(e.param, Some("max_tokens"));
        assert_eq!(
            e.message,
            "Invalid type for 'max_tokens': expected an integer, but got a string instead."
        );
        let e = err(Api::Messages, r#"{"model":"m","max_tokens":1.5,"messages":[]}"#);
        assert_eq!(e.message, "max_tokens: Input should be an integer, got a number");
        let e = err(
            Api::Chat,
            r#"{"model":"m","messages":[{"role":"user","content":[{"text":7}]}]}"#,
        );
        assert_eq!(e.param, Some("messages"));
        assert!(
            e.message.contains("'text'") && e.message.contains("an integer"),
            "{}",
            e.message
        );
        let e = err(Api::Completions, r#"{"model":"m","prompt":[1,2]}"#);
        assert_eq!((e.param, e.message.contains("got an array")), (Some("prompt"), true));
        let e = err(Api::Chat, r#"[1,2]"#);
        assert_eq!(e.message, "The request body must be a JSON object, got an array.");
        assert!(err(Api::Chat, "{oops").message.contains("could not parse"));
    }

    /// Gemini: the model from the path, prompt words from
    /// `systemInstruction` and every `contents[].parts[].text`, the output
    /// limit from `generationConfig.maxOutputTokens`; errors in Google's shape.
    #[test]
    fn gemini_bodies() {
        let r = parse_request(
            Api::Gemini,
            br#"{"systemInstruction":{"parts":[{"text":"s t"}]},"contents":[{"role":"user","parts":[{"text":"a b"},{"text":"c"}]}],
                "generationConfig":{"maxOutputTokens":7,"thinkingConfig":{"includeThoughts":true}}}"#,
            Some("gemini-x"),
            false,
        )
        .unwrap();
        assert_eq!(
            (r.model.as_str(), r.max_tokens, r.prompt_tokens),
            ("gemini-x", Some(7), 5)
        );
        assert!(r.wants_reasoning);
        let e = parse_request(Api::Gemini, br#"{"contents":[]}"#, Some("g"), false).unwrap_err();
        assert_eq!((e.status, e.param), (400, Some("contents")));
        let v: serde_json::Value = serde_json::from_str(&e.body(Api::Gemini)).unwrap();
        assert_eq!(
            (v["error"]["code"].as_u64(), v["error"]["status"].as_str()),
            (Some(400), Some("INVALID_ARGUMENT"))
        );
        let e = parse_request(
            Api::Gemini,
            br#"{"contents":[{"parts":[{"text":"a"}]}],"generationConfig":{"maxOutputTokens":"9"}}"#,
            Some("g"),
            false,
        )
        .unwrap_err();
        assert_eq!(e.param, Some("generationConfig.maxOutputTokens"));
    }

    /// Issue 13: a model name longer than MAX_MODEL_BYTES is a 400 on `model`.
    #[test]
    fn long_model_names_are_rejected() {
        let ok = format!(r#"{{"model":"{}","prompt":"x"}}"#, "m".repeat(MAX_MODEL_BYTES));
        assert!(parse(Api::Completions, ok.as_bytes()).is_ok());
        let long = format!(r#"{{"model":"{}","prompt":"x"}}"#, "m".repeat(MAX_MODEL_BYTES + 1));
        let e = parse(Api::Completions, long.as_bytes()).unwrap_err();
        assert_eq!((e.status, e.param), (400, Some("model")));
        assert!(e.message.contains("too long"), "{}", e.message);
    }
}
