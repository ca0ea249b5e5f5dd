//! [`SharedCounts`] kept in Redis: sets with a capacity and token buckets
//! shared by every replica, and the background task that keeps this
//! replica's memberships leased and finds out whether Redis answers.
//!
//! Every call is bounded by the command timeout, and a call that gets no
//! answer says so ([`Unavailable`]) and marks the store unavailable: the
//! caller decides what a limit does then. Only the heartbeat marks the
//! store available again, after it has re-registered every member this
//! replica holds (Redis may have restarted empty).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use redis::{FromRedisValue, ScriptInvocation};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use zilla_engine::telemetry::duration;
use zilla_engine::{
    async_trait, BucketRate, Events, Lease, Membership, SharedCounts, StoreStats, Taken,
    Unavailable,
};

use crate::connection::Connection;
use crate::options::{Settings, REPLICA_TTL};
use crate::scripts::{
    bucket_key, members_key, owners_key, replicas_key, HEARTBEAT, JOIN, LEAVE, RENEW, TAKE,
};

/// Members renewed by one RENEW at most, so that one script stays short.
const RENEW_CHUNK: usize = 500;

/// Whether the store answers, and what was last said about it.
#[derive(Debug)]
struct Health {
    /// Until a command or heartbeat goes unanswered, the store is taken to
    /// answer: the first CONNECTs after a start ask it (within the command
    /// timeout) rather than count locally before the first heartbeat.
    available: bool,
    /// The last state an event announced (`None` before the first).
    announced: Option<bool>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            available: true,
            announced: None,
        }
    }
}

/// The state shared by the store, its memberships and its background task.
pub(crate) struct Counts {
    me: Weak<Counts>,
    name: String,
    settings: Settings,
    events: Events,
    stats: Arc<StoreStats>,
    /// This replica's id in the replicas set, and the start of its tokens.
    replica: String,
    next_token: AtomicU64,
    health: Mutex<Health>,
    replicas: AtomicUsize,
    /// set -> member -> token of the membership this replica holds.
    held: Mutex<HashMap<String, HashMap<String, String>>>,
    connection: tokio::sync::Mutex<Option<Connection>>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Set by [`Counts::halt`]: the replica is gone as if killed.
    halted: AtomicBool,
}

impl fmt::Debug for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCounts")
            .field("name", &self.name)
            .field("address", &self.settings.address)
            .field("replica", &self.replica)
            .field("available", &self.is_available())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // What a panicking holder left is still a map or a flag.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A replica id unlikely to be another's: std's random hash keys, the
/// process id and the clock.
fn replica_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    hasher.write_u128(nanos);
    format!("{:016x}", hasher.finish())
}

