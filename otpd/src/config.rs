//! `/etc/otpd/otpd.toml`: every key has a default, so an empty file is
//! valid; an unknown key is an error naming the key and its line.

use crate::core::decision::Rules;
use crate::core::names::validate_issuer;
use crate::core::ratelimit::Limits;
use otpd_proto::Algorithm;
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};

/// Where the config is read from when neither `--config` nor `OTPD_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/otpd/otpd.toml";
/// The daemon's socket unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/otpd/otpd.sock";
/// Where the store lives unless configured otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/otpd";
/// The key that seals the store unless configured otherwise.
pub const DEFAULT_KEY_FILE: &str = "/etc/otpd/otpd.key";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The Unix socket the daemon listens on.
    pub socket: PathBuf,
    /// The directory holding the store (mode 0700).
    pub state_dir: PathBuf,
    /// The key that seals every record of the store (mode 0400); systemd's
    /// `LoadCredential=otpd.key:…` takes precedence.
    pub key_file: PathBuf,
    /// Defaults of new enrolments and the accepted window.
    pub totp: TotpConfig,
    /// Counter-based (HOTP) tokens: look-ahead and resync windows.
    pub hotp: HotpConfig,
    /// Rate limiting.
    pub limits: LimitsConfig,
    /// The self-enrolment pages (off unless `listen` is set).
    pub web: WebConfig,
    /// Text messages as a fallback (off unless `command` is set).
    pub sms: SmsConfig,
    /// Recovery codes.
    pub recovery: RecoveryConfig,
    /// Where the audit trail's chained lines go.
    pub audit: AuditConfig,
    /// Sign-ins approved on a paired phone (off unless `contact` is set).
    pub approve: ApproveConfig,
    /// Remembered logins per PAM service (off unless a service is named).
    pub remember: RememberConfig,
    /// Enrolment at the first login (off unless `group` is set).
    pub enrol_at_login: EnrolAtLoginConfig,
    /// Where the state lives: sled under `state_dir` (default) or a
    /// PostgreSQL database that every host of a fleet shares.
    pub store: StoreConfig,
    /// Prometheus metrics (off unless `listen` is set).
    pub metrics: MetricsConfig,
    /// The file this was read from (`None`: the built-in defaults).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            socket: DEFAULT_SOCKET.into(),
            state_dir: DEFAULT_STATE_DIR.into(),
            key_file: DEFAULT_KEY_FILE.into(),
            totp: TotpConfig::default(),
            hotp: HotpConfig::default(),
            limits: LimitsConfig::default(),
            web: WebConfig::default(),
            approve: ApproveConfig::default(),
            remember: RememberConfig::default(),
            enrol_at_login: EnrolAtLoginConfig::default(),
            sms: SmsConfig::default(),
            recovery: RecoveryConfig::default(),
            audit: AuditConfig::default(),
            store: StoreConfig::default(),
            metrics: MetricsConfig::default(),
            path: None,
        }
    }
}

/// The host of a `http://` URL (without user, port or path; an IPv6
/// address without its brackets); `None` for any other scheme.
fn plain_http_host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    Some(host)
}

/// `localhost` (or a name under it, RFC 6761), or a loopback address.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `[web]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Address and port to serve the pages on, e.g. "127.0.0.1:8080";
    /// unset (the default): no pages.
    pub listen: Option<std::net::SocketAddr>,
    /// The address users open, which `otpd enroll --link` prints, e.g.
    /// "https://otp.example.com" (a reverse proxy in front of `listen`).
    pub public_url: Option<String>,
    /// PEM certificate chain; with `tls_key`, the pages are served over TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// How long a link stays valid unless `--expires` says otherwise (default 24 h).
    #[serde(deserialize_with = "seconds_opt")]
    pub link_expires: Option<u64>,
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where `GET /metrics` is served: a loopback address and port
    /// ("127.0.0.1:9469") or the absolute path of a Unix socket; unset
    /// (the default): no metrics.
    pub listen: Option<String>,
}

/// Where the metrics are served ([`MetricsConfig::address`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsListen {
    /// Plain HTTP on a loopback address.
    Tcp(std::net::SocketAddr),
    /// Plain HTTP on a Unix socket at this path.
    Unix(PathBuf),
}

impl std::fmt::Display for MetricsListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsListen::Tcp(address) => write!(f, "http://{address}/metrics"),
            MetricsListen::Unix(path) => write!(f, "unix:{} /metrics", path.display()),
        }
    }
}

impl MetricsConfig {
    /// The address to serve on (`None`: metrics off), or why `listen` is
    /// refused: the metrics are plain HTTP without authentication, so only
    /// a loopback address or a Unix socket (whose file modes say who may
    /// connect) is allowed.
    pub fn address(&self) -> Result<Option<MetricsListen>, String> {
        let Some(listen) = &self.listen else {
            return Ok(None);
        };
        if listen.starts_with('/') {
            let path = PathBuf::from(listen);
            if path.file_name().is_none() || listen.contains('\0') {
                return Err(format!(
                    "[metrics] listen = {listen:?}: not a socket path (name a file, like \
                     \"/run/otpd/metrics.sock\")"
                ));
            }
            return Ok(Some(MetricsListen::Unix(path)));
        }
        let address: std::net::SocketAddr = listen.parse().map_err(|_| {
            format!(
                "[metrics] listen = {listen:?}: neither an address with a port (like \
                 \"127.0.0.1:9469\") nor an absolute Unix socket path"
            )
        })?;
        if !address.ip().is_loopback() {
            return Err(format!(
                "[metrics] listen = \"{address}\" is not a loopback address: the metrics are \
                 plain HTTP without authentication; listen on 127.0.0.1 or [::1] (behind a \
                 TLS proxy or an SSH tunnel for remote scrapers) or on a Unix socket path"
            ));
        }
        Ok(Some(MetricsListen::Tcp(address)))
    }
}

