//! The admin commands: enroll, confirm, verify, list, remove, unlock.

use super::{qr, CliError, Client};
use otpd_proto::{
    Algorithm, EnrollParams, Enrollment, Request, Response, SecretText, TokenKind, UserState,
    UserSummary, VerifyOutcome,
};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

/// Options of `otpd enroll`.
#[derive(Debug, Default, clap::Args)]
pub struct EnrollOptions {
    /// The user to enrol
    pub user: String,
    /// Name shown in the app [default: config, else the host name]
    #[arg(long)]
    pub issuer: Option<String>,
    /// Digits per code: 6 or 8
    #[arg(long, value_parser = parse_digits)]
    pub digits: Option<u8>,
    /// HMAC algorithm: SHA1, SHA256 or SHA512 (only SHA1 works with every app)
    #[arg(long, value_parser = parse_algorithm)]
    pub algorithm: Option<Algorithm>,
    /// Seconds per code (15-300)
    #[arg(long, value_parser = clap::value_parser!(u64).range(15..=300))]
    pub period: Option<u64>,
    /// Also write the QR code to FILE as PNG (mode 0600)
    #[arg(long, value_name = "FILE")]
    pub qr_png: Option<PathBuf>,
    /// Also write the QR code to FILE as SVG (mode 0600)
    #[arg(long, value_name = "FILE")]
    pub qr_svg: Option<PathBuf>,
    /// Print one JSON object (with the secret) instead of text
    #[arg(long)]
    pub json: bool,
    /// Replace an active enrolment (or, with --device, that device). The
    /// old device keeps working until the new one is confirmed, so the user
    /// is never left without a second factor
    #[arg(long)]
    pub force: bool,
    /// With --force: revoke the old device at once (a lost or stolen
    /// phone). For the whole user this also revokes the recovery codes and
    /// the phone number. Until the new device is confirmed the user cannot
    /// log in with a code, and nullok does not let them through either
    #[arg(long, requires = "force")]
    pub revoke: bool,
    /// Print a one-time self-enrolment link for the user instead of the
    /// secret and QR code (needs [web] public_url)
    #[arg(long, conflicts_with_all = ["qr_png", "qr_svg"])]
    pub link: bool,
    /// How long the link stays valid, e.g. 24h, 30m, 7days [default: config, else 24h]
    #[arg(long, requires = "link", value_parser = parse_duration, value_name = "DURATION")]
    pub expires: Option<u64>,
    /// Name this device (phone, yubikey …): a user who has tokens already
    /// gets this one besides them [default: the user's first device, "default"]
    #[arg(long, value_name = "NAME", conflicts_with = "link")]
    pub device: Option<String>,
    /// A counter-based (HOTP, RFC 4226) token, for hardware keys, instead
    /// of a time-based one
    #[arg(long, conflicts_with_all = ["link", "period"])]
    pub hotp: bool,
    /// The counter value of the token's next code [default: 0]
    #[arg(long, requires = "hotp", value_name = "N")]
    pub counter: Option<u64>,
    /// Pair a phone to approve the (enrolled) user's sign-ins on: prints a
    /// one-time link (ten minutes) as a QR code to scan with the phone's
    /// camera; with --link, the link only (needs [approve] and [web])
    #[arg(long, conflicts_with_all = ["issuer", "digits", "algorithm", "period", "qr_png", "qr_svg", "force", "revoke", "expires", "device", "hotp", "counter"])]
    pub approver: bool,
}

fn parse_duration(s: &str) -> Result<u64, String> {
    humantime::parse_duration(s)
        .map(|d| d.as_secs())
        .map_err(|e| format!("\"{s}\" is not a duration ({e}); write e.g. 24h or 30m"))
}

fn parse_digits(s: &str) -> Result<u8, String> {
    match s {
        "6" => Ok(6),
        "8" => Ok(8),
        _ => Err(format!("\"{s}\": must be 6 or 8")),
    }
}

fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    s.parse()
}

pub(super) fn unexpected(r: &Response) -> CliError {
    CliError::Unreachable(format!("unexpected answer from otpd: {r:?}"))
}

