//! `switchboard types`: a TypeScript declaration of the events a config defines, for typed
//! clients (`Socket<ServerToClientEvents, ClientToServerEvents>` from socket.io-client).
//!
//! Server-to-client events come from the rules' emits (on connect, on client events, on
//! disconnect), the HTTP routes, presence announcements, token expiry and rule refusals;
//! client-to-server events from the rules' `on` events (argument types from `expect`, the ack's
//! type from the `ack` action), the event proxy's events, the presence query and token refresh.
//! Payload types are read off the templates: `{socket.id}` is a string, `{now}` a number, `{arg}`
//! the type `expect` gives it, a literal its own type; what a client or a backend chooses freely
//! is `unknown`. Events only the HTTP API emits (`/api/emit` with any name) are not in the config,
//! so not here.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::compile::{
    Action, ArgCheck, CompiledRoute, EventActions, Kind, NamespaceRules, Payload, RuleError,
    TypeCheck, compile,
};
use super::template::ts_object;
use crate::config::Config;

/// The events of one namespace: name → parameter lists (one per place that emits it).
#[derive(Default)]
struct Events {
    server_to_client: BTreeMap<String, Vec<Vec<String>>>,
    /// name → the whole TypeScript signature.
    client_to_server: BTreeMap<String, String>,
}

impl Events {
    fn emits(&mut self, event: &str, params: Vec<String>) {
        let shapes = self.server_to_client.entry(event.to_owned()).or_default();
        if !shapes.contains(&params) {
            shapes.push(params);
        }
    }
}

const HEADER: &str = "\
// The events of a Switchboard config, written by `switchboard types` (do not edit: run it
// again when the config changes). With socket.io-client:
//
//   import { io, Socket } from \"socket.io-client\";
//   import type { ServerToClientEvents, ClientToServerEvents } from \"./events\";
//   const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io(url);
//
// Another namespace's interfaces are named after it (`/admin`: AdminServerToClientEvents).
// With recovery on, a client that recovers also receives each event's offset as one more last
// argument; socket.io-client reads it itself.
";

/// The declaration file's text.
pub fn typescript(config: &Config) -> Result<String, RuleError> {
    let (namespaces, routes) = compile(config)?;
    let mut all: BTreeMap<String, Events> = BTreeMap::new();
    for name in config.namespace_names() {
        all.entry(name).or_default();
    }
    for (name, rules) in &namespaces {
        rule_events(all.entry(name.clone()).or_default(), rules);
    }
    for route in &routes {
        route_event(all.entry(route.namespace.clone()).or_default(), route);
    }
    built_in_events(config, &mut all);

    let mut out = String::from(HEADER);
    out.push_str(
        "\n/** The answer a rule gives a callback when it refuses the event. */\n\
         export interface RuleRefusal {\n  error: { code: string; message: string };\n}\n",
    );
    let mut index = String::new();
    let mut taken: Vec<String> = Vec::new();
    for (namespace, events) in &all {
        // Distinct and valid names: `/2fa` → `Ns2fa`, a second `/a-b` beside `/aB` → `AB2`.
        let mut prefix = interface_prefix(namespace);
        if prefix.starts_with(|c: char| c.is_ascii_digit()) {
            prefix.insert_str(0, "Ns");
        }
        let base = prefix.clone();
        let mut n = 2;
        while taken.contains(&prefix) {
            prefix = format!("{base}{n}");
            n += 1;
        }
        taken.push(prefix.clone());
        let _ = write!(
            out,
            "\n/** Events the server sends on `{namespace}`. */\nexport interface {prefix}ServerToClientEvents {{\n"
        );
        for (event, shapes) in &events.server_to_client {
            let _ = writeln!(
                out,
                "  {}: ({}) => void;",
                quoted(event),
                merged_params(shapes)
            );
        }
        let _ = write!(
            out,
            "}}\n\n/** Events a client may send on `{namespace}`. */\nexport interface {prefix}ClientToServerEvents {{\n"
        );
        for (event, signature) in &events.client_to_server {
            let _ = writeln!(out, "  {}: {signature};", quoted(event));
        }
        out.push_str("}\n");
        let _ = writeln!(
            index,
            "  {}: {{ serverToClient: {prefix}ServerToClientEvents; clientToServer: {prefix}ClientToServerEvents }};",
            quoted(namespace)
        );
    }
    let _ = write!(
        out,
        "\n/** Every namespace's events, by namespace. */\nexport interface Namespaces {{\n{index}}}\n"
    );
    Ok(out)
}

