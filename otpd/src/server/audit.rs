//! The audit trail (`core::audit` carries the rules): a `tracing` layer
//! that takes every `otpd::audit` event, gives it the next sequence number
//! and chain value, and writes the line to the journal (with fields of its
//! own) or to the log; a thread that keeps the head in the store, so that a
//! restart continues the chain.
//!
//! The layer is installed when `otpd serve` starts logging, and chains from
//! the moment [`Trail::start`] has read the head from the store. Until then
//! (and in every other command) an `otpd::audit` event is an ordinary log
//! line.

use super::ServeError;
use crate::config::{AuditOutput, Config};
use crate::core::audit::{self, ChainValue, Head, Value};
use crate::store::Store;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use zeroize::Zeroizing;

/// The target of every audit event.
pub const TARGET: &str = "otpd::audit";

/// The least time between two writes of the head to the store: under a
/// burst of logins the head is written at most 5 times a second, not once
/// per line (on a fleet, each write is a statement on the shared database).
const PERSIST_EVERY: Duration = Duration::from_millis(200);

/// The running trail, once [`Trail::start`] has set it.
static ACTIVE: RwLock<Option<Arc<Chain>>> = RwLock::new(None);

fn active() -> Option<Arc<Chain>> {
    ACTIVE.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Whether audit events are chained now (the ordinary log then leaves them
/// out: they are written by the layer).
pub fn chained() -> bool {
    ACTIVE.read().unwrap_or_else(|e| e.into_inner()).is_some()
}

/// The head now (`otpd status`, `otpd audit verify`), in its text form.
pub fn current_head() -> Option<String> {
    active().map(|c| {
        c.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .head
            .to_text()
    })
}

enum Sink {
    /// Standard error: the log file, or whatever the daemon's stderr is.
    Log,
    /// journald's native protocol.
    Journal,
}

struct Chain {
    key: Zeroizing<ChainValue>,
    host: String,
    sink: Sink,
    state: Mutex<State>,
    persist: Arc<Persist>,
}

/// The head, and whether the trail is closed (after the stop line; a line
/// that comes later is written unchained, without the marker).
struct State {
    head: Head,
    closed: bool,
}

/// The head waiting to be written to the store, and whether to stop.
struct Persist {
    slot: Mutex<(Option<Head>, bool)>,
    wake: Condvar,
}

/// The layer `otpd serve` installs (see the module's documentation).
pub struct AuditLayer;

impl<S: Subscriber> tracing_subscriber::Layer<S> for AuditLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let Some(chain) = active() else {
            return;
        };
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        let level = match *event.metadata().level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARN",
            Level::INFO => "INFO",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "TRACE",
        };
        chain.append(level, &fields.0);
    }
}

impl Chain {
    /// Chains and writes one line. The lock is held while the line is
    /// written, so that lines reach the log in the order of their numbers.
    fn append(&self, level: &str, fields: &[(String, Value)]) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        if state.closed {
            // After the stop line and the last head kept: not chained,
            // and without the marker, so that verify does not read it.
            let body = audit::body(0, &time, &self.host, level, fields);
            let late = body.strip_prefix(audit::MARKER).unwrap_or(&body);
            write_log(&format!(
                "otpd: audit line after the trail closed: {late}\n"
            ));
            return;
        }
        let head = state.head;
        let Some(seq) = head.seq.checked_add(1) else {
            return;
        };
        let body = audit::body(seq, &time, &self.host, level, fields);
        let value = audit::chain(&self.key, &head.chain, &body);
        let line = audit::line(&body, &head.chain, &value);
        match self.sink {
            Sink::Journal => {
                if let Err(e) = journal(level, &line, seq, &value, fields) {
                    // The line goes to the log instead, with why.
                    write_log(&format!("{line}\n"));
                    write_log(&format!(
                        "otpd: the journal refused audit line seq={seq} ({e}); written here\n"
                    ));
                }
            }
            Sink::Log => write_log(&format!("{line}\n")),
        }
        state.head = Head { seq, chain: value };
        self.persist.offer(state.head);
    }
}

