//! One TLS connection on rustls' unbuffered API, with the buffers kept here and given back as
//! soon as they are empty: an idle connection holds its session and keys, and no I/O buffer.
//! (rustls' buffered `ServerConnection` keeps a 4 KiB read buffer for the connection's life once
//! anything was read: most of an idle TLS connection's memory.)
//!
//! [`TlsSession`] is the record layer without I/O of its own: the caller hands it the socket
//! (`&TcpStream`, read and written through tokio's `try_*` calls, so readiness stays right).
//! [`TlsStream`] wraps a socket and its session as `AsyncRead`/`AsyncWrite` for hyper; a
//! WebSocket upgrade takes the two back apart (`websocket::Socket`).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes read from the socket at a time.
const READ_SIZE: usize = 8 * 1024;

/// Plaintext put in one record at most (TLS's limit).
const MAX_RECORD: usize = 16 * 1024;

/// A TLS server connection's state and the bytes in flight; see the module comment.
pub struct TlsSession {
    session: UnbufferedServerConnection,
    /// Records read and not processed yet (a partial one, mostly); empty when idle.
    incoming: Vec<u8>,
    /// Encrypted bytes the socket has not taken yet, from `outgoing_sent` on.
    outgoing: Vec<u8>,
    outgoing_sent: usize,
    /// Decrypted application data not read yet, from `plaintext_read` on.
    plaintext: Vec<u8>,
    plaintext_read: usize,
    /// The peer sent close_notify (or closed the socket): no more data will come.
    peer_closed: bool,
    close_notify_queued: bool,
}

/// rustls' answer to an encode, as [`append`] takes it.
fn encoded(result: Result<usize, EncodeError>) -> io::Result<Result<usize, usize>> {
    match result {
        Ok(written) => Ok(Ok(written)),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            Ok(Err(required_size))
        }
        Err(error) => Err(invalid(error)),
    }
}

/// What [`TlsSession::drive`] does once the session takes application data.
#[derive(Clone, Copy)]
enum Then<'a> {
    Nothing,
    Encrypt(&'a [u8]),
    CloseNotify,
}

/// Appends to `buffer` what `fill` writes into room of `room` bytes at its end; `fill` answers
/// `Err(needed)` when the room is too small, and is called again with that much.
fn append(
    buffer: &mut Vec<u8>,
    room: usize,
    mut fill: impl FnMut(&mut [u8]) -> io::Result<Result<usize, usize>>,
) -> io::Result<()> {
    let start = buffer.len();
    buffer.resize(start + room, 0);
    loop {
        match fill(&mut buffer[start..]) {
            Ok(Ok(written)) => {
                buffer.truncate(start + written);
                return Ok(());
            }
            Ok(Err(needed)) if needed > buffer.len() - start => buffer.resize(start + needed, 0),
            Ok(Err(needed)) => {
                buffer.truncate(start);
                return Err(invalid(format!(
                    "rustls asked for {needed} bytes, then refused them"
                )));
            }
            Err(error) => {
                buffer.truncate(start);
                return Err(error);
            }
        }
    }
}

fn invalid(error: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error.to_string())
}

impl TlsSession {
    pub fn new(config: Arc<rustls::ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(Self {
            session: UnbufferedServerConnection::new(config)?,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            outgoing_sent: 0,
            plaintext: Vec::new(),
            plaintext_read: 0,
            peer_closed: false,
            close_notify_queued: false,
        })
    }

    pub fn is_handshaking(&self) -> bool {
        self.session.is_handshaking()
    }

    /// Runs the session over what was read: decrypts records into `plaintext`, encodes what the
    /// handshake (or an alert, a key update) has to send into `outgoing`; then, once the session
    /// can take application data, does `then`. Every state rustls returns is handled by
    /// [`handle`] (a state dropped unhandled would lose a record or a handshake message), and
    /// its `discard` applied before the next call, error or not.
    fn drive(&mut self, then: Then<'_>) -> io::Result<()> {
        loop {
            let Self {
                session,
                incoming,
                outgoing,
                plaintext,
                peer_closed,
                ..
            } = self;
            let status = session.process_tls_records(incoming);
            let mut discard = status.discard;
            let handled = match status.state {
                Ok(state) => handle(state, then, outgoing, plaintext, peer_closed, &mut discard),
                Err(error) => Err(HandleError::Tls(error)),
            };
            // Before anything else, error or not: the next call reads on from there.
            incoming.drain(..discard.min(incoming.len()));
            let done = match handled {
                Ok(done) => done,
                Err(error) => {
                    self.encode_alert();
                    return Err(match error {
                        HandleError::Tls(error) => invalid(error),
                        HandleError::Io(error) => error,
                    });
                }
            };
            if done {
                if self.incoming.is_empty() {
                    self.incoming = Vec::new();
                }
                return Ok(());
            }
        }
    }