/// `[sms]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    /// The program that sends a text message: run without a shell as
    /// `COMMAND NUMBER`, the message on its stdin. Unset: no text messages.
    pub command: Option<PathBuf>,
    /// How long the command may take (default 2 s); then it is killed and
    /// the login is told no text could be sent. Keep it below the PAM
    /// module's `timeout=` (3 s by default), which a login waits at most.
    #[serde(deserialize_with = "seconds")]
    pub timeout: u64,
    /// Messages per user per hour at most (default 3).
    pub max_per_hour: u32,
    /// How long a texted code stays valid (default 5 min).
    #[serde(deserialize_with = "seconds")]
    pub code_lifetime: u64,
    /// The message; `{code}` is replaced by the code.
    pub message: String,
    /// The unprivileged user the command runs as (resolved when the daemon
    /// starts; never root). Unset: the daemon's own user. Another user
    /// needs CAP_SETUID and CAP_SETGID (otpd.service.d/sms-user.conf).
    pub user: Option<String>,
    /// `user`'s uid and gid, looked up at start (`server::sms::resolve_user`).
    #[serde(skip)]
    pub run_as: Option<RunAs>,
}

/// The identity the SMS sender runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    /// uid.
    pub uid: u32,
    /// The user's primary gid (its only group: supplementary groups are
    /// dropped).
    pub gid: u32,
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            command: None,
            // Below the PAM module's own timeout (3 s by default): a login
            // waits for the sender.
            timeout: 2,
            max_per_hour: 3,
            code_lifetime: 300,
            message: "Your verification code is {code}. Uw tokencode is {code}.".into(),
            user: None,
            run_as: None,
        }
    }
}

/// `[approve]`: sign-ins approved on a paired phone (a passkey and Web
/// Push, from the pages' phone app). Off unless `contact` is set; needs
/// `[web] public_url` (the phone's app and the passkey's relying party).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApproveConfig {
    /// Who the push services may contact about otpd's pushes: a `mailto:`
    /// or `https:` URL (the VAPID subject, RFC 8292). Unset: no approvals.
    pub contact: Option<String>,
    /// How long a sign-in request may be approved (default 60 s).
    #[serde(deserialize_with = "seconds")]
    pub timeout: u64,
    /// Requests pushed per user per hour at most (default 10).
    pub max_per_hour: u32,
    /// The push services' hosts pushes may go to (`*.example.com` for a
    /// domain's hosts; `127.0.0.1:PORT` for a plain-HTTP relay on this
    /// host). Default: the browser vendors' push services.
    pub push_hosts: Option<Vec<String>>,
}

impl Default for ApproveConfig {
    fn default() -> Self {
        Self {
            contact: None,
            timeout: 60,
            max_per_hour: 10,
            push_hosts: None,
        }
    }
}

impl ApproveConfig {
    /// Whether approvals are on.
    pub fn enabled(&self) -> bool {
        self.contact.is_some()
    }
}

/// `[remember]`: remembered logins. Each key but `same_source` names a PAM
/// service and how long a login of it is remembered after a second factor
/// (`sshd = "8h"`, `sudo = "15m"`; at most 7 days). Off for every service
/// not named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RememberConfig {
    /// Seconds per PAM service.
    pub services: std::collections::BTreeMap<String, u64>,
    /// An SSH login's binding includes its source's network (default true).
    pub same_source: bool,
}

impl Default for RememberConfig {
    fn default() -> Self {
        Self {
            services: std::collections::BTreeMap::new(),
            same_source: true,
        }
    }
}

impl RememberConfig {
    /// Seconds a login of `service` is remembered (0: not at all).
    pub fn secs(&self, service: &str) -> u64 {
        self.services.get(service).copied().unwrap_or(0)
    }
}

impl<'de> Deserialize<'de> for RememberConfig {
    /// A table of its own shape (service names are keys), read by hand:
    /// serde's `flatten` cannot refuse unknown keys, and every key here is
    /// either `same_source` or a service with a duration.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let table = toml::Table::deserialize(d)?;
        let mut config = RememberConfig::default();
        for (key, value) in table {
            if key == "same_source" {
                config.same_source = value
                    .as_bool()
                    .ok_or_else(|| D::Error::custom("same_source must be true or false"))?;
                continue;
            }
            if key.is_empty()
                || key.len() > 64
                || !key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(D::Error::custom(format!(
                    "{key:?} is not a PAM service name (letters, digits, '.', '_', '-')"
                )));
            }
            let secs = match &value {
                toml::Value::Integer(n) => u64::try_from(*n).ok(),
                toml::Value::String(text) => {
                    humantime::parse_duration(text).ok().map(|d| d.as_secs())
                }
                _ => None,
            }
            .ok_or_else(|| {
                D::Error::custom(format!(
                    "{key} = {value}: not a duration; write e.g. {key} = \"8h\""
                ))
            })?;
            if secs == 0 || secs > crate::core::remember::MAX_REMEMBER_SECS {
                return Err(D::Error::custom(format!(
                    "{key} = {value}: must be more than 0 and at most 7 days"
                )));
            }
            config.services.insert(key, secs);
        }
        Ok(config)
    }
}

/// `[enrol_at_login]`: a member of `group` without any device, whose first
/// factor has passed (an SSH key, or a password module stacked `requisite`
/// before pam_otpd), sets up the app at the login prompt.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct EnrolAtLoginConfig {
    /// The group whose members are offered it. Unset: nobody.
    pub group: Option<String>,
}

/// `[audit]`
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Where the audit lines go (default `auto`).
    pub output: AuditOutput,
}

/// `[audit] output`
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutput {
    /// The journal, with fields, when the daemon's standard error is the
    /// journal (run by systemd); the log (standard error) otherwise.
    #[default]
    Auto,
    /// Always the journal (a line the journal refuses goes to the log).
    Journal,
    /// Always the log: one line on standard error, like every other line.
    Log,
}

/// `[recovery]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// How many codes `otpd recovery-codes` and the enrolment page make (default 10).
    pub count: u32,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self { count: 10 }
    }
}

/// Which engine holds the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// sled under `state_dir`: one host.
    #[default]
    Sled,
    /// A PostgreSQL database (or an engine that speaks its protocol),
    /// shared by every host of a fleet.
    Postgres,
}

/// A connection string, which may hold a password: never shown by `Debug`,
/// wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ConnectionString(pub zeroize::Zeroizing<String>);

