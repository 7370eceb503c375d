//! The registry actor: maps (namespace, name, type) to a queue actor, spawning it on first use.
//!
//! Lookups take a fast path through a shared read-mostly map; a miss (or a dead address) asks
//! the registry actor, which serializes creation, so two concurrent first requests get the same
//! actor. An actor that stopped (idle) or died is replaced on the next request, and
//! [`Queues::call`] re-sends a message that the old actor never read.
//!
//! Where queue actors run: with `queue_threads = 0` (the default), on the threads of the HTTP
//! workers, which offer theirs with [`Queues::share_current_thread`]. A request served on the
//! thread of its queue's actor then needs no hop to another thread and no wake-up, which on
//! this project's benchmark machine was a fifth of the server's CPU per task. Until a worker
//! has offered its thread (during start-up, or for an embedder that serves no HTTP), and with
//! `queue_threads = N`, actors run on the registry's own threads: one per core, or N.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::model::NewTask;
use crate::model::QueueKey;
use crate::queue::messages::{
    AddResult, Durable, ExpireWaiting, HandOver, Inbox, Inboxes, Poll, PollOutcome, Settle,
    Settlement, Shutdown, TakeAdds, TakePolls, TakeSettles,
};
use crate::queue::{QueueActor, QueueStopped, Shared};
use crate::storage::{QueueMeta, Store};

/// The running actors by queue. Entries are shared (`Arc`): every request looks its queue up,
/// and cloning an `Addr` allocates (actix gives each sender clone its own parking state).
type Map = Arc<RwLock<HashMap<QueueKey, Arc<RunningQueue>>>>;

/// A running queue actor, as the shared map holds it.
struct RunningQueue {
    /// Which start of the queue's actor this is (a stopped one reports its own).
    generation: u64,
    addr: Addr<QueueActor>,
    /// Where adds, settles and polls wait for this actor ([`Queues::add`], [`Queues::settle`],
    /// [`Queues::poll`]).
    inboxes: Arc<Inboxes>,
}

/// How many times a message is re-sent to a replaced actor.
const SEND_ATTEMPTS: usize = 5;
/// How often schedule-to-start deadlines are swept, across all queues.
const WAITING_SWEEP: Duration = Duration::from_millis(250);
/// How often freed heap memory is returned to the OS.
const MEMORY_TRIM: Duration = Duration::from_secs(10);
/// Deadlines handled per sweep.
const WAITING_BATCH: usize = 1000;
/// How often the gauges of queues no actor holds are brought up to date (their backlog age
/// grows while nobody loads them).
const RESTING_REPORT: Duration = Duration::from_secs(15);

/// Supervises the queue actors.
pub struct Registry {
    map: Map,
    shared: Arc<Shared>,
    /// Threads offered by the HTTP workers ([`ShareThread`]); used first.
    offered: Vec<ArbiterHandle>,
    /// The registry's own threads, started on first need.
    own: Vec<Arbiter>,
    next_arbiter: usize,
    generation: u64,
    /// Queues no actor holds that have tasks or dead letters, whose gauges the registry keeps
    /// current ([`Registry::report_resting`]); only those with series of their own (at most
    /// `metrics.max_queue_series`), the others having nothing to report.
    resting: HashSet<QueueKey>,
    /// Queues no actor holds, by when their first delayed task falls due: the registry loads
    /// each then ([`Registry::wake_due`]), so the task becomes ready on time.
    wakeups: BTreeSet<(u64, QueueKey)>,
}

impl Registry {
    /// A registry over the shared store; before it returns, every queue that holds tasks or dead
    /// letters is in the metrics (up to `metrics.max_queue_series`), loaded or not.
    fn new(map: Map, shared: Arc<Shared>) -> Self {
        // One read of the queues that hold tasks serves both: the gauges of the first
        // `max_queue_series`, and the wakeups of those with delayed tasks.
        let holding = match shared.store.queues_holding_tasks(usize::MAX) {
            Ok(queues) => queues,
            Err(e) => {
                log::error!("cannot list the queues holding tasks: {e}");
                Vec::new()
            }
        };
        let resting = holding
            .iter()
            .take(shared.config.metrics.max_queue_series)
            .map(|(key, _)| key.clone())
            .collect();
        let wakeups = first_dues(&*shared.store, holding);
        let mut registry = Registry {
            map,
            shared,
            offered: Vec::new(),
            own: Vec::new(),
            next_arbiter: 0,
            generation: 0,
            resting,
            wakeups,
        };
        registry.report_resting();
        registry
    }

