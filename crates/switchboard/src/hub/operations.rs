//! The hub's write operations for callers outside a socket (the HTTP API, its batches, and any
//! part that acts on sockets it selects): emit, join, leave, disconnect, as requests checked
//! whole before anything happens (a bad one changes nothing), then run through the same
//! [`Broadcast`] operations client events use, and carried to the other nodes of a cluster.
//! A refusal is an [`OpError`] naming the request field at fault; the API answers it as a 4xx.

use crate::error_code::ErrorCode;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use super::adapter::{NotTaken, UserOp, until_taken};
use super::{Broadcast, Hub, Namespace, Published};
use crate::protocol::socket::RESERVED_EVENTS;

/// Why an operation was refused: a request field at fault, or something it names that does not
/// exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OpError {
    pub kind: OpErrorKind,
    pub code: &'static str,
    pub message: String,
    /// The field at fault (`rooms[1]`, `commands[2].event`).
    pub field: Option<String>,
}

/// What kind of refusal an [`OpError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpErrorKind {
    /// The request is malformed (HTTP 400).
    Invalid,
    /// It names something that does not exist (HTTP 404).
    NotFound,
}

impl OpError {
    /// A bad value in one field of the request.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: OpErrorKind::Invalid,
            code: ErrorCode::InvalidField.as_str(),
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn unknown_namespace(field: impl Into<String>, namespace: &str) -> Self {
        Self {
            kind: OpErrorKind::NotFound,
            code: ErrorCode::UnknownNamespace.as_str(),
            message: format!("no namespace {namespace:?} is configured"),
            field: Some(field.into()),
        }
    }

    /// Prefixes the field with where the object sits (`commands[3]`).
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = Some(match self.field {
            Some(field) if field.starts_with('[') => format!("{prefix}{field}"),
            Some(field) => format!("{prefix}.{field}"),
            None => prefix.to_owned(),
        });
        self
    }
}

/// Room names (and event names) longer than this are refused.
pub const MAX_NAME_BYTES: usize = 256;
/// Commands in one batch at most.
pub const MAX_BATCH: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmitRequest {
    pub event: String,
    #[serde(default)]
    pub args: Option<Vec<Value>>,
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub rooms: Vec<String>,
    #[serde(default)]
    pub except: Vec<String>,
    #[serde(default)]
    pub sockets: Vec<String>,
    /// Every socket of this user (all their tabs and devices).
    #[serde(default)]
    pub user: Option<UserId>,
    /// Worth nothing late (a heartbeat, progress, a cursor): not queued for a client that has
    /// something queued already, never stored, no offset.
    #[serde(default)]
    pub volatile: bool,
}

/// A user id: a string or a number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum UserId {
    Text(String),
    Number(serde_json::Number),
}

impl UserId {
    pub fn as_string(&self) -> String {
        match self {
            UserId::Text(text) => text.clone(),
            UserId::Number(number) => number.to_string(),
        }
    }
}

