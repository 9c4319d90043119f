//! Checks the configured rules and compiles their templates, once, at load. Every error names
//! where it is (`namespaces[0].events[2].actions[1]`) so `check-config` can point at it.

use std::collections::HashMap;

use super::template::{Scope, TextTemplate, ValueTemplate};
use crate::config::rules::{ActionSpec, ArgSpec, EmitSpec, EventRule, RouteSpec, TargetKind};
use crate::config::{Config, NamespaceConfig, RoomPermission};
use crate::protocol::socket::RESERVED_EVENTS;

/// What an `emit` sends.
#[derive(Debug, Clone)]
pub enum Payload {
    None,
    Data(ValueTemplate),
    Args(Vec<ValueTemplate>),
}

#[derive(Debug, Clone)]
pub enum Target {
    Sender,
    All,
    Others,
    Room(TextTemplate),
    RoomOthers(TextTemplate),
}

#[derive(Debug, Clone)]
pub enum Action {
    Join(TextTemplate),
    Leave(TextTemplate),
    Emit {
        event: String,
        target: Target,
        payload: Payload,
        volatile: bool,
    },
    Ack(ValueTemplate),
    Set(Vec<(String, ValueTemplate)>),
}

/// JSON types an argument may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Number,
    Boolean,
    Object,
    Array,
    Any,
}

impl Kind {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "string" => Self::String,
            "number" => Self::Number,
            "boolean" => Self::Boolean,
            "object" => Self::Object,
            "array" => Self::Array,
            "any" => Self::Any,
            _ => return None,
        })
    }

    pub fn matches(self, value: &serde_json::Value) -> bool {
        use serde_json::Value;
        matches!(
            (self, value),
            (Self::Any, _)
                | (Self::String, Value::String(_))
                | (Self::Number, Value::Number(_))
                | (Self::Boolean, Value::Bool(_))
                | (Self::Object, Value::Object(_))
                | (Self::Array, Value::Array(_))
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::String => "a string",
            Self::Number => "a number",
            Self::Boolean => "a boolean",
            Self::Object => "an object",
            Self::Array => "an array",
            Self::Any => "anything",
        }
    }
}

/// A checked type: alternatives, and whether it may be absent.
#[derive(Debug, Clone)]
pub struct TypeCheck {
    pub kinds: Vec<Kind>,
    pub optional: bool,
}

fn type_check(key: &str, text: &str) -> Result<TypeCheck, RuleError> {
    let (text, optional) = match text.strip_suffix('?') {
        Some(text) => (text, true),
        None => (text, false),
    };
    let kinds = text
        .split('|')
        .map(|k| Kind::parse(k.trim()))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            error(
                key,
                format!("{text:?}: types are string, number, boolean, object, array, any (a|b for either, a? for optional)"),
                Some(text),
            )
        })?;
    Ok(TypeCheck { kinds, optional })
}

/// The checked shape of one argument.
#[derive(Debug, Clone)]
pub enum ArgCheck {
    Type(TypeCheck),
    Fields(Vec<(String, TypeCheck)>),
}

/// What a client event does: argument checks, then actions.
#[derive(Debug, Clone, Default)]
pub struct EventActions {
    pub expect: Vec<ArgCheck>,
    pub actions: Vec<Action>,
}

/// A room-name pattern (a template over socket data) and the socket data it requires.
#[derive(Debug, Clone)]
pub struct RoomRule {
    pub pattern: TextTemplate,
    pub when: Vec<(String, Vec<serde_json::Value>)>,
}

/// The rules of one namespace.
#[derive(Debug, Clone, Default)]
pub struct NamespaceRules {
    /// Room-name patterns a client may join or address with its own values; None: any.
    pub room_patterns: Option<Vec<RoomRule>>,
    pub on_connect: Vec<Action>,
    pub events: HashMap<String, EventActions>,
    pub on_disconnect: Vec<Action>,
}

impl Action {
    fn online_keys(&self, keys: &mut Vec<String>) {
        match self {
            Self::Join(room) | Self::Leave(room) => room.online_keys(keys),
            Self::Emit {
                target, payload, ..
            } => {
                if let Target::Room(room) | Target::RoomOthers(room) = target {
                    room.online_keys(keys);
                }
                match payload {
                    Payload::None => {}
                    Payload::Data(value) => value.online_keys(keys),
                    Payload::Args(values) => values.iter().for_each(|v| v.online_keys(keys)),
                }
            }
            Self::Ack(value) => value.online_keys(keys),
            Self::Set(fields) => fields.iter().for_each(|(_, value)| value.online_keys(keys)),
        }
    }
}

