//! The rule language as written in the TOML config (see docs/configuration.md). These shapes
//! only describe; `compile.rs` checks them and turns their templates into compiled ones.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Who an `emit` reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// The socket that triggered the rule.
    Sender,
    /// Every socket of the namespace.
    All,
    /// Every socket of the namespace but the sender.
    Others,
    /// Every socket in `room`.
    Room,
    /// Every socket in `room` but the sender.
    RoomOthers,
}

/// `emit = "event"` with its target and payload.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmitSpec {
    pub event: String,
    #[serde(default)]
    pub to: Option<TargetKind>,
    #[serde(default)]
    pub room: Option<String>,
    /// The single argument of the event (a template).
    #[serde(default)]
    pub data: Option<Value>,
    /// The arguments of the event, when there are several (templates).
    #[serde(default)]
    pub args: Option<Vec<Value>>,
    /// Worth nothing late: not queued for a client that has something queued already, never
    /// stored, no offset (not to the sender alone, which always gets it).
    #[serde(default)]
    pub volatile: bool,
}

/// One step of a client-event rule: exactly one of `join`, `leave`, `emit`, `ack`, `set`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    #[serde(default)]
    pub join: Option<String>,
    #[serde(default)]
    pub leave: Option<String>,
    #[serde(default)]
    pub emit: Option<String>,
    #[serde(default)]
    pub to: Option<TargetKind>,
    #[serde(default)]
    pub room: Option<String>,
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(default)]
    pub args: Option<Vec<Value>>,
    #[serde(default)]
    pub ack: Option<Value>,
    /// Socket data to set: `set = { userId = "{arg}" }`.
    #[serde(default)]
    pub set: Option<Map<String, Value>>,
    /// With `emit`: a volatile event (see `EmitSpec::volatile`).
    #[serde(default)]
    pub volatile: bool,
}

/// The expected shape of one client argument: a type (`"string"`, `"number"`, `"boolean"`,
/// `"object"`, `"array"`, `"any"`, or alternatives like `"string|number"`), or an object with
/// typed fields (`{ room = "string", message = "string" }`; a type ending in `?` is optional).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ArgSpec {
    Type(String),
    Fields(std::collections::BTreeMap<String, String>),
}

/// `[[namespaces.events]]`: what a client event does.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventRule {
    pub on: String,
    /// The arguments the client must send, checked before any action runs.
    #[serde(default)]
    pub expect: Vec<ArgSpec>,
    pub actions: Vec<ActionSpec>,
}

/// `[namespaces.on_connect]`: rooms to join, data to set, events to emit to the new socket.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectRule {
    pub join: Vec<String>,
    pub set: Map<String, Value>,
    pub emit: Vec<EmitSpec>,
}

/// `[namespaces.on_disconnect]`: events to emit when a socket leaves.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DisconnectRule {
    pub emit: Vec<EmitSpec>,
}

/// `[[routes]]`: an HTTP endpoint for a backend that emits one event.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub path: String,
    /// POST (the default) or GET.
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub emit: String,
    /// Rooms to emit to (templates over the body); none: the whole namespace.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// The event's payload (a template); default: the request body.
    #[serde(default)]
    pub data: Option<Value>,
    /// Body fields that must be present.
    #[serde(default)]
    pub require: Vec<String>,
    /// Answer any caller, without the API key.
    #[serde(default)]
    pub public: bool,
    /// Worth nothing late: not queued for a client that has something queued already, never
    /// stored, no offset.
    #[serde(default)]
    pub volatile: bool,
}

fn default_method() -> String {
    "POST".into()
}
