//! "Approve on your phone" without a browser: the daemon's config, the
//! phone app's API spoken over HTTP with a [`SoftKey`] as the phone's
//! passkey ([`Phone`]), and a login through the real libpam that is
//! driven prompt by prompt ([`Login`]): Enter, the number read from the
//! prompt, Enter again.

use crate::env::TestEnv;
use crate::pam::{PamOutcome, PamService};
use crate::process::Output;
use crate::secrets;
use crate::softkey::SoftKey;
use crate::webclient;
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The origin of the pages (`[web] public_url` of [`crate::pages::WEB_SECTION`]),
/// which the passkey is bound to: its host is the relying party.
pub const ORIGIN: &str = crate::pages::PUBLIC_URL;

/// The code prompt of a user with an active phone.
pub const CODE_OR_APPROVE: &str = "Verification code, or press Enter to approve on your phone: ";

/// The pages ([`crate::pages::WEB_SECTION`]) and `[approve]` with requests
/// valid for `timeout` (TOML, `"10s"`), `extra` lines appended to it.
pub fn config(timeout: &str, extra: &str) -> String {
    format!(
        "{}\n[approve]\ncontact = \"mailto:admin@example.org\"\ntimeout = {timeout}\n{extra}",
        crate::pages::WEB_SECTION
    )
}

/// One API call: `POST /approve/api/{op}` with `body` as JSON, on the
/// pages at 127.0.0.1:`port`. The status and the JSON answer (`Null` when
/// the body is not JSON).
pub fn api(port: u16, op: &str, body: &Value) -> (u16, Value) {
    let answer = webclient::request(
        port,
        "POST",
        &format!("/approve/api/{op}"),
        "Content-Type: application/json\r\n",
        &body.to_string(),
    );
    let value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
    (answer.status, value)
}

/// `otpd enroll USER --approver --link`: the pairing link it printed
/// (its token remembered as a secret).
pub fn pairing_link(env: &TestEnv, user: &str) -> String {
    let out = env.otpd_expect(&["enroll", user, "--approver", "--link"], 0);
    let link = out
        .stdout
        .split_whitespace()
        .find(|w| w.contains("/approve/pair/"))
        .unwrap_or_else(|| panic!("otpd enroll --approver --link printed no pairing link:\n{out}"))
        .to_owned();
    secrets::remember(token_of(&link));
    link
}

/// The token of a pairing link.
pub fn token_of(link: &str) -> &str {
    link.rsplit_once("/approve/pair/")
        .map(|(_, token)| token)
        .unwrap_or_else(|| panic!("not a pairing link: {link}"))
}

/// A paired phone: its app token and its passkey, talking to the pages on
/// 127.0.0.1:`port`.
#[derive(Debug, Clone)]
pub struct Phone {
    /// The pages it talks to.
    pub port: u16,
    /// The app token pair/finish gave.
    pub app_token: String,
    /// Its name (pair/finish's `phone`).
    pub name: String,
    /// Its passkey.
    pub key: SoftKey,
}

impl Phone {
    /// Pairs through the API with a new [`SoftKey`]: pair/begin with the
    /// link's token, the passkey made, pair/finish. The phone is pending
    /// (its test request not approved yet).
    pub fn pair(port: u16, link: &str) -> Phone {
        let token = token_of(link);
        let (status, begun) = api(port, "pair/begin", &json!({ "token": token }));
        assert_eq!(status, 200, "pair/begin: {begun}");
        let mut key = SoftKey::new(ORIGIN);
        let credential = key.register(&begun);
        let (status, finished) = api(
            port,
            "pair/finish",
            &json!({ "token": token, "credential": credential }),
        );
        assert_eq!(status, 200, "pair/finish: {finished}");
        let app_token = finished["app_token"]
            .as_str()
            .unwrap_or_else(|| panic!("pair/finish gave no app token: {finished}"))
            .to_owned();
        secrets::remember(&app_token);
        Phone {
            port,
            app_token,
            name: finished["phone"].as_str().unwrap_or_default().to_owned(),
            key,
        }
    }

