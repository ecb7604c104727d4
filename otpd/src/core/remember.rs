//! Remembered logins: after a second factor, later logins of the same
//! *binding* skip the code for a while (`[remember]`). The binding is never
//! an address alone: for SSH it is the public key sshd has just verified
//! (`SSH_AUTH_INFO_0`), with the source's network when `same_source`; for a
//! local service the kernel's audit session and the tty. A login without
//! one (password-only SSH, no audit session) is never remembered. Pure:
//! the shell passes in what the module sent and the time.
#![forbid(unsafe_code)]

use base64ct::{Base64, Base64Unpadded, Encoding};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Remembered bindings kept per user: the oldest goes when a new one comes.
pub const MAX_REMEMBERED: usize = 32;
/// The longest a login may be remembered (`[remember]`'s ceiling).
pub const MAX_REMEMBER_SECS: u64 = 7 * 24 * 3600;

/// One remembered binding of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remembered {
    /// SHA-256 of the binding (user, service, key or session …), hex.
    pub hash: String,
    /// PAM_SERVICE.
    pub service: String,
    /// Unix time after which it no longer counts.
    pub expires: u64,
    /// For SSH: the key's fingerprint (`SHA256:…`, as `ssh-keygen -l`
    /// prints it), so that `otpd forget USER --key` finds it. Public.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A login's binding, when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// What is stored and compared ([`Remembered::hash`]).
    pub hash: String,
    /// The SSH key's fingerprint, for SSH logins.
    pub key: Option<String>,
}

/// What a login brings to its binding.
#[derive(Debug, Clone, Copy)]
pub struct LoginFacts<'a> {
    /// The user whose code would be checked.
    pub user: &'a str,
    /// PAM_SERVICE.
    pub service: &'a str,
    /// PAM_RHOST; empty for a local login.
    pub rhost: &'a str,
    /// The rate-limit source (an IPv4 address, an IPv6 /64, `uid:N`).
    pub source: &'a str,
    /// `SSH_AUTH_INFO_0`.
    pub auth_info: Option<&'a str>,
    /// The audit session of the module's process.
    pub audit_session: Option<u32>,
    /// PAM_TTY.
    pub tty: &'a str,
}

/// The fingerprint (`SHA256:…`, unpadded base64, as OpenSSH prints it) of
/// the first public key sshd verified, from `SSH_AUTH_INFO_0`'s lines
/// (`publickey TYPE BASE64`); `None` without one.
pub fn verified_key(auth_info: &str) -> Option<String> {
    auth_info.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next() != Some("publickey") {
            return None;
        }
        let _kind = words.next()?;
        let blob = Base64::decode_vec(words.next()?).ok()?;
        if blob.is_empty() {
            return None;
        }
        Some(format!(
            "SHA256:{}",
            Base64Unpadded::encode_string(&Sha256::digest(&blob))
        ))
    })
}

