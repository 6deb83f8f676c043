//! One ZeroMQ DEALER connection to the master.
//!
//! The `zeromq` crate does not reconnect a DEALER and its `recv` can hang
//! after the master goes away (see `shared/notes/locust-protocol.md`), so a
//! [`Connection`] is disposable: any send error or silence from the master
//! makes the worker drop it and open a new one with the same identity.
//! A background task forwards received frames over a bounded channel so the
//! worker's loop can `select!` on them; dropping the connection stops it.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use zeromq::util::PeerIdentity;
use zeromq::{DealerSendHalf, DealerSocket, Socket, SocketOptions, SocketRecv, SocketSend, ZmqMessage};

use super::wire::{self, MasterMsg, WireError, WorkerMsg};

/// Frames buffered between the socket reader and the worker loop. When
/// full, the reader waits (backpressure): control messages are never dropped.
const INBOX_CAPACITY: usize = 256;

/// A send that takes longer than this means the master is gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The real thing: TCP (ZeroMQ) to the master.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    type Conn = Connection;

    async fn connect(&self, host: &str, port: u16, node_id: &str, timeout: Duration) -> Result<Connection, TransportError> {
        // Resolve here so a name that does not resolve yet (a starting
        // container) is retried like a refused connection.
        let endpoint = format!("{host}:{port}");
        let connect_err = |detail: String| TransportError::Connect {
            endpoint: endpoint.clone(),
            detail,
        };
        let mut addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| connect_err(format!("cannot resolve {host}: {e}")))?;
        let addr = addrs
            .next()
            .ok_or_else(|| connect_err(format!("{host} resolves to no address")))?;
        Connection::open(&format!("tcp://{addr}"), node_id, timeout).await
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
    sender: DealerSendHalf,
    inbox: mpsc::Receiver<Result<MasterMsg, WireError>>,
    reader: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Connection {
    /// Connects to `endpoint` (e.g. `tcp://127.0.0.1:5557`) with the routing
    /// identity `node_id`, waiting at most `connect_timeout`.
    pub async fn open(endpoint: &str, node_id: &str, connect_timeout: Duration) -> Result<Self, TransportError> {
        if node_id.is_empty() || node_id.len() > 255 || node_id.as_bytes()[0] == 0 {
            return Err(TransportError::Identity(node_id.to_string()));
        }
        let identity = PeerIdentity::try_from(node_id.as_bytes().to_vec())
            .map_err(|_| TransportError::Identity(node_id.to_string()))?;
        let mut options = SocketOptions::default();
        options.peer_identity(identity).connect_timeout(connect_timeout);
        let mut socket = DealerSocket::with_options(options);
        let connect_err = |detail: String| TransportError::Connect {
            endpoint: endpoint.to_string(),
            detail,
        };
        match tokio::time::timeout(connect_timeout + Duration::from_millis(500), socket.connect(endpoint)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(connect_err(e.to_string())),
            Err(_) => return Err(connect_err("timed out".into())),
        }
        let (sender, mut receiver) = socket.split();
        let (tx, inbox) = mpsc::channel(INBOX_CAPACITY);
        let reader = tokio::spawn(async move {
            // Ends when the socket errors or the connection is dropped.
            while let Ok(message) = receiver.recv().await {
                let frame: Option<Bytes> = message.into_vec().pop();
                let decoded = wire::decode(frame.as_deref().unwrap_or_default());
                if tx.send(decoded).await.is_err() {
                    break;
                }
            }
        });
        Ok(Connection {
            node_id: node_id.to_string(),
            sender,
            inbox,
            reader,
        })
    }

    /// Sends one message; an error means the connection is unusable.
    pub async fn send(&mut self, msg: &WorkerMsg) -> Result<(), TransportError> {
        let frame = ZmqMessage::from(wire::encode(msg, &self.node_id));
        match tokio::time::timeout(SEND_TIMEOUT, self.sender.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(TransportError::Send(e.to_string())),
            Err(_) => Err(TransportError::Send("timed out".into())),
        }
    }

    /// The next decoded message; `None` once the socket reader has stopped.
    /// Keeps reading (and dropping) what the master sends for `d`, so the
    /// last messages we sent are delivered before the process exits: closing
    /// a TCP socket with unread input makes the kernel send a reset, which
    /// can make the master's side discard our final stats.
    pub async fn linger(&mut self, d: Duration) {
        let _ = tokio::time::timeout(d, async { while self.inbox.recv().await.is_some() {} }).await;
    }

    pub async fn recv(&mut self) -> Option<Result<MasterMsg, WireError>> {
        self.inbox.recv().await
    }
}
