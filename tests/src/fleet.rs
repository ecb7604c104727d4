//! [`Fleet`]: several otpd hosts that share one PostgreSQL store.
//!
//! A fleet is one throw-away [`PgCluster`] and two or more [`TestEnv`]
//! hosts, each with its own socket, state dir and log, all with a copy of
//! one key file made by `otpd keygen` (the records are sealed with it, so
//! every host of a fleet needs the same one) and a `[store]` section with
//! `kind = "postgres"` and a `url_file` (mode 0600) naming the cluster.

use crate::env::{Limits, TestEnv};
use crate::postgres::PgCluster;
use crate::secrets;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Barrier;

/// How long one store operation may take in the hosts' config
/// (`[store] timeout`): below the PAM module's 3 s, and above the default
/// 1 s because the tests' clusters run with fsync on, several at once, on
/// a 2-core CI machine, where one commit's WAL flush was seen to take
/// longer than 1 s.
pub const STORE_TIMEOUT: &str = "2s";

/// The label of host `index`: A, B, C …
pub fn label(index: usize) -> char {
    char::from(b'A' + u8::try_from(index).expect("fewer than 26 hosts"))
}

/// One PostgreSQL cluster and the hosts that share it. The hosts are
/// dropped (their daemons stopped) before the cluster.
pub struct Fleet {
    /// The hosts A, B, C …, in order.
    pub hosts: Vec<TestEnv>,
    /// The database server they share.
    pub cluster: PgCluster,
    /// The fleet's key file, made by `otpd keygen` in host A's dir; every
    /// host has a copy as its `key_file`.
    pub key_file: PathBuf,
    /// The key ID `otpd keygen` printed for it.
    pub key_id: String,
    /// The test's name, for messages and host names.
    pub name: String,
}

impl Fleet {
    /// A cluster and `hosts` configured hosts whose daemons are not
    /// started yet; `None` (a skip line printed) without PostgreSQL
    /// outside CI.
    pub fn prepare(name: &str, hosts: usize, limits: &Limits) -> Option<Fleet> {
        assert!(hosts >= 1, "a fleet has at least one host");
        let cluster = PgCluster::start(name)?;
        let mut fleet = Fleet {
            hosts: Vec::new(),
            cluster,
            key_file: PathBuf::new(),
            key_id: String::new(),
            name: name.to_owned(),
        };
        for index in 0..hosts {
            let host = fleet.new_host(&label(index).to_string(), limits);
            if index == 0 {
                fleet.key_file = host.dir.join("fleet.key");
                fleet.key_id = host.keygen(&fleet.key_file);
            }
            fleet.install_key(&host);
            fleet.use_database(&host, &fleet.cluster.url());
            fleet.hosts.push(host);
        }
        println!(
            "[{name}] fleet of {hosts} hosts on 127.0.0.1:{}, key ID {}",
            fleet.cluster.port, fleet.key_id
        );
        Some(fleet)
    }

    /// [`Fleet::prepare`], then every host's daemon started, one after
    /// the other.
    pub fn start(name: &str, hosts: usize, limits: &Limits) -> Option<Fleet> {
        let mut fleet = Fleet::prepare(name, hosts, limits)?;
        for host in &mut fleet.hosts {
            host.spawn_daemon();
        }
        Some(fleet)
    }

