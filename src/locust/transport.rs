//! The connection to the master: a minimal ZMTP 3.0 DEALER over TCP.
//!
//! Why not the `zeromq` crate, which the first versions used: its decoder
//! reserves buffer space for whatever length a frame header announces, so a
//! 9-byte header claiming 2^40 bytes made the process abort in a failed
//! allocation before any of our code ran, and its options have no frame
//! limit (`read_buffer` is documented as "not a message-size or memory
//! limit"). The master link comes from the network, so the frame bound has
//! to sit in the reader itself: here a header over [`MAX_FRAME_BYTES`] ends
//! the connection before anything is allocated.
//!
//! What is implemented is exactly what a Locust master (pyzmq ROUTER)
//! needs: the 64-byte greeting with the NULL mechanism, the READY command
//! with `Socket-Type: DEALER` and `Identity: <node id>` (the master routes
//! by it), and one-frame messages both ways. Commands after the handshake
//! (ZMTP 3.1 PING, which pyzmq sends only when heartbeats are configured)
//! are read and dropped.
//!
//! A [`Connection`] is disposable: any send error, an oversized or broken
//! frame, EOF, or silence from the master makes the worker drop it and open
//! a new one with the same identity. A background task decodes received
//! frames and forwards them over a bounded channel so the worker's loop can
//! `select!` on them; dropping the connection stops it.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::wire::{self, MAX_FRAME_BYTES, MasterMsg, WireError, WorkerMsg};

/// Frames buffered between the socket reader and the worker loop. When
/// full, the reader waits (backpressure): control messages are never dropped.
const INBOX_CAPACITY: usize = 256;

/// A send that takes longer than this means the master is gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest command frame (READY, PING) accepted from the master; a READY
/// holds a few short properties.
const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// ZMTP frame flags.
const FLAG_MORE: u8 = 0x01;
const FLAG_LONG: u8 = 0x02;
const FLAG_COMMAND: u8 = 0x04;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("node id {0:?} cannot be a ZeroMQ identity (1-255 bytes, not starting with a zero byte)")]
    Identity(String),
    #[error("could not connect to {endpoint}: {detail}")]
    Connect { endpoint: String, detail: String },
    #[error("sending to the master failed: {0}")]
    Send(String),
}

/// A connection to the master that carries decoded messages: the seam
/// between the protocol driver and the socket, so the driver can be tested
/// with channels instead of a master.
pub trait Transport: Send {
    /// Sends one message; an error means the connection is unusable.
    fn send(&mut self, msg: &WorkerMsg) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// The next message; `None` once the connection has closed.
    fn recv(&mut self) -> impl Future<Output = Option<Result<MasterMsg, WireError>>> + Send;
    /// Keeps reading (and dropping) input for `d`, so that what was sent
    /// last is delivered before the connection closes.
    fn linger(&mut self, d: Duration) -> impl Future<Output = ()> + Send;
}

/// Opens [`Transport`]s to the master; called again after every loss.
pub trait Connector: Sync {
    type Conn: Transport;
    /// Connects to `host:port` with the routing identity `node_id`, waiting
    /// at most `timeout`. [`TransportError::Identity`] is permanent; other
    /// errors are retried by the caller.
    fn connect(
        &self,
        host: &str,
        port: u16,
        node_id: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<Self::Conn, TransportError>> + Send;
}

/// The real thing: ZMTP over TCP to the master.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    type Conn = Connection;

    async fn connect(
        &self,
        host: &str,
        port: u16,
        node_id: &str,
        timeout: Duration,
    ) -> Result<Connection, TransportError> {
        Connection::open(host, port, node_id, timeout).await
    }
}

impl Transport for Connection {
    async fn send(&mut self, msg: &WorkerMsg) -> Result<(), TransportError> {
        Connection::send(self, msg).await
    }

    async fn recv(&mut self) -> Option<Result<MasterMsg, WireError>> {
        Connection::recv(self).await
    }

    async fn linger(&mut self, d: Duration) {
        Connection::linger(self, d).await
    }
}

/// An open connection to the master.
pub struct Connection {
    node_id: String,
    writer: OwnedWriteHalf,
    inbox: mpsc::Receiver<Result<MasterMsg, WireError>>,
    reader: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// One ZMTP frame as read.
struct Frame {
    command: bool,
    more: bool,
    body: Vec<u8>,
}

/// Why reading a frame failed.
#[derive(Debug)]
enum ReadError {
    Io(std::io::Error),
    /// The header announced more than the bound; nothing was allocated.
    TooLarge {
        announced: u64,
        limit: usize,
    },
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::TooLarge { announced, limit } => {
                write!(f, "a frame of {announced} bytes exceeds the limit of {limit} bytes")
            }
        }
    }
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Reads one frame whose body is at most `limit` bytes (a command frame at
/// most [`MAX_COMMAND_BYTES`]: PING and its kin are a few bytes). The length
/// is checked before the body buffer exists.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, limit: usize) -> Result<Frame, ReadError> {
    let flags = r.read_u8().await?;
    let limit = if flags & FLAG_COMMAND != 0 {
        limit.min(MAX_COMMAND_BYTES)
    } else {
        limit
    };
    let announced = if flags & FLAG_LONG != 0 {
        r.read_u64().await?
    } else {
        u64::from(r.read_u8().await?)
    };
    let len = usize::try_from(announced)
        .ok()
        .filter(|&n| n <= limit)
        .ok_or(ReadError::TooLarge { announced, limit })?;
    let mut body = vec![0; len];
    r.read_exact(&mut body).await?;
    Ok(Frame {
        command: flags & FLAG_COMMAND != 0,
        more: flags & FLAG_MORE != 0,
        body,
    })
}

