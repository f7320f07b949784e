//! One `Workers.Connect` stream: opened, greeted, used, closed.
//!
//! [`open`] connects a channel, starts the call with an outbound
//! mpsc-backed stream whose first message is the Hello, and waits for the
//! Welcome. The resulting [`Session`] is owned by the connection loop, which
//! sends through [`Session::send`] (never blocks: a full queue means the
//! scheduler stopped reading, and the session is given up) and reads
//! [`Session::next_event`] (the next inbound message or a heartbeat tick).
//! It also remembers when each heartbeat went out, so the connection loop
//! can date the lease renewal a `LeaseRenewed` confirms.
//! Dropping a session ends the call; [`Session::close`] first ends the
//! outbound stream so the scheduler sees a clean goodbye.

use std::collections::VecDeque;
use std::time::Duration;

use pb::scheduler_message::Message as Inbound;
use pb::worker_message::Message as Outbound;
use pulp_common::proto::tasking::v1 as pb;
use pulp_common::proto::tasking::v1::workers_client::WorkersClient;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::Streaming;
use tonic::transport::Endpoint;

use crate::error::WorkerError;

/// How many outbound messages may wait for the network before the session
/// counts as stalled.
const OUTBOUND_CAPACITY: usize = 1024;
/// How long the scheduler may take to answer Hello.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Heartbeat interval when the Welcome gives none.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// Lease time to live when the Welcome gives none (Pulp's default).
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
/// How long [`Session::close`] waits for the scheduler to end its side.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most heartbeats remembered while waiting for their `LeaseRenewed`.
const MAX_UNANSWERED_HEARTBEATS: usize = 64;

/// What the Welcome said, validated.
#[derive(Debug, Clone)]
pub(crate) struct Welcome {
    /// Lease time to live.
    pub lease_ttl: Duration,
    /// Heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Held tasks the scheduler no longer knows as this worker's.
    pub stale: Vec<pb::HeldTask>,
}

/// Something that happened on a session.
#[derive(Debug)]
pub(crate) enum SessionEvent {
    /// A message from the scheduler.
    Message(Inbound),
    /// A message of a kind this worker does not know (a newer scheduler).
    Unknown,
    /// The stream ended.
    Ended(WorkerError),
    /// Time to send a heartbeat.
    Heartbeat,
}

/// An open, welcomed stream.
#[derive(Debug)]
pub(crate) struct Session {
    tx: mpsc::Sender<pb::WorkerMessage>,
    inbound: Streaming<pb::SchedulerMessage>,
    heartbeat: Interval,
    /// When each heartbeat not yet answered by a `LeaseRenewed` was sent,
    /// oldest first.
    unanswered: VecDeque<Instant>,
    /// When the Hello was sent: the lease runs at least from then.
    pub hello_at: Instant,
    /// When the Welcome arrived.
    pub opened_at: Instant,
}

