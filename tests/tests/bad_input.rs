//! Bad input gets a clear error and changes nothing, and the daemon keeps
//! serving everyone else.

use otpd_proto::{read_frame, ProtoError, Response, FRAME_HEADER_LEN};
use otpd_tests::{require, settled_now, Limits, PamOutcome, TestEnv, PAM};
use serde_json::Value;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// The list without the time of the last success.
fn without_last_success(list: Vec<Value>) -> Vec<Value> {
    list.into_iter()
        .map(|mut user| {
            user.as_object_mut().unwrap().remove("last_success");
            user
        })
        .collect()
}

#[test]
fn malformed_codes_and_unknown_users_are_refused_and_change_nothing() {
    if !require("malformed_codes_and_unknown_users", PAM) {
        return;
    }
    // Limits high enough that the bad attempts below never throttle alice.
    let env = TestEnv::start_with(
        "bad_cli_input",
        Limits {
            max_failures: 50,
            user_max_failures: 100,
            ..Limits::default()
        },
    );
    let t = settled_now(30, 10);
    let alice = env.enroll_active("alice", &[], t - 30);
    let before = env.list();

    let mut problems = Vec::new();
    for args in [
        vec!["verify", "alice", "12a456"],
        vec!["verify", "alice", "1234567"],
        vec!["verify", "alice", "12345"],
        vec!["verify", "alice", ""],
        vec!["verify", "no such", "123456"],
        vec!["confirm", "alice", "12a456"],
        vec!["unlock", "no such"],
        vec!["remove", "no such"],
    ] {
        let out = env.otpd(&args);
        if out.status.code() != Some(1) || out.stderr.trim().is_empty() {
            problems.push(format!(
                "otpd {args:?}: expected exit 1 with a reason, got {out}"
            ));
        }
    }
    // Names no account can have: refused (1) or a usage error (2), never more.
    let non_utf8 = OsStr::from_bytes(b"al\xffice");
    for user in [non_utf8, OsStr::new("")] {
        let out = env.otpd(&[OsStr::new("verify"), user, OsStr::new("123456")]);
        assert!(
            matches!(out.status.code(), Some(1) | Some(2)) && !out.stderr.trim().is_empty(),
            "user name {user:?}: {out}"
        );
    }
    let login = env
        .pam_service("")
        .login(non_utf8, &alice.code_at(t), "192.0.2.1", None);
    assert!(
        matches!(login.outcome, PamOutcome::AuthErr | PamOutcome::UserUnknown),
        "a non-UTF-8 PAM user: {}",
        login.output
    );

    // Not even a failure counter moves: none of this could be a guess.
    assert_eq!(env.list(), before, "bad input changed a record");
    env.otpd_expect(&["verify", "alice", &alice.code_at(t)], 0);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

enum Reaction {
    Answered(Response),
    Closed,
}

/// Sends `bytes` and waits (5 s at most) for an answer or a close; a daemon
/// that does neither fails the test.
fn send_raw(env: &TestEnv, bytes: &[u8]) -> Reaction {
    let mut stream = UnixStream::connect(&env.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // The daemon may close before taking every byte: that is an answer too.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    match read_frame::<Response>(&mut stream) {
        Ok(response) => Reaction::Answered(response),
        Err(ProtoError::Eof) => Reaction::Closed,
        Err(ProtoError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            Reaction::Closed
        }
        Err(e) => panic!("{bytes:?}: the daemon neither answered nor closed: {e}"),
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

#[test]
fn malformed_frames_get_an_error_or_a_close_and_the_daemon_serves_on() {
    if !require("malformed_frames", PAM) {
        return;
    }
    let env = TestEnv::start("bad_frames");
    let t = settled_now(30, 15);
    let alice = env.enroll_active("alice", &[], t - 30);
    let before = env.list();

    // Idle and half-sent clients stay connected during everything below.
    let _idle = UnixStream::connect(&env.socket).unwrap();
    let mut half = UnixStream::connect(&env.socket).unwrap();
    half.write_all(&[0, 0]).unwrap();
    let mut half_payload = UnixStream::connect(&env.socket).unwrap();
    half_payload
        .write_all(&frame(br#"{"v":2,"body":{"op":"li"#)[..FRAME_HEADER_LEN + 10])
        .unwrap();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("oversized header", u32::MAX.to_be_bytes().to_vec()),
        ("header one over the frame cap", ((otpd_proto::MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec()),
        ("header one over the request cap", ((otpd_proto::MAX_REQUEST_LEN + 1) as u32).to_be_bytes().to_vec()),
        ("an rhost of 4 KiB", frame(format!(r#"{{"v":2,"body":{{"op":"verify","user":"alice","code":"000000","service":"t","rhost":"{}"}}}}"#, "h".repeat(4096)).as_bytes())),
        ("empty frame", vec![0, 0, 0, 0]),
        ("garbage JSON", frame(b"this is not JSON {{{")),
        ("invalid UTF-8", frame(b"{\"v\":2,\"body\":{\"op\":\"unlock\",\"user\":\"\xff\xfe\"}}")),
        ("another version", frame(br#"{"v":1,"body":{"op":"list"}}"#)),
        ("an unknown op", frame(br#"{"v":2,"body":{"op":"drop_all"}}"#)),
        ("a number as code", frame(br#"{"v":2,"body":{"op":"verify","user":"alice","code":123456,"service":"t","rhost":""}}"#)),
        ("a truncated frame", frame(br#"{"v":2,"body":{"op":"list"}}"#)[..12].to_vec()),
    ];
    for (what, bytes) in cases {
        let started = Instant::now();
        let reaction = send_raw(&env, &bytes);
        let shown = match &reaction {
            Reaction::Answered(Response::Error { code, message }) => {
                assert!(!message.is_empty(), "{what}: an error without a message");
                format!("error {code:?}: {message}")
            }
            Reaction::Answered(other) => panic!("{what}: answered {other:?}"),
            Reaction::Closed => "closed".to_owned(),
        };
        println!("{what}: {shown} ({} ms)", started.elapsed().as_millis());
    }
    // A well-formed verify with letters in the code, straight to the daemon.
    match send_raw(
        &env,
        &otpd_proto::encode_frame(&serde_json::json!({
            "op": "verify", "user": "alice", "code": "12a456", "service": "t", "rhost": ""
        }))
        .unwrap(),
    ) {
        Reaction::Answered(Response::Verified { outcome }) => {
            assert_ne!(outcome, otpd_proto::VerifyOutcome::Accepted)
        }
        Reaction::Answered(Response::Error { .. }) | Reaction::Closed => {}
        Reaction::Answered(other) => panic!("letters in a code: answered {other:?}"),
    }

    let login = env.pam_login("alice", &alice.code_at(t), "192.0.2.1", "");
    println!(
        "login after the bad clients: {:?} in {} ms",
        login.outcome,
        login.elapsed().as_millis()
    );
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    assert_eq!(
        without_last_success(env.list()),
        without_last_success(before)
    );
}