impl Counts {
    /// Counts for the store `name`; starts its background task when a tokio
    /// runtime is at hand (else on first use).
    pub(crate) fn new(name: &str, settings: Settings, events: Events) -> Arc<Self> {
        let stats = Arc::new(StoreStats::new(name));
        let counts = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            name: name.to_owned(),
            settings,
            events,
            stats,
            replica: replica_id(),
            next_token: AtomicU64::new(0),
            health: Mutex::default(),
            replicas: AtomicUsize::new(1),
            held: Mutex::default(),
            connection: tokio::sync::Mutex::new(None),
            task: Mutex::new(None),
            halted: AtomicBool::new(false),
        });
        counts.start();
        counts
    }

    /// Starts the background task if it is not running and a runtime is at
    /// hand: the host builds its first engine before its runtime exists (a
    /// reload builds inside it), so the task may start on first use; and a
    /// runtime the store was built in may be gone (its task with it).
    fn start(&self) {
        let mut task = lock(&self.task);
        let running = task.as_ref().is_some_and(|task| !task.is_finished());
        if running || self.halted.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(runtime) = Handle::try_current() {
            *task = Some(runtime.spawn(background(self.me.clone())));
        }
    }

    /// Stops as a killed replica would: no more heartbeats or renewals, and
    /// memberships dropped later send no LEAVE (tests of lease expiry).
    pub(crate) fn halt(&self) {
        self.halted.store(true, Ordering::Relaxed);
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
        lock(&self.held).clear();
    }

    /// Whether the last heartbeat or command was answered.
    fn is_available(&self) -> bool {
        lock(&self.health).available
    }

    /// Whether the store is available and an event said so.
    fn announced_available(&self) -> bool {
        let health = lock(&self.health);
        health.available && health.announced == Some(true)
    }

    fn token(&self) -> String {
        let next = self.next_token.fetch_add(1, Ordering::Relaxed);
        format!("{}:{next}", self.replica)
    }

    fn lease_ms(&self) -> u64 {
        self.settings.lease.as_millis() as u64
    }

    /// The connection, made on first use (a cluster's when its seeds answer).
    async fn connection(&self) -> Result<Connection, String> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = &*slot {
            return Ok(connection.clone());
        }
        let connection = Connection::open(&self.settings)
            .await
            .map_err(|error| error.to_string())?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Runs `invocation` as `command`, waiting at most `budget`; counts it,
    /// and marks the store unavailable when it gets no answer.
    async fn run<T: FromRedisValue>(
        &self,
        command: &'static str,
        invocation: &ScriptInvocation<'_>,
        budget: Duration,
    ) -> Result<T, Unavailable> {
        let started = Instant::now();
        let answer = tokio::time::timeout(budget, async {
            let mut connection = self.connection().await?;
            connection
                .invoke::<T>(invocation)
                .await
                .map_err(|error| error.to_string())
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}", duration(budget))));
        self.stats
            .record(command, started.elapsed(), answer.is_ok());
        answer.map_err(|why| {
            self.mark_unavailable(&why);
            Unavailable(format!("redis store {} ({command}): {why}", self.name))
        })
    }

    fn mark_unavailable(&self, why: &str) {
        let mut health = lock(&self.health);
        health.available = false;
        if health.announced == Some(false) {
            return;
        }
        health.announced = Some(false);
        drop(health);
        self.stats.set_available(false);
        self.events.warn(
            "REDIS_STORE_UNAVAILABLE",
            format!(
                "store {} at {} does not answer ({why}): limits counted in it fall back \
                 to their policy until it does",
                self.name, self.settings.address
            ),
        );
    }

    fn mark_available(&self, registered: u64) {
        let mut health = lock(&self.health);
        health.available = true;
        if health.announced == Some(true) {
            return;
        }
        let first = health.announced.is_none();
        health.announced = Some(true);
        drop(health);
        self.stats.set_available(true);
        let how = if first {
            "connected to"
        } else {
            "answers again at"
        };
        self.events.info(
            "REDIS_STORE_AVAILABLE",
            format!(
                "store {} {how} {}; {registered} members re-registered",
                self.name, self.settings.address
            ),
        );
    }

    /// One heartbeat: this replica alive, the count of replicas alive.
    async fn heartbeat(&self) -> Result<(), Unavailable> {
        let budget = self.settings.connect_timeout + self.settings.command_timeout;
        let mut invocation = HEARTBEAT.key(replicas_key(&self.settings.prefix));
        invocation
            .arg(&self.replica)
            .arg(REPLICA_TTL.as_millis() as u64);
        let alive: u64 = self.run("heartbeat", &invocation, budget).await?;
        let alive = (alive as usize).max(1);
        let was = self.replicas.swap(alive, Ordering::Relaxed);
        if was != alive {
            // What each replica's share is while the store is away.
            self.events.info(
                "REDIS_STORE_REPLICAS",
                format!(
                    "store {}: {alive} replicas count in it (was {was}); while it does not \
                     answer, each counts 1/{alive} of every limit",
                    self.name
                ),
            );
        }
        Ok(())
    }

    /// Renews the memberships of `set` this replica holds (`members`:
    /// member, token); how many were not registered.
    async fn renew_set(&self, set: &str, members: &[(String, String)]) -> Result<u64, Unavailable> {
        let mut added = 0;
        for chunk in members.chunks(RENEW_CHUNK) {
            let mut invocation = RENEW.key(members_key(&self.settings.prefix, set));
            invocation
                .key(owners_key(&self.settings.prefix, set))
                .arg(self.lease_ms());
            for (member, token) in chunk {
                invocation.arg(member).arg(token);
            }
            added += self
                .run::<u64>("renew", &invocation, self.settings.command_timeout)
                .await?;
        }
        Ok(added)
    }

    /// Renews every membership this replica holds (one RENEW per set); how
    /// many were not registered.
    async fn renew_all(&self) -> Result<u64, Unavailable> {
        let held: Vec<(String, Vec<(String, String)>)> = lock(&self.held)
            .iter()
            .map(|(set, members)| {
                let members = members
                    .iter()
                    .map(|(member, token)| (member.clone(), token.clone()))
                    .collect();
                (set.clone(), members)
            })
            .collect();
        let mut added = 0;
        for (set, members) in held {
            added += self.renew_set(&set, &members).await?;
        }
        Ok(added)
    }

    /// A membership of `member` in `set` under `token`, kept leased until
    /// dropped.
    fn membership(&self, set: &str, member: &str, token: String) -> Membership {
        lock(&self.held)
            .entry(set.to_owned())
            .or_default()
            .insert(member.to_owned(), token.clone());
        Membership::new(Leave {
            counts: self.me.upgrade(),
            set: set.to_owned(),
            member: member.to_owned(),
            token,
        })
    }

    /// A membership ended: no longer renewed, and removed from Redis unless
    /// a newer membership took the member since.
    fn leave(&self, set: &str, member: &str, token: &str) {
        if self.halted.load(Ordering::Relaxed) {
            return;
        }
        {
            let mut held = lock(&self.held);
            if let Some(members) = held.get_mut(set) {
                if members.get(member).is_some_and(|held| held == token) {
                    members.remove(member);
                }
                if members.is_empty() {
                    held.remove(set);
                }
            }
        }
        let (Ok(runtime), Some(counts)) = (Handle::try_current(), self.me.upgrade()) else {
            // No runtime to send it from: the lease runs out instead.
            return;
        };
        let (set, member, token) = (set.to_owned(), member.to_owned(), token.to_owned());
        runtime.spawn(async move {
            let prefix = &counts.settings.prefix;
            let mut invocation = LEAVE.key(members_key(prefix, &set));
            invocation
                .key(owners_key(prefix, &set))
                .arg(&member)
                .arg(&token);
            // A failure is counted and marks the store unavailable; the
            // lease runs out anyway.
            let _ = counts
                .run::<u64>("leave", &invocation, counts.settings.command_timeout)
                .await;
        });
    }

    async fn take_as(
        &self,
        command: &'static str,
        bucket: &str,
        rate: BucketRate,
        tokens: u64,
    ) -> Result<Taken, Unavailable> {
        if tokens == 0 {
            return Ok(Taken {
                granted: 0,
                retry_after: Duration::ZERO,
            });
        }
        if !(rate.per_second.is_finite() && rate.per_second > 0.0) {
            return Err(Unavailable(format!(
                "redis store {}: bucket {bucket} has no positive rate ({})",
                self.name, rate.per_second
            )));
        }
        let mut invocation = TAKE.key(bucket_key(&self.settings.prefix, bucket));
        invocation
            .arg(rate.per_second)
            .arg(rate.burst.max(1.0))
            .arg(tokens);
        let (granted, retry_us): (u64, u64) = self
            .run(command, &invocation, self.settings.command_timeout)
            .await?;
        Ok(Taken {
            granted,
            retry_after: Duration::from_micros(retry_us),
        })
    }
}

