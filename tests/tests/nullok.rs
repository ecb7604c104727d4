//! A second factor, once on, stays on (design.md §7): `nullok` lets
//! through only users who never had a device. Not a user whose device is
//! being replaced (`enroll --force`, `--device NAME --force`, `--link
//! --force`) or was revoked (`--revoke`, `remove --device`), and not a
//! name that NSS resolves to an enrolled user in another spelling. Every
//! login goes through the real libpam with the nullok stack
//! (`[success=done ignore=ignore default=die] pam_otpd.so nullok`, then
//! pam_permit): a bypass shows as PAM_SUCCESS.

use otpd_tests::pam::finish;
use otpd_tests::process::Running;
use otpd_tests::{nss, require, settled_now, PamOutcome, Program, TestEnv, PAM};
use std::ffi::OsStr;

const RHOST: &str = "192.0.2.30";

fn nullok_login(env: &TestEnv, user: &str, code: &str) -> PamOutcome {
    env.pam_service_nullok("")
        .login(OsStr::new(user), code, RHOST, None)
        .outcome
}

/// The (name, state) of each of `user`'s devices, as listed.
fn devices(env: &TestEnv, user: &str) -> Vec<(String, String)> {
    otpd_tests::hotp::devices(env, user)
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_owned(),
                d["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn replacing_a_device_keeps_the_old_one_and_never_opens_nullok() {
    if !require("replacing_a_device_keeps_the_old_one", PAM) {
        return;
    }
    let env = TestEnv::start("replace_keep");
    let t = settled_now(30, 15);
    let old = env.enroll_active("alice", &[], t - 30);
    let wrong = old.wrong_code(t);

    // A lost phone: the admin enrols a new one with --force.
    let (new, out) = env.enroll_printing("alice", &["--force"]);
    assert!(
        out.stdout
            .contains("keeps working until the new one is confirmed"),
        "{out}"
    );
    assert_eq!(
        devices(&env, "alice"),
        [
            ("default".to_string(), "active".to_string()),
            ("default".to_string(), "pending".to_string())
        ]
    );
    // nullok does not let alice through with a wrong code, nor with the
    // new device's code before it is confirmed; the old one still works.
    assert_eq!(nullok_login(&env, "alice", &wrong), PamOutcome::AuthErr);
    assert_eq!(
        nullok_login(&env, "alice", &new.code_at(t)),
        PamOutcome::AuthErr
    );
    assert_eq!(
        nullok_login(&env, "alice", &old.code_at(t)),
        PamOutcome::Success
    );
    // Confirmed: the new device takes over, the old one is gone.
    env.otpd_expect(&["confirm", "alice", &new.code_at(t + 30)], 0);
    assert_eq!(
        devices(&env, "alice"),
        [("default".to_string(), "active".to_string())]
    );
    assert_eq!(
        nullok_login(&env, "alice", &old.code_at(t + 60)),
        PamOutcome::AuthErr
    );
    assert_eq!(nullok_login(&env, "alice", &wrong), PamOutcome::AuthErr);
}

#[test]
fn a_revoked_device_leaves_a_user_who_still_needs_a_code() {
    if !require("a_revoked_device", PAM) {
        return;
    }
    let env = TestEnv::start("replace_revoke");
    let t = settled_now(30, 15);
    let old = env.enroll_active("bob", &[], t - 30);
    let (new, out) = env.enroll_printing("bob", &["--force", "--revoke"]);
    assert!(out.stdout.contains("no longer works"), "{out}");
    assert_eq!(env.list_entry("bob").unwrap()["state"], "pending");
    // Neither the old code, nor any code, nor nullok lets bob in now.
    for code in [old.code_at(t), old.wrong_code(t), new.code_at(t)] {
        assert_eq!(
            nullok_login(&env, "bob", &code),
            PamOutcome::AuthErr,
            "{code}"
        );
    }
    env.otpd_expect(&["confirm", "bob", &new.code_at(t)], 0);
    assert_eq!(
        nullok_login(&env, "bob", &new.code_at(t + 30)),
        PamOutcome::Success
    );
    // --revoke belongs to --force.
    env.otpd_expect(&["enroll", "bob", "--revoke"], 2);
}

#[test]
fn a_device_replaced_or_removed_by_name_never_opens_nullok() {
    if !require("a_device_replaced_by_name", PAM) {
        return;
    }
    let env = TestEnv::start("replace_device");
    let t = settled_now(30, 15);
    let phone = env.enroll_active("carol", &[], t - 30);
    let tablet = env.enroll("carol", &["--device", "tablet"]);
    env.otpd_expect(&["confirm", "carol", &tablet.code_at(t - 30)], 0);
    // The phone replaced by name: it works until its successor is confirmed.
    let successor = env.enroll("carol", &["--device", "default", "--force"]);
    assert_eq!(
        nullok_login(&env, "carol", &phone.code_at(t)),
        PamOutcome::Success
    );
    assert_eq!(
        nullok_login(&env, "carol", &successor.code_at(t + 30)),
        PamOutcome::AuthErr
    );
    // Both active devices removed: a pending one is left. Still a code.
    env.otpd_expect(&["remove", "carol", "--device", "tablet"], 0);
    env.otpd_expect(&["confirm", "carol", &successor.code_at(t + 30)], 0);
    let spare = env.enroll("carol", &["--device", "spare"]);
    env.otpd_expect(&["remove", "carol", "--device", "default"], 0);
    assert_eq!(env.list_entry("carol").unwrap()["state"], "pending");
    assert_eq!(
        nullok_login(&env, "carol", &phone.wrong_code(t)),
        PamOutcome::AuthErr
    );
    assert_eq!(
        nullok_login(&env, "carol", &spare.code_at(t)),
        PamOutcome::AuthErr
    );
}

#[test]
fn a_new_enrollment_link_keeps_the_old_device_and_never_opens_nullok() {
    if !require("a_new_enrolment_link", PAM) {
        return;
    }
    let env = TestEnv::start_with_config(
        "replace_link",
        otpd_tests::Limits::default(),
        otpd_tests::pages::WEB_SECTION,
    );
    let port = otpd_tests::pages::port(&env, "http");
    let t = settled_now(30, 15);
    let old = env.enroll_active("dave", &[], t - 30);
    let out = env.otpd_expect(&["enroll", "dave", "--link", "--force"], 0);
    assert!(
        out.stdout
            .contains("keeps working until the new one is confirmed"),
        "{out}"
    );
    let path = otpd_tests::pages::link_in(&out.stdout)
        .map(|url| otpd_tests::pages::path_of(&url))
        .unwrap_or_else(|| panic!("no link printed: {out}"));
    assert_eq!(
        nullok_login(&env, "dave", &old.wrong_code(t)),
        PamOutcome::AuthErr
    );
    // dave goes on logging in with the old phone meanwhile: the link stays
    // (it dies with the code that confirms its own device).
    assert_eq!(
        nullok_login(&env, "dave", &old.code_at(t)),
        PamOutcome::Success
    );
    let page = otpd_tests::webclient::request(port, "GET", &path, "", "");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("id=\"reveal\"") && !page.body.contains("id=\"invalid\""),
        "the link died with a login of the old device: {}",
        page.body
    );
    // The page never shows the old device's secret.
    assert!(!page.body.contains(&old.secret), "{}", page.body);
}

