//! `otpd serve`: the daemon.

// Without the pages (feature `web`), the handler's side of them
// (`handler::WebBackend`) is built but has no caller.
pub mod audit;
#[cfg_attr(not(feature = "web"), allow(dead_code, unused_imports))]
mod handler;
pub mod keyfile;
mod listener;
mod login;
pub mod metrics;
#[cfg(feature = "web")]
mod metrics_http;
pub mod policy;
pub mod push;
mod rekey;
mod setup;
mod slots;
pub mod sms;
mod statefs;
pub mod stores;
pub mod worker;

pub use handler::Handler;
pub use rekey::{rekey, rekey_backup};

use crate::config::Config;
use std::sync::Arc;
use tracing::info;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServeError(pub String);

/// Runs the daemon until SIGTERM or SIGINT; returns after a clean shutdown.
pub fn serve(config: Config) -> Result<(), ServeError> {
    use setup::{check_trusted_file, Trust};
    let mut config = config;
    // A loaded config was checked already; this covers one built in code.
    config
        .check_features(crate::config::BuiltFeatures::THIS_BINARY)
        .map_err(ServeError)?;
    // First, while this is the only thread.
    sms::prepare(&mut config.sms).map_err(ServeError)?;
    if let Some(path) = &config.path {
        check_trusted_file("config", path, Trust::NoForeignWrites)?;
    }
    if let Some(key) = &config.web.tls_key {
        check_trusted_file("[web] tls_key", key, Trust::Private)?;
    }
    if let Some(command) = &config.sms.command {
        check_trusted_file("[sms] command", command, Trust::NoForeignWrites)?;
        info!(
            command = %command.display(),
            "text messages are sent {}",
            sms::describe_sender(&config.sms).map_err(ServeError)?
        );
    }
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    setup::prepare_state_dir(&config.state_dir)?;
    // Held for the daemon's lifetime: a second daemon on the same state_dir
    // fails here, before it touches the store or the socket.
    let _lock = setup::lock_state_dir(&config.state_dir, None)?;
    if rekey_backup(&config).exists() {
        return Err(ServeError(format!(
            "`otpd rekey` was interrupted ({} exists): run it again with the same new key \
             file to finish, then start otpd",
            rekey_backup(&config).display()
        )));
    }
    let store = stores::open(&config)?;
    // From here every decision's audit line is chained; dropped (the stop
    // line, the head kept) before the store's final flush.
    let trail = audit::Trail::start(&config, store.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("otpd")
        .build()
        .map_err(|e| ServeError(format!("cannot start the runtime: {e}")))?;
    // Made inside the runtime: the handler keeps its handle, to push sign-in
    // requests from the pages' own threads too.
    let handler = {
        let _inside = runtime.enter();
        Arc::new(Handler::new(store.clone(), config.clone()))
    };
    let own_socket = runtime.block_on(async {
        let signals = listener::stop_signals();
        // The pages first: a port in use or a bad certificate stops the
        // daemon here, with a message, before it reports ready.
        #[cfg(feature = "web")]
        let web = match config.web.listen {
            Some(_) => Some(
                crate::web::bind(&config.web)
                    .await
                    .map_err(|e| ServeError(format!("[web]: {e}")))?,
            ),
            None => None,
        };
        // The metrics on a thread of their own. Unlike the pages, an
        // address that cannot be bound does not stop the daemon: any local
        // user can take a loopback port while otpd restarts, and logins
        // must not depend on it. The thread logs it and tries again.
        #[cfg(feature = "web")]
        let metrics = match config.metrics.address().map_err(ServeError)? {
            Some(listen) => Some(metrics_http::start(listen, handler.clone())?),
            None => None,
        };
        // systemd's otpd.socket, or our own (standalone, or as installed
        // without socket activation). systemd owns the file of its socket.
        let (listener, own_socket) = match setup::inherited_socket()? {
            Some(listener) => {
                info!("using the socket handed over by systemd");
                handler.set_socket_activated(true);
                (listener, false)
            }
            None => (setup::bind_socket(&config.socket)?, true),
        };
        #[cfg(feature = "web")]
        let (stop_web, web_task) = {
            let (stop_web, web_stopped) = tokio::sync::oneshot::channel::<()>();
            let web_task = web.map(|bound| {
                let backend = Arc::new(handler::WebBackend::new(handler.clone()));
                tokio::spawn(bound.serve(backend, async move {
                    let _ = web_stopped.await;
                }))
            });
            (stop_web, web_task)
        };
        info!(
            socket = %config.socket.display(),
            state_dir = %config.state_dir.display(),
            "otpd ready"
        );
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        listener::run(listener, handler, signals).await;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        #[cfg(feature = "web")]
        if let Some(metrics) = metrics {
            let _ = tokio::task::spawn_blocking(move || metrics.stop()).await;
        }
        #[cfg(feature = "web")]
        {
            let _ = stop_web.send(());
            if let Some(task) = web_task {
                match task.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!("the enrolment pages stopped with an error: {e}")
                    }
                    Err(e) => tracing::error!("the enrolment pages task failed: {e}"),
                }
            }
        }
        Ok::<bool, ServeError>(own_socket)
    })?;
    if own_socket {
        let _ = std::fs::remove_file(&config.socket);
    }
    // The conversations still running on the runtime's blocking threads
    // end (and write their audit lines) before the trail closes.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    drop(trail);
    store
        .sync()
        .map_err(|e| ServeError(format!("final flush of the store failed: {e}")))?;
    info!("otpd stopped");
    Ok(())
}