    /// Starts every host's daemon at the same moment (one thread each,
    /// released together) and waits until all accept connections.
    pub fn start_all_at_once(&mut self) {
        let barrier = Barrier::new(self.hosts.len());
        std::thread::scope(|scope| {
            for host in &mut self.hosts {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    host.spawn_daemon();
                });
            }
        });
    }

    /// A new host `NAME_LABEL` that is not part of [`Fleet::hosts`]: no
    /// key file, no `[store]` section, no daemon yet.
    pub fn new_host(&self, label: &str, limits: &Limits) -> TestEnv {
        TestEnv::without_daemon(&format!("{}_{label}", self.name), limits)
    }

    /// Copies the fleet's key file to `host`'s `key_file` (mode 0400).
    pub fn install_key(&self, host: &TestEnv) {
        std::fs::copy(&self.key_file, &host.key_file).expect("copy the fleet's key file");
        std::fs::set_permissions(&host.key_file, std::fs::Permissions::from_mode(0o400))
            .expect("chmod the key file");
    }

    /// Writes `url` to `host`'s `db-url` (mode 0600) and appends a
    /// `[store]` section (postgres, that `url_file`, [`STORE_TIMEOUT`],
    /// 16 connections) to its config.
    pub fn use_database(&self, host: &TestEnv, url: &str) {
        let url_file = host.dir.join("db-url");
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&url_file)
            .expect("create the url file");
        writeln!(file, "{url}").expect("write the url file");
        host.append_config(&format!(
            "[store]\nkind = \"postgres\"\nurl_file = \"{}\"\ntimeout = \"{STORE_TIMEOUT}\"\n\
                 pool_size = 16\n",
            url_file.display()
        ));
    }

    /// Fails the test if a remembered secret ([`crate::secrets`]) is in
    /// clear in the database or in a host's log or state dir.
    pub fn assert_no_secrets_leaked(&self) {
        let mut leaked = self.leaked_into_database();
        for host in &self.hosts {
            leaked.extend(host.leaked_secrets());
        }
        assert!(
            leaked.is_empty(),
            "[{}] secrets leaked (design.md §3):\n  {}",
            self.name,
            leaked.join("\n  ")
        );
    }

    /// The remembered secrets found in clear in the database: in every
    /// `bytea` column (the sealed records, the decoy rows) as bytes — the
    /// base32 text, the raw secret, a JSON byte array, codes and recovery
    /// codes as typed — and in the text of every table (names, sources,
    /// metadata).
    pub fn leaked_into_database(&self) -> Vec<String> {
        let all = secrets::all();
        let psql = |sql: &str| self.cluster.psql(sql);
        let columns = psql(
            "SELECT table_name || '.' || column_name FROM information_schema.columns \
             WHERE table_schema = 'public' AND data_type = 'bytea' ORDER BY 1;",
        );
        let mut binary = Vec::new();
        let mut values = Vec::new();
        for column in columns.lines().filter(|c| !c.is_empty()) {
            let (table, name) = column.split_once('.').expect("table.column");
            let rows = hex_rows(&psql(&format!(
                "SELECT encode(\"{name}\", 'hex') FROM \"{table}\";"
            )));
            values.push(format!(
                "{column}: {} non-empty values, {} bytes",
                rows.len(),
                rows.iter().map(Vec::len).sum::<usize>()
            ));
            for row in rows {
                binary.extend(row);
                // A separator, so that no match spans two values.
                binary.extend_from_slice(b"\n--\n");
            }
        }
        // otpd_schema holds only migration numbers and times (whose
        // microseconds could match a 6-digit code by chance).
        let tables = psql(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' \
             AND tablename <> 'otpd_schema' ORDER BY tablename;",
        );
        let mut text = String::new();
        for table in tables.lines().filter(|t| !t.is_empty()) {
            text.push_str(&psql(&format!("SELECT t::text FROM \"{table}\" t;")));
        }
        let users = psql("SELECT count(*) FROM otpd_users;");
        assert_ne!(
            users.trim(),
            "0",
            "[{}] otpd_users is empty: the secrets check would prove nothing",
            self.name
        );

        let dump = self.cluster.dir.join("secrets-dump");
        std::fs::create_dir_all(&dump).expect("create the dump dir");
        std::fs::write(dump.join("bytea.bin"), &binary).expect("write the dump");
        std::fs::write(dump.join("tables.txt"), &text).expect("write the dump");
        let mut found: Vec<String> = secrets::in_clear_under(&dump, &all)
            .into_iter()
            .map(|s| format!("{s} (a dump of the database)"))
            .collect();
        let _ = std::fs::remove_dir_all(&dump);
        found.extend(
            secrets::leaked_into(&text, &all)
                .into_iter()
                .map(|s| format!("{s} in the text of the database's tables")),
        );
        for secret in &all {
            let typed = [secret.clone(), secret.replace('-', "")];
            if typed.iter().any(|form| contains(&binary, form.as_bytes())) {
                found.push(format!("{secret} in a bytea value of the database"));
            }
        }
        println!(
            "[{}] database secrets check: {} remembered secrets against {} users' rows, \
             bytea columns [{}] and the text of {} tables",
            self.name,
            all.len(),
            users.trim(),
            values.join("; "),
            tables.lines().count()
        );
        found.sort();
        found.dedup();
        found
    }
}

/// Decodes psql's lines of hexadecimal, one row per line.
fn hex_rows(text: &str) -> Vec<Vec<u8>> {
    text.lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            (0..line.len())
                .step_by(2)
                .map(|i| {
                    line.get(i..i + 2)
                        .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                        .unwrap_or_else(|| panic!("not hexadecimal: {line:?}"))
                })
                .collect()
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
