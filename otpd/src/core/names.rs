//! Which user names and issuers otpd accepts.

/// Longest user name accepted, in bytes (LDAP names can be long; Linux's own
/// are at most 32).
pub const MAX_USER_LEN: usize = 256;

/// Checks a user name; the error names what is wrong with it.
pub fn validate_user(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("the user name is empty".into());
    }
    if user.len() > MAX_USER_LEN {
        return Err(format!("the user name is longer than {MAX_USER_LEN} bytes"));
    }
    if user.chars().any(char::is_control) {
        return Err("the user name contains a control character".into());
    }
    if user.trim() != user || user.contains(char::is_whitespace) {
        return Err("the user name contains white space".into());
    }
    if user.contains(':') {
        // passwd(5) forbids it, and the otpauth label uses it as separator.
        return Err("the user name contains ':'".into());
    }
    Ok(())
}

/// Checks an issuer (the name shown in the app).
pub fn validate_issuer(issuer: &str) -> Result<(), String> {
    if issuer.trim().is_empty() {
        return Err("the issuer is empty".into());
    }
    if issuer.len() > 128 {
        return Err("the issuer is longer than 128 bytes".into());
    }
    if issuer.contains(':') || issuer.chars().any(char::is_control) {
        return Err("the issuer contains ':' or a control character".into());
    }
    Ok(())
}

/// Longest device name accepted.
pub const MAX_DEVICE_LEN: usize = 32;

/// Checks a device name (`phone`, `yubikey-5`): 1 to 32 letters, digits,
/// `.`, `_` or `-`, so that it reads well in `otpd list` and logs.
pub fn validate_device(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_DEVICE_LEN {
        return Err(format!(
            "the device name must be 1 to {MAX_DEVICE_LEN} characters long"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(format!(
            "the device name {name:?} may only hold letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass() {
        for ok in ["alice", "bob.smith", "svc-backup", "j@example.org", "ümit"] {
            assert!(validate_user(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn bad_names_are_named() {
        assert!(validate_user("").unwrap_err().contains("empty"));
        assert!(validate_user("a:b").unwrap_err().contains("':'"));
        assert!(validate_user("a\nb").unwrap_err().contains("control"));
        assert!(validate_user("a b").unwrap_err().contains("white space"));
        assert!(validate_user(&"x".repeat(257))
            .unwrap_err()
            .contains("longer"));
        assert!(validate_issuer("Acme:Corp").is_err());
        assert!(validate_issuer("Acme Corp").is_ok());
        assert!(validate_device("yubikey-5.a_b").is_ok());
        assert!(validate_device("").is_err());
        assert!(validate_device("my phone").unwrap_err().contains("letters"));
        assert!(validate_device(&"x".repeat(33)).is_err());
    }
}
