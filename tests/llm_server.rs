//! A scripted HTTP/1.1 server for the LLM client tests (included by the
//! other `tests/llm_*.rs` files with `#[path]`): raw tokio TCP, so every
//! write, delay, truncation and reset is exactly what the script says, and
//! the server records when it wrote each chunk on the same monotonic clock
//! as the client, so timing tests compare against what really happened
//! rather than against nominal delays.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokenswarm::scenario::{Provider, Scenario};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// One thing the server does for a request, in order.
#[derive(Debug, Clone)]
pub enum Step {
    /// Status line and headers (chunked transfer encoding).
    Head(u16, &'static str),
    /// One chunk, written now.
    Chunk(Vec<u8>),
    /// One chunk, written at `arrival + offset` (arrival = request read).
    ChunkAt(Duration, Vec<u8>),
    /// Wait.
    Sleep(Duration),
    /// The terminating zero-length chunk; the connection stays open.
    End,
    /// Close the connection now (truncated body or no response at all).
    Close,
    /// Bytes written as they are (a hand-made status line and headers).
    Raw(Vec<u8>),
}

/// What the server saw and did for one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub head: String,
    pub body: Vec<u8>,
    pub arrival: Instant,
    /// When each `Chunk`/`ChunkAt` was handed to the socket (taken just
    /// before the write, so a client cannot have received it earlier).
    pub writes: Vec<Instant>,
}

type Script = dyn Fn(&Seen) -> Vec<Step> + Send + Sync;

pub struct Server {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// TCP connections accepted so far.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Server {
    pub fn host(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

pub async fn start(script: impl Fn(&Seen) -> Vec<Step> + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script: Arc<Script> = Arc::new(script);
    let log = seen.clone();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let accepted = connections.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            sock.set_nodelay(true).unwrap();
            tokio::spawn(connection(sock, script.clone(), log.clone()));
        }
    });
    Server {
        port,
        seen,
        connections,
    }
}

/// Like [`start`], but the server runs on its own thread and runtime, so
/// its work never delays the client's wake-ups (timing tests).
pub fn start_dedicated(script: impl Fn(&Seen) -> Vec<Step> + Send + Sync + 'static) -> Server {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            tx.send(start(script).await).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let mut tmp = [0u8; 65536];
                let n = sock.read(&mut tmp).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return Some((head, body));
        }
        let mut tmp = [0u8; 65536];
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

async fn connection(mut sock: TcpStream, script: Arc<Script>, log: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    while let Some((head, body)) = read_request(&mut sock, &mut buf).await {
        let mut seen = Seen {
            head,
            body,
            arrival: Instant::now(),
            writes: Vec::new(),
        };
        let steps = script(&seen);
        seen.writes.clear();
        let index = {
            let mut l = log.lock().unwrap();
            l.push(seen.clone());
            l.len() - 1
        };
        let mut closed = false;
        for step in steps {
            let ok = match step {
                Step::Head(status, content_type) => {
                    let h = format!(
                        "HTTP/1.1 {status} Scripted\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n"
                    );
                    sock.write_all(h.as_bytes()).await.is_ok()
                }
                Step::Chunk(data) => write_chunk(&mut sock, &log, index, &data).await,
                Step::ChunkAt(offset, data) => {
                    tokio::time::sleep_until(seen.arrival + offset).await;
                    write_chunk(&mut sock, &log, index, &data).await
                }
                Step::Sleep(d) => {
                    tokio::time::sleep(d).await;
                    true
                }
                Step::End => sock.write_all(b"0\r\n\r\n").await.is_ok(),
                Step::Raw(bytes) => sock.write_all(&bytes).await.is_ok(),
                Step::Close => {
                    closed = true;
                    false
                }
            };
            if !ok {
                break;
            }
        }
        if closed {
            return;
        }
    }
}

async fn write_chunk(sock: &mut TcpStream, log: &Mutex<Vec<Seen>>, index: usize, data: &[u8]) -> bool {
    let mut frame = format!("{:x}\r\n", data.len()).into_bytes();
    frame.extend_from_slice(data);
    frame.extend_from_slice(b"\r\n");
    log.lock().unwrap()[index].writes.push(Instant::now());
    sock.write_all(&frame).await.is_ok()
}

pub fn scenario(provider: Provider) -> Scenario {
    Scenario {
        name: "Test".into(),
        weight: 1,
        provider,
        endpoint: None,
        model: "m".into(),
        prompt_length: 64,
        prefix_length: 16,
        output_length: 20,
        api_key_env: None,
        temperature: None,
        headers: Default::default(),
        extra_body: Default::default(),
        wait: Default::default(),
        session: None,
        dataset: None,
        task: None,
    }
}

pub fn sse(data: &str) -> Vec<u8> {
    format!("data: {data}\n\n").into_bytes()
}

pub fn token(text: &str) -> Vec<u8> {
    sse(&format!(
        r#"{{"object":"chat.completion.chunk","choices":[{{"index":0,"delta":{{"content":"{text}"}},"finish_reason":null}}]}}"#
    ))
}

pub fn role() -> Vec<u8> {
    sse(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#)
}

pub fn finish(reason: &str) -> Vec<u8> {
    sse(&format!(
        r#"{{"choices":[{{"index":0,"delta":{{}},"finish_reason":"{reason}"}}]}}"#
    ))
}

pub fn usage(prompt: u64, completion: u64) -> Vec<u8> {
    sse(&format!(
        r#"{{"choices":[],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion}}}}}"#
    ))
}

pub fn done() -> Vec<u8> {
    sse("[DONE]")
}

/// A well-formed OpenAI chat stream of `n` tokens written at once.
pub fn ok_stream(n: usize) -> Vec<Step> {
    let mut steps = vec![Step::Head(200, "text/event-stream"), Step::Chunk(role())];
    for _ in 0..n {
        steps.push(Step::Chunk(token(" tok")));
    }
    steps.extend([
        Step::Chunk(finish("length")),
        Step::Chunk(usage(64, n as u64)),
        Step::Chunk(done()),
        Step::End,
    ]);
    steps
}
