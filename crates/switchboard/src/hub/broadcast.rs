//! Broadcast: pick the recipients (rooms, minus excluded rooms and sockets), encode the packet
//! ONCE into shared frames, and send those same frames to every recipient (queued on each, then
//! written by the engine's flusher threads for a large broadcast or by each recipient's
//! connection for a small one, see `deliver`). A socket in several of
//! the targeted rooms is reached once. Nothing here waits on a recipient: a full queue closes
//! that recipient (see `EngineConn::send_all`) and the broadcast goes on.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::adapter::{NotTaken, TakenReceipt, TakenSender, until_taken};
use super::last_state::{LastEvent, LastState};
use super::namespace::Namespace;
use super::packets::{self, PacketFrames, Parser};
use super::socket::{Room, Socket};
use crate::clock::now_millis;
use crate::engine::{Frame, SendBatch};

/// The server window nearly every client leaves permessage-deflate at (15 bits): a broadcast
/// is compressed once for all of them; a client that asked for a smaller one gets its own copy.
const DEFLATE_WINDOW: u8 = 15;
use crate::trace::{Kind, Span};
use std::cell::OnceCell;

/// Who a broadcast reaches within one namespace. No rooms means everyone.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub rooms: Vec<Room>,
    pub except_rooms: Vec<Room>,
    pub except_sockets: Vec<Arc<str>>,
    /// Worth nothing late: not queued for a socket that has something queued already, never
    /// stored, no offset.
    pub volatile: bool,
}

/// A broadcast being built: `ns.to("a").to("b").except("c").emit("ev", &[...])`.
#[derive(Clone)]
pub struct Broadcast {
    namespace: Arc<Namespace>,
    target: Target,
}

impl Broadcast {
    pub(crate) fn new(namespace: Arc<Namespace>) -> Self {
        Self {
            namespace,
            target: Target::default(),
        }
    }

    pub fn to(mut self, room: impl Into<Room>) -> Self {
        self.target.rooms.push(room.into());
        self
    }

    pub fn except(mut self, room: impl Into<Room>) -> Self {
        self.target.except_rooms.push(room.into());
        self
    }

    pub fn except_socket(mut self, id: Arc<str>) -> Self {
        self.target.except_sockets.push(id);
        self
    }

