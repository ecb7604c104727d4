#!/usr/bin/env bash
# The one command that runs the whole test suite of otpd, on a fresh Debian 12
# or Ubuntu machine with only Rust installed: installs the test programs,
# then format check, clippy, build, and every test (the end-to-end ones drive
# the real libpam, pamtester, oathtool, zbarimg, strace and setpriv).
#
# Runs as root (the tests start the daemon, switch uids and attach strace);
# re-executes itself through sudo when started as another user.
set -euo pipefail

script="$(readlink -f "${BASH_SOURCE[0]}")"
repo="$(dirname "$(dirname "$script")")"

if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null; then
        echo "run-all.sh: needs root (to install packages, switch uids and run strace); run it as root" >&2
        exit 2
    fi
    export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
    export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
    # sudo's secure_path would replace PATH (and with it cargo): pass it on explicitly.
    # The variables that size the campaigns go along (under CI they may
    # make a campaign bigger than documented, never smaller).
    exec sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME,CI,FUZZ_SECONDS,FUZZ_TARGETS,FUZZ_JOBS,FUZZ_SANITIZER,OTPD_CRASH_KILLS,OTPD_CRASH_SEED,OTPD_REKEY_KILLS,OTPD_REKEY_SEED,OTPD_DAMAGE_SEED,OTPD_FLOOD_USERS,OTPD_FLOOD_SECS,OTPD_TEST_RUST_LOG \
        env "PATH=$PATH" bash "$script" "$@"
fi

cd "$repo"
started=$SECONDS
phase() {
    printf '\n==> %s (%d s so far)\n' "$1" "$((SECONDS - started))"
}

# The programs the tests run, by Debian/Ubuntu package.
# libnss-wrapper: a user database of the tests' own for pamtester and the
# benchmark (pam_otpd.so resolves PAM_USER with getpwnam_r).
# systemd: systemd-analyze, to check the unit the installer writes.
# man-db: man, which renders the shipped man pages (otpd/tests/manpages.rs).
# openssh-server/-client, sudo: the real logins; openssl: the test users'
# password hashes and the test CAs' certificates; curl: a client that verifies
# the pages' certificate chain; chromium, chromium-driver: the enrolment page in a real
# headless browser; lintian, rpm, dpkg-dev, binutils: building and checking
# the .deb and .rpm; libpam-google-authenticator, libpam-oath: the peers in
# the performance benchmark (bench/run.sh); postgresql: the server (initdb,
# pg_ctl, postgres) and psql of the PostgreSQL store's tests (tests/src/postgres.rs).
packages=(make libpam0g-dev pamtester oathtool zbar-tools libpam-wrapper libnss-wrapper strace util-linux systemd man-db
          openssh-server openssh-client sudo openssl curl chromium chromium-driver
          lintian rpm dpkg-dev binutils libpam-google-authenticator libpam-oath postgresql prometheus)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
# rustup brings no linker of its own.
command -v cc >/dev/null || missing+=(gcc libc6-dev)
# libfuzzer-sys (fuzz/) builds libFuzzer, which is C++.
command -v c++ >/dev/null || missing+=(g++)
if [ "${#missing[@]}" -gt 0 ]; then
    phase "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # The tests start their own sshd on a loopback port; installing
    # openssh-server must not start the host's on port 22. policy-rc.d is
    # Debian's switch for that (invoke-rc.d and deb-systemd-invoke obey it).
    policy_rc_d=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy_rc_d=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' > "$policy_rc_d"
        chmod 0755 "$policy_rc_d"
        trap 'rm -f "$policy_rc_d"' EXIT
    fi
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
    if [ -n "$policy_rc_d" ]; then
        rm -f "$policy_rc_d"
        trap - EXIT
    fi
else
    phase "test programs already installed"
fi

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    phase "adding rustfmt and clippy"
    rustup component add rustfmt clippy
fi

phase "cargo fmt --all -- --check"
cargo fmt --all -- --check

