//! The accept loop: one task per connection, each request carried out on
//! the blocking pool, SIGTERM/SIGINT for a clean stop.

use super::handler::Handler;
use super::login::{self, CONVERSATION_DEADLINE};
use super::policy::Caller;
use super::slots::{Slot, SlotLimits, Slots};
use otpd_proto::{
    decode_payload, encode_frame, payload_len, ErrorCode, ProtoError, Request, Response,
    FRAME_HEADER_LEN, MAX_REQUEST_LEN,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

/// How long a connection may sit idle between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the rest of a frame, or the reply, may take once begun: a slow
/// or half-open client is dropped instead of holding a slot.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once. Non-root callers (screen lockers) share 896
/// of them, at most 16 per uid, so the last 128 are always there for root
/// (sshd, sudo, login). A caller whose share is used up takes the place of
/// the connection of that share that has waited longest for its client
/// (`slots`); only when all of them are busy is it refused, with a log line.
const SLOT_LIMITS: SlotLimits = SlotLimits {
    total: 1024,
    non_root: 896,
    per_uid: 16,
};
/// The longest a connection of one-shot requests may stay open, however
/// busy (a login conversation has its own, longer deadline).
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);
/// How long shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// SIGTERM and SIGINT, for [`run`]. Taken before the socket can be
/// reached: a stop asked for as soon as the socket answers (a service
/// manager, a test) then ends the daemon cleanly instead of finding the
/// default action, which kills it, or a handler that missed it.
pub fn stop_signals() -> std::io::Result<(Signal, Signal)> {
    Ok((
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    ))
}

/// Serves until SIGTERM or SIGINT ([`stop_signals`]), then lets in-flight
/// requests finish.
pub async fn run(
    listener: UnixListener,
    handler: Arc<Handler>,
    signals: std::io::Result<(Signal, Signal)>,
) {
    let (mut sigterm, mut sigint) = match signals {
        Ok(signals) => signals,
        Err(_) => {
            warn!("cannot install signal handlers; stop otpd with SIGKILL");
            return std::future::pending().await;
        }
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let slots = Slots::new(SLOT_LIMITS);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // design.md §4: the kernel says who is calling; no
                    // credentials, no service.
                    let caller = match stream.peer_cred() {
                        Ok(cred) => Caller { uid: cred.uid(), pid: cred.pid() },
                        Err(e) => {
                            warn!("dropping a connection whose peer credentials cannot be read: {e}");
                            continue;
                        }
                    };
                    let Some((slot, evicted)) = slots.admit(caller.uid) else {
                        warn!(
                            uid = caller.uid,
                            "connection limit reached for this caller, and all of its share is busy; refusing one"
                        );
                        continue;
                    };
                    if let Some(evicted) = evicted {
                        info!(
                            uid = evicted.uid,
                            idle_ms = evicted.waited.as_millis() as u64,
                            for_uid = caller.uid,
                            "connection limit reached: closed the connection that waited longest for its client"
                        );
                    }
                    let handler = handler.clone();
                    let stop = stop_rx.clone();
                    let open = handler.metrics().connection_opened();
                    connections.spawn(async move {
                        let _open = open;
                        let _ = timeout(
                            CONVERSATION_DEADLINE + IO_TIMEOUT,
                            serve_connection(stream, caller, handler, &slot, stop),
                        )
                        .await;
                        drop(slot);
                    });
                }
                Err(e) if out_of_descriptors(&e) => match slots.evict_oldest() {
                    // The process's RLIMIT_NOFILE is below the slot total (a
                    // unit without LimitNOFILE= gets 1024): make room as for
                    // a full table, then accept again once that connection's
                    // task has closed its descriptor.
                    Some(evicted) => {
                        info!(
                            uid = evicted.uid,
                            idle_ms = evicted.waited.as_millis() as u64,
                            "out of file descriptors ({e}): closed the connection that waited longest for its client"
                        );
                        let _ = timeout(Duration::from_millis(100), evicted.released()).await;
                    }
                    None => {
                        warn!("accept failed: {e}; every connection is busy");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Err(e) => {
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}");
    }
}

/// EMFILE or ENFILE: no descriptor for a new connection.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::errno::Errno::EMFILE as i32 || code == nix::errno::Errno::ENFILE as i32
    )
}