    /// Reports the gauges of the queues no actor holds, from the store; forgets those left
    /// with nothing (their gauges are zero by then) and those an actor holds again.
    fn report_resting(&mut self) {
        let now = self.shared.clock.now_ms();
        let (store, metrics) = (&self.shared.store, &self.shared.metrics);
        let map = read(&self.map);
        self.resting.retain(|key| {
            if map.contains_key(key) {
                return false;
            }
            let meta = match store.meta(key) {
                Ok(meta) => meta.unwrap_or_default(),
                Err(e) => {
                    log::error!("cannot read the counters of {key}: {e}");
                    return true;
                }
            };
            let resting = match store.resting(key, &meta, now, true) {
                Ok(r) => r,
                Err(e) => {
                    log::error!("cannot read the backlog of {key}: {e}");
                    return true;
                }
            };
            metrics.report_resting(
                key,
                crate::metrics::GaugeValues {
                    backlog: resting.backlog as i64,
                    backlog_age_seconds: resting
                        .oldest_ready_at
                        .map_or(0.0, |at| now.saturating_sub(at) as f64 / 1000.0),
                    dead: meta.dead as i64,
                    ..Default::default()
                },
            );
            meta.ready + meta.delayed + meta.dead > 0
        });
    }

    /// An arbiter to run a new queue actor: the threads of the HTTP workers in turn (one whose
    /// worker stopped is dropped), else the registry's own, replacing one whose thread died.
    fn arbiter(&mut self) -> ArbiterHandle {
        let n = self.next_arbiter;
        self.next_arbiter = n.wrapping_add(1);
        while !self.offered.is_empty() {
            let i = n % self.offered.len();
            if self.offered[i].spawn(async {}) {
                return self.offered[i].clone();
            }
            self.offered.swap_remove(i);
        }
        if self.own.is_empty() {
            let threads = self.shared.config.actor_threads();
            self.own = (0..threads.max(1)).map(|_| Arbiter::new()).collect();
        }
        let i = n % self.own.len();
        if !self.own[i].spawn(async {}) {
            log::error!("a queue actor thread died; starting a new one");
            self.own[i] = Arbiter::new();
        }
        self.own[i].handle()
    }

    /// The actor of `key`, spawned if it is not running.
    fn get_or_spawn(&mut self, key: QueueKey, ctx: &mut Context<Self>) -> Arc<RunningQueue> {
        if let Some(loaded) = running(&self.map, &key) {
            return loaded;
        }
        self.generation += 1;
        let generation = self.generation;
        let shared = self.shared.clone();
        let on_stop = ctx.address().recipient();
        let k = key.clone();
        let addr = QueueActor::start_in_arbiter(&self.arbiter(), move |_| {
            QueueActor::new(k, generation, shared, on_stop)
        });
        let loaded = Arc::new(RunningQueue {
            generation,
            addr,
            inboxes: Arc::default(),
        });
        write(&self.map).insert(key, loaded.clone());
        loaded
    }

    /// Loads the queues whose first delayed task is due (their actor makes it ready at once);
    /// a queue loaded meanwhile by a request needs nothing more.
    fn wake_due(&mut self, ctx: &mut Context<Self>) {
        let now = self.shared.clock.now_ms();
        while let Some((due, key)) = self.wakeups.first().cloned() {
            if due > now {
                break;
            }
            self.wakeups.pop_first();
            self.get_or_spawn(key, ctx);
        }
    }

