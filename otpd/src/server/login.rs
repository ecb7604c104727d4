//! Carries a login conversation over its connection: sends the steps that
//! `core::login` decides, waits for the person's answers, and runs the
//! reads and checks on the blocking pool. The conversation lives only as
//! long as the connection, under one deadline.

use super::handler::{audit_login_end, Handler, LoginContext};
use super::listener::{read_request, write_response};
use super::policy::Caller;
use super::slots::Slot;
use crate::core::approve::Wait;
use crate::core::login::{Approval, Conversation, Next};
use otpd_proto::{
    ErrorCode, LoginOutcome, LoginStart, Message, Request, Response, Step, FRAME_HEADER_LEN,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};
use tracing::{debug, warn};

/// The longest a person may take to answer one prompt (sshd's own
/// LoginGraceTime is 120 s by default).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(180);
/// The longest a whole conversation may last.
pub const CONVERSATION_DEADLINE: Duration = Duration::from_secs(600);

/// Carries the login of `start` to its end. The connection is closed
/// afterwards (one login per connection).
pub async fn converse(
    stream: &mut UnixStream,
    caller: &Caller,
    handler: &Arc<Handler>,
    start: Box<LoginStart>,
    slot: &Slot,
    stop: &mut watch::Receiver<bool>,
) {
    let deadline = Instant::now() + CONVERSATION_DEADLINE;
    // The daemon's own time for each request of the login (the metrics):
    // from the request read to the next prompt or the end written.
    let mut busy_since = std::time::Instant::now();
    let begun = if handler.login_begin_blocks(caller, &start) {
        let (h, c) = (handler.clone(), caller.clone());
        tokio::task::spawn_blocking(move || h.login_begin(&c, start)).await
    } else {
        // Nothing to read yet (root's login that asks for the code at
        // once): decided here, without a trip through the blocking pool.
        Ok(handler.login_begin(caller, start))
    };
    let (mut conversation, context, mut next) = match begun {
        Ok(Ok(begun)) => begun,
        Ok(Err(refusal)) => {
            let _ = write_response(stream, &refusal).await;
            return;
        }
        Err(e) => {
            warn!("login handler failed: {e}");
            let _ = write_response(stream, &failed()).await;
            return;
        }
    };
    // While it waits for its person, the connection is counted with the
    // logins of its source: a flood from one source closes its own.
    slot.set_login_group(context.source());
    // The sign-in request this login made (only this login holds its ID:
    // only it can use the approval).
    let mut request: Option<String> = None;
    loop {
        next = match next {
            Next::Say(step) => {
                if send(stream, step).await.is_err() {
                    return;
                }
                conversation.resume()
            }
            Next::Ask(step) => {
                if send(stream, step).await.is_err() {
                    return;
                }
                handler.metrics().login_step(busy_since.elapsed());
                // The person is typing: the connection waits for its
                // client, and may be closed to make room.
                slot.end_request();
                let answer = tokio::select! {
                    answer = read_answer(stream, deadline) => answer,
                    _ = slot.closed() => return,
                    _ = stop.changed() => return,
                };
                if !slot.begin_request() {
                    return;
                }
                busy_since = std::time::Instant::now();
                match answer {
                    Ok(Request::Answer { answer }) => conversation.answer(answer.as_ref()),
                    Ok(other) => {
                        warn!(
                            uid = caller.uid,
                            pid = caller.pid,
                            "a login sent {other:?} instead of an answer; ended"
                        );
                        let refusal = Response::Error {
                            code: ErrorCode::BadRequest,
                            message: "expected the answer to the prompt".into(),
                        };
                        let _ = write_response(stream, &refusal).await;
                        return;
                    }
                    Err(reason) => {
                        debug!(uid = caller.uid, "login ended without an answer: {reason}");
                        return;
                    }
                }
            }
            Next::Check(code) => {
                let checked = on_pool(
                    handler,
                    caller,
                    &context,
                    &conversation,
                    move |h, c, ctx, user| h.login_check(c, user, ctx, &code),
                )
                .await;
                match outcome_of(checked) {
                    Ok(outcome) => conversation.checked(outcome),
                    Err(end) => {
                        return finish(
                            stream,
                            handler,
                            caller,
                            &conversation,
                            &context,
                            end,
                            busy_since,
                        )
                        .await;
                    }
                }
            }
            Next::Text => {
                let texted = on_pool(
                    handler,
                    caller,
                    &context,
                    &conversation,
                    |h, c, ctx, user| h.login_text(c, user, ctx),
                )
                .await;
                match outcome_of(texted) {
                    Ok(outcome) => conversation.checked(outcome),
                    Err(end) => {
                        return finish(
                            stream,
                            handler,
                            caller,
                            &conversation,
                            &context,
                            end,
                            busy_since,
                        )
                        .await;
                    }
                }
            }
            Next::Request => {
                let made = on_pool(
                    handler,
                    caller,
                    &context,
                    &conversation,
                    |h, c, ctx, user| h.login_request(c, user, ctx),
                )
                .await;
                match outcome_of(made) {
                    Ok((requested, id)) => {
                        request = id;
                        conversation.requested(requested)
                    }
                    Err(end) => {
                        return finish(
                            stream,
                            handler,
                            caller,
                            &conversation,
                            &context,
                            end,
                            busy_since,
                        )
                        .await;
                    }
                }
            }
            Next::Enrol => {
                let made = on_pool(
                    handler,
                    caller,
                    &context,
                    &conversation,
                    |h, c, ctx, user| h.login_enrol(c, user, ctx),
                )
                .await;
                let shown = match made {
                    Ok(Ok(step)) => {
                        if send(stream, step).await.is_err() {
                            return;
                        }
                        true
                    }
                    Ok(Err(refusal)) => {
                        warn!("enrolment at the login failed: {refusal:?}");
                        false
                    }
                    Err(e) => {
                        warn!("login handler failed: {e}");
                        false
                    }
                };
                conversation.enrolled(shown)
            }
            Next::Confirm(code) => {
                let checked = on_pool(
                    handler,
                    caller,
                    &context,
                    &conversation,
                    move |h, c, ctx, user| h.login_confirm(c, user, ctx, &code),
                )
                .await;
                match outcome_of(checked) {
                    Ok((outcome, codes)) => {
                        if !codes.is_empty()
                            && send(stream, Step::RecoveryCodes { codes }).await.is_err()
                        {
                            return;
                        }
                        conversation.confirmed(outcome)
                    }
                    Err(end) => {
                        return finish(
                            stream,
                            handler,
                            caller,
                            &conversation,
                            &context,
                            end,
                            busy_since,
                        )
                        .await;
                    }
                }
            }
            Next::Await => {
                let Some(id) = request.take() else {
                    next = conversation.approval(Approval::Expired);
                    continue;
                };
                // Waiting for the phone, as for the person: the connection
                // may be closed to make room meanwhile.
                slot.end_request();
                let approval = tokio::select! {
                    approval = await_approval(handler, caller, &conversation, &context, &id, deadline) => approval,
                    _ = slot.closed() => return,
                    _ = stop.changed() => return,
                };
                if !slot.begin_request() {
                    return;
                }
                // The phone's time is not the daemon's.
                busy_since = std::time::Instant::now();
                if let Ok(approval) = &approval {
                    handler.metrics().checked(
                        context.service(),
                        caller.uid == 0,
                        "approve",
                        approval_name(approval),
                    );
                }
                match approval {
                    Ok(approval) => conversation.approval(approval),
                    Err(end) => {
                        return finish(
                            stream,
                            handler,
                            caller,
                            &conversation,
                            &context,
                            end,
                            busy_since,
                        )
                        .await;
                    }
                }
            }
            Next::End(step) => {
                return finish(
                    stream,
                    handler,
                    caller,
                    &conversation,
                    &context,
                    Ended::Step(step),
                    busy_since,
                )
                .await;
            }
        };
    }
}

