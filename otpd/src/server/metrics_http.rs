//! `[metrics] listen`: `GET /metrics` over plain HTTP/1.1 on a loopback
//! address or a Unix socket (the config refuses anything else), with
//! hyper's connection builder.
//!
//! The listener runs on a thread and a tokio runtime of its own
//! (`otpd-metrics`), like the pages: a scrape, slow or not, never runs on
//! the threads that serve the PAM socket. It holds at most
//! [`MAX_CONNECTIONS`] connections (a scraper keeps one), each with a
//! header timeout and a maximum age. The scrape itself reads only
//! counters; the users-by-state gauges, which need every record, are
//! counted on this runtime's blocking pool every [`USER_COUNT_EVERY`].

use super::handler::Handler;
use super::metrics::Format;
use super::ServeError;
use crate::config::MetricsListen;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 4;
/// The request line and headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection may stay open, however busy.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(120);
/// How often the users are counted by state (a read of every record).
const USER_COUNT_EVERY: Duration = Duration::from_secs(60);

/// The metrics' listening socket, bound at start-up (so that a port in
/// use stops the daemon with a message before it reports ready).
pub enum Bound {
    /// A loopback address.
    Tcp(std::net::TcpListener),
    /// A Unix socket, whose file is removed at the end.
    Unix(std::os::unix::net::UnixListener, std::path::PathBuf),
}

/// Binds `listen` (inside the daemon's runtime).
pub fn bind(listen: &MetricsListen) -> Result<Bound, ServeError> {
    match listen {
        MetricsListen::Tcp(address) => {
            let listener = std::net::TcpListener::bind(address).map_err(|e| {
                ServeError(format!("[metrics] listen: cannot listen on {address}: {e}"))
            })?;
            listener
                .set_nonblocking(true)
                .map_err(|e| ServeError(format!("[metrics] listen: {address}: {e}")))?;
            Ok(Bound::Tcp(listener))
        }
        MetricsListen::Unix(path) => {
            let listener = super::setup::bind_socket_with_mode(path, 0o660)
                .map_err(|e| ServeError(format!("[metrics] listen: {}", e.0)))?;
            let listener = listener
                .into_std()
                .map_err(|e| ServeError(format!("[metrics] listen: {}: {e}", path.display())))?;
            Ok(Bound::Unix(listener, path.clone()))
        }
    }
}

/// The running listener: stopped by [`Running::stop`].
pub struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, closes the connections, and waits for the thread.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// How long the metrics' thread waits before it tries again to bind an
/// address that was in use.
const BIND_RETRY: Duration = Duration::from_secs(10);

/// Serves `handler`'s metrics on `listen`, on a thread of its own, until
/// stopped. When the address cannot be bound (a port another program
/// holds), the thread logs why and tries again every [`BIND_RETRY`]: the
/// daemon serves logins meanwhile.
pub fn start(listen: MetricsListen, handler: Arc<Handler>) -> Result<Running, ServeError> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("otpd-metrics".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name("otpd-metrics")
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::error!("cannot start the metrics' runtime: {e}");
                    return;
                }
            };
            runtime.block_on(async move {
                tokio::pin!(stopped);
                let mut failures = 0u32;
                let bound = loop {
                    match bind(&listen) {
                        Ok(bound) => {
                            if failures > 0 {
                                tracing::warn!("[metrics] listen: {listen} is served now");
                            }
                            break bound;
                        }
                        Err(e) => {
                            if failures == 0 {
                                tracing::error!(
                                    "{e}; the metrics are not served (logins are), trying again \
                                     every {} s",
                                    BIND_RETRY.as_secs()
                                );
                            }
                            failures = failures.saturating_add(1);
                            tokio::select! {
                                _ = &mut stopped => return,
                                _ = tokio::time::sleep(BIND_RETRY) => {}
                            }
                        }
                    }
                };
                run(bound, handler, stopped.as_mut()).await;
            });
        })
        .map_err(|e| ServeError(format!("cannot start the metrics' thread: {e}")))?;
    Ok(Running { stop, thread })
}