    /// Hands passed schedule-to-start deadlines to their queues, loading a queue if needed,
    /// so a task times out without a poll to notice it.
    fn sweep_waiting(&mut self, ctx: &mut Context<Self>) {
        let due = match self
            .shared
            .store
            .due_waiting(self.shared.clock.now_ms(), WAITING_BATCH)
        {
            Ok(due) => due,
            Err(e) => {
                log::error!("sweeping schedule-to-start deadlines failed: {e}");
                return;
            }
        };
        let mut by_queue: HashMap<QueueKey, Vec<String>> = HashMap::new();
        for (key, task_id) in due {
            by_queue.entry(key).or_default().push(task_id);
        }
        for (key, task_ids) in by_queue {
            self.get_or_spawn(key, ctx)
                .addr
                .do_send(ExpireWaiting { task_ids });
        }
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        ctx.run_interval(WAITING_SWEEP, |act, ctx| {
            act.sweep_waiting(ctx);
            act.wake_due(ctx);
        });
        ctx.run_interval(RESTING_REPORT, |act, _| act.report_resting());
        // Stopped queue actors and closed connections free their memory, but glibc keeps it
        // in its arenas; hand it back to the OS now and then so RSS falls after a burst. (The
        // `tasq` binary allocates with jemalloc, whose background thread does this; this is
        // for embedders on the system allocator, and costs little when glibc holds nothing.)
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        ctx.run_interval(MEMORY_TRIM, |_, _| {
            // SAFETY: malloc_trim only walks the allocator's own free lists.
            unsafe {
                libc::malloc_trim(0);
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        for a in &self.own {
            a.stop();
        }
    }
}

/// A thread (actix arbiter) offered to run queue actors; see [`Queues::share_current_thread`].
#[derive(Message)]
#[rtype(result = "()")]
struct ShareThread(ArbiterHandle);

impl Handler<ShareThread> for Registry {
    type Result = ();

    fn handle(&mut self, ShareThread(arbiter): ShareThread, _ctx: &mut Self::Context) {
        // `queue_threads = N` asks for threads of their own: the offer is declined.
        if self.shared.config.queue_threads == 0 {
            self.offered.push(arbiter);
        }
    }
}

/// Get (spawning if needed) the actor of a queue.
#[derive(Message)]
#[rtype(result = "Arc<RunningQueue>")]
struct Spawn(QueueKey);

impl Handler<Spawn> for Registry {
    type Result = MessageResult<Spawn>;

    fn handle(&mut self, Spawn(key): Spawn, ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.get_or_spawn(key, ctx))
    }
}

/// When the first delayed task of each of `queues` that has one falls due (at start: no
/// actor holds any queue yet).
fn first_dues(store: &dyn Store, queues: Vec<(QueueKey, QueueMeta)>) -> BTreeSet<(u64, QueueKey)> {
    let mut dues = BTreeSet::new();
    for (key, _) in queues.into_iter().filter(|(_, m)| m.delayed > 0) {
        match store.due_delayed(&key, 0, 0) {
            Ok((_, Some(first))) => {
                dues.insert((first, key));
            }
            Ok((_, None)) => {}
            Err(e) => log::error!("cannot read the delayed tasks of {key}: {e}"),
        }
    }
    dues
}

impl Handler<QueueStopped> for Registry {
    type Result = ();

    fn handle(&mut self, msg: QueueStopped, _ctx: &mut Self::Context) {
        let mut map = write(&self.map);
        if map
            .get(&msg.key)
            .is_some_and(|l| l.generation == msg.generation)
        {
            map.remove(&msg.key);
            // Its backlog and dead letters stay on disk: keep their gauges current (queues
            // past the series bound have none of their own to keep).
            if self.shared.metrics.has_own_series(&msg.key) {
                self.resting.insert(msg.key.clone());
            }
            if let Some(due) = msg.next_due {
                self.wakeups.insert((due, msg.key.clone()));
            }
            // A map never gives back the room of a burst of queues by itself; a rehash when
            // it is three quarters empty costs O(n) once per such fall.
            if map.capacity() > 1024 && map.len() < map.capacity() / 4 {
                let room = map.len() * 2;
                map.shrink_to(room);
            }
        }
    }
}

/// The running actor of `key` in the map, if any (an entry whose actor stopped is not).
fn running(map: &Map, key: &QueueKey) -> Option<Arc<RunningQueue>> {
    read(map).get(key).filter(|l| l.addr.connected()).cloned()
}

fn read(map: &Map) -> std::sync::RwLockReadGuard<'_, HashMap<QueueKey, Arc<RunningQueue>>> {
    map.read().unwrap_or_else(|e| e.into_inner())
}

fn write(map: &Map) -> std::sync::RwLockWriteGuard<'_, HashMap<QueueKey, Arc<RunningQueue>>> {
    map.write().unwrap_or_else(|e| e.into_inner())
}

