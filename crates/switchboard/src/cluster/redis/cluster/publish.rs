//! The Redis Cluster driver's publisher: what the core says, in order, in batches grouped by
//! the master serving each command's slot, following MOVED, ASK, TRYAGAIN and CLUSTERDOWN (the
//! slot map read again, the command sent where it now belongs) until it is taken or refused.

use super::*;

impl RedisClusterDriver {
    pub(super) async fn publish_loop(
        self: Arc<Self>,
        mut outgoing: mpsc::Receiver<Outgoing>,
        shutdown: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(BATCH_MAX);
        loop {
            let received = tokio::select! {
                biased;
                received = outgoing.recv_many(&mut batch, BATCH_MAX) => received,
                _ = shutdown.cancelled() => return,
            };
            if received == 0 {
                return;
            }
            let mut commands = Vec::new();
            let mut waiting = Vec::new();
            for item in batch.drain(..) {
                match item {
                    Outgoing::Command {
                        route,
                        command,
                        taken,
                    } => commands.push(Pending {
                        route,
                        command,
                        taken,
                    }),
                    Outgoing::Sent(done) => waiting.push(done),
                }
            }
            if !commands.is_empty() {
                self.send_batch(commands).await;
            }
            for done in waiting {
                let _ = done.send(());
            }
        }
    }

    /// Sends commands to their masters, one pipeline per master (in the order given); what the
    /// cluster redirects or cannot take now is sent again once the slot map is read anew,
    /// until it is taken, its waiter gives up, or [`TRIES`] runs out.
    pub(super) async fn send_batch(&self, mut pending: Vec<Pending>) {
        let mut tries = 0;
        loop {
            // A waiter may have given up meanwhile (and answered its caller 503).
            pending.retain(|p| !p.taken.as_ref().is_some_and(|t| t.is_closed()));
            if pending.is_empty() {
                return;
            }
            let mut by_master: Vec<(String, Vec<Pending>)> = Vec::new();
            let mut unrouted = Vec::new();
            for command in pending.drain(..) {
                match self.master_for(&command.route).await {
                    Some(master) => match by_master.iter_mut().find(|(m, _)| *m == master) {
                        Some((_, group)) => group.push(command),
                        None => by_master.push((master, vec![command])),
                    },
                    None => unrouted.push(command),
                }
            }
            let sent = futures_util::future::join_all(
                by_master
                    .into_iter()
                    .map(|(master, group)| self.send_to(master, group)),
            )
            .await;
            pending = unrouted;
            for again in sent {
                pending.extend(again);
            }
            if pending.is_empty() {
                return;
            }
            tries += 1;
            if tries >= TRIES {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100 * u64::from(tries.min(5)))).await;
            self.refresh_slots(true).await;
        }
        let messages = pending.len();
        self.dropped.fetch_add(messages as u64, Ordering::Relaxed);
        tracing::error!(
            messages,
            "cluster: the Redis Cluster did not take messages; dropped"
        );
        for command in pending {
            tell_taken(command.taken, Err(NotTaken));
        }
    }

    /// Sends a group of commands to one master in a pipeline; answers what it did not take.
    pub(super) async fn send_to(&self, master: String, group: Vec<Pending>) -> Vec<Pending> {
        let mut connection = match self.connection(&master).await {
            Ok(connection) => connection,
            Err(_) => return group,
        };
        let mut pipe = redis::pipe();
        for command in &group {
            pipe.add_command(command.command.clone());
        }
        match connection.send_packed_commands(&pipe, 0, group.len()).await {
            Ok(replies) => {
                let mut again = Vec::new();
                for (command, reply) in group.into_iter().zip(replies) {
                    match reply {
                        redis::Value::ServerError(error) if redirected(error.code()) => {
                            again.push(command)
                        }
                        redis::Value::ServerError(error) => {
                            tracing::warn!(error = %error.code(), "cluster: Redis refused a command");
                            tell_taken(command.taken, Err(NotTaken));
                        }
                        // An XADD's reply is the entry's id: its offset.
                        reply => tell_taken(command.taken, Ok(entry_offset(&reply))),
                    }
                }
                again
            }
            Err(_) => {
                self.forget(&master);
                group
            }
        }
    }
}

pub(super) struct Pending {
    route: Vec<u8>,
    command: redis::Cmd,
    taken: Option<TakenSender>,
}

/// Errors that mean "ask the cluster again": the slot moved, is moving, or has no master yet.
pub(super) fn redirected(code: &str) -> bool {
    matches!(code, "MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN")
}

pub(super) fn follows_cluster(error: &redis::RedisError) -> bool {
    matches!(
        error.kind(),
        redis::ErrorKind::Moved
            | redis::ErrorKind::Ask
            | redis::ErrorKind::TryAgain
            | redis::ErrorKind::ClusterDown
    ) || error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
}