/// A short sentence for a refused code.
fn refusal(user: &str, outcome: VerifyOutcome) -> Option<String> {
    match outcome {
        VerifyOutcome::Accepted => None,
        VerifyOutcome::WrongCode => Some(format!("wrong code for {user}")),
        VerifyOutcome::Replayed => Some(format!(
            "that code of {user} was already used; wait for the next one"
        )),
        VerifyOutcome::Throttled { retry_after_secs } => Some(format!(
            "too many failed attempts for {user}; try again in {retry_after_secs} s (or `otpd unlock {user}`)"
        )),
        VerifyOutcome::NotEnrolled => Some(format!("{user} is not enrolled")),
        VerifyOutcome::Pending => Some(format!(
            "{user}'s enrolment is pending; confirm it first with `otpd confirm {user} CODE`"
        )),
        VerifyOutcome::SmsSent => Some(format!("a code was texted to {user}'s phone")),
        VerifyOutcome::SmsUnavailable { .. } => {
            Some(format!("no text message can be sent to {user} now"))
        }
    }
}

/// Reads a code from stdin (asking `prompt` when it is a terminal) when
/// none was given on the command line.
pub(super) fn code_or_stdin(code: Option<String>, prompt: &str) -> Result<SecretText, CliError> {
    if let Some(c) = code {
        return Ok(SecretText::new(c));
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
    }
    let mut line = zeroize::Zeroizing::new(String::new());
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::Usage(format!("cannot read the code from stdin: {e}")))?;
    Ok(SecretText::new(line.trim().to_owned()))
}

fn check_code(client: &Client, request: Request, user: &str) -> Result<(), CliError> {
    match client.call(&request)? {
        Response::Verified { outcome } => match refusal(user, outcome) {
            None => Ok(()),
            Some(why) => Err(CliError::Refused(why)),
        },
        other => Err(unexpected(&other)),
    }
}

/// `otpd verify USER [CODE]`: a real verification; it uses the code up.
pub fn verify(client: &Client, user: String, code: Option<String>) -> Result<(), CliError> {
    let code = code_or_stdin(code, "Verification code: ")?;
    let request = Request::Verify {
        user: user.clone(),
        code,
        service: "otpd-verify".into(),
        rhost: String::new(),
        ruid: None,
    };
    check_code(client, request, &user)?;
    say!("accepted: the code of {user} is valid (and now used)");
    Ok(())
}

/// `otpd confirm USER [CODE]`: the "Validate" step of an enrolment.
pub fn confirm(client: &Client, user: String, code: Option<String>) -> Result<(), CliError> {
    let code = code_or_stdin(code, "Verification code: ")?;
    let request = Request::Confirm {
        user: user.clone(),
        code,
    };
    match client.call(&request)? {
        Response::Confirmed { recovery_codes } => {
            validated(&user, &recovery_codes);
            Ok(())
        }
        Response::Verified { outcome } => Err(CliError::Refused(
            refusal(&user, outcome).unwrap_or_else(|| format!("{user}: not validated")),
        )),
        other => Err(unexpected(&other)),
    }
}

/// The "Validated" message, with the recovery codes that came with it.
pub(super) fn validated(user: &str, recovery_codes: &[SecretText]) {
    say!(
        "Validated: the token of {user} is active. From now on {user} logs in with the password and the tokencode from the app."
    );
    if !recovery_codes.is_empty() {
        say!(
            "\nRecovery codes for {user} (any older ones no longer work). Each works once, typed\n\
             at the verification code prompt in place of a code from the app. Keep them somewhere\n\
             safe; they are not shown again.\n"
        );
        for code in recovery_codes {
            say!("  {}", code.expose());
        }
    }
}

