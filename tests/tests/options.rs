//! Every module option through the real libpam (pamtester under
//! libpam_wrapper) against the real daemon: `use_first_pass`,
//! `try_first_pass`, `forward_pass`, `lang=`, the locale, `[prompt=…]`,
//! `debug`, and warnings for bad arguments. (`socket=`, `timeout=`,
//! `nullok`, `prompt=` and `daemon_user=` have their own tests in
//! login.rs, daemon_failures.rs and trust.rs.)

use otpd_tests::pam::{finish, PamService};
use otpd_tests::process::Running;
use otpd_tests::programs::{find_pam_module, pam_module};
use otpd_tests::system::verify_outcomes as outcomes;
use otpd_tests::{require, secrets, settled_now, PamLogin, PamOutcome, TestEnv, PAM};
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;

/// One pamtester run with `input` on stdin and a controlled environment:
/// no locale variables unless `envs` sets them.
fn login_with(
    service: &PamService,
    user: &str,
    rhost: &str,
    input: &str,
    envs: &[(&str, &str)],
) -> PamLogin {
    let mut cmd = service.command(OsStr::new(user), rhost, None);
    for name in ["LANG", "LC_ALL", "LC_MESSAGES", "LANGUAGE"] {
        cmd.env_remove(name);
    }
    for (name, value) in envs {
        cmd.env(name, value);
    }
    // Every answer typed (codes right or wrong, passwords, typos) is a
    // secret: neither the daemon's log nor the module's may show it.
    for answer in input.lines() {
        secrets::remember(answer);
    }
    let mut running = Running::spawn(cmd);
    running.feed(input.as_bytes());
    finish(running)
}

/// `pam_exec.so expose_authtok /bin/true`: asks "Password: " and leaves
/// the answer in PAM_AUTHTOK, as pam_unix or any first module would.
fn earlier_module() -> String {
    format!(
        "auth required {} expose_authtok quiet /bin/true\n",
        find_pam_module("pam_exec.so").display()
    )
}

fn otpd_line(env: &TestEnv, args: &str) -> String {
    format!(
        "auth required {} socket={} {args}\n",
        pam_module().display(),
        env.socket.display()
    )
}

#[test]
fn use_first_pass_takes_the_code_from_the_module_before_and_never_prompts() {
    if !require("use_first_pass", PAM) {
        return;
    }
    let env = TestEnv::start("use_first_pass");
    let t = settled_now(30, 10);
    let ann = env.enroll_active("ann", &[], t - 30);
    let stack = env.pam_stack(&(earlier_module() + &otpd_line(&env, "use_first_pass")));

    let login = login_with(
        &stack,
        "ann",
        "192.0.2.1",
        &format!("{}\n", ann.code_at(t)),
        &[],
    );
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    let said = login.module_messages();
    assert_eq!(said.matches("Password: ").count(), 1, "{said}");
    assert!(!said.contains("Verification code"), "{said}");

    let wrong = login_with(
        &stack,
        "ann",
        "192.0.2.1",
        &format!("{}\n", ann.wrong_code(t)),
        &[],
    );
    assert_eq!(wrong.outcome, PamOutcome::AuthErr, "{}", wrong.output);
    assert!(!wrong.module_messages().contains("Verification code"));

    // The earlier module's answer is a password, not a code: refused, and
    // never sent to the daemon (no audit line, no failure counted).
    let login = login_with(&stack, "ann", "192.0.2.1", "correct horse\n", &[]);
    assert_eq!(login.outcome, PamOutcome::AuthErr, "{}", login.output);
    assert!(!login.module_messages().contains("Verification code"));

    // Nothing before it: refused without a prompt and without the daemon.
    let alone = env.pam_stack(&otpd_line(&env, "use_first_pass"));
    let login = login_with(
        &alone,
        "ann",
        "192.0.2.1",
        &format!("{}\n", ann.code_at(t + 30)),
        &[],
    );
    assert_eq!(
        login.outcome,
        PamOutcome::AuthtokRecoveryErr,
        "{}",
        login.output
    );
    assert!(login.module_messages().is_empty(), "{}", login.output);
    assert_eq!(outcomes(&env, "ann"), ["accepted", "wrong_code"]);
}

