//! Connections to PostgreSQL, used from any thread: a few threads of ours, each with its own
//! connection, run the jobs sent to them, and whether the database is reachable.
//!
//! The `postgres` client blocks on a runtime of its own, which panics on a thread that
//! already drives one (the queue actors' threads do); a job handed to a thread of ours, its
//! caller blocked on a plain channel meanwhile, does not.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::collections::HashMap;

use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};
use prometheus::IntGauge;

use crate::error::{Error, Result};

/// How to connect.
#[derive(Clone)]
pub struct Settings {
    /// The libpq URL.
    pub url: String,
    /// `statement_timeout` of every connection.
    pub statement_timeout: Duration,
    /// `synchronous_commit` of the connection, when set (the group commit's).
    pub synchronous_commit: Option<bool>,
}

impl Settings {
    /// A new connection.
    pub fn connect(&self) -> Result<Client> {
        let mut config: postgres::Config = self
            .url
            .parse()
            .map_err(|e| Error::invalid(format!("not a PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        let mut options = format!(
            "-c statement_timeout={}",
            self.statement_timeout.as_millis()
        );
        if let Some(on) = self.synchronous_commit {
            let value = if on { "on" } else { "off" };
            options.push_str(&format!(" -c synchronous_commit={value}"));
        }
        config.application_name("tasq").options(&options);
        config.connect(NoTls).map_err(|e| unreachable(&e))
    }
}

/// What went wrong, in PostgreSQL's own words when it said (the client's `Display` of a
/// server error is only "db error").
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// The 503 for a database that cannot be reached.
pub fn unreachable(e: &postgres::Error) -> Error {
    Error::Unavailable(format!("PostgreSQL is unreachable: {}", describe(e)))
}

/// What an error from a statement means: a lost connection, a server shutting down or
/// starting, out of resources (disk, memory, connections) or too slow for
/// `statement_timeout` is `unavailable` (the caller may retry once it is back); anything else
/// is an internal error.
pub fn classify(e: &postgres::Error) -> Error {
    let Some(code) = e.code().map(|c| c.code()) else {
        return unreachable(e);
    };
    // Class 08: connection exception; 57P01–57P03: shutdown, crash, starting up.
    if e.is_closed() || code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03") {
        return unreachable(e);
    }
    // Class 53: insufficient resources (disk full, out of memory, too many connections);
    // 57014: cancelled (the statement timeout).
    if code.starts_with("53") || code == "57014" {
        return Error::Unavailable(format!(
            "PostgreSQL cannot take the work now: {}",
            describe(e)
        ));
    }
    Error::Internal(format!("PostgreSQL: {}", describe(e)))
}

/// Whether the database answers: set down by any failed connection, up again by the next
/// success. Mirrored in `tasq_storage_healthy`.
pub struct Reachable {
    up: AtomicBool,
    why: Mutex<String>,
    gauge: IntGauge,
}

impl Reachable {
    /// Reachable, as start-up found it.
    pub fn new(gauge: IntGauge) -> Self {
        gauge.set(1);
        Reachable {
            up: AtomicBool::new(true),
            why: Mutex::new(String::new()),
            gauge,
        }
    }

    /// `Ok` while reachable; else the 503 writes answer.
    pub fn check(&self) -> Result<()> {
        if self.up.load(Ordering::Acquire) {
            return Ok(());
        }
        let why = self.why.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Err(Error::Unavailable(format!(
            "{why}; writes are refused until it is back"
        )))
    }

    /// Whether it is reachable.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// It answered.
    pub fn up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            log::info!("postgres: reachable again");
        }
        self.gauge.set(1);
    }

    /// It failed with `e`: an unreachable database is down; other errors change nothing.
    pub fn saw(&self, e: &Error) {
        if let Error::Unavailable(why) = e {
            *self.why.lock().unwrap_or_else(|e| e.into_inner()) = why.clone();
            if self.up.swap(false, Ordering::AcqRel) {
                log::error!("postgres: {why}");
            }
            self.gauge.set(0);
        }
    }
}

