//! Hostile and flaky servers against the LLM client (issue 13, items 1 and 5):
//! an endless SSE line must fail the request with its own kind while the
//! process's memory stays bounded; a pooled keep-alive connection the
//! server closed must cost one counted retry, not a failed request; and
//! requests that may have reached a server are not retried.

#[path = "llm_server.rs"]
mod llm_server;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use llm_server::*;
use tokenswarm::llm::{LlmClient, PreparedScenario};
use tokenswarm::outcome::FailureKind;
use tokenswarm::scenario::{Provider, Timeouts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Peak resident set of this process, bytes (`VmHWM`).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kb * 1024
}

/// Reads one request (head and content-length body); false at EOF.
async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                buf.drain(..end + 4 + len);
                return true;
            }
        }
        let mut tmp = [0u8; 16384];
        match sock.read(&mut tmp).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

/// The attack: HTTP 200 `text/event-stream`, then one SSE line that never
/// ends, written as fast as the client reads. Counts the bytes sent.
async fn endless_line_server() -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(AtomicU64::new(0));
    let total = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let total = total.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                if !read_request(&mut sock, &mut buf).await {
                    return;
                }
                let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                if sock.write_all(head).await.is_err() {
                    return;
                }
                let mut chunk = format!("{:x}\r\ndata: ", 64 * 1024).into_bytes();
                chunk.resize(chunk.len() + 64 * 1024 - 6, b'x');
                chunk.extend_from_slice(b"\r\n");
                let mut piece = format!("{:x}\r\n", 64 * 1024).into_bytes();
                piece.resize(piece.len() + 64 * 1024, b'x');
                piece.extend_from_slice(b"\r\n");
                let mut first = true;
                loop {
                    let c = if first { &chunk } else { &piece };
                    first = false;
                    if sock.write_all(c).await.is_err() {
                        return;
                    }
                    total.fetch_add(64 * 1024, Ordering::Relaxed);
                }
            });
        }
    });
    (port, sent)
}

/// Proves: 16 concurrent requests to a server that streams one endless SSE
/// line each fail as `sse_line_too_long`, and the process's peak memory
/// grows by less than 200 MB (before the bound, one such stream took a
/// worker from 9 MB to 3 GB in 10 s; the timeouts here are 60 s, so only the
/// bound can end the requests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_sse_line_fails_with_its_kind_and_memory_stays_bounded() {
    let (port, sent) = endless_line_server().await;
    let before = peak_rss();
    let t = Timeouts {
        connect: Duration::from_secs(5),
        first_token: Duration::from_secs(60),
        total: Duration::from_secs(60),
    };
    let client = LlmClient::new(&t, 16).unwrap();
    let p =
        Arc::new(PreparedScenario::new(&scenario(Provider::OpenaiChat), &format!("http://127.0.0.1:{port}")).unwrap());
    let mut tasks = Vec::new();
    for seq in 0..16 {
        let (client, p) = (client.clone(), p.clone());
        tasks.push(tokio::spawn(async move {
            client.execute(&p, seq, &CancellationToken::new()).await
        }));
    }
    for t in tasks {
        let o = t.await.unwrap();
        let f = o.failure.expect("the request fails");
        assert_eq!(f.kind(), FailureKind::SseLineTooLong, "{}", f.message());
        assert!(
            o.content_length >= 256 * 1024,
            "the bound was reached: {}",
            o.content_length
        );
    }
    let grown = peak_rss().saturating_sub(before);
    let sent = sent.load(Ordering::Relaxed);
    eprintln!("server sent {} MiB; peak RSS grew {} MiB", sent >> 20, grown >> 20);
    assert!(sent >= 16 * 256 * 1024, "the attack ran: {sent} bytes");
    assert!(grown < 200 << 20, "peak RSS grew by {} MiB", grown >> 20);
}