impl std::fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionString(…)")
    }
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// "sled" (default) or "postgres".
    pub kind: StoreKind,
    /// The PostgreSQL connection string, e.g.
    /// "postgresql://otpd@db.example.com/otpd?sslmode=require". A password
    /// in it is refused unless the config file is private to root: use
    /// `url_file` instead.
    pub url: Option<ConnectionString>,
    /// A file (mode 0600 or 0400, owned by root or otpd) holding the
    /// connection string on its first line.
    pub url_file: Option<PathBuf>,
    /// PEM certificates of the authorities that sign the database server's
    /// certificate (default: the system's trusted authorities). TLS always
    /// verifies the server's certificate and name.
    pub ca_file: Option<PathBuf>,
    /// How long one store operation may take before the login fails closed
    /// (default 1 s); keep it well below the PAM module's `timeout=` (3 s).
    #[serde(rename = "timeout", deserialize_with = "millis")]
    pub timeout_ms: u64,
    /// Connections to the database at most (default 16).
    pub pool_size: u32,
    /// Where this host remembers how far its store had come, outside
    /// `state_dir`, so that an older copy of the store put back is refused
    /// (default: beside `state_dir`, `/var/lib/otpd-anchor`; `""`: none).
    /// See [`Config::anchor_dir`].
    pub anchor_dir: Option<PathBuf>,
    /// What the PostgreSQL store's commits wait for: "on" (default: the
    /// WAL flushed on the server) or "remote_apply" (also applied on the
    /// synchronous standbys). Set on each commit transaction itself.
    pub synchronous_commit: SynchronousCommit,
}

/// `[store] synchronous_commit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SynchronousCommit {
    /// The commit's WAL is flushed to disk on the server.
    #[default]
    On,
    /// And applied on the synchronous standbys (readable there).
    RemoteApply,
}

impl SynchronousCommit {
    /// PostgreSQL's name of the value.
    pub fn as_sql(self) -> &'static str {
        match self {
            SynchronousCommit::On => "on",
            SynchronousCommit::RemoteApply => "remote_apply",
        }
    }
}

impl<'de> Deserialize<'de> for SynchronousCommit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "on" => Ok(SynchronousCommit::On),
            "remote_apply" => Ok(SynchronousCommit::RemoteApply),
            // Named, since serde's "unknown variant" would not name the key;
            // the weaker values (off, local, remote_write) are refused: a
            // commit must be durable before "accepted" is sent.
            other => Err(serde::de::Error::custom(format!(
                "[store] synchronous_commit = \"{other}\": must be \"on\" (the default) or \
                 \"remote_apply\""
            ))),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Sled,
            url: None,
            url_file: None,
            ca_file: None,
            timeout_ms: 1000,
            pool_size: 16,
            anchor_dir: None,
            synchronous_commit: SynchronousCommit::On,
        }
    }
}

/// Default lifetime of a self-enrolment link.
pub const DEFAULT_LINK_EXPIRES: u64 = 24 * 3600;

/// `[totp]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TotpConfig {
    /// HMAC of new enrolments: SHA1 (default), SHA256, SHA512.
    pub algorithm: Algorithm,
    /// Digits of new enrolments: 6 (default) or 8.
    pub digits: u8,
    /// Seconds per step of new enrolments (default 30).
    pub period: u64,
    /// Steps accepted either side of now (default 1).
    pub window: u16,
    /// The name shown in the app (default: the host name).
    pub issuer: Option<String>,
}

impl Default for TotpConfig {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::Sha1,
            digits: 6,
            period: 30,
            window: 1,
            issuer: None,
        }
    }
}

/// `[hotp]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HotpConfig {
    /// Counter values looked ahead of the next one at a login (default 10):
    /// button presses that never reached a login.
    pub window: u16,
    /// Counter values searched by `otpd resync` for two consecutive codes
    /// (default 100).
    pub resync_window: u16,
}

impl Default for HotpConfig {
    fn default() -> Self {
        Self {
            window: 10,
            resync_window: 100,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Consecutive failures from one source before it must wait (default 5).
    pub max_failures: u32,
    /// First wait (default 30 s); "30s", "2m" or whole seconds.
    #[serde(deserialize_with = "seconds")]
    pub base_delay: u64,
    /// Longest wait (default 15 min).
    #[serde(deserialize_with = "seconds")]
    pub max_delay: u64,
    /// Failures over all sources before sources that have not proven
    /// themselves for the user must wait (default 20).
    pub user_max_failures: u32,
    /// Days a source stays trusted for a user after a success from it
    /// (default 30; 0: no source is trusted but the user's own uid). The
    /// per-user ceiling never blocks a trusted source.
    pub trusted_source_days: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            max_failures: l.max_failures,
            base_delay: l.base_delay,
            max_delay: l.max_delay,
            user_max_failures: l.user_max_failures,
            trusted_source_days: l.trusted_source_secs / (24 * 3600),
        }
    }
}

/// A duration in milliseconds: "500ms", "1s" or whole milliseconds.
fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Millis(ms) => Ok(ms),
        Raw::Text(t) => humantime::parse_duration(&t)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "\"{t}\" is not a duration ({e}); write e.g. \"500ms\" or \"2s\""
                ))
            }),
    }
}

fn seconds_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    seconds(d).map(Some)
}

fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(s),
        Raw::Text(t) => humantime::parse_duration(&t)
            .map(|d| d.as_secs())
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "\"{t}\" is not a duration ({e}); write e.g. \"30s\" or \"15m\""
                ))
            }),
    }
}

/// A part of otpd that a build may leave out (a cargo feature of the
/// `otpd` crate; the default build and the packages have them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// `web`: the self-enrolment pages (`[web] listen`).
    Web,
    /// `postgres`: the PostgreSQL store (`[store] kind = "postgres"`,
    /// `otpd migrate --to postgres`).
    Postgres,
}

impl Feature {
    /// The cargo feature's name.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Web => "web",
            Feature::Postgres => "postgres",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Feature::Web => "the self-enrolment pages",
            Feature::Postgres => "the PostgreSQL store",
        }
    }
}

/// Which [`Feature`]s a binary was built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltFeatures {
    /// The `web` feature.
    pub web: bool,
    /// The `postgres` feature.
    pub postgres: bool,
}