/// A cheap handle to every queue, used by the HTTP layer and embedders.
#[derive(Clone)]
pub struct Queues {
    map: Map,
    registry: Addr<Registry>,
}

impl Queues {
    /// Starts the registry (and its actor threads) in the current actix system.
    pub fn start(shared: Arc<Shared>) -> Self {
        let map: Map = Arc::default();
        let registry = Registry::new(map.clone(), shared).start();
        Queues { map, registry }
    }

    /// Offers the calling thread, an actix arbiter such as an actix-web worker's, to run queue
    /// actors (with `queue_threads = 0`; otherwise the offer is declined). Call it in the
    /// `HttpServer` factory, which runs once on each worker's thread. An actor placed on the
    /// thread stops with it, and the next request for its queue starts a new one elsewhere.
    /// Off an arbiter it does nothing.
    pub fn share_current_thread(&self) {
        if let Some(arbiter) = Arbiter::try_current() {
            self.registry.do_send(ShareThread(arbiter));
        }
    }

    /// The actor of `key`, spawned on first use.
    pub async fn actor(&self, key: &QueueKey) -> Result<Addr<QueueActor>> {
        Ok(self.running(key).await?.addr.clone())
    }

    async fn running(&self, key: &QueueKey) -> Result<Arc<RunningQueue>> {
        if let Some(loaded) = running(&self.map, key) {
            return Ok(loaded);
        }
        self.registry
            .send(Spawn(key.clone()))
            .await
            .map_err(|_| Error::Unavailable("the queue registry has stopped".into()))
    }

    /// Adds `tasks` (one request's, all or nothing) to the queue `key`; answers their results
    /// once durable. Adds that arrive while the queue's actor is busy wait in its inbox and are
    /// written together, one write for all of them, each still answered on its own.
    pub async fn add(
        &self,
        key: &QueueKey,
        tasks: Arc<Vec<NewTask>>,
        store: &dyn Store,
    ) -> Result<Vec<AddResult>> {
        let inboxes = &self.running(key).await?.inboxes;
        let applied = self
            .through_inbox(key, &inboxes.adds, tasks, TakeAdds(inboxes.clone()))
            .await??;
        applied.wait(store).await
    }

    /// [`Queues::add`] of one task: its result.
    pub async fn add_one(
        &self,
        key: &QueueKey,
        task: NewTask,
        store: &dyn Store,
    ) -> Result<AddResult> {
        self.add(key, Arc::new(vec![task]), store)
            .await?
            .pop()
            .ok_or_else(|| Error::Internal("the queue answered no result".into()))
    }

    /// [`Queues::settle`] of one lease: its answer.
    pub async fn settle_one(
        &self,
        key: &QueueKey,
        settle: Settle,
        store: &dyn Store,
    ) -> Result<Settlement> {
        self.settle(key, vec![settle], store)
            .await?
            .pop()
            .unwrap_or_else(|| Err(Error::lease_lost()))
    }

    /// Completes or fails leases of the queue `key` (a WebSocket burst, or one HTTP settle);
    /// answers one result per settle, in order, once durable. Like adds, settles that arrive
    /// together are written together.
    pub async fn settle(
        &self,
        key: &QueueKey,
        settles: Vec<Settle>,
        store: &dyn Store,
    ) -> Result<Vec<Result<Settlement>>> {
        self.settle_applied(key, settles).await?.wait(store).await
    }

    /// Like [`Queues::settle`], but answers as soon as the actor has applied the settles,
    /// their write not yet on disk: the caller waits for it ([`Durable::wait`]) before it
    /// answers anyone, and may meanwhile send more writes to join the same sync.
    pub async fn settle_applied(
        &self,
        key: &QueueKey,
        settles: Vec<Settle>,
    ) -> Result<Durable<Vec<Result<Settlement>>>> {
        let inboxes = &self.running(key).await?.inboxes;
        self.through_inbox(
            key,
            &inboxes.settles,
            Arc::new(settles),
            TakeSettles(inboxes.clone()),
        )
        .await
    }