/// A connection and the statements prepared on it: a statement is parsed and planned once
/// per connection, then each use is one round trip.
pub struct Session {
    client: Client,
    prepared: HashMap<String, Statement>,
}

/// Parameters of a statement.
pub type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl Session {
    /// The statement for `sql`, prepared on first use.
    pub fn prepare(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(st) = self.prepared.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(sql)?;
        self.prepared.insert(sql.to_string(), st.clone());
        Ok(st)
    }

    /// Rows of a query.
    pub fn query(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, postgres::Error> {
        let st = self.prepare(sql)?;
        self.client.query(&st, params)
    }

    /// The one row of a query.
    pub fn query_one(&mut self, sql: &str, params: Params<'_>) -> Result<Row, postgres::Error> {
        let st = self.prepare(sql)?;
        self.client.query_one(&st, params)
    }

    /// The row of a query, if any.
    pub fn query_opt(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<Row>, postgres::Error> {
        let st = self.prepare(sql)?;
        self.client.query_opt(&st, params)
    }

    /// Runs a statement; the rows it changed.
    pub fn execute(&mut self, sql: &str, params: Params<'_>) -> Result<u64, postgres::Error> {
        let st = self.prepare(sql)?;
        self.client.execute(&st, params)
    }

    /// The connection itself (transactions, unprepared SQL).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// A connection that is made again when it was lost.
pub struct Conn {
    client: Option<Session>,
    settings: Settings,
}

impl Conn {
    /// A connection made now.
    pub fn open(settings: Settings) -> Result<Conn> {
        let client = settings.connect()?;
        Ok(Conn {
            client: Some(Session {
                client,
                prepared: HashMap::new(),
            }),
            settings,
        })
    }

    fn lost(&self) -> bool {
        self.client.as_ref().is_none_or(|s| s.client.is_closed())
    }

    /// Runs `f`, connecting first if the connection was lost. A connection that breaks under
    /// `f` (the server restarted since its last use) is made again and `f` runs once more:
    /// the first statement after a restart must not fail for a socket that died meanwhile.
    pub fn run<T>(
        &mut self,
        f: &dyn Fn(&mut Session) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        let fresh = self.lost();
        match self.try_run(f) {
            Err(Error::Unavailable(_)) if !fresh => {
                self.client = None;
                self.try_run(f)
            }
            other => other,
        }
    }

    fn try_run<T>(
        &mut self,
        f: &dyn Fn(&mut Session) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        if self.lost() {
            self.client = None;
            self.client = Some(Session {
                client: self.settings.connect()?,
                prepared: HashMap::new(),
            });
        }
        let client = self
            .client
            .as_mut()
            .ok_or_else(|| Error::Unavailable("PostgreSQL is unreachable".into()))?;
        let result = f(client).map_err(|e| classify(&e));
        if matches!(result, Err(Error::Unavailable(_))) {
            self.client = None;
        }
        result
    }
}

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

/// A pool of threads, each holding one connection.
pub struct Pool {
    tx: Mutex<mpsc::Sender<Job>>,
    reachable: Arc<Reachable>,
}

impl Pool {
    /// Starts `size` threads, each connected (start-up fails if one cannot connect).
    pub fn start(settings: &Settings, size: usize, reachable: Arc<Reachable>) -> Result<Pool> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..size {
            let mut conn = Conn::open(settings.clone())?;
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("tasq-pg-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    job(&mut conn);
                })
                .map_err(|e| Error::Internal(format!("starting a PostgreSQL thread: {e}")))?;
        }
        Ok(Pool {
            tx: Mutex::new(tx),
            reachable,
        })
    }

    /// Runs `f` on a connection of the pool and answers its result, blocking meanwhile.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&mut Session) -> std::result::Result<T, postgres::Error> + Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |conn| {
            let _ = reply.send(conn.run(&f));
        });
        let gone = || Error::Unavailable("the PostgreSQL threads have stopped".into());
        self.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| gone())?;
        let result = answer.recv().map_err(|_| gone())?;
        match &result {
            Ok(_) => self.reachable.up(),
            Err(e) => self.reachable.saw(e),
        }
        result
    }
}