impl Drop for Counts {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

/// What a [`Membership`] of this store does when dropped.
struct Leave {
    /// `None` only if the store was being dropped as the member joined.
    counts: Option<Arc<Counts>>,
    set: String,
    member: String,
    token: String,
}

impl fmt::Debug for Leave {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisMembership")
            .field("set", &self.set)
            .field("member", &self.member)
            .finish_non_exhaustive()
    }
}

impl Drop for Leave {
    fn drop(&mut self) {
        if let Some(counts) = &self.counts {
            counts.leave(&self.set, &self.member, &self.token);
        }
    }
}

/// Heartbeats every second, renewals every `renew_every`, for as long as
/// the counts live (it holds them only while it works).
async fn background(counts: Weak<Counts>) {
    let Some((every, renew_every)) = counts
        .upgrade()
        .map(|c| (c.settings.heartbeat_every, c.settings.renew_every))
    else {
        return;
    };
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renewed = Instant::now();
    loop {
        ticks.tick().await;
        let Some(counts) = counts.upgrade() else {
            return;
        };
        if counts.heartbeat().await.is_err() {
            continue;
        }
        // Not yet said to answer: at the first heartbeat, or after an outage.
        let recovering = !counts.announced_available();
        if recovering || renewed.elapsed() >= renew_every {
            match counts.renew_all().await {
                Ok(registered) => {
                    renewed = Instant::now();
                    counts.mark_available(registered);
                }
                // Marked unavailable already; the next beat tries again.
                Err(_) => continue,
            }
        }
    }
}

