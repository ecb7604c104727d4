//! `otpd check-config`: the config as the daemon would load it, checked
//! further where that needs no daemon (the PostgreSQL connection string,
//! the text sender's user), and what it sets, one line per part.

use super::CliError;
use crate::config::{Config, StoreKind};

/// Prints the report of `config` (loaded, so already validated); nothing
/// is printed when a check fails.
pub fn check_config(config: &Config) -> Result<(), CliError> {
    for line in report(config)? {
        say!("{line}");
    }
    Ok(())
}

/// The lines of the report, first "config is valid: …"; an error when a
/// check fails.
pub fn report(config: &Config) -> Result<Vec<String>, CliError> {
    // Checked before "config is valid" is printed.
    let database = match config.store.kind {
        StoreKind::Postgres => {
            Some(crate::server::stores::check_postgres(config).map_err(|e| CliError::Usage(e.0))?)
        }
        StoreKind::Sled => None,
    };
    let sender = crate::server::sms::describe_sender(&config.sms).map_err(CliError::Usage)?;
    let mut lines = vec![format!(
        "config is valid: socket {}, state_dir {}, issuer {:?}, {} {} digits {} s window ±{}, \
         HOTP look-ahead {} resync window {}, limits {:?}",
        config.socket.display(),
        config.state_dir.display(),
        config.issuer(),
        config.totp.algorithm,
        config.totp.digits,
        config.totp.period,
        config.totp.window,
        config.hotp.window,
        config.hotp.resync_window,
        config.rules().limits
    )];
    lines.push(match (&config.web.listen, &config.web.public_url) {
        (Some(listen), Some(url)) => format!(
            "enrolment pages: {}://{listen}, links {url}/enroll/…",
            if config.web.tls_cert.is_some() {
                "https"
            } else {
                "http"
            }
        ),
        (None, Some(url)) => {
            format!("enrolment pages: not served here ([web] listen unset), links {url}/enroll/…")
        }
        _ => "enrolment pages: off".into(),
    });
    for warning in config.warnings() {
        lines.push(format!("warning: {warning}"));
    }
    lines.push(match &config.sms.command {
        Some(command) => format!(
            "text messages: {} {sender} (timeout {} s, {} per user per hour)",
            command.display(),
            config.sms.timeout,
            config.sms.max_per_hour
        ),
        None => "text messages: off".into(),
    });
    lines.push(match config.metrics.address() {
        Ok(Some(crate::config::MetricsListen::Tcp(address))) => {
            format!("metrics: http://{address}/metrics")
        }
        Ok(Some(crate::config::MetricsListen::Unix(path))) => {
            format!("metrics: /metrics on the socket {}", path.display())
        }
        Ok(None) => "metrics: off".into(),
        Err(e) => return Err(CliError::Usage(e)),
    });
    lines.push(format!(
        "audit trail: chained lines to {}",
        match config.audit.output {
            crate::config::AuditOutput::Auto =>
                "the journal when systemd runs otpd, else the log (auto)",
            crate::config::AuditOutput::Journal => "the journal",
            crate::config::AuditOutput::Log => "the log (standard error)",
        }
    ));
    lines.push(match config.anchor_dir() {
        Some(dir) => format!("rollback anchor: {}", dir.display()),
        None => "rollback anchor: none ([store] anchor_dir = \"\"): an older copy of the \
                 store put back is not noticed"
            .into(),
    });
    lines.push(match config.store.kind {
        StoreKind::Sled => format!(
            "store: sled in {}",
            config.state_dir.join("store").display()
        ),
        StoreKind::Postgres => format!(
            "store: PostgreSQL {}, connection string {}, {} (timeout {} ms, {} connections, \
             synchronous_commit {})",
            database.unwrap_or_default(),
            match &config.store.url_file {
                Some(path) => format!("from {}", path.display()),
                None => "in the config".into(),
            },
            match &config.store.ca_file {
                Some(path) => format!("TLS authorities from {}", path.display()),
                None => "TLS authorities of the system".into(),
            },
            config.store.timeout_ms,
            config.store.pool_size,
            config.store.synchronous_commit.as_sql()
        ),
    });
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_of_the_defaults_has_one_line_per_part() {
        let lines = report(&Config::default()).unwrap();
        assert!(
            lines[0].starts_with("config is valid: socket "),
            "{lines:?}"
        );
        assert_eq!(
            lines[1..],
            [
                "enrolment pages: off",
                "text messages: off",
                "metrics: off",
                "audit trail: chained lines to the journal when systemd runs otpd, else the log (auto)",
                "rollback anchor: /var/lib/otpd-anchor",
                "store: sled in /var/lib/otpd/store",
            ]
        );
    }
}
