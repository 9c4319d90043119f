//! The Redis wire format (RESP2) as the sharded subscriber needs it, with no I/O: commands
//! encoded as arrays of bulk strings, and replies parsed from a buffer as they arrive (an
//! `smessage`, a `ssubscribe` or `sunsubscribe` confirmation, an error such as `MOVED`). The
//! subscriber's connections speak it directly because a subscribed connection's replies are
//! pushes that come unasked (Redis unsubscribes a client from a slot that moved away).

/// Nested arrays deeper than this are refused (Redis sends two levels at most here).
const MAX_DEPTH: usize = 8;
/// A bulk string larger than this is refused (Redis's own limit).
const MAX_BULK: usize = 512 * 1024 * 1024;
/// An array with more elements than this is refused.
const MAX_ELEMENTS: usize = 1 << 20;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The bytes of a bulk or simple string.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bulk(Some(bytes)) => Some(bytes),
            Reply::Simple(text) => Some(text.as_bytes()),
            _ => None,
        }
    }

    /// The text of a bulk or simple string.
    pub fn text(&self) -> Option<&str> {
        self.bytes().and_then(|b| std::str::from_utf8(b).ok())
    }
}

/// The bytes are not RESP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Redis reply: {0}")]
pub struct RespError(&'static str);

/// A command as Redis reads it.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(16 + args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Parses one reply from the start of `buffer`: the reply and how many bytes it took, or
/// `None` when the buffer does not hold all of it yet.
pub fn parse(buffer: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    parse_at(buffer, 0, 0)
}

fn parse_at(buffer: &[u8], at: usize, depth: usize) -> Result<Option<(Reply, usize)>, RespError> {
    if depth > MAX_DEPTH {
        return Err(RespError("arrays nested too deep"));
    }
    let Some((line, after)) = line(buffer, at)? else {
        return Ok(None);
    };
    let (&kind, rest) = line.split_first().ok_or(RespError("an empty line"))?;
    let text = || std::str::from_utf8(rest).map_err(|_| RespError("a line is not UTF-8"));
    let length = || -> Result<Option<usize>, RespError> {
        let n: i64 = text()?
            .parse()
            .map_err(|_| RespError("a length is not a number"))?;
        match n {
            -1 => Ok(None),
            n if n < 0 => Err(RespError("a negative length")),
            n => Ok(Some(n as usize)),
        }
    };
    match kind {
        b'+' => Ok(Some((Reply::Simple(text()?.to_owned()), after))),
        b'-' => Ok(Some((Reply::Error(text()?.to_owned()), after))),
        b':' => {
            let n = text()?.parse().map_err(|_| RespError("not an integer"))?;
            Ok(Some((Reply::Integer(n), after)))
        }
        b'$' => {
            let Some(len) = length()? else {
                return Ok(Some((Reply::Bulk(None), after)));
            };
            if len > MAX_BULK {
                return Err(RespError("a bulk string too large"));
            }
            let end = after + len;
            if buffer.len() < end + 2 {
                return Ok(None);
            }
            if &buffer[end..end + 2] != b"\r\n" {
                return Err(RespError("a bulk string not ended by CRLF"));
            }
            Ok(Some((
                Reply::Bulk(Some(buffer[after..end].to_vec())),
                end + 2,
            )))
        }
        b'*' => {
            let Some(count) = length()? else {
                return Ok(Some((Reply::Array(None), after)));
            };
            if count > MAX_ELEMENTS {
                return Err(RespError("an array too long"));
            }
            let mut items = Vec::with_capacity(count.min(64));
            let mut at = after;
            for _ in 0..count {
                let Some((item, next)) = parse_at(buffer, at, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                at = next;
            }
            Ok(Some((Reply::Array(Some(items)), at)))
        }
        _ => Err(RespError("an unknown reply type")),
    }
}

/// The line starting at `at` (without its CRLF) and where the next begins.
fn line(buffer: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, RespError> {
    let rest = buffer.get(at..).unwrap_or_default();
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(end) => Ok(Some((&rest[..end], at + end + 2))),
        // A line (type and length) is short; a long one without its end is not RESP.
        None if rest.len() > 64 && rest.first() != Some(&b'-') && rest.first() != Some(&b'+') => {
            Err(RespError("a line without its end"))
        }
        None => Ok(None),
    }
}

/// What a subscribed connection receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    /// A message on a channel.
    Message { channel: String, payload: Vec<u8> },
    /// A channel is subscribed.
    Subscribed(String),
    /// A channel is no longer subscribed: asked for, or because its slot moved elsewhere.
    Unsubscribed(String),
    /// An error answering a command (`MOVED <slot> <host>:<port>`, ...).
    Error(String),
    /// Anything else (a PONG).
    Other,
}

impl Push {
    pub fn from_reply(reply: Reply) -> Push {
        let items = match reply {
            Reply::Error(error) => return Push::Error(error),
            Reply::Array(Some(items)) => items,
            _ => return Push::Other,
        };
        let kind = items.first().and_then(Reply::text).unwrap_or_default();
        let channel = || {
            items
                .get(1)
                .and_then(Reply::text)
                .unwrap_or_default()
                .to_owned()
        };
        match kind.to_ascii_lowercase().as_str() {
            "smessage" | "message" => match items.get(2).and_then(Reply::bytes) {
                Some(payload) => Push::Message {
                    channel: channel(),
                    payload: payload.to_vec(),
                },
                None => Push::Other,
            },
            "ssubscribe" | "subscribe" => Push::Subscribed(channel()),
            "sunsubscribe" | "unsubscribe" => Push::Unsubscribed(channel()),
            _ => Push::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            encode_command(&["SSUBSCRIBE", "a#/#"]),
            b"*2\r\n$10\r\nSSUBSCRIBE\r\n$4\r\na#/#\r\n".to_vec()
        );
    }

    #[test]
    fn a_message_is_read_once_all_of_it_is_there() {
        let wire = b"*3\r\n$8\r\nsmessage\r\n$4\r\na#/#\r\n$5\r\nhe\r\no\r\n+OK\r\n";
        for cut in 0..wire.len() - 5 {
            assert_eq!(parse(&wire[..cut]), Ok(None), "cut at {cut}");
        }
        let (reply, used) = parse(wire).unwrap().unwrap();
        assert_eq!(used, wire.len() - 5);
        assert_eq!(
            Push::from_reply(reply),
            Push::Message {
                channel: "a#/#".into(),
                payload: b"he\r\no".to_vec()
            }
        );
        assert_eq!(
            parse(&wire[used..]),
            Ok(Some((Reply::Simple("OK".into()), 5)))
        );
    }

    #[test]
    fn confirmations_and_errors() {
        let wire = b"*3\r\n$12\r\nsunsubscribe\r\n$1\r\nx\r\n:0\r\n";
        let (reply, _) = parse(wire).unwrap().unwrap();
        assert_eq!(Push::from_reply(reply), Push::Unsubscribed("x".into()));
        let wire = b"-MOVED 3999 127.0.0.1:7001\r\n";
        let (reply, _) = parse(wire).unwrap().unwrap();
        assert_eq!(
            Push::from_reply(reply),
            Push::Error("MOVED 3999 127.0.0.1:7001".into())
        );
        assert_eq!(parse(b"*-1\r\n").unwrap().unwrap().0, Reply::Array(None));
    }

    #[test]
    fn what_is_not_resp_is_refused() {
        assert!(parse(b"?what\r\n").is_err());
        assert!(parse(b"$-5\r\n").is_err());
        assert!(parse(b"$3\r\nabcde\r\n").is_err());
        assert!(parse(b"$99999999999\r\n").is_err());
        assert!(parse(&[b'$'; 100]).is_err());
        let deep = "*1\r\n".repeat(20);
        assert!(parse(deep.as_bytes()).is_err());
    }
}
