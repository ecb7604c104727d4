//! The daemon's Prometheus metrics: one registry and the handles the
//! decision points count with, held by the handler in an `Arc`; served by
//! `metrics_http.rs` when `[metrics] listen` is set (README "Metrics"
//! lists them).
//!
//! Label values are bounded: never a user name or an address. The one
//! label a caller chooses, the PAM service, is kept to the first
//! [`MAX_SERVICES`] distinct names seen (made of `[A-Za-z0-9._-]`, at most
//! [`MAX_SERVICE_LEN`] bytes); any other service is counted as `other`.

use crate::core::record::{EnrollState, UserRecord};
use crate::store::{Store, StoreHealth, StoreObserver};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Distinct PAM service names that get a label value of their own.
pub const MAX_SERVICES: usize = 16;
/// Longest PAM service name that gets a label value of its own.
pub const MAX_SERVICE_LEN: usize = 32;
/// The label value of every other service.
pub const OTHER_SERVICE: &str = "other";
/// The label value of a request without a service (`otpd verify`).
const NO_SERVICE: &str = "none";

type Labels = Vec<(&'static str, String)>;

/// The registry and every metric's handle.
pub struct Metrics {
    registry: Registry,
    services: Mutex<Vec<String>>,
    logins: Family<Labels, Counter>,
    login_checks: Family<Labels, Counter>,
    requests: Family<Labels, Counter>,
    throttled: Family<Labels, Counter>,
    texts: Family<Labels, Counter>,
    pushes: Family<Labels, Counter>,
    enrolments: Family<Labels, Counter>,
    login_duration: Histogram,
    commit_duration: Histogram,
    fdatasync_duration: Histogram,
    users: Family<Labels, Gauge>,
    abandoned: Gauge,
    connections: Gauge,
    postgres_up: Gauge,
    postgres_pool: Family<Labels, Gauge>,
    postgres_pool_max: Gauge,
    postgres_pool_waiting: Gauge,
}

/// Histogram buckets from `start` seconds, doubling `count` times.
fn seconds(start: f64, count: u16) -> Histogram {
    Histogram::new(exponential_buckets(start, 2.0, count))
}

impl Metrics {
    /// Every metric, registered, at zero; the PostgreSQL pool's gauges
    /// only `with_pool` (a store that reports its [`StoreHealth`]).
    pub fn new(with_pool: bool) -> Self {
        let mut registry = Registry::with_prefix("otpd");
        let build_info = Family::<Labels, Gauge>::default();
        build_info
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())])
            .set(1);
        registry.register(
            "build_info",
            "The running otpd's version (always 1)",
            build_info,
        );
        let metrics = Self {
            services: Mutex::new(Vec::new()),
            logins: Family::default(),
            login_checks: Family::default(),
            requests: Family::default(),
            throttled: Family::default(),
            texts: Family::default(),
            pushes: Family::default(),
            enrolments: Family::default(),
            // 0.25 ms to about 4 s.
            login_duration: seconds(0.000_25, 15),
            // 0.1 ms to about 3 s.
            commit_duration: seconds(0.000_1, 16),
            fdatasync_duration: seconds(0.000_1, 16),
            users: Family::default(),
            abandoned: Gauge::default(),
            connections: Gauge::default(),
            postgres_up: Gauge::default(),
            postgres_pool: Family::default(),
            postgres_pool_max: Gauge::default(),
            postgres_pool_waiting: Gauge::default(),
            registry: Registry::default(),
        };
        // The series of a fixed label set start at 0, so that rate() and
        // alerts see them before their first event.
        for (family, label, values) in [
            (&metrics.throttled, "limit", ["source", "user"]),
            (&metrics.texts, "result", ["sent", "failed"]),
            (&metrics.pushes, "result", ["sent", "failed"]),
            (&metrics.enrolments, "event", ["started", "confirmed"]),
        ] {
            for value in values {
                let _ = family.get_or_create(&vec![(label, value.to_owned())]);
            }
        }
        let r = &mut registry;
        r.register(
            "logins",
            "Login conversations ended, by PAM service and outcome (the login audit line's)",
            metrics.logins.clone(),
        );
        r.register(
            "login_checks",
            "Checks within logins and confirmations, by PAM service, op (verify, confirm, \
             approve) and outcome (accepted, wrong_code, replayed, throttled, approved, denied, ...)",
            metrics.login_checks.clone(),
        );
        r.register(
            "requests",
            "Requests received on the daemon's socket, by kind",
            metrics.requests.clone(),
        );
        r.register(
            "throttled",
            "Code checks refused without looking at the code, by the limit in force (source: \
             the source's own backoff; user: the user-wide ceiling)",
            metrics.throttled.clone(),
        );
        r.register(
            "texts",
            "Text messages with a code, by result (sent, failed)",
            metrics.texts.clone(),
        );
        r.register(
            "pushes",
            "Sign-in requests pushed to phones, by result (sent, failed)",
            metrics.pushes.clone(),
        );
        r.register(
            "enrolments",
            "Enrolments, by event (started: a pending device made; confirmed: its first code \
             accepted)",
            metrics.enrolments.clone(),
        );
        r.register_with_unit(
            "login_duration",
            "Time the daemon took for a login's request, from the request read to the answer \
             written (the person's typing and a phone's approval not included)",
            Unit::Seconds,
            metrics.login_duration.clone(),
        );
        r.register_with_unit(
            "store_commit_duration",
            "Time of the store's durable commits",
            Unit::Seconds,
            metrics.commit_duration.clone(),
        );
        r.register_with_unit(
            "store_fdatasync_duration",
            "Time of the sled store's flush and fdatasync (one per group of commits)",
            Unit::Seconds,
            metrics.fdatasync_duration.clone(),
        );
        r.register(
            "users",
            "Users by state (active, pending, throttled: active and in user-wide backoff), \
             counted in the background at most once a minute",
            metrics.users.clone(),
        );
        r.register(
            "enrolments_abandoned",
            "Users with a device still pending after [web] link_expires (24 h by default)",
            metrics.abandoned.clone(),
        );
        r.register(
            "connections_open",
            "Connections open on the daemon's socket",
            metrics.connections.clone(),
        );
        if !with_pool {
            return Self {
                registry,
                ..metrics
            };
        }
        let r = &mut registry;
        r.register(
            "postgres_up",
            "Whether the PostgreSQL store answered its last use (1) or not (0)",
            metrics.postgres_up.clone(),
        );
        r.register(
            "postgres_pool_connections",
            "Connections of the PostgreSQL pool, by state (in_use, idle)",
            metrics.postgres_pool.clone(),
        );
        r.register(
            "postgres_pool_max_connections",
            "The PostgreSQL pool's size limit",
            metrics.postgres_pool_max.clone(),
        );
        r.register(
            "postgres_pool_waiting",
            "Requests waiting for a connection of the PostgreSQL pool",
            metrics.postgres_pool_waiting.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// The label value of PAM service `service` (see the module's doc).
    /// Only a root caller's service takes a free slot (sshd, sudo, su,
    /// login and the display managers run PAM as root): names a local user
    /// sends are counted under their own label only once root's programs
    /// used them, so that no user can fill the slots before sshd does.
    pub fn service_label(&self, service: &str, from_root: bool) -> String {
        if service.is_empty() {
            return NO_SERVICE.to_owned();
        }
        let plain = service.len() <= MAX_SERVICE_LEN
            && service
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
            && service != OTHER_SERVICE
            && service != NO_SERVICE;
        if !plain {
            return OTHER_SERVICE.to_owned();
        }
        let mut seen = self.services.lock().unwrap_or_else(|e| e.into_inner());
        if seen.iter().any(|s| s == service) {
            return service.to_owned();
        }
        if from_root && seen.len() < MAX_SERVICES {
            seen.push(service.to_owned());
            return service.to_owned();
        }
        OTHER_SERVICE.to_owned()
    }

    /// A login conversation of a root caller (`from_root`) or another
    /// ended with `outcome` (its audit line's).
    pub fn login_ended(&self, service: &str, from_root: bool, outcome: &'static str) {
        self.logins
            .get_or_create(&vec![
                ("service", self.service_label(service, from_root)),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    /// A check of `op` (verify, confirm, approve) for `service` ended with
    /// `outcome` (its audit line's).
    pub fn checked(&self, service: &str, from_root: bool, op: &'static str, outcome: &str) {
        self.login_checks
            .get_or_create(&vec![
                ("service", self.service_label(service, from_root)),
                ("op", op.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    /// A request of `kind` (`Request`'s op name) arrived.
    pub fn request(&self, kind: &'static str) {
        self.requests
            .get_or_create(&vec![("kind", kind.to_owned())])
            .inc();
    }

    /// A check was refused by the source's backoff and/or the user-wide
    /// ceiling.
    pub fn throttled(&self, by_source: bool, by_user: bool) {
        for (limit, applies) in [("source", by_source), ("user", by_user)] {
            if applies {
                self.throttled
                    .get_or_create(&vec![("limit", limit.to_owned())])
                    .inc();
            }
        }
    }

    /// A text message was sent, or could not be.
    pub fn text(&self, sent: bool) {
        self.texts.get_or_create(&result(sent)).inc();
    }

    /// A push was sent, or could not be.
    pub fn push(&self, sent: bool) {
        self.pushes.get_or_create(&result(sent)).inc();
    }

    /// An enrolment `event`: "started" or "confirmed".
    pub fn enrolment(&self, event: &'static str) {
        self.enrolments
            .get_or_create(&vec![("event", event.to_owned())])
            .inc();
    }

    /// The daemon's time for one request of a login.
    pub fn login_step(&self, took: Duration) {
        self.login_duration.observe(took.as_secs_f64());
    }

    /// A connection to the daemon's socket opened; closed when the guard
    /// is dropped.
    pub fn connection_opened(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.inc();
        ConnectionGuard(self.clone())
    }

    /// Counts `users` by state at `now` (`user_wait`: the user-wide backoff
    /// still to wait, as `otpd status` counts it).
    pub fn count_users(
        &self,
        users: &[(String, UserRecord)],
        now: u64,
        abandoned_after: u64,
        user_wait: impl Fn(&UserRecord) -> Option<u64>,
    ) {
        let (mut active, mut pending, mut throttled, mut abandoned) = (0, 0, 0, 0);
        for (_, r) in users {
            match r.first_device().state {
                EnrollState::Pending => pending += 1,
                EnrollState::Active => {
                    active += 1;
                    if user_wait(r).is_some() {
                        throttled += 1;
                    }
                }
            }
            if r.devices().iter().any(|d| {
                d.state == EnrollState::Pending && d.created.saturating_add(abandoned_after) < now
            }) {
                abandoned += 1;
            }
        }
        for (state, count) in [
            ("active", active),
            ("pending", pending),
            ("throttled", throttled),
        ] {
            self.users
                .get_or_create(&vec![("state", state.to_owned())])
                .set(count);
        }
        self.abandoned.set(abandoned);
    }

    /// Sets the PostgreSQL store's gauges (nothing for a store without a
    /// pool).
    pub fn store_health(&self, health: Option<StoreHealth>) {
        let Some(h) = health else {
            return;
        };
        self.postgres_up.set(i64::from(h.reachable));
        let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let in_use = h.pool_size.saturating_sub(h.pool_available);
        for (state, count) in [("in_use", in_use), ("idle", h.pool_available)] {
            self.postgres_pool
                .get_or_create(&vec![("state", state.to_owned())])
                .set(as_i64(count));
        }
        self.postgres_pool_max.set(as_i64(h.pool_max));
        self.postgres_pool_waiting.set(as_i64(h.pool_waiting));
    }

    /// The scrape, after reading the store's live gauges: the registry in
    /// `format`.
    pub fn render(&self, store: &dyn Store, format: Format) -> String {
        self.store_health(store.health());
        let mut text = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail; an encoding error would be a
        // bug of the library, and then the scrape is empty.
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        match format {
            Format::OpenMetrics => text,
            Format::Prometheus => prometheus_text(&text),
        }
    }
}

/// The exposition formats a scraper may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text, as prometheus-client writes it: what a
    /// Prometheus server asks for (`Accept: application/openmetrics-text`).
    OpenMetrics,
    /// The Prometheus text format 0.0.4: for any other client (curl,
    /// `promtool check metrics`, older scrapers).
    Prometheus,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub fn accepted(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// Its media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// prometheus-client's OpenMetrics text as the Prometheus text format
/// 0.0.4, which the crate does not write: the two differ, for what otpd
/// exports, only in that OpenMetrics names a counter's family without the
/// `_total` its samples carry (0.0.4 names it with it), and has `# UNIT`
/// and `# EOF` lines. Samples, labels and escaping are the same.
fn prometheus_text(open_metrics: &str) -> String {
    let counters: Vec<&str> = open_metrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let family = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match family {
            Some(renamed) => text.push_str(&renamed),
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

fn result(sent: bool) -> Labels {
    vec![("result", if sent { "sent" } else { "failed" }.to_owned())]
}

/// Holds one open connection in `otpd_connections_open`.
pub struct ConnectionGuard(Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

impl StoreObserver for Metrics {
    fn commit(&self, took: Duration) {
        self.commit_duration.observe(took.as_secs_f64());
    }

    fn fdatasync(&self, took: Duration) {
        self.fdatasync_duration.observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_labels_are_bounded_and_plain() {
        let metrics = Metrics::new(false);
        assert_eq!(metrics.service_label("sshd", true), "sshd");
        assert_eq!(metrics.service_label("", true), "none");
        assert_eq!(metrics.service_label("a b", true), "other");
        assert_eq!(metrics.service_label("x\"}\n", true), "other");
        assert_eq!(metrics.service_label(&"s".repeat(33), true), "other");
        for n in 0..100 {
            metrics.service_label(&format!("svc{n}"), true);
        }
        let distinct: std::collections::BTreeSet<String> = (0..100)
            .map(|n| metrics.service_label(&format!("svc{n}"), true))
            .chain([metrics.service_label("sshd", true)])
            .collect();
        assert_eq!(distinct.len(), MAX_SERVICES + 1, "{distinct:?}");
        assert!(distinct.contains("other"));
        // The first ones seen keep their own.
        assert_eq!(metrics.service_label("sshd", true), "sshd");
    }

    #[test]
    fn a_local_user_cannot_take_the_service_slots_before_root_does() {
        let metrics = Metrics::new(false);
        for n in 0..MAX_SERVICES + 4 {
            assert_eq!(metrics.service_label(&format!("a{n}"), false), "other");
        }
        assert_eq!(metrics.service_label("sshd", true), "sshd");
        // A name root's programs use is the user's label too.
        assert_eq!(metrics.service_label("sshd", false), "sshd");
    }

    #[test]
    fn the_scrape_names_every_metric_with_its_prefix_and_suffix() {
        let metrics = Metrics::new(false);
        metrics.login_ended("sshd", true, "success");
        metrics.checked("sshd", true, "verify", "wrong_code");
        metrics.throttled(true, false);
        metrics.login_step(Duration::from_millis(3));
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(dir.path(), |_| {
            Ok(crate::core::seal::RecordKey::from_bytes(
                &[5; crate::core::seal::KEY_LEN],
            ))
        })
        .unwrap();
        let text = metrics.render(&store, Format::OpenMetrics);
        for line in [
            "otpd_logins_total{service=\"sshd\",outcome=\"success\"} 1",
            "otpd_login_checks_total{service=\"sshd\",op=\"verify\",outcome=\"wrong_code\"} 1",
            "otpd_throttled_total{limit=\"source\"} 1",
            "otpd_login_duration_seconds_count 1",
            "otpd_build_info{version=\"",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        // The sled store has no pool: no PostgreSQL gauges' samples.
        assert!(!text.contains("otpd_postgres_up "), "{text}");
        // The same in the Prometheus text format.
        let old = metrics.render(&store, Format::Prometheus);
        assert!(old.contains("# TYPE otpd_logins_total counter\n"), "{old}");
        assert!(old.contains("# HELP otpd_logins_total Login"), "{old}");
        assert!(
            old.contains("# TYPE otpd_login_duration_seconds histogram\n"),
            "{old}"
        );
        assert!(!old.contains("# UNIT") && !old.contains("# EOF"), "{old}");
        assert_eq!(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            old.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>()
        );
    }
}