impl NamespaceRules {
    /// The socket-data keys these rules list as `{online.<key>}` (room patterns are rendered
    /// with no lists, so only actions count).
    pub fn online_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let actions = self
            .on_connect
            .iter()
            .chain(self.events.values().flat_map(|event| &event.actions))
            .chain(&self.on_disconnect);
        for action in actions {
            action.online_keys(&mut keys);
        }
        keys
    }

    pub fn is_empty(&self) -> bool {
        self.room_patterns.is_none()
            && self.on_connect.is_empty()
            && self.events.is_empty()
            && self.on_disconnect.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct CompiledRoute {
    pub path: String,
    pub method: http::Method,
    pub namespace: String,
    pub event: String,
    pub rooms: Vec<TextTemplate>,
    pub payload: ValueTemplate,
    pub require: Vec<String>,
    pub public: bool,
    pub volatile: bool,
}

impl CompiledRoute {
    /// The socket-data keys this route lists as `{online.<key>}`.
    pub fn online_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for room in &self.rooms {
            room.online_keys(&mut keys);
        }
        self.payload.online_keys(&mut keys);
        keys
    }
}

/// A rule problem: the key (dotted path) and what is wrong.
#[derive(Debug, Clone)]
pub struct RuleError {
    pub key: String,
    pub message: String,
    /// A text from the rule that helps find its line in the file.
    pub needle: Option<String>,
}

fn error(key: &str, message: impl Into<String>, needle: Option<&str>) -> RuleError {
    RuleError {
        key: key.to_owned(),
        message: message.into(),
        needle: needle.map(str::to_owned),
    }
}

fn text(key: &str, template: &str, scope: Scope) -> Result<TextTemplate, RuleError> {
    TextTemplate::compile(template, scope).map_err(|m| error(key, m, Some(template)))
}

fn value(
    key: &str,
    template: &serde_json::Value,
    scope: Scope,
) -> Result<ValueTemplate, RuleError> {
    ValueTemplate::compile(template, scope).map_err(|m| error(key, m, template.as_str()))
}

fn check_event_name(key: &str, event: &str) -> Result<(), RuleError> {
    if event.is_empty() || RESERVED_EVENTS.contains(&event) {
        return Err(error(
            key,
            format!("{event:?} cannot be emitted (empty or reserved by Socket.IO)"),
            Some(event),
        ));
    }
    Ok(())
}

fn payload(
    key: &str,
    data: &Option<serde_json::Value>,
    args: &Option<Vec<serde_json::Value>>,
    scope: Scope,
) -> Result<Payload, RuleError> {
    match (data, args) {
        (Some(_), Some(_)) => Err(error(key, "give data or args, not both", None)),
        (Some(data), None) => Ok(Payload::Data(value(&format!("{key}.data"), data, scope)?)),
        (None, Some(args)) => Ok(Payload::Args(
            args.iter()
                .enumerate()
                .map(|(i, a)| value(&format!("{key}.args[{i}]"), a, scope))
                .collect::<Result<_, _>>()?,
        )),
        (None, None) => Ok(Payload::None),
    }
}

fn target(
    key: &str,
    to: Option<TargetKind>,
    room: &Option<String>,
    default: TargetKind,
    scope: Scope,
) -> Result<Target, RuleError> {
    let to = to.unwrap_or(if room.is_some() {
        TargetKind::Room
    } else {
        default
    });
    let room_template = |room: &Option<String>| match room {
        Some(room) => text(&format!("{key}.room"), room, scope),
        None => Err(error(key, "`to = \"room\"` needs `room = \"...\"`", None)),
    };
    Ok(match to {
        TargetKind::Sender => Target::Sender,
        TargetKind::All => Target::All,
        TargetKind::Others => Target::Others,
        TargetKind::Room => Target::Room(room_template(room)?),
        TargetKind::RoomOthers => Target::RoomOthers(room_template(room)?),
    })
}

fn emit(
    key: &str,
    spec: &EmitSpec,
    default: TargetKind,
    scope: Scope,
) -> Result<Action, RuleError> {
    check_event_name(&format!("{key}.event"), &spec.event)?;
    Ok(Action::Emit {
        event: spec.event.clone(),
        target: target(key, spec.to, &spec.room, default, scope)?,
        payload: payload(key, &spec.data, &spec.args, scope)?,
        volatile: spec.volatile,
    })
}

fn set(
    key: &str,
    fields: &serde_json::Map<String, serde_json::Value>,
    scope: Scope,
) -> Result<Action, RuleError> {
    Ok(Action::Set(
        fields
            .iter()
            .map(|(k, v)| Ok((k.clone(), value(&format!("{key}.set.{k}"), v, scope)?)))
            .collect::<Result<_, RuleError>>()?,
    ))
}