/// How often a login waiting for a phone reads the request (from the
/// store: on a fleet, the phone may answer through another host's pages).
const APPROVAL_POLL: Duration = Duration::from_millis(250);

/// Waits for the phone's answer to request `id`: approved (and used by
/// this login), denied, closed by a wrong number, or expired; at most the
/// request's remaining time and the conversation's deadline.
async fn await_approval(
    handler: &Arc<Handler>,
    caller: &Caller,
    conversation: &Conversation,
    context: &LoginContext,
    id: &str,
    deadline: Instant,
) -> Result<Approval, Ended> {
    let user = conversation.user().to_owned();
    loop {
        let (h, u, i) = (handler.clone(), user.clone(), id.to_owned());
        let wait = match tokio::task::spawn_blocking(move || h.login_wait(&u, &i)).await {
            Ok(Ok(wait)) => wait,
            Ok(Err(_)) => return Err(Ended::Unavailable),
            Err(e) => {
                warn!("login handler failed: {e}");
                return Err(Ended::Unavailable);
            }
        };
        match wait {
            Wait::Open { remaining } => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Approval::Expired);
                }
                let pause = APPROVAL_POLL.min(Duration::from_secs(remaining)).min(left);
                tokio::time::sleep(pause).await;
            }
            Wait::Approved { .. } => {
                let (h, c, ctx, u, i) = (
                    handler.clone(),
                    caller.clone(),
                    context.clone(),
                    user.clone(),
                    id.to_owned(),
                );
                return match tokio::task::spawn_blocking(move || {
                    h.login_use_approval(&c, &u, &ctx, &i)
                })
                .await
                {
                    Ok(Ok(true)) => Ok(Approval::Approved),
                    Ok(Ok(false)) => Ok(Approval::Expired),
                    Ok(Err(_)) => Err(Ended::Unavailable),
                    Err(e) => {
                        warn!("login handler failed: {e}");
                        Err(Ended::Unavailable)
                    }
                };
            }
            Wait::Denied { .. } => return Ok(Approval::Denied),
            Wait::WrongNumber => return Ok(Approval::WrongNumber),
            Wait::Expired => return Ok(Approval::Expired),
        }
    }
}

