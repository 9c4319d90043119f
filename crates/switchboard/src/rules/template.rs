//! Templates in room names and payloads: `{socket.id}`, `{arg}`, `{arg.room}`, `{args.1.x}`,
//! `{auth.token}`, `{query.deviceId}`, `{data.userId}`, `{body.order}`, `{event}`, `{now}`,
//! `{now.iso}`, `{online.userId}`; `{name|fallback}` gives a text when the value is missing;
//! `{{` and `}}` are literal braces.
//!
//! Templates are compiled when the config loads, so a typo is a config error, not a runtime
//! surprise. A payload string that is exactly one placeholder keeps the value's JSON type (an
//! object stays an object); placeholders inside text interpolate strings and numbers only.
//! Substitution is one pass: a value a client sends is never read as a template itself, and it
//! becomes exactly one room name, so it cannot reach into other rooms.

use crate::error_code::ErrorCode;
use serde_json::{Map, Value};

/// Where a template is used decides which values it may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A client event: socket, event, args, auth, query, data, now, online.
    Event,
    /// On connect / on disconnect: socket, auth, query, data, now, online.
    Connection,
    /// An HTTP route: body, query (of the request), now, online.
    Route,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Key(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Source {
    SocketId,
    Event,
    /// The event's arguments; the first segment picks one (`arg` is `args.0`).
    Args,
    Auth,
    Query,
    Data,
    Body,
    Now,
    NowIso,
    /// The distinct values of one socket-data key across the namespace's sockets.
    Online(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Placeholder {
    source: Source,
    path: Vec<Segment>,
    fallback: Option<String>,
    /// As written, for error messages.
    text: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Hole(Placeholder),
}

/// A compiled text template (room names, event names in text, interpolated strings).
#[derive(Debug, Clone, PartialEq)]
pub struct TextTemplate {
    pieces: Vec<Piece>,
}

/// A compiled payload template.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueTemplate {
    Literal(Value),
    Whole(TextTemplate),
    Text(TextTemplate),
    Array(Vec<ValueTemplate>),
    Object(Vec<(String, ValueTemplate)>),
}

/// A client value that does not fit: the client gets this as its error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    pub code: &'static str,
    pub message: String,
}

impl ValueError {
    fn missing(placeholder: &Placeholder) -> Self {
        Self {
            code: ErrorCode::MissingField.as_str(),
            message: format!("{} is missing", describe(placeholder)),
        }
    }

    fn wrong_type(placeholder: &Placeholder, expected: &str) -> Self {
        Self {
            code: ErrorCode::InvalidType.as_str(),
            message: format!("{} must be {expected}", describe(placeholder)),
        }
    }
}

fn describe(placeholder: &Placeholder) -> String {
    let path: Vec<&str> = placeholder
        .path
        .iter()
        .map(|Segment::Key(k)| k.as_str())
        .collect();
    match placeholder.source {
        Source::Args if path.len() == 1 => {
            if path[0] == "0" {
                "the event's argument".to_owned()
            } else {
                format!("argument {}", path[0])
            }
        }
        Source::Args if path.first().is_some_and(|p| *p == "0") => {
            format!("field `{}` of the event's argument", path[1..].join("."))
        }
        Source::Body if path.is_empty() => "the request body".to_owned(),
        Source::Body => format!("body field `{}`", path.join(".")),
        _ => format!("`{}`", placeholder.text),
    }
}

/// Computes `{online.<key>}`: the distinct values of a socket-data key in the namespace.
pub type OnlineValues<'a> = &'a dyn Fn(&str) -> Vec<Value>;

/// What templates read from.
#[derive(Default)]
pub struct Context<'a> {
    pub socket_id: Option<&'a str>,
    pub event: Option<&'a str>,
    pub args: &'a [Value],
    pub auth: Option<&'a Map<String, Value>>,
    pub query: &'a [(String, String)],
    pub data: Option<&'a Map<String, Value>>,
    pub body: Option<&'a Value>,
    /// Computes `{online.<key>}`.
    pub online: Option<OnlineValues<'a>>,
}

