//! The hub's reads for a whole cluster (rooms, room members, the users in a room, a user, the
//! history of a room): what this node holds, the question each read asks the other nodes, how a
//! node answers it, and how the answers add up with this node's own. The HTTP API, the room
//! query event and the cluster adapter's answerer all call these.
//!
//! On a node of its own the questions are never asked and the reads are this node's figures.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{HistoryPage, Hub, Namespace};

/// A question every other node of a cluster answers (tagged `kind` on the wire).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Question {
    /// A namespace's shared rooms and their sizes there.
    Rooms { namespace: String },
    /// A room's members there.
    Room { namespace: String, room: String },
    /// The users in a room there.
    RoomUsers { namespace: String, room: String },
    /// A user's connections there.
    User { user: String },
    /// The node's figures.
    Stats,
    /// A question of a newer node: answered `null`, so the asking node does not wait.
    #[serde(other)]
    Unknown,
}

/// What this node holds about `question` (asked by another node); `stats` gives this node's
/// figures for a `stats` question (they come from every layer, not only the hub). A namespace
/// this node does not have answers `null`.
pub fn answer(hub: &Hub, question: &Question, stats: impl FnOnce() -> Value) -> Value {
    match question {
        Question::Rooms { namespace } => hub
            .of(namespace)
            .map_or(Value::Null, |namespace| json!(local_rooms(&namespace))),
        Question::Room { namespace, room } => hub.of(namespace).map_or(Value::Null, |namespace| {
            json!(local_room_members(&namespace, room))
        }),
        Question::RoomUsers { namespace, room } => hub
            .of(namespace)
            .map_or(Value::Null, |namespace| room_users(&namespace, room)),
        Question::User { user } => {
            let (online, connections) = hub.presence().user(user);
            json!({ "online": online, "connections": connections })
        }
        Question::Stats => {
            let mut stats = stats();
            stats["online_users"] = json!(hub.presence().online_users());
            stats
        }
        Question::Unknown => Value::Null,
    }
}

/// The other nodes' answers to `question` (none on a node of its own).
pub async fn others(hub: &Hub, question: Question) -> Vec<Value> {
    match hub.cluster() {
        Some(cluster) => cluster.query(question).await,
        None => Vec::new(),
    }
}

/// This node's shared rooms (not the sockets' own) with their sizes.
pub fn local_rooms(namespace: &Namespace) -> BTreeMap<String, usize> {
    namespace
        .rooms()
        .into_iter()
        .filter(|(room, _)| !namespace.is_private_room(room))
        .map(|(room, size)| (room.to_string(), size))
        .collect()
}

/// The users in a room on this node: each user with their connections, and the sockets with no
/// user.
pub fn room_users(namespace: &Namespace, room: &str) -> Value {
    let key = namespace.presence().user_key().to_owned();
    let mut users: BTreeMap<String, usize> = BTreeMap::new();
    let mut anonymous = 0;
    for socket in namespace.room_members(room) {
        match socket.data().get(&key).and_then(super::user_id) {
            Some(user) => *users.entry(user).or_default() += 1,
            None => anonymous += 1,
        }
    }
    let users: Vec<Value> = users
        .into_iter()
        .map(|(user, connections)| json!({ "user": user, "connections": connections }))
        .collect();
    json!({ "room": room, "users": users, "anonymous": anonymous })
}

/// Rooms of every node: sizes add up.
pub fn merge_rooms(mut rooms: BTreeMap<String, usize>, answers: &[Value]) -> Vec<Value> {
    for answer in answers {
        if let Some(theirs) = answer.as_object() {
            for (room, size) in theirs {
                *rooms.entry(room.clone()).or_default() += size.as_u64().unwrap_or(0) as usize;
            }
        }
    }
    rooms
        .into_iter()
        .map(|(name, size)| json!({ "name": name, "size": size }))
        .collect()
}

/// The members of a room on this node, as the API shows them.
pub fn local_room_members(namespace: &Namespace, room: &str) -> Vec<Value> {
    namespace
        .room_members(room)
        .iter()
        .map(|socket| {
            let mut rooms: Vec<String> = socket.rooms().iter().map(|r| r.to_string()).collect();
            rooms.sort();
            json!({
                "id": socket.id().as_ref(),
                "transport": socket.conn().transport().as_str(),
                "rooms": rooms,
                "data": socket.data(),
            })
        })
        .collect()
}

/// Members of every node, sorted by socket id.
pub fn merge_members(mut members: Vec<Value>, answers: &[Value]) -> Vec<Value> {
    for answer in answers {
        if let Some(theirs) = answer.as_array() {
            members.extend(theirs.iter().cloned());
        }
    }
    members.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    members
}

/// A user's connections on every node; online when online on any.
pub fn merge_user(online: bool, connections: usize, answers: &[Value]) -> (bool, usize) {
    answers
        .iter()
        .fold((online, connections), |(on, count), a| {
            (
                on || a["online"].as_bool().unwrap_or(false),
                count + a["connections"].as_u64().unwrap_or(0) as usize,
            )
        })
}

/// The users in a room on every node: a user's connections add up.
pub fn merge_room_users(mut mine: Value, answers: &[Value]) -> Value {
    let mut users: BTreeMap<String, u64> = BTreeMap::new();
    let mut anonymous = 0;
    for answer in std::iter::once(&mine).chain(answers) {
        for entry in answer["users"].as_array().into_iter().flatten() {
            if let Some(user) = entry["user"].as_str() {
                *users.entry(user.to_owned()).or_default() +=
                    entry["connections"].as_u64().unwrap_or(0);
            }
        }
        anonymous += answer["anonymous"].as_u64().unwrap_or(0);
    }
    mine["users"] = users
        .into_iter()
        .map(|(user, connections)| json!({ "user": user, "connections": connections }))
        .collect();
    mine["anonymous"] = json!(anonymous);
    mine
}

/// The cluster's totals beside this node's figures: nodes that answered, connections, sockets,
/// and users online anywhere (a user on two nodes counted once).
pub fn cluster_totals(hub: &Hub, mine: &Value, answers: &[Value]) -> Value {
    let sum = |key: &str| -> u64 {
        std::iter::once(mine)
            .chain(answers)
            .map(|stats| stats[key].as_u64().unwrap_or(0))
            .sum()
    };
    let mut users: std::collections::BTreeSet<String> =
        hub.presence().online_users().into_iter().collect();
    for answer in answers {
        for user in answer["online_users"].as_array().into_iter().flatten() {
            if let Some(user) = user.as_str() {
                users.insert(user.to_owned());
            }
        }
    }
    json!({
        "nodes": answers.len() + 1,
        "connected": hub.cluster().is_some_and(|c| c.is_connected()),
        "connections": sum("connections"),
        "sockets": sum("sockets"),
        "users": users.len(),
    })
}

/// A page of a room's stored events as the API shows them: each event's offset, name,
/// arguments (without the offset recovery appends) and when it was stored.
pub fn history_events(page: &HistoryPage) -> Vec<Value> {
    page.events
        .iter()
        .filter_map(|event| {
            let text = std::str::from_utf8(event.frames().first()?.payload().get(1..)?).ok()?;
            let packet = crate::protocol::socket::decode_packet(text).ok()?;
            let mut args = match packet.data? {
                Value::Array(args) => args,
                _ => return None,
            };
            args.pop();
            let name = args.first().cloned()?;
            args.remove(0);
            Some(json!({
                "offset": super::offset_text(event.seq),
                "event": name,
                "args": args,
                "timestamp": page.wall_ms(event),
            }))
        })
        .collect()
}
