//! Every failure kind produced by a real local HTTP server, plus the
//! success paths of each provider: what the client sends and what it
//! concludes. A failure must come back as data in the Outcome.

#[path = "llm_server.rs"]
mod llm_server;

use std::sync::atomic::Ordering;
use std::time::Duration;

use llm_server::*;
use tokenswarm::llm::{LlmClient, PreparedScenario};
use tokenswarm::outcome::{FailureKind, Outcome};
use tokenswarm::scenario::{Provider, Scenario, Timeouts};
use tokio_util::sync::CancellationToken;

fn timeouts(first_token_s: f64, total_s: f64) -> Timeouts {
    let secs = tokenswarm::units::seconds_saturating;
    Timeouts {
        connect: Duration::from_secs(2),
        first_token: secs(first_token_s),
        total: secs(total_s),
    }
}

async fn run_with(s: &Scenario, host: &str, t: Timeouts) -> Outcome {
    let client = LlmClient::new(&t, 4).unwrap();
    let p = PreparedScenario::new(s, host).unwrap();
    client.execute(&p, 1, &CancellationToken::new()).await
}

async fn run(server: &Server) -> Outcome {
    run_with(&scenario(Provider::OpenaiChat), &server.host(), Timeouts::default()).await
}

fn kind(o: &Outcome) -> Option<FailureKind> {
    o.failure.as_ref().map(|f| f.kind())
}

fn message(o: &Outcome) -> String {
    o.failure.as_ref().map(|f| f.message()).unwrap_or_default()
}

fn head_ok() -> Step {
    Step::Head(200, "text/event-stream")
}

#[tokio::test]
async fn success_sends_the_right_request_and_reuses_the_connection() {
    let server = start(|_| ok_stream(5)).await;
    let client = LlmClient::new(&Timeouts::default(), 4).unwrap();
    let p = PreparedScenario::new(&scenario(Provider::OpenaiChat), &server.host()).unwrap();
    for seq in 0..5 {
        let o = client.execute(&p, seq, &CancellationToken::new()).await;
        assert!(o.is_success(), "{:?}", o.failure);
        assert_eq!((o.output_chunks, o.output_tokens()), (5, 5));
        assert_eq!(o.usage.input_tokens, Some(64));
        assert_eq!(o.itl_us.len(), 4);
        assert!(o.ttft.is_some() && o.ttfa == o.ttft && o.e2e >= o.ttft);
        assert_eq!(o.queue, Duration::ZERO);
    }
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        1,
        "pooled connection was not reused"
    );
    let seen = server.requests();
    assert_eq!(seen.len(), 5);
    let head = seen[0].head.to_ascii_lowercase();
    assert!(head.starts_with("post /v1/chat/completions http/1.1"), "{head}");
    assert!(head.contains("content-type: application/json") && head.contains("accept: text/event-stream"));
    assert!(!head.contains("authorization"));
    // Every request names itself; the per-request rows carry the same id.
    for (seq, r) in seen.iter().enumerate() {
        let want = format!("x-request-id: {}", tokenswarm::llm::client::request_id(seq as u64));
        assert!(r.head.to_ascii_lowercase().contains(&want), "{want} in {}", r.head);
    }
    let body: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body["stream"], true);
    assert_eq!(body["max_tokens"], 20);
    assert_eq!(body["stream_options"]["include_usage"], true);
    let prompt = body["messages"][0]["content"].as_str().unwrap();
    assert_eq!(prompt.split_whitespace().count(), 64);
    let other: serde_json::Value = serde_json::from_slice(&seen[1].body).unwrap();
    let other = other["messages"][0]["content"].as_str().unwrap();
    let (a, b): (Vec<&str>, Vec<&str>) = (prompt.split(' ').collect(), other.split(' ').collect());
    assert_eq!(a[..16], b[..16], "shared prefix");
    assert_ne!(a[16..], b[16..], "unique rest");
}

