//! Runs a namespace's compiled rules on its sockets: on connect, on each client event, on
//! disconnect. A client event's actions are all rendered and checked first (templates, room
//! names, permissions); only if every one passes do they run, in order, so a bad value changes
//! nothing. The client then gets its callback answered (`{"ok": true}` unless an `ack` action
//! answered it; in a cluster once the engine took the emits to other sockets, or
//! `cluster_unavailable`) or, on a refusal, an error reply: the ack `{"error": {code,
//! message}}` when it passed a callback, else an `error` event `{event, code, message}`.

use crate::error_code::ErrorCode;
use std::sync::Arc;

use bytes::Bytes;

use prometheus_client::metrics::counter::Counter;
use serde_json::{Value, json};

use super::compile::{Action, ArgCheck, EventActions, NamespaceRules, Payload, Target, TypeCheck};
use super::template::{Context, TextTemplate, ValueError};
use crate::hub::adapter::{TakenReceipt, all_taken};
use crate::hub::{Ack, Event, Socket};
use crate::pattern::glob_match;

/// Answers a client event's callback: `value` (with the client's binary values when it holds
/// their placeholders), or, when the cluster did not take the event's emits, the error
/// `cluster_unavailable` (the emits may have reached this node's clients only).
fn answer(ack: Ack, value: Value, attachments: &[Bytes], taken: bool) {
    if !taken {
        let code = ErrorCode::ClusterUnavailable.as_str();
        let message = "the cluster could not take this event's emits in time";
        ack.send(&[json!({ "error": { "code": code, "message": message } })]);
    } else if holds_placeholder(&value, attachments.len()) {
        ack.send_binary(&[value], attachments);
    } else {
        ack.send(&[value]);
    }
}

pub struct RuleSet {
    rules: NamespaceRules,
    max_room_bytes: usize,
    emits: Counter,
}

enum ReadyTarget {
    Sender,
    All,
    Others,
    Room(String),
    RoomOthers(String),
}

enum Ready {
    Join(String),
    Leave(String),
    Emit {
        event: String,
        target: ReadyTarget,
        args: Vec<Value>,
        volatile: bool,
    },
    Ack(Value),
    Set(Vec<(String, Value)>),
}

/// Whether room names from client values are held to the namespace's patterns.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// Client events: patterns apply.
    ClientEvent,
    /// Connect and disconnect rules written by the operator: patterns do not apply.
    Operator,
}

/// Whether `value` holds a binary placeholder naming one of `attachments` attachments.
fn holds_placeholder(value: &Value, attachments: usize) -> bool {
    match value {
        Value::Array(items) => items
            .iter()
            .any(|item| holds_placeholder(item, attachments)),
        Value::Object(object) => {
            crate::protocol::socket::is_placeholder(value, attachments)
                || object
                    .values()
                    .any(|item| holds_placeholder(item, attachments))
        }
        _ => false,
    }
}

/// Does this room rule let `socket` use `room`? Its conditions must hold on the socket's data,
/// and its pattern, rendered with that data, must match.
fn permits(rule: &super::compile::RoomRule, socket: &Socket, room: &str) -> bool {
    let data = socket.data();
    let conditions_hold = rule
        .when
        .iter()
        .all(|(key, allowed)| data.get(key).is_some_and(|value| allowed.contains(value)));
    if !conditions_hold {
        return false;
    }
    let context = Context {
        socket_id: Some(socket.id()),
        auth: Some(&*socket.handshake().auth),
        data: Some(&data),
        ..Context::default()
    };
    rule.pattern
        .render(&context)
        .is_ok_and(|pattern| glob_match(&pattern, room))
}

