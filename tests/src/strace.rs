//! Reading an `strace -f -yy -s N` log: which system call, on which file
//! or socket, completed in which order.

/// One system call from the log, unfinished/resumed halves joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syscall {
    /// Thread id.
    pub tid: u32,
    /// `fdatasync`, `write` …
    pub name: String,
    /// What `-yy` printed for the first argument's fd (`/path/db`,
    /// `UNIX-STREAM:[1->2,"/path/otpd.sock"]`), if it is an fd.
    pub fd: Option<String>,
    /// The arguments as printed (strings included, up to `-s`).
    pub args: String,
    /// The return value (`0`, `42`, `-1 EIO (…)`), if the call returned.
    pub result: Option<String>,
    /// Line (0-based) where the call started.
    pub start_line: usize,
    /// Line where it returned (the same line unless it was interrupted).
    pub end_line: usize,
}

impl Syscall {
    /// The call returned without an error.
    pub fn succeeded(&self) -> bool {
        self.result
            .as_deref()
            .is_some_and(|r| !r.starts_with('-') && !r.starts_with('?'))
    }

    /// Its fd is a Unix stream socket of the daemon at `socket_path`.
    pub fn on_socket(&self, socket_path: &str) -> bool {
        self.fd
            .as_deref()
            .is_some_and(|fd| fd.starts_with("UNIX") && fd.contains(socket_path))
    }

    /// Its fd is a file under `dir/`.
    pub fn on_file_under(&self, dir: &str) -> bool {
        self.fd
            .as_deref()
            .is_some_and(|fd| fd.starts_with(&format!("{}/", dir.trim_end_matches('/'))))
    }
}

/// Parses a whole `strace -f` log. Calls are in start order.
pub fn parse(log: &str) -> Vec<Syscall> {
    let mut calls: Vec<Syscall> = Vec::new();
    // Index in `calls` of each thread's unfinished call.
    let mut pending: std::collections::HashMap<u32, usize> = Default::default();
    for (line_no, line) in log.lines().enumerate() {
        let Some((tid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(tid) = tid.parse::<u32>() else {
            continue;
        };
        let rest = rest.trim_start();
        if rest.starts_with("---") || rest.starts_with("+++") {
            continue;
        }
        if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((_name, tail)) = resumed.split_once(" resumed>") else {
                continue;
            };
            if let Some(index) = pending.remove(&tid) {
                let (args, result) = split_result(tail);
                let call = &mut calls[index];
                call.args.push_str(args);
                call.result = result;
                call.end_line = line_no;
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let (args, result, unfinished) = match args.strip_suffix(" <unfinished ...>") {
            Some(args) => (args, None, true),
            None => {
                let (args, result) = split_result(args);
                (args, result, false)
            }
        };
        calls.push(Syscall {
            tid,
            name: name.to_owned(),
            fd: fd_description(args),
            args: args.to_owned(),
            result,
            start_line: line_no,
            end_line: line_no,
        });
        if unfinished {
            pending.insert(tid, calls.len() - 1);
        }
    }
    calls
}

/// Splits `args) = result` at the last `)` followed by ` = ` (strace pads
/// a resumed call's `)` and `=` apart with spaces: `<... fdatasync
/// resumed>)          = 0`).
fn split_result(tail: &str) -> (&str, Option<String>) {
    let found = tail.rmatch_indices(')').find_map(|(i, _)| {
        tail[i + 1..]
            .trim_start()
            .strip_prefix("= ")
            .map(|result| (i, result))
    });
    match found {
        Some((i, result)) => (&tail[..i], Some(result.trim().to_owned())),
        None => (tail, None),
    }
}

/// `12</state/db>, …` → `/state/db`; `7<UNIX-STREAM:[1->2,"/s"]>` → `UNIX-STREAM:[1->2,"/s"]`.
fn fd_description(args: &str) -> Option<String> {
    let digits = args.chars().take_while(char::is_ascii_digit).count();
    let inner = args[digits..].strip_prefix('<')?;
    if digits == 0 {
        return None;
    }
    // The description may contain '>' (in "1->2"); it ends at a '>' that is
    // followed by the end, ',' or ')'.
    let bytes = inner.as_bytes();
    (0..bytes.len())
        .find(|&i| {
            bytes[i] == b'>'
                && matches!(
                    bytes.get(i + 1),
                    None | Some(b',') | Some(b')') | Some(b' ')
                )
        })
        .map(|end| inner[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = r#"101 recvfrom(12<UNIX-STREAM:[555->556,"/tmp/t/otpd.sock"]>, "\0\0\0\34{\"v\":1,\"body\":{\"op\":\"verify\"}}", 8192, 0, NULL, NULL) = 32
102 fdatasync(9</tmp/t/state/db> <unfinished ...>
101 write(2</tmp/t/otpd.log>, "audit", 5) = 5
102 <... fdatasync resumed>)          = 0
101 write(12<UNIX-STREAM:[555->556,"/tmp/t/otpd.sock"]>, "\0\0\0001{\"v\":1,\"body\":{\"kind\":\"verified\"}}", 53) = 53
101 --- SIGCHLD {si_signo=SIGCHLD} ---
101 +++ exited with 0 +++
"#;

    #[test]
    fn joins_interrupted_calls_and_reads_fds() {
        let calls = parse(LOG);
        assert_eq!(calls.len(), 4);
        let sync = &calls[1];
        assert_eq!(sync.name, "fdatasync");
        assert_eq!(sync.fd.as_deref(), Some("/tmp/t/state/db"));
        assert!(sync.succeeded());
        assert_eq!((sync.start_line, sync.end_line), (1, 3));
        assert!(sync.on_file_under("/tmp/t/state"));
        assert!(!sync.on_file_under("/tmp/t/sta"));
        let reply = &calls[3];
        assert!(reply.on_socket("/tmp/t/otpd.sock"));
        assert_eq!(reply.result.as_deref(), Some("53"));
        assert!(!calls[2].on_socket("/tmp/t/otpd.sock"));
        assert!(calls[0].args.contains(r#"\"op\":\"verify\""#));
    }
}