/// The binding of a login, or `None` when it has none (password-only SSH,
/// a local login without an audit session). `same_source`: an SSH binding
/// includes the source's network.
pub fn binding(facts: &LoginFacts<'_>, same_source: bool) -> Option<Binding> {
    let (kind, key, parts): (&str, Option<String>, Vec<String>) = if facts.rhost.trim().is_empty() {
        let session = facts.audit_session?;
        (
            "local",
            None,
            vec![session.to_string(), facts.tty.to_owned()],
        )
    } else {
        let key = verified_key(facts.auth_info?)?;
        let network = if same_source { facts.source } else { "" };
        ("ssh", Some(key.clone()), vec![key, network.to_owned()])
    };
    let mut hasher = Sha256::new();
    for part in ["otpd remember v1", kind, facts.user, facts.service]
        .into_iter()
        .chain(parts.iter().map(String::as_str))
    {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let hash = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(Binding { hash, key })
}

/// Whether `binding` is remembered in `list` at `now`.
pub fn is_remembered(list: &[Remembered], binding: &Binding, now: u64) -> bool {
    list.iter().any(|r| {
        now <= r.expires
            && constant_time_eq::constant_time_eq(r.hash.as_bytes(), binding.hash.as_bytes())
    })
}

/// Remembers `binding` for `secs` from `now` (at most
/// [`MAX_REMEMBER_SECS`]); expired entries and the same binding's older
/// entry go, at most [`MAX_REMEMBERED`] are kept.
pub fn remember(list: &mut Vec<Remembered>, binding: &Binding, service: &str, now: u64, secs: u64) {
    list.retain(|r| now <= r.expires && r.hash != binding.hash);
    if secs == 0 {
        return;
    }
    list.push(Remembered {
        hash: binding.hash.clone(),
        service: service.to_owned(),
        expires: now.saturating_add(secs.min(MAX_REMEMBER_SECS)),
        key: binding.key.clone(),
    });
    let excess = list.len().saturating_sub(MAX_REMEMBERED);
    list.drain(..excess);
}

/// Forgets the bindings of the key with this fingerprint (`Some`), or all
/// (`None`); how many went.
pub fn forget(list: &mut Vec<Remembered>, key: Option<&str>) -> usize {
    let before = list.len();
    match key {
        None => list.clear(),
        Some(key) => list.retain(|r| r.key.as_deref() != Some(key)),
    }
    before - list.len()
}

/// Bindings still valid at `now`.
pub fn live(list: &[Remembered], now: u64) -> usize {
    list.iter().filter(|r| now <= r.expires).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ed25519 public key line as sshd writes it in SSH_AUTH_INFO_0.
    const KEY_A: &str =
        "publickey ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFbK467QzxnZLD9tKVb0vp+h7/cP1pwEzYvzXdq0JsTm";
    const KEY_B: &str =
        "publickey ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGMf/spdyExslJe0ut0Do48KwRswlFGI/K0A1tPOGxDa";

    fn ssh<'a>(auth_info: Option<&'a str>, source: &'a str) -> LoginFacts<'a> {
        LoginFacts {
            user: "alice",
            service: "sshd",
            rhost: "192.0.2.7",
            source,
            auth_info,
            audit_session: Some(4),
            tty: "ssh",
        }
    }

    #[test]
    fn an_ssh_binding_is_the_key_and_the_network_never_the_address_alone() {
        let a = binding(&ssh(Some(KEY_A), "192.0.2.7"), true).unwrap();
        assert!(a.key.as_deref().unwrap().starts_with("SHA256:"));
        assert_eq!(a, binding(&ssh(Some(KEY_A), "192.0.2.7"), true).unwrap());
        assert_ne!(a, binding(&ssh(Some(KEY_B), "192.0.2.7"), true).unwrap());
        assert_ne!(a, binding(&ssh(Some(KEY_A), "192.0.2.8"), true).unwrap());
        // Without same_source the network is not part of it.
        assert_eq!(
            binding(&ssh(Some(KEY_A), "192.0.2.7"), false),
            binding(&ssh(Some(KEY_A), "192.0.2.8"), false)
        );
        // Password-only SSH: no key line, no binding (the audit session
        // does not count for a remote login).
        assert_eq!(binding(&ssh(None, "192.0.2.7"), true), None);
        assert_eq!(
            binding(&ssh(Some("keyboard-interactive"), "192.0.2.7"), true),
            None
        );
        assert_eq!(
            binding(&ssh(Some("publickey ssh-ed25519 !!!"), "192.0.2.7"), true),
            None
        );
        // Another user or service: another binding.
        let bob = LoginFacts {
            user: "bob",
            ..ssh(Some(KEY_A), "192.0.2.7")
        };
        assert_ne!(binding(&bob, true).unwrap().hash, a.hash);
    }

    #[test]
    fn a_local_binding_is_the_audit_session_and_the_tty() {
        let local = |session, tty| LoginFacts {
            user: "alice",
            service: "sudo",
            rhost: "",
            source: "uid:1000",
            auth_info: None,
            audit_session: session,
            tty,
        };
        let a = binding(&local(Some(7), "/dev/pts/1"), true).unwrap();
        assert_eq!(a.key, None);
        assert_ne!(a, binding(&local(Some(8), "/dev/pts/1"), true).unwrap());
        assert_ne!(a, binding(&local(Some(7), "/dev/pts/2"), true).unwrap());
        assert_eq!(binding(&local(None, "/dev/pts/1"), true), None);
    }

    #[test]
    fn the_fingerprint_is_openssh_s() {
        // ssh-keygen -lf of KEY_A's public key prints this fingerprint.
        let fp = verified_key(&format!("{KEY_A}\n")).unwrap();
        assert_eq!(fp, "SHA256:EHbUWyxTbfm6rksmQ9K+U3f/u4rO8uVFi3zTK77p0oo");
        assert_eq!(verified_key("password\n"), None);
    }

    #[test]
    fn remembered_bindings_expire_are_bounded_and_forgotten_by_key() {
        let a = binding(&ssh(Some(KEY_A), "192.0.2.7"), true).unwrap();
        let b = binding(&ssh(Some(KEY_B), "192.0.2.7"), true).unwrap();
        let mut list = Vec::new();
        remember(&mut list, &a, "sshd", 100, 60);
        assert!(is_remembered(&list, &a, 160));
        assert!(!is_remembered(&list, &a, 161));
        assert!(!is_remembered(&list, &b, 100));
        // The ceiling.
        remember(&mut list, &b, "sshd", 100, 30 * 24 * 3600);
        assert_eq!(list[1].expires, 100 + MAX_REMEMBER_SECS);
        assert_eq!(live(&list, 100), 2);
        assert_eq!(forget(&mut list, b.key.as_deref()), 1);
        assert!(!is_remembered(&list, &b, 100));
        assert!(is_remembered(&list, &a, 100));
        assert_eq!(forget(&mut list, None), 1);
        for i in 0..40u32 {
            let local = LoginFacts {
                user: "alice",
                service: "sudo",
                rhost: "",
                source: "uid:1000",
                auth_info: None,
                audit_session: Some(i),
                tty: "pts/1",
            };
            remember(&mut list, &binding(&local, true).unwrap(), "sudo", 200, 60);
        }
        assert_eq!(list.len(), MAX_REMEMBERED);
    }
}