#[test]
fn a_spelling_that_is_not_the_account_name_never_opens_nullok() {
    if !require("a_spelling_that_is_not_the_account", PAM) {
        return;
    }
    // A record "Erin" from before otpd asked about the account's own name
    // (the daemon's user database does not know Erin yet).
    let mut env = TestEnv::start("spelling");
    let t = settled_now(30, 15);
    let erin = env.enroll_active("Erin", &[], t - 30);
    // Now under an NSS that ignores case, as SSSD can: "Erin" is the
    // account "erin", and logins ask about "erin".
    let module = nss::case_folding_module(&env.dir.join("nss-module"));
    let passwd = nss::passwd_with(&env.dir, b"");
    let case_folding = |cmd: &mut std::process::Command| {
        cmd.env("LD_PRELOAD", Program::NssWrapper.path())
            .env("NSS_WRAPPER_PASSWD", &passwd)
            .env("NSS_WRAPPER_GROUP", "/etc/group");
        nss::case_folding(cmd, &module, "erin", 70_001);
    };
    env.kill_daemon(libc::SIGTERM);
    env.launcher = vec![
        "env".into(),
        format!("LD_PRELOAD={}", Program::NssWrapper.path().display()).into(),
        format!("NSS_WRAPPER_PASSWD={}", passwd.display()).into(),
        "NSS_WRAPPER_GROUP=/etc/group".into(),
        format!("NSS_WRAPPER_MODULE_SO_PATH={}", module.display()).into(),
        "NSS_WRAPPER_MODULE_FN_PREFIX=casefold".into(),
        "NSS_CASEFOLD_NAME=erin".into(),
        "NSS_CASEFOLD_UID=70001".into(),
    ];
    env.spawn_daemon();

    // A login typing that spelling still needs Erin's code: nullok does
    // not pass. (Other spellings ask about "erin", which has no record:
    // `otpd list` below tells the admin to enrol the account's name.)
    {
        let name = "Erin";
        let service = env.pam_service_nullok("");
        let mut cmd = service.command(OsStr::new(name), RHOST, None);
        // Only "erin" known by the module; pam_wrapper stays preloaded.
        cmd.env("NSS_WRAPPER_PASSWD", &passwd);
        nss::case_folding(&mut cmd, &module, "erin", 70_001);
        let mut running = Running::spawn(cmd);
        running.feed(format!("{}\n", erin.wrong_code(t)).as_bytes());
        let login = finish(running);
        assert_ne!(
            login.outcome,
            PamOutcome::Success,
            "{name}: {}",
            login.output
        );
    }
    // `otpd list` says which records are not under their account's name.
    let mut cmd = std::process::Command::new(otpd_tests::programs::otpd_binary());
    cmd.arg("--config").arg(&env.config).arg("list");
    case_folding(&mut cmd);
    let out = otpd_tests::process::run(cmd, b"", std::time::Duration::from_secs(30));
    assert!(
        out.stderr.contains("\"Erin\" is the account \"erin\""),
        "{out}"
    );
    // And a new enrolment under such a spelling is refused, naming the account.
    let out = env.otpd_expect(&["enroll", "ERIN"], 2);
    assert!(
        out.stderr.contains("\"ERIN\" is the account \"erin\""),
        "{out}"
    );
    assert_eq!(env.list_entry("ERIN"), None, "nothing enrolled");
    env.enroll("erin", &[]);
    // A name the user database does not know is no business of enrol's
    // (an account of another host of a fleet).
    env.enroll("elsewhere", &[]);
}

