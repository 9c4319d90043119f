//! The backend in the loop: what the server asks of the application's own HTTP backend, and
//! what it tells it, configured in `[proxy]` and `[webhooks]` (docs/configuration.md).
//!
//! `client.rs` is the one HTTP client (timeouts, headers, what is worth retrying);
//! `connect.rs` the connect proxy (the backend decides who connects, as whom, into which rooms);
//! `events.rs` the event proxy (a client event answered by the backend, in per-socket order);
//! `webhooks.rs` lifecycle webhooks (batched, signed, retried); `expiry.rs` token expiry and
//! refresh during a connection. Each acts through the hub's own operations and observers, like
//! client events and the HTTP API do.

mod client;
pub mod connect;
pub mod events;
pub mod expiry;
pub mod webhooks;

use std::sync::Arc;

pub use client::{BackendClient, CallError, CallHeaders};
pub use connect::ConnectProxy;
pub use events::EventProxy;
pub use expiry::{ExpiryWatch, TOKEN_EXPIRY_KEY};
pub use webhooks::Webhooks;

use crate::auth::Verifier;
use crate::config::{AuthMode, Config};
use crate::hub::Hub;
use crate::metrics::Metrics;

/// Everything of the backend a running server keeps.
#[derive(Default)]
pub struct Backend {
    pub connect: Option<Arc<ConnectProxy>>,
    pub events: Option<Arc<EventProxy>>,
    pub webhooks: Option<Arc<Webhooks>>,
    pub expiry: Option<Arc<ExpiryWatch>>,
}

/// The config checks only the backend part can make (header names and values), as
/// `(key, message)`.
pub fn check(config: &Config) -> Result<(), (String, String)> {
    if let Some(connect) = &config.proxy.connect {
        CallHeaders::new(&connect.headers, &connect.forward_headers)
            .map_err(|m| ("proxy.connect.headers".to_owned(), m))?;
    }
    for (index, route) in config.proxy.events.iter().enumerate() {
        CallHeaders::new(&route.headers, &route.forward_headers)
            .map_err(|m| (format!("proxy.events[{index}].headers"), m))?;
    }
    if let Some(refresh) = &config.proxy.refresh {
        CallHeaders::new(&refresh.headers, &[])
            .map_err(|m| ("proxy.refresh.headers".to_owned(), m))?;
    }
    CallHeaders::new(&config.webhooks.headers, &[])
        .map_err(|m| ("webhooks.headers".to_owned(), m))?;
    Ok(())
}

/// The client headers a session must keep for the proxies to pass them on.
pub fn forwarded_headers(config: &Config) -> Vec<http::HeaderName> {
    let mut names = EventProxy::forwarded_headers(&config.proxy);
    if let Some(connect) = &config.proxy.connect
        && let Ok(headers) = CallHeaders::new(&Default::default(), &connect.forward_headers)
    {
        names.extend(headers.forwarded().iter().cloned());
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    names
}

impl Backend {
    /// Builds and starts what the config asks for, on the hub (before clients connect).
    pub fn start(
        config: &Config,
        hub: &Arc<Hub>,
        metrics: &Arc<Metrics>,
        verifier: Option<&Arc<Verifier>>,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<Self, String> {
        let wanted = config.proxy.connect.is_some()
            || !config.proxy.events.is_empty()
            || config.webhooks.url.is_some()
            || (verifier.is_some() && config.auth.enforce_expiry);
        if !wanted {
            return Ok(Self::default());
        }
        let client = BackendClient::new()?;
        let room_name_max = config.limits.room_name_max;
        let mut backend = Self::default();
        if let Some(settings) = &config.proxy.connect {
            let proxy = ConnectProxy::new(
                settings,
                client.clone(),
                &config.presence.user_key,
                room_name_max,
                metrics.clone(),
            )?;
            for name in config.namespace_names() {
                if proxy.covers(&name) {
                    hub.namespace(&name).set_connect_gate(proxy.gate());
                }
            }
            backend.connect = Some(proxy);
        }
        if !config.proxy.events.is_empty() {
            let proxy = EventProxy::new(
                &config.proxy,
                client.clone(),
                hub.clone(),
                metrics.clone(),
                room_name_max,
            );
            for route in &config.proxy.events {
                proxy.install(route)?;
            }
            backend.events = Some(proxy);
        }
        backend.webhooks = Webhooks::start(
            &config.webhooks,
            client.clone(),
            hub,
            metrics.clone(),
            shutdown.clone(),
        )?;
        if let (Some(verifier), true) = (verifier, config.auth.enforce_expiry) {
            let namespaces: Vec<String> = config
                .namespace_names()
                .into_iter()
                .filter(|name| config.auth_mode(name) != AuthMode::Off)
                .collect();
            let refresh = config.proxy.refresh.as_ref().map(|r| (r, client.clone()));
            backend.expiry = Some(ExpiryWatch::start(
                hub,
                &namespaces,
                verifier.clone(),
                config.auth.expiry_warning.0,
                refresh,
                metrics.clone(),
            )?);
        }
        Ok(backend)
    }
}