/// The socket ids of `user` in `namespace` (none when the user has no socket there).
fn user_sockets(namespace: &Namespace, user: &Option<UserId>) -> Result<Vec<String>, OpError> {
    let Some(user) = user else {
        return Ok(Vec::new());
    };
    let user = user.as_string();
    if user.is_empty() || user.len() > MAX_NAME_BYTES {
        return Err(OpError::field(
            "user",
            format!("a user id is 1 to {MAX_NAME_BYTES} bytes"),
        ));
    }
    Ok(namespace
        .presence()
        .sockets_of(&user, namespace.name())
        .iter()
        .map(|id| id.to_string())
        .collect())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipRequest {
    #[serde(default)]
    pub namespace: Option<String>,
    /// Socket ids to act on.
    #[serde(default)]
    pub sockets: Vec<String>,
    /// Rooms whose members to act on.
    #[serde(default, rename = "in")]
    pub within: Vec<String>,
    /// Rooms to join or leave.
    pub rooms: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisconnectRequest {
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub sockets: Vec<String>,
    #[serde(default)]
    pub rooms: Vec<String>,
    /// Every socket of this user.
    #[serde(default)]
    pub user: Option<UserId>,
    /// Close the sockets' connections instead: their clients reconnect (and, with recovery on,
    /// get their sessions back). Other namespaces on those connections drop too.
    #[serde(default)]
    pub close_transport: bool,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Command {
    Emit(EmitRequest),
    Join(MembershipRequest),
    Leave(MembershipRequest),
    Disconnect(DisconnectRequest),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub commands: Vec<Command>,
}

pub fn check_event(field: &str, event: &str) -> Result<(), OpError> {
    if event.is_empty() {
        return Err(OpError::field(field, "the event name is empty"));
    }
    if event.len() > MAX_NAME_BYTES {
        return Err(OpError::field(
            field,
            format!("the event name is over {MAX_NAME_BYTES} bytes"),
        ));
    }
    if RESERVED_EVENTS.contains(&event) {
        return Err(OpError::field(
            field,
            format!("{event:?} is reserved by Socket.IO"),
        ));
    }
    Ok(())
}

pub fn check_rooms(field: &str, rooms: &[String]) -> Result<(), OpError> {
    for (index, room) in rooms.iter().enumerate() {
        if room.is_empty() || room.len() > MAX_NAME_BYTES {
            return Err(OpError::field(
                format!("{field}[{index}]"),
                format!("a room name is 1 to {MAX_NAME_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

pub fn namespace(hub: &Hub, name: Option<&str>) -> Result<Arc<Namespace>, OpError> {
    let name = name.unwrap_or("/");
    if !name.starts_with('/') {
        return Err(OpError::field(
            "namespace",
            format!("a namespace starts with '/' (got {name:?})"),
        ));
    }
    hub.of(name)
        .ok_or_else(|| OpError::unknown_namespace("namespace", name))
}

/// An operation checked and ready to run.
pub enum Prepared {
    /// A targeted operation whose target is empty (a user with no socket): nothing to do.
    Nobody {
        op: &'static str,
        count: &'static str,
    },
    Emit {
        broadcast: Broadcast,
        event: String,
        args: Vec<Value>,
    },
    /// An emit that names a user, on a node in a cluster: this node's part (none when neither
    /// the user nor the other targets have a socket here), and the other nodes', which find the
    /// user's sockets themselves.
    EmitToUser {
        namespace: Arc<Namespace>,
        here: Option<Broadcast>,
        user: String,
        rooms: Vec<String>,
        except: Vec<String>,
        event: String,
        args: Vec<Value>,
    },
    Join {
        selection: Broadcast,
        rooms: Vec<String>,
    },
    Leave {
        selection: Broadcast,
        rooms: Vec<String>,
    },
    Disconnect {
        selection: Broadcast,
        close_transport: bool,
    },
    /// A disconnect that names a user, on a node in a cluster: the selection (if any) everywhere,
    /// and the user's sockets on the other nodes.
    DisconnectUser {
        namespace: Arc<Namespace>,
        selection: Option<Broadcast>,
        user: String,
        close_transport: bool,
    },
}

impl EmitRequest {
    pub fn prepare(self, hub: &Hub) -> Result<Prepared, OpError> {
        check_event("event", &self.event)?;
        check_rooms("rooms", &self.rooms)?;
        check_rooms("except", &self.except)?;
        check_rooms("sockets", &self.sockets)?;
        let namespace = namespace(hub, self.namespace.as_deref())?;
        let of_user = user_sockets(&namespace, &self.user)?;
        let args = match (self.args, self.data) {
            (Some(_), Some(_)) => {
                return Err(OpError::field("data", "give either args or data, not both"));
            }
            (Some(args), None) => args,
            (None, Some(data)) => vec![data],
            (None, None) => Vec::new(),
        };
        // A socket id is also the name of that socket's own room.
        let targeted = !self.rooms.is_empty() || !self.sockets.is_empty() || self.user.is_some();
        let named: Vec<String> = self.rooms.into_iter().chain(self.sockets).collect();
        let targets: Vec<String> = named.iter().cloned().chain(of_user).collect();
        if let (Some(user), true) = (&self.user, hub.cluster().is_some()) {
            let here = (!targets.is_empty()).then(|| namespace.select(&targets, &self.except));
            return Ok(Prepared::EmitToUser {
                namespace,
                here,
                user: user.as_string(),
                rooms: named,
                except: self.except,
                event: self.event,
                args,
            });
        }
        if targeted && targets.is_empty() {
            return Ok(Prepared::Nobody {
                op: "emit",
                count: "reached",
            });
        }
        let broadcast = namespace
            .select(&targets, &self.except)
            .volatile(self.volatile);
        Ok(Prepared::Emit {
            broadcast,
            event: self.event,
            args,
        })
    }
}

impl MembershipRequest {
    fn prepare(self, hub: &Hub, join: bool) -> Result<Prepared, OpError> {
        check_rooms("sockets", &self.sockets)?;
        check_rooms("in", &self.within)?;
        check_rooms("rooms", &self.rooms)?;
        if self.rooms.is_empty() {
            return Err(OpError::field("rooms", "name at least one room"));
        }
        if self.sockets.is_empty() && self.within.is_empty() {
            return Err(OpError::field(
                "sockets",
                "select sockets by id (sockets) or by the rooms they are in (in)",
            ));
        }
        let namespace = namespace(hub, self.namespace.as_deref())?;
        let selectors: Vec<String> = self.sockets.into_iter().chain(self.within).collect();
        let selection = namespace.select(&selectors, &[]);
        Ok(if join {
            Prepared::Join {
                selection,
                rooms: self.rooms,
            }
        } else {
            Prepared::Leave {
                selection,
                rooms: self.rooms,
            }
        })
    }

    pub fn prepare_join(self, hub: &Hub) -> Result<Prepared, OpError> {
        self.prepare(hub, true)
    }

    pub fn prepare_leave(self, hub: &Hub) -> Result<Prepared, OpError> {
        self.prepare(hub, false)
    }
}

impl DisconnectRequest {
    pub fn prepare(self, hub: &Hub) -> Result<Prepared, OpError> {
        check_rooms("sockets", &self.sockets)?;
        check_rooms("rooms", &self.rooms)?;
        if self.sockets.is_empty() && self.rooms.is_empty() && self.user.is_none() {
            return Err(OpError::field(
                "sockets",
                "select sockets by id (sockets), by room (rooms) or by user (user)",
            ));
        }
        let namespace = namespace(hub, self.namespace.as_deref())?;
        let of_user = user_sockets(&namespace, &self.user)?;
        let selectors: Vec<String> = self
            .sockets
            .into_iter()
            .chain(self.rooms)
            .chain(of_user)
            .collect();
        if let (Some(user), true) = (&self.user, hub.cluster().is_some()) {
            let selection = (!selectors.is_empty()).then(|| namespace.select(&selectors, &[]));
            return Ok(Prepared::DisconnectUser {
                namespace,
                selection,
                user: user.as_string(),
                close_transport: self.close_transport,
            });
        }
        if selectors.is_empty() {
            return Ok(Prepared::Nobody {
                op: "disconnect",
                count: "disconnected",
            });
        }
        Ok(Prepared::Disconnect {
            selection: namespace.select(&selectors, &[]),
            close_transport: self.close_transport,
        })
    }
}

impl Command {
    pub fn prepare(self, hub: &Hub) -> Result<Prepared, OpError> {
        match self {
            Command::Emit(request) => request.prepare(hub),
            Command::Join(request) => request.prepare_join(hub),
            Command::Leave(request) => request.prepare_leave(hub),
            Command::Disconnect(request) => request.prepare(hub),
        }
    }
}

impl Prepared {
    /// Runs the operation; answers what the API reports for it. On a cluster the other nodes'
    /// part is handed to the adapter and not waited for (see [`Prepared::run_taken`]).
    pub fn run(self) -> Value {
        match self {
            Prepared::Nobody { op, count } => json!({ "op": op, count: 0 }),
            Prepared::Emit {
                broadcast,
                event,
                args,
            } => emit_answer(broadcast.publish(&event, &args, &[])),
            Prepared::EmitToUser {
                namespace,
                here,
                user,
                rooms,
                except,
                event,
                args,
            } => {
                let published = here.map(|b| b.local_publish(&event, &args, &[]));
                if let Some(cluster) = namespace.cluster() {
                    let op = UserOp::Emit {
                        rooms,
                        except,
                        event,
                        args,
                    };
                    cluster.for_user(namespace.name(), &user, op, None);
                }
                emit_answer(published.unwrap_or_default())
            }
            Prepared::DisconnectUser {
                namespace,
                selection,
                user,
                close_transport,
            } => {
                let here = selection.map_or(0, |s| s.disconnect_with(close_transport));
                if let Some(cluster) = namespace.cluster() {
                    let op = UserOp::Disconnect {
                        close: close_transport,
                    };
                    cluster.for_user(namespace.name(), &user, op, None);
                }
                json!({ "op": "disconnect", "disconnected": here })
            }
            Prepared::Join { selection, rooms } => {
                json!({ "op": "join", "affected": selection.join_rooms(&rooms) })
            }
            Prepared::Leave { selection, rooms } => {
                json!({ "op": "leave", "affected": selection.leave_rooms(&rooms) })
            }
            Prepared::Disconnect {
                selection,
                close_transport,
            } => json!({
                "op": "disconnect",
                "disconnected": selection.disconnect_with(close_transport),
            }),
        }
    }

    /// Runs the operation for a caller that relies on the answer (the HTTP API): on a cluster
    /// it resolves once the cluster's engine has taken the operation (every node then carries
    /// it out, in the order of the answers), and this node's part is done then too; with
    /// [`NotTaken`] nothing was done anywhere. On a node of its own, as [`Prepared::run`].
    pub async fn run_taken(self) -> Result<Value, NotTaken> {
        Ok(match self {
            Prepared::Nobody { op, count } => json!({ "op": op, count: 0 }),
            Prepared::Emit {
                broadcast,
                event,
                args,
            } => emit_answer(broadcast.publish_taken(&event, &args, &[]).await?),
            Prepared::EmitToUser {
                namespace,
                here,
                user,
                rooms,
                except,
                event,
                args,
            } => {
                if let Some(cluster) = namespace.cluster() {
                    let op = UserOp::Emit {
                        rooms,
                        except,
                        event: event.clone(),
                        args: args.clone(),
                    };
                    until_taken(cluster.as_ref(), |taken| {
                        cluster.for_user(namespace.name(), &user, op, Some(taken));
                    })
                    .await?;
                }
                let published = here.map(|b| b.local_publish(&event, &args, &[]));
                emit_answer(published.unwrap_or_default())
            }
            Prepared::DisconnectUser {
                namespace,
                selection,
                user,
                close_transport,
            } => {
                if let Some(cluster) = namespace.cluster() {
                    let op = UserOp::Disconnect {
                        close: close_transport,
                    };
                    until_taken(cluster.as_ref(), |taken| {
                        cluster.for_user(namespace.name(), &user, op, Some(taken));
                    })
                    .await?;
                }
                let here = match selection {
                    Some(selection) => selection.disconnect_taken(close_transport).await?,
                    None => 0,
                };
                json!({ "op": "disconnect", "disconnected": here })
            }
            Prepared::Join { selection, rooms } => {
                let affected = selection.change_rooms_taken(&rooms, true).await?;
                json!({ "op": "join", "affected": affected })
            }
            Prepared::Leave { selection, rooms } => {
                let affected = selection.change_rooms_taken(&rooms, false).await?;
                json!({ "op": "leave", "affected": affected })
            }
            Prepared::Disconnect {
                selection,
                close_transport,
            } => json!({
                "op": "disconnect",
                "disconnected": selection.disconnect_taken(close_transport).await?,
            }),
        })
    }

    pub fn is_emit(&self) -> bool {
        matches!(self, Prepared::Emit { .. } | Prepared::EmitToUser { .. })
    }
}

/// What the API answers for an emit: how many of this node's sockets it reached, and its
/// offset when it was stored for recovery.
fn emit_answer(published: Published) -> Value {
    match published.offset {
        Some(offset) => json!({
            "op": "emit",
            "reached": published.reached,
            "offset": super::offset_text(offset),
        }),
        None => json!({ "op": "emit", "reached": published.reached }),
    }
}

impl BatchRequest {
    pub fn prepare(self, hub: &Hub) -> Result<Vec<Prepared>, OpError> {
        if self.commands.len() > MAX_BATCH {
            return Err(OpError::field(
                "commands",
                format!("at most {MAX_BATCH} commands per batch"),
            ));
        }
        self.commands
            .into_iter()
            .enumerate()
            .map(|(index, command)| {
                command
                    .prepare(hub)
                    .map_err(|e| e.within(&format!("commands[{index}]")))
            })
            .collect()
    }
}