fn grouped(secret: &str) -> String {
    secret
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `otpd enroll USER …`; `default_expires`: a link's lifetime unless
/// `--expires` is given.
pub fn enroll(client: &Client, o: EnrollOptions, default_expires: u64) -> Result<(), CliError> {
    if o.approver {
        return approver(client, &o);
    }
    for path in o.qr_png.iter().chain(&o.qr_svg) {
        qr::refuse_existing(path)?;
    }
    let request = Request::Enroll(EnrollParams {
        user: o.user.clone(),
        issuer: o.issuer.clone(),
        algorithm: o.algorithm,
        digits: o.digits,
        period: o.period,
        force: o.force,
        link_expires: o.link.then(|| o.expires.unwrap_or(default_expires)),
        device: o.device.clone(),
        hotp: o.hotp,
        counter: o.counter,
        revoke: o.revoke,
    });
    let e = match client.call(&request)? {
        Response::Enrolled(e) => e,
        Response::Link {
            user,
            url,
            expires,
            replaced,
            old_kept,
        } => {
            print_link(&user, url.expose(), expires, replaced, o.json)?;
            if replaced && !o.json {
                say!("{}", replaced_note(old_kept));
            }
            return Ok(());
        }
        other => return Err(unexpected(&other)),
    };
    if let Some(path) = &o.qr_png {
        qr::png(e.uri.expose(), path)?;
    }
    if let Some(path) = &o.qr_svg {
        qr::svg(e.uri.expose(), path)?;
    }
    if e.token_kind == TokenKind::Totp
        && (e.algorithm, e.digits, e.period) != (Algorithm::Sha1, 6, 30)
    {
        eprintln!(
            "warning: this token uses {}, {} digits, {} s; Microsoft Authenticator only handles SHA1, 6 digits, 30 s (use Aegis, FreeOTP, 1Password … or the defaults)",
            e.algorithm, e.digits, e.period
        );
    }
    if o.json {
        let out = serde_json::json!({
            "user": e.user,
            "issuer": e.issuer,
            "algorithm": e.algorithm,
            "digits": e.digits,
            "period": e.period,
            "secret": e.secret_base32.expose(),
            "uri": e.uri.expose(),
            "state": "pending",
            "replaced": e.replaced,
            "old_kept": e.old_kept,
            "device": e.device,
            "kind": e.token_kind,
            "counter": e.counter,
        });
        say!("{out}");
        return Ok(());
    }
    print_enrollment(&e)?;
    if e.replaced {
        say!("{}", replaced_note(e.old_kept));
    }
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        prompt_first_code(client, &e.user)
    } else {
        say!(
            "The enrolment stays pending until the first code is validated:\n  otpd confirm {} CODE",
            e.user
        );
        Ok(())
    }
}

/// `otpd enroll USER --approver [--link]`: the phone-pairing link.
fn approver(client: &Client, o: &EnrollOptions) -> Result<(), CliError> {
    let (user, url, expires) = match client.call(&Request::ApproverLink {
        user: o.user.clone(),
    })? {
        Response::Link {
            user, url, expires, ..
        } => (user, url, expires),
        other => return Err(unexpected(&other)),
    };
    if o.json {
        let out = serde_json::json!({ "user": user, "url": url.expose(), "expires": expires });
        say!("{out}");
        return Ok(());
    }
    if !o.link {
        say!("Scan this with your phone's camera to approve sign-ins on your phone ({user}):\n");
        say!("{}", qr::terminal(url.expose(), false)?);
    }
    say!(
        "One-time link for {user}'s phone (it works once, until {until}):\n\n{url}\n\n\
         On the phone: \"Add to home screen\", then \"Turn on sign-in approvals\"; a test\n\
         request follows: select Approve. `otpd list` shows the phone as an approver.",
        until = when(Some(expires)),
        url = url.expose(),
    );
    Ok(())
}

/// What became of the device a forced enrolment replaces.
fn replaced_note(old_kept: bool) -> &'static str {
    if old_kept {
        "The old device keeps working until the new one is confirmed; then it is removed."
    } else {
        "The earlier enrolment no longer works."
    }
}

fn print_link(
    user: &str,
    url: &str,
    expires: u64,
    replaced: bool,
    json: bool,
) -> Result<(), CliError> {
    if json {
        let out = serde_json::json!({
            "user": user,
            "url": url,
            "expires": expires,
            "state": "pending",
            "replaced": replaced,
        });
        say!("{out}");
        return Ok(());
    }
    say!(
        "{verb} enrolment for {user} (pending until the code on the page is validated).\n\n\
         Send this one-time link to {user} only (it works once, until {until}):\n\n\
         {url}\n\n\
         On the page {user} scans the QR code with the authenticator app, enters the code\n\
         (\"Enter your OTP\" → \"Validate\") and receives recovery codes.",
        verb = if replaced { "New" } else { "Started" },
        until = when(Some(expires)),
    );
    Ok(())
}

