//! What goes on the wire for one request: URL, headers and JSON body per
//! [`Provider`].
//!
//! Bodies are built from a template made once per scenario: the JSON with a
//! marker string where the prompt goes, serialized and cut at the marker.
//! A request body is then the template pieces with the prompt written
//! between them: no JSON serialization and one allocation per request.
//! This works because prompts are ASCII letters, spaces and the task
//! sentence, none of which needs JSON escaping (asserted in tests).
//!
//! Body fields:
//! - openai-chat: `model`, `messages: [{role: user, content}]`,
//!   `max_tokens` = output length, `stream: true`,
//!   `stream_options: {include_usage: true}`, `temperature` if set;
//! - openai-completions: the same with `prompt` instead of `messages`;
//! - anthropic: `model`, `max_tokens`, `messages`, `stream: true`,
//!   `temperature` if set;
//! - gemini: `contents: [{role: user, parts: [{text}]}]`,
//!   `generationConfig: {maxOutputTokens, temperature if set}`; the model
//!   is in the URL (`/v1beta/models/{model}:streamGenerateContent?alt=sse`)
//!   and streaming is the method, so neither goes in the body.
//!
//! Then every `extra_body` entry is set at top level, overriding a default
//! of the same name (this is how `ignore_eos`/`min_tokens` reach vLLM).
//!
//! Headers: `content-type: application/json`, `accept: text/event-stream`,
//! the key as `Authorization: Bearer ..` (OpenAI) or `x-api-key` plus
//! `anthropic-version: 2023-06-01` (Anthropic) or `x-goog-api-key`
//! (Gemini), then the scenario's headers, which override ours. The client
//! adds `x-request-id` per request (`super::client::REQUEST_ID_HEADER`).
//! Key-bearing values are marked sensitive so `http`'s own `Debug` hides
//! them.

use bytes::Bytes;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use super::LlmError;
use super::prompt::PromptBuilder;
use crate::scenario::{Provider, Scenario};

/// Stands where the prompt goes while the template is serialized.
const MARKER: &str = "\u{1}tokenswarm-prompt\u{1}";

/// Anthropic's API version header value.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A scenario's body with holes where the prompt goes.
#[derive(Debug, Clone)]
pub struct BodyTemplate {
    /// Serialized JSON pieces; the prompt goes between consecutive pieces.
    pieces: Vec<Vec<u8>>,
    fixed_len: usize,
}

impl BodyTemplate {
    /// The template of `scenario`'s request body.
    pub fn new(scenario: &Scenario) -> Result<BodyTemplate, LlmError> {
        let marker = Value::String(MARKER.into());
        let prompt = match scenario.provider {
            Provider::OpenaiChat | Provider::Anthropic => json!([{"role": "user", "content": marker}]),
            Provider::OpenaiCompletions => marker,
            Provider::Gemini => json!([{"role": "user", "parts": [{"text": marker}]}]),
        };
        let body = body_map(scenario, prompt);
        let text = serde_json::to_vec(&Value::Object(body)).map_err(|e| LlmError::Body {
            scenario: scenario.name.clone(),
            reason: e.to_string(),
        })?;
        let marker_json = serde_json::to_vec(MARKER).unwrap_or_default();
        // Keep the quotes in the pieces, cut out the marker's inside.
        let inner = &marker_json[1..marker_json.len() - 1];
        let mut pieces = Vec::new();
        let mut rest = &text[..];
        while let Some(i) = find(rest, inner) {
            pieces.push(rest[..i].to_vec());
            rest = &rest[i + inner.len()..];
        }
        pieces.push(rest.to_vec());
        let fixed_len = pieces.iter().map(Vec::len).sum();
        Ok(BodyTemplate { pieces, fixed_len })
    }

    /// The body of request `seq`.
    pub fn body(&self, prompt: &PromptBuilder, seq: u64) -> Bytes {
        let holes = self.pieces.len() - 1;
        let mut out = Vec::with_capacity(self.fixed_len + holes * prompt.len_bytes());
        for (i, piece) in self.pieces.iter().enumerate() {
            if i > 0 {
                prompt.write(seq, &mut out);
            }
            out.extend_from_slice(piece);
        }
        Bytes::from(out)
    }
}

