//! Counter-based (HOTP, RFC 4226) keys: enrolled with `otpd enroll --hotp
//! --json`, their codes computed by `oathtool --hotp`, not by our code.

use crate::env::TestEnv;
use crate::programs::Program;
use crate::secrets;
use serde_json::Value;
use std::process::Command;

/// The HOTP code of `counter`, by `oathtool --hotp -b SECRET -c COUNTER`.
pub fn code(secret: &str, counter: u64) -> String {
    let out = Command::new(Program::Oathtool.path())
        .arg("--hotp")
        .arg("-b")
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
}

impl HotpKey {
    /// `otpd enroll USER --hotp --json EXTRA…` on `env`: must succeed, and
    /// print a pending HOTP key whose URI carries the same secret.
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
        assert_eq!(json["kind"], "hotp", "{out}");
        assert_eq!(json["state"], "pending", "{out}");
        assert!(text("uri").contains(&format!("secret={secret}")), "{out}");
        HotpKey {
            secret,
            device: text("device"),
            counter: json["counter"]
                .as_u64()
                .unwrap_or_else(|| panic!("no counter: {out}")),
        }
    }

    /// The code of `counter`.
    pub fn code(&self, counter: u64) -> String {
        code(&self.secret, counter)
    }
}

/// The `devices` of `user` in `otpd list --json` on `env`.
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