    /// After an error, the alert rustls queued to tell the peer why, encoded into `outgoing` so
    /// that it can go out before the connection is dropped (as the buffered API would send it).
    /// One call only: rustls hands queued messages out before it reads input again, and reading
    /// the input that failed again would fail again. Nothing is called on the session after.
    fn encode_alert(&mut self) {
        let Self {
            session,
            incoming,
            outgoing,
            ..
        } = self;
        let status = session.process_tls_records(incoming);
        if let Ok(ConnectionState::EncodeTlsData(mut encode)) = status.state {
            let _ = append(outgoing, 64, |out| encoded(encode.encode(out)));
        }
    }

    fn process(&mut self) -> io::Result<()> {
        self.drive(Then::Nothing)
    }

    /// Encrypts `data` (one record, at most [`MAX_RECORD`] bytes) into `outgoing`.
    fn encrypt(&mut self, data: &[u8]) -> io::Result<()> {
        self.drive(Then::Encrypt(data))
    }

    /// Queues a close_notify alert (sent with the rest by [`TlsSession::send_pending`]), once.
    pub fn queue_close_notify(&mut self) {
        if !self.close_notify_queued {
            let before = self.outgoing.len();
            let _ = self.drive(Then::CloseNotify);
            self.close_notify_queued = self.outgoing.len() > before;
        }
    }

    /// Whether encrypted bytes wait for the socket.
    pub fn output_pending(&self) -> bool {
        self.outgoing_sent < self.outgoing.len()
    }

    /// Whether decrypted data waits to be read (no socket read is needed for it).
    pub fn input_pending(&self) -> bool {
        self.plaintext_read < self.plaintext.len()
    }

    /// Sends what waits for the socket as far as it takes it: true once nothing does.
    pub fn send_pending(&mut self, tcp: &TcpStream) -> io::Result<bool> {
        while self.output_pending() {
            match tcp.try_write(&self.outgoing[self.outgoing_sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(sent) => self.outgoing_sent += sent,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) => return Err(error),
            }
        }
        // Sent: the buffer goes back.
        self.outgoing = Vec::new();
        self.outgoing_sent = 0;
        Ok(true)
    }

    /// Appends what the socket has (up to [`READ_SIZE`]) to `incoming`, unprocessed.
    fn read_from(&mut self, tcp: &TcpStream) -> io::Result<usize> {
        let start = self.incoming.len();
        self.incoming.resize(start + READ_SIZE, 0);
        let read = tcp.try_read(&mut self.incoming[start..]);
        self.incoming.truncate(start + *read.as_ref().unwrap_or(&0));
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
        read
    }