/// Connects, says Hello and waits for the Welcome.
pub(crate) async fn open(
    endpoint: Endpoint,
    hello: pb::Hello,
) -> Result<(Session, Welcome), WorkerError> {
    let channel = endpoint.connect().await.map_err(WorkerError::Connect)?;
    let hello_at = Instant::now();
    let mut client = WorkersClient::new(channel);
    let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
    tx.try_send(pb::WorkerMessage {
        message: Some(Outbound::Hello(hello)),
    })
    .map_err(|_| WorkerError::Closed)?;

    let handshake = async {
        let response = client.connect(ReceiverStream::new(rx)).await?;
        let mut inbound = response.into_inner();
        loop {
            match inbound.next().await {
                None => return Err(WorkerError::Closed),
                Some(Err(status)) => return Err(status.into()),
                Some(Ok(pb::SchedulerMessage {
                    message: Some(Inbound::Welcome(welcome)),
                })) => return Ok((inbound, welcome)),
                // An empty message is a newer field this worker does not
                // know; skip it.
                Some(Ok(pb::SchedulerMessage { message: None })) => continue,
                Some(Ok(other)) => {
                    return Err(WorkerError::Protocol(format!(
                        "expected Welcome as the first message, got {other:?}"
                    )));
                }
            }
        }
    };
    let (inbound, welcome) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| WorkerError::HandshakeTimeout(HANDSHAKE_TIMEOUT))??;

    let welcome = Welcome {
        lease_ttl: positive_seconds(welcome.lease_ttl_seconds).unwrap_or(DEFAULT_LEASE_TTL),
        heartbeat_interval: positive_seconds(welcome.heartbeat_interval_seconds)
            .unwrap_or(DEFAULT_HEARTBEAT),
        stale: welcome.stale,
    };
    let opened_at = Instant::now();
    // The worker dates its lease from the Hello (the scheduler cannot have
    // started it earlier), so heartbeats are spaced from then too: after a
    // slow handshake (a scheduler waiting for its database or for a leader)
    // the first one goes out at once. Spaced from the Welcome instead, the
    // lease watchdog could fire before the first renewal and stop the tasks
    // just assigned.
    let mut heartbeat = tokio::time::interval_at(
        hello_at + welcome.heartbeat_interval,
        welcome.heartbeat_interval,
    );
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    Ok((
        Session {
            tx,
            inbound,
            heartbeat,
            unanswered: VecDeque::new(),
            hello_at,
            opened_at,
        },
        welcome,
    ))
}

fn positive_seconds(seconds: f64) -> Option<Duration> {
    (seconds > 0.0)
        .then(|| Duration::try_from_secs_f64(seconds).ok())
        .flatten()
}

impl Session {
    /// Queues a message for the scheduler without waiting.
    pub fn send(&self, message: Outbound) -> Result<(), WorkerError> {
        self.tx
            .try_send(pb::WorkerMessage {
                message: Some(message),
            })
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => WorkerError::Stalled(OUTBOUND_CAPACITY),
                mpsc::error::TrySendError::Closed(_) => WorkerError::Closed,
            })
    }

    /// Sends a heartbeat and remembers when, to date the `LeaseRenewed`
    /// that answers it.
    pub fn send_heartbeat(&mut self) -> Result<(), WorkerError> {
        let sent_at = Instant::now();
        self.send(Outbound::Heartbeat(pb::Heartbeat {}))?;
        // When full (a scheduler that stopped answering), the newest times
        // are the ones dropped, so a late answer is dated too early rather
        // than too late.
        if self.unanswered.len() < MAX_UNANSWERED_HEARTBEATS {
            self.unanswered.push_back(sent_at);
        }
        Ok(())
    }

    /// A `LeaseRenewed` arrived: when the heartbeat it answers was sent.
    /// Answers come in order; should one be missing, the next answer is
    /// paired with an older heartbeat, which only dates the renewal too
    /// early (the safe side). `None` for an answer to no heartbeat.
    pub fn lease_renewed(&mut self) -> Option<Instant> {
        self.unanswered.pop_front()
    }

    /// The next inbound message or heartbeat tick. Cancel-safe.
    pub async fn next_event(&mut self) -> SessionEvent {
        tokio::select! {
            biased;
            message = self.inbound.next() => match message {
                None => SessionEvent::Ended(WorkerError::Closed),
                Some(Err(status)) => SessionEvent::Ended(status.into()),
                Some(Ok(pb::SchedulerMessage { message: Some(m) })) => SessionEvent::Message(m),
                Some(Ok(pb::SchedulerMessage { message: None })) => SessionEvent::Unknown,
            },
            _ = self.heartbeat.tick() => SessionEvent::Heartbeat,
        }
    }

    /// Ends the outbound stream, then waits briefly for the scheduler to end
    /// its side.
    pub async fn close(self) {
        let Session {
            tx, mut inbound, ..
        } = self;
        drop(tx);
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Some(Ok(_)) = inbound.next().await {}
        })
        .await;
    }
}