fn parse_placeholder(text: &str, scope: Scope) -> Result<Placeholder, String> {
    let (path_text, fallback) = match text.split_once('|') {
        Some((path, fallback)) => (path.trim(), Some(fallback.to_owned())),
        None => (text.trim(), None),
    };
    let mut parts = path_text.split('.');
    let root = parts.next().unwrap_or("");
    let rest: Vec<String> = parts.map(str::to_owned).collect();
    if rest.iter().any(String::is_empty) {
        return Err(format!("{{{text}}}: empty path segment"));
    }
    let allowed = |ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(format!("{{{text}}} is not available here ({scope:?})"))
        }
    };
    let in_socket = scope != Scope::Route;
    let (source, path) = match root {
        "socket" => {
            allowed(in_socket)?;
            if rest != ["id"] {
                return Err(format!("{{{text}}}: the socket only has `socket.id`"));
            }
            (Source::SocketId, Vec::new())
        }
        "event" if rest.is_empty() => {
            allowed(scope == Scope::Event)?;
            (Source::Event, Vec::new())
        }
        "arg" => {
            allowed(scope == Scope::Event)?;
            let mut path = vec!["0".to_owned()];
            path.extend(rest);
            (Source::Args, path)
        }
        "args" => {
            allowed(scope == Scope::Event)?;
            if let Some(index) = rest.first()
                && index.parse::<usize>().is_err()
            {
                return Err(format!("{{{text}}}: args.<index> needs a number"));
            }
            (Source::Args, rest)
        }
        "auth" => {
            allowed(in_socket)?;
            (Source::Auth, rest)
        }
        "data" => {
            allowed(in_socket)?;
            (Source::Data, rest)
        }
        "query" => (Source::Query, rest),
        "body" => {
            allowed(scope == Scope::Route)?;
            (Source::Body, rest)
        }
        "now" if rest.is_empty() => (Source::Now, Vec::new()),
        "now" if rest == ["iso"] => (Source::NowIso, Vec::new()),
        "online" if rest.len() == 1 => (Source::Online(rest[0].clone()), Vec::new()),
        _ => {
            return Err(format!(
                "{{{text}}}: unknown placeholder (socket.id, event, arg, args, auth, query, \
                 data, body, now, now.iso, online.<key>)"
            ));
        }
    };
    if source == Source::Query && path.len() != 1 {
        return Err(format!("{{{text}}}: write query.<name>"));
    }
    Ok(Placeholder {
        source,
        path: path.into_iter().map(Segment::Key).collect(),
        fallback,
        text: text.to_owned(),
    })
}

impl TextTemplate {
    /// Adds the keys this template lists as `{online.<key>}` to `keys`.
    pub fn online_keys(&self, keys: &mut Vec<String>) {
        for piece in &self.pieces {
            if let Piece::Hole(Placeholder {
                source: Source::Online(key),
                ..
            }) = piece
                && !keys.contains(key)
            {
                keys.push(key.clone());
            }
        }
    }

    pub fn compile(text: &str, scope: Scope) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let Some(end) = text[at..].find('}') else {
                        return Err(format!("{text:?}: '{{' without a closing '}}'"));
                    };
                    let inner = &text[at + 1..at + end];
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Hole(parse_placeholder(inner, scope)?));
                    while chars.peek().is_some_and(|&(i, _)| i <= at + end) {
                        chars.next();
                    }
                }
                '}' => return Err(format!("{text:?}: '}}' without an opening '{{'")),
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Self { pieces })
    }

    /// True when the template reads nothing a client controls.
    pub fn is_static(&self) -> bool {
        self.pieces.iter().all(|piece| match piece {
            Piece::Text(_) => true,
            Piece::Hole(p) => matches!(p.source, Source::SocketId | Source::Now | Source::NowIso),
        })
    }

    fn whole_placeholder(&self) -> Option<&Placeholder> {
        match self.pieces.as_slice() {
            [Piece::Hole(placeholder)] => Some(placeholder),
            _ => None,
        }
    }

    /// Renders to a string; values must be strings or numbers.
    pub fn render(&self, context: &Context) -> Result<String, ValueError> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Hole(placeholder) => match resolve(placeholder, context)? {
                    Value::String(s) => out.push_str(&s),
                    Value::Number(n) => out.push_str(&n.to_string()),
                    _ => return Err(ValueError::wrong_type(placeholder, "a string or a number")),
                },
            }
        }
        Ok(out)
    }
}

