//! The administrator's requests that read or reset whole users: the
//! daemon's status, the list, removal and unlock.

use super::*;

impl Handler {
    /// Seconds the whole user must still wait (user-wide backoff), if any.
    pub(super) fn user_wait(&self, r: &UserRecord, now: u64) -> Option<u64> {
        let limits = &self.rules.limits;
        r.last_failure.and_then(|last| {
            remaining(r.user_failures, last, limits.user_max_failures, limits, now)
        })
    }
    /// Counts the users by state for the metrics' gauges (a read of every
    /// record: the daemon does it in the background, at most once a
    /// minute, only while the metrics are served).
    pub fn count_users_for_metrics(&self) -> Result<(), StoreError> {
        let users = self.store.users()?;
        let now = self.now();
        let abandoned_after = self.config.web.link_expires.unwrap_or(24 * 3600);
        self.metrics
            .count_users(&users, now, abandoned_after, |r| self.user_wait(r, now));
        Ok(())
    }
    pub(super) fn daemon_status(&self) -> Response {
        let users = match self.store.users() {
            Ok(u) => u,
            Err(e) => return internal(e),
        };
        let now = self.now();
        let (mut active, mut pending, mut throttled) = (0, 0, 0);
        for (_, r) in &users {
            match r.first_device().state {
                EnrollState::Pending => pending += 1,
                EnrollState::Active => {
                    active += 1;
                    if self.user_wait(r, now).is_some() {
                        throttled += 1;
                    }
                }
            }
        }
        let web = self.config.web.listen.map(|listen| {
            let scheme = if self.config.web.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{listen}")
        });
        Response::DaemonStatus(Box::new(DaemonStatus {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            state_dir: self.config.state_dir.display().to_string(),
            socket: self.config.socket.display().to_string(),
            socket_activated: self
                .socket_activated
                .load(std::sync::atomic::Ordering::Relaxed),
            active,
            pending,
            throttled,
            uptime_secs: self.started.elapsed().as_secs(),
            web,
            sms: self.config.sms.command.is_some(),
            store: Some(self.store.describe()),
            audit_head: crate::server::audit::current_head(),
        }))
    }
    pub(super) fn list(&self) -> Response {
        let users = match self.store.users() {
            Ok(u) => u,
            Err(e) => return internal(e),
        };
        let now = self.now();
        let users = users
            .into_iter()
            .map(|(user, r)| {
                let throttled_for_secs = self.user_wait(&r, now);
                UserSummary {
                    user,
                    state: match (r.first_device().state, throttled_for_secs) {
                        (EnrollState::Pending, _) => UserState::Pending,
                        (EnrollState::Active, Some(_)) => UserState::Throttled,
                        (EnrollState::Active, None) => UserState::Active,
                    },
                    algorithm: r.first_device().algorithm,
                    digits: r.first_device().digits,
                    period: r.first_device().period,
                    created: r.first_device().created,
                    last_success: r.last_success,
                    failures: r.user_failures,
                    throttled_for_secs,
                    recovery_codes: u32::try_from(r.fallback.recovery.len()).unwrap_or(u32::MAX),
                    phone: r.fallback.phone.is_some(),
                    devices: devices::summaries(&r),
                    approvers: r
                        .approvals
                        .phones
                        .iter()
                        .map(|p| otpd_proto::ApproverSummary {
                            name: p.name.clone(),
                            state: match p.state {
                                EnrollState::Pending => UserState::Pending,
                                EnrollState::Active => UserState::Active,
                            },
                            created: p.created,
                            last_used: p.last_used,
                            push: p.push.is_some(),
                        })
                        .collect(),
                    remembered: u32::try_from(crate::core::remember::live(&r.remembered, now))
                        .unwrap_or(u32::MAX),
                }
            })
            .collect();
        Response::Users { users }
    }
    pub(super) fn remove(&self, caller: &Caller, user: &str) -> Response {
        self.rewrite(caller, user, "remove", |_| None)
    }
    pub(super) fn unlock(&self, caller: &Caller, user: &str) -> Response {
        self.rewrite(caller, user, "unlock", |r| {
            let mut next = r.clone();
            next.version = r.version.wrapping_add(1);
            next.user_failures = 0;
            next.last_failure = None;
            // An unlock also ends every remembered login.
            next.remembered.clear();
            Some(next)
        })
    }
    /// `otpd forget USER [--key FINGERPRINT]`: ends remembered logins
    /// (the counters stay, unlike `rewrite`).
    pub(super) fn forget(&self, caller: &Caller, user: &str, key: Option<&str>) -> Response {
        with_retries(|| {
            let current = match self.enrolled(user) {
                Ok(r) => r,
                Err(refusal) => return Some(refusal),
            };
            let mut next = current.clone();
            next.version = current.version.wrapping_add(1);
            let count = crate::core::remember::forget(&mut next.remembered, key);
            match self.store.commit(
                user,
                Some(current.version),
                RecordChange::Put(&next),
                SourcesChange::Keep,
            ) {
                Ok(()) => {
                    info!(target: "otpd::audit", user = ?user, uid = caller.uid, op = "forget", key = ?key.unwrap_or("all"), count, outcome = "done");
                    Some(Response::Forgotten {
                        count: u32::try_from(count).unwrap_or(u32::MAX),
                    })
                }
                Err(StoreError::Conflict) => None,
                Err(e) => Some(internal(e)),
            }
        })
    }

    /// Replaces (or with `None`, deletes) an existing record and clears all
    /// of its source counters.
    pub(super) fn rewrite(
        &self,
        caller: &Caller,
        user: &str,
        op: &'static str,
        change: impl Fn(&UserRecord) -> Option<UserRecord>,
    ) -> Response {
        with_retries(|| {
            let current = match self.store.user(user) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    info!(target: "otpd::audit", user = ?user, uid = caller.uid, op, outcome = "not_found");
                    return Some(refuse(
                        ErrorCode::NotFound,
                        format!("{user} is not enrolled"),
                    ));
                }
                Err(e) => return Some(internal(e)),
            };
            let next = change(&current);
            let record = match &next {
                Some(r) => RecordChange::Put(r),
                None => RecordChange::Delete,
            };
            match self
                .store
                .commit(user, Some(current.version), record, SourcesChange::ClearAll)
            {
                Ok(()) => {
                    info!(target: "otpd::audit", user = ?user, uid = caller.uid, op, outcome = "done");
                    Some(Response::Done {})
                }
                Err(StoreError::Conflict) => None,
                Err(e) => Some(internal(e)),
            }
        })
    }
}