#[async_trait]
impl SharedCounts for Counts {
    fn start(&self) {
        // The host builds its first engine outside its runtime: the
        // heartbeat starts when a binding counting here starts.
        Counts::start(self);
    }

    fn available(&self) -> bool {
        self.start();
        self.is_available()
    }

    fn replicas(&self) -> usize {
        self.start();
        self.replicas.load(Ordering::Relaxed).max(1)
    }

    async fn join(
        &self,
        set: &str,
        member: &str,
        capacity: usize,
    ) -> Result<Option<Membership>, Unavailable> {
        self.start();
        let token = self.token();
        let prefix = &self.settings.prefix;
        let mut invocation = JOIN.key(members_key(prefix, set));
        invocation
            .key(owners_key(prefix, set))
            .arg(member)
            .arg(&token)
            .arg(capacity)
            .arg(self.lease_ms());
        let admitted: u64 = self
            .run("join", &invocation, self.settings.command_timeout)
            .await?;
        Ok((admitted == 1).then(|| self.membership(set, member, token)))
    }

    fn hold(&self, set: &str, member: &str) -> Membership {
        self.start();
        let token = self.token();
        let membership = self.membership(set, member, token.clone());
        // Registered now when the store answers; else by the renewal that
        // follows its recovery.
        if let (true, Ok(runtime), Some(counts)) = (
            self.is_available(),
            Handle::try_current(),
            self.me.upgrade(),
        ) {
            let (set, member) = (set.to_owned(), member.to_owned());
            runtime.spawn(async move {
                let _ = counts.renew_set(&set, &[(member, token)]).await;
            });
        }
        membership
    }

    async fn take(
        &self,
        bucket: &str,
        rate: BucketRate,
        tokens: u64,
    ) -> Result<Taken, Unavailable> {
        self.start();
        self.take_as("take", bucket, rate, tokens).await
    }

    fn lease(&self, bucket: &str, rate: BucketRate, tokens: u64, lease: &Arc<Lease>) {
        self.start();
        let (Ok(runtime), Some(counts)) = (Handle::try_current(), self.me.upgrade()) else {
            lease.fail();
            return;
        };
        let (bucket, lease) = (bucket.to_owned(), lease.clone());
        runtime.spawn(async move {
            match counts.take_as("lease", &bucket, rate, tokens).await {
                Ok(taken) => lease.fill(tokens, taken, Instant::now().into_std()),
                Err(_) => lease.fail(),
            }
        });
    }

    fn stats(&self) -> Arc<StoreStats> {
        self.stats.clone()
    }
}
