//! [`Outbox`]: a real text-message sender for the daemon's `[sms] command`
//! (a shell script) that appends each text, `to=NUMBER` and the message,
//! to a file the test reads the texted codes from; and senders that never
//! deliver ([`broken_sender`]).

use crate::secrets;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a text may take to arrive.
const TEXT_TIMEOUT: Duration = Duration::from_secs(10);

/// The sender script and the file it writes, in a directory of the test's.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// The sender, for `[sms] command` (mode 0755).
    pub script: PathBuf,
    /// The file the texts are appended to.
    pub file: PathBuf,
    dir: PathBuf,
}

impl Outbox {
    /// Writes the sender `dir/send-sms`. While `dir/hang` exists
    /// ([`Outbox::hang`]) it instead writes its pid to `dir/sender.pid`,
    /// starts `sleep 600` in the background (pid in `dir/child.pid`) and
    /// waits for it: a sender stuck on its provider, with a helper
    /// process of its own.
    pub fn create(dir: &Path) -> Outbox {
        std::fs::create_dir_all(dir).expect("create the outbox's dir");
        let file = dir.join("outbox");
        let script = dir.join("send-sms");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 if [ -e {dir}/hang ]; then\n\
                 \techo $$ > {dir}/sender.pid\n\
                 \tsleep 600 &\n\
                 \techo $! > {dir}/child.pid\n\
                 \twait\n\
                 fi\n\
                 {{ printf 'to=%s\\n' \"$1\"; cat; printf '\\n'; }} >> {file}\n",
                dir = dir.display(),
                file = file.display()
            ),
        )
        .expect("write the sender");
        make_executable(&script);
        Outbox {
            script,
            file,
            dir: dir.to_path_buf(),
        }
    }

    /// From now on the sender hangs (see [`Outbox::create`]).
    pub fn hang(&self) {
        std::fs::write(self.dir.join("hang"), b"").expect("create the hang flag");
    }

    /// The pid the hanging sender wrote for itself (`sender.pid`) and for
    /// its child (`child.pid`).
    pub fn hanging_pids(&self) -> (u32, u32) {
        let read = |name: &str| {
            let path = self.dir.join(name);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (did the sender run?)", path.display()));
            text.trim()
                .parse()
                .unwrap_or_else(|_| panic!("no pid in {}: {text:?}", path.display()))
        };
        (read("sender.pid"), read("child.pid"))
    }

    /// Every text so far, in order: the number and the 6-digit code in the
    /// message (remembered as a secret), once the sender has written it.
    pub fn texts(&self) -> Vec<(String, Option<String>)> {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        text.split("to=")
            .filter(|m| !m.is_empty())
            .map(|message| {
                let number = message.lines().next().unwrap_or("").to_owned();
                let code = message
                    .lines()
                    .skip(1)
                    .flat_map(|line| line.split(|c: char| !c.is_ascii_digit()))
                    .find(|w| w.len() == 6)
                    .map(|code| {
                        secrets::remember(code);
                        code.to_owned()
                    });
                (number, code)
            })
            .collect()
    }

    /// How many texts were sent so far.
    pub fn count(&self) -> usize {
        self.texts().len()
    }

    /// Text number `n` (from 1) as (number, code), waiting up to 10 s for
    /// it to be written whole.
    pub fn text(&self, n: usize) -> (String, String) {
        let started = Instant::now();
        loop {
            if let Some((number, Some(code))) = self.texts().get(n - 1) {
                return (number.clone(), code.clone());
            }
            assert!(
                started.elapsed() < TEXT_TIMEOUT,
                "text {n} never came: {:?}",
                std::fs::read_to_string(&self.file).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The code of text number `n` (from 1), waiting for it.
    pub fn code(&self, n: usize) -> String {
        self.text(n).1
    }
}

/// How a sender of [`broken_sender`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// Says "provider said no" on stderr and exits 3.
    Fails,
    /// The same, leaving a child (`sleep 30`) that holds its stderr open.
    FailsLeavingAChild,
    /// Never ends by itself (`exec sleep 30`).
    Hangs,
}

/// A sender for `[sms] command` that never delivers, failing as `how`
/// says: `dir/send-sms-broken` (mode 0755).
pub fn broken_sender(dir: &Path, how: Broken) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create the sender's dir");
    let script = dir.join("send-sms-broken");
    let body = match how {
        Broken::Fails => "#!/bin/sh\necho 'provider said no' >&2\nexit 3\n",
        Broken::FailsLeavingAChild => {
            "#!/bin/sh\nsleep 30 &\necho 'provider said no' >&2\nexit 3\n"
        }
        Broken::Hangs => "#!/bin/sh\nexec sleep 30\n",
    };
    std::fs::write(&script, body).expect("write the sender");
    make_executable(&script);
    script
}

fn make_executable(script: &Path) {
    std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the sender");
}