    /// A volatile event (see [`Target::volatile`]).
    pub fn volatile(mut self, volatile: bool) -> Self {
        self.target.volatile = volatile;
        self
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Emits to every targeted socket; returns how many it reached.
    pub fn emit(&self, event: &str, args: &[Value]) -> usize {
        self.emit_binary(event, args, &[])
    }

    pub fn emit_binary(&self, event: &str, args: &[Value], attachments: &[Bytes]) -> usize {
        self.publish(event, args, attachments).reached
    }

    /// Emits and reports the reach and, with recovery on, the event's offset.
    pub fn publish(&self, event: &str, args: &[Value], attachments: &[Bytes]) -> Published {
        self.namespace
            .publish(&self.target, event, args, attachments)
    }

    /// As [`Broadcast::publish`] (delivered the same way, at once), with a receipt telling
    /// when the cluster's engine has taken it (none on a node of its own): for a caller that
    /// answers someone later (a client event's callback) without holding what comes next.
    pub fn publish_with_receipt(
        &self,
        event: &str,
        args: &[Value],
        attachments: &[Bytes],
    ) -> (Published, Option<TakenReceipt>) {
        self.namespace
            .publish_receipted(&self.target, event, args, attachments)
    }

    /// As [`Broadcast::publish`], for a caller that tells someone it is done (the HTTP API):
    /// resolves once the cluster's engine has taken the event, so that an answer means every
    /// node delivers it, in the order of the answers. On the pub/sub adapter this node's
    /// sockets get it only then, so that a caller told [`NotTaken`] may send it again without
    /// anyone getting it twice; on a shared log they get it from the log, and the offset is the
    /// log's. On a node of its own, as `publish`.
    pub async fn publish_taken(
        &self,
        event: &str,
        args: &[Value],
        attachments: &[Bytes],
    ) -> Result<Published, NotTaken> {
        let namespace = &self.namespace;
        // With tracing on and a traced caller (an API call, a route): the broadcast, and the
        // cluster's publish inside it, are spans of its trace.
        let mut span = Span::child("broadcast", Kind::Internal);
        if let Some(span) = &mut span {
            span.set("switchboard.namespace", namespace.name());
            span.set("switchboard.event", event);
            span.set("switchboard.rooms", self.target.rooms.len());
        }
        let Some(cluster) = namespace.cluster.get() else {
            let published = self.publish(event, args, attachments);
            if let Some(span) = &mut span {
                span.set("switchboard.reached", published.reached);
            }
            return Ok(published);
        };
        namespace.keep_last_in_cluster(&self.target, event, args, attachments);
        let publish = span
            .as_ref()
            .and_then(|s| Span::start("cluster publish", Kind::Producer, Some(s.context())));
        let offset = until_taken(cluster.as_ref(), |taken| {
            let name = namespace.name();
            cluster.broadcast(name, &self.target, event, args, attachments, Some(taken));
        })
        .await;
        if let (Some(mut publish), Err(_)) = (publish, &offset) {
            publish.fail("the cluster's engine did not take it in time");
        }
        let offset = offset?;
        let published = match cluster.shared_log() {
            Some(_) => Published {
                reached: self.count_here(),
                offset,
            },
            None => namespace.publish_local(&self.target, event, args, attachments),
        };
        if let Some(span) = &mut span {
            span.set("switchboard.reached", published.reached);
        }
        Ok(published)
    }

    /// As [`Broadcast::join_rooms`] / [`Broadcast::leave_rooms`], resolving once the cluster's
    /// engine has taken the change (see [`Broadcast::publish_taken`]).
    pub async fn change_rooms_taken(
        &self,
        rooms: &[String],
        join: bool,
    ) -> Result<usize, NotTaken> {
        let namespace = &self.namespace;
        let Some(cluster) = namespace.cluster.get() else {
            return Ok(self.local_change_rooms(rooms, join));
        };
        until_taken(cluster.as_ref(), |taken| {
            cluster.membership(namespace.name(), &self.target, rooms, join, Some(taken));
        })
        .await?;
        if cluster.shared_log().is_some() {
            return Ok(self.count_here());
        }
        Ok(self.local_change_rooms(rooms, join))
    }

    /// As [`Broadcast::disconnect_with`], resolving once the cluster's engine has taken it (see
    /// [`Broadcast::publish_taken`]).
    pub async fn disconnect_taken(&self, close_transport: bool) -> Result<usize, NotTaken> {
        let namespace = &self.namespace;
        let Some(cluster) = namespace.cluster.get() else {
            return Ok(self.local_disconnect(close_transport));
        };
        until_taken(cluster.as_ref(), |taken| {
            cluster.disconnect(namespace.name(), &self.target, close_transport, Some(taken));
        })
        .await?;
        if cluster.shared_log().is_some() {
            return Ok(self.count_here());
        }
        Ok(self.local_disconnect(close_transport))
    }

    /// How many of this node's sockets the target picks.
    fn count_here(&self) -> usize {
        let mut count = 0;
        self.namespace.for_each_target(&self.target, |_| count += 1);
        count
    }

    /// The targeted sockets on this node (for join/leave/disconnect by room).
    pub fn sockets(&self) -> Vec<Arc<Socket>> {
        let mut found = Vec::new();
        self.namespace
            .for_each_target(&self.target, |socket| found.push(socket.clone()));
        found
    }

    pub fn join(&self, room: impl Into<Room>) {
        let room: Room = room.into();
        self.join_rooms(&[room.to_string()]);
    }

    pub fn leave(&self, room: &str) {
        self.leave_rooms(&[room.to_owned()]);
    }

    /// The targeted sockets join `rooms`, on every node; answers how many of this node's did.
    pub fn join_rooms(&self, rooms: &[String]) -> usize {
        self.change_rooms(rooms, true)
    }

    /// The targeted sockets leave `rooms`, on every node; answers how many of this node's did.
    pub fn leave_rooms(&self, rooms: &[String]) -> usize {
        self.change_rooms(rooms, false)
    }

    /// Whether this node's own room changes and disconnects wait to be read back from a shared,
    /// ordered log (as its broadcasts do), so that they keep their order with them: an emit to a
    /// socket then its disconnect reach it in that order.
    fn waits_for_log(&self) -> bool {
        self.namespace
            .cluster
            .get()
            .is_some_and(|c| c.shared_log().is_some() && c.is_connected())
    }

    fn change_rooms(&self, rooms: &[String], join: bool) -> usize {
        let reached = if self.waits_for_log() {
            self.sockets().len()
        } else {
            self.local_change_rooms(rooms, join)
        };
        if let Some(cluster) = self.namespace.cluster.get() {
            cluster.membership(self.namespace.name(), &self.target, rooms, join, None);
        }
        reached
    }

    /// Joins or leaves this node's targeted sockets only (what another node asked for).
    pub fn local_change_rooms(&self, rooms: &[String], join: bool) -> usize {
        let sockets = self.sockets();
        for socket in &sockets {
            for room in rooms {
                if join {
                    socket.join(room.as_str());
                } else {
                    socket.leave(room);
                }
            }
        }
        sockets.len()
    }

    /// Disconnects the targeted sockets on every node; answers how many of this node's.
    pub fn disconnect(&self) -> usize {
        self.disconnect_with(false)
    }

    /// Disconnects the targeted sockets on every node, or with `close_transport` closes their
    /// connections (their clients reconnect); answers how many of this node's.
    pub fn disconnect_with(&self, close_transport: bool) -> usize {
        let reached = if self.waits_for_log() {
            self.sockets().len()
        } else {
            self.local_disconnect(close_transport)
        };
        if let Some(cluster) = self.namespace.cluster.get() {
            cluster.disconnect(self.namespace.name(), &self.target, close_transport, None);
        }
        reached
    }

    /// Disconnects this node's targeted sockets only (what another node asked for).
    pub fn local_disconnect(&self, close_transport: bool) -> usize {
        let sockets = self.sockets();
        for socket in &sockets {
            if close_transport {
                socket.conn().close(crate::engine::CloseReason::ForcedClose);
            } else {
                socket.disconnect();
            }
        }
        sockets.len()
    }

    /// Emits to this node's targeted sockets only (a broadcast another node made).
    pub fn local_publish(&self, event: &str, args: &[Value], attachments: &[Bytes]) -> Published {
        self.namespace
            .publish_local(&self.target, event, args, attachments)
    }

    /// Emits to this node's targeted sockets an event of the shared log, with its offset.
    pub fn local_publish_logged(
        &self,
        event: &str,
        args: &[Value],
        attachments: &[Bytes],
        seq: u64,
    ) -> Published {
        self.namespace
            .publish_logged(&self.target, event, args, attachments, seq)
    }
}

/// Where an event's offset comes from.
#[derive(Clone, Copy)]
enum OffsetFrom {
    /// The namespace's next number.
    Counter,
    /// The shared log's entry (its sequence number).
    Log(u64),
    /// None: the event is not stored.
    Nowhere,
}

/// What an emit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Published {
    /// Local sockets it was queued for.
    pub reached: usize,
    /// Its recovery offset, when the namespace stores events.
    pub offset: Option<u64>,
}

