//! The floor of this rig: a bare-minimum server that does the WebSocket handshake, the least of
//! Engine.IO / Socket.IO a client needs to count as connected (the open packet, the CONNECT
//! reply), and on `POST /broadcast/<kind>` writes one pre-encoded frame to every connection.
//! No heartbeat, no rooms, no recovery, no limits: it is not a server anyone should run, only the
//! yardstick `bench/compare` measures next to the real servers, so that what the protocol and
//! the product cost on top of the kernel's own loopback work is visible. WebSocket only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One connection: the socket, and what it could not take at once (written by its task).
struct Peer {
    socket: Arc<TcpStream>,
    backlog: Mutex<Vec<u8>>,
    wake: tokio::sync::Notify,
}

#[derive(Default)]
struct Floor {
    peers: Mutex<HashMap<u64, Arc<Peer>>>,
    next_id: AtomicU64,
}

pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let floor = Arc::new(Floor::default());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let floor = floor.clone();
        tokio::spawn(async move {
            // The HTTP part's buffers are gone once it returns the upgraded stream.
            if let Ok(Some(stream)) = serve(&floor, stream).await {
                let _ = websocket(floor, stream).await;
            }
        });
    }
}

/// A WebSocket frame from the server (unmasked) holding `payload` as text.
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x81];
    match payload.len() {
        len if len < 126 => frame.push(len as u8),
        len if len <= 0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

/// Reads one HTTP request head and its body (Content-Length only).
async fn read_request(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> anyhow::Result<Option<(String, Vec<u8>)>> {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            let length = head
                .lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, value)| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buffer.len() < end + 4 + length {
                buffer.reserve(4096);
                if stream.read_buf(buffer).await? == 0 {
                    return Ok(None);
                }
            }
            let body = buffer[end + 4..end + 4 + length].to_vec();
            buffer.drain(..end + 4 + length);
            return Ok(Some((head, body)));
        }
        buffer.reserve(4096);
        if stream.read_buf(buffer).await? == 0 {
            return Ok(None);
        }
    }
}

/// Answers HTTP requests until the connection upgrades (then returns it) or ends.
async fn serve(floor: &Floor, mut stream: TcpStream) -> anyhow::Result<Option<TcpStream>> {
    let mut buffer = Vec::new();
    while let Some((head, body)) = read_request(&mut stream, &mut buffer).await? {
        let request_line = head.lines().next().unwrap_or_default().to_owned();
        let key = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-key"))
            .map(|(_, value)| value.trim().to_owned());
        if let Some(key) = key {
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let reply = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            stream.write_all(reply.as_bytes()).await?;
            return Ok(Some(stream));
        }
        let answer: &[u8] = if request_line.starts_with("POST /broadcast/") {
            let kind = request_line
                .split_whitespace()
                .nth(1)
                .and_then(|path| path.strip_prefix("/broadcast/"))
                .unwrap_or("event")
                .replace('-', "_");
            let mut packet = format!("42[\"{kind}\",").into_bytes();
            packet.extend_from_slice(if body.is_empty() { b"{}" } else { &body });
            packet.push(b']');
            broadcast(floor, &text_frame(&packet));
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 16\r\n\r\n{\"success\":true}"
        } else if request_line.starts_with("GET /health") {
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}"
        } else {
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
        };
        stream.write_all(answer).await?;
    }
    Ok(None)
}

/// One frame to every connection: written at once where the socket takes it, else queued.
fn broadcast(floor: &Floor, frame: &[u8]) {
    let Ok(peers) = floor.peers.lock() else {
        return;
    };
    for peer in peers.values() {
        let Ok(mut backlog) = peer.backlog.lock() else {
            continue;
        };
        if backlog.is_empty() {
            match peer.socket.try_write(frame) {
                Ok(written) if written == frame.len() => continue,
                Ok(written) => backlog.extend_from_slice(&frame[written..]),
                Err(_) => backlog.extend_from_slice(frame),
            }
        } else {
            backlog.extend_from_slice(frame);
        }
        drop(backlog);
        peer.wake.notify_one();
    }
}

/// A connection after the handshake: the open packet, the CONNECT reply, then it only reads
/// (and drops) what the client sends and writes its backlog.
async fn websocket(floor: Arc<Floor>, stream: TcpStream) -> anyhow::Result<()> {
    let id = floor.next_id.fetch_add(1, Ordering::Relaxed);
    let socket = Arc::new(stream);
    let open = format!(
        "0{{\"sid\":\"f{id}\",\"upgrades\":[],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}}"
    );
    let mut greeting = text_frame(open.as_bytes());
    // The client's CONNECT comes after the open packet; the reply can go out with it.
    greeting.extend(text_frame(format!("40{{\"sid\":\"s{id}\"}}").as_bytes()));
    let peer = Arc::new(Peer {
        socket: socket.clone(),
        backlog: Mutex::new(greeting),
        wake: tokio::sync::Notify::new(),
    });
    if let Ok(mut peers) = floor.peers.lock() {
        peers.insert(id, peer.clone());
    }
    peer.wake.notify_one();
    let result = pump(&peer).await;
    if let Ok(mut peers) = floor.peers.lock() {
        peers.remove(&id);
    }
    result
}

/// Reads and drops what the client sent; false once it closed. The scratch buffer is on this
/// function's stack, not in the connection's task.
fn discard_input(socket: &TcpStream) -> std::io::Result<bool> {
    let mut sink = [0u8; 4096];
    match socket.try_read(&mut sink) {
        Ok(0) => Ok(false),
        Ok(_) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => Ok(true),
        Err(error) => Err(error),
    }
}

async fn pump(peer: &Peer) -> anyhow::Result<()> {
    loop {
        let pending = peer.backlog.lock().map(|b| !b.is_empty()).unwrap_or(false);
        tokio::select! {
            () = peer.wake.notified() => {}
            ready = peer.socket.readable() => {
                ready?;
                if !discard_input(&peer.socket)? {
                    return Ok(());
                }
            }
            ready = peer.socket.writable(), if pending => { ready?; }
        }
        if let Ok(mut backlog) = peer.backlog.lock()
            && !backlog.is_empty()
        {
            match peer.socket.try_write(&backlog) {
                Ok(written) if written == backlog.len() => *backlog = Vec::new(),
                Ok(written) => {
                    backlog.drain(..written);
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
}