    /// A pairing link for `user`, [`Phone::pair`], and the test request
    /// approved: an active phone.
    pub fn pair_active(env: &TestEnv, port: u16, user: &str) -> Phone {
        let mut phone = Phone::pair(port, &pairing_link(env, user));
        let listed = phone.requests();
        let test = listed["requests"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["test"] == true))
            .unwrap_or_else(|| panic!("no test request after pairing: {listed}"))
            .clone();
        let (status, answer) = phone.approve(&test, None);
        assert_eq!(status, 200, "approving the test request: {answer}");
        phone
    }

    /// A call with the app token added to `body`.
    pub fn call(&self, op: &str, mut body: Value) -> (u16, Value) {
        body["app_token"] = json!(self.app_token);
        api(self.port, op, &body)
    }

    /// `requests`: must answer 200.
    pub fn requests(&self) -> Value {
        let (status, listed) = self.call("requests", json!({}));
        assert_eq!(status, 200, "requests: {listed}");
        listed
    }

    /// The first open login request (not a test) the app lists, waiting up
    /// to `limit` for one.
    pub fn wait_request(&self, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let listed = self.requests();
            if let Some(r) = listed["requests"]
                .as_array()
                .and_then(|r| r.iter().find(|r| r["test"] == false))
            {
                return r.clone();
            }
            assert!(
                started.elapsed() < limit,
                "no login request listed within {limit:?}: {listed}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// approve/begin: the number picked for request `id`.
    pub fn begin(&self, id: &str, number: u8) -> (u16, Value) {
        self.call("approve/begin", json!({ "request": id, "number": number }))
    }

    /// approve/finish with `credential`.
    pub fn finish(&self, id: &str, credential: &Value) -> (u16, Value) {
        self.call(
            "approve/finish",
            json!({ "request": id, "credential": credential }),
        )
    }

    /// approve/begin with `number` (the request's only choice when
    /// `None`), which must answer 200, then the passkey's assertion over
    /// its challenge sent with approve/finish: that call's answer.
    pub fn approve(&mut self, request: &Value, number: Option<u8>) -> (u16, Value) {
        let id = request["id"].as_str().expect("a request id").to_owned();
        let number = number.unwrap_or_else(|| {
            let choices = request["choices"].as_array().expect("choices");
            assert_eq!(choices.len(), 1, "not a single choice: {request}");
            u8::try_from(choices[0].as_u64().expect("a number")).expect("a small number")
        });
        let (status, options) = self.begin(&id, number);
        assert_eq!(status, 200, "approve/begin {id} with {number}: {options}");
        let credential = self.key.assert(&options);
        self.finish(&id, &credential)
    }

    /// `deny`.
    pub fn deny(&self, id: &str, not_me: bool) -> (u16, Value) {
        self.call("deny", json!({ "request": id, "not_me": not_me }))
    }
}

/// The ID of a listed request.
pub fn id_of(request: &Value) -> String {
    request["id"].as_str().expect("a request id").to_owned()
}

/// Text a reader thread appends to.
type Shared = Arc<Mutex<String>>;

/// A login through the real libpam (pamtester under libpam_wrapper),
/// answered prompt by prompt: each answer is written only once its prompt
/// has appeared (pam_misc's conversation reads whatever the pipe holds).
pub struct Login {
    child: Child,
    stdin: Option<ChildStdin>,
    started: Instant,
    /// stdout and stderr as they came, interleaved.
    said: Shared,
    stdout: Shared,
    stderr: Shared,
    readers: Vec<std::thread::JoinHandle<()>>,
    /// Where in `said` the next [`Login::wait_for`] looks from.
    seen: usize,
}

impl Login {
    /// Starts the login of `user` from `rhost` on `service`.
    pub fn start(service: &PamService, user: &str, rhost: &str) -> Login {
        let mut cmd = service.command(OsStr::new(user), rhost, None);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("run pamtester");
        let said = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        let pipes: [(Box<dyn Read + Send>, Shared); 2] = [
            (
                Box::new(child.stdout.take().expect("stdout")),
                stdout.clone(),
            ),
            (
                Box::new(child.stderr.take().expect("stderr")),
                stderr.clone(),
            ),
        ];
        for (mut pipe, own) in pipes {
            let said = said.clone();
            readers.push(std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&chunk[..n]);
                    said.lock().unwrap().push_str(&text);
                    own.lock().unwrap().push_str(&text);
                }
            }));
        }
        Login {
            stdin: child.stdin.take(),
            child,
            started,
            said,
            stdout,
            stderr,
            readers,
            seen: 0,
        }
    }

    /// Everything said so far.
    pub fn said(&self) -> String {
        self.said.lock().unwrap().clone()
    }

    /// Waits (up to `limit`) until `marker` appears after what earlier
    /// waits consumed; returns the text up to and including it.
    pub fn wait_for(&mut self, marker: &str, limit: Duration) -> String {
        let begun = Instant::now();
        loop {
            let said = self.said();
            if let Some(at) = said[self.seen..].find(marker) {
                let end = self.seen + at + marker.len();
                let text = said[self.seen..end].to_owned();
                self.seen = end;
                return text;
            }
            if begun.elapsed() > limit || matches!(self.child.try_wait(), Ok(Some(_))) {
                // One more look: the last output may have come with the exit.
                std::thread::sleep(Duration::from_millis(100));
                let said = self.said();
                if said[self.seen..].contains(marker) {
                    continue;
                }
                panic!("the login never said {marker:?} (within {limit:?}); it said:\n{said}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes `line` and a newline (an answer).
    pub fn answer(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .expect("write an answer to pamtester");
    }

    /// Waits for the code-or-approve prompt, presses Enter, and reads the
    /// number from the prompt that follows.
    pub fn press_enter_for_number(&mut self, limit: Duration) -> u8 {
        self.wait_for(CODE_OR_APPROVE, limit);
        self.answer("");
        self.wait_for("to approve, then press Enter: ", limit);
        number_in(&self.said()).unwrap_or_else(|| panic!("no number in:\n{}", self.said()))
    }

    /// Closes stdin and waits (up to `limit`) for pamtester's end.
    pub fn finish(mut self, limit: Duration) -> Finished {
        drop(self.stdin.take());
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if self.started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the login did not end within {limit:?}; it said:\n{}",
                    self.said()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = self.started.elapsed();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let output = Output {
            status,
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
            elapsed,
            stderr_times: Vec::new(),
        };
        Finished {
            outcome: PamOutcome::from_output(&output),
            output,
        }
    }
}

impl Drop for Login {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A login that ended.
#[derive(Debug)]
pub struct Finished {
    /// What `pam_authenticate` returned.
    pub outcome: PamOutcome,
    /// pamtester's run.
    pub output: Output,
}

impl Finished {
    /// Everything it said.
    pub fn said(&self) -> String {
        self.output.printed()
    }
}

/// The number of the last "choose NN to approve" in `text`.
pub fn number_in(text: &str) -> Option<u8> {
    let (_, rest) = text.rsplit_once("choose ")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The daemon's audit lines (`otpd-audit seq=…`) with `op="OP"`.
pub fn audit_lines(env: &TestEnv, op: &str) -> Vec<String> {
    let marker = format!("op=\"{op}\"");
    env.log()
        .lines()
        .filter(|l| l.contains("otpd-audit ") && l.contains(&marker))
        .map(str::to_owned)
        .collect()
}