fn lookup<'v>(mut value: &'v Value, path: &[Segment]) -> Option<&'v Value> {
    for Segment::Key(key) in path {
        value = match value {
            Value::Object(map) => map.get(key)?,
            Value::Array(items) => items.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

fn resolve(placeholder: &Placeholder, context: &Context) -> Result<Value, ValueError> {
    let found = match &placeholder.source {
        Source::SocketId => context.socket_id.map(|id| Value::String(id.to_owned())),
        Source::Event => context.event.map(|e| Value::String(e.to_owned())),
        Source::Args => {
            if placeholder.path.is_empty() {
                Some(Value::Array(context.args.to_vec()))
            } else {
                let Segment::Key(index) = &placeholder.path[0];
                index
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| context.args.get(i))
                    .and_then(|arg| lookup(arg, &placeholder.path[1..]))
                    .cloned()
            }
        }
        Source::Auth => context
            .auth
            .and_then(|auth| lookup_map(auth, &placeholder.path)),
        Source::Data => context
            .data
            .and_then(|data| lookup_map(data, &placeholder.path)),
        Source::Query => {
            let Segment::Key(name) = &placeholder.path[0];
            context
                .query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| Value::String(v.clone()))
        }
        Source::Body => context
            .body
            .and_then(|body| lookup(body, &placeholder.path))
            .cloned(),
        Source::Now => Some(Value::from(crate::clock::now_millis())),
        Source::NowIso => Some(Value::String(crate::clock::iso_now())),
        Source::Online(key) => context.online.map(|online| Value::Array(online(key))),
    };
    match found {
        Some(Value::Null) | None => match &placeholder.fallback {
            Some(fallback) => Ok(Value::String(fallback.clone())),
            None => Err(ValueError::missing(placeholder)),
        },
        Some(value) => Ok(value),
    }
}

fn lookup_map(map: &Map<String, Value>, path: &[Segment]) -> Option<Value> {
    match path.split_first() {
        None => Some(Value::Object(map.clone())),
        Some((Segment::Key(first), rest)) => map.get(first).and_then(|v| lookup(v, rest)).cloned(),
    }
}

impl ValueTemplate {
    /// Adds the keys this template lists as `{online.<key>}` to `keys`.
    pub fn online_keys(&self, keys: &mut Vec<String>) {
        match self {
            Self::Literal(_) => {}
            Self::Whole(text) | Self::Text(text) => text.online_keys(keys),
            Self::Array(items) => items.iter().for_each(|item| item.online_keys(keys)),
            Self::Object(fields) => fields.iter().for_each(|(_, field)| field.online_keys(keys)),
        }
    }

    pub fn compile(value: &Value, scope: Scope) -> Result<Self, String> {
        Ok(match value {
            Value::String(text) => {
                let template = TextTemplate::compile(text, scope)?;
                if template.whole_placeholder().is_some() {
                    Self::Whole(template)
                } else if template.pieces.iter().any(|p| matches!(p, Piece::Hole(_))) {
                    Self::Text(template)
                } else {
                    Self::Literal(Value::String(
                        template
                            .pieces
                            .into_iter()
                            .map(|p| match p {
                                Piece::Text(t) => t,
                                Piece::Hole(_) => String::new(),
                            })
                            .collect(),
                    ))
                }
            }
            Value::Array(items) => Self::Array(
                items
                    .iter()
                    .map(|item| Self::compile(item, scope))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Self::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), Self::compile(v, scope)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => Self::Literal(other.clone()),
        })
    }

    pub fn render(&self, context: &Context) -> Result<Value, ValueError> {
        Ok(match self {
            Self::Literal(value) => value.clone(),
            Self::Whole(template) => match template.whole_placeholder() {
                Some(placeholder) => resolve(placeholder, context)?,
                None => Value::String(template.render(context)?),
            },
            Self::Text(template) => Value::String(template.render(context)?),
            Self::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| item.render(context))
                    .collect::<Result<_, _>>()?,
            ),
            Self::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.render(context)?)))
                    .collect::<Result<_, ValueError>>()?,
            ),
        })
    }
}

/// Resolves the TypeScript type of an event argument path (`["0", "room"]` for `{arg.room}`).
pub type ArgTypes<'a> = &'a dyn Fn(&[String]) -> Option<String>;

impl Placeholder {
    /// The TypeScript type of what this placeholder renders (`switchboard types`).
    fn ts_type(&self, args: ArgTypes) -> String {
        let found = match &self.source {
            Source::SocketId | Source::Event | Source::NowIso | Source::Query => "string".into(),
            Source::Now => "number".into(),
            Source::Online(_) => "Array<string | number>".into(),
            Source::Args => {
                let path: Vec<String> = self
                    .path
                    .iter()
                    .map(|Segment::Key(key)| key.clone())
                    .collect();
                if path.is_empty() {
                    "unknown[]".into()
                } else {
                    args(&path).unwrap_or_else(|| "unknown".into())
                }
            }
            Source::Auth | Source::Data | Source::Body => "unknown".into(),
        };
        match &self.fallback {
            Some(_) if found != "string" && found != "unknown" => format!("{found} | string"),
            _ => found,
        }
    }
}

impl TextTemplate {
    /// `string`, or the one placeholder's type when the template is exactly one.
    pub fn ts_type(&self, args: ArgTypes) -> String {
        match self.whole_placeholder() {
            Some(placeholder) => placeholder.ts_type(args),
            None => "string".into(),
        }
    }
}