async fn serve_connection(
    mut stream: UnixStream,
    caller: Caller,
    handler: Arc<Handler>,
    slot: &Slot,
    mut stop: watch::Receiver<bool>,
) {
    let opened = tokio::time::Instant::now();
    loop {
        let age = opened.elapsed();
        if age >= MAX_CONNECTION_AGE {
            debug!(uid = caller.uid, "connection closed at its age limit");
            return;
        }
        let idle = IDLE_TIMEOUT.min(MAX_CONNECTION_AGE - age);
        let mut header = [0u8; FRAME_HEADER_LEN];
        tokio::select! {
            read = timeout(idle, stream.read_exact(&mut header)) => match read {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return, // closed by the client
                Err(_) => { debug!(uid = caller.uid, "idle connection closed"); return; }
            },
            _ = slot.closed() => return,
            _ = stop.changed() => return,
        }
        // Until the whole request is in, the connection is still waiting
        // for its client, and may be closed to make room.
        let request = tokio::select! {
            read = read_request(&mut stream, header) => read,
            _ = slot.closed() => return,
        };
        if !slot.begin_request() {
            return; // closed to make room just as the request arrived
        }
        let request = match request {
            Ok(r) => {
                handler.metrics().request(super::handler::op_name(&r));
                r
            }
            Err(e) => {
                handler.metrics().request("bad_request");
                warn!(uid = caller.uid, pid = caller.pid, "bad request: {e}");
                let reply = Response::Error {
                    code: ErrorCode::BadRequest,
                    message: format!("bad request: {e}"),
                };
                let _ = write_response(&mut stream, &reply).await;
                return; // the stream may be out of step: close it
            }
        };
        if let Request::Login(start) = request {
            // One login per connection, led by the daemon.
            login::converse(&mut stream, &caller, &handler, start, slot, &mut stop).await;
            return;
        }
        let reply = carry_out(&handler, &caller, request).await;
        if let Err(e) = write_response(&mut stream, &reply).await {
            debug!(uid = caller.uid, "reply not delivered: {e}");
            return;
        }
        slot.end_request();
    }
}

/// A request, on the blocking pool: commits wait for their fdatasync, and
/// even a read may look up a user name (NSS) or reopen the store after a
/// disk error, none of which belongs on the runtime's own threads.
async fn carry_out(handler: &Arc<Handler>, caller: &Caller, request: Request) -> Response {
    let h = handler.clone();
    let c = caller.clone();
    match tokio::task::spawn_blocking(move || h.handle(&c, request)).await {
        Ok(r) => r,
        Err(e) => {
            warn!("request handler failed: {e}");
            Response::Error {
                code: ErrorCode::Internal,
                message: "otpd could not complete the request".into(),
            }
        }
    }
}

pub(super) async fn read_request(
    stream: &mut UnixStream,
    header: [u8; FRAME_HEADER_LEN],
) -> Result<Request, ProtoError> {
    let len = payload_len(header, MAX_REQUEST_LEN)?;
    let mut payload = Zeroizing::new(vec![0u8; len]);
    match timeout(IO_TIMEOUT, stream.read_exact(&mut payload)).await {
        Ok(Ok(_)) => decode_payload(&payload),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ProtoError::Eof),
        Ok(Err(e)) => Err(ProtoError::Io(e)),
        Err(_) => Err(ProtoError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the rest of the frame did not arrive in time",
        ))),
    }
}

pub(super) async fn write_response(
    stream: &mut UnixStream,
    reply: &Response,
) -> Result<(), ProtoError> {
    let frame = encode_frame(reply)?;
    match timeout(IO_TIMEOUT, stream.write_all(&frame)).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(ProtoError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client did not read the reply",
        ))),
    }
}
