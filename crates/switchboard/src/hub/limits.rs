//! Limits on what a client may do through its sockets: the rate of its events (token buckets per
//! socket, for all its events and per event name), the rooms one socket may be in, the
//! namespaces one connection may join, the length of event names, and the sockets one user may
//! have on this node. Every refusal is counted by limit (`switchboard_limits_hit_total`).
//!
//! A socket's buckets are made on its first limited event, so sockets that send nothing (most
//! of a fan-out's) cost one empty slot.

use std::collections::HashMap;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::config::{LimitsConfig, OnExcess, RateLimitSettings};
use crate::rate::{Rate, Tokens};

/// The label of `switchboard_limits_hit_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub limit: &'static str,
}

/// The limits of a hub.
#[derive(Debug, Clone)]
pub struct HubLimits {
    socket_rate: Option<Rate>,
    /// Per event name: its index among a socket's per-event buckets, and its rate.
    event_rates: HashMap<String, (usize, Rate)>,
    on_excess: OnExcess,
    pub max_rooms_per_socket: usize,
    pub max_namespaces_per_connection: usize,
    pub event_name_max: usize,
    pub max_sockets_per_user: usize,
    hits: Family<LimitLabel, Counter>,
}

impl Default for HubLimits {
    fn default() -> Self {
        Self {
            socket_rate: None,
            event_rates: HashMap::new(),
            on_excess: OnExcess::Drop,
            max_rooms_per_socket: usize::MAX,
            max_namespaces_per_connection: usize::MAX,
            event_name_max: usize::MAX,
            max_sockets_per_user: 0,
            hits: Family::default(),
        }
    }
}

/// What to do with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Handle,
    /// Over its rate: not handled, the callback gets an error.
    Drop,
    /// Over its rate: the socket is disconnected.
    Disconnect,
}

/// A socket's buckets: all its events, and each limited event name.
#[derive(Debug)]
pub struct SocketBuckets {
    all: Option<Tokens>,
    per_event: Vec<Option<Tokens>>,
}

impl HubLimits {
    /// The hub's part of `[rate_limits]` and `[limits]`.
    pub fn from_settings(rates: &RateLimitSettings, limits: &LimitsConfig) -> Self {
        let event_rates = rates
            .events
            .iter()
            .enumerate()
            .map(|(index, e)| {
                let rate = Rate {
                    per_second: e.rate,
                    burst: e.burst,
                };
                (e.event.clone(), (index, rate))
            })
            .collect();
        Self {
            socket_rate: rates.socket.map(|b| Rate {
                per_second: b.rate,
                burst: b.burst,
            }),
            event_rates,
            on_excess: rates.on_excess,
            max_rooms_per_socket: limits.max_rooms_per_socket,
            max_namespaces_per_connection: limits.max_namespaces_per_connection,
            event_name_max: limits.event_name_max,
            max_sockets_per_user: limits.max_connections_per_user,
            hits: Family::default(),
        }
    }

    /// The refusals counted, by limit (registered by the metrics).
    pub fn hits(&self) -> &Family<LimitLabel, Counter> {
        &self.hits
    }

    pub fn hit(&self, limit: &'static str) {
        self.hits.get_or_create(&LimitLabel { limit }).inc();
    }

    pub(crate) fn rates_events(&self) -> bool {
        self.socket_rate.is_some() || !self.event_rates.is_empty()
    }

    /// Whether a socket's event `name` is within its rates (taking its tokens if so).
    pub(crate) fn check_event(
        &self,
        buckets: &mut Option<Box<SocketBuckets>>,
        name: &str,
    ) -> Verdict {
        let event = self.event_rates.get(name).copied();
        if self.socket_rate.is_none() && event.is_none() {
            return Verdict::Handle;
        }
        let now = Instant::now();
        let buckets = buckets.get_or_insert_with(|| {
            Box::new(SocketBuckets {
                all: None,
                per_event: vec![None; self.event_rates.len()],
            })
        });
        let mut within = true;
        if let Some(rate) = self.socket_rate {
            let tokens = buckets.all.get_or_insert(Tokens::full(rate, now));
            within &= tokens.take(rate, now);
        }
        if let Some((index, rate)) = event
            && let Some(slot) = buckets.per_event.get_mut(index)
        {
            let tokens = slot.get_or_insert(Tokens::full(rate, now));
            within &= tokens.take(rate, now);
        }
        if within {
            return Verdict::Handle;
        }
        self.hit("event_rate");
        match self.on_excess {
            OnExcess::Drop => Verdict::Drop,
            OnExcess::Disconnect => Verdict::Disconnect,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Bucket, EventLimit};

    #[test]
    fn a_socket_gets_its_burst_then_its_rate_and_an_event_its_own() {
        let rates = RateLimitSettings {
            socket: Some(Bucket {
                rate: 1000.0,
                burst: 100.0,
            }),
            events: vec![EventLimit {
                event: "message".into(),
                rate: 0.001,
                burst: 3.0,
            }],
            ..Default::default()
        };
        let limits = HubLimits::from_settings(&rates, &LimitsConfig::default());
        let mut buckets = None;
        for _ in 0..3 {
            assert_eq!(limits.check_event(&mut buckets, "message"), Verdict::Handle);
        }
        assert_eq!(limits.check_event(&mut buckets, "message"), Verdict::Drop);
        assert_eq!(
            limits.check_event(&mut buckets, "typing"),
            Verdict::Handle,
            "other events only count against the socket's own bucket"
        );
        let mut other = None;
        assert_eq!(
            limits.check_event(&mut other, "message"),
            Verdict::Handle,
            "per socket"
        );
    }
}