/// `otpd recovery-codes USER [--count N]`: replaces and prints them once.
pub fn recovery_codes(client: &Client, user: String, count: Option<u32>) -> Result<(), CliError> {
    let codes = match client.call(&Request::RecoveryCodes {
        user: user.clone(),
        count,
    })? {
        Response::RecoveryCodes { codes, .. } => codes,
        other => return Err(unexpected(&other)),
    };
    say!(
        "New recovery codes for {user} (any older ones no longer work). Each works once, typed\n\
         at the verification code prompt in place of a code from the app. Keep them somewhere\n\
         safe; they are not shown again.\n"
    );
    for code in &codes {
        say!("  {}", code.expose());
    }
    Ok(())
}

/// `otpd phone USER NUMBER` (texts a code; asks for it on a terminal) or
/// `otpd phone USER --confirm CODE`.
pub fn phone(
    client: &Client,
    user: String,
    number: Option<String>,
    confirm: Option<String>,
) -> Result<(), CliError> {
    if let Some(number) = number {
        match client.call(&Request::Phone {
            user: user.clone(),
            number: number.clone(),
        })? {
            Response::Done {} => {}
            other => return Err(unexpected(&other)),
        }
        say!("A code was texted to {number}.");
        if !std::io::stdin().is_terminal() {
            say!("Register the number with the code from the text message:\n  otpd phone {user} --confirm CODE");
            return Ok(());
        }
        let code = code_or_stdin(None, "Code from the text message (then Enter to verify): ")?;
        return phone_confirm(client, &user, code);
    }
    match confirm {
        Some(code) => phone_confirm(client, &user, SecretText::new(code)),
        None => Err(CliError::Usage(
            "give a NUMBER (+31612345678) or --confirm CODE".into(),
        )),
    }
}

fn phone_confirm(client: &Client, user: &str, code: SecretText) -> Result<(), CliError> {
    match client.call(&Request::PhoneConfirm {
        user: user.to_owned(),
        code,
    })? {
        Response::Verified {
            outcome: VerifyOutcome::Accepted,
        } => {
            say!("Verified: {user} can now type \"sms\" at the code prompt to get a code by text message.");
            Ok(())
        }
        Response::Verified { .. } => Err(CliError::Refused(
            "that is not the code that was texted (or it expired); send a new one with otpd phone USER NUMBER".into(),
        )),
        other => Err(unexpected(&other)),
    }
}

pub(super) fn print_enrollment(e: &Enrollment) -> Result<(), CliError> {
    let stdout_tty = std::io::stdout().is_terminal();
    let art = qr::terminal(e.uri.expose(), stdout_tty)?;
    let how = match e.counter {
        Some(counter) => format!(
            "Counter-based (HOTP), {}, {} digits, next counter {counter}",
            e.algorithm, e.digits
        ),
        None => format!(
            "Time-based, {}, {} digits, every {} s",
            e.algorithm, e.digits, e.period
        ),
    };
    let scan = match e.token_kind {
        TokenKind::Totp => "Scan the QR code with the authenticator app (Microsoft Authenticator: \"+\" → \"Other account\" → \"Scan a QR code\").",
        TokenKind::Hotp => "Program the hardware key with this secret (e.g. ykman oath accounts uri, or the key's own tool), or scan the QR code with an app that counts (FreeOTP, Aegis).",
    };
    let text = format!(
        "{verb} enrolment for {user}{device} (pending until the first code is validated).\n\n\
         {uri}\n\n\
         Secret for manual entry: {secret}\n\
         Account: {user}   Issuer: {issuer}   {how}\n\n\
         {art}\n\
         {scan}\n",
        verb = if e.replaced { "New" } else { "Started" },
        device = if e.device.is_empty() || e.device == "default" {
            String::new()
        } else {
            format!(", device {}", e.device)
        },
        user = e.user,
        uri = e.uri.expose(),
        secret = grouped(e.secret_base32.expose()),
        issuer = e.issuer,
    );
    super::emit(&text);
    Ok(())
}