impl Namespace {
    /// Publishes an event here and, when clustered, on the other nodes. With an adapter that
    /// orders broadcasts (a shared log), this node's sockets get it when the log brings it back,
    /// in the log's order and with its offset, like every other node's; while the log is out of
    /// reach, they get it at once, with no offset.
    pub(crate) fn publish(
        &self,
        target: &Target,
        event: &str,
        args: &[Value],
        attachments: &[Bytes],
    ) -> Published {
        self.publish_telling(target, event, args, attachments, None)
    }

    /// As [`Namespace::publish`], with a receipt from the cluster's engine when there is a
    /// cluster (what a shared log could not be given, its link down, is never taken).
    pub(crate) fn publish_receipted(
        &self,
        target: &Target,
        event: &str,
        args: &[Value],
        attachments: &[Bytes],
    ) -> (Published, Option<TakenReceipt>) {
        if self.cluster.get().is_none() {
            return (self.publish_local(target, event, args, attachments), None);
        }
        let (taken, receipt) = tokio::sync::oneshot::channel();
        let published = self.publish_telling(target, event, args, attachments, Some(taken));
        (published, Some(receipt))
    }

    /// Publishes, telling `taken` (when given) whether the cluster's engine took it. A sender
    /// whose receipt was dropped means nobody waits: the driver would leave the command out.
    fn publish_telling(
        &self,
        target: &Target,
        event: &str,
        args: &[Value],
        attachments: &[Bytes],
        taken: Option<TakenSender>,
    ) -> Published {
        let Some(cluster) = self.cluster.get() else {
            return self.publish_local(target, event, args, attachments);
        };
        self.keep_last_in_cluster(target, event, args, attachments);
        if cluster.shared_log().is_some() && cluster.is_connected() {
            let mut reached = 0;
            self.for_each_target(target, |_| reached += 1);
            cluster.broadcast(self.name(), target, event, args, attachments, taken);
            return Published {
                reached,
                offset: None,
            };
        }
        let published = self.publish_local(target, event, args, attachments);
        if cluster.shared_log().is_none() {
            cluster.broadcast(self.name(), target, event, args, attachments, taken);
        }
        published
    }

