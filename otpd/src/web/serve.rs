//! Listening: plain HTTP/1.1 (loopback only, the config makes sure) or
//! HTTPS with rustls, one task per connection, graceful shutdown.
//!
//! axum's own `serve` has no TLS; this is the accept loop of axum's
//! low-level rustls example, with hyper's connection builder, a
//! handshake and a header timeout, a cap on open connections in all and
//! per client ([`PageLimits`]).
//!
//! The pages run on a thread and a tokio runtime of their own
//! (`otpd-web`), and do their blocking work on threads of their own
//! (`otpd-pages-N`): nothing a client of the pages does (handshakes,
//! slow bodies, a flood of requests) runs on the threads that serve the
//! PAM socket (design.md §8).

use super::backend::EnrollBackend;
use super::limits::{ClientKey, ConnectionCounter, PageLimits};
use super::routes::{router, PageOptions};
use crate::config::WebConfig;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// A TLS handshake must be done within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At shutdown, requests under way get this long to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The longest a connection may stay open, however busy: a kept-alive
/// connection cannot hold its place for ever.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(120);
/// hyper's read buffer, which bounds the request line and headers.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Why the pages cannot be served. Each message names the address or the
/// file and the reason.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// `[web] listen` is not set.
    #[error("[web] listen is not set: no address to serve the enrolment pages on")]
    NotConfigured,
    /// Only one of `tls_cert` and `tls_key` is set.
    #[error("[web] tls_cert and tls_key go together: set both or neither")]
    HalfTls,
    /// The listening socket could not be opened.
    #[error("cannot serve the enrolment pages on {address}: {source}")]
    Bind {
        /// `[web] listen`.
        address: SocketAddr,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// A certificate or key file could not be read.
    #[error("cannot read the TLS {what} {}: {source}", path.display())]
    Read {
        /// "certificate" or "private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// A certificate or key file is not what it should be.
    #[error("TLS {what} {}: {reason}", path.display())]
    Pem {
        /// "certificate" or "private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The pages' thread or threads could not be started.
    #[error("cannot start the threads of the enrolment pages: {0}")]
    Threads(std::io::Error),
    /// rustls refused the certificate and key (for example a key that
    /// does not belong to the certificate).
    #[error("cannot use TLS certificate {} with key {}: {source}", cert.display(), key.display())]
    Tls {
        /// `[web] tls_cert`.
        cert: PathBuf,
        /// `[web] tls_key`.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
}

/// A listening socket for the pages, with its TLS settings loaded: made by
/// [`bind`] at start-up, so that a port in use or a bad certificate stops
/// the daemon with a clear message, then handed to [`Bound::serve`].
pub struct Bound {
    listener: TcpListener,
    local_address: SocketAddr,
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("local_address", &self.local_address)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Loads the TLS certificate and key (when set) and binds `[web] listen`.
pub async fn bind(config: &WebConfig) -> Result<Bound, WebError> {
    let address = config.listen.ok_or(WebError::NotConfigured)?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(TlsAcceptor::from(Arc::new(tls_config(cert, key)?))),
        (None, None) => None,
        _ => return Err(WebError::HalfTls),
    };
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| WebError::Bind { address, source })?;
    let local_address = listener
        .local_addr()
        .map_err(|source| WebError::Bind { address, source })?;
    Ok(Bound {
        listener,
        local_address,
        tls,
    })
}

/// [`bind`], then [`Bound::serve`]: serves the pages until `shutdown`
/// completes.
pub async fn serve(
    config: &WebConfig,
    backend: Arc<dyn EnrollBackend>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WebError> {
    bind(config).await?.serve(backend, shutdown).await
}

impl Bound {
    /// The address actually bound (with the port chosen by the kernel when
    /// `listen` says port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_address
    }

    /// Whether the pages are served over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves the pages until `shutdown` completes; then stops accepting,
    /// lets requests under way finish (a few seconds at most) and returns.
    /// Failed accepts and broken connections are logged, not returned.
    /// The pages run on a thread of their own (see the module's doc).
    pub async fn serve(
        self,
        backend: Arc<dyn EnrollBackend>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), WebError> {
        self.serve_with(backend, PageLimits::default(), shutdown)
            .await
    }

    /// [`Bound::serve`] with other limits (for tests).
    pub async fn serve_with(
        self,
        backend: Arc<dyn EnrollBackend>,
        limits: PageLimits,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), WebError> {
        let Bound {
            listener,
            local_address,
            tls,
        } = self;
        let bind_error = move |source| WebError::Bind {
            address: local_address,
            source,
        };
        // Moved to the pages' own runtime below.
        let listener = listener.into_std().map_err(bind_error)?;
        let options = PageOptions {
            tls: tls.is_some(),
            limits,
        };
        let app = router(backend, options).map_err(WebError::Threads)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (done, finished) = tokio::sync::oneshot::channel::<Result<(), WebError>>();
        std::thread::Builder::new()
            .name("otpd-web".into())
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(WebError::Threads)
                    .and_then(|runtime| {
                        runtime.block_on(async move {
                            let listener = TcpListener::from_std(listener).map_err(bind_error)?;
                            // A dropped sender (the caller gave up) stops too.
                            let stopped = async move {
                                let _ = stopped.await;
                            };
                            accept_loop(listener, local_address, tls, app, limits, stopped).await;
                            Ok(())
                        })
                    });
                let _ = done.send(result);
            })
            .map_err(WebError::Threads)?;
        tokio::pin!(shutdown, finished);
        tokio::select! {
            () = &mut shutdown => {
                let _ = stop.send(());
            }
            // The thread ended on its own: it could not start.
            result = &mut finished => {
                return result.unwrap_or(Ok(()));
            }
        }
        finished.await.unwrap_or(Ok(()))
    }
}

