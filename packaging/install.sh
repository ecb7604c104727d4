#!/usr/bin/env bash
# Builds otpd and pam_otpd.so from this checkout, installs them, writes a
# default config and starts the daemon. For Debian 12 / Ubuntu with Rust
# installed (rustup). Run it as yourself; it uses sudo where it must.
set -euo pipefail
cd "$(dirname "$0")/.."

SBINDIR=/usr/local/sbin
CONFDIR=/etc/otpd
MANDIR=/usr/local/share/man
DOCDIR=/usr/local/share/doc/otpd
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
say() { printf '==> %s\n' "$*"; }

# 1. What the build needs from the system.
# make: jemalloc, the daemon's allocator, is built from source by cargo.
need=(gcc make libc6-dev libpam0g-dev)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing build dependencies: ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# 2. Build (as the invoking user, with their toolchain), with otpd's default
# cargo features: the self-enrolment pages (`web`) and the PostgreSQL store
# (`postgres`) are both part of what this installs.
command -v cargo >/dev/null || { echo "cargo not found: install Rust first (https://rustup.rs)" >&2; exit 1; }
say "building release binaries"
cargo build --release --locked -p otpd -p pam_otpd

# 3. Install: the daemon, the module into the distribution's PAM directory.
multiarch=$(gcc -print-multiarch 2>/dev/null || true)
pamdir=""
for d in "/usr/lib/$multiarch/security" "/lib/$multiarch/security" /usr/lib64/security /lib/security; do
  if [ -e "$d/pam_unix.so" ]; then pamdir=$d; break; fi
done
[ -n "$pamdir" ] || { echo "cannot find the PAM module directory (no pam_unix.so found)" >&2; exit 1; }
say "installing $SBINDIR/otpd and $pamdir/pam_otpd.so"
$SUDO install -D -m 0755 target/release/otpd "$SBINDIR/otpd"
$SUDO install -D -m 0644 target/release/libpam_otpd.so "$pamdir/pam_otpd.so"
say "installing the manual page pam_otpd(8) and the tested sshd/sudo examples in $DOCDIR/examples"
$SUDO install -D -m 0644 packaging/man/pam_otpd.8 "$MANDIR/man8/pam_otpd.8"
$SUDO install -d -m 0755 "$DOCDIR/examples/pam.d" "$DOCDIR/examples/sshd_config.d"
$SUDO install -m 0644 packaging/examples/pam.d/* "$DOCDIR/examples/pam.d/"
$SUDO install -m 0644 packaging/examples/sshd_config.d/* "$DOCDIR/examples/sshd_config.d/"
if [ ! -e "$CONFDIR/otpd.toml" ]; then
  say "writing the default config $CONFDIR/otpd.toml"
  $SUDO install -d -m 0755 "$CONFDIR"
  $SUDO install -m 0644 packaging/otpd.toml "$CONFDIR/otpd.toml"
else
  say "keeping the existing $CONFDIR/otpd.toml"
fi
$SUDO "$SBINDIR/otpd" --config "$CONFDIR/otpd.toml" check-config >/dev/null

# 4. The daemon runs as the system user otpd, as the packages set it up:
#    the store in /var/lib/otpd (0700, otpd's), the socket in /run/otpd.
if ! getent passwd otpd >/dev/null; then
  say "creating the system user otpd"
  $SUDO adduser --system --group --home /var/lib/otpd --no-create-home \
    --gecos "otpd TOTP daemon" otpd >/dev/null
fi
# A store from an older install made by root becomes otpd's: only while
# the directory still belongs to root (then nothing in it was written by
# the otpd user), never through a symbolic link, and never a file with a
# second name (a hard link could be any file on this file system). Once the
# directory is otpd's, its contents are the daemon's business: root does
# not touch them (see docs/security.md).
if [ -d /var/lib/otpd ] && [ ! -L /var/lib/otpd ] && [ "$(stat -c %u /var/lib/otpd)" = 0 ]; then
  skipped=$($SUDO find /var/lib/otpd -mindepth 1 -xdev ! -type d \( -type l -o ! -type f -o -links +1 \) -print)
  if [ -n "$skipped" ]; then
    printf 'warning: not handed over to otpd (links, or not plain files): %s\n' "$skipped" >&2
  fi
  $SUDO find /var/lib/otpd -mindepth 1 -xdev \( -type d -o \( -type f -links 1 \) \) \
    -exec chown -h otpd:otpd {} +
fi
$SUDO install -d -m 0700 -o otpd -g otpd /var/lib/otpd
# The key that seals the store (0400, otpd's): made once, never replaced.
if [ ! -e "$CONFDIR/otpd.key" ]; then
  say "creating the store's key $CONFDIR/otpd.key (back it up)"
  $SUDO "$SBINDIR/otpd" keygen "$CONFDIR/otpd.key" >/dev/null
fi
$SUDO chown otpd:otpd "$CONFDIR/otpd.key"

# 5. Start (or restart) the daemon.
if [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ]; then
  say "starting otpd.socket and otpd.service (systemd)"
  for unit in otpd.service otpd.socket; do
    sed "s|/usr/sbin/otpd|$SBINDIR/otpd|g" "packaging/systemd/$unit" |
      $SUDO tee "/etc/systemd/system/$unit" >/dev/null
  done
  $SUDO systemctl daemon-reload
  $SUDO systemctl enable otpd.socket otpd.service >/dev/null 2>&1
  $SUDO systemctl restart otpd.socket otpd.service
  how="systemctl status otpd; journalctl -u otpd"
else
  pidfile=/run/otpd.pid
  logfile=/var/log/otpd.log
  if [ -s "$pidfile" ] && $SUDO kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    say "stopping the running otpd (pid $(cat "$pidfile"))"
    $SUDO kill -TERM "$(cat "$pidfile")"
    for _ in $(seq 50); do $SUDO kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
  fi
  say "starting otpd as user otpd in the background (no systemd): log $logfile, pid file $pidfile"
  $SUDO install -d -m 0755 -o otpd -g otpd /run/otpd
  $SUDO sh -c "umask 077; nohup setpriv --reuid=otpd --regid=otpd --init-groups -- '$SBINDIR/otpd' --config '$CONFDIR/otpd.toml' serve >>'$logfile' 2>&1 </dev/null & echo \$! > '$pidfile'"
  how="tail $logfile; kill \$(cat $pidfile) to stop"
fi

# 6. Wait until it answers.
for _ in $(seq 100); do
  if $SUDO "$SBINDIR/otpd" --config "$CONFDIR/otpd.toml" list >/dev/null 2>&1; then
    cat <<MSG

otpd is running ($how).

Next step, enrol a user (prints a QR code to scan with the authenticator app):
    sudo otpd enroll $(id -un)

Then require the code for SSH and sudo: see "Using it for SSH and sudo" in README.md.
MSG
    exit 0
  fi
  sleep 0.1
done
echo "otpd did not come up; see: $how" >&2
exit 1
