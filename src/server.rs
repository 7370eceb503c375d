//! `tasq serve`: start-up, HTTP(S) serving, key reloads and graceful shutdown.
//!
//! Start: the service's start-up ([`crate::service`]: open the store, put back tasks that were in
//! flight at a crash, start the registry and the purge of old records), then bind and print
//! `tasq listening on http://ADDR` (or `https://`; tests and scripts wait for that line).
//! SIGHUP reloads the API keys. SIGTERM / SIGINT: `/readyz` and new API requests answer 503,
//! parked polls are answered `{"tasks": []}`, in-flight requests finish, the store is flushed,
//! and `run` returns.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::HttpServer;

use crate::config::Config;
use crate::http::create_app;
use crate::service::Tasq;

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
///
/// The service is built by its own start-up ([`Tasq::start`]); this adds the HTTP server,
/// TLS, the per-client connection limit, the ready line and the signal handling.
pub async fn run(config: Config, source: ConfigSource) -> std::io::Result<()> {
    // A setting that cannot work (a database that cannot be reached) is `InvalidInput`, which
    // the binary answers with exit status 2, as for any bad setting.
    let tasq = Tasq::start(config).await.map_err(|e| match e {
        crate::Error::InvalidArgument(m) => {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, m)
        }
        e => std::io::Error::other(e),
    })?;
    let config = tasq.config().clone();
    actix_rt::spawn(reload_keys_on_hangup(tasq.auth().clone(), source));
    if config.storage.exit_on_failure {
        actix_rt::spawn(exit_when_storage_fails(tasq.clone()));
    }
    let clients = crate::http::ClientConnections::new(config.limits.max_connections_per_client);
    let serving = tasq.clone();
    let server = HttpServer::new(move || {
        // Runs on each worker's thread: queue actors may run there too (see `registry`).
        serving.share_current_thread();
        create_app(serving.clone())
    })
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
    #[cfg(feature = "postgres")]
    if let Some(cluster) = tasq.cluster() {
        let (cluster, tls) = (cluster.clone(), config.tls.enabled());
        // Blocking (a database round trip): off the runtime's thread.
        let _ = tokio::task::spawn_blocking(move || cluster.serving_at(addr, tls)).await;
    }
    let server = server.run();
    log_setup(&config, addr, scheme);
    println!("tasq listening on {scheme}://{addr}");
    #[cfg(feature = "sqs")]
    let sqs = if config.sqs.enabled {
        Some(sqs_server(&tasq, &config)?)
    } else {
        None
    };
    let _ = std::io::stdout().flush();

    let handle = server.handle();
    #[cfg(feature = "sqs")]
    let sqs_handle = sqs.as_ref().map(|s| s.handle());
    #[cfg(feature = "sqs")]
    if let Some(s) = sqs {
        actix_rt::spawn(s);
    }
    let stopping = tasq.clone();
    actix_rt::spawn(async move {
        wait_for_signal().await;
        log::info!("shutting down");
        // New requests answer 503 and parked polls are answered empty at once; then the
        // requests still running finish.
        if let Err(e) = stopping.shutdown().await {
            log::error!("flushing the store on shutdown failed: {e}");
        }
        #[cfg(feature = "sqs")]
        if let Some(h) = sqs_handle {
            h.stop(true).await;
        }
        handle.stop(true).await;
    });
    server.await?;
    // Writes of the requests that finished during the stop are flushed too.
    tasq.flush().await.map_err(std::io::Error::other)?;
    log::info!("stopped; store flushed");
    Ok(())
}