/// "Enter your OTP" → "Validate", as in the help-desk manuals.
fn prompt_first_code(client: &Client, user: &str) -> Result<(), CliError> {
    const TRIES: usize = 3;
    let stdin = std::io::stdin();
    let mut why = String::new();
    for attempt in 1..=TRIES {
        if attempt > 1 {
            say!("Not validated: {why}. Try again ({attempt} of {TRIES}).");
        }
        super::emit(
            "Enter your OTP (the code the app shows now), or press Enter to validate later: ",
        );
        let mut line = zeroize::Zeroizing::new(String::new());
        if stdin.lock().read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            say!("The enrolment stays pending. Validate it later with: otpd confirm {user} CODE");
            return Ok(());
        }
        let request = Request::Confirm {
            user: user.to_owned(),
            code: SecretText::new(line.trim().to_owned()),
        };
        match client.call(&request)? {
            Response::Confirmed { recovery_codes } => {
                validated(user, &recovery_codes);
                return Ok(());
            }
            Response::Verified { outcome } => why = refusal(user, outcome).unwrap_or_default(),
            other => return Err(unexpected(&other)),
        }
    }
    Err(CliError::Refused(format!(
        "not validated: {why}; the enrolment stays pending (otpd confirm {user} CODE)"
    )))
}

pub(super) fn when(t: Option<u64>) -> String {
    t.map(|s| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s)).to_string())
        .unwrap_or_else(|| "never".into())
}

/// `otpd list [--json]`
pub fn list(client: &Client, json: bool) -> Result<(), CliError> {
    let users: Vec<UserSummary> = match client.call(&Request::List {})? {
        Response::Users { users } => users,
        other => return Err(unexpected(&other)),
    };
    // Logins ask otpd about the account's own name (PAM_USER through
    // getpwnam): a record under another spelling is found only while the
    // user types that very spelling. Said on stderr, so --json stays JSON.
    for u in &users {
        if let Ok(Some(account)) = nix::unistd::User::from_name(&u.user) {
            if account.name != u.user {
                eprintln!(
                    "warning: {:?} is the account {:?} in the user database; logins ask otpd \
                     about {:?}: enrol {:?} (otpd enroll {}) and remove {:?}",
                    u.user, account.name, account.name, account.name, account.name, u.user
                );
            }
        }
    }
    if json {
        let text = serde_json::to_string_pretty(&users)
            .map_err(|e| CliError::Refused(format!("cannot print JSON: {e}")))?;
        say!("{text}");
        return Ok(());
    }
    if users.is_empty() {
        say!("No users enrolled. Start with: otpd enroll USER");
        return Ok(());
    }
    let width = users.iter().map(|u| u.user.len()).max().unwrap_or(4).max(4);
    say!(
        "{:width$}  {:9}  {:20}  {:20}  {:8}  {:8}  {:5}  TOKENS",
        "USER",
        "STATE",
        "CREATED",
        "LAST SUCCESS",
        "FAILURES",
        "RECOVERY",
        "PHONE"
    );
    for u in users {
        let state = match (u.state, u.throttled_for_secs) {
            (UserState::Pending, _) => "pending".to_string(),
            (UserState::Active, _) => "active".to_string(),
            (UserState::Throttled, Some(s)) => format!("throttled ({s} s)"),
            (UserState::Throttled, None) => "throttled".to_string(),
        };
        // The tokens last: one user's list can be long.
        say!(
            "{:width$}  {:9}  {:20}  {:20}  {:8}  {:8}  {:5}  {}",
            u.user,
            state,
            when(Some(u.created)),
            when(u.last_success),
            u.failures,
            u.recovery_codes,
            if u.phone { "yes" } else { "no" },
            tokens_column(&u),
        );
    }
    Ok(())
}

