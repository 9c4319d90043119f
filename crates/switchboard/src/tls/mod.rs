//! Serving TLS with rustls: the certificate chain and private key (PEM files named in `[tls]`),
//! loaded at start and again on [`Tls::reload`] (SIGHUP), and the handshake of each accepted
//! connection. A reload changes what new handshakes present; open connections keep the session
//! they have, so none is dropped. A reload that fails (a half-written file, a key that does not
//! match) keeps the pair in use and says why.
//!
//! After the handshake the connection is served as any other: HTTP/1.1 by hyper, and a WebSocket
//! upgrade takes the stream and its TLS session back (`websocket::Socket`). The session is
//! rustls' unbuffered connection with buffers of our own (`session.rs`), so that an idle
//! connection keeps no I/O buffer.

mod session;

pub use session::{TlsSession, TlsStream};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use prometheus_client::metrics::counter::Counter;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;

use crate::config::TlsSettings;

/// What TLS counts (registered in `/metrics` by the app).
#[derive(Clone, Default)]
pub struct TlsCounters {
    pub handshakes: Counter,
    /// Handshakes that failed or timed out (a plain-HTTP client on the TLS port, say).
    pub handshake_failures: Counter,
    pub reloads: Counter,
    pub reload_failures: Counter,
}

/// Why the certificate or key could not be used: which of the two, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TlsError {
    /// `cert` or `key`: the `[tls]` key to name in the error.
    pub key: &'static str,
    pub message: String,
}

/// The TLS side of the listener; see the module comment.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    config: RwLock<Arc<rustls::ServerConfig>>,
    counters: TlsCounters,
}

impl Tls {
    /// Loads the pair named in `settings` (both set: the config checks it).
    pub fn load(settings: &TlsSettings, counters: TlsCounters) -> Result<Arc<Self>, TlsError> {
        let (Some(cert), Some(key)) = (&settings.cert, &settings.key) else {
            return Err(TlsError {
                key: "cert",
                message: "tls needs both cert and key".into(),
            });
        };
        let (cert, key) = (PathBuf::from(cert), PathBuf::from(key));
        let config = server_config(&cert, &key)?;
        Ok(Arc::new(Self {
            cert,
            key,
            config: RwLock::new(Arc::new(config)),
            counters,
        }))
    }

    /// Reads the files again; new handshakes use the new pair, open connections are untouched.
    pub fn reload(&self) -> Result<(), TlsError> {
        match server_config(&self.cert, &self.key) {
            Ok(config) => {
                *self.config.write() = Arc::new(config);
                self.counters.reloads.inc();
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                Ok(())
            }
            Err(error) => {
                self.counters.reload_failures.inc();
                tracing::error!(
                    key = %format_args!("tls.{}", error.key),
                    "TLS reload failed, the certificate in use stays: {error}"
                );
                Err(error)
            }
        }
    }

    /// The handshake of one accepted connection, within `within` (a client that opens the
    /// connection and says nothing is cut off like a slow HTTP client).
    pub async fn handshake(&self, tcp: TcpStream, within: Duration) -> Option<TlsStream> {
        let config = self.config.read().clone();
        match tokio::time::timeout(within, TlsStream::accept(tcp, config)).await {
            Ok(Ok(stream)) => {
                self.counters.handshakes.inc();
                Some(stream)
            }
            Ok(Err(error)) => {
                self.counters.handshake_failures.inc();
                tracing::debug!(%error, "TLS handshake failed");
                None
            }
            Err(_) => {
                self.counters.handshake_failures.inc();
                tracing::debug!("TLS handshake timed out");
                None
            }
        }
    }
}

/// A rustls server config from PEM files: the chain (leaf first) and its private key (PKCS#8,
/// PKCS#1 or SEC1). Only HTTP/1.1 is offered over ALPN: that is what is served.
pub fn server_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<rustls::ServerConfig, TlsError> {
    let cert_error = |message: String| TlsError {
        key: "cert",
        message,
    };
    let key_error = |message: String| TlsError {
        key: "key",
        message,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(format!("cannot read {}: {e}", cert.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(format!("{} is not valid PEM: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(cert_error(format!(
            "{} holds no certificate (expected a PEM \"BEGIN CERTIFICATE\" block)",
            cert.display()
        )));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        key_error(format!(
            "{} holds no usable private key (PEM PKCS#8, PKCS#1 or SEC1): {e}",
            key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| key_error(format!("the key does not fit the certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
