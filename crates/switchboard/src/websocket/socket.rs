//! [`Socket`]: the connection a WebSocket runs on once hyper hands it back, in the clear or
//! inside TLS. Everything is non-blocking (`try_*` and `poll_*_ready`, as on tokio's
//! `TcpStream`), so the callers' model stays the same either way: read what is there, write what
//! the socket takes, and wait for readiness otherwise.
//!
//! In the clear, a read or write is one system call on the stream. Inside TLS, the session
//! (`tls::TlsSession`) sits between: a write encrypts into it and sends what the socket takes;
//! what it cannot take yet stays in the session ([`Socket::output_pending`]) and goes first on
//! the next write (or on [`Socket::flush_pending`] when the socket is writable again). A read
//! decrypts what the socket has. The session is behind a lock, taken for the moment of one call:
//! the connection's reads and a flusher thread's writes never wait on each other for longer than
//! that.

use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use parking_lot::Mutex;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::tls::TlsSession;

/// A WebSocket's connection; see the module comment.
pub struct Socket {
    tcp: TcpStream,
    tls: Option<Box<Tls>>,
}

struct Tls {
    session: Mutex<TlsSession>,
    /// The session may hold input already (records read by hyper's side before the handover,
    /// or plaintext left by a read that filled its buffer): a read is due without waiting for
    /// the socket to become readable.
    input_buffered: AtomicBool,
}

impl Socket {
    pub fn plain(tcp: TcpStream) -> Self {
        Self { tcp, tls: None }
    }

    /// A TLS connection whose handshake is done (`session` as the HTTP side hands it back).
    pub fn tls(tcp: TcpStream, session: TlsSession) -> Self {
        Self {
            tcp,
            tls: Some(Box::new(Tls {
                session: Mutex::new(session),
                input_buffered: AtomicBool::new(true),
            })),
        }
    }

    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Some(tls) = &self.tls
            && tls.input_buffered.load(Ordering::Acquire)
        {
            return Poll::Ready(Ok(()));
        }
        self.tcp.poll_read_ready(cx)
    }

    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.tcp.poll_write_ready(cx)
    }

    pub async fn readable(&self) -> std::io::Result<()> {
        std::future::poll_fn(|cx| self.poll_read_ready(cx)).await
    }

    pub async fn writable(&self) -> std::io::Result<()> {
        self.tcp.writable().await
    }

    /// Reads what is there into `buf`: `Ok(0)` once the peer closed, `WouldBlock` when nothing
    /// is there yet.
    pub fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(tls) = &self.tls else {
            return self.tcp.try_read(buf);
        };
        let mut session = tls.session.lock();
        let read = session.try_read(&self.tcp, buf);
        // A full buffer may have left more behind.
        tls.input_buffered
            .store(session.input_pending(), Ordering::Release);
        read
    }

    /// Writes as much of `slices` as the socket takes now (one `send` for one slice, one
    /// `sendmsg` for several); `WouldBlock` when it takes nothing. Inside TLS, what the session
    /// still holds goes first, and the bytes taken may be left partly in the session.
    #[inline]
    pub fn try_write_vectored(&self, slices: &[IoSlice<'_>]) -> std::io::Result<usize> {
        let Some(tls) = &self.tls else {
            return match slices {
                [one] => self.tcp.try_write(one),
                _ => self.tcp.try_io(Interest::WRITABLE, || {
                    // MSG_NOSIGNAL: a peer gone is an error here, not a SIGPIPE for an
                    // embedding program that did not ignore it.
                    SockRef::from(&self.tcp).send_vectored_with_flags(slices, libc::MSG_NOSIGNAL)
                }),
            };
        };
        tls.session.lock().try_write_vectored(&self.tcp, slices)
    }

    /// [`Socket::try_write_vectored`] in the clear without asking tokio whether the socket is
    /// writable (a broadcast's writers call this once per recipient, and tokio's readiness is
    /// one cache miss more); `None` inside TLS. A `WouldBlock` here leaves tokio's readiness as
    /// it was, so the connection's next wait for writability returns at once and its write
    /// (through tokio) clears it.
    #[inline]
    pub fn send_now(&self, slices: &[IoSlice<'_>]) -> Option<std::io::Result<usize>> {
        if self.tls.is_some() {
            return None;
        }
        let socket = SockRef::from(&self.tcp);
        Some(match slices {
            [one] => socket.send_with_flags(one, libc::MSG_NOSIGNAL),
            _ => socket.send_vectored_with_flags(slices, libc::MSG_NOSIGNAL),
        })
    }

    /// Whether the connection is in the clear (no TLS).
    #[inline]
    pub fn is_plain(&self) -> bool {
        self.tls.is_none()
    }

    /// The socket's descriptor, for a write made outside tokio (the flusher's batched sends);
    /// valid as long as this socket lives.
    #[inline]
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.tcp.as_raw_fd()
    }

    /// Whether written bytes wait in the TLS session for the socket (never in the clear).
    #[inline]
    pub fn output_pending(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|tls| tls.session.lock().output_pending())
    }

    /// Sends what waits in the TLS session: true once nothing does.
    pub fn flush_pending(&self) -> std::io::Result<bool> {
        match &self.tls {
            Some(tls) => tls.session.lock().send_pending(&self.tcp),
            None => Ok(true),
        }
    }

    /// No more writes: a TLS close_notify (sent within `within`), then the TCP FIN.
    pub async fn shutdown(&mut self, within: std::time::Duration) {
        if let Some(tls) = &self.tls {
            // What the peer sends from now on is only read to be dropped.
            tls.input_buffered.store(false, Ordering::Release);
            tls.session.lock().queue_close_notify();
            let _ = tokio::time::timeout(within, async {
                while let Ok(false) = self.flush_pending() {
                    if self.tcp.writable().await.is_err() {
                        break;
                    }
                }
            })
            .await;
        }
        let _ = SockRef::from(&self.tcp).shutdown(std::net::Shutdown::Write);
    }

    /// Reads and drops what the peer sends (after a close): false once it closed its side.
    pub fn discard_available(&self) -> std::io::Result<bool> {
        let mut sink = [0u8; super::READ_CHUNK];
        // Undecrypted: nothing the peer sends now matters.
        match self.tcp.try_read(&mut sink) {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => Ok(true),
            Err(error) => Err(error),
        }
    }
}
