//! `--postgres-url`: otpd's PostgreSQL store for the benchmark's daemon,
//! and the wipe of otpd's tables before each world.

use std::process::Command;

/// Debian's `psql` (pg_wrapper picks the newest client installed).
const PSQL: &str = "/usr/bin/psql";

/// Every table otpd creates in its database. A world's daemon must start on
/// none of them: a database sealed with another world's key is refused (the
/// key's ID is in `otpd_meta`), and the previous world's users would
/// collide with the new ones.
const OTPD_TABLES: [&str; 5] = [
    "otpd_users",
    "otpd_sources",
    "otpd_meta",
    "otpd_decoy",
    "otpd_schema",
];

/// The PostgreSQL database that every world's otpd keeps its state in.
#[derive(Debug)]
pub struct Postgres {
    /// The connection string, a `postgresql://` URL with the password.
    pub url: String,
    /// `host:port/db`, without the user and the password, for the report.
    pub target: String,
}

impl Postgres {
    /// Takes a `postgresql://` (or `postgres://`) URL; refuses anything
    /// else, such as libpq's `key=value` form.
    pub fn new(url: &str) -> Result<Postgres, String> {
        Ok(Postgres {
            target: describe(url)?,
            url: url.to_owned(),
        })
    }

    /// Drops otpd's tables, if they exist, through psql.
    pub fn wipe(&self) -> Result<(), String> {
        let sql = format!("DROP TABLE IF EXISTS {}", OTPD_TABLES.join(", "));
        let mut psql = Command::new(PSQL);
        // The URL says everything: no PGHOST, PGPASSWORD … of ours.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                psql.env_remove(key);
            }
        }
        let out = psql
            .env("PGCONNECT_TIMEOUT", "10")
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url,
                "-c",
                &sql,
            ])
            .output()
            .map_err(|e| format!("{PSQL} (apt-get install postgresql-client): {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "wiping otpd's tables in {} failed: {}",
                self.target,
                String::from_utf8_lossy(&out.stderr).trim_end()
            ))
        }
    }
}

/// `host:port/db` of a `postgresql://[user[:password]@][host][:port][/db][?…]`
/// URL, with libpq's defaults for what it leaves out (localhost, 5432, the
/// user's name as the database).
fn describe(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))
        .ok_or("--postgres-url: give a postgresql://USER:PASSWORD@HOST:PORT/DB URL")?;
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    let (user, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (userinfo.split(':').next().unwrap_or(""), host_port),
        None => ("", authority),
    };
    let host = match host_port {
        "" => "localhost:5432".to_owned(),
        // In `[::1]` and `[::1]:5432` only a colon after the bracket is
        // the port's.
        hp if !hp.rsplit(']').next().unwrap_or(hp).contains(':') => format!("{hp}:5432"),
        hp => hp.to_owned(),
    };
    let db = match (db, user) {
        ("", "") => "?",
        ("", user) => user,
        (db, _) => db,
    };
    Ok(format!("{host}/{db}"))
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn the_description_has_no_user_and_no_password() {
        assert_eq!(
            describe("postgresql://otpd:s3cr3t@127.0.0.1:40123/otpd?sslmode=disable"),
            Ok("127.0.0.1:40123/otpd".to_owned())
        );
        assert_eq!(
            describe("postgres://otpd:p@ss@db.example.com/fleet"),
            Ok("db.example.com:5432/fleet".to_owned())
        );
    }

    #[test]
    fn libpq_defaults_fill_in_what_the_url_leaves_out() {
        assert_eq!(
            describe("postgresql://otpd@"),
            Ok("localhost:5432/otpd".to_owned())
        );
        assert_eq!(
            describe("postgresql://[::1]/otpd"),
            Ok("[::1]:5432/otpd".to_owned())
        );
        assert_eq!(
            describe("postgresql://[::1]:6543/otpd"),
            Ok("[::1]:6543/otpd".to_owned())
        );
    }

    #[test]
    fn only_urls_are_taken() {
        assert!(describe("host=127.0.0.1 dbname=otpd").is_err());
    }
}