    /// The node that publishes an event to rooms that keep a last state keeps it in the
    /// cluster's engine for the nodes that do not hear it (started later, or not listening).
    fn keep_last_in_cluster(
        &self,
        target: &Target,
        event: &str,
        args: &[Value],
        attachments: &[Bytes],
    ) {
        let (Some(cluster), Some((config, _))) = (self.cluster.get(), self.last_state.get()) else {
            return;
        };
        let mut kept: Option<LastEvent> = None;
        for room in &target.rooms {
            let Some((on_join, ttl)) = config.rule_for(room) else {
                continue;
            };
            let last = kept.get_or_insert_with(|| LastEvent {
                event: event.to_owned(),
                args: args.to_vec(),
                attachments: attachments.to_vec(),
                seq: None,
                at: now_millis(),
            });
            cluster.keep_last(self.name(), room, last.field(on_join), last.encode(), ttl);
        }
    }

    /// Encodes an event once per form its recipients read and queues it on every targeted socket
    /// of this node; with recovery on, gives it the next offset and stores it (in the JSON form
    /// with its offset), all under the history lock so offsets reach every client in order and
    /// a restore never misses or repeats one. On a shared log, offsets are the log's: an event
    /// that does not come from it (an emit to a user's sockets) carries none.
    pub(crate) fn publish_local(
        &self,
        target: &Target,
        event: &str,
        args: &[Value],
        attachments: &[Bytes],
    ) -> Published {
        let offsets_from_log = self.cluster.get().is_some_and(|c| c.shared_log().is_some());
        let offset = if offsets_from_log {
            OffsetFrom::Nowhere
        } else {
            OffsetFrom::Counter
        };
        self.publish_here(target, event, args, attachments, offset)
    }

    /// Delivers an event of the shared log here, with its offset `seq`.
    pub(crate) fn publish_logged(
        &self,
        target: &Target,
        event: &str,
        args: &[Value],
        attachments: &[Bytes],
        seq: u64,
    ) -> Published {
        self.publish_here(target, event, args, attachments, OffsetFrom::Log(seq))
    }