/// Reads one whole message (all its parts, at most [`MAX_FRAME_BYTES`] in
/// total) and returns its last part, the payload (a ROUTER's DEALER peer
/// receives no envelope). Command frames in between are dropped.
async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, ReadError> {
    let mut total = 0usize;
    loop {
        let frame = read_frame(r, MAX_FRAME_BYTES - total).await?;
        if frame.command {
            continue;
        }
        total = total.saturating_add(frame.body.len());
        if !frame.more {
            return Ok(frame.body);
        }
    }
}

/// A frame header plus body, ready to write.
fn encode_frame(flags: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 9);
    match u8::try_from(body.len()) {
        Ok(n) => out.extend_from_slice(&[flags, n]),
        Err(_) => {
            out.push(flags | FLAG_LONG);
            out.extend_from_slice(&(body.len() as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(body);
    out
}

/// Our greeting: ZMTP 3.0, NULL mechanism, client.
fn greeting() -> [u8; 64] {
    let mut g = [0u8; 64];
    g[0] = 0xff;
    g[9] = 0x7f;
    g[10] = 3;
    g[11] = 0;
    g[12..16].copy_from_slice(b"NULL");
    g
}

/// The READY command with our socket type and routing identity.
fn ready_command(identity: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.push(5);
    body.extend_from_slice(b"READY");
    for (name, value) in [(&b"Socket-Type"[..], &b"DEALER"[..]), (b"Identity", identity)] {
        body.push(name.len() as u8);
        body.extend_from_slice(name);
        body.extend_from_slice(&(value.len() as u32).to_be_bytes());
        body.extend_from_slice(value);
    }
    encode_frame(FLAG_COMMAND, &body)
}

/// Greeting and READY both ways; an error names what the peer got wrong.
async fn handshake(stream: &mut TcpStream, identity: &[u8]) -> Result<(), String> {
    stream.write_all(&greeting()).await.map_err(|e| e.to_string())?;
    let mut peer = [0u8; 64];
    stream.read_exact(&mut peer).await.map_err(|e| e.to_string())?;
    if peer[0] != 0xff || peer[9] & 1 != 1 {
        return Err("the peer does not speak ZMTP (no ZeroMQ greeting)".into());
    }
    if peer[10] < 3 {
        return Err(format!("the peer speaks ZMTP {}.x; 3.0 or newer is needed", peer[10]));
    }
    let mechanism = &peer[12..32];
    if !mechanism.starts_with(b"NULL") || mechanism[4..].iter().any(|&b| b != 0) {
        let name = String::from_utf8_lossy(mechanism).trim_end_matches('\0').to_string();
        return Err(format!(
            "the master uses the ZMTP mechanism {name:?}; only NULL is supported"
        ));
    }
    stream
        .write_all(&ready_command(identity))
        .await
        .map_err(|e| e.to_string())?;
    let frame = read_frame(stream, MAX_COMMAND_BYTES).await.map_err(|e| e.to_string())?;
    let name_len = frame.body.first().copied().unwrap_or(0) as usize;
    let name = frame.body.get(1..1 + name_len).unwrap_or_default();
    if !frame.command {
        return Err("the peer sent a message before its READY command".into());
    }
    match name {
        b"READY" => Ok(()),
        b"ERROR" => {
            let reason = frame.body.get(2 + name_len..).unwrap_or_default();
            Err(format!("the master refused us: {}", String::from_utf8_lossy(reason)))
        }
        other => Err(format!(
            "expected READY from the master, got {:?}",
            String::from_utf8_lossy(other)
        )),
    }
}

impl Connection {
    /// Connects to `host:port` with the routing identity `node_id`, waiting
    /// at most `connect_timeout` for TCP and the ZMTP handshake.
    pub async fn open(host: &str, port: u16, node_id: &str, connect_timeout: Duration) -> Result<Self, TransportError> {
        if node_id.is_empty() || node_id.len() > 255 || node_id.as_bytes()[0] == 0 {
            return Err(TransportError::Identity(node_id.to_string()));
        }
        let endpoint = format!("{host}:{port}");
        let connect_err = |detail: String| TransportError::Connect {
            endpoint: endpoint.clone(),
            detail,
        };
        let attempt = async {
            // Resolved on every attempt, so a name that does not resolve yet
            // (a starting container) is retried like a refused connection.
            let mut addrs = tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| format!("cannot resolve {host}: {e}"))?;
            let addr = addrs.next().ok_or_else(|| format!("{host} resolves to no address"))?;
            let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            handshake(&mut stream, node_id.as_bytes()).await?;
            Ok::<_, String>(stream)
        };
        let stream = match tokio::time::timeout(connect_timeout, attempt).await {
            Ok(Ok(s)) => s,
            Ok(Err(detail)) => return Err(connect_err(detail)),
            Err(_) => return Err(connect_err("timed out".into())),
        };
        let (read_half, writer) = stream.into_split();
        let (tx, inbox) = mpsc::channel(INBOX_CAPACITY);
        let reader = tokio::spawn(async move {
            let mut r = BufReader::new(read_half);
            loop {
                let decoded = match read_message(&mut r).await {
                    Ok(payload) => wire::decode(&payload),
                    Err(ReadError::Io(_)) => break,
                    Err(e @ ReadError::TooLarge { .. }) => {
                        // The stream cannot be resynchronised after a frame
                        // we refuse to read: say why, then end the connection.
                        let _ = tx.send(Err(WireError::Limit(e.to_string()))).await;
                        break;
                    }
                };
                if tx.send(decoded).await.is_err() {
                    break;
                }
            }
        });
        Ok(Connection {
            node_id: node_id.to_string(),
            writer,
            inbox,
            reader,
        })
    }

    /// Sends one message; an error means the connection is unusable.
    pub async fn send(&mut self, msg: &WorkerMsg) -> Result<(), TransportError> {
        let frame = encode_frame(0, &wire::encode(msg, &self.node_id));
        match tokio::time::timeout(SEND_TIMEOUT, self.writer.write_all(&frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(TransportError::Send(e.to_string())),
            Err(_) => Err(TransportError::Send("timed out".into())),
        }
    }

    /// Keeps reading (and dropping) what the master sends for `d`, so the
    /// last messages we sent are delivered before the process exits: closing
    /// a TCP socket with unread input makes the kernel send a reset, which
    /// can make the master's side discard our final stats.
    pub async fn linger(&mut self, d: Duration) {
        let _ = tokio::time::timeout(d, async { while self.inbox.recv().await.is_some() {} }).await;
    }

    /// The next decoded message; `None` once the connection has ended.
    pub async fn recv(&mut self) -> Option<Result<MasterMsg, WireError>> {
        self.inbox.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_frame_header_announcing_2_pow_40_bytes_is_refused_before_allocating() {
        // Proves the bound sits before the allocation: the announced length
        // is far beyond what this process could allocate.
        let mut header: &[u8] = &[FLAG_LONG, 0, 0, 1, 0, 0, 0, 0, 0];
        match read_message(&mut header).await {
            Err(ReadError::TooLarge { announced, .. }) => assert_eq!(announced, 1 << 40),
            other => panic!("{:?}", other.map(|b| b.len())),
        }
    }

    #[tokio::test]
    async fn multipart_messages_are_bounded_in_total_and_yield_the_last_part() {
        let mut two = encode_frame(FLAG_MORE, b"envelope");
        two.extend(encode_frame(0, b"payload"));
        assert_eq!(read_message(&mut &two[..]).await.unwrap(), b"payload");
        // Parts that are each under the bound but together over it.
        let part = vec![0u8; MAX_FRAME_BYTES / 2 + 1];
        let mut big = encode_frame(FLAG_MORE, &part);
        big.extend(encode_frame(0, &part));
        assert!(matches!(
            read_message(&mut &big[..]).await,
            Err(ReadError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn command_frames_between_messages_are_bounded_at_64_kib() {
        // Proves a peer cannot make every PING cost a message-sized buffer:
        // a command frame announcing 64 KiB + 1 is refused before its body
        // is read, one of 64 KiB is skipped and the message after it read.
        let mut over = encode_frame(FLAG_COMMAND, &vec![0u8; MAX_COMMAND_BYTES + 1]);
        over.extend(encode_frame(0, b"payload"));
        match read_message(&mut &over[..]).await {
            Err(ReadError::TooLarge { limit, .. }) => assert_eq!(limit, MAX_COMMAND_BYTES),
            other => panic!("{:?}", other.map(|b| b.len())),
        }
        let mut at = encode_frame(FLAG_COMMAND, &vec![0u8; MAX_COMMAND_BYTES]);
        at.extend(encode_frame(0, b"payload"));
        assert_eq!(read_message(&mut &at[..]).await.unwrap(), b"payload");
    }

    #[test]
    fn short_and_long_frames_are_encoded_as_zmtp_says() {
        assert_eq!(encode_frame(0, b"hi"), vec![0, 2, b'h', b'i']);
        let long = encode_frame(0, &[7u8; 300]);
        assert_eq!(&long[..9], &[FLAG_LONG, 0, 0, 0, 0, 0, 0, 1, 44]);
        assert_eq!(long.len(), 309);
    }
}