phase "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# The daemon without its optional parts (the cargo features `web` and
# `postgres`, on by default): it must build and be clippy clean too. Before
# `cargo build --workspace`, which puts the default target/debug/otpd (the
# one the tests run) back.
phase "cargo clippy -p otpd --no-default-features -- -D warnings"
cargo clippy -p otpd --no-default-features -- -D warnings
phase "cargo build -p otpd --no-default-features"
cargo build -p otpd --no-default-features

# The integration tests run target/debug/otpd, libpam_otpd.so and
# otpd-test-peer: they must be built before `cargo test`.
phase "cargo build --workspace"
cargo build --workspace

# The hardening campaigns, as TEST_FILE::TEST_NAME (tests/tests/TEST_FILE.rs).
# This one list drives both test phases: the first runs every test of the
# workspace but these (--exact --skip), the second runs exactly these, one
# at a time and with --nocapture, so that their figures (docs/security.md)
# are printed. Before either, check_campaigns makes sure that each name is
# the name of exactly one test in the workspace, in that file: a renamed
# campaign fails the run instead of running nothing, and no other test is
# skipped by the first phase without being run by the second.
campaigns=(
    crash_campaign::sigkill_under_load_loses_no_acknowledged_result_and_accepts_no_code_twice
    disk_full::a_full_state_dir_fails_closed_damages_nothing_and_service_resumes_with_space
    store_damage::a_damaged_store_is_refused_by_name_or_read_intact_never_started_empty
    keys::rekey_killed_at_random_moments_loses_nothing
    abuse::the_daemon_keeps_serving_well_behaved_clients_under_attack
    abuse::no_such_user_and_wrong_code_look_alike_from_the_socket
)