#[test]
fn try_first_pass_uses_a_code_from_the_module_before_and_asks_otherwise() {
    if !require("try_first_pass", PAM) {
        return;
    }
    let env = TestEnv::start("try_first_pass");
    let t = settled_now(30, 10);
    let ann = env.enroll_active("ann", &[], t - 30);
    let bob = env.enroll_active("bob", &[], t - 30);
    let eve = env.enroll_active("eve", &[], t - 30);
    let stack = env.pam_stack(&(earlier_module() + &otpd_line(&env, "try_first_pass")));

    // The first answer is a code: no second prompt.
    let login = login_with(
        &stack,
        "ann",
        "192.0.2.2",
        &format!("{}\n", ann.code_at(t)),
        &[],
    );
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    assert!(!login.module_messages().contains("Verification code"));

    // The first answer is a password: the code is asked for.
    let input = format!("correct horse battery\n{}\n", bob.code_at(t));
    let login = login_with(&stack, "bob", "192.0.2.2", &input, &[]);
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    assert!(
        login.module_messages().contains("Verification code: "),
        "{}",
        login.output
    );
    assert!(
        outcomes(&env, "bob") == ["accepted"],
        "the password was sent as a code"
    );

    // A six-digit password that is not the code: asked once more.
    let input = format!("{}\n{}\n", eve.wrong_code(t), eve.code_at(t));
    let login = login_with(&stack, "eve", "192.0.2.2", &input, &[]);
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    assert!(login.module_messages().contains("Verification code: "));
    assert_eq!(outcomes(&env, "eve"), ["wrong_code", "accepted"]);
}

