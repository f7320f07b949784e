//! Several scheduler replicas on one PostgreSQL: one leader, elected.
//!
//! The engine is the single owner of scheduling state (reservations,
//! assignment, leases), so exactly one replica runs it: the *leader*. Every
//! replica campaigns by waiting on a PostgreSQL session advisory lock on a
//! connection of its own; the holder becomes leader, bumps the `epoch` in the
//! `scheduler_leader` row, records the address other replicas reach it on,
//! rebuilds the state from the database and starts the engine. When a leader
//! dies its database session ends, the lock is released and the next replica
//! in line takes over within about a second.
//!
//! Fencing: every engine round checks, inside its transaction, that the
//! `epoch` is still its own (`FOR SHARE`), and a takeover updates that row.
//! A leader cut off from the database (or replaced) therefore cannot commit
//! anything after a new leader took over; it stops its engine and campaigns
//! again.
//!
//! Followers serve reads (GetTask, ListTasks, groups, workers) from the
//! database themselves and forward what needs the engine (Dispatch, Enqueue,
//! CancelTask, WatchTask, CancelTaskGroup and the worker streams) to the
//! leader over gRPC. So any replica serves clients and workers; when the
//! leader changes, forwarded calls fail UNAVAILABLE and workers reconnect.
//!
//! Relayed calls keep the caller's metadata (so its bearer token) and, with
//! TLS, travel over TLS with this replica's certificate (see [`crate::tls`]).
//!
//! SQLite has one scheduler per file (see [`crate::single`]): it is always
//! the leader.

use crate::engine::{Engine, EngineSettings};
use pulp_common::db::stmt;
use pulp_common::time::now_micros;
use sea_orm::{ConnectionTrait, DatabaseConnection, Value};
use sqlx::Connection;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

/// The advisory lock key of the leadership.
const LEADER_LOCK: i64 = 7_283_002;
/// How often the leader checks that its lock session is alive.
const SESSION_CHECK: Duration = Duration::from_secs(1);
/// The NOTIFY channel on which a new leader announces itself.
const LEADER_CHANNEL: &str = "pulp_scheduler_leader";
/// How often a follower re-reads the leader row regardless of NOTIFY.
const LEADER_REREAD: Duration = Duration::from_secs(5);
/// Longest pause between campaign attempts (while the database is down):
/// a replica re-elects within about this long once it is back.
const CAMPAIGN_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a call waits for a leader while an election runs.
const ELECTION_WAIT: Duration = Duration::from_secs(10);

/// What this replica is now.
#[derive(Debug, Clone)]
pub enum Role {
    /// No leader known yet (starting, or a takeover is running).
    Electing,
    /// This replica runs the engine.
    Leader(Engine),
    /// Another replica leads; calls that need the engine go there.
    Follower {
        /// The leader's advertised address.
        address: String,
        /// A channel to it.
        channel: Channel,
    },
}

/// Where a call that needs the engine goes.
#[derive(Debug, Clone)]
pub enum Route {
    /// This replica's engine.
    Local(Engine),
    /// The leader, through this channel.
    Remote(Channel),
}

/// The replica's view of the leadership; cheap to clone.
#[derive(Debug, Clone)]
pub struct Cluster {
    role: watch::Receiver<Arc<Role>>,
    db: DatabaseConnection,
    /// A standalone replica owns its (never changing) role's sender.
    _standalone: Option<Arc<watch::Sender<Arc<Role>>>>,
}

impl Cluster {
    /// A replica that is always the leader (SQLite).
    pub fn standalone(engine: Engine, db: DatabaseConnection) -> Cluster {
        let (tx, role) = watch::channel(Arc::new(Role::Leader(engine)));
        Cluster {
            role,
            db,
            _standalone: Some(Arc::new(tx)),
        }
    }

    /// Where calls that need the engine go now; waits while an election
    /// runs, then UNAVAILABLE.
    pub async fn route(&self) -> Result<Route, tonic::Status> {
        let mut role = self.role.clone();
        let waited = tokio::time::timeout(ELECTION_WAIT, async {
            loop {
                let current = role.borrow_and_update().clone();
                match &*current {
                    Role::Leader(engine) => return Ok(Route::Local(engine.clone())),
                    Role::Follower { channel, .. } => return Ok(Route::Remote(channel.clone())),
                    Role::Electing => {
                        if role.changed().await.is_err() {
                            return Err(tonic::Status::unavailable(
                                "the scheduler is shutting down",
                            ));
                        }
                    }
                }
            }
        })
        .await;
        waited.unwrap_or_else(|_| {
            Err(tonic::Status::unavailable(
                "no scheduler leader is elected yet; retry",
            ))
        })
    }

    /// The current role.
    pub fn role(&self) -> Arc<Role> {
        self.role.borrow().clone()
    }

    /// The database, for reads any replica serves.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }
}

/// Campaign settings.
#[derive(Debug, Clone)]
pub struct Campaign {
    /// The PostgreSQL URL (the lock needs a session of its own).
    pub database_url: String,
    /// The address other replicas reach this one on (`HOST:PORT`).
    pub advertise: String,
    /// Engine settings for when this replica leads.
    pub engine: EngineSettings,
    /// TLS for calls relayed to the leader (see [`crate::tls`]); `None`
    /// for plain HTTP/2.
    pub relay_tls: Option<tonic::transport::ClientTlsConfig>,
}

/// Starts campaigning for leadership on PostgreSQL until `shutdown`.
pub fn elect(
    campaign: Campaign,
    db: DatabaseConnection,
    shutdown: CancellationToken,
) -> (Cluster, JoinHandle<()>) {
    let (tx, role) = watch::channel(Arc::new(Role::Electing));
    let cluster = Cluster {
        role,
        db: db.clone(),
        _standalone: None,
    };
    let handle = tokio::spawn(run_campaign(campaign, db, tx, shutdown));
    (cluster, handle)
}

