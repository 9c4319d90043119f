//! One Engine.IO session inside the engine, and the supervisor task of polling sessions.
//!
//! The supervisor owns a polling session's teardown: it is the single place where a closed
//! session is reported to the handler and removed from the engine, whatever closed it (client,
//! transport, server). A session opened on WebSocket is torn down by its connection instead
//! (see `websocket.rs`). Heartbeats of both run on the engine's one timer (`heartbeat.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use super::heartbeat::HeartbeatState;
use super::{CloseReason, Engine, EngineConn, EngineHandler, TransportKind};

/// The longest a closing polling session waits for the GET that delivers its close.
const MAX_CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Where a polling session stands in an upgrade to WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum UpgradeStage {
    None = 0,
    /// A WebSocket with this sid is open; no probe yet.
    Opened = 1,
    /// `3probe` was sent: polling answers `6` until the client sends `5`.
    Probed = 2,
}

pub(crate) struct Session<H: EngineHandler> {
    pub(crate) conn: Arc<EngineConn>,
    pub(crate) state: H::State,
    upgrade_stage: AtomicU8,
    pub(crate) heartbeat: HeartbeatState,
}

impl<H: EngineHandler> Session<H> {
    pub(crate) fn new(conn: Arc<EngineConn>, state: H::State) -> Self {
        Self {
            conn,
            state,
            upgrade_stage: AtomicU8::new(UpgradeStage::None as u8),
            heartbeat: HeartbeatState::default(),
        }
    }

    pub(crate) fn upgrade_stage(&self) -> UpgradeStage {
        match self.upgrade_stage.load(Ordering::Acquire) {
            1 => UpgradeStage::Opened,
            2 => UpgradeStage::Probed,
            _ => UpgradeStage::None,
        }
    }

    /// Claims the session for an upgrade; false if it is not a polling session free to upgrade.
    pub(crate) fn begin_upgrade(&self) -> bool {
        self.conn.transport() == TransportKind::Polling
            && self
                .upgrade_stage
                .compare_exchange(
                    UpgradeStage::None as u8,
                    UpgradeStage::Opened as u8,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    pub(crate) fn set_upgrade_stage(&self, stage: UpgradeStage) {
        self.upgrade_stage.store(stage as u8, Ordering::Release);
        // A pending polling GET re-checks the stage (it answers `6` once probed).
        self.conn.wake_poll();
    }
}

/// Reports a closed session to the handler (once, from its supervisor).
pub(crate) fn report_closed<H: EngineHandler>(
    engine: &Engine<H>,
    session: &Session<H>,
    reason: CloseReason,
) {
    tracing::debug!(sid = %session.conn.sid(), reason = reason.as_str(), "session closed");
    engine
        .handler()
        .on_close(&session.state, &session.conn, reason);
}

/// Supervises a polling session (also once it upgrades): waits until it closes, then tears it
/// down.
pub(crate) async fn supervise<H: EngineHandler>(engine: Arc<Engine<H>>, session: Arc<Session<H>>) {
    let conn = &session.conn;
    let config = engine.config();
    let reason = conn.closed().await;

    report_closed(&engine, &session, reason);
    if conn.transport() == TransportKind::Polling && reason.answers_final_poll() {
        // Give the client's next GET the chance to collect what was queued (a DISCONNECT, say)
        // and the close packet, or the noop for the client's own close (its GET may arrive just
        // after its close POST); that GET removes the session itself. A live polling client has
        // a GET pending or sends one at once, so the wait is short; an upgrade that completes
        // meanwhile ends it too (the WebSocket delivers instead).
        let linger = config.ping_timeout.min(MAX_CLOSE_LINGER);
        if let Some(polling) = conn.polling() {
            let _ = tokio::time::timeout(linger, polling.final_poll_done.notified()).await;
        }
    }
    engine.remove_session(conn.sid());
}
