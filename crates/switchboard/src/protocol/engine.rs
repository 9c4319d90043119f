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
    if std::str::from_utf8(&text).is_err() {
        return Err(EngineDecodeError::InvalidUtf8);
    }
    decode_utf8_packet(text)
}

/// [`decode_text_packet`] for text already known to be UTF-8 (a WebSocket text message, which
/// `websocket::MessageReader` checked; a v3 polling body, checked whole): not checked again.
pub fn decode_utf8_packet(text: Bytes) -> Result<EnginePacket, EngineDecodeError> {
    let Some(&first) = text.first() else {
        return Err(EngineDecodeError::Empty);
    };
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

/// One packet of an Engine.IO v3 polling payload, as the server writes it: a text packet (type
/// character included) or a binary message (its v3 form: the `4` type byte, then the data).
pub enum V3Packet<'a> {
    Text(&'a [u8]),
    Binary(&'a [u8]),
}

/// An Engine.IO v3 polling payload (socket.io v2 clients). A client that reads binary (it did not
/// ask for `b64`) gets the binary form when any packet is binary: per packet a `0` (text) or `1`
/// (binary) byte, the length's decimal digits as bytes, `0xFF`, then the packet. Otherwise the
/// text form: per packet `<length>:<packet>`, the length counted in UTF-16 code units (what a
/// JavaScript string's length is), binary packets as `b4` + base64. Answers (body, is binary).
pub fn encode_v3_payload(packets: &[V3Packet], b64: bool) -> (Vec<u8>, bool) {
    let has_binary = packets.iter().any(|p| matches!(p, V3Packet::Binary(_)));
    let mut out = Vec::new();
    if has_binary && !b64 {
        for packet in packets {
            let (flag, bytes) = match packet {
                V3Packet::Text(bytes) => (0u8, *bytes),
                V3Packet::Binary(bytes) => (1u8, *bytes),
            };
            out.push(flag);
            out.extend(
                itoa::Buffer::new()
                    .format(bytes.len())
                    .bytes()
                    .map(|d| d - b'0'),
            );
            out.push(0xFF);
            out.extend_from_slice(bytes);
        }
        return (out, true);
    }
    for packet in packets {
        match packet {
            V3Packet::Text(bytes) => {
                let units =
                    std::str::from_utf8(bytes).map_or(bytes.len(), |t| t.encode_utf16().count());
                out.extend_from_slice(itoa::Buffer::new().format(units).as_bytes());
                out.push(b':');
                out.extend_from_slice(bytes);
            }
            V3Packet::Binary(bytes) => {
                let data = bytes.get(1..).unwrap_or_default();
                let mut encoded = b"b4".to_vec();
                encoded.extend_from_slice(BASE64.encode(data).as_bytes());
                out.extend_from_slice(itoa::Buffer::new().format(encoded.len()).as_bytes());
                out.push(b':');
                out.extend_from_slice(&encoded);
            }
        }
    }
    (out, false)
}

/// Decodes an Engine.IO v3 polling POST body (either form, see [`encode_v3_payload`]). A binary
/// message's data comes without its `4` type byte.
pub fn decode_v3_payload(body: Bytes) -> Result<Vec<EnginePacket>, EngineDecodeError> {
    let mut packets = Vec::new();
    let mut at = 0;
    if matches!(body.first(), Some(0 | 1)) {
        while at < body.len() {
            let binary = body[at] == 1;
            at += 1;
            let mut length = 0usize;
            loop {
                let digit = *body.get(at).ok_or(EngineDecodeError::Empty)?;
                at += 1;
                if digit == 0xFF {
                    break;
                }
                if digit > 9 {
                    return Err(EngineDecodeError::UnknownType(char::from(digit)));
                }
                length = length
                    .checked_mul(10)
                    .and_then(|l| l.checked_add(usize::from(digit)))
                    .ok_or(EngineDecodeError::Empty)?;
            }
            let end = at
                .checked_add(length)
                .filter(|&end| end <= body.len())
                .ok_or(EngineDecodeError::Empty)?;
            let packet = body.slice(at..end);
            at = end;
            packets.push(if binary {
                // The v3 binary form: the type byte, then the data.
                match packet.first() {
                    Some(4) => EnginePacket::Binary(packet.slice(1..)),
                    Some(&other) => {
                        return Err(EngineDecodeError::UnknownType(char::from(
                            b'0' + other % 10,
                        )));
                    }
                    None => return Err(EngineDecodeError::Empty),
                }
            } else {
                std::str::from_utf8(&packet).map_err(|_| EngineDecodeError::InvalidUtf8)?;
                decode_v3_text_packet(packet)?
            });
        }
        return Ok(packets);
    }
    let text = std::str::from_utf8(&body).map_err(|_| EngineDecodeError::InvalidUtf8)?;
    let mut rest = text;
    while !rest.is_empty() {
        let colon = rest.find(':').ok_or(EngineDecodeError::Empty)?;
        let units: usize = rest[..colon]
            .parse()
            .map_err(|_| EngineDecodeError::Empty)?;
        rest = &rest[colon + 1..];
        // The length counts UTF-16 code units: walk characters until that many are taken.
        let mut taken = 0;
        let mut bytes = 0;
        for c in rest.chars() {
            if taken >= units {
                break;
            }
            taken += c.len_utf16();
            bytes += c.len_utf8();
        }
        if taken != units {
            return Err(EngineDecodeError::Empty);
        }
        let start = body.len() - rest.len();
        packets.push(decode_v3_text_packet(body.slice(start..start + bytes))?);
        rest = &rest[bytes..];
    }
    Ok(packets)
}

/// A v3 text packet, already checked to be UTF-8: as in v4, but a binary one is `b4` + base64.
fn decode_v3_text_packet(packet: Bytes) -> Result<EnginePacket, EngineDecodeError> {
    if packet.first() == Some(&b'b') {
        let data = packet.get(2..).ok_or(EngineDecodeError::Empty)?;
        return Ok(EnginePacket::Binary(Bytes::from(
            BASE64
                .decode(data)
                .map_err(|_| EngineDecodeError::InvalidBase64)?,
        )));
    }
    // The whole body was checked to be UTF-8.
    decode_utf8_packet(packet)
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

    #[test]
    fn v3_payloads_round_trip_in_both_forms() {
        let packets = [
            V3Packet::Text("4é😀".as_bytes()),
            V3Packet::Binary(&[4, 1, 2, 255]),
        ];
        let (binary, is_binary) = encode_v3_payload(&packets, false);
        assert!(is_binary);
        assert_eq!(
            &binary[..4],
            &[0, 7, 255, b'4'],
            "text: flag, length 7 (bytes), 0xFF"
        );
        let decoded = decode_v3_payload(Bytes::from(binary)).unwrap();
        assert_eq!(decoded[0], EnginePacket::Message(Bytes::from("é😀")));
        assert_eq!(
            decoded[1],
            EnginePacket::Binary(Bytes::from_static(&[1, 2, 255]))
        );
        let (text, is_binary) = encode_v3_payload(&packets, true);
        assert!(!is_binary);
        // "4é😀" is 4 UTF-16 units (the emoji is two).
        assert!(
            text.starts_with("4:4é😀".as_bytes()),
            "{:?}",
            String::from_utf8_lossy(&text)
        );
        let decoded = decode_v3_payload(Bytes::from(text)).unwrap();
        assert_eq!(
            decoded[1],
            EnginePacket::Binary(Bytes::from_static(&[1, 2, 255]))
        );
        let (plain, _) = encode_v3_payload(&[V3Packet::Text(b"40"), V3Packet::Text(b"2")], false);
        assert_eq!(plain, b"2:401:2");
        assert_eq!(
            decode_v3_payload(Bytes::from_static(b"2:401:2"))
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn bad_v3_payloads_are_errors() {
        for body in [
            &b"5:40"[..],
            b"x:40",
            b"2:4",
            &[
                0, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,
            ],
            &[1, 1, 255],
            &[0, 1],
        ] {
            assert!(
                decode_v3_payload(Bytes::copy_from_slice(body)).is_err(),
                "{body:?}"
            );
        }
    }
}
