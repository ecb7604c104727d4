//! Listening: plain HTTP/1.1 (loopback only, the config makes sure) or
//! HTTPS with rustls, one task per connection, graceful shutdown.
//!
//! axum's own `serve` has no TLS; this is the accept loop of axum's
//! low-level rustls example, with hyper's connection builder, a
//! handshake and a header timeout (a slow client holds no more than one
//! connection slot for a few seconds) and a cap on open connections.

use super::backend::EnrolBackend;
use super::routes::router;
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
/// A request's headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// At shutdown, requests under way get this long to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Connections open at once at most; further clients wait in the
/// kernel's backlog. The backend runs on tokio's blocking pool (512
/// threads by default), so this also bounds the threads the pages use.
const MAX_CONNECTIONS: usize = 256;
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
    backend: Arc<dyn EnrolBackend>,
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
    pub async fn serve(
        self,
        backend: Arc<dyn EnrolBackend>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), WebError> {
        let Bound {
            listener,
            local_address,
            tls,
        } = self;
        let app = router(backend);
        let graceful = GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
            let watcher = graceful.watcher();
            let app = app.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let _slot = slot;
                match tls {
                    None => serve_connection(stream, peer, app, watcher).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(stream)) => serve_connection(stream, peer, app, watcher).await,
                            Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
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
        Ok(())
    }
}

/// One connection: HTTP/1.1 with keep-alive, the peer's address handed to
/// the router as `ConnectInfo`, closed early when shutdown starts.
async fn serve_connection<S>(stream: S, peer: SocketAddr, app: Router, watcher: Watcher)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = app.map_request(move |mut request: axum::extract::Request<_>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
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
