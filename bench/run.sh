#!/bin/bash
# The performance benchmark in one command (docs/performance.md):
#
#   sudo bench/run.sh                 # the full run: 1,000 and 100,000 users
#   sudo bench/run.sh --users 200 …   # any otpd-bench option
#
# Installs the peer modules (Debian's libpam-google-authenticator and
# libpam-oath) when missing, builds otpd, pam_otpd.so and the benchmark in
# release mode, and runs target/release/otpd-bench with the arguments given.
# On a machine without a syslog daemon (no /dev/log: containers, CI) it runs
# in a private mount namespace with an overlay on /dev, where the benchmark
# serves /dev/log itself; the host's /dev is never changed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "bench/run.sh: needs root (pam_google_authenticator's user=root, otpd's trusted caller, the mount namespace)" >&2
    exit 1
fi

packages=(libpam-google-authenticator libpam-oath libpam0g-dev)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench/run.sh: installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

cargo build --release --quiet -p otpd -p pam_otpd -p otpd-bench
bench=target/release/otpd-bench

if [ -e /dev/log ]; then
    exec "$bench" "$@"
fi

scratch=$(mktemp -d /tmp/otpd-bench-dev.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/upper" "$scratch/work"
# --propagation private: nothing mounted inside is seen outside.
unshare --mount --propagation private /bin/sh -c '
    mount -t overlay overlay -o "lowerdir=/dev,upperdir=$1/upper,workdir=$1/work" /dev || exit 1
    shift
    exec "$@"
' sh "$scratch" "$bench" --syslog-sink "$@"
