//! `otpd self`: the user's own commands. The daemon knows who is asking
//! from the socket (SO_PEERCRED): no user name is sent, and root is refused
//! with a pointer to the admin commands.

use super::commands::{code_or_stdin, print_enrollment, unexpected, when};
use super::{CliError, Client};
use crate::cli::SelfCommand;
use otpd_proto::{Request, Response, SecretText, SelfProof, UserState, VerifyOutcome};
use std::io::{BufRead, IsTerminal};

/// The prompt for the code that proves a change.
const PROOF_PROMPT: &str = "Code from one of your active devices (it is used up): ";

/// Runs one `otpd self` command.
pub fn self_service(client: &Client, command: SelfCommand) -> Result<(), CliError> {
    match command {
        SelfCommand::Devices { json } => devices(client, json),
        SelfCommand::Activity { json } => activity(client, json),
        SelfCommand::AddDevice {
            name,
            code,
            recovery_code,
        } => {
            let proof = match recovery_code {
                Some(code) => SelfProof::RecoveryCode {
                    code: SecretText::new(code),
                },
                None => SelfProof::Code {
                    code: code_or_stdin(code, PROOF_PROMPT)?,
                },
            };
            add_device(client, name, proof)
        }
        SelfCommand::Confirm { name, code } => {
            let code = code_or_stdin(code, "First code of the new device: ")?;
            confirm(client, &name, code)
        }
        SelfCommand::RemoveDevice { name, code } => {
            let proof = SelfProof::Code {
                code: code_or_stdin(code, PROOF_PROMPT)?,
            };
            match client.call(&Request::SelfRemoveDevice {
                device: name.clone(),
                proof,
            })? {
                Response::Done {} => {
                    say!("removed: your device {name} no longer works for your logins");
                    Ok(())
                }
                other => Err(refused_or_unexpected(&other)),
            }
        }
        SelfCommand::RecoveryCodes { code } => {
            let proof = SelfProof::Code {
                code: code_or_stdin(code, PROOF_PROMPT)?,
            };
            match client.call(&Request::SelfRecoveryCodes { proof })? {
                Response::RecoveryCodes { codes, .. } => {
                    print_recovery_codes(&codes, "New recovery codes");
                    Ok(())
                }
                other => Err(refused_or_unexpected(&other)),
            }
        }
    }
}

/// A refused proof, in words for the user; anything else is unexpected.
fn refused_or_unexpected(response: &Response) -> CliError {
    match response {
        Response::Verified { outcome } => CliError::Refused(refusal(*outcome)),
        other => unexpected(other),
    }
}

/// Why a code was not taken; nothing was changed.
fn refusal(outcome: VerifyOutcome) -> String {
    let why = match outcome {
        VerifyOutcome::WrongCode => {
            "wrong code: it is not a current code of one of your active devices (the failure \
             counts like a failed login)"
                .to_owned()
        }
        VerifyOutcome::Replayed => "that code was already used; wait for the next one".into(),
        VerifyOutcome::Throttled { retry_after_secs } => {
            format!("too many failed attempts; try again in {retry_after_secs} s")
        }
        VerifyOutcome::Pending => {
            "you have no active device yet: validate yours first (otpd self confirm NAME CODE)"
                .into()
        }
        VerifyOutcome::NotEnrolled => "you are not enrolled in otpd".into(),
        other => format!("not accepted ({other:?})"),
    };
    format!("{why}; nothing was changed")
}

fn print_recovery_codes(codes: &[SecretText], what: &str) {
    say!(
        "{what} (any older ones no longer work). Each works once, typed at the\n\
         verification code prompt in place of a code from the app. Keep them somewhere\n\
         safe; they are not shown again.\n"
    );
    for code in codes {
        say!("  {}", code.expose());
    }
}

/// `otpd self devices [--json]`
fn devices(client: &Client, json: bool) -> Result<(), CliError> {
    let response = client.call(&Request::SelfDevices {})?;
    let Response::OwnDevices {
        user,
        devices,
        approvers,
        recovery_codes,
    } = response
    else {
        return Err(unexpected(&response));
    };
    if json {
        let out = serde_json::json!({
            "user": user,
            "devices": devices,
            "approvers": approvers,
            "recovery_codes": recovery_codes,
        });
        say!("{out}");
        return Ok(());
    }
    let state = |s: UserState| match s {
        UserState::Pending => "pending",
        UserState::Active | UserState::Throttled => "active",
    };
    let width = devices
        .iter()
        .map(|d| d.name.len())
        .chain(approvers.iter().map(|a| a.name.len()))
        .max()
        .unwrap_or(4)
        .max(4);
    say!("Devices of {user}:");
    say!("{:width$}  {:9}  {:8}  CREATED", "NAME", "KIND", "STATE");
    for d in &devices {
        say!(
            "{:width$}  {:9}  {:8}  {}",
            d.name,
            d.kind.as_str(),
            state(d.state),
            when(Some(d.created))
        );
    }
    for a in &approvers {
        say!(
            "{:width$}  {:9}  {:8}  {}",
            a.name,
            "approver",
            state(a.state),
            when(Some(a.created))
        );
    }
    say!("Recovery codes left: {recovery_codes}");
    Ok(())
}