fn write_log(text: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// The journal entry of a line: the line as `MESSAGE`, and each field as
/// `OTPD_NAME` (plain text), so that `journalctl OTPD_OUTCOME=denied` works.
fn journal(
    level: &str,
    line: &str,
    seq: u64,
    chain: &ChainValue,
    fields: &[(String, Value)],
) -> Result<(), String> {
    use libsystemd::logging::{journal_send, Priority};
    let priority = match level {
        "ERROR" => Priority::Error,
        "WARN" => Priority::Warning,
        "INFO" => Priority::Info,
        _ => Priority::Debug,
    };
    let mut vars: Vec<(String, String)> = vec![
        ("SYSLOG_IDENTIFIER".into(), "otpd".into()),
        ("OTPD_SEQ".into(), seq.to_string()),
        ("OTPD_CHAIN".into(), audit::hex(chain)),
    ];
    for (name, value) in fields {
        if audit::valid_name(name) && !matches!(name.as_str(), "seq" | "chain" | "source") {
            vars.push((format!("OTPD_{}", name.to_ascii_uppercase()), value.plain()));
        }
    }
    // Where the attempt came from, under one name whatever the line calls it.
    let source = ["source", "rhost", "peer"].iter().find_map(|n| {
        fields
            .iter()
            .find(|(f, v)| f == n && !v.plain().is_empty())
            .map(|(_, v)| v.plain())
    });
    if let Some(source) = source {
        vars.push(("OTPD_SOURCE".into(), source));
    }
    journal_send(priority, line, vars.into_iter()).map_err(|e| e.to_string())
}

/// An event's fields as the line holds them.
struct Fields(Vec<(String, Value)>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        // `user = ?name` is written with Debug: read the text back.
        let value = audit::unquote_debug(&text).unwrap_or(text);
        self.0.push((field.name().to_string(), Value::Str(value)));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .push((field.name().to_string(), Value::Str(value.to_string())));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.push((field.name().to_string(), Value::Int(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.push((field.name().to_string(), Value::UInt(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.push((field.name().to_string(), Value::Bool(value)));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.push((field.name().to_string(), Value::Float(value)));
    }
}

impl Persist {
    fn offer(&self, head: Head) {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).0 = Some(head);
        self.wake.notify_one();
    }
}

/// The trail of a running daemon; [`Trail::stop`] at shutdown writes its
/// last line and keeps the head.
pub struct Trail {
    chain: Arc<Chain>,
    thread: Option<std::thread::JoinHandle<()>>,
    store: Arc<dyn Store>,
}

/// This host's name, as the lines and the fleet store's head know it.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Trail {
    /// Reads the head from the store and starts chaining (the first line
    /// says so, with the version and where the chain resumed).
    pub fn start(config: &Config, store: Arc<dyn Store>) -> Result<Trail, ServeError> {
        let Some(key) = store.derived_secret(audit::KEY_LABEL) else {
            return Err(ServeError(
                "the store cannot derive the audit trail's key".into(),
            ));
        };
        let host = host_name();
        let head = match store
            .audit_head(&host)
            .map_err(|e| ServeError(format!("cannot read the audit trail's head: {e}")))?
        {
            None => Head::START,
            Some(text) => Head::from_text(&text).ok_or_else(|| {
                ServeError(format!(
                    "the audit trail's head in {} is damaged ({text:?})",
                    store.describe()
                ))
            })?,
        };
        let sink = match config.audit.output {
            AuditOutput::Journal => Sink::Journal,
            AuditOutput::Log => Sink::Log,
            AuditOutput::Auto if libsystemd::logging::connected_to_journal() => Sink::Journal,
            AuditOutput::Auto => Sink::Log,
        };
        let persist = Arc::new(Persist {
            slot: Mutex::new((None, false)),
            wake: Condvar::new(),
        });
        let chain = Arc::new(Chain {
            key: Zeroizing::new(key),
            host: host.clone(),
            sink,
            state: Mutex::new(State {
                head,
                closed: false,
            }),
            persist: persist.clone(),
        });
        let thread = {
            let store = store.clone();
            std::thread::Builder::new()
                .name("otpd-audit".into())
                .spawn(move || keep_head(&persist, store.as_ref(), &host))
                .map_err(|e| ServeError(format!("cannot start the audit thread: {e}")))?
        };
        *ACTIVE.write().unwrap_or_else(|e| e.into_inner()) = Some(chain.clone());
        tracing::info!(
            target: TARGET,
            op = "start",
            outcome = if head.seq == 0 { "new" } else { "resumed" },
            after = head.seq,
            version = env!("CARGO_PKG_VERSION"),
        );
        Ok(Trail {
            chain,
            thread: Some(thread),
            store,
        })
    }
}

impl Drop for Trail {
    /// Writes the stop line, stops chaining and keeps the last head (at a
    /// clean shutdown, and when the start fails after the trail began).
    fn drop(&mut self) {
        tracing::info!(target: TARGET, op = "stop", outcome = "done");
        *ACTIVE.write().unwrap_or_else(|e| e.into_inner()) = None;
        self.chain
            .persist
            .slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1 = true;
        self.chain.persist.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Closed under the lock: a line that comes later (a thread that
        // took the trail before it was cleared) cannot move the head past
        // the one kept here.
        let head = {
            let mut state = self.chain.state.lock().unwrap_or_else(|e| e.into_inner());
            state.closed = true;
            state.head
        };
        if let Err(e) = self.store.set_audit_head(&self.chain.host, &head.to_text()) {
            tracing::error!(
                "cannot keep the audit trail's head at seq={}: {e}",
                head.seq
            );
        }
    }
}

/// The thread that keeps the head in the store: the newest head offered,
/// at most every [`PERSIST_EVERY`], until told to stop.
fn keep_head(persist: &Persist, store: &dyn Store, host: &str) {
    loop {
        let (head, stop) = {
            let mut slot = persist.slot.lock().unwrap_or_else(|e| e.into_inner());
            while slot.0.is_none() && !slot.1 {
                slot = persist.wake.wait(slot).unwrap_or_else(|e| e.into_inner());
            }
            (slot.0.take(), slot.1)
        };
        if let Some(head) = head {
            if let Err(e) = store.set_audit_head(host, &head.to_text()) {
                tracing::warn!(
                    "cannot keep the audit trail's head at seq={} in the store: {e}",
                    head.seq
                );
            }
        }
        if stop {
            return;
        }
        std::thread::sleep(PERSIST_EVERY);
    }
}
