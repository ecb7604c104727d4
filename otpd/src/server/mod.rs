//! `otpd serve`: the daemon.

mod handler;
mod listener;
pub mod policy;
mod setup;
mod slots;

pub use handler::Handler;

use crate::config::Config;
use crate::store::{SledStore, Store};
use std::sync::Arc;
use tracing::info;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServeError(pub String);

/// Runs the daemon until SIGTERM or SIGINT; returns after a clean shutdown.
pub fn serve(config: Config) -> Result<(), ServeError> {
    use setup::{check_trusted_file, Trust};
    if let Some(path) = &config.path {
        check_trusted_file("config", path, Trust::NoForeignWrites)?;
    }
    if let Some(key) = &config.web.tls_key {
        check_trusted_file("[web] tls_key", key, Trust::Private)?;
    }
    if let Some(command) = &config.sms.command {
        check_trusted_file("[sms] command", command, Trust::NoForeignWrites)?;
    }
    setup::prepare_state_dir(&config.state_dir)?;
    // Held for the daemon's lifetime: a second daemon on the same state_dir
    // fails here, before it touches the store or the socket.
    let _lock = setup::lock_state_dir(&config.state_dir)?;
    let store_dir = config.state_dir.join("store");
    let store: Arc<dyn Store> =
        Arc::new(SledStore::open(&store_dir).map_err(|e| ServeError(e.to_string()))?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("otpd")
        .build()
        .map_err(|e| ServeError(format!("cannot start the runtime: {e}")))?;
    let handler = Arc::new(Handler::new(store.clone(), config.clone()));
    let own_socket = runtime.block_on(async {
        // The pages first: a port in use or a bad certificate stops the
        // daemon here, with a message, before it reports ready.
        let web = match config.web.listen {
            Some(_) => Some(
                crate::web::bind(&config.web)
                    .await
                    .map_err(|e| ServeError(format!("[web]: {e}")))?,
            ),
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
        let (stop_web, web_stopped) = tokio::sync::oneshot::channel::<()>();
        let web_task = web.map(|bound| {
            let backend = Arc::new(handler::WebBackend::new(handler.clone()));
            tokio::spawn(bound.serve(backend, async move {
                let _ = web_stopped.await;
            }))
        });
        info!(
            socket = %config.socket.display(),
            state_dir = %config.state_dir.display(),
            "otpd ready"
        );
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        listener::run(listener, handler).await;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        let _ = stop_web.send(());
        if let Some(task) = web_task {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("the enrolment pages stopped with an error: {e}"),
                Err(e) => tracing::error!("the enrolment pages task failed: {e}"),
            }
        }
        Ok::<bool, ServeError>(own_socket)
    })?;
    if own_socket {
        let _ = std::fs::remove_file(&config.socket);
    }
    store
        .sync()
        .map_err(|e| ServeError(format!("final flush of the store failed: {e}")))?;
    info!("otpd stopped");
    Ok(())
}
