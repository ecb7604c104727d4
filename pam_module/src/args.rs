//! The module's arguments, as written after `pam_otpd.so` in a PAM service
//! file. Parsing is pure: problems come back as [`ArgWarning`]s for the
//! caller to log, and every bad value falls back to its default, so a typo
//! never leaves a login without its second factor.
#![forbid(unsafe_code)]

use crate::texts::Lang;
use std::fmt;
use std::time::Duration;

/// Where the daemon listens unless `socket=` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/otpd/otpd.sock";
/// Hard limit on one round trip to the daemon unless `timeout=` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest `timeout=`: beyond this sshd's LoginGraceTime and the person at the
/// terminal are better served by an error.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The account the daemon runs as unless `daemon_user=` says otherwise.
pub const DEFAULT_DAEMON_USER: &str = "otpd";

/// Arguments of `pam_google_authenticator`/`pam_unix` that this module does
/// not implement; named in their own warning so the administrator knows they
/// were recognised and not merely mistyped.
const NOT_SUPPORTED: &[&str] = &[
    "echo_verification_code",
    "no_increment_hotp",
    "secret",
    "user",
];

/// Every argument the module accepts, as written in a service file (with
/// `=` when it takes a value). The documentation test below keeps README.md
/// and `pam_otpd(8)` in step with this list, and the parser test keeps this
/// list in step with [`parse_args`].
pub const OPTIONS: &[&str] = &[
    "socket=",
    "timeout=",
    "nullok",
    "use_first_pass",
    "try_first_pass",
    "forward_pass",
    "prompt=",
    "lang=",
    "daemon_user=",
    "debug",
];

/// Where the code comes from: ask, `use_first_pass` or `try_first_pass`.
pub use otpd_proto::FirstPass;

/// The parsed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleArgs {
    /// Path of the daemon's socket.
    pub socket: String,
    /// Overall limit on one connect + request + answer.
    pub timeout: Duration,
    /// Users without an (active) enrolment are let through with PAM_IGNORE.
    pub nullok: bool,
    /// Extra LOG_DEBUG lines (never the code).
    pub debug: bool,
    /// Text of the echo-off prompt; `None`: the language's own.
    pub prompt: Option<String>,
    /// `lang=`; `None`: from the locale.
    pub lang: Option<Lang>,
    /// `use_first_pass` / `try_first_pass`.
    pub first_pass: FirstPass,
    /// One prompt for password and code; the password goes on as PAM_AUTHTOK.
    pub forward_pass: bool,
    /// Besides root, the only uid trusted to answer on the socket.
    pub daemon_user: String,
}

impl Default for ModuleArgs {
    fn default() -> Self {
        Self {
            socket: DEFAULT_SOCKET.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            nullok: false,
            debug: false,
            prompt: None,
            lang: None,
            first_pass: FirstPass::Prompt,
            forward_pass: false,
            daemon_user: DEFAULT_DAEMON_USER.to_owned(),
        }
    }
}

/// A problem with one argument; the argument was ignored or its default used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgWarning {
    /// Not an argument of this module.
    Unknown(String),
    /// An argument of a related module that this one does not implement.
    NotSupported(String),
    /// `timeout=` that is not a number of seconds in (0, 60].
    BadTimeout(String),
    /// `socket=` that is empty or not an absolute path.
    BadSocket(String),
    /// `prompt=` or `daemon_user=` with nothing after the `=`.
    Empty(&'static str),
    /// `lang=` that is not `en` or `nl`.
    BadLang(String),
}

impl fmt::Display for ArgWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgWarning::Unknown(arg) => match suggestion(arg) {
                Some(option) => write!(
                    f,
                    "unknown argument \"{arg}\" ignored (did you mean \"{option}\"?)"
                ),
                None => write!(f, "unknown argument \"{arg}\" ignored"),
            },
            ArgWarning::NotSupported(arg) => {
                write!(
                    f,
                    "argument \"{arg}\" is not supported by pam_otpd; ignored"
                )
            }
            ArgWarning::BadTimeout(value) => write!(
                f,
                "timeout=\"{value}\" is not a number of seconds between 0 and {}; using {}",
                MAX_TIMEOUT.as_secs(),
                DEFAULT_TIMEOUT.as_secs()
            ),
            ArgWarning::BadSocket(value) => write!(
                f,
                "socket=\"{value}\" is not an absolute path; using {DEFAULT_SOCKET}"
            ),
            ArgWarning::Empty(key) => write!(f, "{key}= is empty; using the default"),
            ArgWarning::BadLang(value) => write!(
                f,
                "lang=\"{value}\" is not \"en\" or \"nl\"; using the locale's language"
            ),
        }
    }
}

