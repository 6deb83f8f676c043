//! Issue 13 item 4: a hostile master link. A raw TCP fake master speaks
//! just enough ZMTP to register the worker, then sends what a stock master
//! never would: a frame header claiming 2^40 bytes, an oversized spawn, a
//! spawn for 4,294,967,295 users, garbage msgpack. Each test proves that the
//! worker stays up with bounded memory, reports the refusal to the master as
//! an `exception`, and still leaves with exit code 0 on `quit`.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{Proc, start_worker, tail, test_dir};
use rmpv::Value;

/// Resident memory that a worker after an attack must stay under (it idles
/// at about 10 MB; the attacks, unbounded, ask for up to 1 TiB).
const RSS_LIMIT_BYTES: u64 = 200 * 1024 * 1024;

fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut flags = [0u8; 1];
    s.read_exact(&mut flags)?;
    let len = if flags[0] & 0x02 != 0 {
        let mut b = [0u8; 8];
        s.read_exact(&mut b)?;
        u64::from_be_bytes(b) as usize
    } else {
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        b[0] as usize
    };
    assert!(len < 16 << 20, "the worker sent a {len}-byte frame");
    let mut body = vec![0; len];
    s.read_exact(&mut body)?;
    Ok((flags[0], body))
}

fn frame(flags: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if body.len() > 255 {
        out.push(flags | 0x02);
        out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    } else {
        out.extend_from_slice(&[flags, body.len() as u8]);
    }
    out.extend_from_slice(body);
    out
}

fn message(kind: &str, data: Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &Value::Array(vec![kind.into(), data, "master".into()])).unwrap();
    frame(0, &out)
}

/// (type, data) of a worker message.
fn decode(body: &[u8]) -> (String, Value) {
    let v = rmpv::decode::read_value(&mut &body[..]).unwrap();
    let parts = v.as_array().unwrap().clone();
    (parts[0].as_str().unwrap().to_string(), parts[1].clone())
}

/// Accepts the worker's next connection, does the ZMTP handshake as a
/// ROUTER, waits for `client_ready` and sends `ack`.
fn accept_registered(listener: &TcpListener, worker: &Proc) -> TcpStream {
    listener.set_nonblocking(false).unwrap();
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut greeting = [0u8; 64];
    s.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting[12..16], b"NULL");
    let mut ours = [0u8; 64];
    ours[0] = 0xff;
    ours[9] = 0x7f;
    ours[10] = 3;
    ours[11] = 1;
    ours[12..16].copy_from_slice(b"NULL");
    ours[32] = 1;
    s.write_all(&ours).unwrap();
    let (flags, ready) = read_frame(&mut s).unwrap();
    assert!(flags & 0x04 != 0 && ready[1..6] == *b"READY", "{ready:?}");
    let mut body = vec![5];
    body.extend_from_slice(b"READY");
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&6u32.to_be_bytes());
    body.extend_from_slice(b"ROUTER");
    s.write_all(&frame(0x04, &body)).unwrap();
    let (_, first) = read_frame(&mut s).unwrap_or_else(|e| panic!("{e}: {}", tail(&worker.output(), 20)));
    assert_eq!(decode(&first).0, "client_ready");
    s.write_all(&message("ack", Value::Map(vec![("index".into(), Value::from(0))])))
        .unwrap();
    s
}

/// Reads worker messages until an `exception`; returns its text, or None
/// if the connection ended first.
fn next_exception(s: &mut TcpStream) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let (_, body) = read_frame(s).ok()?;
        let (kind, data) = decode(&body);
        if kind == "exception" {
            let msg = data
                .as_map()?
                .iter()
                .find(|(k, _)| k.as_str() == Some("msg"))?
                .1
                .clone();
            return Some(msg.as_str().unwrap_or_default().to_string());
        }
    }
    None
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn start(name: &str) -> (TcpListener, Proc) {
    let dir = test_dir(name);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let worker = start_worker(&dir, "worker", port, &["--master-timeout", "30"], &[]);
    (listener, worker)
}

