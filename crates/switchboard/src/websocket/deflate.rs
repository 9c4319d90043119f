//! permessage-deflate (RFC 7692), with no I/O: choosing a client's offer, compressing one
//! message and inflating one. The server never takes over its compression context from one
//! message to the next (`server_no_context_takeover`), so a compressed message depends on
//! nothing but its own bytes and one compressed frame can be shared by every recipient that
//! negotiated the same window; it asks the client not to either (`client_no_context_takeover`),
//! so inflating keeps no state between messages and an idle connection holds nothing for it.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// What the client's message ends with once compressed, left off on the wire (RFC 7692 7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The compression a connection negotiated: the server's LZ77 window, in bits (9 to 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    pub window_bits: u8,
}

impl Deflate {
    /// The `Sec-WebSocket-Extensions` answer for it.
    pub fn response(&self) -> String {
        let mut answer = String::from(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        );
        if self.window_bits < 15 {
            answer.push_str(&format!("; server_max_window_bits={}", self.window_bits));
        }
        answer
    }
}

/// The first permessage-deflate offer among the `Sec-WebSocket-Extensions` values that this
/// server can take. An offer with an unknown, repeated or invalid parameter is declined
/// (RFC 7692 5.1), and so is one asking for a server window under 9 bits (zlib's least).
pub fn choose_offer<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Deflate> {
    values
        .into_iter()
        .flat_map(|value| value.split(','))
        .find_map(|offer| {
            let mut parts = offer.split(';').map(str::trim);
            if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
                return None;
            }
            let mut seen: Vec<String> = Vec::new();
            let mut window_bits = 15;
            for part in parts.filter(|p| !p.is_empty()) {
                let (name, value) = match part.split_once('=') {
                    Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
                    None => (part, None),
                };
                let name = name.to_ascii_lowercase();
                if seen.contains(&name) {
                    return None;
                }
                match (name.as_str(), value) {
                    ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
                    ("client_max_window_bits", None) => {}
                    ("client_max_window_bits", Some(bits)) => {
                        window(bits)?;
                    }
                    ("server_max_window_bits", Some(bits)) => {
                        window_bits = window(bits)?;
                        if window_bits < 9 {
                            return None;
                        }
                    }
                    _ => return None,
                }
                seen.push(name);
            }
            Some(Deflate { window_bits })
        })
}

/// A window size parameter: 8 to 15, decimal digits only.
fn window(bits: &str) -> Option<u8> {
    if bits.is_empty() || !bits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    bits.parse().ok().filter(|bits| (8..=15).contains(bits))
}

thread_local! {
    /// One compressor per window size per thread, reset for each message.
    static COMPRESSORS: RefCell<[Option<Compress>; 7]> = const { RefCell::new([None, None, None, None, None, None, None]) };
}

/// `payload` compressed as one permessage-deflate message with a `window_bits` window (9-15).
pub fn compress(payload: &[u8], window_bits: u8) -> Vec<u8> {
    let bits = window_bits.clamp(9, 15);
    COMPRESSORS.with(|compressors| {
        let mut compressors = compressors.borrow_mut();
        let compressor = compressors[usize::from(bits - 9)].get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::fast(), false, bits)
        });
        compressor.reset();
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        let mut input = payload;
        loop {
            let before = compressor.total_in();
            if compressor
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .is_err()
            {
                break;
            }
            input = &input[(compressor.total_in() - before) as usize..];
            // The sync flush is complete once it leaves room in the buffer.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(256));
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if out.is_empty() {
            // An empty message compresses to one empty block (RFC 7692 7.2.3.6).
            out.push(0x00);
        }
        out
    })
}

/// Inflating went past the limit, or the bytes are not a deflate stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    TooLarge,
    Corrupt,
}

/// One client message inflated, at most `max` bytes (a larger one, a zip bomb among them, is
/// refused as soon as it passes the limit).
pub fn inflate(compressed: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    let mut inflater = Decompress::new(false);
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    for part in [compressed, &TAIL[..]] {
        let mut input = part;
        loop {
            let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
            let status = inflater
                .decompress(input, &mut chunk, FlushDecompress::None)
                .map_err(|_| InflateError::Corrupt)?;
            let used = (inflater.total_in() - before_in) as usize;
            let produced = (inflater.total_out() - before_out) as usize;
            input = &input[used..];
            if out.len() + produced > max {
                return Err(InflateError::TooLarge);
            }
            out.extend_from_slice(&chunk[..produced]);
            if status == Status::StreamEnd {
                return Ok(out);
            }
            if input.is_empty() && produced < chunk.len() {
                break;
            }
            if used == 0 && produced == 0 {
                return Err(InflateError::Corrupt);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_are_chosen_declined_or_narrowed_as_the_rfc_says() {
        let ok = |offer: &str| choose_offer([offer]);
        assert_eq!(
            ok("permessage-deflate; client_max_window_bits"),
            Some(Deflate { window_bits: 15 })
        );
        assert_eq!(
            ok("permessage-deflate; server_no_context_takeover; server_max_window_bits=10"),
            Some(Deflate { window_bits: 10 })
        );
        // Too small a window for zlib, then a second offer that fits.
        assert_eq!(
            ok("permessage-deflate; server_max_window_bits=8, permessage-deflate"),
            Some(Deflate { window_bits: 15 })
        );
        for declined in [
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=0x9",
            "permessage-deflate; mystery",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        ] {
            assert_eq!(ok(declined), None, "{declined}");
        }
        assert_eq!(
            Deflate { window_bits: 12 }.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12"
        );
    }

    #[test]
    fn a_message_comes_back_as_it_was_at_every_window() {
        let text = br#"{"id":42,"status":"paid","items":[{"sku":"A-1","qty":2}]}"#.repeat(40);
        for bits in 9..=15 {
            let compressed = compress(&text, bits);
            assert!(
                compressed.len() < text.len() / 4,
                "{bits}: {}",
                compressed.len()
            );
            assert!(!compressed.ends_with(&TAIL));
            assert_eq!(inflate(&compressed, 1 << 20).expect("inflates"), text);
        }
        assert_eq!(compress(b"", 15), vec![0x00]);
        assert_eq!(inflate(&[0x00], 10).expect("empty"), b"");
    }

    #[test]
    fn a_zip_bomb_stops_at_the_limit_and_garbage_is_an_error() {
        let bomb = compress(&vec![0u8; 10 << 20], 15);
        assert!(bomb.len() < (10 << 20) / 100, "{}", bomb.len());
        assert_eq!(inflate(&bomb, 1 << 20), Err(InflateError::TooLarge));
        assert_eq!(inflate(&bomb, 10 << 20).map(|v| v.len()), Ok(10 << 20));
        assert_eq!(inflate(&[0xff; 16], 1024), Err(InflateError::Corrupt));
    }
}