/// Runs `work` on the blocking pool with the login's handler, caller,
/// context and user (the conversation's reads, checks and writes).
async fn on_pool<T: Send + 'static>(
    handler: &Arc<Handler>,
    caller: &Caller,
    context: &LoginContext,
    conversation: &Conversation,
    work: impl FnOnce(&Handler, &Caller, &LoginContext, &str) -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    let (h, c, ctx, user) = (
        handler.clone(),
        caller.clone(),
        context.clone(),
        conversation.user().to_owned(),
    );
    tokio::task::spawn_blocking(move || work(&h, &c, &ctx, &user)).await
}

/// How a conversation ends.
enum Ended {
    /// The conversation's own end.
    Step(Step),
    /// The daemon failed (the store): the factor cannot be checked.
    Unavailable,
    /// The daemon refused the check (the message is logged).
    Refused,
}

async fn finish(
    stream: &mut UnixStream,
    handler: &Arc<Handler>,
    caller: &Caller,
    conversation: &Conversation,
    context: &LoginContext,
    ended: Ended,
    busy_since: std::time::Instant,
) {
    let step = match ended {
        Ended::Step(step) => step,
        Ended::Unavailable => {
            let said = Step::Error {
                message: Message::Unavailable,
            };
            if send(stream, said).await.is_err() {
                return;
            }
            Step::End {
                outcome: LoginOutcome::AuthinfoUnavail,
                forward_password: false,
            }
        }
        Ended::Refused => Step::End {
            outcome: LoginOutcome::AuthErr,
            forward_password: false,
        },
    };
    if let Step::End { outcome, .. } = &step {
        let name = match outcome {
            LoginOutcome::Success if context.remembered() => "remembered",
            other => outcome_name(*other),
        };
        audit_login_end(caller, conversation.user(), context, name);
        handler
            .metrics()
            .login_ended(context.service(), caller.uid == 0, name);
        if *outcome == LoginOutcome::Success && context.to_remember() {
            // A second factor passed: its binding is remembered (when
            // `[remember]` names the service), before the login is told,
            // so that the next login finds it.
            let _ = on_pool(handler, caller, context, conversation, |h, c, ctx, user| {
                h.login_remember(c, user, ctx)
            })
            .await;
        }
    }
    let _ = send(stream, step).await;
    handler.metrics().login_step(busy_since.elapsed());
}

fn outcome_of<T>(result: Result<Result<T, Response>, tokio::task::JoinError>) -> Result<T, Ended> {
    match result {
        Ok(Ok(outcome)) => Ok(outcome),
        // The handler logged the cause.
        Ok(Err(Response::Error {
            code: ErrorCode::Internal,
            ..
        })) => Err(Ended::Unavailable),
        Ok(Err(_)) => Err(Ended::Refused),
        Err(e) => {
            warn!("login handler failed: {e}");
            Err(Ended::Unavailable)
        }
    }
}

/// The name of a phone's answer in the metrics.
fn approval_name(approval: &Approval) -> &'static str {
    match approval {
        Approval::Approved => "approved",
        Approval::Denied => "denied",
        Approval::WrongNumber => "wrong_number",
        Approval::Expired => "expired",
    }
}

fn outcome_name(outcome: LoginOutcome) -> &'static str {
    match outcome {
        LoginOutcome::Success => "success",
        LoginOutcome::Ignore => "ignore",
        LoginOutcome::AuthErr => "auth_err",
        LoginOutcome::UserUnknown => "user_unknown",
        LoginOutcome::MaxTries => "maxtries",
        LoginOutcome::AuthinfoUnavail => "authinfo_unavail",
        LoginOutcome::AuthtokRecoveryErr => "authtok_recovery_err",
    }
}

fn failed() -> Response {
    Response::Error {
        code: ErrorCode::Internal,
        message: "otpd could not complete the request".into(),
    }
}

async fn send(stream: &mut UnixStream, step: Step) -> Result<(), ()> {
    write_response(stream, &Response::Step(step))
        .await
        .map_err(|e| debug!("login step not delivered: {e}"))
}

/// The next request of the conversation, within the time a person may
/// take and the conversation's deadline.
async fn read_answer(stream: &mut UnixStream, deadline: Instant) -> Result<Request, String> {
    let wait = ANSWER_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
    let mut header = [0u8; FRAME_HEADER_LEN];
    match timeout(wait, stream.read_exact(&mut header)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return Err("closed by the module".into()),
        Err(_) => return Err("no answer in time".into()),
    }
    read_request(stream, header)
        .await
        .map_err(|e| e.to_string())
}
