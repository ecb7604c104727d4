//! "Approve on your phone" on a fleet: two daemons on one PostgreSQL. The
//! phone (a software passkey, [`otpd_tests::softkey::SoftKey`]) talks to
//! host A's pages only; a login waiting on host B is approved through them.

use otpd_tests::approve::{self, audit_lines, Login, Phone};
use otpd_tests::fleet::Fleet;
use otpd_tests::pages;
use otpd_tests::{require, settled_now, Limits, PamOutcome, PAM};
use std::time::{Duration, Instant};

#[test]
fn a_login_waiting_on_host_b_is_approved_through_host_as_pages() {
    if !require("approve_fleet", PAM) {
        return;
    }
    let Some(mut fleet) = Fleet::prepare("approve_fleet", 2, &Limits::default()) else {
        return;
    };
    for host in &mut fleet.hosts {
        host.append_config(&approve::config("\"30s\"", ""));
        host.spawn_daemon();
    }
    let (a, b) = (&fleet.hosts[0], &fleet.hosts[1]);
    let port_a = pages::port(a, "http");
    let t = settled_now(30, 5);
    a.enroll_active("alice", &[], t);
    let mut phone = Phone::pair_active(a, port_a, "alice");
    let entry = b.list_entry("alice").expect("alice on B");
    assert_eq!(entry["approvers"][0]["state"], "active", "B sees: {entry}");

    let service = b.pam_service("");
    let mut login = Login::start(&service, "alice", "192.0.2.40");
    let number = login.press_enter_for_number(Duration::from_secs(15));
    // Enter first: B waits for the store to say the request was decided.
    login.answer("");
    let request = phone.wait_request(Duration::from_secs(5));
    assert_eq!(request["source"], "192.0.2.40", "{request}");
    let (status, answer) = phone.approve(&request, Some(number));
    assert_eq!(status, 200, "approved through A: {answer}");
    let approved = Instant::now();
    let done = login.finish(Duration::from_secs(60));
    println!(
        "B's login ended {} ms after A approved",
        approved.elapsed().as_millis()
    );
    assert_eq!(done.outcome, PamOutcome::Success, "{}", done.output);
    assert!(
        audit_lines(b, "login")
            .iter()
            .any(|l| l.contains("outcome=\"approved\"")),
        "no approved login on B"
    );
    assert!(
        audit_lines(a, "approve")
            .iter()
            .any(|l| l.contains("outcome=\"approved\"")),
        "no approval on A"
    );
    fleet.assert_no_secrets_leaked();
}