    /// Reads what is there into `buf`: `Ok(0)` once the peer closed, `WouldBlock` when nothing
    /// is there yet.
    pub fn try_read(&mut self, tcp: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.input_pending() {
                let available = &self.plaintext[self.plaintext_read..];
                let taken = available.len().min(buf.len());
                buf[..taken].copy_from_slice(&available[..taken]);
                self.plaintext_read += taken;
                if !self.input_pending() {
                    self.plaintext = Vec::new();
                    self.plaintext_read = 0;
                }
                return Ok(taken);
            }
            if self.peer_closed || buf.is_empty() {
                return Ok(0);
            }
            match self.read_from(tcp) {
                // The peer closed without a close_notify: for us, the same end.
                Ok(0) => self.peer_closed = true,
                Ok(_) => {
                    let processed = self.process();
                    // An alert (the one telling the peer why, on an error), a key update or the
                    // handshake's last flight goes now if it can.
                    if self.output_pending() {
                        let _ = self.send_pending(tcp);
                    }
                    processed?;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Writes as much of `slices` as the session takes now, encrypted, and sends what the socket
    /// takes; `WouldBlock` when earlier output still waits for the socket. Bytes taken may stay
    /// here encrypted ([`TlsSession::output_pending`]).
    pub fn try_write_vectored(
        &mut self,
        tcp: &TcpStream,
        slices: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        if !self.send_pending(tcp)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let total: usize = slices.iter().map(|slice| slice.len()).sum();
        let taken = match slices {
            [] => 0,
            [one] => {
                let taken = one.len().min(MAX_RECORD);
                self.encrypt(&one[..taken])?;
                taken
            }
            _ => {
                // One record for several slices (a burst of small frames), not one each.
                let mut record = Vec::with_capacity(total.min(MAX_RECORD));
                for slice in slices {
                    let room = MAX_RECORD - record.len();
                    record.extend_from_slice(&slice[..slice.len().min(room)]);
                    if record.len() == MAX_RECORD {
                        break;
                    }
                }
                self.encrypt(&record)?;
                record.len()
            }
        };
        self.send_pending(tcp)?;
        Ok(taken)
    }
}

/// Handles one state [`TlsSession::drive`] got from rustls (see there); true once the session
/// needs more input or did `then`. `discard` grows by what a record read asks to discard.
fn handle(
    state: ConnectionState<'_, '_, ServerConnectionData>,
    then: Then<'_>,
    outgoing: &mut Vec<u8>,
    plaintext: &mut Vec<u8>,
    peer_closed: &mut bool,
    discard: &mut usize,
) -> Result<bool, HandleError> {
    match state {
        ConnectionState::ReadTraffic(mut records) => {
            while let Some(record) = records.next_record() {
                let record = record?;
                *discard += record.discard;
                plaintext.extend_from_slice(record.payload);
            }
            Ok(false)
        }
        ConnectionState::ReadEarlyData(mut records) => {
            // Not offered by our config: dropped if a client sends it anyway.
            while let Some(record) = records.next_record() {
                *discard += record?.discard;
            }
            Ok(false)
        }
        ConnectionState::EncodeTlsData(mut encode) => {
            append(outgoing, 2048, |out| encoded(encode.encode(out)))?;
            Ok(false)
        }
        // What was encoded is in `outgoing`, sent in order before anything else.
        ConnectionState::TransmitTlsData(transmit) => {
            transmit.done();
            Ok(false)
        }
        ConnectionState::PeerClosed => {
            *peer_closed = true;
            Ok(false)
        }
        ConnectionState::WriteTraffic(mut write) => {
            let encrypted = |result: Result<usize, EncryptError>| match result {
                Ok(written) => Ok(Ok(written)),
                Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                    Ok(Err(required_size))
                }
                Err(error) => Err(invalid(error)),
            };
            match then {
                Then::Nothing => {}
                Then::Encrypt(data) => append(outgoing, data.len() + 64, |out| {
                    encrypted(write.encrypt(data, out))
                })?,
                Then::CloseNotify => {
                    append(outgoing, 64, |out| encrypted(write.queue_close_notify(out)))?
                }
            }
            Ok(true)
        }
        ConnectionState::Closed => {
            *peer_closed = true;
            // Data asked to be sent and not encrypted must not pass for sent.
            if let Then::Encrypt(_) = then {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe).into());
            }
            Ok(true)
        }
        // More input is needed (the handshake's next flight), or a state this version of
        // rustls does not return.
        _ => {
            if let Then::Encrypt(_) = then {
                return Err(invalid("the TLS session cannot send data (handshaking)").into());
            }
            Ok(true)
        }
    }
}

/// Why a state could not be handled: rustls refused a record, or our side failed.
enum HandleError {
    Tls(rustls::Error),
    Io(io::Error),
}

impl From<rustls::Error> for HandleError {
    fn from(error: rustls::Error) -> Self {
        Self::Tls(error)
    }
}

