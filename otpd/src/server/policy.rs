//! Who may ask what (design.md §4). Pure: the caller's identity comes from
//! SO_PEERCRED, read by the listener.
#![forbid(unsafe_code)]

use otpd_proto::Request;

/// The kernel's word on who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Effective uid of the peer at connect time.
    pub uid: u32,
    /// Its process id, for the audit line.
    pub pid: Option<i32>,
}

/// Whether `caller` may make `request`. `user_name_of` maps a uid to its
/// login name (only consulted for non-root callers of `verify`/`status`).
pub fn authorize(
    caller: &Caller,
    request: &Request,
    user_name_of: impl FnOnce(u32) -> Option<String>,
) -> Result<(), String> {
    if is_self_service(request) {
        // The user is the one the caller's uid maps to (the handler looks
        // it up; no request names one). Root is nobody's own account.
        return match caller.uid {
            0 => Err(ROOT_SELF_SERVICE.into()),
            _ => Ok(()),
        };
    }
    if caller.uid == 0 {
        return Ok(());
    }
    match request {
        Request::Answer { .. } => Ok(()),
        Request::Login(start) => match user_name_of(caller.uid) {
            Some(own) if own == start.user => Ok(()),
            _ => Err(format!(
                "uid {} may only check codes of its own user, not of {:?}",
                caller.uid, start.user
            )),
        },
        Request::Verify { user, .. } => match user_name_of(caller.uid) {
            Some(own) if own == *user => Ok(()),
            _ => Err(format!(
                "uid {} may only check codes of its own user, not of {user:?}",
                caller.uid
            )),
        },
        Request::Enroll(_)
        | Request::Confirm { .. }
        | Request::List {}
        | Request::Remove { .. }
        | Request::Resync { .. }
        | Request::Import(_)
        | Request::Unlock { .. }
        | Request::RecoveryCodes { .. }
        | Request::DaemonStatus {}
        | Request::Phone { .. }
        | Request::PhoneConfirm { .. }
        | Request::ApproverLink { .. }
        | Request::Forget { .. } => Err("administrative commands need root".into()),
        Request::SelfDevices {}
        | Request::SelfAddDevice { .. }
        | Request::SelfConfirm { .. }
        | Request::SelfRemoveDevice { .. }
        | Request::SelfRecoveryCodes { .. }
        | Request::SelfActivity {} => Ok(()),
    }
}

/// Why root may not use `otpd self`.
pub const ROOT_SELF_SERVICE: &str = "otpd self is for the user logging in, run as that user; \
     as root, use the admin commands: otpd list, otpd enroll USER --device NAME, \
     otpd remove USER --device NAME, otpd recovery-codes USER";

/// The requests of `otpd self`: about the caller's own user only.
pub fn is_self_service(request: &Request) -> bool {
    matches!(
        request,
        Request::SelfDevices {}
            | Request::SelfAddDevice { .. }
            | Request::SelfConfirm { .. }
            | Request::SelfRemoveDevice { .. }
            | Request::SelfRecoveryCodes { .. }
            | Request::SelfActivity {}
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use otpd_proto::SecretText;

    fn verify(user: &str) -> Request {
        Request::Verify {
            user: user.into(),
            code: SecretText::from("123456"),
            service: "s".into(),
            rhost: String::new(),
            ruid: None,
        }
    }

    fn login(user: &str) -> Request {
        Request::Login(Box::new(otpd_proto::LoginStart::plain(
            user,
            "xscreensaver",
            "",
            1000,
        )))
    }

    fn caller(uid: u32) -> Caller {
        Caller { uid, pid: None }
    }

    #[test]
    fn root_may_do_everything() {
        assert!(authorize(&caller(0), &verify("alice"), |_| None).is_ok());
        assert!(authorize(&caller(0), &Request::List {}, |_| None).is_ok());
    }

    #[test]
    fn a_user_may_check_only_its_own_codes() {
        let name = |uid| (uid == 1000).then(|| "alice".to_string());
        assert!(authorize(&caller(1000), &verify("alice"), name).is_ok());
        assert!(authorize(&caller(1000), &verify("bob"), name).is_err());
        assert!(authorize(&caller(1001), &verify("alice"), name).is_err());
        assert!(authorize(&caller(1000), &login("alice"), name).is_ok());
        assert!(authorize(&caller(1000), &login("bob"), name).is_err());
        assert!(authorize(&caller(1000), &Request::Answer { answer: None }, name).is_ok());
    }

    #[test]
    fn self_service_is_for_users_and_not_for_root() {
        let name = |_| Some("alice".to_string());
        assert!(authorize(&caller(1000), &Request::SelfActivity {}, name).is_ok());
        assert!(authorize(&caller(1000), &Request::SelfDevices {}, name).is_ok());
        let refused = authorize(&caller(0), &Request::SelfDevices {}, name).unwrap_err();
        assert!(refused.contains("admin commands"), "{refused}");
        let add = Request::SelfAddDevice {
            device: "tablet".into(),
            proof: otpd_proto::SelfProof::Code {
                code: SecretText::from("123456"),
            },
        };
        assert!(authorize(&caller(0), &add, name).is_err());
    }

    #[test]
    fn admin_commands_need_root() {
        let name = |_| Some("alice".to_string());
        for r in [
            Request::List {},
            Request::Remove {
                user: "alice".into(),
                device: None,
            },
            Request::Unlock {
                user: "alice".into(),
            },
            Request::Confirm {
                user: "alice".into(),
                code: SecretText::from("1"),
            },
        ] {
            assert!(authorize(&caller(1000), &r, name).is_err(), "{r:?}");
        }
    }
}