    fn publish_here(
        &self,
        target: &Target,
        event: &str,
        args: &[Value],
        attachments: &[Bytes],
        offset: OffsetFrom,
    ) -> Published {
        let name = self.name();
        let encode = |parser: Parser, offset: Option<&str>| {
            packets::event_with_offset(parser, name, None, event, args, attachments, offset)
        };
        let binary = !attachments.is_empty();
        // A room's last state is what its sockets got last: kept while the delivery holds the
        // store, so that a socket joining meanwhile gets the event once (see `last_state.rs`).
        let keep_last = |last: Option<&mut LastState>, seq: Option<u64>| {
            if let Some(last) = last {
                let kept = LastEvent {
                    event: event.to_owned(),
                    args: args.to_vec(),
                    attachments: attachments.to_vec(),
                    seq,
                    at: now_millis(),
                };
                last.record(&target.rooms, &kept);
            }
        };
        let recovery = match (self.recovery.get(), offset) {
            // A volatile event is never stored and carries no offset.
            (Some(recovery), OffsetFrom::Counter | OffsetFrom::Log(_)) if !target.volatile => {
                recovery
            }
            _ => {
                let mut last = self.last_state_of(&target.rooms);
                let frames = encode(Parser::Json, None);
                let reached = self.deliver(target, &frames, None, binary, &encode);
                keep_last(last.as_deref_mut(), None);
                return Published {
                    reached,
                    offset: None,
                };
            }
        };
        let mut history = recovery.lock();
        let mut last = self.last_state_of(&target.rooms);
        let seq = match offset {
            OffsetFrom::Log(seq) => seq,
            _ => history.next_seq(),
        };
        let offset = super::recovery::offset_text(seq);
        let frames = encode(Parser::Json, Some(&offset));
        let reached = self.deliver(target, &frames, Some(&offset), binary, &encode);
        keep_last(last.as_deref_mut(), Some(seq));
        drop(last);
        history.store(
            seq,
            &target.rooms,
            frames,
            target.except_rooms.clone(),
            target.except_sockets.clone(),
        );
        Published {
            reached,
            offset: Some(seq),
        }
    }

    /// Calls `visit` once for each socket the target selects.
    pub(crate) fn for_each_target(&self, target: &Target, mut visit: impl FnMut(&Arc<Socket>)) {
        let index = self.rooms.read();
        let sockets = self.sockets.read();
        let mut excluded: HashSet<&str> = target.except_sockets.iter().map(|id| &**id).collect();
        for room in &target.except_rooms {
            Namespace::each_member(&index, &sockets, room, |socket| {
                excluded.insert(socket.id());
            });
        }
        let mut visit_unless_excluded = |socket: &Arc<Socket>| {
            if excluded.is_empty() || !excluded.contains(&**socket.id()) {
                visit(socket);
            }
        };
        match target.rooms.as_slice() {
            [] => sockets.values().for_each(visit_unless_excluded),
            [room] => Namespace::each_member(&index, &sockets, room, visit_unless_excluded),
            rooms => {
                let mut seen = HashSet::new();
                for room in rooms {
                    Namespace::each_member(&index, &sockets, room, |socket| {
                        if seen.insert(socket.id().clone()) {
                            visit_unless_excluded(socket);
                        }
                    });
                }
            }
        }
    }

