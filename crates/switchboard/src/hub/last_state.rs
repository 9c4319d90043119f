//! Last state on join: for rooms whose `[[history]]` entry says `on_join = "last"` (or
//! `"last_per_event"`), the last event sent to the room (or the last of each event name) is
//! kept, and a socket that joins the room gets it at once, once, before anything sent after.
//! [`LastState`] is one namespace's store; the namespace holds its lock while it delivers a
//! broadcast to such a room and records it, and while a socket joins one and is given its last
//! state, so a joining socket gets each event exactly once: from the store, or live.
//!
//! In a cluster the node that publishes keeps the event in the engine too
//! (`Adapter::keep_last`); a node that has nothing for a room a socket joins (it started later,
//! or does not hear every room) reads it from there.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::packets::{self, Parser};
use super::socket::{Room, Socket};
use crate::clock::now_millis;
use crate::config::{HistorySettings, OnJoin};
use crate::pattern::glob_match;

/// Which rooms keep a last state, and how: the `[[history]]` entries in order, the first whose
/// pattern matches a room deciding for it.
#[derive(Debug, Clone, Default)]
pub struct LastStateConfig {
    rules: Vec<(String, OnJoin, Duration)>,
}

impl LastStateConfig {
    /// From `[[history]]`; None when no entry keeps a last state.
    pub fn from_settings(history: &[HistorySettings]) -> Option<Self> {
        let rules: Vec<_> = history
            .iter()
            .map(|h| (h.rooms.clone(), h.on_join, h.last_max_age.0))
            .collect();
        rules
            .iter()
            .any(|(_, on_join, _)| *on_join != OnJoin::None)
            .then_some(Self { rules })
    }

    /// How `room` keeps its last state (None: it does not), and for how long.
    pub fn rule_for(&self, room: &str) -> Option<(OnJoin, Duration)> {
        let (_, on_join, keep) = self.rules.iter().find(|(p, _, _)| glob_match(p, room))?;
        (*on_join != OnJoin::None).then_some((*on_join, *keep))
    }
}

/// One kept event.
#[derive(Debug, Clone, PartialEq)]
pub struct LastEvent {
    pub event: String,
    pub args: Vec<Value>,
    pub attachments: Vec<Bytes>,
    /// Its recovery offset, when it has one.
    pub seq: Option<u64>,
    /// When it was sent (Unix ms).
    pub at: u64,
}

/// A kept event as the cluster's engine holds it (no offset: offsets are each node's).
#[derive(Debug, Serialize, Deserialize)]
struct KeptEvent {
    event: String,
    args: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    attachments: Vec<String>,
    at: u64,
}

impl LastEvent {
    /// Its form in the cluster's engine.
    pub fn encode(&self) -> Vec<u8> {
        let base64 = base64::engine::general_purpose::STANDARD;
        let kept = KeptEvent {
            event: self.event.clone(),
            args: self.args.clone(),
            attachments: self.attachments.iter().map(|a| base64.encode(a)).collect(),
            at: self.at,
        };
        serde_json::to_vec(&kept).unwrap_or_default()
    }

    /// Read back from the cluster's engine.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let kept: KeptEvent = serde_json::from_slice(bytes).ok()?;
        let base64 = base64::engine::general_purpose::STANDARD;
        let attachments = (kept.attachments.iter())
            .map(|a| base64.decode(a).ok().map(Bytes::from))
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            event: kept.event,
            args: kept.args,
            attachments,
            seq: None,
            at: kept.at,
        })
    }

    /// The field it is kept under in its room: the event name, or "" when a room keeps one.
    pub fn field(&self, on_join: OnJoin) -> &str {
        match on_join {
            OnJoin::LastPerEvent => &self.event,
            _ => "",
        }
    }

    /// Its packet for `socket`, with its offset when the socket recovers.
    fn frames(&self, namespace: &str, socket: &Socket) -> packets::PacketFrames {
        let offset = (self.seq)
            .filter(|_| socket.pid().is_some() && socket.parser() != Parser::Legacy)
            .map(super::recovery::offset_text);
        packets::event_with_offset(
            socket.parser(),
            namespace,
            None,
            &self.event,
            &self.args,
            &self.attachments,
            offset.as_deref(),
        )
    }
}

/// What a room keeps.
#[derive(Debug, Default)]
struct RoomLast {
    /// Oldest first; one, or one per event name.
    events: Vec<LastEvent>,
    /// The cluster's engine was asked for it already (nothing came, or it is in `events`).
    fetched: bool,
}

/// One namespace's kept events.
pub struct LastState {
    config: LastStateConfig,
    rooms: HashMap<Room, RoomLast>,
    /// Prune ended entries when the store grows past this.
    prune_at: usize,
    /// Events given to joining sockets since start.
    given: u64,
}

impl LastState {
    pub fn new(config: LastStateConfig) -> Self {
        Self {
            config,
            rooms: HashMap::new(),
            prune_at: 1024,
            given: 0,
        }
    }

    pub fn config(&self) -> &LastStateConfig {
        &self.config
    }

    /// Whether any of `rooms` keeps a last state.
    pub fn covers(config: &LastStateConfig, rooms: &[Room]) -> bool {
        rooms.iter().any(|room| config.rule_for(room).is_some())
    }

    /// Keeps `event` as the last of each of `rooms` that keeps one.
    pub fn record(&mut self, rooms: &[Room], event: &LastEvent) {
        for room in rooms {
            let Some((on_join, _)) = self.config.rule_for(room) else {
                continue;
            };
            let kept = self.rooms.entry(room.clone()).or_default();
            kept.events
                .retain(|e| on_join == OnJoin::LastPerEvent && e.event != event.event);
            kept.events.push(event.clone());
        }
        if self.rooms.len() > self.prune_at {
            self.prune();
            self.prune_at = (self.rooms.len() * 2).max(1024);
        }
    }