/// One device `name:totp/SHA1/6/30s`; a pending one is marked, an HOTP one
/// shows its next counter.
fn tokens_column(u: &UserSummary) -> String {
    if u.devices.is_empty() {
        return format!("{}/{}/{}s", u.algorithm, u.digits, u.period);
    }
    u.devices
        .iter()
        .map(|d| {
            let what = match d.next_counter {
                Some(c) => format!("hotp/{}/{} (next {c})", d.algorithm, d.digits),
                None => format!("totp/{}/{}/{}s", d.algorithm, d.digits, d.period),
            };
            let pending = if d.state == UserState::Pending {
                " (pending)"
            } else {
                ""
            };
            format!("{}:{what}{pending}", d.name)
        })
        .chain(u.approvers.iter().map(|a| {
            // A paired phone: its name, last use, and whether it gets pushes.
            format!(
                "{}:approver{}{} (last used {})",
                a.name,
                if a.state == UserState::Pending {
                    " (pending)"
                } else {
                    ""
                },
                if a.push { "" } else { " (no push)" },
                when(a.last_used),
            )
        }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `otpd status`: whether the daemon answers, and its state.
pub fn status(client: &Client) -> Result<(), CliError> {
    let s = match client.call(&Request::DaemonStatus {})? {
        Response::DaemonStatus(s) => s,
        other => return Err(unexpected(&other)),
    };
    let uptime = humantime::format_duration(Duration::from_secs(s.uptime_secs));
    say!(
        "otpd {version} is running (up {uptime})\n\
         socket:   {socket}{activated}\n\
         store:    {store}\n\
         users:    {active} active ({throttled} throttled now), {pending} pending\n\
         pages:    {web}\n\
         texts:    {sms}\n\
         audit:    {audit}",
        version = s.version,
        socket = s.socket,
        activated = if s.socket_activated {
            " (from systemd's otpd.socket)"
        } else {
            ""
        },
        store = s
            .store
            .clone()
            .unwrap_or_else(|| format!("{}/store", s.state_dir)),
        active = s.active,
        throttled = s.throttled,
        pending = s.pending,
        web = s.web.as_deref().unwrap_or("off"),
        sms = if s.sms { "on" } else { "off" },
        audit = match s.audit_head.as_deref().map(|h| h.split_once(':')) {
            Some(Some((seq, _))) => format!("chained, last line seq={seq}"),
            _ => "not chained".into(),
        },
    );
    Ok(())
}

/// `otpd remove USER [--device NAME]`
pub fn remove(client: &Client, user: String, device: Option<String>) -> Result<(), CliError> {
    match client.call(&Request::Remove {
        user: user.clone(),
        device: device.clone(),
    })? {
        Response::Done {} => {
            match device {
                Some(name) => say!("removed: the device {name} of {user} (the user's other devices still work; without any, {user} is no longer enrolled)"),
                None => say!("removed: {user} no longer has a token"),
            }
            Ok(())
        }
        other => Err(unexpected(&other)),
    }
}

/// `otpd resync USER CODE1 CODE2 [--device NAME]`
pub fn resync(
    client: &Client,
    user: String,
    code1: String,
    code2: String,
    device: Option<String>,
) -> Result<(), CliError> {
    match client.call(&Request::Resync {
        user: user.clone(),
        device,
        code1: SecretText::new(code1),
        code2: SecretText::new(code2),
    })? {
        Response::Resynced {
            device,
            next_counter,
        } => {
            say!("resynced: the device {device} of {user} is in step again (next counter {next_counter}); its next code logs in");
            Ok(())
        }
        Response::Verified { .. } => Err(CliError::Refused(format!(
            "not resynced: those are not two consecutive codes of an HOTP token of {user} within the resync window ([hotp] resync_window) after its counter; nothing changed"
        ))),
        other => Err(unexpected(&other)),
    }
}

/// `otpd forget USER --all | --key FINGERPRINT`
pub fn forget(client: &Client, user: String, key: Option<String>) -> Result<(), CliError> {
    match client.call(&Request::Forget {
        user: user.clone(),
        key: key.clone(),
    })? {
        Response::Forgotten { count } => {
            match key {
                Some(key) => say!("forgotten: {count} remembered login(s) of {user} with the key {key}"),
                None => say!("forgotten: {count} remembered login(s) of {user}; the next login asks for a code"),
            }
            Ok(())
        }
        other => Err(unexpected(&other)),
    }
}

/// `otpd unlock USER`
pub fn unlock(client: &Client, user: String) -> Result<(), CliError> {
    match client.call(&Request::Unlock { user: user.clone() })? {
        Response::Done {} => {
            say!("unlocked: the failure counters of {user} are cleared");
            Ok(())
        }
        other => Err(unexpected(&other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_grouped_by_four() {
        assert_eq!(grouped("ABCDEFGHIJ"), "ABCD EFGH IJ");
    }

    #[test]
    fn refusals_name_the_reason() {
        assert!(refusal("a", VerifyOutcome::Accepted).is_none());
        assert!(refusal("a", VerifyOutcome::Replayed)
            .unwrap()
            .contains("already used"));
        assert!(refusal(
            "a",
            VerifyOutcome::Throttled {
                retry_after_secs: 42
            }
        )
        .unwrap()
        .contains("42 s"));
    }
}
