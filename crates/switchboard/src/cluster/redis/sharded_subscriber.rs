//! The Redis Cluster driver's subscriptions: every channel the core listens to is held with
//! `SSUBSCRIBE` on the master serving its slot, one connection per master (speaking RESP2
//! directly, `resp.rs`), and kept there as the cluster changes:
//! - a master that goes away (killed, failing over): its channels are placed again once the
//!   slot map names the new master, and the core is told [`Incoming::Up`] when every channel is
//!   held again (what was published meanwhile is gone, as with any pub/sub);
//! - a slot that migrates: Redis unsubscribes its channels unasked (`sunsubscribe`), and they
//!   are placed on the new owner; `MOVED` in answer to a subscription does the same;
//! - subscriptions are sent in batches of channels of one slot (never `CROSSSLOT`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::REDIS_TIMEOUT;
use super::cluster::RedisClusterDriver;
use super::resp::{self, Push};
use super::slots::slot_of;
use crate::cluster::driver::{Incoming, IncomingSender};

/// Channels subscribed in one command at most.
const CHANNELS_PER_COMMAND: usize = 100;
/// How often channels not held are placed again.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// What a connection to one master tells the subscriber.
#[derive(Debug)]
struct LinkEvent {
    address: String,
    link: u64,
    what: LinkNews,
}

#[derive(Debug)]
enum LinkNews {
    Push(Push),
    Closed,
}

/// A connection to one master.
struct Link {
    id: u64,
    commands: mpsc::UnboundedSender<Vec<u8>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Holds the subscriptions until shutdown.
pub(super) async fn run(
    driver: Arc<RedisClusterDriver>,
    mut changes: mpsc::UnboundedReceiver<(String, bool)>,
    incoming: IncomingSender,
    shutdown: CancellationToken,
) {
    let (events_sender, mut events) = mpsc::unbounded_channel();
    let mut subscriptions = Subscriptions {
        driver: driver.clone(),
        events: events_sender,
        incoming,
        links: HashMap::new(),
        next_link: 0,
        wanted: HashSet::new(),
        placed: HashMap::new(),
        confirmed: HashSet::new(),
        unplaced: HashSet::new(),
        lost: true,
        stale: false,
        logged_down: false,
    };
    let mut retry = tokio::time::interval(RETRY_EVERY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = driver.relink.notified() => subscriptions.relink(),
            change = changes.recv() => {
                let Some(change) = change else { return };
                subscriptions.change(change);
                // Every change queued now, then one placing for all of them.
                while let Ok(change) = changes.try_recv() {
                    subscriptions.change(change);
                }
                subscriptions.place().await;
            }
            event = events.recv() => {
                if let Some(event) = event {
                    subscriptions.on_event(event);
                }
            }
            _ = retry.tick(), if !subscriptions.unplaced.is_empty() => subscriptions.place().await,
        }
        if subscriptions.incoming.is_closed() {
            return;
        }
    }
}

struct Subscriptions {
    driver: Arc<RedisClusterDriver>,
    events: mpsc::UnboundedSender<LinkEvent>,
    incoming: IncomingSender,
    links: HashMap<String, Link>,
    next_link: u64,
    /// The channels the core listens to.
    wanted: HashSet<String>,
    /// Where each channel was subscribed.
    placed: HashMap<String, String>,
    /// Channels Redis confirmed.
    confirmed: HashSet<String>,
    /// Channels to subscribe (again).
    unplaced: HashSet<String>,
    /// Some channel was lost since the core was last told the link is up.
    lost: bool,
    /// The slot map is out of date (a master went away, a slot moved).
    stale: bool,
    logged_down: bool,
}

impl Subscriptions {
    fn change(&mut self, (channel, on): (String, bool)) {
        if on {
            if self.wanted.insert(channel.clone()) {
                self.unplaced.insert(channel);
            }
            return;
        }
        self.wanted.remove(&channel);
        self.unplaced.remove(&channel);
        self.confirmed.remove(&channel);
        if let Some(address) = self.placed.remove(&channel)
            && let Some(link) = self.links.get(&address)
        {
            let _ = link
                .commands
                .send(resp::encode_command(&["SUNSUBSCRIBE", channel.as_str()]));
        }
    }