/// Accepts connections until `shutdown`, each served by a task of its
/// own on the current (the pages') runtime; then lets requests under way
/// finish for [`SHUTDOWN_GRACE`].
async fn accept_loop(
    listener: TcpListener,
    local_address: SocketAddr,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: PageLimits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = ConnectionCounter::new(limits.connections_per_client);
    let mut refused_since_log = 0u64;
    let mut last_refusal_log: Option<tokio::time::Instant> = None;
    tracing::info!(
        "serving the enrolment pages on {}://{local_address}",
        if tls.is_some() { "https" } else { "http" }
    );
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = async {
                let slot = Arc::clone(&slots).acquire_owned().await;
                (slot, listener.accept().await)
            } => accepted,
        };
        let (slot, (stream, peer)) = match accepted {
            (Ok(slot), Ok(connection)) => (slot, connection),
            (_, Err(e)) => {
                // EMFILE and the like: wait rather than spin.
                tracing::warn!("enrolment pages on {local_address}: cannot accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            // The semaphore is never closed.
            (Err(_), Ok(_)) => continue,
        };
        let Some(place) = per_client.admit(ClientKey::from(peer.ip())) else {
            // The client holds its share of connections: this one is
            // closed at once. Counted, and logged at most once a minute.
            drop(stream);
            refused_since_log += 1;
            let now = tokio::time::Instant::now();
            if last_refusal_log.is_none_or(|at| now - at >= Duration::from_secs(60)) {
                tracing::warn!(
                    refused = refused_since_log,
                    "enrolment pages: connections closed at once because their client \
                     already had {} open",
                    limits.connections_per_client
                );
                refused_since_log = 0;
                last_refusal_log = Some(now);
            }
            continue;
        };
        let watcher = graceful.watcher();
        let app = app.clone();
        let tls = tls.clone();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let _place = place;
            let serve = async {
                match tls {
                    None => serve_connection(stream, peer, app, header_timeout, watcher).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(stream)) => {
                                serve_connection(stream, peer, app, header_timeout, watcher).await
                            }
                            Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                }
            };
            if tokio::time::timeout(MAX_CONNECTION_AGE, serve)
                .await
                .is_err()
            {
                tracing::debug!("enrolment page connection closed at its maximum age");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "enrolment pages: connections still open after {} s, closing them",
            SHUTDOWN_GRACE.as_secs()
        );
    }
}

/// One connection: HTTP/1.1 with keep-alive, the peer's address handed to
/// the router as `ConnectInfo`, closed early when shutdown starts.
async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    watcher: Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = app.map_request(move |mut request: axum::extract::Request<_>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    let connection =
        builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!("enrolment page connection ended: {e}");
    }
}

/// The rustls server settings: the certificate chain and key from PEM
/// files, the ring provider, TLS 1.2 and 1.3, HTTP/1.1 by ALPN.
fn tls_config(cert: &Path, key: &Path) -> Result<ServerConfig, WebError> {
    // Read once at start-up, before any connection: blocking is fine.
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| WebError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let pem_error = |what: &'static str, path: &Path, reason: String| WebError::Pem {
        what,
        path: path.to_owned(),
        reason,
    };

    let cert_pem = read("certificate", cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("certificate", cert, format!("not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(pem_error(
            "certificate",
            cert,
            "no certificate in it (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }

    let key_pem = read("private key", key)?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        pem_error(
            "private key",
            key,
            format!(
                "no PEM private key in it (expected -----BEGIN PRIVATE KEY----- or similar): {e}"
            ),
        )
    })?;

    let tls_error = |source| WebError::Tls {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    };
    // An explicit provider: no process-wide default to install or to
    // clash with another crate's.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(tls_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
