//! An API key set in an environment variable must never leave the process
//! except in the request's auth header: not in Outcome failure messages
//! (even when a server echoes the key back, whole or in part), not in
//! `Debug` output of the client or a prepared scenario, not in errors, not
//! in tracing logs at TRACE level (reqwest's `log` records included, via
//! tracing-log). A redirect never carries it anywhere (issue 13), and the
//! worker's allow-lists refuse a host or key variable before any request.

#[path = "llm_server.rs"]
mod llm_server;

use std::io::Write;
use std::sync::{Arc, Mutex};

use llm_server::*;
use tokenswarm::llm::{AllowList, LlmClient, LlmError, PreparedScenario};
use tokenswarm::outcome::{FailureKind, Outcome};
use tokenswarm::scenario::{Provider, Timeouts};
use tokio_util::sync::CancellationToken;

const VAR: &str = "TOKENSWARM_TEST_SECRET_KEY";
const KEY: &str = "sk-live-TOPSECRET-9f8e7d6c5b4a";
const BAD_VAR: &str = "TOKENSWARM_TEST_BAD_KEY";
const BAD_KEY: &str = "sk-bad-SECRET\nvalue";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The value of header `name` in a raw request head.
fn header(head: &str, name: &str) -> String {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// Echoes the credentials back in every way a careless server might.
fn echo(seen: &Seen) -> Vec<Step> {
    let auth = header(&seen.head, "authorization");
    let xkey = header(&seen.head, "x-api-key");
    let path = seen.head.split(' ').nth(1).unwrap_or("").to_string();
    match path.as_str() {
        "/v1/chat/completions" => vec![
            Step::Head(401, "application/json"),
            Step::Chunk(format!(r#"{{"error":{{"message":"Incorrect API key provided: {auth}"}}}}"#).into_bytes()),
            Step::End,
        ],
        "/v1/messages" => vec![
            Step::Head(200, "text/event-stream"),
            Step::Chunk(
                format!(
                    "event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"authentication_error\",\"message\":\"bad key {xkey}\"}}}}\n\n"
                )
                .into_bytes(),
            ),
            Step::End,
        ],
        "/v1/completions" => vec![
            Step::Head(200, "text/event-stream"),
            Step::Chunk(format!("data: {{not json {auth}\n\n").into_bytes()),
            Step::End,
        ],
        // Echoes the key partly masked and cut, as some APIs do.
        "/partial" => vec![
            Step::Head(403, "application/json"),
            Step::Chunk(
                format!(
                    r#"{{"error":"Incorrect API key provided: {}****{}, or {}"}}"#,
                    &KEY[..8],
                    &KEY[KEY.len() - 2..],
                    &KEY[..14]
                )
                .into_bytes(),
            ),
            Step::End,
        ],
        _ => ok_stream(3),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_never_appears_in_outcomes_debug_errors_or_logs() {
    // SAFETY: set before any other thread of this test binary reads the
    // environment; this is the only test in the binary that touches it.
    unsafe {
        std::env::set_var(VAR, KEY);
        std::env::set_var(BAD_VAR, BAD_KEY);
    }
    let logs = Capture::default();
    let sink = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .try_init()
        .expect("install the capturing subscriber");

    let server = start(echo).await;
    let client = LlmClient::new(&Timeouts::default(), 4).unwrap();
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut debug = vec![format!("{client:?}"), format!("{client:#?}")];

    for (provider, endpoint) in [
        (Provider::OpenaiChat, None),
        (Provider::Anthropic, None),
        (Provider::OpenaiCompletions, None),
        (Provider::OpenaiChat, Some("/ok")),
        (Provider::OpenaiChat, Some("/partial")),
    ] {
        let mut s = scenario(provider);
        s.api_key_env = Some(VAR.into());
        s.endpoint = endpoint.map(String::from);
        s.headers.insert("x-extra-credential".into(), KEY.into());
        let p = PreparedScenario::new(&s, &server.host()).unwrap();
        debug.push(format!("{p:?}"));
        debug.push(format!("{p:#?}"));
        outcomes.push(client.execute(&p, 0, &CancellationToken::new()).await);
    }
    // connection refused, with the key configured
    let mut s = scenario(Provider::OpenaiChat);
    s.api_key_env = Some(VAR.into());
    let p = PreparedScenario::new(&s, "http://127.0.0.1:9").unwrap();
    outcomes.push(client.execute(&p, 0, &CancellationToken::new()).await);

    // A 307 to another port, for both key headers: never followed.
    let elsewhere = start(|_| ok_stream(2)).await;
    let target = format!("http://127.0.0.1:{}/v1/x", elsewhere.port);
    let redirecting = start(move |_| {
        vec![Step::Raw(
            format!("HTTP/1.1 307 Temporary Redirect\r\nlocation: {target}\r\ncontent-length: 0\r\n\r\n").into_bytes(),
        )]
    })
    .await;
    for provider in [Provider::OpenaiChat, Provider::Anthropic] {
        let mut s = scenario(provider);
        s.api_key_env = Some(VAR.into());
        let p = PreparedScenario::new(&s, &redirecting.host()).unwrap();
        outcomes.push(client.execute(&p, 0, &CancellationToken::new()).await);
    }
    assert_eq!(redirecting.requests().len(), 2);
    assert_eq!(
        elsewhere.connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the redirect target saw no connection at all"
    );

    // The key really was sent, and the servers really echoed it.
    let seen = server.requests();
    assert_eq!(header(&seen[0].head, "authorization"), format!("Bearer {KEY}"));
    assert_eq!(header(&seen[1].head, "x-api-key"), KEY);

    let kinds: Vec<Option<FailureKind>> = outcomes.iter().map(|o| o.failure.as_ref().map(|f| f.kind())).collect();
    assert_eq!(
        kinds,
        vec![
            Some(FailureKind::HttpStatus(401)),
            Some(FailureKind::ErrorEvent),
            Some(FailureKind::InvalidResponse),
            None,
            Some(FailureKind::HttpStatus(403)),
            Some(FailureKind::Connect),
            Some(FailureKind::Redirect),
            Some(FailureKind::Redirect),
        ]
    );
    for o in &outcomes {
        let text = format!("{o:?}");
        assert!(
            !text.contains(KEY) && !text.contains("TOPSECRET") && !text.contains("sk-live-"),
            "no part of the key: {text}"
        );
    }
    assert!(
        outcomes[4]
            .failure
            .as_ref()
            .unwrap()
            .message()
            .contains("Incorrect API key provided: [redacted]"),
        "partly masked echoes are redacted: {:?}",
        outcomes[4].failure
    );
    assert!(
        outcomes[0].failure.as_ref().unwrap().message().contains("[redacted]"),
        "the echoed key was scrubbed: {:?}",
        outcomes[0].failure
    );

    for d in &debug {
        assert!(!d.contains("TOPSECRET"), "{d}");
    }
    assert!(
        debug[2].contains("x-extra-credential"),
        "header names are shown: {}",
        debug[2]
    );

    // Set-up errors name the variable, never the value.
    let mut s = scenario(Provider::Anthropic);
    s.api_key_env = Some(BAD_VAR.into());
    let e = PreparedScenario::new(&s, &server.host()).unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(text.contains(BAD_VAR) && !text.contains("SECRET"), "{text}");
    let mut s = scenario(Provider::OpenaiChat);
    s.headers.insert("x-key".into(), "SECRET\u{7f}\n".into());
    let e = PreparedScenario::new(&s, &server.host()).unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(text.contains("x-key") && !text.contains("SECRET"), "{text}");

    // The worker's allow-lists: refused before the variable is read.
    let allow = AllowList::new(&["127.0.0.1:1".into()], &["SOME_OTHER_KEY".into()]).unwrap();
    let mut s = scenario(Provider::OpenaiChat);
    s.api_key_env = Some(VAR.into());
    let e = PreparedScenario::with_allow(&s, &server.host(), &allow).unwrap_err();
    assert!(matches!(e, LlmError::KeyEnvNotAllowed { .. }), "{e}");
    let text = format!("{e} {e:?}");
    assert!(
        text.contains(VAR) && text.contains("--allow-key-env") && !text.contains("TOPSECRET"),
        "{text}"
    );
    s.api_key_env = None;
    let e = PreparedScenario::with_allow(&s, &server.host(), &allow).unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(e, LlmError::HostNotAllowed { .. }) && text.contains(&format!("127.0.0.1:{}", server.port)),
        "{text}"
    );
    let ok = AllowList::new(&[format!("127.0.0.1:{}", server.port)], &[VAR.into()]).unwrap();
    s.api_key_env = Some(VAR.into());
    assert!(PreparedScenario::with_allow(&s, &server.host(), &ok).is_ok());

    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(logs.contains("request failed"), "our logs were captured: {logs}");
    assert!(
        logs.contains("TRACE hyper_util"),
        "HTTP stack logs were captured: {logs}"
    );
    assert!(!logs.contains("TOPSECRET") && !logs.contains("sk-live-"), "{logs}");
}

/// Proves: a bad allow-list entry is a usage error (exit 2) naming it, and
/// the flags exist on `worker`.
#[test]
fn bad_allow_list_flags_are_usage_errors() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenswarm"))
        .args([
            "worker",
            "--allow-host",
            "http://evil.example/",
            "--master-timeout",
            "1",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("http://evil.example/") && stderr.contains("HOST:PORT"),
        "{stderr}"
    );
}