#[test]
fn forward_pass_splits_off_the_code_and_hands_the_password_on() {
    if !require("forward_pass", PAM) {
        return;
    }
    let env = TestEnv::start("forward_pass");
    let t = settled_now(30, 10);
    let ann = env.enroll_active("ann", &[], t - 30);
    let ida = env.enroll_active("ida", &["--digits", "8"], t - 30);
    // The next module: writes what it got as PAM_AUTHTOK to a file.
    let script = env.dir.join("seen-authtok.sh");
    std::fs::write(&script, "#!/bin/sh\ncat > \"$1\"\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let seen = env.dir.join("seen");
    let next_module = format!(
        "auth required {} expose_authtok quiet {} {}\n",
        find_pam_module("pam_exec.so").display(),
        script.display(),
        seen.display()
    );
    let stack = |args: &str| env.pam_stack(&(otpd_line(&env, args) + &next_module));
    let forwarded = || {
        let bytes = std::fs::read(&seen).unwrap_or_default();
        // pam_exec writes the token with its terminating NUL.
        String::from_utf8_lossy(bytes.strip_suffix(b"\0").unwrap_or(&bytes)).into_owned()
    };

    let input = format!("my pass phrase{}\n", ann.code_at(t));
    let login = login_with(&stack("forward_pass"), "ann", "192.0.2.3", &input, &[]);
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    assert_eq!(forwarded(), "my pass phrase");
    let said = login.module_messages();
    assert!(said.contains("Password + verification code: "), "{said}");
    assert_eq!(said.matches(": ").count(), 1, "one prompt only: {said}");

    // Eight digits for an eight-digit enrolment (the daemon says how many),
    // and the Dutch prompt.
    let _ = std::fs::remove_file(&seen);
    let input = format!("wachtwoord{}\n", ida.code_at(t));
    let login = login_with(
        &stack("forward_pass lang=nl"),
        "ida",
        "192.0.2.3",
        &input,
        &[],
    );
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    assert_eq!(forwarded(), "wachtwoord");
    assert!(login.module_messages().contains("Wachtwoord + tokencode: "));

    // A replayed code: the password is not handed on (the next module
    // finds no PAM_AUTHTOK and would have to ask), and the stack fails.
    let _ = std::fs::remove_file(&seen);
    let input = format!("my pass phrase{}\n", ann.code_at(t));
    let login = login_with(&stack("forward_pass"), "ann", "192.0.2.3", &input, &[]);
    assert_eq!(login.outcome, PamOutcome::AuthErr, "{}", login.output);
    assert!(!forwarded().contains("my pass phrase"), "{}", forwarded());
    assert_eq!(outcomes(&env, "ann"), ["accepted", "replayed"]);

    // use_first_pass forward_pass: password and code come from the module
    // before (pam_exec's "Password: " here); the password alone goes on.
    let _ = std::fs::remove_file(&seen);
    let both = env.pam_stack(
        &(earlier_module() + &otpd_line(&env, "forward_pass use_first_pass") + &next_module),
    );
    let input = format!("my pass phrase{}\n", ann.code_at(t + 30));
    let login = login_with(&both, "ann", "192.0.2.3", &input, &[]);
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    assert_eq!(forwarded(), "my pass phrase");
    assert_eq!(login.module_messages().matches(": ").count(), 1);
}

#[test]
fn lang_and_the_locale_choose_dutch_or_english() {
    if !require("lang", PAM) {
        return;
    }
    let env = TestEnv::start("lang");
    let t = settled_now(30, 10);
    let ann = env.enroll_active("ann", &[], t - 30);
    let runs = std::cell::Cell::new(0);
    let said = |args: &str, envs: &[(&str, &str)]| {
        let stack = env.pam_stack(&otpd_line(&env, args));
        // A wrong code: nothing is used up, every run prompts; each from
        // its own source, so that the wrong codes never add up to a backoff.
        runs.set(runs.get() + 1);
        let rhost = format!("192.0.2.{}", 100 + runs.get());
        let login = login_with(
            &stack,
            "ann",
            &rhost,
            &format!("{}\n", ann.wrong_code(t)),
            envs,
        );
        assert_eq!(login.outcome, PamOutcome::AuthErr, "{}", login.output);
        login.module_messages()
    };
    let nl = [("LANG", "nl_NL.UTF-8")];
    assert!(said("lang=nl", &[]).contains("Tokencode: "));
    assert!(said("", &nl).contains("Tokencode: "));
    assert!(said("", &[]).contains("Verification code: "));
    assert!(said("lang=en", &nl).contains("Verification code: "));
    let lc_all = [("LANG", "nl_NL.UTF-8"), ("LC_ALL", "en_GB.UTF-8")];
    assert!(said("", &lc_all).contains("Verification code: "));
    assert!(said("", &[("LC_MESSAGES", "nl_BE.UTF-8")]).contains("Tokencode: "));

    // Messages follow too: the daemon cannot be reached.
    let gone = env.pam_stack(&format!(
        "auth required {} socket={} lang=nl\n",
        pam_module().display(),
        env.dir.join("no-daemon-here.sock").display()
    ));
    let login = login_with(&gone, "ann", "", "123456\n", &[]);
    assert_eq!(
        login.outcome,
        PamOutcome::AuthInfoUnavail,
        "{}",
        login.output
    );
    assert!(
        login
            .module_messages()
            .contains("De tokencode kan nu niet worden gecontroleerd."),
        "{}",
        login.output
    );
}

#[test]
fn a_prompt_with_spaces_in_brackets_is_shown_as_written() {
    if !require("[prompt=…]", PAM) {
        return;
    }
    let env = TestEnv::start("prompt_brackets");
    let t = settled_now(30, 10);
    let ann = env.enroll_active("ann", &[], t - 30);
    let stack = env.pam_stack(&otpd_line(&env, "[prompt=Uw code uit de app: ] lang=en"));
    let login = login_with(&stack, "ann", "", &format!("{}\n", ann.code_at(t)), &[]);
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    assert!(
        login.module_messages().starts_with("Uw code uit de app: "),
        "{}",
        login.output
    );
}

#[test]
fn debug_logs_each_step_but_never_the_code_and_bad_arguments_are_named() {
    if !require("debug", PAM) {
        return;
    }
    let env = TestEnv::start("debug_option");
    let t = settled_now(30, 10);
    let ann = env.enroll_active("ann", &[], t - 30);
    // libpam_wrapper prints pam_syslog lines on stderr as "SYSLOG(priority): text".
    let syslog = [("PAM_WRAPPER_DEBUGLEVEL", "4")];
    let lines = |login: &PamLogin, priority: u8| -> Vec<String> {
        login
            .output
            .stderr
            .lines()
            .filter_map(|line| line.split_once(&format!("SYSLOG({priority}): ")))
            .map(|(_, text)| text.to_owned())
            .collect()
    };

    // What the module logged (pam_syslog, on pamtester's stderr): no
    // remembered secret, the answers typed in this file's logins among them.
    // libpam_wrapper's prefix `PWRAP_…[<name> (PID)] - ` is left out (its
    // pid is no secret, whatever its digits).
    let no_secret_in = |login: &PamLogin, what: &str| {
        let logged: String = login
            .output
            .stderr
            .lines()
            .map(|line| match line.split_once("] - ") {
                Some((prefix, text)) if prefix.starts_with("PWRAP_") => text,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let leaked = secrets::leaked_into(&logged, &secrets::all());
        assert!(
            leaked.is_empty(),
            "{what}: the module logged {leaked:?}:\n{}",
            login.output
        );
    };
    let code = ann.code_at(t);
    let stack = env.pam_stack(&otpd_line(&env, "debug"));
    let login = login_with(&stack, "ann", "192.0.2.9", &format!("{code}\n"), &syslog);
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    let debug = lines(&login, 7);
    assert!(
        debug.iter().any(|l| l.contains("user \"ann\" service"))
            && debug.iter().any(|l| l.contains("outcome: Success")),
        "{debug:#?}\n{}",
        login.output
    );
    assert!(!login.output.stderr.contains(&code), "the code was logged");
    no_secret_in(&login, "debug, the right code");

    // A wrong code and a typo, with debug on: each step logged, neither
    // answer.
    let wrong = ann.wrong_code(t);
    let login = login_with(&stack, "ann", "192.0.2.9", &format!("{wrong}\n"), &syslog);
    assert_eq!(login.outcome, PamOutcome::AuthErr, "{}", login.output);
    assert!(
        lines(&login, 7)
            .iter()
            .any(|l| l.contains("user \"ann\" service")),
        "{}",
        login.output
    );
    no_secret_in(&login, "debug, a wrong code");
    let login = login_with(
        &stack,
        "ann",
        "192.0.2.9",
        &format!("{}x\n", ann.code_at(t + 30)),
        &syslog,
    );
    assert_ne!(login.outcome, PamOutcome::Success, "{}", login.output);
    no_secret_in(&login, "debug, a mistyped code");

    let quiet = env.pam_stack(&otpd_line(&env, ""));
    let login = login_with(
        &quiet,
        "ann",
        "192.0.2.9",
        &format!("{}\n", ann.wrong_code(t)),
        &syslog,
    );
    assert!(lines(&login, 7).is_empty(), "{}", login.output);

    let typo = env.pam_stack(&otpd_line(&env, "nulok lang=fr timeout=soon"));
    let login = login_with(
        &typo,
        "ann",
        "192.0.2.9",
        &format!("x{}\n", ann.wrong_code(t)),
        &syslog,
    );
    no_secret_in(&login, "arguments with typos, a mistyped wrong code");
    let warnings = lines(&login, 4).join("\n");
    assert!(
        warnings.contains("unknown argument \"nulok\""),
        "{warnings}"
    );
    assert!(warnings.contains("lang=\"fr\""), "{warnings}");
    assert!(warnings.contains("timeout=\"soon\""), "{warnings}");
    assert!(warnings.contains("did you mean \"nullok\""), "{warnings}");
}
