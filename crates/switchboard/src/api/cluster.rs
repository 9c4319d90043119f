//! The API's reads for a whole cluster: the question each read asks the other nodes, how a node
//! answers it from what it holds, and how the answers add up with this node's own.
//!
//! On a node of its own the questions are never asked and the reads are this node's figures.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::AppState;
use crate::hub::Namespace;

/// What this node holds about `question` (asked by another node).
pub fn answer(state: &AppState, question: &Value) -> Value {
    let namespace = question["namespace"]
        .as_str()
        .and_then(|name| state.hub.of(name));
    let room = question["room"].as_str().unwrap_or_default();
    match (question["kind"].as_str(), namespace) {
        (Some("rooms"), Some(namespace)) => json!(local_rooms(&namespace)),
        (Some("room"), Some(namespace)) => json!(local_room_members(&namespace, room)),
        (Some("room_users"), Some(namespace)) => crate::app::room_users(&namespace, room),
        (Some("user"), _) => {
            let user = question["user"].as_str().unwrap_or_default();
            let (online, connections) = state.hub.presence().user(user);
            json!({ "online": online, "connections": connections })
        }
        (Some("stats"), _) => {
            let mut stats = super::stats_snapshot(state);
            stats["online_users"] = json!(state.hub.presence().online_users());
            stats
        }
        _ => Value::Null,
    }
}

/// The other nodes' answers to `question` (none on a node of its own).
pub async fn others(state: &AppState, question: Value) -> Vec<Value> {
    match state.hub.cluster() {
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
pub fn cluster_totals(state: &AppState, mine: &Value, answers: &[Value]) -> Value {
    let sum = |key: &str| -> u64 {
        std::iter::once(mine)
            .chain(answers)
            .map(|stats| stats[key].as_u64().unwrap_or(0))
            .sum()
    };
    let mut users: std::collections::BTreeSet<String> =
        state.hub.presence().online_users().into_iter().collect();
    for answer in answers {
        for user in answer["online_users"].as_array().into_iter().flatten() {
            if let Some(user) = user.as_str() {
                users.insert(user.to_owned());
            }
        }
    }
    json!({
        "nodes": answers.len() + 1,
        "connected": state.hub.cluster().is_some_and(|c| c.is_connected()),
        "connections": sum("connections"),
        "sockets": sum("sockets"),
        "users": users.len(),
    })
}