/// A well-formed chunked OpenAI chat response of 3 tokens.
fn ok_response() -> Vec<u8> {
    let mut body = Vec::new();
    let mut chunk = |data: Vec<u8>| {
        body.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        body.extend_from_slice(&data);
        body.extend_from_slice(b"\r\n");
    };
    chunk(role());
    for _ in 0..3 {
        chunk(token(" t"));
    }
    chunk(finish("stop"));
    chunk(usage(64, 3));
    chunk(done());
    let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    out.extend_from_slice(&body);
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[derive(Clone, Copy)]
enum Closing {
    /// Serve one request per connection; when the next request arrives,
    /// close without reading it (the keep-alive race, made deterministic).
    OnNextRequest,
    /// Close a connection once it has been idle for 5 ms.
    AfterIdle,
    /// Read the first request and close without answering.
    WithoutAnswer,
    /// Serve one request; answer the next with a head, then close.
    MidResponse,
}

struct Counts {
    port: u16,
    connections: Arc<AtomicUsize>,
    /// Requests the server application read.
    requests: Arc<AtomicUsize>,
}

async fn closing_server(mode: Closing) -> Counts {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (c, r) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                if !read_request(&mut sock, &mut buf).await {
                    return;
                }
                r.fetch_add(1, Ordering::SeqCst);
                match mode {
                    Closing::WithoutAnswer => return,
                    _ => {
                        if sock.write_all(&ok_response()).await.is_err() {
                            return;
                        }
                    }
                }
                match mode {
                    Closing::OnNextRequest => {
                        // Unread data at close makes the kernel send RST.
                        let _ = sock.readable().await;
                    }
                    Closing::AfterIdle => tokio::time::sleep(Duration::from_millis(5)).await,
                    Closing::MidResponse => {
                        if read_request(&mut sock, &mut buf).await {
                            r.fetch_add(1, Ordering::SeqCst);
                            let _ = sock
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                                .await;
                        }
                    }
                    Closing::WithoutAnswer => {}
                }
            });
        }
    });
    Counts {
        port,
        connections,
        requests,
    }
}

/// Proves: against a server that closes each keep-alive connection when the
/// next request arrives on it (without reading it), 20 sequential requests
/// all succeed; every request that met a closed pooled connection was sent
/// once more on a new one and counted (10 of 20: each retry's connection is
/// not pooled, so the next request opens a fresh one that serves it).
#[tokio::test]
async fn stale_pooled_connections_are_retried_once_and_counted() {
    let server = closing_server(Closing::OnNextRequest).await;
    let client = LlmClient::new(&Timeouts::default(), 4).unwrap();
    let p = PreparedScenario::new(
        &scenario(Provider::OpenaiChat),
        &format!("http://127.0.0.1:{}", server.port),
    )
    .unwrap();
    let mut retried = 0;
    for seq in 0..20 {
        let o = client.execute(&p, seq, &CancellationToken::new()).await;
        assert!(o.is_success(), "request {seq}: {:?}", o.failure);
        assert!(o.stale_retries <= 1);
        retried += o.stale_retries;
    }
    assert_eq!(retried, 10, "requests 2, 4, .. met a stale connection");
    assert_eq!(client.stale_retries(), 10);
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        20,
        "the server read each request once"
    );
}

/// Proves: a server that closes idle connections after 5 ms, with requests
/// 20 ms apart, fails none of them (closed idle connections are dropped
/// from the pool or retried, never reported as failures).
#[tokio::test]
async fn a_server_closing_idle_connections_fails_no_request() {
    let server = closing_server(Closing::AfterIdle).await;
    let client = LlmClient::new(&Timeouts::default(), 4).unwrap();
    let p = PreparedScenario::new(
        &scenario(Provider::OpenaiChat),
        &format!("http://127.0.0.1:{}", server.port),
    )
    .unwrap();
    for seq in 0..15 {
        let o = client.execute(&p, seq, &CancellationToken::new()).await;
        assert!(o.is_success(), "request {seq}: {:?}", o.failure);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 15);
    assert!(
        server.connections.load(Ordering::SeqCst) >= 2,
        "the server did close connections"
    );
}

/// Proves: what may have reached a server is not retried: a fresh
/// connection closed after the server read the request is a `connect`
/// failure, and a reused connection that closes after the response head is
/// `truncated`; the server read each request exactly once.
#[tokio::test]
async fn requests_that_may_have_reached_the_server_are_not_retried() {
    let server = closing_server(Closing::WithoutAnswer).await;
    let client = LlmClient::new(&Timeouts::default(), 4).unwrap();
    let p = PreparedScenario::new(
        &scenario(Provider::OpenaiChat),
        &format!("http://127.0.0.1:{}", server.port),
    )
    .unwrap();
    let o = client.execute(&p, 0, &CancellationToken::new()).await;
    assert_eq!(
        o.failure.as_ref().map(|f| f.kind()),
        Some(FailureKind::Connect),
        "{:?}",
        o.failure
    );
    assert_eq!(o.stale_retries, 0);
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);

    let server = closing_server(Closing::MidResponse).await;
    let p = PreparedScenario::new(
        &scenario(Provider::OpenaiChat),
        &format!("http://127.0.0.1:{}", server.port),
    )
    .unwrap();
    let o = client.execute(&p, 0, &CancellationToken::new()).await;
    assert!(o.is_success(), "{:?}", o.failure);
    let o = client.execute(&p, 1, &CancellationToken::new()).await;
    assert_eq!(
        o.failure.as_ref().map(|f| f.kind()),
        Some(FailureKind::Truncated),
        "{:?}",
        o.failure
    );
    assert_eq!(o.stale_retries, 0);
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        1,
        "the second request reused the first connection"
    );
}
