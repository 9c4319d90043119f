//! Who may open a session, by client address: connections at once and new connections per
//! second (a token bucket) per address, the address read through the configured trusted proxies
//! (`X-Forwarded-For`: the last address in it that is not a trusted proxy). The table holds only
//! addresses with sessions open or a bucket still refilling.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use parking_lot::Mutex;

use crate::http::RequestInfo;
use crate::pattern::Cidr;
use crate::rate::{Rate, Tokens};

/// The per-address limits.
#[derive(Debug, Clone, Default)]
pub struct AddressLimitSettings {
    /// Sessions at once per address; 0: no limit.
    pub max_per_address: usize,
    /// New sessions per second per address; 0: no limit.
    pub rate: f64,
    pub burst: f64,
    pub trusted_proxies: Vec<Cidr>,
}

impl AddressLimitSettings {
    fn is_on(&self) -> bool {
        self.max_per_address > 0 || self.rate > 0.0
    }
}

/// Why a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TooManyConnections,
    TooFast,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Self::TooManyConnections => "Too many connections from this address",
            Self::TooFast => "Too many new connections from this address; slow down",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::TooManyConnections => "connections_per_ip",
            Self::TooFast => "connect_rate_per_ip",
        }
    }
}

struct Entry {
    open: usize,
    tokens: Tokens,
}

/// The table of addresses.
pub struct AddressLimits {
    settings: AddressLimitSettings,
    table: Mutex<HashMap<IpAddr, Entry>>,
}

impl AddressLimits {
    pub fn new(settings: AddressLimitSettings) -> Self {
        Self {
            settings,
            table: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_on(&self) -> bool {
        self.settings.is_on()
    }

    /// The client's address: the connecting peer, or, when that is a trusted proxy, the last
    /// address of `X-Forwarded-For` that is not one.
    pub fn client_address(&self, request: &RequestInfo) -> Option<IpAddr> {
        let peer = request.remote_addr?.ip();
        let trusted = |ip: IpAddr| self.settings.trusted_proxies.iter().any(|c| c.contains(ip));
        if !trusted(peer) {
            return Some(peer);
        }
        let mut client = peer;
        let forwarded = request
            .headers
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in forwarded.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(ip) if trusted(ip) => client = ip,
                Ok(ip) => return Some(ip),
                Err(_) => break,
            }
        }
        Some(client)
    }

    /// Counts a new session from `request`'s address, or refuses it.
    pub fn admit(&self, request: &RequestInfo) -> Result<(), Refusal> {
        if !self.is_on() {
            return Ok(());
        }
        let Some(address) = self.client_address(request) else {
            return Ok(());
        };
        let now = Instant::now();
        let mut table = self.table.lock();
        if table.len() > 10_000 {
            self.sweep(&mut table, now);
        }
        let rate = self.rate();
        let entry = table.entry(address).or_insert(Entry {
            open: 0,
            tokens: Tokens::full(rate, now),
        });
        let max = self.settings.max_per_address;
        if max > 0 && entry.open >= max {
            return Err(Refusal::TooManyConnections);
        }
        if self.settings.rate > 0.0 && !entry.tokens.take(rate, now) {
            return Err(Refusal::TooFast);
        }
        entry.open += 1;
        Ok(())
    }

    /// A session counted by [`AddressLimits::admit`] ended.
    pub fn release(&self, request: &RequestInfo) {
        if !self.is_on() {
            return;
        }
        let Some(address) = self.client_address(request) else {
            return;
        };
        let mut table = self.table.lock();
        if let Some(entry) = table.get_mut(&address) {
            entry.open = entry.open.saturating_sub(1);
            if entry.open == 0 && self.settings.rate <= 0.0 {
                table.remove(&address);
            }
        }
    }

    fn rate(&self) -> Rate {
        Rate {
            per_second: self.settings.rate,
            burst: self.settings.burst.max(1.0),
        }
    }

    /// Drops the addresses with nothing open whose bucket is full again.
    fn sweep(&self, table: &mut HashMap<IpAddr, Entry>, now: Instant) {
        let rate = self.rate();
        table.retain(|_, e| e.open > 0 || !e.tokens.is_full_by(rate, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::KeptHeaders;

    fn request(peer: &str, forwarded: Option<&str>) -> RequestInfo {
        let mut headers = http::HeaderMap::new();
        if let Some(value) = forwarded {
            headers.insert("x-forwarded-for", value.parse().unwrap());
        }
        RequestInfo {
            remote_addr: Some(
                format!("{peer}:5000")
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            ),
            headers: KeptHeaders::from_request(&headers),
            ..RequestInfo::default()
        }
    }

    #[test]
    fn the_client_address_is_read_through_trusted_proxies_only() {
        let limits = AddressLimits::new(AddressLimitSettings {
            max_per_address: 1,
            trusted_proxies: vec![crate::pattern::parse_cidr("10.0.0.0/8").unwrap()],
            ..Default::default()
        });
        let via_proxy = request("10.0.0.5", Some("203.0.113.9, 10.0.0.7"));
        assert_eq!(
            limits.client_address(&via_proxy),
            "203.0.113.9".parse().ok()
        );
        // An untrusted peer's header is its own claim: ignored.
        let direct = request("198.51.100.1", Some("203.0.113.9"));
        assert_eq!(limits.client_address(&direct), "198.51.100.1".parse().ok());
    }

    #[test]
    fn an_address_at_its_cap_is_refused_until_one_closes() {
        let limits = AddressLimits::new(AddressLimitSettings {
            max_per_address: 2,
            ..Default::default()
        });
        let a = request("192.0.2.1", None);
        assert!(limits.admit(&a).is_ok());
        assert!(limits.admit(&a).is_ok());
        assert_eq!(limits.admit(&a), Err(Refusal::TooManyConnections));
        assert!(
            limits.admit(&request("192.0.2.2", None)).is_ok(),
            "another address is not affected"
        );
        limits.release(&a);
        assert!(limits.admit(&a).is_ok());
    }

    #[test]
    fn the_connect_rate_is_a_token_bucket() {
        let limits = AddressLimits::new(AddressLimitSettings {
            rate: 1.0,
            burst: 3.0,
            ..Default::default()
        });
        let a = request("192.0.2.1", None);
        for _ in 0..3 {
            assert!(limits.admit(&a).is_ok());
        }
        assert_eq!(limits.admit(&a), Err(Refusal::TooFast));
    }
}
