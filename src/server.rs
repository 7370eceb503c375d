//! Start-up, background work and graceful shutdown.
//!
//! Start: open the store, put back tasks that were in flight at a crash, start the registry,
//! bind, then print `tasq listening on http://ADDR` (tests and scripts wait for that line).
//! SIGTERM / SIGINT: `/readyz` and new API requests answer 503, parked polls are answered
//! `{"tasks": []}`, in-flight requests finish, the store is flushed, and `run` returns.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpServer;

use crate::clock::now_ms;
use crate::config::{Config, Durability};
use crate::http::{create_app, AppState, Lifecycle};
use crate::metrics::Metrics;
use crate::queue::Env;
use crate::registry::Queues;
use crate::storage::{Store, StoreOptions};

/// How often finished records are purged.
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// Records purged per storage pass.
const PURGE_BATCH: usize = 10_000;

/// Opens the store and recovers it: tasks in flight at a crash go back to their queues.
pub fn open_store(config: &Config, metrics: Arc<Metrics>) -> crate::error::Result<Arc<Store>> {
    let store = Store::open(
        &config.data_dir,
        &StoreOptions {
            fsync: config.durability == Durability::Fsync,
            cache_capacity_bytes: config.cache_capacity_bytes,
            temporary: false,
            max_bytes: config.storage.max_bytes,
        },
        metrics,
    )?;
    let requeued = store.recover_in_flight()?;
    if requeued > 0 {
        log::info!("recovery: {requeued} tasks in flight at the last stop are ready again");
    }
    Ok(store)
}

/// Where the configuration came from, to read it again on SIGHUP.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// `--config FILE`.
    pub file: Option<std::path::PathBuf>,
    /// The command line's settings.
    pub overrides: crate::config::Overrides,
}

/// Runs the server until SIGTERM / SIGINT; SIGHUP reloads the API keys from `source`.
/// Must run inside an actix system.
pub async fn run(config: Config, source: ConfigSource) -> std::io::Result<()> {
    let config = Arc::new(config);
    let metrics = Metrics::new(config.metrics.max_queue_series);
    let store = open_store(&config, metrics.clone()).map_err(std::io::Error::other)?;
    let queues = Queues::start(Arc::new(Env {
        store: store.clone(),
        config: config.clone(),
        metrics: metrics.clone(),
        parked: Arc::default(),
    }));
    let lifecycle = Arc::new(Lifecycle::default());
    let auth = Arc::new(crate::auth::Auth::new(&config.auth));
    actix_rt::spawn(reload_keys_on_hangup(auth.clone(), source));
    let state = AppState {
        queues: queues.clone(),
        store: store.clone(),
        config: config.clone(),
        metrics,
        lifecycle: lifecycle.clone(),
        auth,
    };
    let clients = crate::http::ClientConnections::new(config.limits.max_connections_per_client);
    let server = HttpServer::new(move || create_app(state.clone()))
        .on_connect(move |conn, data| clients.on_connect(conn, data))
        .workers(config.http_threads())
        .disable_signals()
        // A poller that hangs up must be noticed at once: with half-closed connections
        // refused, actix drops the handler future on EOF, which unparks the poll.
        .h1_allow_half_closed(false)
        .shutdown_timeout(config.shutdown_timeout.as_secs().max(1));
    let (server, scheme) = if config.tls.enabled() {
        let tls = tls_config(&config.tls)?;
        (server.bind_rustls_0_23(config.bind, tls)?, "https")
    } else {
        (server.bind(config.bind)?, "http")
    };
    let addr: SocketAddr = server.addrs().first().copied().unwrap_or(config.bind);
    let server = server.run();
    lifecycle.set_ready();
    log::info!(
        "serving on {addr}, store in {}, durability {:?}",
        config.data_dir.display(),
        config.durability
    );
    println!("tasq listening on {scheme}://{addr}");
    let _ = std::io::stdout().flush();

    actix_rt::spawn(purge_loop(store.clone()));
    let handle = server.handle();
    actix_rt::spawn(async move {
        wait_for_signal().await;
        log::info!("shutting down");
        lifecycle.set_stopping();
        queues.shutdown_all().await;
        handle.stop(true).await;
    });
    server.await?;
    store.flush().map_err(std::io::Error::other)?;
    log::info!("stopped; store flushed");
    Ok(())
}

/// Loads the PEM certificate chain and key for HTTPS and WSS.
fn tls_config(tls: &crate::config::TlsConfig) -> std::io::Result<rustls::ServerConfig> {
    let bad = |what: &str, path: &str, e: &dyn std::fmt::Display| {
        std::io::Error::other(format!("config key `tls.{what}`: cannot load {path}: {e}"))
    };
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(&tls.cert).map_err(|e| bad("cert", &tls.cert, &e))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| bad("cert", &tls.cert, &e))?;
    if certs.is_empty() {
        return Err(bad("cert", &tls.cert, &"no certificate in the file"));
    }
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(&tls.key).map_err(|e| bad("key", &tls.key, &e))?,
    ))
    .map_err(|e| bad("key", &tls.key, &e))?
    .ok_or_else(|| bad("key", &tls.key, &"no private key in the file"))?;
    rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| bad("key", &tls.key, &e))
}

async fn purge_loop(store: Arc<Store>) {
    loop {
        let s = store.clone();
        let purged = tokio::task::spawn_blocking(move || {
            let mut total = 0;
            loop {
                match s.purge_expired(now_ms(), PURGE_BATCH) {
                    Ok(n) => {
                        total += n;
                        if n < PURGE_BATCH {
                            return total;
                        }
                    }
                    Err(e) => {
                        log::error!("purging finished tasks failed: {e}");
                        return total;
                    }
                }
            }
        })
        .await
        .unwrap_or(0);
        if purged > 0 {
            log::info!("purged {purged} finished task records past their retention");
        }
        tokio::time::sleep(PURGE_EVERY).await;
    }
}

/// SIGHUP: reads the configuration again and swaps in its API keys; open connections stay.
async fn reload_keys_on_hangup(auth: Arc<crate::auth::Auth>, source: ConfigSource) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        log::error!("cannot listen for SIGHUP; API keys will not reload");
        return;
    };
    while hangup.recv().await.is_some() {
        match Config::load(source.file.as_deref(), std::env::vars(), &source.overrides) {
            Ok(c) => {
                auth.reload(&c.auth);
                log::info!("SIGHUP: reloaded {} API keys", c.auth.keys.len());
            }
            Err(e) => log::error!("SIGHUP: keeping the current API keys: {e}"),
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            log::error!("cannot listen for signals; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}