/// The accepted argument nearest to a misspelt one, if it is near enough
/// (at most two edits from the name before any `=`).
fn suggestion(arg: &str) -> Option<&'static str> {
    let name = arg.split_once('=').map_or(arg, |(name, _)| name);
    OPTIONS
        .iter()
        .map(|option| {
            (
                strsim::levenshtein(name, option.trim_end_matches('=')),
                *option,
            )
        })
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, option)| option)
}

/// Parses the arguments libpam hands over (already split on whitespace, with
/// `[key=text with spaces]` delivered as one argument `key=text with spaces`).
pub fn parse_args<S: AsRef<str>>(args: &[S]) -> (ModuleArgs, Vec<ArgWarning>) {
    let mut parsed = ModuleArgs::default();
    let mut warnings = Vec::new();
    for arg in args {
        let arg = strip_brackets(arg.as_ref());
        let (key, value) = match arg.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (arg, None),
        };
        match (key, value) {
            ("nullok", None) => parsed.nullok = true,
            ("debug", None) => parsed.debug = true,
            // As in pam_unix, use_first_pass wins over try_first_pass.
            ("use_first_pass", None) => parsed.first_pass = FirstPass::Use,
            ("try_first_pass", None) => {
                if parsed.first_pass != FirstPass::Use {
                    parsed.first_pass = FirstPass::Try
                }
            }
            ("forward_pass", None) => parsed.forward_pass = true,
            ("lang", Some(text)) => match Lang::parse(text) {
                Some(lang) => parsed.lang = Some(lang),
                None => warnings.push(ArgWarning::BadLang(text.to_owned())),
            },
            ("socket", Some(path)) => {
                if path.starts_with('/') {
                    parsed.socket = path.to_owned();
                } else {
                    warnings.push(ArgWarning::BadSocket(path.to_owned()));
                }
            }
            ("timeout", Some(text)) => match parse_timeout(text) {
                Some(timeout) => parsed.timeout = timeout,
                None => warnings.push(ArgWarning::BadTimeout(text.to_owned())),
            },
            ("prompt", Some("")) => warnings.push(ArgWarning::Empty("prompt")),
            ("prompt", Some(text)) => parsed.prompt = Some(text.to_owned()),
            ("daemon_user", Some("")) => warnings.push(ArgWarning::Empty("daemon_user")),
            ("daemon_user", Some(name)) => parsed.daemon_user = name.to_owned(),
            (key, _) if NOT_SUPPORTED.contains(&key) => {
                warnings.push(ArgWarning::NotSupported(arg.to_owned()))
            }
            _ => warnings.push(ArgWarning::Unknown(arg.to_owned())),
        }
    }
    (parsed, warnings)
}

/// libpam (since 0.99) strips the brackets of `[prompt=Two words]` itself;
/// an older or foreign libpam might not, so a bracketed argument is unwrapped.
fn strip_brackets(arg: &str) -> &str {
    arg.strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(arg)
}