    /// Subscribes the channels not held, each on its slot's master, in batches of one slot.
    async fn place(&mut self) {
        self.unplaced
            .retain(|channel| self.wanted.contains(channel));
        if self.unplaced.is_empty() {
            return;
        }
        if self.stale {
            self.driver.refresh_slots(true).await;
            self.stale = false;
        } else if self.driver.slots.read().is_empty() {
            self.driver.refresh_slots(false).await;
        }
        let mut batches: HashMap<(String, u16), Vec<String>> = HashMap::new();
        {
            let slots = self.driver.slots.read();
            for channel in &self.unplaced {
                let slot = slot_of(channel.as_bytes());
                if let Some(master) = slots.master_of(slot) {
                    batches
                        .entry((master.to_owned(), slot))
                        .or_default()
                        .push(channel.clone());
                }
            }
        }
        if batches.is_empty() {
            self.stale = true;
            self.log_down("no master serves these channels' slots yet");
            return;
        }
        for ((master, _slot), channels) in batches {
            let commands = self.link(&master).commands.clone();
            for chunk in channels.chunks(CHANNELS_PER_COMMAND) {
                let mut command = Vec::with_capacity(chunk.len() + 1);
                command.push("SSUBSCRIBE");
                command.extend(chunk.iter().map(String::as_str));
                let _ = commands.send(resp::encode_command(&command));
            }
            for channel in channels {
                self.unplaced.remove(&channel);
                self.placed.insert(channel, master.clone());
            }
        }
    }

    /// The connection to `address`, opened when there is none.
    fn link(&mut self, address: &str) -> &Link {
        if !self.links.contains_key(address) {
            self.next_link += 1;
            let id = self.next_link;
            let (commands, queued) = mpsc::unbounded_channel();
            let task = tokio::spawn(hold_link(
                address.to_owned(),
                id,
                self.driver.login.password.clone(),
                self.driver.login.username.clone(),
                queued,
                self.events.clone(),
            ));
            self.links
                .insert(address.to_owned(), Link { id, commands, task });
        }
        &self.links[address]
    }

    fn on_event(&mut self, event: LinkEvent) {
        let current = self
            .links
            .get(&event.address)
            .is_some_and(|link| link.id == event.link);
        if !current {
            return;
        }
        let here = |placed: &HashMap<String, String>, channel: &str| {
            placed.get(channel).is_some_and(|a| *a == event.address)
        };
        match event.what {
            LinkNews::Push(Push::Message { channel, payload }) => {
                let _ = self.incoming.send(Incoming::Message { channel, payload });
            }
            LinkNews::Push(Push::Subscribed(channel)) => {
                if here(&self.placed, &channel) {
                    self.confirmed.insert(channel);
                    self.maybe_up();
                }
            }
            LinkNews::Push(Push::Unsubscribed(channel)) => {
                // Unasked while the core still listens: the slot moved elsewhere.
                if self.wanted.contains(&channel) && here(&self.placed, &channel) {
                    tracing::info!(%channel, "cluster: a channel's slot moved; subscribing on its new master");
                    self.placed.remove(&channel);
                    self.confirmed.remove(&channel);
                    self.unplaced.insert(channel);
                    self.stale = true;
                }
            }
            LinkNews::Push(Push::Error(error)) => {
                let code = error.split(' ').next().unwrap_or_default();
                if matches!(code, "MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN") {
                    // The subscriptions on this master not confirmed yet go elsewhere.
                    let moved: Vec<String> = self
                        .placed
                        .iter()
                        .filter(|(channel, address)| {
                            **address == event.address && !self.confirmed.contains(*channel)
                        })
                        .map(|(channel, _)| channel.clone())
                        .collect();
                    for channel in moved {
                        self.placed.remove(&channel);
                        self.unplaced.insert(channel);
                    }
                    self.stale = true;
                } else {
                    tracing::warn!(%error, address = %event.address, "cluster: Redis refused a subscription");
                }
            }
            LinkNews::Push(Push::Other) => {}
            LinkNews::Closed => {
                self.links.remove(&event.address);
                self.lose_link(&event.address);
            }
        }
    }