    /// Sends a poll to the queue `key`: tasks ready now, or a parked waiter. Polls that arrive
    /// while the actor is busy wait in its inbox, and the leases of all of them are one write
    /// (one `apply_batch`, one durability mark), as for adds and settles.
    pub async fn poll(&self, key: &QueueKey, poll: Poll) -> Result<PollOutcome> {
        let inboxes = &self.running(key).await?.inboxes;
        self.through_inbox(
            key,
            &inboxes.polls,
            Arc::new(poll),
            TakePolls(inboxes.clone()),
        )
        .await?
    }

    /// Puts `request` in `inbox` and sends `take` to the queue's actor; resolves with the
    /// request's reply.
    async fn through_inbox<T, R, M>(
        &self,
        key: &QueueKey,
        inbox: &Inbox<T, R>,
        request: Arc<T>,
        take: M,
    ) -> Result<R>
    where
        M: Message<Result = ()> + Send + Clone + 'static,
        QueueActor: Handler<M>,
        <QueueActor as Actor>::Context: ToEnvelope<QueueActor, M>,
    {
        let (reply, answer) = oneshot::channel();
        inbox.push(request.clone(), reply);
        // Every request sends its own take message, so none is left waiting on another
        // caller's (one that went away before sending it).
        if let Err(e) = self.call(key, take).await {
            if inbox.withdraw(&request) {
                return Err(e);
            }
        }
        answer
            .await
            .map_err(|_| Error::Unavailable(format!("queue {key} stopped")))
    }

    /// True when the actor of `key` is running.
    pub fn is_loaded(&self, key: &QueueKey) -> bool {
        running(&self.map, key).is_some()
    }

    /// Sends `msg` to the actor of `key` and awaits its answer. If the actor stopped before
    /// reading it (idle stop), the message goes to its replacement.
    pub async fn call<M>(&self, key: &QueueKey, msg: M) -> Result<M::Result>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        QueueActor: Handler<M>,
        <QueueActor as Actor>::Context: ToEnvelope<QueueActor, M>,
    {
        for attempt in 0..SEND_ATTEMPTS {
            let loaded = self.running(key).await?;
            match loaded.addr.send(msg.clone()).await {
                Ok(answer) => return Ok(answer),
                Err(MailboxError::Closed) => {
                    // The actor stopped; give the registry a moment to see it.
                    tokio::time::sleep(Duration::from_millis(2 << attempt)).await;
                }
                Err(MailboxError::Timeout) => {
                    return Err(Error::Unavailable(format!("queue {key} did not answer")))
                }
            }
        }
        Err(Error::Unavailable(format!("queue {key} keeps stopping")))
    }

    /// [`Queues::call`] for a message whose writes promise durability: answers its value once
    /// the group commit covers them (see [`Durable`]).
    pub async fn call_durable<M, T>(&self, key: &QueueKey, msg: M, store: &dyn Store) -> Result<T>
    where
        M: Message<Result = Result<Durable<T>>> + Send + Clone + 'static,
        T: Send + 'static,
        QueueActor: Handler<M>,
        <QueueActor as Actor>::Context: ToEnvelope<QueueActor, M>,
    {
        self.call(key, msg).await??.wait(store).await
    }

    /// Tells every loaded queue to answer its parked polls and stop parking.
    pub async fn shutdown_all(&self) {
        let addrs: Vec<_> = read(&self.map).values().map(|l| l.addr.clone()).collect();
        for a in addrs {
            let _ = a.send(Shutdown).await;
        }
    }

    /// The queues whose actor is loaded.
    pub fn loaded_keys(&self) -> Vec<QueueKey> {
        read(&self.map).keys().cloned().collect()
    }

    /// Stops the actor of `key`, if loaded, as [`HandOver`] says.
    pub async fn hand_over(&self, key: &QueueKey) {
        let addr = running(&self.map, key).map(|l| l.addr.clone());
        if let Some(a) = addr {
            let _ = a.send(HandOver).await;
        }
    }

    /// Number of loaded queue actors.
    pub fn loaded(&self) -> usize {
        read(&self.map).len()
    }
}