fn rule_events(events: &mut Events, rules: &NamespaceRules) {
    let no_args = |_: &[String]| None;
    for action in rules.on_connect.iter().chain(&rules.on_disconnect) {
        if let Some((event, params)) = emitted(action, &no_args) {
            events.emits(&event, params);
        }
    }
    for (name, rule) in &rules.events {
        let args = |path: &[String]| arg_type(&rule.expect, path);
        let mut ack = None;
        for action in &rule.actions {
            if let Some((event, params)) = emitted(action, &args) {
                events.emits(&event, params);
            }
            if let Action::Ack(template) = action {
                ack.get_or_insert_with(|| template.ts_type(&args));
            }
        }
        events
            .client_to_server
            .insert(name.clone(), client_signature(rule, ack));
        // A refused event without a callback is reported as `error`.
        events.emits(
            "error",
            vec!["error: { event: string; code: string; message: string }".into()],
        );
    }
}

/// The event an action emits and its parameters.
fn emitted(action: &Action, args: super::template::ArgTypes) -> Option<(String, Vec<String>)> {
    let Action::Emit { event, payload, .. } = action else {
        return None;
    };
    let params = match payload {
        Payload::None => Vec::new(),
        Payload::Data(template) => vec![format!("data: {}", template.ts_type(args))],
        Payload::Args(templates) => templates
            .iter()
            .enumerate()
            .map(|(index, template)| format!("arg{index}: {}", template.ts_type(args)))
            .collect(),
    };
    Some((event.clone(), params))
}

fn route_event(events: &mut Events, route: &CompiledRoute) {
    let params = vec![format!("data: {}", route.payload.ts_type(&|_| None))];
    events.emits(&route.event, params);
}

fn built_in_events(config: &Config, all: &mut BTreeMap<String, Events>) {
    let presence = &config.presence;
    if !presence.rooms.is_empty() {
        let events = all.entry(presence.namespace.clone()).or_default();
        for event in [&presence.online_event, &presence.offline_event] {
            events.emits(
                event,
                vec!["data: { userId: string; timestamp: string }".into()],
            );
        }
    }
    if let Some(query) = &presence.query_event {
        for events in all.values_mut() {
            events.client_to_server.insert(
                query.clone(),
                "(room: string, callback: (reply: unknown) => void) => void".into(),
            );
        }
    }
    for proxied in &config.proxy.events {
        all.entry(proxied.namespace.clone())
            .or_default()
            .client_to_server
            .insert(proxied.event.clone(), "(...args: any[]) => void".into());
    }
    if config.auth.configured() && config.auth.enforce_expiry {
        for events in all.values_mut() {
            events.emits(
                "token:expiring",
                vec!["data: { expiresAt: number; inSeconds: number }".into()],
            );
            events.emits(
                "token:refreshed",
                vec!["data: { token: string; expiresAt: number }".into()],
            );
            events.emits(
                "token:expired",
                vec!["data: { message: string; expiredAt: number }".into()],
            );
            events.client_to_server.insert(
                "token:refresh".into(),
                "(token: string, callback?: (reply: { ok: boolean; expiresAt?: number; error?: unknown }) => void) => void".into(),
            );
        }
    }
}

/// A client event's signature: its checked arguments, then the optional callback.
fn client_signature(rule: &EventActions, ack: Option<String>) -> String {
    let reply = ack.unwrap_or_else(|| "{ ok: true }".into());
    let callback = format!("callback?: (reply: {reply} | RuleRefusal) => void");
    if rule.expect.is_empty() {
        // Unchecked: any arguments (a callback, if last, is still answered).
        return "(...args: any[]) => void".into();
    }
    // An optional parameter may not come before a required one: past the first optional
    // argument, the rest are optional too.
    let mut optional_from_here = false;
    let mut params: Vec<String> = rule
        .expect
        .iter()
        .enumerate()
        .map(|(index, check)| {
            let (ty, optional) = check_type(check);
            optional_from_here |= optional;
            format!(
                "arg{index}{}: {ty}",
                if optional_from_here { "?" } else { "" }
            )
        })
        .collect();
    params.push(callback);
    format!("({}) => void", params.join(", "))
}

/// The type `expect` gives the argument at `path` (`["0"]`, `["1", "room"]`).
fn arg_type(expect: &[ArgCheck], path: &[String]) -> Option<String> {
    let index: usize = path.first()?.parse().ok()?;
    let check = expect.get(index)?;
    match (check, &path[1..]) {
        (check, []) => Some(check_type(check).0),
        (ArgCheck::Fields(fields), [field]) => fields
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, ty)| kinds_type(ty)),
        _ => None,
    }
}