    /// The channels held on `address` are lost: placed again once its slots have a master.
    fn lose_link(&mut self, address: &str) {
        let lost: Vec<String> = self
            .placed
            .iter()
            .filter(|(_, a)| *a == address)
            .map(|(channel, _)| channel.clone())
            .collect();
        for channel in lost {
            self.placed.remove(&channel);
            self.confirmed.remove(&channel);
            if self.wanted.contains(&channel) {
                self.unplaced.insert(channel);
                self.went_down(address);
            }
        }
        self.stale = true;
    }

    fn went_down(&mut self, address: &str) {
        if !self.lost {
            tracing::warn!(%address, "cluster: lost a Redis Cluster master; subscribing again");
        }
        self.lost = true;
        self.driver.up.store(false, Ordering::Release);
    }

    fn log_down(&mut self, why: &str) {
        if !self.logged_down {
            tracing::warn!(why, "cluster: cannot reach the Redis Cluster; retrying");
            self.logged_down = true;
        }
    }

    /// Every channel held again after a loss: the core is told the link is up.
    fn maybe_up(&mut self) {
        if self.lost
            && self.unplaced.is_empty()
            && self.wanted.iter().all(|c| self.confirmed.contains(c))
        {
            self.lost = false;
            self.logged_down = false;
            self.driver.up.store(true, Ordering::Release);
            tracing::info!(
                channels = self.wanted.len(),
                "cluster: subscribed to the Redis Cluster"
            );
            let _ = self.incoming.send(Incoming::Up);
        }
    }

    /// Drops every connection and subscribes everything again.
    fn relink(&mut self) {
        self.links.clear();
        self.placed.clear();
        self.confirmed.clear();
        self.unplaced = self.wanted.clone();
        self.lost = true;
        self.stale = true;
        self.driver.up.store(false, Ordering::Release);
    }
}

/// One subscribed connection: writes the commands it is given, passes on what Redis sends,
/// and says when it closes (or could not open).
async fn hold_link(
    address: String,
    link: u64,
    password: Option<String>,
    username: Option<String>,
    mut commands: mpsc::UnboundedReceiver<Vec<u8>>,
    events: mpsc::UnboundedSender<LinkEvent>,
) {
    let tell = |what: LinkNews| {
        let _ = events.send(LinkEvent {
            address: address.clone(),
            link,
            what,
        });
    };
    let connected =
        tokio::time::timeout(REDIS_TIMEOUT, tokio::net::TcpStream::connect(&address)).await;
    let Ok(Ok(stream)) = connected else {
        tell(LinkNews::Closed);
        return;
    };
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    if let Some(password) = &password {
        let auth = match &username {
            Some(user) => resp::encode_command(&["AUTH", user.as_str(), password.as_str()]),
            None => resp::encode_command(&["AUTH", password.as_str()]),
        };
        if writer.write_all(&auth).await.is_err() {
            tell(LinkNews::Closed);
            return;
        }
    }
    let mut buffer = BytesMut::with_capacity(16 * 1024);
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { return };
                if writer.write_all(&command).await.is_err() {
                    break;
                }
            }
            read = reader.read_buf(&mut buffer) => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                loop {
                    match resp::parse(&buffer) {
                        Ok(Some((reply, used))) => {
                            let _ = buffer.split_to(used);
                            tell(LinkNews::Push(Push::from_reply(reply)));
                        }
                        Ok(None) => break,
                        Err(error) => {
                            tracing::warn!(%error, %address, "cluster: Redis sent what is not RESP");
                            tell(LinkNews::Closed);
                            return;
                        }
                    }
                }
            }
        }
    }
    tell(LinkNews::Closed);
}