impl BuiltFeatures {
    /// The features of this build.
    pub const THIS_BINARY: BuiltFeatures = BuiltFeatures {
        web: cfg!(feature = "web"),
        postgres: cfg!(feature = "postgres"),
    };
}

/// The refusal of `asked` (a config key and value, or a command) by a
/// binary built without `feature`.
pub fn built_without(asked: &str, feature: Feature) -> String {
    format!(
        "{asked}: this otpd was built without the cargo feature \"{}\" ({}); use an \
         otpd built with it (the packages and a default `cargo build` have it)",
        feature.name(),
        feature.what()
    )
}

/// A config that could not be loaded; the message says where and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Loads `path`. When `explicit` is false and the file does not exist,
    /// the defaults are used (a fresh host before the installer ran).
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Config::default())
            }
            Err(e) => {
                return Err(ConfigError(format!(
                    "config {}: cannot read: {e}",
                    path.display()
                )))
            }
        };
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| ConfigError(describe(&e, text, origin)))?;
        config.path = Some(origin.to_path_buf());
        config
            .validate()
            .map_err(|m| ConfigError(format!("config {}: {m}", origin.display())))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let t = &self.totp;
        if t.digits != 6 && t.digits != 8 {
            return Err(format!("[totp] digits = {}: must be 6 or 8", t.digits));
        }
        if !(15..=300).contains(&t.period) {
            return Err(format!(
                "[totp] period = {}: must be between 15 and 300 seconds",
                t.period
            ));
        }
        if t.window > 10 {
            return Err(format!("[totp] window = {}: must be at most 10", t.window));
        }
        if let Some(issuer) = &t.issuer {
            validate_issuer(issuer).map_err(|m| format!("[totp] issuer: {m}"))?;
        }
        let h = &self.hotp;
        if h.window > 100 {
            return Err(format!("[hotp] window = {}: must be at most 100", h.window));
        }
        if h.resync_window == 0 || h.resync_window > 1000 {
            return Err(format!(
                "[hotp] resync_window = {}: must be between 1 and 1000",
                h.resync_window
            ));
        }
        if h.resync_window < h.window {
            return Err(format!(
                "[hotp] resync_window = {} is smaller than window = {}",
                h.resync_window, h.window
            ));
        }
        let l = &self.limits;
        if l.trusted_source_days > 365 {
            return Err(format!(
                "[limits] trusted_source_days = {}: must be at most 365",
                l.trusted_source_days
            ));
        }
        if l.max_failures == 0 || l.user_max_failures == 0 {
            return Err("[limits] max_failures and user_max_failures must be at least 1".into());
        }
        if l.base_delay == 0 || l.base_delay > l.max_delay {
            return Err(format!(
                "[limits] base_delay ({} s) must be more than 0 and at most max_delay ({} s)",
                l.base_delay, l.max_delay
            ));
        }
        if self.socket.as_os_str().is_empty() || !self.socket.is_absolute() {
            return Err(format!(
                "socket = \"{}\": must be an absolute path",
                self.socket.display()
            ));
        }
        self.check_features(BuiltFeatures::THIS_BINARY)?;
        self.validate_web()?;
        self.metrics.address()?;
        self.validate_approve()?;
        self.validate_store()?;
        let sms = &self.sms;
        if let Some(command) = &sms.command {
            if !command.is_absolute() {
                return Err(format!(
                    "[sms] command = \"{}\": must be an absolute path",
                    command.display()
                ));
            }
        }
        if sms.timeout == 0 || sms.timeout > 120 {
            return Err(format!(
                "[sms] timeout = {} s: must be 1 to 120 seconds",
                sms.timeout
            ));
        }
        if sms.max_per_hour == 0 {
            return Err("[sms] max_per_hour must be at least 1".into());
        }
        if !(60..=3600).contains(&sms.code_lifetime) {
            return Err(format!(
                "[sms] code_lifetime = {} s: must be 1 to 60 minutes",
                sms.code_lifetime
            ));
        }
        if !sms.message.contains("{code}") {
            return Err("[sms] message must contain {code}".into());
        }
        if let Some(user) = &sms.user {
            if user.is_empty() || user.contains(['/', ':', '\0']) || user.trim() != user {
                return Err(format!("[sms] user = {user:?}: not a user name"));
            }
        }
        if !(1..=100).contains(&self.recovery.count) {
            return Err(format!(
                "[recovery] count = {}: must be 1 to 100",
                self.recovery.count
            ));
        }
        if self.state_dir.as_os_str().is_empty() || !self.state_dir.is_absolute() {
            return Err(format!(
                "state_dir = \"{}\": must be an absolute path",
                self.state_dir.display()
            ));
        }
        if !self.key_file.is_absolute() {
            return Err(format!(
                "key_file = \"{}\": must be an absolute path",
                self.key_file.display()
            ));
        }
        Ok(())
    }

    fn validate_store(&self) -> Result<(), String> {
        let store = &self.store;
        if !(100..=30_000).contains(&store.timeout_ms) {
            return Err(format!(
                "[store] timeout = {} ms: must be 100 ms to 30 s",
                store.timeout_ms
            ));
        }
        if !(1..=1000).contains(&store.pool_size) {
            return Err(format!(
                "[store] pool_size = {}: must be 1 to 1000",
                store.pool_size
            ));
        }
        if let Some(dir) = store
            .anchor_dir
            .as_ref()
            .filter(|d| !d.as_os_str().is_empty())
        {
            if !dir.is_absolute() {
                return Err(format!(
                    "[store] anchor_dir = \"{}\": must be an absolute path (or \"\" for none)",
                    dir.display()
                ));
            }
            if dir.starts_with(&self.state_dir) {
                return Err(format!(
                    "[store] anchor_dir = \"{}\": must be outside state_dir ({}): an older \
                     copy of the state directory must not bring its anchor along",
                    dir.display(),
                    self.state_dir.display()
                ));
            }
        }
        for (key, path) in [("url_file", &store.url_file), ("ca_file", &store.ca_file)] {
            if let Some(path) = path {
                if !path.is_absolute() {
                    return Err(format!(
                        "[store] {key} = \"{}\": must be an absolute path",
                        path.display()
                    ));
                }
            }
        }
        match (store.kind, &store.url, &store.url_file) {
            (StoreKind::Postgres, Some(_), Some(_)) => {
                Err("[store] url and url_file: set only one of them".into())
            }
            (StoreKind::Postgres, None, None) => Err(
                "[store] kind = \"postgres\" needs url or url_file (the connection string)".into(),
            ),
            (StoreKind::Postgres, Some(url), None) if url.0.trim().is_empty() => {
                Err("[store] url is empty".into())
            }
            (StoreKind::Sled, None, None) if store.ca_file.is_none() => Ok(()),
            (StoreKind::Sled, ..) => Err(
                "[store] url, url_file and ca_file are for kind = \"postgres\"; \
                 the store is sled (the default kind)"
                    .into(),
            ),
            (StoreKind::Postgres, ..) => Ok(()),
        }
    }

    /// Refuses a setting that needs a part of otpd that `built` lacks
    /// (a cargo feature left out of this build), naming the key.
    pub fn check_features(&self, built: BuiltFeatures) -> Result<(), String> {
        if let (Some(listen), false) = (self.web.listen, built.web) {
            let asked = format!("[web] listen = \"{listen}\"");
            return Err(format!(
                "{}, or remove [web] listen",
                built_without(&asked, Feature::Web)
            ));
        }
        if self.approve.enabled() && !built.web {
            return Err(format!(
                "{}, or remove [approve] contact",
                built_without("[approve] contact", Feature::Web)
            ));
        }
        if let (Some(listen), false) = (&self.metrics.listen, built.web) {
            let asked = format!("[metrics] listen = {listen:?}");
            return Err(format!(
                "{}, or remove [metrics] listen",
                built_without(&asked, Feature::Web)
            ));
        }
        if self.store.kind == StoreKind::Postgres && !built.postgres {
            return Err(format!(
                "{}, or use the sled store (remove [store] kind)",
                built_without("[store] kind = \"postgres\"", Feature::Postgres)
            ));
        }
        Ok(())
    }

    fn validate_approve(&self) -> Result<(), String> {
        let a = &self.approve;
        let Some(contact) = &a.contact else {
            return Ok(());
        };
        let ok = contact
            .strip_prefix("mailto:")
            .map(|m| m.contains('@') && !m.contains(char::is_whitespace))
            .or_else(|| {
                contact
                    .strip_prefix("https://")
                    .map(|h| !h.is_empty() && !h.contains(char::is_whitespace))
            })
            .unwrap_or(false);
        if !ok {
            return Err(format!(
                "[approve] contact = \"{contact}\": must be a mailto: address or an https:// URL"
            ));
        }
        if !(10..=300).contains(&a.timeout) {
            return Err(format!(
                "[approve] timeout = {} s: must be 10 seconds to 5 minutes",
                a.timeout
            ));
        }
        if a.max_per_hour == 0 || a.max_per_hour > 100 {
            return Err(format!(
                "[approve] max_per_hour = {}: must be 1 to 100",
                a.max_per_hour
            ));
        }
        if let Some(hosts) = &a.push_hosts {
            if let Some(bad) = hosts
                .iter()
                .find(|h| h.is_empty() || h.contains(['/', ' ', '@']))
            {
                return Err(format!(
                    "[approve] push_hosts: {bad:?} is not a host name (like \"fcm.googleapis.com\" or \"*.push.apple.com\")"
                ));
            }
        }
        if self.web.public_url.is_none() {
            return Err(
                "[approve] contact is set but [web] public_url is not: the phone's app and its passkey live at that address"
                    .into(),
            );
        }
        Ok(())
    }

    fn validate_web(&self) -> Result<(), String> {
        let web = &self.web;
        if let Some(secs) = web.link_expires {
            if !(5..=30 * 24 * 3600).contains(&secs) {
                return Err(format!(
                    "[web] link_expires = {secs} s: must be 5 seconds to 30 days"
                ));
            }
        }
        if let Some(url) = &web.public_url {
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"))
                .ok_or_else(|| {
                    format!("[web] public_url = \"{url}\": must start with https:// or http://")
                })?;
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                return Err(format!("[web] public_url = \"{url}\": no host"));
            }
        }
        let Some(listen) = web.listen else {
            return Ok(());
        };
        if web.public_url.is_none() {
            return Err(
                "[web] listen is set but public_url is not: links need the address users open"
                    .into(),
            );
        }
        match (&web.tls_cert, &web.tls_key) {
            (Some(_), Some(_)) => Ok(()),
            (None, None) if listen.ip().is_loopback() => Ok(()),
            (None, None) => Err(format!(
                "[web] listen = \"{listen}\" is not a loopback address: serve TLS \
                 (tls_cert and tls_key) or listen on 127.0.0.1 behind a reverse proxy"
            )),
            _ => Err("[web] tls_cert and tls_key go together".into()),
        }
    }

    /// Settings that are allowed but probably a mistake, one sentence
    /// each: `otpd check-config` prints them, `otpd serve` logs them.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(url) = &self.web.public_url {
            if let Some(host) = plain_http_host(url).filter(|host| !is_loopback_host(host)) {
                warnings.push(format!(
                    "[web] public_url = \"{url}\" is plain http:// to {host}, another host \
                     than this one: every link, and the secret its page shows, crosses the \
                     network unencrypted; use https://"
                ));
            }
        }
        warnings
    }

    /// `[store] anchor_dir` in effect: as configured, or `STATE_DIR-anchor`
    /// beside `state_dir` (`/var/lib/otpd-anchor`, a state directory of its
    /// own in the shipped unit); `None` when set to `""`.
    pub fn anchor_dir(&self) -> Option<PathBuf> {
        match &self.store.anchor_dir {
            Some(dir) if dir.as_os_str().is_empty() => None,
            Some(dir) => Some(dir.clone()),
            None => {
                let name = self.state_dir.file_name()?;
                let mut anchor = name.to_os_string();
                anchor.push("-anchor");
                Some(self.state_dir.parent()?.join(anchor))
            }
        }
    }

    /// The rules the decision applies.
    pub fn rules(&self) -> Rules {
        Rules {
            window: self.totp.window,
            hotp_window: self.hotp.window,
            limits: Limits {
                max_failures: self.limits.max_failures,
                base_delay: self.limits.base_delay,
                max_delay: self.limits.max_delay,
                user_max_failures: self.limits.user_max_failures,
                trusted_source_secs: self.limits.trusted_source_days * 24 * 3600,
            },
        }
    }

    /// The issuer of new enrolments: configured, or the host name.
    pub fn issuer(&self) -> String {
        self.totp.issuer.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .map(|h| h.replace(':', "-"))
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "otpd".into())
        })
    }
}

