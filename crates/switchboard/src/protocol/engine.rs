//! Engine.IO v4 packets: the one-character type prefix, the `\x1e`-separated polling payload and
//! the `b` + base64 form of binary packets on polling.
//!
//! Decoding borrows from the input where it can; a bad packet is an [`EngineDecodeError`], never a
//! panic, because every byte here comes from the network.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;

/// The separator between packets in a polling payload (ASCII record separator).
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// An Engine.IO packet as received from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnginePacket {
    /// `0`: only ever sent by the server.
    Open,
    /// `1`: the client closes the session.
    Close,
    /// `2` with an optional payload (`2probe` during an upgrade).
    Ping(Bytes),
    /// `3` with an optional payload (`3probe` during an upgrade).
    Pong(Bytes),
    /// `4` + text.
    Message(Bytes),
    /// A binary message (a binary WebSocket frame, or `b` + base64 on polling).
    Binary(Bytes),
    /// `5`: the client completes an upgrade.
    Upgrade,
    /// `6`: nothing.
    Noop,
}

/// Why a packet could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineDecodeError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    #[error("invalid base64 in a binary packet")]
    InvalidBase64,
    #[error("packet is not valid UTF-8")]
    InvalidUtf8,
}

/// Decodes one text packet (a WebSocket text frame, or one record of a polling payload).
/// `text` is the whole packet, type character included.
pub fn decode_text_packet(text: Bytes) -> Result<EnginePacket, EngineDecodeError> {
    let Some(&first) = text.first() else {
        return Err(EngineDecodeError::Empty);
    };
    if std::str::from_utf8(&text).is_err() {
        return Err(EngineDecodeError::InvalidUtf8);
    }
    let rest = text.slice(1..);
    Ok(match first {
        b'0' => EnginePacket::Open,
        b'1' => EnginePacket::Close,
        b'2' => EnginePacket::Ping(rest),
        b'3' => EnginePacket::Pong(rest),
        b'4' => EnginePacket::Message(rest),
        b'5' => EnginePacket::Upgrade,
        b'6' => EnginePacket::Noop,
        b'b' => EnginePacket::Binary(Bytes::from(
            BASE64
                .decode(&rest)
                .map_err(|_| EngineDecodeError::InvalidBase64)?,
        )),
        other => return Err(EngineDecodeError::UnknownType(char::from(other))),
    })
}

/// Decodes a polling POST body into its packets, in order. Any bad record fails the whole body:
/// the caller closes the session, as the reference server does.
pub fn decode_polling_payload(body: Bytes) -> Result<Vec<EnginePacket>, EngineDecodeError> {
    let mut packets = Vec::new();
    let mut start = 0;
    for (index, byte) in body.iter().enumerate() {
        if *byte == RECORD_SEPARATOR {
            packets.push(decode_text_packet(body.slice(start..index))?);
            start = index + 1;
        }
    }
    packets.push(decode_text_packet(body.slice(start..))?);
    Ok(packets)
}

/// Appends the polling form of a binary message (`b` + base64) to `out`.
pub fn encode_polling_binary(data: &[u8], out: &mut Vec<u8>) {
    out.push(b'b');
    let start = out.len();
    out.resize(
        start + base64::encoded_len(data.len(), true).unwrap_or(0),
        0,
    );
    let written = BASE64.encode_slice(data, &mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
}

/// The open packet's JSON body, with exactly the keys the protocol names, in its order.
pub fn encode_open_packet(
    sid: &str,
    upgrades: &[&str],
    ping_interval_ms: u64,
    ping_timeout_ms: u64,
    max_payload: usize,
) -> String {
    let upgrades = serde_json::to_string(upgrades).unwrap_or_else(|_| "[]".to_owned());
    let sid = serde_json::to_string(sid).unwrap_or_else(|_| "\"\"".to_owned());
    format!(
        "0{{\"sid\":{sid},\"upgrades\":{upgrades},\"pingInterval\":{ping_interval_ms},\"pingTimeout\":{ping_timeout_ms},\"maxPayload\":{max_payload}}}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn decodes_each_packet_type() {
        assert_eq!(decode_text_packet(text("1")), Ok(EnginePacket::Close));
        assert_eq!(
            decode_text_packet(text("2probe")),
            Ok(EnginePacket::Ping(text("probe")))
        );
        assert_eq!(
            decode_text_packet(text("3")),
            Ok(EnginePacket::Pong(text("")))
        );
        assert_eq!(
            decode_text_packet(text("4hello")),
            Ok(EnginePacket::Message(text("hello")))
        );
        assert_eq!(decode_text_packet(text("5")), Ok(EnginePacket::Upgrade));
        assert_eq!(decode_text_packet(text("6")), Ok(EnginePacket::Noop));
        assert_eq!(
            decode_text_packet(text("bAQIDBA==")),
            Ok(EnginePacket::Binary(Bytes::from_static(&[1, 2, 3, 4])))
        );
    }

    #[test]
    fn refuses_bad_packets() {
        assert_eq!(decode_text_packet(text("")), Err(EngineDecodeError::Empty));
        assert_eq!(
            decode_text_packet(text("abc")),
            Err(EngineDecodeError::UnknownType('a'))
        );
        assert_eq!(
            decode_text_packet(text("b!!!")),
            Err(EngineDecodeError::InvalidBase64)
        );
        assert_eq!(
            decode_text_packet(Bytes::from_static(&[b'4', 0xff])),
            Err(EngineDecodeError::InvalidUtf8)
        );
    }

    #[test]
    fn splits_polling_payloads_in_order() {
        let packets = decode_polling_payload(text("4test1\x1e4test2\x1ebAQIDBA==")).unwrap();
        assert_eq!(
            packets,
            vec![
                EnginePacket::Message(text("test1")),
                EnginePacket::Message(text("test2")),
                EnginePacket::Binary(Bytes::from_static(&[1, 2, 3, 4])),
            ]
        );
        assert!(decode_polling_payload(text("4ok\x1e")).is_err());
    }

    #[test]
    fn encodes_binary_for_polling() {
        let mut out = Vec::new();
        encode_polling_binary(&[1, 2, 3, 4], &mut out);
        assert_eq!(out, b"bAQIDBA==");
    }

    #[test]
    fn open_packet_has_exactly_the_protocol_keys() {
        let open = encode_open_packet("abc", &["websocket"], 25000, 20000, 1000000);
        assert_eq!(
            open,
            r#"0{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
    }
}
