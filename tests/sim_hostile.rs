//! The simulator under attack (issue 13, item 6): oversized bodies and model
//! names are refused with a clear status and the simulator goes on serving;
//! a half-sent request is disconnected by the header-read timeout; a flood of
//! half-open connections does not keep a well-formed request from being served.

#[path = "sim_support.rs"]
mod support;

use std::time::Duration;

use support::*;
use tokenswarm::sim::{MAX_MODEL_BYTES, SimConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bounds each test's waiting, never the behaviour under test.
const TEST_BOUND: Duration = Duration::from_secs(60);

fn addr(sim: &Sim) -> String {
    sim.base.trim_start_matches("http://").to_string()
}

async fn ok_request(sim: &Sim) -> u16 {
    sim.post("/v1/chat/completions", &chat("a b c", 2, false).to_string())
        .await
        .0
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(tcp: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_cap_gets_413_and_the_sim_stays_up() {
    let sim = Sim::start(fast()).await;
    let max = SimConfig::default().max_body_bytes;
    // a valid request, padded past the cap with prompt words
    let body = chat(&"w ".repeat(max / 2 + 1024), 1, false).to_string();
    assert!(body.len() > max);
    for path in ["/v1/chat/completions", "/v1/messages"] {
        let (st, _, text) = sim.post(path, &body).await;
        assert_eq!(st, 413, "{path}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains("too large"), "{text}");
    }
    // a body declared far above the cap is refused before it is sent
    let mut tcp = TcpStream::connect(addr(&sim)).await.unwrap();
    tcp.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000000\r\n\r\n{",
    )
    .await
    .unwrap();
    let got = tokio::time::timeout(TEST_BOUND, read_to_close(&mut tcp)).await.unwrap();
    assert!(got.starts_with(b"HTTP/1.1 413"), "{}", String::from_utf8_lossy(&got));
    // still serving, and the refusals are counted
    assert_eq!(ok_request(&sim).await, 200);
    let stats = sim.get_json("/sim/stats").await;
    assert_eq!(stats["by_endpoint"]["/v1/chat/completions"]["413"], 2, "{stats}");
    assert_eq!(stats["by_endpoint"]["/v1/messages"]["413"], 1, "{stats}");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_model_name_is_rejected() {
    let sim = Sim::start(fast()).await;
    let long = "m".repeat(1 << 20);
    let mut c = chat("a b", 1, true);
    c["model"] = long.clone().into();
    let mut a = anthropic("a b", 1, true);
    a["model"] = long.into();
    for (path, body) in [("/v1/chat/completions", c), ("/v1/messages", a)] {
        let (st, v) = sim.post_json(path, &body).await;
        assert_eq!(st, 400, "{path}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("model") && msg.contains(&MAX_MODEL_BYTES.to_string()),
            "{msg}"
        );
        assert!(msg.len() < 1000, "the error must not echo the name");
    }
    let mut ok = chat("a b", 1, false);
    ok["model"] = "m".repeat(MAX_MODEL_BYTES).into();
    assert_eq!(sim.post_json("/v1/chat/completions", &ok).await.0, 200);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_line_is_disconnected() {
    let sim = Sim::start(SimConfig {
        header_timeout: Duration::from_millis(300),
        ..fast()
    })
    .await;
    let mut tcp = TcpStream::connect(addr(&sim)).await.unwrap();
    tcp.write_all(b"POST /v1/chat/comp").await.unwrap();
    // the server closes it; the bound only keeps a regression from hanging the test
    let closed = tokio::time::timeout(TEST_BOUND, read_to_close(&mut tcp)).await;
    assert!(closed.is_ok(), "the server kept a half-sent request open");
    // a complete request on a fresh connection is still served
    assert_eq!(ok_request(&sim).await, 200);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_half_open_connections_does_not_block_a_request() {
    const FLOOD: usize = 2000;
    let sim = Sim::start(fast()).await;
    let a = addr(&sim);
    let mut held = Vec::with_capacity(FLOOD);
    let flood = async {
        for i in 0..FLOOD {
            let mut tcp = TcpStream::connect(&a).await.unwrap();
            if i % 2 == 0 {
                // half of them start a request line and stop
                tcp.write_all(b"GET /v1/mo").await.unwrap();
            }
            held.push(tcp);
        }
    };
    tokio::time::timeout(TEST_BOUND, flood).await.unwrap();
    assert_eq!(held.len(), FLOOD);
    // every flood connection is still open (the default header timeout is 30 s)
    // while a well-formed request is served
    let r = tokio::time::timeout(TEST_BOUND, ok_request(&sim)).await.unwrap();
    assert_eq!(r, 200);
    let stream = tokio::time::timeout(TEST_BOUND, sim.stream("/v1/messages", &anthropic("x", 3, true)))
        .await
        .unwrap();
    assert!(stream.done() && stream.tokens() == 3);
    drop(held);
    sim.stop().await;
}
