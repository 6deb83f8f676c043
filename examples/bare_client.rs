//! The CPU floor of bench/cpu_per_request.py: the least a client can do per streamed
//! request. `conns` keep-alive HTTP/1.1 connections on one thread each send
//! the same POST, find the first non-empty `"content":"` and the end of the
//! body (Content-Length or the last chunk), and go again, for `secs`
//! seconds. No SSE framing, no JSON, no timings, no metrics: anything a real
//! worker does costs more than this.
//!
//! Usage: bare_client HOST:PORT PATH CONNS SECS BODY_FILE
//! Prints one JSON line: requests completed and those with a content event.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        eprintln!("usage: bare_client HOST:PORT PATH CONNS SECS BODY_FILE");
        std::process::exit(2);
    }
    let (addr, path) = (a[1].clone(), a[2].clone());
    let conns: usize = a[3].parse().expect("CONNS is a number");
    let secs: u64 = a[4].parse().expect("SECS is a number");
    let body = std::fs::read(&a[5]).expect("BODY_FILE is readable");
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let req: Rc<[u8]> = req.into();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let done = Rc::new(Cell::new(0u64));
    let seen = Rc::new(Cell::new(0u64));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let (addr, req, done, seen) = (addr.clone(), req.clone(), done.clone(), seen.clone());
            tasks.push(tokio::task::spawn_local(async move {
                let mut s = TcpStream::connect(&addr).await.expect("connect");
                s.set_nodelay(true).unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                let content = memmem::Finder::new(b"\"content\":\"");
                while Instant::now() < deadline {
                    s.write_all(&req).await.expect("write");
                    let (mut len, mut head_end, mut body_len, mut found) = (0usize, None, None, false);
                    loop {
                        if len == buf.len() {
                            len = 0; // keep the floor bounded: only the tail matters
                        }
                        let n = s.read(&mut buf[len..]).await.expect("read");
                        assert!(n > 0, "server closed the connection");
                        len += n;
                        let h = match head_end {
                            Some(h) => h,
                            None => match memmem::find(&buf[..len], b"\r\n\r\n") {
                                Some(i) => {
                                    let head = &buf[..i];
                                    body_len = memmem::find(head, b"Content-Length: ").map(|j| {
                                        let v = &head[j + 16..];
                                        let e = v.iter().position(|b| !b.is_ascii_digit()).unwrap_or(v.len());
                                        std::str::from_utf8(&v[..e]).unwrap().parse::<usize>().unwrap()
                                    });
                                    head_end = Some(i + 4);
                                    i + 4
                                }
                                None => continue,
                            },
                        };
                        if !found
                            && let Some(i) = content.find(&buf[h..len])
                            && buf.get(h + i + 11).is_some_and(|&b| b != b'"')
                        {
                            found = true;
                        }
                        let complete = match body_len {
                            Some(b) => len - h >= b,
                            None => buf[..len].ends_with(b"\r\n0\r\n\r\n"),
                        };
                        if complete {
                            break;
                        }
                    }
                    done.set(done.get() + 1);
                    seen.set(seen.get() + u64::from(found));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    println!("{{\"requests\": {}, \"with_content\": {}}}", done.get(), seen.get());
}