fn check_type(check: &TypeCheck, value: Option<&Value>, what: &str) -> Result<(), ValueError> {
    match value {
        None | Some(Value::Null) if check.optional => Ok(()),
        None => Err(ValueError {
            code: ErrorCode::MissingField.as_str(),
            message: format!("{what} is missing"),
        }),
        Some(value) if check.kinds.iter().any(|kind| kind.matches(value)) => Ok(()),
        Some(_) => Err(ValueError {
            code: ErrorCode::InvalidType.as_str(),
            message: format!(
                "{what} must be {}",
                check
                    .kinds
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        }),
    }
}

/// Checks the client's arguments against the rule's `expect`.
fn check_args(expect: &[ArgCheck], args: &[Value]) -> Result<(), ValueError> {
    for (index, check) in expect.iter().enumerate() {
        let what = if expect.len() == 1 {
            "the event's argument".to_owned()
        } else {
            format!("argument {index}")
        };
        let arg = args.get(index);
        match check {
            ArgCheck::Type(check) => check_type(check, arg, &what)?,
            ArgCheck::Fields(fields) => {
                let Some(Value::Object(object)) = arg else {
                    return Err(ValueError {
                        code: if arg.is_none() {
                            ErrorCode::MissingField.as_str()
                        } else {
                            ErrorCode::InvalidType.as_str()
                        },
                        message: format!("{what} must be an object"),
                    });
                };
                for (name, check) in fields {
                    check_type(check, object.get(name), &format!("field `{name}`"))?;
                }
            }
        }
    }
    Ok(())
}

impl RuleSet {
    pub fn new(rules: NamespaceRules, max_room_bytes: usize, emits: Counter) -> Self {
        Self {
            rules,
            max_room_bytes,
            emits,
        }
    }

    pub fn rules(&self) -> &NamespaceRules {
        &self.rules
    }

    fn check_room(
        &self,
        template: &TextTemplate,
        room: String,
        socket: &Socket,
        trust: Trust,
    ) -> Result<String, ValueError> {
        if template.is_static() {
            return Ok(room);
        }
        if room.is_empty() {
            return Err(ValueError {
                code: ErrorCode::InvalidRoom.as_str(),
                message: "a room name cannot be empty".into(),
            });
        }
        if room.len() > self.max_room_bytes {
            return Err(ValueError {
                code: ErrorCode::RoomNameTooLong.as_str(),
                message: format!("a room name is at most {} bytes", self.max_room_bytes),
            });
        }
        let namespace = socket.namespace();
        if **socket.id() != *room && namespace.is_private_room(&room) {
            return Err(ValueError {
                code: ErrorCode::ForbiddenRoom.as_str(),
                message: format!("room {room:?} is another socket's own room"),
            });
        }
        if trust == Trust::ClientEvent
            && let Some(patterns) = &self.rules.room_patterns
            && !patterns.iter().any(|rule| permits(rule, socket, &room))
        {
            return Err(ValueError {
                code: ErrorCode::ForbiddenRoom.as_str(),
                message: format!("room {room:?} is not one you may use"),
            });
        }
        Ok(room)
    }

    /// Renders and checks every action; nothing happens yet.
    fn prepare(
        &self,
        actions: &[Action],
        socket: &Arc<Socket>,
        event: Option<&str>,
        args: &[Value],
        trust: Trust,
    ) -> Result<Vec<Ready>, ValueError> {
        let mut data = socket.data();
        let auth = &socket.handshake().auth;
        let query = &socket.conn().request().query;
        let namespace = socket.namespace().clone();
        let mut ready = Vec::with_capacity(actions.len());
        // Rooms this rule joins that the socket is not in yet (for the rooms-per-socket limit).
        let mut new_rooms: Vec<String> = Vec::new();
        for action in actions {
            // Templates read the data as the earlier `set` actions of this rule left it.
            let online = |key: &str| namespace.online_values(key, Some((socket, &data)));
            let context = Context {
                socket_id: Some(socket.id()),
                event,
                args,
                auth: Some(auth),
                query,
                data: Some(&data),
                body: None,
                online: Some(&online),
            };
            let step = match action {
                Action::Join(template) => Ready::Join(self.check_room(
                    template,
                    template.render(&context)?,
                    socket,
                    trust,
                )?),
                Action::Leave(template) => Ready::Leave(template.render(&context)?),
                Action::Ack(template) => Ready::Ack(template.render(&context)?),
                Action::Set(fields) => Ready::Set(
                    fields
                        .iter()
                        .map(|(key, template)| Ok((key.clone(), template.render(&context)?)))
                        .collect::<Result<_, ValueError>>()?,
                ),
                Action::Emit {
                    event,
                    target,
                    payload,
                    volatile,
                } => {
                    let target = match target {
                        Target::Sender => ReadyTarget::Sender,
                        Target::All => ReadyTarget::All,
                        Target::Others => ReadyTarget::Others,
                        Target::Room(t) => ReadyTarget::Room(self.check_room(
                            t,
                            t.render(&context)?,
                            socket,
                            trust,
                        )?),
                        Target::RoomOthers(t) => ReadyTarget::RoomOthers(self.check_room(
                            t,
                            t.render(&context)?,
                            socket,
                            trust,
                        )?),
                    };
                    let args = match payload {
                        Payload::None => Vec::new(),
                        Payload::Data(template) => vec![template.render(&context)?],
                        Payload::Args(templates) => templates
                            .iter()
                            .map(|t| t.render(&context))
                            .collect::<Result<_, _>>()?,
                    };
                    Ready::Emit {
                        event: event.clone(),
                        target,
                        args,
                        volatile: *volatile,
                    }
                }
            };
            match &step {
                Ready::Set(values) => {
                    for (key, value) in values {
                        data.insert(key.clone(), value.clone());
                    }
                }
                Ready::Join(room) if !new_rooms.contains(room) && !socket.in_room(room) => {
                    if !namespace.may_join(socket, room, new_rooms.len()) {
                        return Err(ValueError {
                            code: ErrorCode::TooManyRooms.as_str(),
                            message: format!(
                                "a socket may be in at most {} rooms",
                                namespace.max_rooms_per_socket()
                            ),
                        });
                    }
                    new_rooms.push(room.clone());
                }
                _ => {}
            }
            ready.push(step);
        }
        Ok(ready)
    }

    /// Runs prepared actions in order; returns the ack value, if an action gave one, and, in a
    /// cluster and when `receipts` is asked for, a receipt for each emit that goes to other
    /// sockets (the cluster's engine taking it). Only a caller that waits on them asks: a
    /// receipt dropped unread tells the driver nobody waits, and it leaves the emit out. An
    /// emit whose data holds the client's binary values (their placeholders, from `{arg}`)
    /// carries the client's `attachments` with it.
    fn run(
        &self,
        ready: Vec<Ready>,
        socket: &Arc<Socket>,
        attachments: &[Bytes],
        with_receipts: bool,
    ) -> (Option<Value>, Vec<TakenReceipt>) {
        let mut ack = None;
        let mut receipts = Vec::new();
        for step in ready {
            match step {
                Ready::Join(room) => socket.join(room.as_str()),
                Ready::Leave(room) => socket.leave(&room),
                Ready::Set(values) => {
                    for (key, value) in values {
                        socket.set_data(key, value);
                    }
                }
                Ready::Ack(value) => {
                    ack.get_or_insert(value);
                }
                Ready::Emit {
                    event,
                    target,
                    args,
                    volatile,
                } => {
                    self.emits.inc();
                    let namespace = socket.namespace();
                    let binary = if !attachments.is_empty()
                        && args
                            .iter()
                            .any(|arg| holds_placeholder(arg, attachments.len()))
                    {
                        attachments
                    } else {
                        &[]
                    };
                    let broadcast = match target {
                        ReadyTarget::Sender => {
                            let _ = socket.emit_binary(&event, &args, binary);
                            continue;
                        }
                        ReadyTarget::All => namespace.everyone(),
                        ReadyTarget::Others => socket.broadcast(),
                        ReadyTarget::Room(room) => namespace.to(room.as_str()),
                        ReadyTarget::RoomOthers(room) => socket.to(room.as_str()),
                    };
                    let broadcast = broadcast.volatile(volatile);
                    if with_receipts {
                        let (_, receipt) = broadcast.publish_with_receipt(&event, &args, binary);
                        receipts.extend(receipt);
                    } else {
                        broadcast.emit_binary(&event, &args, binary);
                    }
                }
            }
        }
        (ack, receipts)
    }

    pub fn on_connect(&self, socket: &Arc<Socket>) {
        match self.prepare(&self.rules.on_connect, socket, None, &[], Trust::Operator) {
            Ok(ready) => {
                self.run(ready, socket, &[], false);
            }
            Err(error) => {
                tracing::debug!(socket = %socket.id(), code = error.code, "on_connect rule refused");
                let _ = socket.emit(
                    "error",
                    &[json!({ "event": "connect", "code": error.code, "message": error.message })],
                );
            }
        }
    }

    pub fn on_event(&self, socket: &Arc<Socket>, mut event: Event, rule: &EventActions) {
        let checked = check_args(&rule.expect, &event.args).and_then(|()| {
            self.prepare(
                &rule.actions,
                socket,
                Some(&event.name),
                &event.args,
                Trust::ClientEvent,
            )
        });
        match checked {
            Ok(ready) => {
                let ack = event.take_ack();
                let (value, receipts) = self.run(ready, socket, &event.attachments, ack.is_some());
                let Some(ack) = ack else {
                    return;
                };
                let value = value.unwrap_or_else(|| json!({ "ok": true }));
                let attachments = std::mem::take(&mut event.attachments);
                // In a cluster the callback is answered once the engine has taken the emits
                // (they are delivered meanwhile, as always): an answered callback means every
                // node delivers them, even if this node is killed the next moment.
                match socket.namespace().cluster() {
                    Some(cluster) if !receipts.is_empty() => {
                        let cluster = cluster.clone();
                        tokio::spawn(async move {
                            let taken = all_taken(cluster.as_ref(), receipts).await;
                            answer(ack, value, &attachments, taken.is_ok());
                        });
                    }
                    _ => answer(ack, value, &attachments, true),
                }
            }
            Err(error) => {
                tracing::debug!(socket = %socket.id(), event = %event.name, code = error.code, "client event refused");
                let body = json!({ "code": error.code, "message": error.message });
                match event.take_ack() {
                    Some(ack) => ack.send(&[json!({ "error": body })]),
                    None => {
                        let _ = socket.emit(
                            "error",
                            &[json!({ "event": event.name, "code": error.code, "message": error.message })],
                        );
                    }
                }
            }
        }
    }

    pub fn on_disconnect(&self, socket: &Arc<Socket>) {
        match self.prepare(
            &self.rules.on_disconnect,
            socket,
            None,
            &[],
            Trust::Operator,
        ) {
            Ok(ready) => {
                self.run(ready, socket, &[], false);
            }
            Err(error) => {
                tracing::debug!(socket = %socket.id(), code = error.code, "on_disconnect rule skipped");
            }
        }
    }
}