    /// Sends one event to every targeted socket in the form it reads; returns how many accepted
    /// it. `json` is the default parser's form, with `offset` as its last argument when the
    /// event has one. A socket that reads another form (a MessagePack client, or a client that
    /// did not ask for recovery, which gets no offset) gets that form, encoded by `encode` when
    /// the first such socket is met: once per form, never once per recipient.
    ///
    /// The frames are queued on each recipient and written without a task wake-up per
    /// recipient: a large broadcast's by the engine's flusher threads, a small one's (a chat
    /// room) by this worker once it is idle, so that in a burst what several senders sent one
    /// client goes out in one write (see `engine/flush.rs`).
    pub(crate) fn deliver(
        &self,
        target: &Target,
        json: &[Frame],
        offset: Option<&str>,
        binary: bool,
        encode: &dyn Fn(Parser, Option<&str>) -> PacketFrames,
    ) -> usize {
        let started = std::time::Instant::now();
        let reach = self.reach_at_most(target);
        // The other forms: JSON without the offset, MessagePack with it, MessagePack without,
        // socket.io v2's (its binary attachments differ; with none it reads JSON's).
        let forms: [OnceCell<PacketFrames>; 4] = Default::default();
        let mut primary = SendBatch::new(json, reach);
        let mut others: [Option<SendBatch<'_>>; 4] = Default::default();
        // Each form compressed (permessage-deflate, the usual 15-bit window), once for all the
        // recipients that take it: index `PRIMARY` is `json`'s.
        const PRIMARY: usize = 4;
        let deflated: [OnceCell<PacketFrames>; 5] = Default::default();
        let mut deflated_batches: [Option<SendBatch<'_>>; 5] = Default::default();
        let form_frames = |form: usize| -> &PacketFrames {
            forms[form].get_or_init(|| match form {
                0 => encode(Parser::Json, None),
                1 => encode(Parser::MsgPack, offset),
                2 => encode(Parser::MsgPack, None),
                _ => encode(Parser::Legacy, None),
            })
        };
        let mut dropped = 0u64;
        // Off (the default): no recipient is asked whether it negotiated compression.
        let compression = crate::engine::compression_on();
        self.for_each_target(target, |socket| {
            if target.volatile && socket.conn().would_wait() {
                dropped += 1;
                return;
            }
            let plain = offset.is_some() && socket.pid().is_none();
            let form = match (socket.parser(), plain) {
                (Parser::Json, false) => PRIMARY,
                (Parser::Json, true) => 0,
                (Parser::MsgPack, false) if offset.is_some() => 1,
                (Parser::MsgPack, _) => 2,
                (Parser::Legacy, _) if binary => 3,
                // No recovery for v2 clients: never an offset.
                (Parser::Legacy, _) if offset.is_some() => 0,
                (Parser::Legacy, _) => PRIMARY,
            };
            if compression && socket.conn().deflate() == Some(DEFLATE_WINDOW) {
                let frames = deflated[form].get_or_init(|| {
                    let base = if form == PRIMARY {
                        json
                    } else {
                        form_frames(form)
                    };
                    (base.iter())
                        .map(|f| f.deflated(DEFLATE_WINDOW).unwrap_or_else(|| f.clone()))
                        .collect()
                });
                return deflated_batches[form]
                    .get_or_insert_with(|| SendBatch::new(frames, reach))
                    .send(socket.conn());
            }
            if form == PRIMARY {
                return primary.send(socket.conn());
            }
            others[form]
                .get_or_insert_with(|| SendBatch::new(form_frames(form), reach))
                .send(socket.conn());
        });
        let reached = primary.finish()
            + others
                .into_iter()
                .chain(deflated_batches)
                .flatten()
                .map(SendBatch::finish)
                .sum::<usize>();
        if dropped > 0 {
            self.count_volatile_dropped(dropped);
        }
        self.fanout.observe(started.elapsed().as_secs_f64());
        reached
    }

    /// How many sockets a target can reach at most (exclusions and overlaps not counted), from
    /// the rooms' sizes alone: no walk over the members.
    fn reach_at_most(&self, target: &Target) -> usize {
        // The namespace's lock order: the room index, then the socket map.
        let index = self.rooms.read();
        let sockets = self.sockets.read();
        if target.rooms.is_empty() {
            return sockets.len();
        }
        target
            .rooms
            .iter()
            .map(|room| {
                index.get(room).map_or(0, |members| members.len())
                    + usize::from(sockets.contains_key(room))
            })
            .sum()
    }
}