/// The body of `scenario` around `prompt` (the `messages` array, the
/// completions `prompt`, or Gemini's `contents`), with every field the
/// module docs list.
fn body_map(scenario: &Scenario, prompt: Value) -> Map<String, Value> {
    let mut body = Map::new();
    if scenario.provider == Provider::Gemini {
        // The model is in the URL and streaming is the method.
        body.insert("contents".into(), prompt);
        let mut generation = Map::new();
        generation.insert("maxOutputTokens".into(), scenario.output_length.into());
        if let Some(t) = scenario.temperature {
            generation.insert("temperature".into(), json!(t));
        }
        body.insert("generationConfig".into(), Value::Object(generation));
        for (k, v) in &scenario.extra_body {
            body.insert(k.clone(), v.clone());
        }
        return body;
    }
    body.insert("model".into(), Value::String(scenario.model.clone()));
    let field = if scenario.provider == Provider::OpenaiCompletions {
        "prompt"
    } else {
        "messages"
    };
    body.insert(field.into(), prompt);
    body.insert("max_tokens".into(), scenario.output_length.into());
    body.insert("stream".into(), Value::Bool(true));
    if scenario.provider != Provider::Anthropic {
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(t) = scenario.temperature {
        body.insert("temperature".into(), json!(t));
    }
    for (k, v) in &scenario.extra_body {
        body.insert(k.clone(), v.clone());
    }
    body
}

/// Who said a message of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Dataset prompts only (Anthropic: the top-level `system` field).
    System,
    User,
    Assistant,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// The body of one turn of a session: every message so far, in order
/// (chat and Anthropic: a `messages` array alternating user and assistant;
/// completions: their texts joined by newlines, since that API has no
/// roles). Unlike [`BodyTemplate`] this serializes the JSON each time:
/// answers are server text and need escaping.
pub fn conversation_body(scenario: &Scenario, messages: &[(Role, &str)]) -> Result<Bytes, LlmError> {
    messages_body(scenario, messages, scenario.output_length)
}

/// [`conversation_body`] with its own `max_tokens` (dataset prompts, whose
/// output length is per record); Anthropic takes `system` messages in its
/// top-level `system` field (joined by newlines).
pub fn messages_body(scenario: &Scenario, messages: &[(Role, &str)], max_tokens: u64) -> Result<Bytes, LlmError> {
    // Anthropic and Gemini take system text in a field of its own.
    let system: Vec<&str> = messages
        .iter()
        .filter(|(role, _)| *role == Role::System)
        .map(|(_, text)| *text)
        .collect();
    let turns = || messages.iter().filter(|(role, _)| *role != Role::System);
    let prompt = match scenario.provider {
        Provider::OpenaiChat => Value::Array(
            messages
                .iter()
                .map(|(role, text)| json!({"role": role.name(), "content": text}))
                .collect(),
        ),
        Provider::Anthropic => Value::Array(
            turns()
                .map(|(role, text)| json!({"role": role.name(), "content": text}))
                .collect(),
        ),
        Provider::OpenaiCompletions => {
            let texts: Vec<&str> = messages.iter().map(|(_, t)| *t).collect();
            Value::String(texts.join("\n"))
        }
        // Gemini's roles are `user` and `model`.
        Provider::Gemini => Value::Array(
            turns()
                .map(|(role, text)| {
                    let role = if *role == Role::Assistant { "model" } else { "user" };
                    json!({"role": role, "parts": [{"text": text}]})
                })
                .collect(),
        ),
    };
    let mut body = body_map(scenario, prompt);
    if max_tokens != scenario.output_length {
        match body.get_mut("generationConfig").and_then(Value::as_object_mut) {
            Some(generation) => {
                generation.insert("maxOutputTokens".into(), max_tokens.into());
            }
            None => {
                body.insert("max_tokens".into(), max_tokens.into());
            }
        }
    }
    if !system.is_empty() && matches!(scenario.provider, Provider::Anthropic | Provider::Gemini) {
        let (key, value) = if scenario.provider == Provider::Gemini {
            ("systemInstruction", json!({"parts": [{"text": system.join("\n")}]}))
        } else {
            ("system", Value::String(system.join("\n")))
        };
        if !body.contains_key(key) {
            body.insert(key.into(), value);
        }
    }
    serde_json::to_vec(&Value::Object(body))
        .map(Bytes::from)
        .map_err(|e| LlmError::Body {
            scenario: scenario.name.clone(),
            reason: e.to_string(),
        })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The characters a model name may keep in a URL path segment (RFC 3986
/// unreserved); everything else is percent-encoded.
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `host` + `endpoint` (or `endpoint` alone when it is an absolute URL, or
/// the provider's default path when the scenario names none). `{model}` in
/// the endpoint becomes the scenario's model, path-encoded (Gemini puts the
/// model in the path).
pub fn url(scenario: &Scenario, host: &str) -> Result<reqwest::Url, LlmError> {
    let endpoint = scenario
        .endpoint
        .as_deref()
        .unwrap_or_else(|| scenario.provider.default_endpoint());
    let endpoint = endpoint.replace("{model}", &path_segment(&scenario.model));
    let full = if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.to_string()
    } else {
        let path = if endpoint.starts_with('/') {
            endpoint.to_string()
        } else {
            format!("/{endpoint}")
        };
        format!("{}{path}", host.trim_end_matches('/'))
    };
    let bad = |reason: String| LlmError::BadUrl {
        scenario: scenario.name.clone(),
        url: full.clone(),
        reason,
    };
    let url = reqwest::Url::parse(&full).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("use an http:// or https:// URL".into()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("the URL has no host; pass the server as --host".into()));
    }
    Ok(url)
}

/// The headers of every request of `scenario`; `api_key` from its env var.
pub fn headers(scenario: &Scenario, api_key: Option<&str>) -> Result<HeaderMap, LlmError> {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
    let key_error = || LlmError::InvalidApiKey {
        scenario: scenario.name.clone(),
        var: scenario.api_key_env.clone().unwrap_or_default(),
    };
    match scenario.provider {
        Provider::OpenaiChat | Provider::OpenaiCompletions => {
            if let Some(key) = api_key {
                let mut v = HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| key_error())?;
                v.set_sensitive(true);
                h.insert(AUTHORIZATION, v);
            }
        }
        Provider::Anthropic => {
            if let Some(key) = api_key {
                let mut v = HeaderValue::try_from(key).map_err(|_| key_error())?;
                v.set_sensitive(true);
                h.insert(HeaderName::from_static("x-api-key"), v);
            }
            h.insert(
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static(ANTHROPIC_VERSION),
            );
        }
        Provider::Gemini => {
            if let Some(key) = api_key {
                let mut v = HeaderValue::try_from(key).map_err(|_| key_error())?;
                v.set_sensitive(true);
                h.insert(HeaderName::from_static("x-goog-api-key"), v);
            }
        }
    }
    for (name, value) in &scenario.headers {
        let bad = || LlmError::BadHeader {
            scenario: scenario.name.clone(),
            name: name.clone(),
        };
        let n = HeaderName::try_from(name.as_str()).map_err(|_| bad())?;
        let mut v = HeaderValue::try_from(value.as_str()).map_err(|_| bad())?;
        // Scenario headers may carry credentials too (api-key, cookies).
        v.set_sensitive(true);
        h.insert(n, v);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::prompt::TASK;

    fn scenario(provider: Provider) -> Scenario {
        Scenario {
            name: "S".into(),
            weight: 1,
            provider,
            endpoint: None,
            model: "m\"x".into(),
            prompt_length: 40,
            prefix_length: 8,
            output_length: 64,
            api_key_env: None,
            temperature: Some(0.5),
            headers: Default::default(),
            extra_body: [
                ("ignore_eos".to_string(), json!(true)),
                ("max_tokens".to_string(), json!(65)),
            ]
            .into_iter()
            .collect(),
            wait: Default::default(),
            session: None,
            dataset: None,
            task: None,
        }
    }

    #[test]
    fn bodies_per_provider_hold_the_prompt_and_fields() {
        let prompt = PromptBuilder::new("S", 40, 8);
        for provider in [Provider::OpenaiChat, Provider::OpenaiCompletions, Provider::Anthropic] {
            let s = scenario(provider);
            let t = BodyTemplate::new(&s).unwrap();
            let body: Value = serde_json::from_slice(&t.body(&prompt, 9)).unwrap();
            let text = match provider {
                Provider::OpenaiCompletions => body["prompt"].as_str().unwrap().to_string(),
                _ => {
                    assert_eq!(body["messages"][0]["role"], "user");
                    body["messages"][0]["content"].as_str().unwrap().to_string()
                }
            };
            assert_eq!(text, prompt.build(9));
            assert_eq!(body["model"], "m\"x");
            assert_eq!(body["max_tokens"], 65, "extra_body overrides");
            assert_eq!(body["ignore_eos"], true);
            assert_eq!(body["stream"], true);
            assert_eq!(body["temperature"], 0.5);
            assert_eq!(
                body["stream_options"]["include_usage"] == true,
                provider != Provider::Anthropic
            );
        }
        assert_eq!(serde_json::to_string(TASK).unwrap(), format!("\"{TASK}\""));
    }

    /// Gemini: the prompt in `contents[0].parts[0].text`, the output length
    /// in `generationConfig.maxOutputTokens`, no model or stream field; the
    /// model goes into the URL path (encoded) and the key into
    /// `x-goog-api-key`.
    #[test]
    fn gemini_body_url_and_key_header() {
        let prompt = PromptBuilder::new("S", 40, 8);
        let mut s = scenario(Provider::Gemini);
        s.extra_body.clear();
        let body: Value = serde_json::from_slice(&BodyTemplate::new(&s).unwrap().body(&prompt, 3)).unwrap();
        assert_eq!(body["contents"][0]["role"], "user");
        assert_eq!(body["contents"][0]["parts"][0]["text"], prompt.build(3).as_str());
        assert_eq!(body["generationConfig"]["maxOutputTokens"], 64);
        assert_eq!(body["generationConfig"]["temperature"], 0.5);
        assert!(body.get("model").is_none() && body.get("stream").is_none(), "{body}");
        s.model = "gemini-2.5-flash".into();
        assert_eq!(
            url(&s, "http://h:1").unwrap().as_str(),
            "http://h:1/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        s.model = "a b/c".into();
        assert_eq!(
            url(&s, "http://h:1").unwrap().path(),
            "/v1beta/models/a%20b%2Fc:streamGenerateContent"
        );
        let h = headers(&s, Some("gk")).unwrap();
        assert_eq!(h["x-goog-api-key"], "gk");
        assert!(h["x-goog-api-key"].is_sensitive() && !h.contains_key(AUTHORIZATION));
    }

    #[test]
    fn conversation_bodies_hold_every_message_in_order() {
        let msgs = [
            (Role::User, "A B"),
            (Role::Assistant, " tok \"quoted\"\n"),
            (Role::User, "C"),
        ];
        for provider in [Provider::OpenaiChat, Provider::OpenaiCompletions, Provider::Anthropic] {
            let s = scenario(provider);
            let body: Value = serde_json::from_slice(&conversation_body(&s, &msgs).unwrap()).unwrap();
            if provider == Provider::OpenaiCompletions {
                assert_eq!(body["prompt"], "A B\n tok \"quoted\"\n\nC");
            } else {
                let got: Vec<(String, String)> = body["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| {
                        (
                            m["role"].as_str().unwrap().into(),
                            m["content"].as_str().unwrap().into(),
                        )
                    })
                    .collect();
                let want: Vec<(String, String)> = msgs
                    .iter()
                    .map(|(r, t)| (r.name().to_string(), t.to_string()))
                    .collect();
                assert_eq!(got, want);
            }
            // the same fields as single requests
            assert_eq!(body["max_tokens"], 65);
            assert_eq!(body["ignore_eos"], true);
            assert_eq!(body["stream"], true);
        }
    }

    /// Gemini sessions and dataset prompts: roles `user`/`model` in
    /// `contents`, system text in `systemInstruction`, a per-record output
    /// length in `generationConfig.maxOutputTokens` (no `max_tokens`).
    #[test]
    fn gemini_conversations_use_contents_and_generation_config() {
        let mut s = scenario(Provider::Gemini);
        s.extra_body.clear();
        let msgs = [
            (Role::System, "sys"),
            (Role::User, "A B"),
            (Role::Assistant, " tok"),
            (Role::User, "C"),
        ];
        let body: Value = serde_json::from_slice(&messages_body(&s, &msgs, 7).unwrap()).unwrap();
        let got: Vec<(&str, &str)> = body["contents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["role"].as_str().unwrap(), c["parts"][0]["text"].as_str().unwrap()))
            .collect();
        assert_eq!(got, [("user", "A B"), ("model", " tok"), ("user", "C")]);
        assert_eq!(body["systemInstruction"]["parts"][0]["text"], "sys");
        assert_eq!(body["generationConfig"]["maxOutputTokens"], 7);
        assert!(
            body.get("max_tokens").is_none() && body.get("messages").is_none(),
            "{body}"
        );
    }

    #[test]
    fn urls_join_hosts_and_accept_absolute_endpoints() {
        let mut s = scenario(Provider::OpenaiChat);
        assert_eq!(
            url(&s, "http://h:8000/").unwrap().as_str(),
            "http://h:8000/v1/chat/completions"
        );
        s.endpoint = Some("https://api.x.com/v2/chat".into());
        assert_eq!(url(&s, "http://ignored").unwrap().as_str(), "https://api.x.com/v2/chat");
        s.endpoint = None;
        assert!(matches!(url(&s, "h:8000"), Err(LlmError::BadUrl { .. })));
        assert!(matches!(url(&s, ""), Err(LlmError::BadUrl { .. })));
    }

    #[test]
    fn headers_per_provider() {
        let h = headers(&scenario(Provider::Anthropic), Some("k1")).unwrap();
        assert_eq!(h["x-api-key"], "k1");
        assert!(h["x-api-key"].is_sensitive());
        assert_eq!(h["anthropic-version"], ANTHROPIC_VERSION);
        let h = headers(&scenario(Provider::OpenaiChat), Some("k2")).unwrap();
        assert_eq!(h[AUTHORIZATION], "Bearer k2");
        assert!(!format!("{h:?}").contains("k2"));
        let h = headers(&scenario(Provider::OpenaiChat), None).unwrap();
        assert!(!h.contains_key(AUTHORIZATION));
    }
}