/// `otpd self activity [--json]`: newest first.
fn activity(client: &Client, json: bool) -> Result<(), CliError> {
    let response = client.call(&Request::SelfActivity {})?;
    let Response::Activity { user, events } = response else {
        return Err(unexpected(&response));
    };
    if json {
        let out = serde_json::json!({ "user": user, "events": events });
        say!("{out}");
        return Ok(());
    }
    if events.is_empty() {
        say!("No logins with a code of {user} recorded yet.");
        return Ok(());
    }
    say!("Latest logins of {user}, newest first (was each one you?):");
    say!(
        "{:20}  {:16}  {:24}  OUTCOME",
        "TIME (UTC)",
        "SERVICE",
        "FROM"
    );
    for e in events.iter().rev() {
        say!(
            "{:20}  {:16}  {:24}  {}",
            when(Some(e.time)),
            e.service,
            e.source,
            e.outcome
        );
    }
    Ok(())
}

/// `otpd self add-device NAME`: prints the QR code and, on a terminal,
/// asks for the first code.
fn add_device(client: &Client, name: String, proof: SelfProof) -> Result<(), CliError> {
    let proof_kind = match proof {
        SelfProof::Code { .. } => ProofKind::Code,
        SelfProof::RecoveryCode { .. } => ProofKind::RecoveryCode,
    };
    let response = client.call(&Request::SelfAddDevice {
        device: name.clone(),
        proof,
    })?;
    let Response::Enrolled(e) = response else {
        return Err(match (&proof_kind, &response) {
            (
                ProofKind::RecoveryCode,
                Response::Verified {
                    outcome: VerifyOutcome::WrongCode,
                },
            ) => CliError::Refused(
                "that recovery code is wrong or used up (the failure counts like a failed \
                 login); nothing was changed"
                    .into(),
            ),
            _ => refused_or_unexpected(&response),
        });
    };
    print_enrollment(&e)?;
    if !std::io::stdin().is_terminal() {
        say!("The device stays pending until its first code is validated:\n  otpd self confirm {name} CODE");
        return Ok(());
    }
    const TRIES: usize = 3;
    let mut why = String::new();
    for attempt in 1..=TRIES {
        if attempt > 1 {
            say!("Not validated: {why}. Try again ({attempt} of {TRIES}).");
        }
        super::emit(
            "Enter your OTP (the code the new device shows now), or press Enter to validate later: ",
        );
        let mut line = zeroize::Zeroizing::new(String::new());
        if std::io::stdin().lock().read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty()
        {
            say!("The device stays pending. Validate it later with: otpd self confirm {name} CODE");
            return Ok(());
        }
        match confirm(client, &name, SecretText::new(line.trim().to_owned())) {
            Ok(()) => return Ok(()),
            Err(CliError::Refused(reason)) => why = reason,
            Err(other) => return Err(other),
        }
    }
    Err(CliError::Refused(format!(
        "not validated: {why}; the device stays pending (otpd self confirm {name} CODE)"
    )))
}

/// Which proof a change came with, for the wording of a refusal.
enum ProofKind {
    Code,
    RecoveryCode,
}

/// `otpd self confirm NAME CODE`
fn confirm(client: &Client, name: &str, code: SecretText) -> Result<(), CliError> {
    match client.call(&Request::SelfConfirm {
        device: name.to_owned(),
        code,
    })? {
        Response::Confirmed { recovery_codes } => {
            say!("Validated: your device {name} is active; its codes now work for your logins.");
            if !recovery_codes.is_empty() {
                say!("");
                print_recovery_codes(
                    &recovery_codes,
                    "Your new recovery codes come with the new device",
                );
            }
            Ok(())
        }
        Response::Verified { outcome } => Err(CliError::Refused(match outcome {
            VerifyOutcome::WrongCode => {
                format!("wrong code: not the code that {name} shows now; it stays pending")
            }
            other => refusal(other),
        })),
        other => Err(unexpected(&other)),
    }
}