/// Starts the SQS endpoint on `[sqs] bind` (with the API's TLS, when on) and prints the
/// line that says where.
#[cfg(feature = "sqs")]
fn sqs_server(tasq: &Tasq, config: &Config) -> std::io::Result<actix_web::dev::Server> {
    let state = crate::sqs::State::new(tasq.clone(), config.sqs.clone());
    let server = HttpServer::new(move || {
        actix_web::App::new().configure(crate::sqs::configure(state.clone()))
    })
    .workers(config.http_threads())
    .disable_signals()
    .shutdown_timeout(config.shutdown_timeout.as_secs().max(1));
    let (server, scheme) = if config.tls.enabled() {
        let tls = tls_config(&config.tls)?;
        (server.bind_rustls_0_23(config.sqs.bind, tls)?, "https")
    } else {
        (server.bind(config.sqs.bind)?, "http")
    };
    let addr = server.addrs().first().copied().unwrap_or(config.sqs.bind);
    log::info!(
        "SQS endpoint on {scheme}://{addr}: queues in namespace {:?}, account {}, signatures {}",
        config.sqs.namespace,
        config.sqs.account_id,
        if config.auth.enabled {
            "checked"
        } else {
            "not checked (auth off)"
        }
    );
    println!("tasq SQS endpoint listening on {scheme}://{addr}");
    Ok(server.run())
}

/// The exit status after a failed write or sync (`EX_IOERR`).
pub const EXIT_STORAGE_FAILED: i32 = 74;

/// How long requests keep being answered (writes with 503) after a failed write or sync,
/// before the process exits: long enough for the answers already decided to go out.
const STORAGE_FAILED_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Exits the process once the store failed a write or sync: the open store can acknowledge
/// nothing more, and a restart recovers it from what is durable (sled replays its log), so a
/// supervisor (systemd `Restart=on-failure`, Kubernetes) brings tasq back whole. Nothing is
/// flushed on the way out: a flush could succeed over pages the kernel dropped.
async fn exit_when_storage_fails(tasq: Tasq) {
    tasq.storage_failed().await;
    tokio::time::sleep(STORAGE_FAILED_GRACE).await;
    let failure = tasq.storage_failure();
    log::error!(
        "exiting with status {EXIT_STORAGE_FAILED} after a storage failure ({}); start tasq \
         again (a supervisor does) to recover the store from what is on disk",
        failure.as_deref().unwrap_or("unknown")
    );
    let _ = std::io::stderr().flush();
    std::process::exit(EXIT_STORAGE_FAILED);
}

/// One line of what this server runs with (address, TLS, store, durability, auth), and a
/// warning for a setup that refuses every request (auth on without a key).
fn log_setup(config: &Config, addr: SocketAddr, scheme: &str) {
    let store = match config.storage.backend {
        crate::config::Backend::Sled => format!("sled in {}", config.data_dir.display()),
        crate::config::Backend::Postgres => "PostgreSQL".to_string(),
    };
    let auth = &config.auth;
    let auth_line = if auth.enabled {
        format!(
            "auth on, {} API key{}, /metrics {}",
            auth.keys.len(),
            if auth.keys.len() == 1 { "" } else { "s" },
            if auth.metrics_token_sha256.is_empty() {
                "open"
            } else {
                "behind its token"
            }
        )
    } else {
        "auth off".to_string()
    };
    let tls = if config.tls.enabled() {
        "TLS on"
    } else {
        "TLS off"
    };
    log::info!(
        "serving on {scheme}://{addr} ({tls}), store: {store}, durability {:?}, {auth_line}",
        config.durability
    );
    if auth.enabled && auth.keys.is_empty() {
        log::warn!(
            "auth is on but no API key is configured: every API request will be refused \
             (401); add one under [[auth.keys]] (tasq key new prints it)"
        );
    }
}

/// Loads the PEM certificate chain and key for HTTPS and WSS.
fn tls_config(tls: &crate::config::TlsConfig) -> std::io::Result<rustls::ServerConfig> {
    use crate::config::pem;
    let certs = pem::certificates("tls.cert", &tls.cert).map_err(std::io::Error::other)?;
    let key = pem::private_key("tls.key", &tls.key).map_err(std::io::Error::other)?;
    rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| std::io::Error::other(pem::unloadable("tls.key", &tls.key, &e)))
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