    /// Fills a room from the cluster's engine, unless an event came here meanwhile (the room's
    /// sockets got that one live: it is newer). Answers whether it was filled.
    pub fn fill(&mut self, room: &Room, mut events: Vec<LastEvent>) -> bool {
        let kept = self.rooms.entry(room.clone()).or_default();
        kept.fetched = true;
        if !kept.events.is_empty() || events.is_empty() {
            return false;
        }
        events.sort_by_key(|e| e.at);
        kept.events = events;
        true
    }

    /// The events `room` keeps now (none ended), oldest first.
    pub fn events(&self, room: &str) -> Vec<LastEvent> {
        let Some((_, keep)) = self.config.rule_for(room) else {
            return Vec::new();
        };
        let since = now_millis().saturating_sub(keep.as_millis() as u64);
        (self.rooms.get(room).into_iter())
            .flat_map(|kept| kept.events.iter())
            .filter(|e| e.at >= since)
            .cloned()
            .collect()
    }

    /// Whether the cluster's engine should be asked for `room` (nothing here, not asked yet).
    pub fn should_fetch(&self, room: &str) -> bool {
        self.config.rule_for(room).is_some()
            && self
                .rooms
                .get(room)
                .is_none_or(|kept| !kept.fetched && kept.events.is_empty())
    }

    /// Forgets a room (no socket here listens to it any more, and this node may not hear what
    /// is sent to it meanwhile).
    pub fn forget(&mut self, room: &str) {
        self.rooms.remove(room);
    }

    /// Queues `room`'s last state on `socket`, which has just joined it.
    pub fn give(&mut self, namespace: &str, room: &str, socket: &Socket) {
        for event in self.events(room) {
            let _ = socket
                .conn()
                .send_all_unbounded(&event.frames(namespace, socket));
            self.given += 1;
        }
    }

    /// Rooms with a kept state, and events given to joining sockets since start.
    pub fn figures(&self) -> (usize, u64) {
        (self.rooms.len(), self.given)
    }

    fn prune(&mut self) {
        let now = now_millis();
        let config = &self.config;
        self.rooms.retain(|room, kept| {
            let keep = config
                .rule_for(room)
                .map_or(Duration::ZERO, |(_, keep)| keep);
            let since = now.saturating_sub(keep.as_millis() as u64);
            kept.events.retain(|e| e.at >= since);
            !kept.events.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;

    fn config(on_join: OnJoin) -> LastStateConfig {
        let history = [
            HistorySettings {
                rooms: "device-*".into(),
                on_join,
                last_max_age: HumanDuration(Duration::from_secs(60)),
                ..HistorySettings::default()
            },
            HistorySettings::default(),
        ];
        LastStateConfig::from_settings(&history).expect("keeps a last state")
    }

    fn event(name: &str, n: i64) -> LastEvent {
        LastEvent {
            event: name.into(),
            args: vec![n.into()],
            attachments: Vec::new(),
            seq: Some(n as u64),
            at: now_millis(),
        }
    }

    #[test]
    fn a_room_keeps_its_last_event_or_the_last_of_each_name() {
        let rooms: Vec<Room> = vec!["device-1".into(), "lobby".into()];
        let mut last = LastState::new(config(OnJoin::Last));
        last.record(&rooms, &event("heartbeat", 1));
        let status = event("status", 2);
        last.record(&rooms, &status);
        assert_eq!(last.events("device-1"), vec![status]);
        assert!(last.events("lobby").is_empty(), "not a kept room");

        let mut per_event = LastState::new(config(OnJoin::LastPerEvent));
        per_event.record(&rooms, &event("heartbeat", 1));
        per_event.record(&rooms, &event("status", 2));
        per_event.record(&rooms, &event("heartbeat", 3));
        let names: Vec<_> = (per_event.events("device-1").into_iter())
            .map(|e| (e.event, e.seq))
            .collect();
        assert_eq!(
            names,
            [
                ("status".to_owned(), Some(2)),
                ("heartbeat".to_owned(), Some(3))
            ]
        );
    }

    #[test]
    fn the_engine_fills_a_room_only_when_nothing_newer_came_here() {
        let room: Room = "device-9".into();
        let mut last = LastState::new(config(OnJoin::Last));
        assert!(last.should_fetch(&room));
        assert!(last.fill(&room, vec![event("heartbeat", 1)]));
        assert!(!last.should_fetch(&room));
        let other: Room = "device-8".into();
        // The same value compared, not a second one made later (its time could differ).
        let live = event("heartbeat", 5);
        last.record(std::slice::from_ref(&other), &live);
        assert!(
            !last.fill(&other, vec![event("heartbeat", 4)]),
            "live is newer"
        );
        assert_eq!(last.events(&other), vec![live]);
        assert!(!last.should_fetch("lobby"), "not a kept room");
    }

    #[test]
    fn ended_events_are_not_given_and_kept_events_survive_the_engine() {
        let room: Room = "device-2".into();
        let mut last = LastState::new(config(OnJoin::Last));
        let mut old = event("heartbeat", 1);
        old.at = now_millis() - 120_000;
        last.record(std::slice::from_ref(&room), &old);
        assert!(last.events(&room).is_empty());
        let mut binary = event("frame", 2);
        binary.attachments = vec![Bytes::from_static(b"\x00\x01")];
        let back = LastEvent::decode(&binary.encode()).expect("decodes");
        assert_eq!(back.attachments, binary.attachments);
        assert_eq!(
            (back.event, back.args, back.seq),
            ("frame".into(), vec![2.into()], None)
        );
        assert!(LastEvent::decode(b"{").is_none());
    }
}