/// The worker is alive with bounded memory, and leaves with 0 on `quit`.
fn alive_then_quit(mut s: TcpStream, mut worker: Proc) {
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker died: {}",
        tail(&worker.output(), 30)
    );
    let rss = rss_bytes(worker.child.id());
    assert!(rss > 0 && rss < RSS_LIMIT_BYTES, "worker RSS {rss} bytes");
    s.write_all(&message("quit", Value::Nil)).unwrap();
    assert_eq!(
        worker.wait(Duration::from_secs(20)),
        Some(0),
        "{}",
        tail(&worker.output(), 30)
    );
    assert!(!worker.output().contains("panicked"));
}

/// A header that announces `len` bytes for a message frame.
fn long_header(len: u64) -> Vec<u8> {
    let mut h = vec![0x02];
    h.extend_from_slice(&len.to_be_bytes());
    h
}

#[test]
fn zmtp_header_claiming_2_pow_40_bytes_is_refused_and_the_worker_reconnects() {
    // Before: the zeromq crate reserved 1 TiB and the worker aborted.
    let (listener, worker) = start("hostile-2pow40");
    let mut s = accept_registered(&listener, &worker);
    s.write_all(&long_header(1 << 40)).unwrap();
    let msg = next_exception(&mut s).expect("an exception before the connection ends");
    assert!(msg.contains("1099511627776") && msg.contains("limit"), "{msg}");
    // The stream cannot be resynchronised: the worker drops it and comes back.
    let s2 = accept_registered(&listener, &worker);
    drop(s);
    alive_then_quit(s2, worker);
}

#[test]
fn oversized_spawn_is_refused_unread() {
    let (listener, worker) = start("hostile-oversized");
    let mut s = accept_registered(&listener, &worker);
    // A 5 MiB spawn: header, then the start of a real msgpack spawn.
    s.write_all(&long_header(5 << 20)).unwrap();
    let _ = s.write_all(&[0x93, 0xa5, b's', b'p', b'a', b'w', b'n']);
    let msg = next_exception(&mut s).expect("an exception");
    assert!(msg.contains("5242880"), "{msg}");
    let s2 = accept_registered(&listener, &worker);
    alive_then_quit(s2, worker);
}

#[test]
fn spawn_for_4_294_967_295_users_is_reported_and_the_worker_stays_registered() {
    // Before: the worker aborted allocating users.
    let (listener, worker) = start("hostile-users");
    let mut s = accept_registered(&listener, &worker);
    let spawn = Value::Map(vec![
        ("timestamp".into(), Value::F64(1.0)),
        (
            "user_classes_count".into(),
            Value::Map(vec![("Chat".into(), Value::from(4_294_967_295u64))]),
        ),
        ("host".into(), Value::from("http://127.0.0.1:9")),
    ]);
    s.write_all(&message("spawn", spawn)).unwrap();
    let msg = next_exception(&mut s).expect("an exception");
    assert!(msg.contains("100000") && msg.contains("users"), "{msg}");
    // Same connection: still registered, answers quit.
    alive_then_quit(s, worker);
}

#[test]
fn garbage_msgpack_is_reported_and_the_worker_stays_registered() {
    let (listener, worker) = start("hostile-garbage");
    let mut s = accept_registered(&listener, &worker);
    s.write_all(&frame(0, &[0xc1, 0xff, 0x00])).unwrap();
    let first = next_exception(&mut s).expect("an exception");
    assert!(first.contains("msgpack") || first.contains("array"), "{first}");
    // A 5-byte array header announcing 2^32-1 elements.
    s.write_all(&frame(0, &[0xdd, 0xff, 0xff, 0xff, 0xff])).unwrap();
    let second = next_exception(&mut s).expect("an exception");
    assert!(second.contains("limit") || second.contains("announces"), "{second}");
    alive_then_quit(s, worker);
}