impl From<io::Error> for HandleError {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

/// A socket and its TLS session as one stream for hyper (`AsyncRead` + `AsyncWrite`).
pub struct TlsStream {
    pub tcp: TcpStream,
    pub session: TlsSession,
}

impl TlsStream {
    /// The handshake on `tcp`; the stream once it is done.
    pub async fn accept(tcp: TcpStream, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let mut stream = Self {
            tcp,
            session: TlsSession::new(config).map_err(invalid)?,
        };
        std::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
        Ok(stream)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if let Err(error) = self.session.process() {
                // The alert telling the peer why, if the socket takes it now.
                let _ = self.session.send_pending(&self.tcp);
                return Poll::Ready(Err(error));
            }
            while !self.session.send_pending(&self.tcp)? {
                ready!(self.tcp.poll_write_ready(cx))?;
            }
            if !self.session.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if self.session.peer_closed {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            match self.session.read_from(&self.tcp) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_read_ready(cx))?;
                }
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match this.session.try_read(&this.tcp, buf.initialize_unfilled()) {
                Ok(read) => {
                    buf.advance(read);
                    return Poll::Ready(Ok(()));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    ready!(this.tcp.poll_read_ready(cx))?;
                }
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match this.session.try_write_vectored(&this.tcp, slices) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    ready!(this.tcp.poll_write_ready(cx))?;
                }
                result => return Poll::Ready(result),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while !this.session.send_pending(&this.tcp)? {
            ready!(this.tcp.poll_write_ready(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.session.queue_close_notify();
        ready!(self.as_mut().poll_flush(cx))?;
        Poll::Ready(socket2::SockRef::from(&self.tcp).shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const CERT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/tls/test-cert/cert.pem");
    const KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/tls/test-cert/key.pem");

    /// A rustls client on a blocking socket, offering only `versions`.
    fn client(
        address: std::net::SocketAddr,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(CERT).expect("cert") {
            roots.add(cert.expect("cert")).expect("root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = "localhost".try_into().expect("name");
        let session = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let tcp = std::net::TcpStream::connect(address).expect("connect");
        rustls::StreamOwned::new(session, tcp)
    }

    /// Data both ways, small and over many records, then the state an idle session keeps.
    async fn exchange(versions: &'static [&'static rustls::SupportedProtocolVersion]) {
        let config = crate::tls::server_config(CERT.as_ref(), KEY.as_ref()).expect("config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let large: Vec<u8> = (0..200_000u32).map(|n| (n % 251) as u8).collect();
        let expected = large.clone();
        let peer = std::thread::spawn(move || {
            let mut stream = client(address, versions);
            stream.write_all(b"hello").expect("write");
            let mut reply = [0u8; 5];
            stream.read_exact(&mut reply).expect("read");
            assert_eq!(&reply, b"world");
            stream.write_all(&large).expect("write large");
            let mut echoed = vec![0u8; large.len()];
            stream.read_exact(&mut echoed).expect("read large");
            assert!(echoed == large, "the large message came back whole");
            stream.conn.protocol_version()
        });
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut stream = TlsStream::accept(tcp, Arc::new(config))
            .await
            .expect("handshake");
        let mut hello = [0u8; 5];
        stream.read_exact(&mut hello).await.expect("read");
        assert_eq!(&hello, b"hello");
        stream.write_all(b"world").await.expect("write");
        stream.flush().await.expect("flush");
        let mut received = vec![0u8; expected.len()];
        stream.read_exact(&mut received).await.expect("read large");
        assert!(received == expected, "the large message arrived whole");
        stream.write_all(&received).await.expect("write large");
        stream.flush().await.expect("flush");
        let version = peer.join().expect("client");
        assert_eq!(version, Some(versions[0].version));
        // Idle: every buffer given back.
        let session = &stream.session;
        assert_eq!(
            (
                session.incoming.capacity(),
                session.outgoing.capacity(),
                session.plaintext.capacity()
            ),
            (0, 0, 0),
            "an idle session keeps no I/O buffer"
        );
    }

    #[tokio::test]
    async fn a_client_that_does_not_speak_tls_is_told_why_by_an_alert() {
        let config = crate::tls::server_config(CERT.as_ref(), KEY.as_ref()).expect("config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let peer = std::thread::spawn(move || {
            let mut tcp = std::net::TcpStream::connect(address).expect("connect");
            tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("write");
            let mut answer = Vec::new();
            let _ = tcp.read_to_end(&mut answer);
            answer
        });
        let (tcp, _) = listener.accept().await.expect("accept");
        let refused = TlsStream::accept(tcp, Arc::new(config)).await;
        assert!(refused.is_err(), "plain HTTP is no TLS handshake");
        drop(refused);
        let answer = peer.join().expect("client");
        // A TLS record of type alert (21), level fatal (2).
        assert_eq!(answer.first(), Some(&21), "answered {answer:?}");
        assert_eq!(answer.get(5), Some(&2), "answered {answer:?}");
    }

    #[tokio::test]
    async fn tls13_data_crosses_both_ways_and_an_idle_session_keeps_no_buffer() {
        static VERSIONS: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        exchange(&VERSIONS).await;
    }

    #[tokio::test]
    async fn tls12_data_crosses_both_ways_and_an_idle_session_keeps_no_buffer() {
        static VERSIONS: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
        exchange(&VERSIONS).await;
    }
}
