//! Where a key or a sharded channel lives in a Redis Cluster, with no I/O: its hash slot (CRC16
//! of the key, or of its `{hash tag}`, modulo 16,384) and the slot map read from `CLUSTER
//! SLOTS` (which master serves which slots). A Redis that is not a cluster serves every slot.

/// Slots in a Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// The hash slot of `key` (of its hash tag when it has a non-empty `{...}`).
pub fn slot_of(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS
}

/// CRC16-CCITT (XMODEM), as Redis Cluster hashes keys.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Which master (`host:port`) serves each slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotMap {
    /// Slot ranges (first, last, master), sorted by their first slot.
    ranges: Vec<(u16, u16, String)>,
}

impl SlotMap {
    /// Every slot on one server (a Redis that is not a cluster).
    pub fn single(address: &str) -> Self {
        Self {
            ranges: vec![(0, SLOTS - 1, address.to_owned())],
        }
    }

    /// Reads the reply to `CLUSTER SLOTS`, asked of `asked` (an empty host means that one).
    pub fn from_cluster_slots(reply: &redis::Value, asked_host: &str) -> Option<Self> {
        let redis::Value::Array(ranges) = reply else {
            return None;
        };
        let mut map = Vec::with_capacity(ranges.len());
        for range in ranges {
            let redis::Value::Array(fields) = range else {
                return None;
            };
            let first = integer(fields.first()?)?;
            let last = integer(fields.get(1)?)?;
            let redis::Value::Array(master) = fields.get(2)? else {
                return None;
            };
            let host = match master.first()? {
                redis::Value::BulkString(host) => String::from_utf8(host.clone()).ok()?,
                redis::Value::SimpleString(host) => host.clone(),
                _ => return None,
            };
            let host = if host.is_empty() || host == "?" {
                asked_host.to_owned()
            } else {
                host
            };
            let port = integer(master.get(1)?)?;
            let (first, last) = (u16::try_from(first).ok()?, u16::try_from(last).ok()?);
            if first > last || last >= SLOTS {
                return None;
            }
            map.push((first, last, address(&host, port as u16)));
        }
        map.sort();
        Some(Self { ranges: map })
    }

    /// The master serving `slot`, when one does.
    pub fn master_of(&self, slot: u16) -> Option<&str> {
        let at = self.ranges.partition_point(|(first, _, _)| *first <= slot);
        let (_, last, master) = self.ranges.get(at.checked_sub(1)?)?;
        (slot <= *last).then_some(master.as_str())
    }

    /// The master serving `key`'s slot.
    pub fn master_for(&self, key: &[u8]) -> Option<&str> {
        self.master_of(slot_of(key))
    }

    /// Every master, once.
    pub fn masters(&self) -> Vec<String> {
        let mut masters: Vec<String> = self.ranges.iter().map(|(_, _, m)| m.clone()).collect();
        masters.sort();
        masters.dedup();
        masters
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

fn integer(value: &redis::Value) -> Option<i64> {
    match value {
        redis::Value::Int(n) => Some(*n),
        _ => None,
    }
}

/// `host:port`, with brackets around an IPv6 host.
pub fn address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    #[test]
    fn slots_are_those_redis_computes() {
        // CLUSTER KEYSLOT answers these.
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"socket.io#/#"), slot_of(b"socket.io#/#"));
        assert_eq!(crc16(b"123456789"), 0x31c3);
        // Only the hash tag counts, when it is not empty.
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(slot_of(b"foo{{bar}}zap"), slot_of(b"{bar"));
    }

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn the_slot_map_routes_each_slot_to_its_master() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                node("127.0.0.1", 7001),
                node("127.0.0.1", 7004),
            ]),
            Value::Array(vec![Value::Int(0), Value::Int(5460), node("", 7000)]),
            Value::Array(vec![
                Value::Int(10923),
                Value::Int(16383),
                node("::1", 7002),
            ]),
        ]);
        let map = SlotMap::from_cluster_slots(&reply, "10.0.0.9").unwrap();
        assert_eq!(map.master_of(0), Some("10.0.0.9:7000"));
        assert_eq!(map.master_of(5461), Some("127.0.0.1:7001"));
        assert_eq!(map.master_of(16383), Some("[::1]:7002"));
        assert_eq!(map.master_for(b"foo"), Some("[::1]:7002"));
        assert_eq!(map.masters().len(), 3);
        assert!(SlotMap::from_cluster_slots(&Value::Int(1), "h").is_none());
        let partial = SlotMap::from_cluster_slots(
            &Value::Array(vec![Value::Array(vec![
                Value::Int(0),
                Value::Int(10),
                node("h", 1),
            ])]),
            "h",
        )
        .unwrap();
        assert_eq!(partial.master_of(11), None);
    }
}