# Every test of the workspace, one a line: TARGET::NAME, TARGET the name of
# the test binary (an integration test's file name; a crate's for its unit
# tests; doctests-CRATE for doc tests). From `cargo test -- --list`.
list_tests() {
    cargo test --workspace -- --list 2>&1 | awk '
        /^ *Running / { target = $NF; gsub(/[()]/, "", target); sub(/.*\//, "", target)
                        sub(/-[0-9a-f]+$/, "", target); next }
        /^ *Doc-tests / { target = "doctests-" $2; next }
        /: (test|bench)$/ { sub(/: (test|bench)$/, ""); print target "::" $0 }'
    return "${PIPESTATUS[0]}"
}

# Fails unless each campaign names exactly one test of the workspace, and
# that test is in the campaign's file.
check_campaigns() {
    local all campaign name same failed=0
    all="$(list_tests)" || { echo "run-all.sh: cargo test -- --list failed" >&2; return 1; }
    for campaign in "${campaigns[@]}"; do
        name="${campaign#*::}"
        # The tests of that name, whatever their binary.
        same="$(awk -v name="$name" '{ test = $0; sub(/^[^:]*::/, "", test) } test == name' <<<"$all")"
        if ! grep -q -x -F -- "$campaign" <<<"$all"; then
            echo "run-all.sh: the campaign $campaign is no test of the workspace (renamed or moved?)" >&2
            failed=1
        elif [ "$(wc -l <<<"$same")" -ne 1 ]; then
            echo "run-all.sh: several tests are named $name; --exact --skip would leave out one the campaigns do not run:" >&2
            sed 's/^/    /' <<<"$same" >&2
            failed=1
        fi
    done
    if [ "$failed" -eq 0 ]; then
        echo "${#campaigns[@]} campaigns, each exactly one of the $(wc -l <<<"$all") tests of the workspace"
    fi
    return "$failed"
}

phase "the test list: each campaign is exactly one test"
check_campaigns

campaign_names=("${campaigns[@]#*::}")
campaign_files=()
mapfile -t campaign_files < <(printf '%s\n' "${campaigns[@]%%::*}" | sort -u)
skips=()
for name in "${campaign_names[@]}"; do
    skips+=(--skip "$name")
done

# Four threads: the tests mostly wait on child processes, and four keep the
# timing assertions (answers within the PAM timeout) honest on two cores.
phase "cargo test --workspace (without the campaigns)"
cargo test --workspace --no-fail-fast -- --test-threads=4 --exact "${skips[@]}"

phase "the hardening campaigns, with their figures: ${campaign_names[*]}"
campaign_log="$(mktemp "${TMPDIR:-/tmp}/otpd-campaigns.XXXXXX")"
trap 'rm -f "$campaign_log"' EXIT
cargo test -p otpd-tests "${campaign_files[@]/#/--test=}" --no-fail-fast -- --test-threads=1 --nocapture \
    --exact "${campaign_names[@]}" 2>&1 | tee "$campaign_log"
# Each campaign ran (and passed): as many as the list has.
ran="$(sed -n 's/^test result: ok\. \([0-9]*\) passed.*/\1/p' "$campaign_log" | awk '{ n += $1 } END { print n + 0 }')"
rm -f "$campaign_log"
trap - EXIT
if [ "$ran" -ne "${#campaigns[@]}" ]; then
    echo "run-all.sh: $ran campaigns passed, of ${#campaigns[@]}" >&2
    exit 1
fi

phase "tests/fuzz.sh (each libFuzzer target for ${FUZZ_SECONDS:-60} s)"
tests/fuzz.sh

# The README's install command, end to end, in a private mount namespace.
phase "packaging/test-install.sh"
packaging/test-install.sh

# The hardening of the shipped unit, as systemd measures it, against the
# figures the docs claim (--threshold, in tenths: 4 is "0.4"): the unit
# alone (README), with the drop-in network.conf (README) and with
# sms-user.conf (docs/security.md). Each is measured in a directory of its
# own: next to packaging/systemd/otpd.service.d/, systemd-analyze would
# read both drop-ins with the unit.
unit_exposure() { # unit_exposure MAX_TENTHS [DROP_IN]
    local max="$1" drop_in="${2:-}" dir status=0
    dir="$(mktemp -d "${TMPDIR:-/tmp}/otpd-unit.XXXXXX")"
    cp packaging/systemd/otpd.service "$dir/"
    if [ -n "$drop_in" ]; then
        mkdir "$dir/otpd.service.d"
        cp "packaging/systemd/otpd.service.d/$drop_in" "$dir/otpd.service.d/"
    fi
    systemd-analyze security --offline=true --threshold="$max" "$dir/otpd.service" >"$dir/log" 2>&1 || status=$?
    printf '  %-28s %s (at most %d.%d)\n' "otpd.service${drop_in:+ + $drop_in}" \
        "$(sed -n 's/.*Overall exposure level for otpd.service: //p' "$dir/log")" "$((max / 10))" "$((max % 10))"
    if [ "$status" -ne 0 ]; then
        grep '✗' "$dir/log" | sed 's/^/    /' || true
        echo "run-all.sh: systemd-analyze security: otpd.service${drop_in:+ with $drop_in} is exposed more than the docs say" >&2
    fi
    rm -rf "$dir"
    return "$status"
}
phase "systemd-analyze security --offline=true --threshold: packaging/systemd/otpd.service"
units_ok=true
unit_exposure 4 || units_ok=false
unit_exposure 12 network.conf || units_ok=false
unit_exposure 8 sms-user.conf || units_ok=false
$units_ok

# The .deb and the .rpm: built, linted, installed, used, purged.
phase "packaging/test-packages.sh"
packaging/test-packages.sh

# The performance benchmark (docs/performance.md) in a small configuration,
# so that it cannot rot: it prints its figures and asserts no time, but
# --check fails the run if otpd refuses a valid code or accepts one code
# twice in the same-code race.
phase "bench/run.sh --check (small configuration)"
bench/run.sh --check --users 500 --threads 1,8 --seconds 2 --max-logins 2000 --race 8,64 --rounds 2

phase "all done"