/// The listener inside the runtime, of either kind.
enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// An accepted connection, of either kind.
enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Listener {
    async fn accept(&self) -> std::io::Result<Stream> {
        match self {
            Listener::Tcp(l) => l.accept().await.map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(l) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
        }
    }
}

async fn run(
    bound: Bound,
    handler: Arc<Handler>,
    mut stopped: std::pin::Pin<&mut tokio::sync::oneshot::Receiver<()>>,
) {
    let (listener, path) = match bound {
        Bound::Tcp(l) => (
            tokio::net::TcpListener::from_std(l).map(Listener::Tcp),
            None,
        ),
        Bound::Unix(l, path) => (
            tokio::net::UnixListener::from_std(l).map(Listener::Unix),
            Some(path),
        ),
    };
    let Ok(listener) = listener.inspect_err(|e| tracing::error!("[metrics] listen: {e}")) else {
        return;
    };
    match (&listener, &path) {
        (Listener::Tcp(l), _) => {
            if let Ok(address) = l.local_addr() {
                tracing::info!("serving the metrics on http://{address}/metrics");
            }
        }
        (Listener::Unix(_), Some(path)) => {
            tracing::info!("serving the metrics on {} (/metrics)", path.display());
        }
        (Listener::Unix(_), None) => {}
    }
    let counting = tokio::spawn(count_users(handler.clone()));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let slot = tokio::select! {
            _ = stopped.as_mut() => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        let accepted = tokio::select! {
            _ = stopped.as_mut() => break,
            accepted = listener.accept() => accepted,
        };
        match (slot, accepted) {
            (Ok(slot), Ok(stream)) => {
                let handler = handler.clone();
                connections.spawn(async move {
                    match stream {
                        Stream::Tcp(s) => serve_connection(s, handler).await,
                        Stream::Unix(s) => serve_connection(s, handler).await,
                    }
                    drop(slot);
                });
            }
            (_, Err(e)) => {
                tracing::warn!("metrics: cannot accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (Err(_), _) => {}
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    if let Some(path) = path {
        let _ = std::fs::remove_file(&path);
    }
    // A scrape is short: those under way are simply closed.
    connections.abort_all();
    counting.abort();
}

/// Counts the users by state now and every [`USER_COUNT_EVERY`].
async fn count_users(handler: Arc<Handler>) {
    let mut every = tokio::time::interval(USER_COUNT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let h = handler.clone();
        match tokio::task::spawn_blocking(move || h.count_users_for_metrics()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("metrics: cannot count the users: {e}"),
            Err(e) => tracing::warn!("metrics: counting the users failed: {e}"),
        }
    }
}

async fn serve_connection<S>(stream: S, handler: Arc<Handler>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let handler = handler.clone();
        async move { Ok::<_, std::convert::Infallible>(answer(&request, &handler)) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(MAX_CONNECTION_AGE, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("metrics connection: {e}"),
        Err(_) => tracing::debug!("metrics connection closed at its maximum age"),
    }
}

/// `GET /metrics` (and `HEAD`); 404 for any other path, 405 for another
/// method.
fn answer(request: &Request<Incoming>, handler: &Handler) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &'static str, body: Bytes| {
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"not found: the metrics are at /metrics\n"),
        );
    }
    match *request.method() {
        Method::GET | Method::HEAD => {
            let format = Format::accepted(
                request
                    .headers()
                    .get(header::ACCEPT)
                    .and_then(|accept| accept.to_str().ok()),
            );
            let text = handler.metrics().render(handler.store().as_ref(), format);
            let body = if request.method() == Method::HEAD {
                Bytes::new()
            } else {
                Bytes::from(text)
            };
            reply(StatusCode::OK, format.content_type(), body)
        }
        _ => {
            let mut response = reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                Bytes::from_static(b"method not allowed: use GET\n"),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            response
        }
    }
}