#[test]
fn a_name_is_resolved_to_its_account_and_an_unknown_name_is_refused() {
    if !require("a_name_is_resolved_to_its_account", PAM) {
        return;
    }
    let env = TestEnv::start("nss_names");
    let t = settled_now(30, 15);
    let erin = env.enroll_active("erin", &[], t - 30);
    let wrong = erin.wrong_code(t);

    // An NSS that ignores case (SSSD, winbind, LDAP can): "ERIN" is erin.
    let module = nss::case_folding_module(&env.dir.join("nss-module"));
    let login_as = |name: &str, code: &str| {
        let service = env.pam_service_nullok("debug");
        let mut cmd = service.command(OsStr::new(name), RHOST, None);
        // Only "erin" in the files; any other spelling from the module.
        cmd.env("NSS_WRAPPER_PASSWD", nss::passwd_with(&env.dir, b"erin"));
        nss::case_folding(&mut cmd, &module, "erin", 70_001);
        let mut running = Running::spawn(cmd);
        running.feed(format!("{code}\n").as_bytes());
        finish(running)
    };
    let login = login_as("ERIN", &wrong);
    assert_eq!(login.outcome, PamOutcome::AuthErr, "{}", login.output);
    let login = login_as("Erin", &erin.code_at(t));
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    // The daemon was asked about erin, and said so in its audit log,
    // the end of the login conversation included.
    let log = env.log();
    assert!(
        !log.contains("user=\"ERIN\"") && !log.contains("user=\"Erin\""),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("op=\"login\"") && l.contains("user=\"erin\"")),
        "no audit line for the end of the login:\n{log}"
    );

    // A name that is no account: refused, never ignored (nullok or not).
    let stranger = format!("{}-x", nss::NOT_AN_ACCOUNT);
    assert_eq!(
        nullok_login(&env, &stranger, &wrong),
        PamOutcome::UserUnknown
    );
    assert_eq!(
        env.pam_login(&stranger, &wrong, RHOST, "").outcome,
        PamOutcome::UserUnknown
    );
}