/// Turns a toml error into `config PATH line N: …`, with a suggestion for a
/// misspelt key.
fn describe(e: &toml::de::Error, text: &str, origin: &Path) -> String {
    // Counted in bytes: toml's span may start inside a multibyte character
    // (found by fuzzing: slicing the str there panicked).
    let line = e.span().map(|s| {
        text.as_bytes()[..s.start.min(text.len())]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    });
    let where_ = match line {
        Some(l) => format!("config {} line {l}", origin.display()),
        None => format!("config {}", origin.display()),
    };
    let message = e.message();
    // serde phrases it "unknown field `windw`, expected one of `a`, `b`".
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let mut names = rest.split('`').step_by(2);
        let key = names.next().unwrap_or_default();
        let best = names
            .map(|n| (strsim::levenshtein(key, n), n))
            .filter(|(d, _)| *d <= 2)
            .min();
        return match best {
            Some((_, n)) => format!("{where_}: unknown key \"{key}\" (did you mean \"{n}\"?)"),
            None => format!("{where_}: unknown key \"{key}\""),
        };
    }
    let message = message.trim();
    if message.is_empty() {
        // toml gives no words for some bytes (a lone carriage return, a
        // control character in a comment; found by fuzzing).
        return format!(
            "{where_}: a character that TOML does not allow here (a control character, \
             or a carriage return without a newline)"
        );
    }
    format!("{where_}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/etc/otpd/otpd.toml")).map_err(|e| e.0)
    }

    #[test]
    fn an_error_inside_a_multibyte_character_is_described_not_a_panic() {
        // From fuzz/artifacts (config_parser): control and replacement
        // characters in a comment, then a bad table header.
        let text = String::from_utf8_lossy(
            b"#######################\x19#########\xff\xff\xff\xff\xff\xff\xff\xff\
              #################[t",
        );
        let e = parse(&text).unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        // From fuzz/regressions/config_parser: toml gives no words for these.
        for text in ["\r", "#\0"] {
            let e = parse(text).unwrap_err();
            assert!(
                e.contains("line 1: a character that TOML does not allow"),
                "{e}"
            );
        }
    }

    #[test]
    fn remember_names_services_with_durations_up_to_seven_days() {
        let c = parse("[remember]\nsshd = \"8h\"\nsudo = 900\nsame_source = false\n").unwrap();
        assert_eq!(c.remember.secs("sshd"), 8 * 3600);
        assert_eq!(c.remember.secs("sudo"), 900);
        assert_eq!(c.remember.secs("login"), 0);
        assert!(!c.remember.same_source);
        assert!(parse("").unwrap().remember.same_source);
        for (text, named) in [
            ("[remember]\nsshd = \"8d\"\n", "7 days"),
            ("[remember]\nsshd = 0\n", "more than 0"),
            ("[remember]\nsshd = \"soon\"\n", "not a duration"),
            ("[remember]\n\"ss hd\" = \"1h\"\n", "PAM service"),
            ("[remember]\nsame_source = \"yes\"\n", "same_source"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(named), "{text}: {e}");
        }
    }

    #[test]
    fn approvals_need_a_contact_a_public_url_and_sane_limits() {
        let web = "[web]\npublic_url = \"https://otp.example.org\"\n";
        let ok = parse(&format!(
            "{web}[approve]\ncontact = \"mailto:a@example.org\"\n"
        ))
        .unwrap();
        assert!(ok.approve.enabled());
        assert_eq!((ok.approve.timeout, ok.approve.max_per_hour), (60, 10));
        assert!(!parse("").unwrap().approve.enabled());
        for (text, named) in [
            (
                "[approve]\ncontact = \"mailto:a@example.org\"\n".to_owned(),
                "public_url",
            ),
            (format!("{web}[approve]\ncontact = \"admin\"\n"), "contact"),
            (
                format!("{web}[approve]\ncontact = \"http://example.org\"\n"),
                "contact",
            ),
            (
                format!("{web}[approve]\ncontact = \"mailto:a@b\"\ntimeout = \"5s\"\n"),
                "timeout",
            ),
            (
                format!("{web}[approve]\ncontact = \"mailto:a@b\"\nmax_per_hour = 0\n"),
                "max_per_hour",
            ),
            (
                format!("{web}[approve]\ncontact = \"mailto:a@b\"\npush_hosts = [\"https://x\"]\n"),
                "push_hosts",
            ),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(named), "{text}: {e}");
        }
    }

    #[test]
    fn a_plain_http_public_url_off_this_host_is_a_warning() {
        for (url, host) in [
            ("http://otp.example.com", Some("otp.example.com")),
            ("http://u:p@192.0.2.1:8080/x", Some("192.0.2.1")),
            ("http://[2001:db8::1]:80/", Some("2001:db8::1")),
            ("http://127.0.0.1:8080", None),
            ("http://localhost", None),
            ("http://pages.localhost.:81", None),
            ("http://[::1]", None),
            ("https://otp.example.com", None),
        ] {
            let c = parse(&format!("[web]\npublic_url = \"{url}\"\n")).unwrap();
            let warnings = c.warnings();
            match host {
                Some(host) => {
                    assert_eq!(warnings.len(), 1, "{url}: {warnings:?}");
                    assert!(warnings[0].contains(url), "{warnings:?}");
                    assert!(warnings[0].contains(&format!("to {host},")), "{warnings:?}");
                }
                None => assert!(warnings.is_empty(), "{url}: {warnings:?}"),
            }
        }
        assert!(parse("").unwrap().warnings().is_empty());
    }

    #[test]
    fn a_setting_for_a_part_left_out_of_the_build_names_the_key_and_the_feature() {
        let none = BuiltFeatures {
            web: false,
            postgres: false,
        };
        let all = BuiltFeatures {
            web: true,
            postgres: true,
        };
        let mut web = Config::default();
        web.web.listen = Some("127.0.0.1:8080".parse().unwrap());
        web.web.public_url = Some("http://127.0.0.1:8080".into());
        assert_eq!(
            web.check_features(none).unwrap_err(),
            "[web] listen = \"127.0.0.1:8080\": this otpd was built without the cargo \
             feature \"web\" (the self-enrolment pages); use an otpd built with it (the \
             packages and a default `cargo build` have it), or remove [web] listen"
        );
        assert_eq!(web.check_features(all), Ok(()));
        let mut pg = Config::default();
        pg.store.kind = StoreKind::Postgres;
        assert_eq!(
            pg.check_features(none).unwrap_err(),
            "[store] kind = \"postgres\": this otpd was built without the cargo feature \
             \"postgres\" (the PostgreSQL store); use an otpd built with it (the packages \
             and a default `cargo build` have it), or use the sled store (remove [store] kind)"
        );
        assert_eq!(pg.check_features(all), Ok(()));
        // Each feature only for its own setting.
        let web_only = BuiltFeatures {
            web: true,
            postgres: false,
        };
        assert_eq!(web.check_features(web_only), Ok(()));
        assert!(pg.check_features(web_only).is_err());
        // Links for pages another host serves need no feature here.
        let mut links = Config::default();
        links.web.public_url = Some("https://otp.example.com".into());
        assert_eq!(links.check_features(none), Ok(()));
        assert_eq!(Config::default().check_features(none), Ok(()));
    }

    #[test]
    fn metrics_listen_only_on_loopback_or_a_unix_socket() {
        assert_eq!(parse("").unwrap().metrics.address(), Ok(None));
        for (listen, expected) in [
            (
                "127.0.0.1:9469",
                MetricsListen::Tcp("127.0.0.1:9469".parse().unwrap()),
            ),
            (
                "[::1]:9469",
                MetricsListen::Tcp("[::1]:9469".parse().unwrap()),
            ),
            (
                "/run/otpd/metrics.sock",
                MetricsListen::Unix("/run/otpd/metrics.sock".into()),
            ),
        ] {
            let config = parse(&format!("[metrics]\nlisten = \"{listen}\"\n")).unwrap();
            assert_eq!(config.metrics.address(), Ok(Some(expected)), "{listen}");
        }
        for (listen, why) in [
            ("0.0.0.0:9469", "is not a loopback address"),
            ("192.0.2.1:9469", "is not a loopback address"),
            ("[::]:9469", "is not a loopback address"),
            ("localhost:9469", "neither an address with a port"),
            ("127.0.0.1", "neither an address with a port"),
            ("metrics.sock", "neither an address with a port"),
            ("/", "not a socket path"),
        ] {
            let e = parse(&format!("[metrics]\nlisten = \"{listen}\"\n")).unwrap_err();
            assert!(
                e.contains("[metrics] listen") && e.contains(why),
                "{listen}: {e}"
            );
        }
        let e = parse("[metrics]\nlisen = \"127.0.0.1:9469\"\n").unwrap_err();
        assert!(e.contains("lisen"), "{e}");
        let mut metrics = Config::default();
        metrics.metrics.listen = Some("127.0.0.1:9469".into());
        let without_web = BuiltFeatures {
            web: false,
            postgres: true,
        };
        let e = metrics.check_features(without_web).unwrap_err();
        assert!(
            e.starts_with("[metrics] listen = \"127.0.0.1:9469\": this otpd was built without")
                && e.ends_with("or remove [metrics] listen"),
            "{e}"
        );
    }

    /// The refusal through the real load, in a build without the parts:
    /// `cargo test -p otpd --lib --no-default-features`.
    #[test]
    #[cfg(not(feature = "web"))]
    fn a_build_without_web_refuses_web_listen_when_the_config_is_loaded() {
        let e =
            parse("[web]\nlisten = \"127.0.0.1:8080\"\npublic_url = \"http://127.0.0.1:8080\"\n")
                .unwrap_err();
        assert!(
            e.starts_with(
                "config /etc/otpd/otpd.toml: [web] listen = \"127.0.0.1:8080\": this otpd \
                 was built without the cargo feature \"web\""
            ),
            "{e}"
        );
    }

    /// As above, for the PostgreSQL store.
    #[test]
    #[cfg(not(feature = "postgres"))]
    fn a_build_without_postgres_refuses_the_postgres_store_when_the_config_is_loaded() {
        let e =
            parse("[store]\nkind = \"postgres\"\nurl_file = \"/etc/otpd/db-url\"\n").unwrap_err();
        assert!(
            e.starts_with(
                "config /etc/otpd/otpd.toml: [store] kind = \"postgres\": this otpd was \
                 built without the cargo feature \"postgres\""
            ),
            "{e}"
        );
    }

    #[test]
    #[cfg(feature = "postgres")] // parses [store] kind = "postgres"
    fn the_store_section_is_checked_and_names_the_problem() {
        let c = parse("").unwrap();
        assert_eq!(c.store.kind, StoreKind::Sled);
        assert_eq!(c.store.timeout_ms, 1000);
        assert_eq!(c.anchor_dir(), Some(PathBuf::from("/var/lib/otpd-anchor")));
        let c = parse("state_dir = \"/srv/otpd/\"\n[store]\n").unwrap();
        assert_eq!(c.anchor_dir(), Some(PathBuf::from("/srv/otpd-anchor")));
        let c = parse("[store]\nanchor_dir = \"\"\n").unwrap();
        assert_eq!(c.anchor_dir(), None);
        assert_eq!(c.store.synchronous_commit, SynchronousCommit::On);
        let c = parse("[store]\nsynchronous_commit = \"remote_apply\"\n").unwrap();
        assert_eq!(c.store.synchronous_commit.as_sql(), "remote_apply");
        let c = parse("[store]\nanchor_dir = \"/etc/otpd/anchor\"\n").unwrap();
        assert_eq!(c.anchor_dir(), Some(PathBuf::from("/etc/otpd/anchor")));
        let c = parse(
            "[store]\nkind = \"postgres\"\nurl_file = \"/etc/otpd/db-url\"\n\
             timeout = \"500ms\"\npool_size = 4\n",
        )
        .unwrap();
        assert_eq!(c.store.kind, StoreKind::Postgres);
        assert_eq!(c.store.timeout_ms, 500);
        assert_eq!(c.store.pool_size, 4);
        for (text, words) in [
            ("[store]\nkind = \"postgres\"\n", "needs url or url_file"),
            (
                "[store]\nkind = \"postgres\"\nurl = \"postgresql://h/d\"\nurl_file = \"/f\"\n",
                "set only one of them",
            ),
            (
                "[store]\nkind = \"postgres\"\nurl = \" \"\n",
                "url is empty",
            ),
            (
                "[store]\nurl = \"postgresql://h/d\"\n",
                "are for kind = \"postgres\"",
            ),
            ("[store]\nkind = \"mysql\"\n", "line 2"),
            (
                "[store]\nkind = \"postgres\"\nurl_file = \"db-url\"\n",
                "must be an absolute path",
            ),
            (
                "[store]\nkind = \"postgres\"\nurl_file = \"/f\"\ntimeout = \"40s\"\n",
                "100 ms to 30 s",
            ),
            (
                "[store]\nkind = \"postgres\"\nurl_file = \"/f\"\ntimeout = \"soon\"\n",
                "not a duration",
            ),
            (
                "[store]\nkind = \"postgres\"\nurl_file = \"/f\"\npool_size = 0\n",
                "pool_size = 0",
            ),
            (
                "[store]\nanchor_dir = \"anchor\"\n",
                "must be an absolute path",
            ),
            (
                "[store]\nsynchronous_commit = \"off\"\n",
                "line 2: [store] synchronous_commit = \"off\": must be \"on\"",
            ),
            (
                "[store]\nsynchronous_commit = \"local\"\n",
                "synchronous_commit = \"local\"",
            ),
            (
                "[store]\nanchor_dir = \"/var/lib/otpd/anchor\"\n",
                "must be outside state_dir",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(words), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_hotp_windows_have_defaults_and_limits() {
        let c = parse("").unwrap();
        assert_eq!((c.hotp.window, c.hotp.resync_window), (10, 100));
        assert_eq!(c.rules().hotp_window, 10);
        let c = parse("[hotp]\nwindow = 3\nresync_window = 50\n").unwrap();
        assert_eq!((c.rules().hotp_window, c.hotp.resync_window), (3, 50));
        for (text, why) in [
            ("[hotp]\nwindow = 101\n", "window = 101"),
            ("[hotp]\nresync_window = 0\n", "resync_window = 0"),
            (
                "[hotp]\nwindow = 20\nresync_window = 10\n",
                "smaller than window",
            ),
            ("[hotp]\nlookahead = 3\n", "unknown key"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    #[cfg(feature = "postgres")] // parses [store] kind = "postgres"
    fn a_connection_string_never_shows_in_debug_output() {
        let c =
            parse("[store]\nkind = \"postgres\"\nurl = \"postgresql://otpd:hunter2@db/otpd\"\n")
                .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("ConnectionString(…)"), "{shown}");
    }

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.path.as_deref(), Some(Path::new("/etc/otpd/otpd.toml")));
        assert_eq!(
            c,
            Config {
                path: c.path.clone(),
                ..Config::default()
            }
        );
        assert_eq!(c.socket, Path::new("/run/otpd/otpd.sock"));
        assert_eq!(c.state_dir, Path::new("/var/lib/otpd"));
        assert_eq!(c.totp.algorithm, Algorithm::Sha1);
        assert_eq!((c.totp.digits, c.totp.period, c.totp.window), (6, 30, 1));
        assert_eq!(c.rules().limits, Limits::default());
        assert!(!c.issuer().is_empty());
    }

    #[test]
    fn every_key_can_be_set() {
        let c = parse(
            r#"
socket = "/tmp/x.sock"
state_dir = "/tmp/state"
[totp]
algorithm = "SHA256"
digits = 8
period = 60
window = 2
issuer = "Acme"
[limits]
max_failures = 3
base_delay = "1m"
max_delay = 3600
user_max_failures = 10
trusted_source_days = 7
"#,
        )
        .unwrap();
        assert_eq!(c.totp.algorithm, Algorithm::Sha256);
        assert_eq!(c.issuer(), "Acme");
        assert_eq!(c.limits.base_delay, 60);
        assert_eq!(c.limits.max_delay, 3600);
        assert_eq!(c.rules().limits.trusted_source_secs, 7 * 24 * 3600);
        assert_eq!(
            Config::default().rules().limits.trusted_source_secs,
            30 * 24 * 3600
        );
        assert!(parse("[limits]\ntrusted_source_days = 400\n")
            .unwrap_err()
            .contains("trusted_source_days = 400: must be at most 365"));
    }

    #[test]
    fn unknown_keys_name_the_key_the_line_and_a_suggestion() {
        let err = parse("[totp]\ndigits = 6\n\nwindw = 2\n").unwrap_err();
        assert_eq!(
            err,
            "config /etc/otpd/otpd.toml line 4: unknown key \"windw\" (did you mean \"window\"?)"
        );
        let err = parse("colour = 1\n").unwrap_err();
        assert_eq!(
            err,
            "config /etc/otpd/otpd.toml line 1: unknown key \"colour\""
        );
    }

    #[test]
    fn bad_values_are_explained() {
        assert!(parse("[totp]\ndigits = 7")
            .unwrap_err()
            .contains("must be 6 or 8"));
        assert!(parse("[totp]\nalgorithm = \"MD5\"")
            .unwrap_err()
            .contains("line 2"));
        assert!(parse("[limits]\nbase_delay = \"soon\"")
            .unwrap_err()
            .contains("not a duration"));
        assert!(parse("socket = \"relative.sock\"")
            .unwrap_err()
            .contains("absolute"));
        assert!(parse("[limits]\nbase_delay = 600\nmax_delay = 60")
            .unwrap_err()
            .contains("at most max_delay"));
        assert!(parse("[totp]\nissuer = \"a:b\"")
            .unwrap_err()
            .contains("issuer"));
    }
}