/// An argument check as a type, and whether the argument may be absent.
fn check_type(check: &ArgCheck) -> (String, bool) {
    match check {
        ArgCheck::Type(ty) => (kinds_type(ty), ty.optional),
        ArgCheck::Fields(fields) => (
            ts_object(
                fields
                    .iter()
                    .map(|(name, ty)| (name.as_str(), kinds_type(ty), ty.optional)),
            ),
            false,
        ),
    }
}

fn kinds_type(check: &TypeCheck) -> String {
    let kinds: Vec<&str> = check
        .kinds
        .iter()
        .map(|kind| match kind {
            Kind::String => "string",
            Kind::Number => "number",
            Kind::Boolean => "boolean",
            Kind::Object => "Record<string, unknown>",
            Kind::Array => "unknown[]",
            Kind::Any => "unknown",
        })
        .collect();
    kinds.join(" | ")
}

/// One parameter list from the shapes an event is emitted with: the same list once, or each
/// position's types joined when places differ (missing positions optional).
fn merged_params(shapes: &[Vec<String>]) -> String {
    if let [one] = shapes {
        return one.join(", ");
    }
    let longest = shapes.iter().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .map(|index| {
            let mut types: Vec<&str> = Vec::new();
            let mut name = format!("arg{index}");
            let mut optional = false;
            for shape in shapes {
                match shape.get(index).and_then(|p| p.split_once(": ")) {
                    Some((param, ty)) => {
                        name = param.trim_end_matches('?').to_owned();
                        if !types.contains(&ty) {
                            types.push(ty);
                        }
                    }
                    None => optional = true,
                }
            }
            let joined = types
                .iter()
                .map(|t| format!("({t})"))
                .collect::<Vec<_>>()
                .join(" | ");
            format!("{name}{}: {joined}", if optional { "?" } else { "" })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// `/` → ``, `/admin` → `Admin`, `/device-dashboard` → `DeviceDashboard`.
fn interface_prefix(namespace: &str) -> String {
    namespace
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, "test.toml").expect("a valid config")
    }

    #[test]
    fn payload_types_come_from_templates_and_expect() {
        let out = typescript(&config(
            r#"
[[namespaces]]
name = "/"
[namespaces.on_connect]
emit = [{ event = "hello", data = { sid = "{socket.id}", at = "{now}" } }]
[[namespaces.events]]
on = "say"
expect = [{ room = "string", text = "string?" }]
actions = [{ emit = "said", to = "room", room = "{arg.room}", data = { room = "{arg.room}", all = "{arg}" } }, { ack = "ok" }]
"#,
        ))
        .unwrap();
        assert!(
            out.contains(r#""hello": (data: { "at": number; "sid": string }) => void;"#),
            "{out}"
        );
        assert!(
            out.contains(r#""said": (data: { "all": { "room": string; "text"?: string }; "room": string }) => void;"#),
            "{out}"
        );
        assert!(
            out.contains(r#""say": (arg0: { "room": string; "text"?: string }, callback?: (reply: "ok" | RuleRefusal) => void) => void;"#),
            "{out}"
        );
    }

    #[test]
    fn namespaces_get_their_own_interfaces() {
        assert_eq!(interface_prefix("/"), "");
        assert_eq!(interface_prefix("/device-dashboard"), "DeviceDashboard");
        let out = typescript(&config(
            "[[namespaces]]\nname = \"/2fa\"\n[[namespaces]]\nname = \"/a-b\"\n[[namespaces]]\nname = \"/aB\"\n",
        ))
        .unwrap();
        assert!(out.contains("interface Ns2faServerToClientEvents"), "{out}");
        assert!(out.contains("interface ABServerToClientEvents"), "{out}");
        assert!(out.contains("interface AB2ServerToClientEvents"), "{out}");
    }

    #[test]
    fn an_optional_field_does_not_make_the_next_argument_optional() {
        let out = typescript(&config(
            "[[namespaces]]\nname = \"/\"\n[[namespaces.events]]\non = \"e\"\nexpect = [{ a = \"string?\" }, \"number\"]\nactions = []\n",
        ))
        .unwrap();
        assert!(
            out.contains(r#""e": (arg0: { "a"?: string }, arg1: number, callback?"#),
            "{out}"
        );
    }
}