fn action(key: &str, spec: &ActionSpec) -> Result<Action, RuleError> {
    let scope = Scope::Event;
    let verbs = [
        spec.join.is_some(),
        spec.leave.is_some(),
        spec.emit.is_some(),
        spec.ack.is_some(),
        spec.set.is_some(),
    ];
    if verbs.iter().filter(|v| **v).count() != 1 {
        return Err(error(
            key,
            "each action has exactly one of join, leave, emit, ack, set",
            None,
        ));
    }
    let emit_only =
        spec.to.is_some() || spec.room.is_some() || spec.data.is_some() || spec.args.is_some();
    if spec.emit.is_none() && emit_only {
        return Err(error(
            key,
            "to, room, data and args belong to an emit action",
            None,
        ));
    }
    if let Some(room) = &spec.join {
        return Ok(Action::Join(text(&format!("{key}.join"), room, scope)?));
    }
    if let Some(room) = &spec.leave {
        return Ok(Action::Leave(text(&format!("{key}.leave"), room, scope)?));
    }
    if let Some(ack) = &spec.ack {
        return Ok(Action::Ack(value(&format!("{key}.ack"), ack, scope)?));
    }
    if let Some(fields) = &spec.set {
        return set(key, fields, scope);
    }
    let event = spec.emit.clone().unwrap_or_default();
    emit(
        key,
        &EmitSpec {
            event,
            to: spec.to,
            room: spec.room.clone(),
            data: spec.data.clone(),
            args: spec.args.clone(),
            volatile: spec.volatile,
        },
        TargetKind::Sender,
        scope,
    )
}

fn event_rules(key: &str, rules: &[EventRule]) -> Result<HashMap<String, EventActions>, RuleError> {
    let mut events = HashMap::new();
    for (i, rule) in rules.iter().enumerate() {
        let key = format!("{key}.events[{i}]");
        if RESERVED_EVENTS.contains(&rule.on.as_str()) || rule.on.is_empty() {
            return Err(error(
                &format!("{key}.on"),
                format!("{:?} is not a client event", rule.on),
                Some(&rule.on),
            ));
        }
        let actions = rule
            .actions
            .iter()
            .enumerate()
            .map(|(j, a)| action(&format!("{key}.actions[{j}]"), a))
            .collect::<Result<Vec<_>, _>>()?;
        let expect = rule
            .expect
            .iter()
            .enumerate()
            .map(|(j, spec)| {
                let key = format!("{key}.expect[{j}]");
                Ok(match spec {
                    ArgSpec::Type(text) => ArgCheck::Type(type_check(&key, text)?),
                    ArgSpec::Fields(fields) => ArgCheck::Fields(
                        fields
                            .iter()
                            .map(|(name, text)| {
                                Ok((name.clone(), type_check(&format!("{key}.{name}"), text)?))
                            })
                            .collect::<Result<_, RuleError>>()?,
                    ),
                })
            })
            .collect::<Result<Vec<_>, RuleError>>()?;
        if events
            .insert(rule.on.clone(), EventActions { expect, actions })
            .is_some()
        {
            return Err(error(
                &format!("{key}.on"),
                format!("event {:?} has two rules", rule.on),
                Some(&rule.on),
            ));
        }
    }
    Ok(events)
}

pub fn namespace_rules(
    index: usize,
    config: &NamespaceConfig,
) -> Result<NamespaceRules, RuleError> {
    let key = format!("namespaces[{index}]");
    let mut on_connect = Vec::new();
    if let Some(rule) = &config.on_connect {
        let scope = Scope::Connection;
        for (i, room) in rule.join.iter().enumerate() {
            on_connect.push(Action::Join(text(
                &format!("{key}.on_connect.join[{i}]"),
                room,
                scope,
            )?));
        }
        if !rule.set.is_empty() {
            on_connect.push(set(&format!("{key}.on_connect"), &rule.set, scope)?);
        }
        for (i, spec) in rule.emit.iter().enumerate() {
            on_connect.push(emit(
                &format!("{key}.on_connect.emit[{i}]"),
                spec,
                TargetKind::Sender,
                scope,
            )?);
        }
    }
    let mut on_disconnect = Vec::new();
    if let Some(rule) = &config.on_disconnect {
        for (i, spec) in rule.emit.iter().enumerate() {
            let key = format!("{key}.on_disconnect.emit[{i}]");
            let action = emit(&key, spec, TargetKind::All, Scope::Connection)?;
            if matches!(
                action,
                Action::Emit {
                    target: Target::Sender,
                    ..
                }
            ) {
                return Err(error(&key, "a disconnected socket cannot be sent to", None));
            }
            on_disconnect.push(action);
        }
    }
    let room_patterns = match &config.rooms {
        None => None,
        Some(rules) => Some(
            rules
                .iter()
                .enumerate()
                .map(|(i, rule)| {
                    let key = format!("{key}.rooms[{i}]");
                    let (pattern, when) = match rule {
                        RoomPermission::Pattern(pattern) => (pattern, Vec::new()),
                        RoomPermission::Conditional { pattern, when } => (
                            pattern,
                            when.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                        ),
                    };
                    Ok(RoomRule {
                        pattern: text(&key, pattern, Scope::Connection)?,
                        when,
                    })
                })
                .collect::<Result<Vec<_>, RuleError>>()?,
        ),
    };
    Ok(NamespaceRules {
        room_patterns,
        on_connect,
        events: event_rules(&key, &config.events)?,
        on_disconnect,
    })
}