impl ValueTemplate {
    /// The TypeScript type of the value this template renders.
    pub fn ts_type(&self, args: ArgTypes) -> String {
        match self {
            Self::Literal(value) => literal_ts_type(value),
            Self::Whole(template) => template.ts_type(args),
            Self::Text(_) => "string".into(),
            Self::Array(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(|item| item.ts_type(args))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Self::Object(fields) => ts_object(
                fields
                    .iter()
                    .map(|(key, field)| (key.as_str(), field.ts_type(args), false)),
            ),
        }
    }
}

/// A JSON literal's type: strings keep their value (`"ok"`), the rest widen.
fn literal_ts_type(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => "boolean".into(),
        Value::Number(_) => "number".into(),
        Value::String(text) => serde_json::to_string(text).unwrap_or_else(|_| "string".into()),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(literal_ts_type)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(map) => ts_object(
            map.iter()
                .map(|(key, value)| (key.as_str(), literal_ts_type(value), false)),
        ),
    }
}

/// `{ "key": T; "other"?: U }` (keys always quoted: any text is a valid key).
pub fn ts_object<'k>(fields: impl Iterator<Item = (&'k str, String, bool)>) -> String {
    let fields: Vec<String> = fields
        .map(|(key, ty, optional)| {
            let key = serde_json::to_string(key).unwrap_or_default();
            format!("{key}{}: {ty}", if optional { "?" } else { "" })
        })
        .collect();
    if fields.is_empty() {
        "Record<string, never>".into()
    } else {
        format!("{{ {} }}", fields.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event_context<'a>(args: &'a [Value], auth: &'a Map<String, Value>) -> Context<'a> {
        Context {
            socket_id: Some("sock1"),
            event: Some("join-room"),
            args,
            auth: Some(auth),
            ..Context::default()
        }
    }

    #[test]
    fn text_templates_interpolate_strings_and_numbers() {
        let args = [json!({"deviceId": 42, "name": "a,b"})];
        let auth = Map::new();
        let context = event_context(&args, &auth);
        let room = TextTemplate::compile("device-{arg.deviceId}", Scope::Event).unwrap();
        assert_eq!(room.render(&context).unwrap(), "device-42");
        let name = TextTemplate::compile("{arg.name}", Scope::Event).unwrap();
        assert_eq!(
            name.render(&context).unwrap(),
            "a,b",
            "one value, one room name"
        );
        let braces = TextTemplate::compile("{{literal}} {socket.id}", Scope::Event).unwrap();
        assert_eq!(braces.render(&context).unwrap(), "{literal} sock1");
    }

    #[test]
    fn client_values_are_checked() {
        let args = [json!({"room": {"nested": true}})];
        let auth = Map::new();
        let context = event_context(&args, &auth);
        let room = TextTemplate::compile("{arg.room}", Scope::Event).unwrap();
        assert_eq!(room.render(&context).unwrap_err().code, "invalid_type");
        let missing = TextTemplate::compile("{arg.other}", Scope::Event).unwrap();
        let error = missing.render(&context).unwrap_err();
        assert_eq!(error.code, "missing_field");
        assert!(error.message.contains("other"), "{}", error.message);
        let fallback = TextTemplate::compile("{arg.other|lobby}", Scope::Event).unwrap();
        assert_eq!(fallback.render(&context).unwrap(), "lobby");
    }

    #[test]
    fn whole_placeholders_keep_json_types() {
        let args = [json!({"order": {"id": 7, "items": [1, 2]}})];
        let auth = Map::new();
        let context = event_context(&args, &auth);
        let payload = ValueTemplate::compile(
            &json!({"order": "{arg.order}", "from": "{socket.id}", "label": "order {arg.order.id}"}),
            Scope::Event,
        )
        .unwrap();
        assert_eq!(
            payload.render(&context).unwrap(),
            json!({"order": {"id": 7, "items": [1, 2]}, "from": "sock1", "label": "order 7"})
        );
    }

    #[test]
    fn compile_errors_name_the_problem() {
        assert!(
            TextTemplate::compile("{argz}", Scope::Event)
                .unwrap_err()
                .contains("unknown placeholder")
        );
        assert!(
            TextTemplate::compile("{body.x}", Scope::Event)
                .unwrap_err()
                .contains("not available")
        );
        assert!(
            TextTemplate::compile("{arg.x}", Scope::Route)
                .unwrap_err()
                .contains("not available")
        );
        assert!(TextTemplate::compile("room-{arg", Scope::Event).is_err());
        assert!(TextTemplate::compile("{socket.name}", Scope::Event).is_err());
    }
}