/// Seconds as an integer or a decimal (`3`, `0.5`), in (0, [`MAX_TIMEOUT`]].
fn parse_timeout(text: &str) -> Option<Duration> {
    // f64::from_str also accepts "inf", "NaN" and "1e3"; only digits and one
    // dot are a number of seconds here.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let seconds: f64 = text.parse().ok()?;
    let timeout = Duration::try_from_secs_f64(seconds).ok()?;
    (!timeout.is_zero() && timeout <= MAX_TIMEOUT).then_some(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> (ModuleArgs, Vec<ArgWarning>) {
        parse_args(args)
    }

    #[test]
    fn no_arguments_give_the_defaults() {
        let (args, warnings) = parse(&[]);
        assert_eq!(args, ModuleArgs::default());
        assert!(warnings.is_empty());
        assert_eq!(args.socket, "/run/otpd/otpd.sock");
        assert_eq!(args.timeout, Duration::from_secs(3));
        assert_eq!(args.prompt, None);
        assert_eq!(args.lang, None);
        assert_eq!(args.first_pass, FirstPass::Prompt);
        assert_eq!(args.daemon_user, "otpd");
        assert!(!args.nullok && !args.debug && !args.forward_pass);
    }

    #[test]
    fn every_option_is_read() {
        let (args, warnings) = parse(&[
            "nullok",
            "debug",
            "socket=/tmp/x/otpd.sock",
            "timeout=7",
            "prompt=Code:",
            "daemon_user=_otpd",
            "lang=nl",
            "try_first_pass",
        ]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            args,
            ModuleArgs {
                socket: "/tmp/x/otpd.sock".into(),
                timeout: Duration::from_secs(7),
                nullok: true,
                debug: true,
                prompt: Some("Code:".into()),
                lang: Some(Lang::Nl),
                first_pass: FirstPass::Try,
                forward_pass: false,
                daemon_user: "_otpd".into(),
            }
        );
    }

    #[test]
    fn decimal_timeouts_are_accepted() {
        assert_eq!(
            parse(&["timeout=0.5"]).0.timeout,
            Duration::from_millis(500)
        );
        assert_eq!(
            parse(&["timeout=2.25"]).0.timeout,
            Duration::from_millis(2250)
        );
        assert_eq!(parse(&["timeout=60"]).0.timeout, Duration::from_secs(60));
    }

    #[test]
    fn bad_timeouts_fall_back_to_the_default_with_a_warning() {
        for bad in [
            "", "0", "0.0", "-1", "61", "abc", "3s", "inf", "NaN", "1e1", "1.2.3", ".",
        ] {
            let arg = format!("timeout={bad}");
            let (args, warnings) = parse(&[&arg]);
            assert_eq!(args.timeout, DEFAULT_TIMEOUT, "{arg}");
            assert_eq!(warnings, vec![ArgWarning::BadTimeout(bad.into())], "{arg}");
        }
        let message = ArgWarning::BadTimeout("abc".into()).to_string();
        assert!(
            message.contains("\"abc\"") && message.contains("using 3"),
            "{message}"
        );
    }

    #[test]
    fn prompt_with_spaces_from_the_bracket_form() {
        // libpam delivers `[prompt=One-time code: ]` as one argument.
        let (args, warnings) = parse(&["prompt=One-time code: "]);
        assert!(warnings.is_empty());
        assert_eq!(args.prompt.as_deref(), Some("One-time code: "));
        // A libpam that did not strip the brackets.
        let (args, _) = parse(&["[prompt=Your token: ]"]);
        assert_eq!(args.prompt.as_deref(), Some("Your token: "));
        // An `=` inside the text belongs to the text.
        assert_eq!(parse(&["prompt=a=b"]).0.prompt.as_deref(), Some("a=b"));
    }

    #[test]
    fn unknown_arguments_are_named_and_ignored() {
        let (args, warnings) = parse(&["nulok", "debug"]);
        assert!(args.debug && !args.nullok);
        assert_eq!(warnings, vec![ArgWarning::Unknown("nulok".into())]);
        assert_eq!(
            warnings[0].to_string(),
            "unknown argument \"nulok\" ignored (did you mean \"nullok\"?)"
        );
        assert_eq!(
            ArgWarning::Unknown("lnag=nl".into()).to_string(),
            "unknown argument \"lnag=nl\" ignored (did you mean \"lang=\"?)"
        );
        assert_eq!(
            ArgWarning::Unknown("frobnicate".into()).to_string(),
            "unknown argument \"frobnicate\" ignored"
        );
        // A flag given a value, or an option without one, is not what it looks like.
        let (args, warnings) = parse(&["nullok=yes", "socket"]);
        assert!(!args.nullok);
        assert_eq!(
            warnings,
            vec![
                ArgWarning::Unknown("nullok=yes".into()),
                ArgWarning::Unknown("socket".into())
            ]
        );
    }

    #[test]
    fn related_modules_arguments_are_recognised_as_unsupported() {
        let (_, warnings) = parse(&["echo_verification_code"]);
        assert_eq!(
            warnings,
            vec![ArgWarning::NotSupported("echo_verification_code".into())]
        );
        assert!(warnings[0].to_string().contains("not supported"));
    }

    #[test]
    fn first_pass_options() {
        assert_eq!(parse(&["use_first_pass"]).0.first_pass, FirstPass::Use);
        assert_eq!(parse(&["try_first_pass"]).0.first_pass, FirstPass::Try);
        // use_first_pass wins, in either order, as in pam_unix.
        for args in [
            ["use_first_pass", "try_first_pass"],
            ["try_first_pass", "use_first_pass"],
        ] {
            let (parsed, warnings) = parse(&args);
            assert_eq!(parsed.first_pass, FirstPass::Use, "{args:?}");
            assert!(warnings.is_empty());
        }
        let (parsed, warnings) = parse(&["forward_pass"]);
        assert!(parsed.forward_pass && warnings.is_empty());
        // Together: the password and code come from PAM_AUTHTOK.
        let (parsed, warnings) = parse(&["use_first_pass", "forward_pass"]);
        assert_eq!(parsed.first_pass, FirstPass::Use);
        assert!(parsed.forward_pass && warnings.is_empty());
        // Flags take no value.
        let (parsed, warnings) = parse(&["forward_pass=1"]);
        assert!(!parsed.forward_pass);
        assert_eq!(warnings, vec![ArgWarning::Unknown("forward_pass=1".into())]);
    }

    #[test]
    fn lang_option() {
        assert_eq!(parse(&["lang=nl"]).0.lang, Some(Lang::Nl));
        assert_eq!(parse(&["lang=en"]).0.lang, Some(Lang::En));
        let (parsed, warnings) = parse(&["lang=fr"]);
        assert_eq!(parsed.lang, None);
        assert_eq!(warnings, vec![ArgWarning::BadLang("fr".into())]);
        assert!(warnings[0].to_string().contains("\"fr\""));
    }

    #[test]
    fn relative_or_empty_socket_and_empty_values_keep_the_defaults() {
        let (args, warnings) = parse(&["socket=otpd.sock", "socket=", "prompt=", "daemon_user="]);
        assert_eq!(args, ModuleArgs::default());
        assert_eq!(
            warnings,
            vec![
                ArgWarning::BadSocket("otpd.sock".into()),
                ArgWarning::BadSocket("".into()),
                ArgWarning::Empty("prompt"),
                ArgWarning::Empty("daemon_user"),
            ]
        );
    }

    #[test]
    fn every_listed_option_is_parsed_and_documented() {
        let readme = include_str!("../../README.md");
        let manual = include_str!("../../packaging/man/pam_otpd.8");
        for option in OPTIONS {
            let arg = match *option {
                "socket=" => "socket=/run/x.sock".to_owned(),
                "timeout=" => "timeout=2".to_owned(),
                "lang=" => "lang=nl".to_owned(),
                with_value if with_value.ends_with('=') => format!("{with_value}x"),
                flag => flag.to_owned(),
            };
            let (parsed, warnings) = parse(&[&arg]);
            assert!(warnings.is_empty(), "{arg}: {warnings:?}");
            assert_ne!(parsed, ModuleArgs::default(), "{arg} changed nothing");
            let name = option.trim_end_matches('=');
            assert!(
                readme.contains(&format!("`{option}")),
                "README.md does not document {option}"
            );
            // In the manual page: `.B name` or `.BI name= VALUE`.
            let in_manual = manual.lines().any(|line| {
                line.starts_with(".B")
                    && line.split_whitespace().nth(1).is_some_and(|word| {
                        word == *option || (option.ends_with('=') && word.starts_with(option))
                    })
            });
            assert!(in_manual, "pam_otpd.8 does not document {name}");
        }
    }

    #[test]
    fn the_last_occurrence_wins() {
        let (args, _) = parse(&["timeout=1", "timeout=2"]);
        assert_eq!(args.timeout, Duration::from_secs(2));
    }
}