#[tokio::test]
async fn completions_and_anthropic_success() {
    let server = start(|seen| {
        if seen.head.starts_with("POST /v1/completions") {
            vec![
                head_ok(),
                Step::Chunk(sse(r#"{"choices":[{"index":0,"text":" A","finish_reason":null}]}"#)),
                Step::Chunk(sse(r#"{"choices":[{"index":0,"text":" B","finish_reason":"length"}]}"#)),
                Step::Chunk(usage(64, 2)),
                Step::Chunk(done()),
                Step::End,
            ]
        } else {
            let ev = |k: &str, d: &str| format!("event: {k}\ndata: {d}\n\n").into_bytes();
            vec![
                head_ok(),
                Step::Chunk(ev(
                    "message_start",
                    r#"{"type":"message_start","message":{"usage":{"input_tokens":48,"cache_read_input_tokens":16,"output_tokens":1}}}"#,
                )),
                Step::Chunk(ev("ping", r#"{"type":"ping"}"#)),
                Step::Chunk(ev(
                    "content_block_delta",
                    r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}"#,
                )),
                Step::Chunk(ev(
                    "message_delta",
                    r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":3}}"#,
                )),
                Step::Chunk(ev("message_stop", r#"{"type":"message_stop"}"#)),
                Step::End,
            ]
        }
    })
    .await;
    let o = run_with(
        &scenario(Provider::OpenaiCompletions),
        &server.host(),
        Timeouts::default(),
    )
    .await;
    assert!(o.is_success(), "{:?}", o.failure);
    assert_eq!(o.output_chunks, 2);
    let o = run_with(&scenario(Provider::Anthropic), &server.host(), Timeouts::default()).await;
    assert!(o.is_success(), "{:?}", o.failure);
    assert_eq!(o.usage.input_tokens, Some(64));
    assert_eq!(o.usage.cached_tokens, Some(16));
    assert_eq!(o.output_tokens(), 3);
    let seen = server.requests();
    let head = seen[1].head.to_ascii_lowercase();
    assert!(head.starts_with("post /v1/messages"), "{head}");
    assert!(head.contains("anthropic-version: 2023-06-01"), "{head}");
    let body: serde_json::Value = serde_json::from_slice(&seen[1].body).unwrap();
    assert!(body.get("stream_options").is_none());
    let body: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body["prompt"].as_str().unwrap().split_whitespace().count(), 64);
}

#[tokio::test]
async fn http_429_and_500_are_http_status_with_an_excerpt() {
    for status in [429u16, 500, 503] {
        let server = start(move |_| {
            vec![
                Step::Head(status, "application/json"),
                Step::Chunk(br#"{"error":{"message":"Rate limit reached for requests","type":"requests"}}"#.to_vec()),
                Step::End,
            ]
        })
        .await;
        let o = run(&server).await;
        assert_eq!(kind(&o), Some(FailureKind::HttpStatus(status)));
        assert!(message(&o).contains(&status.to_string()), "{}", message(&o));
        assert!(message(&o).contains("Rate limit reached"), "{}", message(&o));
        assert!(o.ttft.is_none() && o.output_chunks == 0);
        assert!(o.content_length > 0);
    }
}

#[tokio::test]
async fn long_error_bodies_are_cut_short() {
    let server = start(|_| {
        vec![
            Step::Head(400, "text/plain"),
            Step::Chunk(vec![b'x'; 100_000]),
            Step::End,
        ]
    })
    .await;
    let o = run(&server).await;
    assert_eq!(kind(&o), Some(FailureKind::HttpStatus(400)));
    assert!(message(&o).len() < 400, "{}", message(&o).len());
}

#[tokio::test]
async fn connection_refused_is_connect() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let o = run_with(
        &scenario(Provider::OpenaiChat),
        &format!("http://127.0.0.1:{port}"),
        Timeouts::default(),
    )
    .await;
    assert_eq!(kind(&o), Some(FailureKind::Connect), "{}", message(&o));
    assert!(
        !message(&o).contains("127.0.0.1"),
        "the URL is left out: {}",
        message(&o)
    );
}

#[tokio::test]
async fn server_closing_before_responding_is_connect() {
    let server = start(|_| vec![Step::Close]).await;
    let o = run(&server).await;
    assert_eq!(kind(&o), Some(FailureKind::Connect), "{}", message(&o));
}

#[tokio::test]
async fn first_token_timeout() {
    let server = start(|_| {
        vec![
            head_ok(),
            Step::Chunk(role()),
            Step::Sleep(Duration::from_secs(3)),
            Step::Chunk(token("late")),
            Step::End,
        ]
    })
    .await;
    let o = run_with(&scenario(Provider::OpenaiChat), &server.host(), timeouts(0.2, 10.0)).await;
    assert_eq!(kind(&o), Some(FailureKind::Timeout), "{}", message(&o));
    assert!(message(&o).contains("first-token"), "{}", message(&o));
    // a timeout never fires early; that it fired before the late token is
    // shown by the kind and by the missing first token
    assert!(o.total >= Duration::from_millis(200), "{:?}", o.total);
    assert!(o.ttft.is_none());
}

#[tokio::test]
async fn no_response_headers_within_first_token_timeout() {
    let server = start(|_| vec![Step::Sleep(Duration::from_secs(3)), Step::Close]).await;
    let o = run_with(&scenario(Provider::OpenaiChat), &server.host(), timeouts(0.2, 10.0)).await;
    // Timeout, not the server's close after 3 s: the limit fired first
    assert_eq!(kind(&o), Some(FailureKind::Timeout), "{}", message(&o));
    assert!(o.ttft.is_none(), "{o:?}");
}

#[tokio::test]
async fn total_timeout_after_tokens_started() {
    let server = start(|_| {
        let mut steps = vec![head_ok()];
        for i in 0..50 {
            steps.push(Step::ChunkAt(Duration::from_millis(20 * i), token("t")));
        }
        steps.push(Step::End);
        steps
    })
    .await;
    let o = run_with(&scenario(Provider::OpenaiChat), &server.host(), timeouts(0.2, 0.3)).await;
    assert_eq!(kind(&o), Some(FailureKind::Timeout), "{}", message(&o));
    assert!(message(&o).contains("total"), "{}", message(&o));
    assert!(o.ttft.is_some() && o.output_chunks > 3, "{o:?}");
    // never early, and the stream was cut before its 50th token
    assert!(o.total >= Duration::from_millis(300), "{:?}", o.total);
    assert!(o.output_chunks < 50, "{o:?}");
}

#[tokio::test]
async fn error_event_after_200() {
    let server = start(|_| {
        vec![
            head_ok(),
            Step::Chunk(role()),
            Step::Chunk(sse(
                r#"{"error":{"object":"error","message":"maximum context length exceeded","type":"BadRequestError","code":400}}"#,
            )),
            Step::Chunk(done()),
            Step::End,
        ]
    })
    .await;
    let o = run(&server).await;
    assert_eq!(kind(&o), Some(FailureKind::ErrorEvent));
    assert!(message(&o).contains("maximum context length"), "{}", message(&o));
}

#[tokio::test]
async fn anthropic_error_event() {
    let server = start(|_| {
        vec![
            head_ok(),
            Step::Chunk(
                b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
                    .to_vec(),
            ),
            Step::End,
        ]
    })
    .await;
    let o = run_with(&scenario(Provider::Anthropic), &server.host(), Timeouts::default()).await;
    assert_eq!(kind(&o), Some(FailureKind::ErrorEvent));
    assert!(message(&o).contains("overloaded_error: Overloaded"), "{}", message(&o));
}

#[tokio::test]
async fn truncated_by_a_dropped_connection_or_a_missing_end_marker() {
    let server = start(|_| vec![head_ok(), Step::Chunk(role()), Step::Chunk(token("a")), Step::Close]).await;
    let o = run(&server).await;
    assert_eq!(kind(&o), Some(FailureKind::Truncated), "{}", message(&o));
    assert_eq!(o.output_chunks, 1);
    assert!(o.ttft.is_some());

    let server = start(|_| vec![head_ok(), Step::Chunk(token("a")), Step::Chunk(token("b")), Step::End]).await;
    let o = run(&server).await;
    assert_eq!(kind(&o), Some(FailureKind::Truncated), "{}", message(&o));
    assert_eq!(o.output_chunks, 2);
}

#[tokio::test]
async fn empty_answer() {
    let server = start(|_| {
        vec![
            head_ok(),
            Step::Chunk(role()),
            Step::Chunk(finish("stop")),
            Step::Chunk(usage(64, 0)),
            Step::Chunk(done()),
            Step::End,
        ]
    })
    .await;
    let o = run(&server).await;
    assert_eq!(kind(&o), Some(FailureKind::EmptyAnswer), "{}", message(&o));
}

#[tokio::test]
async fn invalid_json_and_wrong_content_type() {
    let server = start(|_| {
        vec![
            head_ok(),
            Step::Chunk(token("a")),
            Step::Chunk(sse("{not json")),
            Step::End,
        ]
    })
    .await;
    let o = run(&server).await;
    assert_eq!(kind(&o), Some(FailureKind::InvalidResponse), "{}", message(&o));
    assert!(message(&o).contains("{not json"), "{}", message(&o));

    let server = start(|_| {
        vec![
            Step::Head(200, "application/json"),
            Step::Chunk(br#"{"choices":[{"message":{"content":"hi"}}]}"#.to_vec()),
            Step::End,
        ]
    })
    .await;
    let o = run(&server).await;
    assert_eq!(kind(&o), Some(FailureKind::InvalidResponse), "{}", message(&o));

    let server = start(|_| {
        vec![
            Step::Head(200, "application/json"),
            Step::Chunk(br#"{"error":{"message":"nope"}}"#.to_vec()),
            Step::End,
        ]
    })
    .await;
    let o = run(&server).await;
    assert_eq!(kind(&o), Some(FailureKind::ErrorEvent), "{}", message(&o));
}

#[tokio::test]
async fn cancellation_while_streaming_and_before_headers() {
    let slow = |_: &Seen| {
        let mut steps = vec![head_ok()];
        for i in 0..100 {
            steps.push(Step::ChunkAt(Duration::from_millis(10 * i), token("t")));
        }
        steps.push(Step::End);
        steps
    };
    let server = start(slow).await;
    let client = LlmClient::new(&Timeouts::default(), 4).unwrap();
    let p = PreparedScenario::new(&scenario(Provider::OpenaiChat), &server.host()).unwrap();
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        c.cancel();
    });
    let o = client.execute(&p, 0, &cancel).await;
    assert_eq!(kind(&o), Some(FailureKind::Cancelled), "{}", message(&o));
    assert!(o.ttft.is_some() && o.output_chunks >= 5, "{o:?}");
    assert!(
        o.total >= Duration::from_millis(150) && o.total < Duration::from_millis(900),
        "{:?}",
        o.total
    );

    let server = start(|_| vec![Step::Sleep(Duration::from_secs(3)), Step::Close]).await;
    let p = PreparedScenario::new(&scenario(Provider::OpenaiChat), &server.host()).unwrap();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let o = client.execute(&p, 0, &cancel).await;
    assert_eq!(kind(&o), Some(FailureKind::Cancelled), "{}", message(&o));
    assert!(o.total < Duration::from_millis(100));
}

#[tokio::test]
async fn setup_errors_name_the_problem() {
    let mut s = scenario(Provider::OpenaiChat);
    s.api_key_env = Some("TOKENSWARM_TEST_UNSET_VAR_1234".into());
    let e = PreparedScenario::new(&s, "http://127.0.0.1:1").unwrap_err().to_string();
    assert!(
        e.contains("TOKENSWARM_TEST_UNSET_VAR_1234") && e.contains("not set"),
        "{e}"
    );
    let s = scenario(Provider::OpenaiChat);
    let e = PreparedScenario::new(&s, "127.0.0.1:8000").unwrap_err().to_string();
    assert!(e.contains("127.0.0.1:8000"), "{e}");
    let mut s = scenario(Provider::OpenaiChat);
    s.headers.insert("bad header".into(), "v".into());
    let e = PreparedScenario::new(&s, "http://h").unwrap_err().to_string();
    assert!(e.contains("bad header"), "{e}");
}

/// Client throughput on one core: a current-thread runtime drives 64
/// concurrent streams of 64 tokens against a server on its own thread.
/// `cargo test --release --test llm_http -- --ignored --nocapture`
#[test]
#[ignore = "bench: cargo test --release --test llm_http -- --ignored --nocapture"]
fn bench_one_core_streamed_requests_per_second() {
    let whole: Vec<u8> = ok_stream(64)
        .into_iter()
        .filter_map(|s| match s {
            Step::Chunk(c) => Some(c),
            _ => None,
        })
        .flatten()
        .collect();
    for (label, per_token_writes) in [("one write per response", false), ("one write per event", true)] {
        let body = whole.clone();
        let server = start_dedicated(move |_| {
            if per_token_writes {
                ok_stream(64)
            } else {
                vec![head_ok(), Step::Chunk(body.clone()), Step::End]
            }
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cpu_before = thread_cpu_s();
        let (done, failed, secs) = rt.block_on(async {
            let client = LlmClient::new(&Timeouts::default(), 64).unwrap();
            let mut s = scenario(Provider::OpenaiChat);
            s.output_length = 64;
            let p = std::sync::Arc::new(PreparedScenario::new(&s, &server.host()).unwrap());
            let start = tokio::time::Instant::now();
            let until = start + Duration::from_secs(2);
            let mut tasks = tokio::task::JoinSet::new();
            for user in 0..64u64 {
                let (client, p) = (client.clone(), p.clone());
                tasks.spawn(async move {
                    let (mut ok, mut bad, mut seq) = (0u64, 0u64, user << 32);
                    let cancel = CancellationToken::new();
                    while tokio::time::Instant::now() < until {
                        let o = client.execute(&p, seq, &cancel).await;
                        if o.is_success() && o.output_chunks == 64 {
                            ok += 1
                        } else {
                            bad += 1
                        }
                        seq += 1;
                    }
                    (ok, bad)
                });
            }
            let (mut ok, mut bad) = (0, 0);
            while let Some(r) = tasks.join_next().await {
                let (o, b) = r.unwrap();
                ok += o;
                bad += b;
            }
            (ok, bad, start.elapsed().as_secs_f64())
        });
        let cpu = thread_cpu_s() - cpu_before;
        println!(
            "{label}: {:.0} streamed 64-token requests/s wall clock, client thread busy {:.0}% \
             => {:.0} requests/s per fully used client core ({done} ok, {failed} failed, {secs:.2} s)",
            done as f64 / secs,
            100.0 * cpu / secs,
            done as f64 / cpu
        );
    }
}

/// CPU time of the calling thread (Linux schedstat), seconds.
fn thread_cpu_s() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |ns| ns / 1e9)
}
