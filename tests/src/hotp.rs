//! Counter-based (HOTP, RFC 4226) keys: enrolled with `otpd enroll --hotp
//! --json`, their codes computed by `oathtool --hotp`, not by our code.

use crate::env::{TestEnv, ISSUER};
use crate::programs::Program;
use crate::secrets;
use serde_json::Value;
use std::process::Command;

/// The HOTP code of `counter` for a base32 `secret`, by `oathtool --hotp
/// -b SECRET -c COUNTER`.
pub fn code(secret: &str, counter: u64) -> String {
    oathtool_hotp(secret, true, counter)
}

/// The HOTP code of `counter` for a key in hexadecimal (as pam_oath's
/// users file and `oathtool` write them), by `oathtool --hotp HEX -c
/// COUNTER`.
pub fn code_hex(hex: &str, counter: u64) -> String {
    oathtool_hotp(hex, false, counter)
}

fn oathtool_hotp(secret: &str, base32: bool, counter: u64) -> String {
    let mut cmd = Command::new(Program::Oathtool.path());
    cmd.arg("--hotp");
    if base32 {
        cmd.arg("-b");
    }
    let out = cmd
        .arg(secret)
        .arg("-c")
        .arg(counter.to_string())
        .output()
        .expect("run oathtool");
    assert!(
        out.status.success(),
        "oathtool --hotp failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = String::from_utf8(out.stdout)
        .expect("oathtool prints ASCII")
        .trim()
        .to_owned();
    assert!(
        code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
        "oathtool printed {code:?}"
    );
    secrets::remember(secret);
    secrets::remember(&code);
    code
}

/// An HOTP key as `otpd enroll --hotp --json` printed it.
#[derive(Debug, Clone)]
pub struct HotpKey {
    /// The base32 secret.
    pub secret: String,
    /// The device name.
    pub device: String,
    /// The counter the key starts at.
    pub counter: u64,
    /// Everything the CLI printed, as JSON.
    pub json: Value,
}

impl HotpKey {
    /// `otpd enroll USER --hotp --json EXTRA…` on `env`: must succeed, and
    /// print a pending HOTP key of `user` whose URI (an `otpauth://hotp/`
    /// URI of the env's issuer for `user`) carries the same secret and
    /// counter.
    pub fn enroll(env: &TestEnv, user: &str, extra: &[&str]) -> HotpKey {
        let mut args = vec!["enroll", user, "--hotp", "--json"];
        args.extend_from_slice(extra);
        let out = env.otpd_expect(&args, 0);
        let json: Value =
            serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: not JSON: {out}"));
        let text = |key: &str| {
            json[key]
                .as_str()
                .unwrap_or_else(|| panic!("no {key} in {out}"))
                .to_owned()
        };
        let secret = text("secret");
        secrets::remember(&secret);
        assert_eq!(json["user"], user, "{out}");
        assert_eq!(json["kind"], "hotp", "{out}");
        assert_eq!(json["state"], "pending", "{out}");
        let uri = text("uri");
        assert!(
            uri.starts_with(&format!("otpauth://hotp/{ISSUER}:{user}?")),
            "not an HOTP URI for {user}: {out}"
        );
        assert!(uri.contains(&format!("secret={secret}")), "{out}");
        let counter = json["counter"]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter: {out}"));
        assert!(uri.contains(&format!("counter={counter}")), "{out}");
        HotpKey {
            secret,
            device: text("device"),
            counter,
            json,
        }
    }

    /// The code of `counter`.
    pub fn code(&self, counter: u64) -> String {
        code(&self.secret, counter)
    }
}

/// The `devices` of `user` in `otpd list --json` on `env` (TOTP and HOTP
/// devices alike).
pub fn devices(env: &TestEnv, user: &str) -> Vec<Value> {
    let entry = env
        .list_entry(user)
        .unwrap_or_else(|| panic!("{user} is not listed by {}", env.name));
    entry["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("no devices array: {entry}"))
        .clone()
}

/// The `list --json` entry of device `name` of `user` on `env`.
pub fn device(env: &TestEnv, user: &str, name: &str) -> Value {
    let all = devices(env, user);
    all.iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("{}: {user} has no device {name}: {all:?}", env.name))
        .clone()
}

/// `next_counter` of `user`'s HOTP device `name` as `env` lists it.
pub fn next_counter(env: &TestEnv, user: &str, name: &str) -> u64 {
    let d = device(env, user, name);
    d["next_counter"]
        .as_u64()
        .unwrap_or_else(|| panic!("{}: no next_counter in {d}", env.name))
}