pub fn route(index: usize, spec: &RouteSpec, config: &Config) -> Result<CompiledRoute, RuleError> {
    let key = format!("routes[{index}]");
    if !spec.path.starts_with('/') {
        return Err(error(
            &format!("{key}.path"),
            "a route path starts with '/'",
            Some(&spec.path),
        ));
    }
    if spec.path.starts_with("/api/")
        || spec.path == config.server.path.trim_end_matches('/')
        || spec.path == config.server.path
    {
        return Err(error(
            &format!("{key}.path"),
            "this path is taken by the HTTP API or the Socket.IO endpoint",
            Some(&spec.path),
        ));
    }
    let method = match spec.method.to_ascii_uppercase().as_str() {
        "POST" => http::Method::POST,
        "GET" => http::Method::GET,
        other => {
            return Err(error(
                &format!("{key}.method"),
                format!("{other:?}: use POST or GET"),
                None,
            ));
        }
    };
    let namespace = spec.namespace.clone().unwrap_or_else(|| "/".into());
    if !config.namespace_names().contains(&namespace) {
        return Err(error(
            &format!("{key}.namespace"),
            format!("namespace {namespace:?} is not configured"),
            Some(&namespace),
        ));
    }
    check_event_name(&format!("{key}.emit"), &spec.emit)?;
    let scope = Scope::Route;
    let rooms = spec
        .rooms
        .iter()
        .enumerate()
        .map(|(i, r)| text(&format!("{key}.rooms[{i}]"), r, scope))
        .collect::<Result<_, _>>()?;
    let payload = match &spec.data {
        Some(data) => value(&format!("{key}.data"), data, scope)?,
        None => value(
            &format!("{key}.data"),
            &serde_json::Value::String("{body}".into()),
            scope,
        )?,
    };
    Ok(CompiledRoute {
        path: spec.path.clone(),
        method,
        namespace,
        event: spec.emit.clone(),
        rooms,
        payload,
        require: spec.require.clone(),
        public: spec.public,
        volatile: spec.volatile,
    })
}

/// Every namespace's rules and every HTTP route, compiled.
pub type CompiledRules = (Vec<(String, NamespaceRules)>, Vec<CompiledRoute>);

/// Compiles every rule of the config, stopping at the first problem.
pub fn compile(config: &Config) -> Result<CompiledRules, RuleError> {
    let mut namespaces = Vec::new();
    for (index, namespace) in config.namespaces.iter().enumerate() {
        namespaces.push((namespace.name.clone(), namespace_rules(index, namespace)?));
    }
    let mut routes: Vec<CompiledRoute> = Vec::new();
    for (index, spec) in config.routes.iter().enumerate() {
        let compiled = route(index, spec, config)?;
        if routes
            .iter()
            .any(|r| r.path == compiled.path && r.method == compiled.method)
        {
            return Err(error(
                &format!("routes[{index}].path"),
                "two routes have this method and path",
                Some(&spec.path),
            ));
        }
        routes.push(compiled);
    }
    Ok((namespaces, routes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_read_as_online_lists_are_found_in_every_place_a_template_can_be() {
        let config = Config::parse(
            r#"
[[namespaces]]
name = "/"
[namespaces.on_connect]
emit = [{ event = "hello", to = "sender", data = { everyone = "{online.name}" } }]
[[namespaces.events]]
on = "user-online"
actions = [
  { set = { userId = "{arg}" } },
  { emit = "users-online", to = "all", data = "{online.userId}" },
  { ack = { teams = "{online.team}" } },
]
[namespaces.on_disconnect]
emit = [{ event = "users-online", to = "all", data = "{online.userId}" }]

[[routes]]
path = "/who"
method = "GET"
emit = "who"
data = { devices = "{online.deviceId}" }
"#,
            "test.toml",
        )
        .expect("config parses");
        let (namespaces, routes) = compile(&config).expect("rules compile");
        let mut keys = namespaces[0].1.online_keys();
        keys.sort();
        assert_eq!(keys, ["name", "team", "userId"]);
        assert_eq!(routes[0].online_keys(), ["deviceId"]);
    }
}
