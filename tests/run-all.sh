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
    exec sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME,CI,FUZZ_SECONDS env "PATH=$PATH" bash "$script" "$@"
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
# openssh-server/-client, sudo: the real logins; openssl: the test users'
# password hashes and the test CAs' certificates; curl: a client that verifies
# the pages' certificate chain; chromium, chromium-driver: the enrolment page in a real
# headless browser; lintian, rpm, dpkg-dev, binutils: building and checking
# the .deb and .rpm; libpam-google-authenticator, libpam-oath: the peers in
# the performance benchmark (bench/run.sh); postgresql: the server (initdb,
# pg_ctl, postgres) and psql of the PostgreSQL store's tests (tests/src/postgres.rs).
packages=(libpam0g-dev pamtester oathtool zbar-tools libpam-wrapper libnss-wrapper strace util-linux systemd
          openssh-server openssh-client sudo openssl curl chromium chromium-driver
          lintian rpm dpkg-dev binutils libpam-google-authenticator libpam-oath postgresql)
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

# The integration tests run target/debug/otpd, libpam_otpd.so and
# otpd-test-peer: they must be built before `cargo test`.
phase "cargo build --workspace"
cargo build --workspace

# Four threads: the tests mostly wait on child processes, and four keep the
# timing assertions (answers within the PAM timeout) honest on two cores.
# The hardening campaigns run on their own afterwards, one at a time and
# with --nocapture, so that their figures (docs/security.md) are printed.
campaigns=(crash_campaign disk_full store_damage keys abuse)
phase "cargo test --workspace (without the campaigns)"
cargo test --workspace --no-fail-fast -- --test-threads=4 \
    --skip sigkill_under_load --skip a_full_state_dir --skip a_damaged_store \
    --skip rekey_killed --skip the_daemon_keeps_serving --skip no_such_user_and_wrong_code

phase "the hardening campaigns, with their figures: ${campaigns[*]}"
cargo test -p otpd-tests "${campaigns[@]/#/--test=}" --no-fail-fast -- --test-threads=1 --nocapture \
    sigkill_under_load a_full_state_dir a_damaged_store rekey_killed \
    the_daemon_keeps_serving no_such_user_and_wrong_code

# The README's install command, end to end, in a private mount namespace.
phase "tests/fuzz.sh (each libFuzzer target for ${FUZZ_SECONDS:-60} s)"
tests/fuzz.sh

phase "packaging/test-install.sh"
packaging/test-install.sh

# The hardening of the shipped unit, as systemd measures it.
phase "systemd-analyze security --offline=true packaging/systemd/otpd.service"
systemd-analyze security --offline=true packaging/systemd/otpd.service | tail -n 1

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