async fn run_campaign(
    campaign: Campaign,
    db: DatabaseConnection,
    role: watch::Sender<Arc<Role>>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match lead_once(&campaign, &db, &role, &shutdown).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(err) => {
                warn!(error = %err, "leadership campaign interrupted; retrying");
                role.send_replace(Arc::new(Role::Electing));
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(CAMPAIGN_BACKOFF_MAX);
            }
        }
    }
    role.send_replace(Arc::new(Role::Electing));
}

/// One term: follow until the lock is ours, then lead until it is lost.
async fn lead_once(
    campaign: &Campaign,
    db: &DatabaseConnection,
    role: &watch::Sender<Arc<Role>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let options = sqlx::postgres::PgConnectOptions::from_str(&campaign.database_url)?;
    let mut session = sqlx::PgConnection::connect_with(&options).await?;
    // Follow the current leader while waiting for the lock. A new leader
    // announces itself with NOTIFY; the row is also re-read now and then in
    // case a notification was missed while the listener reconnected.
    let mut listener =
        sqlx::postgres::PgListener::connect_with(db.get_postgres_connection_pool()).await?;
    listener.listen(LEADER_CHANNEL).await?;
    let follow = async {
        let mut known = String::new();
        loop {
            if let Ok(Some(address)) = leader_address(db).await
                && address != known
                && address != campaign.advertise
            {
                let channel = relay_endpoint(&address, campaign.relay_tls.clone())?
                    .connect_timeout(Duration::from_secs(2))
                    .connect_lazy();
                info!(leader = %address, "following the leader");
                role.send_replace(Arc::new(Role::Follower {
                    address: address.clone(),
                    channel,
                }));
                known = address;
            }
            tokio::select! {
                notified = listener.recv() => { notified?; }
                _ = tokio::time::sleep(LEADER_REREAD) => {}
            }
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    };
    let locked = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        result = follow => return result,
        locked = sqlx::query("SELECT pg_advisory_lock($1)").bind(LEADER_LOCK).execute(&mut session) => locked,
    };
    locked?;
    role.send_replace(Arc::new(Role::Electing));
    let epoch = take_over(db, &campaign.advertise).await?;
    info!(epoch, address = %campaign.advertise, "this replica is now the leader");
    let stop = shutdown.child_token();
    let (engine, mut engine_task) = Engine::spawn(
        db.clone(),
        EngineSettings {
            epoch: Some(epoch),
            ..campaign.engine.clone()
        },
        stop.clone(),
    );
    role.send_replace(Arc::new(Role::Leader(engine)));
    let mut check = tokio::time::interval(SESSION_CHECK);
    let mut engine_done = false;
    let ended = loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ok(()),
            _ = &mut engine_task => {
                engine_done = true;
                break Err(anyhow::anyhow!("the engine stopped (fenced by a newer leader?)"));
            }
            _ = check.tick() => {
                if let Err(err) = sqlx::query("SELECT 1").execute(&mut session).await {
                    break Err(anyhow::anyhow!("lost the leadership session: {err}"));
                }
            }
        }
    };
    role.send_replace(Arc::new(Role::Electing));
    stop.cancel();
    // A JoinHandle must not be polled again once it completed.
    if !engine_done {
        let _ = engine_task.await;
    }
    let _ = session.close().await;
    info!(epoch, "stepped down as leader");
    ended
}

/// The endpoint of the leader at `address`, over TLS when `tls` is set.
fn relay_endpoint(
    address: &str,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> anyhow::Result<Endpoint> {
    Ok(match tls {
        Some(tls) => Endpoint::from_shared(format!("https://{address}"))?.tls_config(tls)?,
        None => Endpoint::from_shared(format!("http://{address}"))?,
    })
}

/// Bumps the epoch and records this replica as the leader.
async fn take_over(db: &DatabaseConnection, address: &str) -> Result<i64, sea_orm::DbErr> {
    let sql = "INSERT INTO scheduler_leader (id, epoch, address, since) VALUES (1, 1, $1, $2) \
               ON CONFLICT (id) DO UPDATE SET epoch = scheduler_leader.epoch + 1, address = $1, since = $2 \
               RETURNING epoch";
    let row = db
        .query_one_raw(stmt(
            db.get_database_backend(),
            sql,
            [Value::from(address.to_owned()), Value::from(now_micros())],
        ))
        .await?
        .ok_or_else(|| sea_orm::DbErr::Custom("no epoch returned".into()))?;
    let epoch = row.try_get("", "epoch")?;
    db.execute_raw(stmt(
        db.get_database_backend(),
        &format!("NOTIFY {LEADER_CHANNEL}"),
        [],
    ))
    .await?;
    Ok(epoch)
}

async fn leader_address(db: &DatabaseConnection) -> Result<Option<String>, sea_orm::DbErr> {
    let row = db
        .query_one_raw(stmt(
            db.get_database_backend(),
            "SELECT address FROM scheduler_leader WHERE id = 1",
            [],
        ))
        .await?;
    row.map(|r| r.try_get("", "address")).transpose()
}

/// In an engine round's transaction: true while `epoch` is still current.
pub async fn epoch_is_current(
    conn: &impl ConnectionTrait,
    epoch: i64,
) -> Result<bool, sea_orm::DbErr> {
    let row = conn
        .query_one_raw(stmt(
            conn.get_database_backend(),
            "SELECT epoch FROM scheduler_leader WHERE id = 1 FOR SHARE",
            [],
        ))
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<i64>("", "epoch")? == epoch,
        None => false,
    })
}
