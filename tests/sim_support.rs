//! Helpers shared by the simulator tests (included with `#[path]`): start the
//! simulator in-process on 127.0.0.1:0, send requests, read SSE streams with
//! per-event arrival times.
#![allow(dead_code)]

use std::time::Duration;

use tokenswarm::sim::{SimConfig, SimError, serve};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub struct Sim {
    pub base: String,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), SimError>>,
    pub client: reqwest::Client,
}

impl Sim {
    pub async fn start(cfg: SimConfig) -> Sim {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, cfg, shutdown.clone()));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Sim {
            base,
            shutdown,
            task,
            client,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    /// POSTs a JSON body; the response is not read yet.
    async fn send_json(&self, path: &str, body: &str) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    /// POST JSON; returns (status, headers, body).
    pub async fn post(&self, path: &str, body: &str) -> (u16, reqwest::header::HeaderMap, String) {
        let r = self.send_json(path, body).await;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.text().await.unwrap())
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let (s, _, b) = self.post(path, &body.to_string()).await;
        (s, serde_json::from_str(&b).unwrap_or_else(|e| panic!("{e}: {b}")))
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self.client.get(format!("{}{path}", self.base)).send().await.unwrap();
        serde_json::from_str(&r.text().await.unwrap()).unwrap()
    }

    /// Streams a request and records when each SSE event was complete.
    pub async fn stream(&self, path: &str, body: &serde_json::Value) -> Streamed {
        let mut r = self.send_json(path, &body.to_string()).await;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let mut buf = String::new();
        let mut events = Vec::new();
        let mut chunk_times = Vec::new();
        loop {
            let c = match r.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => panic!("stream error: {e:?}"),
            };
            let now = Instant::now();
            chunk_times.push(now);
            buf.push_str(std::str::from_utf8(&c).unwrap());
            while let Some(i) = buf.find("\n\n") {
                let ev: String = buf[..i].to_string();
                buf.drain(..i + 2);
                events.push(Event::parse(now, &ev));
            }
        }
        chunk_times.push(Instant::now());
        Streamed {
            status,
            headers,
            events,
            rest: buf,
            chunk_times,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub at: Instant,
    pub name: Option<String>,
    pub data: String,
}

impl Event {
    fn parse(at: Instant, text: &str) -> Event {
        let mut name = None;
        let mut data = String::new();
        for line in text.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = Some(n.to_string());
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push_str(d);
            }
        }
        Event { at, name, data }
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.data).ok()
    }

    /// Carries a generated token (answer or reasoning).
    pub fn is_token(&self) -> bool {
        self.data.contains(":\" tok\"") || self.data.contains(":\" think\"")
    }
}

#[derive(Debug)]
pub struct Streamed {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub events: Vec<Event>,
    pub rest: String,
    /// Arrival of each body chunk, then the end of the body.
    pub chunk_times: Vec<Instant>,
}

impl Streamed {
    pub fn token_times(&self) -> Vec<Instant> {
        self.events.iter().filter(|e| e.is_token()).map(|e| e.at).collect()
    }

    pub fn tokens(&self) -> usize {
        self.events.iter().filter(|e| e.is_token()).count()
    }

    pub fn done(&self) -> bool {
        self.events
            .iter()
            .any(|e| e.data == "[DONE]" || e.name.as_deref() == Some("message_stop"))
    }

    pub fn has_error(&self) -> bool {
        self.events
            .iter()
            .any(|e| e.name.as_deref() == Some("error") || e.data.starts_with("{\"error\""))
    }

    pub fn finish(&self) -> Option<String> {
        self.events.iter().filter_map(|e| e.json()).find_map(|v| {
            v["choices"][0]["finish_reason"]
                .as_str()
                .or(v["delta"]["stop_reason"].as_str())
                .map(str::to_string)
        })
    }

    /// The OpenAI usage chunk or the Anthropic message_delta.
    pub fn usage_event(&self) -> Option<serde_json::Value> {
        self.events
            .iter()
            .filter_map(|e| e.json())
            .find(|v| v.get("sim").is_some())
    }
}

pub fn words(n: usize, seed: usize) -> String {
    (0..n)
        .map(|i| ((b'A' + ((i * 7 + seed * 3 + i / 26) % 26) as u8) as char).to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn fast() -> SimConfig {
    SimConfig {
        no_latency: true,
        ..SimConfig::default()
    }
}

pub fn chat(prompt: &str, max_tokens: u64, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": "m",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": stream,
        "stream_options": if stream { serde_json::json!({"include_usage": true}) } else { serde_json::Value::Null },
    })
}

pub fn anthropic(prompt: &str, max_tokens: u64, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": "m",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": stream,
    })
}
