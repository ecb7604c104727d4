#!/usr/bin/env bash
# CI test of the packages, as a sysadmin meets them:
#   - packaging/build-packages.sh builds the .deb and the .rpm;
#   - lintian on the .deb: no errors (warnings are printed);
#   - rpm -qlp on the .rpm against the expected list, its scriptlets and
#     config file;
#   - dpkg -i on this machine: paths, owners, modes; the installed
#     `otpd --version` and `otpd check-config`; the installed daemon started
#     as the otpd user without systemd; a user enrolled with the installed
#     CLI, the code computed by oathtool, a login through the installed
#     module with the real libpam (pamtester, `auth required pam_otpd.so` by
#     its bare name), a replay refused;
#   - `otpd rekey` as the README shows it, on the installed package: logins
#     before and after, the new key installed as otpd's, no file of root's
#     left in /var/lib/otpd;
#   - the pam-auth-update profile: off after installation, on with
#     `pam-auth-update --enable otpd`, then a real password + code login
#     through common-auth; an upgrade keeps it, removal takes it out;
#   - dpkg -r keeps config and secrets, dpkg -i brings the token back,
#     dpkg --purge: common-auth without pam_otpd, files gone, /var/lib/otpd
#     (the secrets) deleted, the otpd user kept (see packaging/deb/postrm).
#
# Needs root. Leaves the host as it found it: /etc/pam.d/common-* and
# /var/lib/pam are saved and restored, the package is purged, the test
# users (and the otpd user, if it did not exist before) are deleted, an
# existing /etc/otpd or /var/lib/otpd is moved aside and put back, even on
# failure (trap). Without systemd as PID 1 (containers, CI) it runs in a
# private mount namespace with an empty /run/otpd, so another otpd on this
# host is not disturbed. With systemd as PID 1 the packaged units are used.
# Ends with "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

[ "$(id -u)" -eq 0 ] || { echo "test-packages: needs root (dpkg -i)" >&2; exit 1; }
with_systemd=false
[ -d /run/systemd/system ] && with_systemd=true

if ! $with_systemd && [ "${OTPD_PKG_IN_NAMESPACE:-}" != 1 ]; then
  created_run=false
  [ -d /run/otpd ] || { mkdir -p /run/otpd; created_run=true; }
  status=0
  env OTPD_PKG_IN_NAMESPACE=1 unshare --mount --propagation private "$0" "$@" || status=$?
  if $created_run; then rmdir /run/otpd 2>/dev/null || true; fi
  exit "$status"
fi
if ! $with_systemd; then
  mount -t tmpfs -o mode=0755 tmpfs /run/otpd
fi

passed=0
failed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }
check() { # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
mode_owner() { # mode_owner PATH MODE USER GROUP
  local got
  got=$(stat -c '%a %U %G' "$1" 2>/dev/null)
  if [ "$got" = "$2 $3 $4" ]; then ok "$1 is $2 $3:$4"; else bad "$1 is '${got:-missing}', want $2 $3:$4"; fi
}
absent() { if [ -e "$1" ] || [ -L "$1" ]; then bad "$1 still there"; else ok "$1 gone"; fi; }
# without_pam_otpd FILE...: every FILE is there and none mentions pam_otpd
# (a missing or unreadable file is a failure, not a pass).
without_pam_otpd() {
  local hits status=0
  hits=$(grep -l pam_otpd "$@" 2>&1) || status=$?
  case "$status" in
    1) return 0 ;;
    0) echo "   they mention pam_otpd: $(echo $hits)"; return 1 ;;
    *) echo "   grep failed: $hits"; return 1 ;;
  esac
}
apt_install() { # apt_install COMMAND PACKAGE
  command -v "$1" >/dev/null && return 0
  echo "test-packages: installing $2"
  apt-get update -qq >/dev/null 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null 2>&1
  command -v "$1" >/dev/null || { echo "test-packages: cannot install $2" >&2; exit 1; }
}

if dpkg-query -W -f='${Status}' otpd 2>/dev/null | grep -q 'ok installed\|config-files'; then
  echo "test-packages: the otpd package is already on this host; this test would purge it. Remove it first." >&2
  exit 1
fi

scratch=$(mktemp -d)
# pam_otpd.so refuses a user the system does not know (getpwnam_r), so
# every user logged in with pamtester has an account, made here (without a
# home or a login shell) and deleted at the end.
TEST_USER=otpdpkgtest      # enrolled, checked with pamtester
REKEY_USER=otpdpkgrekey    # enrolled for the rekey step only (pamtester)
LOGIN_USER=otpdpkglogin    # a password too, for common-auth
PAM_SERVICE=/etc/pam.d/otpd-pkg-test
PAM_COMMON_SERVICE=/etc/pam.d/otpd-pkg-test-common
daemon_pid=""
otpd_user_existed=false
getent passwd otpd >/dev/null && otpd_user_existed=true
login_user_existed=false
getent passwd "$LOGIN_USER" >/dev/null && login_user_existed=true
made_users=()  # the accounts this test made, deleted by cleanup

# Saved host state, put back by cleanup.
mkdir -p "$scratch/pam.d" "$scratch/var-lib-pam" "$scratch/aside"
cp -a /etc/pam.d/common-* "$scratch/pam.d/"
[ -d /var/lib/pam ] && cp -a /var/lib/pam/. "$scratch/var-lib-pam/"
for d in /etc/otpd /var/lib/otpd; do
  [ -e "$d" ] && mv "$d" "$scratch/aside/$(echo "$d" | tr / _)"
done

stop_daemon() {
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  daemon_pid=""
}
cleanup() {
  stop_daemon
  if dpkg-query -W -f='${Status}' otpd 2>/dev/null | grep -q 'installed\|config-files\|unpacked\|half'; then
    DEBIAN_FRONTEND=noninteractive dpkg --purge otpd >/dev/null 2>&1 || true
  fi
  rm -f "$PAM_SERVICE" "$PAM_COMMON_SERVICE"
  cp -a "$scratch/pam.d/." /etc/pam.d/
  if [ -d /var/lib/pam ]; then
    rm -rf /var/lib/pam/*
    cp -a "$scratch/var-lib-pam/." /var/lib/pam/
  fi
  if ! $login_user_existed && getent passwd "$LOGIN_USER" >/dev/null; then userdel "$LOGIN_USER" 2>/dev/null || true; fi
  for u in "${made_users[@]}"; do userdel "$u" 2>/dev/null || true; done
  if ! $otpd_user_existed && getent passwd otpd >/dev/null; then
    userdel otpd 2>/dev/null || true
    getent group otpd >/dev/null && groupdel otpd 2>/dev/null || true
  fi
  for d in /etc/otpd /var/lib/otpd; do
    local saved
    saved="$scratch/aside/$(echo "$d" | tr / _)"
    if [ -e "$saved" ]; then rm -rf "$d"; mv "$saved" "$d"; fi
  done
  if grep -q pam_otpd /etc/pam.d/common-* 2>/dev/null; then
    echo "test-packages: WARNING: /etc/pam.d/common-* still mention pam_otpd after restoring" >&2
  fi
  rm -rf "$scratch"
}
trap cleanup EXIT

# The daemon as the otpd user, without systemd; /run/otpd as systemd's
# RuntimeDirectory= would make it (the packaged units, with systemd).
start_daemon() {
  if $with_systemd; then
    systemctl start otpd.socket otpd.service
  else
    install -d -m 0755 -o otpd -g otpd /run/otpd
    (umask 077; exec setpriv --reuid=otpd --regid=otpd --init-groups --no-new-privs \
      /usr/sbin/otpd serve >>"$scratch/otpd.log" 2>&1 </dev/null) &
    daemon_pid=$!
  fi
  for _ in $(seq 100); do
    /usr/sbin/otpd list >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "--- otpd log"; tail -n 20 "$scratch/otpd.log" 2>/dev/null
  return 1
}
code_at() { oathtool --totp -b "$1" -N "@$2"; }
# pam_refused SERVICE USER ANSWER...: pamtester fails with "Authentication
# failure" (PAM_AUTH_ERR: a wrong or used code), not any failure (an
# unknown user, a daemon that did not answer would pass a bare '!').
pam_refused() {
  local service=$1 user=$2 out answer
  shift 2
  if out=$( { for answer in "$@"; do printf '%s\n' "$answer"; sleep 0.5; done; } |
    pamtester "$service" "$user" authenticate 2>&1); then
    echo "   accepted"
    return 1
  fi
  case "$out" in *"Authentication failure"*) return 0 ;; esac
  echo "   refused, but not as a wrong code: $out"
  return 1
}
enroll() { # enroll USER: prints the secret of a confirmed token
  local uri secret now
  uri=$(/usr/sbin/otpd enroll "$1" </dev/null | grep '^otpauth://') || return 1
  secret=$(printf '%s' "$uri" | sed -n 's/.*secret=\([A-Z2-7]*\).*/\1/p')
  now=$(date +%s)
  /usr/sbin/otpd confirm "$1" "$(code_at "$secret" $((now - 30)))" >/dev/null || return 1
  echo "$secret"
}

apt_install lintian lintian
apt_install rpm rpm
apt_install pamtester pamtester
apt_install oathtool oathtool
for u in "$TEST_USER" "$REKEY_USER"; do
  if ! getent passwd "$u" >/dev/null; then
    useradd -M -s /usr/sbin/nologin "$u" && made_users+=("$u")
  fi
done

# ---------------------------------------------------------------- build
echo "== build"
build_start=$(date +%s)
if ! packaging/build-packages.sh; then
  bad "packaging/build-packages.sh"
  echo "$passed passed, $failed failed"
  exit 1
fi
build_secs=$(($(date +%s) - build_start))
ok "packaging/build-packages.sh (${build_secs}s)"
deb=$(ls target/packages/*.deb)
rpmfile=$(ls target/packages/*.rpm)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
pamdir=/usr/lib/$multiarch/security

# ---------------------------------------------------------------- lintian
echo "== lintian $(basename "$deb")"
# As an unprivileged user when possible (lintian advises against root).
lint_dir=$(mktemp -d)
chmod 0755 "$lint_dir"
cp "$deb" "$lint_dir/"
as_nobody=(setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME="$lint_dir")
"${as_nobody[@]}" test -r "$lint_dir/$(basename "$deb")" 2>/dev/null || as_nobody=()
lintian_out=$("${as_nobody[@]}" lintian --tag-display-limit 0 -I "$lint_dir/$(basename "$deb")" 2>&1)
rm -rf "$lint_dir"
echo "$lintian_out" | sed 's/^/   /'
if echo "$lintian_out" | grep -q '^E: '; then
  bad "lintian: errors"
else
  ok "lintian: no errors ($(echo "$lintian_out" | grep -c '^W: ') warnings, $(echo "$lintian_out" | grep -c '^I: ') notes)"
fi

# ---------------------------------------------------------------- rpm
echo "== rpm $(basename "$rpmfile")"
expected_rpm=$(sort <<'EOF'
/etc/otpd/otpd.toml
/usr/lib/systemd/system/otpd.service
/usr/lib/systemd/system/otpd.socket
/usr/lib/sysusers.d/otpd.conf
/usr/lib/tmpfiles.d/otpd.conf
/usr/lib64/security/pam_otpd.so
/usr/sbin/otpd
/usr/share/bash-completion/completions/otpd
/usr/share/doc/otpd/README.md
/usr/share/doc/otpd/examples/pam.d/otp-users-only.snippet
/usr/share/doc/otpd/examples/pam.d/sshd.key-code
/usr/share/doc/otpd/examples/pam.d/sshd.password-code
/usr/share/doc/otpd/examples/pam.d/sshd.password-once
/usr/share/doc/otpd/examples/pam.d/sudo.code
/usr/share/doc/otpd/examples/pam.d/sudo.password-code
/usr/share/doc/otpd/examples/sshd_config.d/otpd-key-code.conf
/usr/share/doc/otpd/examples/sshd_config.d/otpd-password-code.conf
/usr/share/doc/otpd/examples/sshd_config.d/otpd-password-once.conf
/usr/share/doc/otpd/examples/systemd/otpd.service.d/network.conf
/usr/share/doc/otpd/examples/systemd/otpd.service.d/sms-user.conf
/usr/share/fish/vendor_completions.d/otpd.fish
/usr/share/licenses/otpd/LICENSE
/usr/share/man/man5/otpd.toml.5.gz
/usr/share/man/man8/otpd.8.gz
/usr/share/man/man8/pam_otpd.8.gz
/usr/share/zsh/site-functions/_otpd
EOF
)
got_rpm=$(rpm -qlp "$rpmfile" 2>/dev/null | sort)
if [ "$got_rpm" = "$expected_rpm" ]; then
  ok "rpm -qlp: the $(echo "$expected_rpm" | wc -l) expected files"
else
  bad "rpm -qlp differs from the expected list (< expected, > got):"
  diff <(echo "$expected_rpm") <(echo "$got_rpm") | grep '^[<>]' | sed 's/^/   /'
fi
check "rpm: /etc/otpd/otpd.toml is %config(noreplace)" \
  test "$(rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpmfile" 2>/dev/null | grep '^/etc/otpd/otpd.toml ')" = "/etc/otpd/otpd.toml cn"
rpm_modes=$(rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME} %{FILENAMES}\n]' "$rpmfile" 2>/dev/null)
check "rpm: /usr/sbin/otpd -rwxr-xr-x root" grep -qx -- '-rwxr-xr-x root /usr/sbin/otpd' <<<"$rpm_modes"
check "rpm: pam_otpd.so -rwxr-xr-x root" grep -qx -- '-rwxr-xr-x root /usr/lib64/security/pam_otpd.so' <<<"$rpm_modes"
rpm_scripts=$(rpm -qp --scripts "$rpmfile" 2>/dev/null)
# cargo-generate-rpm takes a script path it cannot find as the script's text:
# make sure the real scriptlets are in.
check "rpm: %pre creates the otpd user (sysusers, useradd fallback)" \
  bash -c 'grep -q "systemd-sysusers" <<<"$1" && grep -q "useradd -r -g otpd" <<<"$1"' _ "$rpm_scripts"
check "rpm: %post creates /var/lib/otpd and enables the units" \
  bash -c 'grep -q "systemd-tmpfiles --create /usr/lib/tmpfiles.d/otpd.conf" <<<"$1" && grep -q "enable --now otpd.socket" <<<"$1"' _ "$rpm_scripts"
check "rpm: %preun and %postun stop / restart the units" \
  bash -c 'grep -q "disable --now otpd.service otpd.socket" <<<"$1" && grep -q "try-restart otpd.service" <<<"$1"' _ "$rpm_scripts"
check "the maintainer scripts and scriptlets parse (sh -n)" \
  bash -c 'for f in packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm packaging/rpm/*.sh; do sh -n "$f" || exit 1; done'
rpm -qp --requires "$rpmfile" 2>/dev/null | grep -q 'libpam.so.0' && ok "rpm: requires libpam.so.0" || bad "rpm: no libpam requirement"

# ---------------------------------------------------------------- install
echo "== dpkg -i $(basename "$deb")"
if DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >"$scratch/dpkg-i.log" 2>&1; then
  ok "dpkg -i"
else
  bad "dpkg -i"; sed 's/^/   /' "$scratch/dpkg-i.log"
  echo "$passed passed, $failed failed"; exit 1
fi
mode_owner /usr/sbin/otpd 755 root root
mode_owner "$pamdir/pam_otpd.so" 644 root root
mode_owner /etc/otpd/otpd.toml 644 root root
mode_owner /var/lib/otpd 700 otpd otpd
mode_owner /etc/otpd/otpd.key 400 otpd otpd
for f in /lib/systemd/system/otpd.service /lib/systemd/system/otpd.socket \
  /usr/lib/sysusers.d/otpd.conf /usr/lib/tmpfiles.d/otpd.conf /usr/share/pam-configs/otpd \
  /usr/share/man/man8/otpd.8.gz /usr/share/man/man8/pam_otpd.8.gz /usr/share/man/man5/otpd.toml.5.gz \
  /usr/share/bash-completion/completions/otpd /usr/share/zsh/vendor-completions/_otpd \
  /usr/share/fish/vendor_completions.d/otpd.fish /usr/share/doc/otpd/copyright \
  /usr/share/doc/otpd/changelog.Debian.gz /usr/share/doc/otpd/README.md \
  /usr/share/doc/otpd/examples/pam.d/sshd.password-code /usr/share/doc/otpd/examples/pam.d/sudo.password-code \
  /usr/share/doc/otpd/examples/sshd_config.d/otpd-password-code.conf \
  /usr/share/doc/otpd/examples/systemd/otpd.service.d/network.conf \
  /usr/share/doc/otpd/examples/systemd/otpd.service.d/sms-user.conf; do
  mode_owner "$f" 644 root root
done
check "otpd.service starts /usr/sbin/otpd serve" \
  grep -qx 'ExecStart=/usr/sbin/otpd serve' /lib/systemd/system/otpd.service
check "otpd.service runs as User=otpd" grep -qx 'User=otpd' /lib/systemd/system/otpd.service
check "otpd.service hands the key in with LoadCredential=" \
  grep -qx 'LoadCredential=otpd.key:/etc/otpd/otpd.key' /lib/systemd/system/otpd.service
check "otpd.socket listens on /run/otpd/otpd.sock" grep -qx 'ListenStream=/run/otpd/otpd.sock' /lib/systemd/system/otpd.socket
check "/etc/otpd/otpd.toml is a conffile" bash -c "dpkg-query -W -f='\${Conffiles}' otpd | grep -q '^ /etc/otpd/otpd.toml '"
check "the manual pages open (man -l)" bash -c 'for p in /usr/share/man/man8/otpd.8.gz /usr/share/man/man8/pam_otpd.8.gz /usr/share/man/man5/otpd.toml.5.gz; do zcat "$p" | grep -q "^\.TH" || exit 1; done'
passwd_line=$(getent passwd otpd)
IFS=: read -r _ _ otpd_uid _ _ otpd_home otpd_shell <<<"$passwd_line"
check "user otpd exists, a system account (uid $otpd_uid)" test -n "$passwd_line" -a "${otpd_uid:-1000}" -lt 1000
check "user otpd: home /var/lib/otpd, shell $otpd_shell" \
  bash -c '[ "$1" = /var/lib/otpd ] && case "$2" in */nologin|/bin/false) true;; *) false;; esac' _ "$otpd_home" "$otpd_shell"
check "group otpd exists" bash -c "getent group otpd >/dev/null"
check "common-auth has no pam_otpd after installing (the profile is off by default)" \
  without_pam_otpd /etc/pam.d/common-auth

version_out=$(/usr/sbin/otpd --version 2>&1)
check "otpd --version: $version_out" grep -q "^otpd $(dpkg-query -W -f='${Version}' otpd | sed 's/-[^-]*$//')" <<<"$version_out"
if /usr/sbin/otpd check-config >"$scratch/check-config.out" 2>&1; then
  ok "otpd check-config on the shipped /etc/otpd/otpd.toml:"
else
  bad "otpd check-config:"
fi
sed 's/^/   /' "$scratch/check-config.out"
check "otpd check-config as the otpd user (the daemon reads it as otpd)" \
  bash -c 'setpriv --reuid=otpd --regid=otpd --init-groups /usr/sbin/otpd check-config /etc/otpd/otpd.toml >/dev/null' 

# ---------------------------------------------------------------- daemon, enrol, login
echo "== the installed daemon as user otpd, the installed CLI and module"
if start_daemon; then ok "otpd serve is up (as otpd, $($with_systemd && echo systemd || echo 'no systemd'))"; else bad "otpd serve did not come up"; fi
if ! $with_systemd; then
  check "the daemon runs as otpd" test "$(ps -o user= -p "$daemon_pid" 2>/dev/null | tr -d ' ')" = otpd
fi
check "/run/otpd/otpd.sock is a socket owned by otpd or root" \
  bash -c '[ -S /run/otpd/otpd.sock ] && case "$(stat -c %U /run/otpd/otpd.sock)" in otpd|root) true;; *) false;; esac'
secret=$(enroll "$TEST_USER")
check "otpd enroll + confirm with oathtool's code" test -n "$secret"
check "the store is the otpd user's alone" \
  bash -c '[ -z "$(find /var/lib/otpd ! -user otpd -print -quit)" ] && [ -z "$(find /var/lib/otpd -perm /077 -print -quit)" ]'
# In clear the secret would be there in base32 or as the JSON byte array
# that records held before encryption at rest.
secret_array="[$(printf '%s' "$secret" | base32 -d | od -An -tu1 -v | tr -s ' \n' ',' | sed 's/^,//; s/,$//')]"
check "the store holds the secret sealed: neither $secret nor $secret_array is in /var/lib/otpd" \
  bash -c '[ "${#2}" -gt 20 ] && ! grep -rqF -e "$1" -e "$2" /var/lib/otpd' _ "$secret" "$secret_array"

printf 'auth required pam_otpd.so\naccount required pam_permit.so\n' >"$PAM_SERVICE"
now=$(date +%s)
code=$(code_at "$secret" "$now")
check "pamtester: a fresh code logs in (auth required pam_otpd.so, by bare name)" \
  bash -c 'echo "$1" | pamtester otpd-pkg-test "$2" authenticate' _ "$code" "$TEST_USER"
check "pamtester: the same code again is refused (replay)" pam_refused otpd-pkg-test "$TEST_USER" "$code"
if ! $with_systemd; then
  check "the daemon's audit line says replayed" grep -q 'outcome="replayed"' "$scratch/otpd.log"
fi
check "pamtester: a wrong code is refused" pam_refused otpd-pkg-test "$TEST_USER" 000000

# ---------------------------------------------------------------- rekey
# README, "A new key", as written there: stop the units (or the daemon
# started by hand), `sudo otpd rekey NEWKEYFILE`, start again. The key file
# belongs to otpd, the store is otpd's: the rekey must read the one and
# leave no file of root's in the other.
echo "== otpd rekey on the installed package"
rekey_secret=$(enroll "$REKEY_USER")
check "enrolled $REKEY_USER" test -n "$rekey_secret"
rekey_now=$(date +%s)
check "before the rekey: $REKEY_USER logs in" \
  bash -c 'echo "$1" | pamtester otpd-pkg-test "$2" authenticate' _ "$(code_at "$rekey_secret" "$rekey_now")" "$REKEY_USER"
cp -p /etc/otpd/otpd.key "$scratch/otpd.key.before"
if $with_systemd; then systemctl stop otpd.socket otpd.service; else stop_daemon; fi
if /usr/sbin/otpd rekey /etc/otpd/otpd.key.new >"$scratch/rekey.out" 2>&1; then
  ok "otpd rekey /etc/otpd/otpd.key.new: $(tr '\n' ' ' <"$scratch/rekey.out")"
else
  bad "otpd rekey /etc/otpd/otpd.key.new:"; sed 's/^/   /' "$scratch/rekey.out"
fi
check "after the rekey: every file in /var/lib/otpd is otpd's, none readable by others" \
  bash -c '[ -z "$(find /var/lib/otpd ! -user otpd -print -quit)" ] && [ -z "$(find /var/lib/otpd -perm /077 -print -quit)" ]'
absent /var/lib/otpd/store.before-rekey
mode_owner /etc/otpd/otpd.key 400 otpd otpd
check "after the rekey: /etc/otpd/otpd.key holds the new key" cmp -s /etc/otpd/otpd.key /etc/otpd/otpd.key.new
check "after the rekey: the key is not the old one" bash -c '! cmp -s "$1" /etc/otpd/otpd.key' _ "$scratch/otpd.key.before"
# As the README says: keep it in the backup, or delete it.
rm -f /etc/otpd/otpd.key.new "$scratch/otpd.key.before"
if start_daemon; then ok "otpd serve is up after the rekey"; else bad "otpd serve did not come up after the rekey"; fi
check "after the rekey: $REKEY_USER logs in (next step's code)" \
  bash -c 'echo "$1" | pamtester otpd-pkg-test "$2" authenticate' _ "$(code_at "$rekey_secret" $((rekey_now + 30)))" "$REKEY_USER"
check "after the rekey: $TEST_USER's used code is still refused" pam_refused otpd-pkg-test "$TEST_USER" "$code"

# ---------------------------------------------------------------- pam-auth-update
echo "== pam-auth-update profile"
DEBIAN_FRONTEND=noninteractive pam-auth-update --enable otpd >"$scratch/pau.log" 2>&1
if grep -q '^auth.*required.*pam_otpd\.so' /etc/pam.d/common-auth; then
  ok "pam-auth-update --enable otpd: common-auth has: $(grep pam_otpd /etc/pam.d/common-auth | tr -s '\t ' ' ')"
else
  bad "pam-auth-update --enable otpd did not add pam_otpd to common-auth"; sed 's/^/   /' "$scratch/pau.log"
fi
check "pam_otpd comes after pam_unix in common-auth" \
  bash -c 'awk "/pam_unix/{u=NR} /pam_otpd/{o=NR} END{exit !(u && o && u<o)}" /etc/pam.d/common-auth'
# A real account: password (pam_unix), then the code (pam_otpd) through
# common-auth, as sshd and sudo include it.
if ! $login_user_existed; then useradd -M -s /usr/sbin/nologin "$LOGIN_USER"; fi
login_pw="pkg-Test-$$-pw"
echo "$LOGIN_USER:$login_pw" | chpasswd
printf '@include common-auth\naccount required pam_permit.so\n' >"$PAM_COMMON_SERVICE"
answers() { printf '%s\n' "$1"; sleep 0.5; printf '%s\n' "$2"; }
check "common-auth, user without a token: the password alone logs in (nullok)" \
  bash -c 'printf "%s\n" "$1" | pamtester otpd-pkg-test-common "$2" authenticate' _ "$login_pw" "$LOGIN_USER"
login_secret=$(enroll "$LOGIN_USER")
check "enrolled $LOGIN_USER" test -n "$login_secret"
login_code=$(code_at "$login_secret" "$(date +%s)")
check "common-auth: password + fresh code logs in" \
  bash -c "$(declare -f answers); answers \"\$1\" \"\$2\" | pamtester otpd-pkg-test-common \"\$3\" authenticate" _ "$login_pw" "$login_code" "$LOGIN_USER"
check "common-auth: password + the used code is refused" \
  pam_refused otpd-pkg-test-common "$LOGIN_USER" "$login_pw" "$login_code"
check "common-auth: password alone (no code) is refused for an enrolled user" \
  bash -c "$(declare -f answers); ! answers \"\$1\" '' | pamtester otpd-pkg-test-common \"\$2\" authenticate 2>/dev/null" _ "$login_pw" "$LOGIN_USER"

# ---------------------------------------------------------------- upgrade, remove, reinstall
echo "== upgrade in place, remove, reinstall"
if DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >"$scratch/dpkg-up.log" 2>&1; then ok "dpkg -i over the installed package (upgrade path)"; else bad "dpkg -i (upgrade)"; sed 's/^/   /' "$scratch/dpkg-up.log"; fi
check "upgrade keeps the admin's PAM selection (pam_otpd in common-auth)" grep -q pam_otpd /etc/pam.d/common-auth
check "upgrade keeps the enrolment" bash -c '/usr/sbin/otpd list --json | grep -q "\"user\": \"$1\""' _ "$TEST_USER"

DEBIAN_FRONTEND=noninteractive dpkg -r otpd >"$scratch/dpkg-r.log" 2>&1 && ok "dpkg -r otpd" || { bad "dpkg -r otpd"; sed 's/^/   /' "$scratch/dpkg-r.log"; }
check "remove: common-auth no longer mentions pam_otpd" without_pam_otpd /etc/pam.d/common-*
check "remove: warns about the hand-written $PAM_SERVICE that still uses pam_otpd.so" grep -q "$PAM_SERVICE" "$scratch/dpkg-r.log"
if ! $with_systemd; then
  check "remove: prerm stopped the daemon started by hand" bash -c '! kill -0 "$1" 2>/dev/null' _ "$daemon_pid"
  wait "$daemon_pid" 2>/dev/null
  daemon_pid=""
fi
absent /usr/sbin/otpd
absent "$pamdir/pam_otpd.so"
check "remove: keeps /etc/otpd/otpd.toml (conffile)" test -f /etc/otpd/otpd.toml
check "remove: keeps the store's key /etc/otpd/otpd.key" test -f /etc/otpd/otpd.key
check "remove: keeps the store /var/lib/otpd" test -d /var/lib/otpd/store -o -n "$(ls -A /var/lib/otpd 2>/dev/null)"

if DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >"$scratch/dpkg-re.log" 2>&1; then ok "dpkg -i after remove"; else bad "dpkg -i after remove"; sed 's/^/   /' "$scratch/dpkg-re.log"; fi
check "reinstall: the profile stays off until the admin selects it again" without_pam_otpd /etc/pam.d/common-auth
if start_daemon; then ok "otpd serve is up again"; else bad "otpd serve did not come up after reinstall"; fi
code=$(code_at "$secret" "$(($(date +%s) + 30))")
check "reinstall: the enrolled token still logs in (next step's code)" \
  bash -c 'echo "$1" | pamtester otpd-pkg-test "$2" authenticate' _ "$code" "$TEST_USER"

# ---------------------------------------------------------------- purge
echo "== dpkg --purge otpd"
DEBIAN_FRONTEND=noninteractive pam-auth-update --enable otpd >/dev/null 2>&1
check "profile selected again before the purge" grep -q pam_otpd /etc/pam.d/common-auth
DEBIAN_FRONTEND=noninteractive dpkg --purge otpd >"$scratch/dpkg-purge.log" 2>&1 && ok "dpkg --purge otpd" || { bad "dpkg --purge otpd"; sed 's/^/   /' "$scratch/dpkg-purge.log"; }
if ! $with_systemd && [ -n "$daemon_pid" ]; then
  check "purge: the daemon was stopped" bash -c '! kill -0 "$1" 2>/dev/null' _ "$daemon_pid"
  wait "$daemon_pid" 2>/dev/null
  daemon_pid=""
fi
check "purge: no /etc/pam.d/common-* mentions pam_otpd" without_pam_otpd /etc/pam.d/common-*
check "purge: dpkg knows no otpd" bash -c "! dpkg-query -W -f='\${Status}' otpd 2>/dev/null | grep -q 'installed\|config-files'"
for f in /usr/sbin/otpd "$pamdir/pam_otpd.so" /lib/systemd/system/otpd.service /lib/systemd/system/otpd.socket \
  /usr/lib/sysusers.d/otpd.conf /usr/lib/tmpfiles.d/otpd.conf /usr/share/pam-configs/otpd \
  /usr/share/man/man8/otpd.8.gz /usr/share/bash-completion/completions/otpd /usr/share/doc/otpd \
  /etc/otpd /var/lib/otpd /etc/systemd/system/sockets.target.wants/otpd.socket \
  /etc/systemd/system/multi-user.target.wants/otpd.service; do
  absent "$f"
done
check "purge: keeps the system user otpd (uid not recycled)" bash -c "getent passwd otpd >/dev/null"

# ---------------------------------------------------------------- without systemd-sysusers
# A host without working systemd-sysusers/-tmpfiles (they fail here: /bin/false
# bound over them, in this test's mount namespace): postinst falls back to
# adduser and install -d. /var/lib/otpd left by a daemon that ran as root
# (packaging/install.sh) is handed over to the otpd user.
if ! $with_systemd && ! $otpd_user_existed; then
  echo "== dpkg -i without systemd-sysusers and systemd-tmpfiles, over a root-owned store"
  userdel otpd 2>/dev/null
  getent group otpd >/dev/null && groupdel otpd
  hidden=()
  for tool in systemd-sysusers systemd-tmpfiles; do
    p=$(command -v "$tool") && mount --bind /bin/false "$p" && hidden+=("$p")
  done
  install -d -m 0700 /var/lib/otpd/store
  echo old >/var/lib/otpd/store/db
  if DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >"$scratch/dpkg-nosysusers.log" 2>&1; then
    ok "dpkg -i with failing systemd-sysusers/-tmpfiles"
  else
    bad "dpkg -i with failing systemd-sysusers/-tmpfiles"; sed 's/^/   /' "$scratch/dpkg-nosysusers.log"
  fi
  for p in "${hidden[@]}"; do umount "$p"; done
  IFS=: read -r _ _ otpd_uid _ _ otpd_home otpd_shell <<<"$(getent passwd otpd)"
  check "adduser made otpd: system uid ${otpd_uid:-none}, home ${otpd_home:-none}, shell ${otpd_shell:-none}" \
    bash -c '[ -n "$1" ] && [ "$1" -lt 1000 ] && [ "$2" = /var/lib/otpd ] && case "$3" in */nologin) true;; *) false;; esac' _ "$otpd_uid" "$otpd_home" "$otpd_shell"
  check "group otpd made too" bash -c "getent group otpd >/dev/null"
  mode_owner /var/lib/otpd 700 otpd otpd
  mode_owner /var/lib/otpd/store/db 644 otpd otpd
  check "postinst said it handed the store over" grep -q 'handing the existing store' "$scratch/dpkg-nosysusers.log"
  DEBIAN_FRONTEND=noninteractive dpkg --purge otpd >"$scratch/dpkg-purge2.log" 2>&1 && ok "dpkg --purge again" || { bad "dpkg --purge again"; sed 's/^/   /' "$scratch/dpkg-purge2.log"; }
  absent /var/lib/otpd
fi
rm -f "$PAM_SERVICE" "$PAM_COMMON_SERVICE"
# Only what this test and the package touched: the two services written
# above, and the common-* files pam-auth-update writes. A PAM file of the
# administrator's own that uses the module is none of this test's business.
pam_left_clean() {
  local f
  for f in "$PAM_SERVICE" "$PAM_COMMON_SERVICE"; do
    if [ -e "$f" ] || [ -L "$f" ]; then echo "   $f is still there"; return 1; fi
  done
  [ -f /etc/pam.d/common-auth ] || { echo "   /etc/pam.d/common-auth is missing"; return 1; }
  without_pam_otpd /etc/pam.d/common-*
}
check "no PAM file this test or the package wrote mentions pam_otpd ($(basename "$PAM_SERVICE"), $(basename "$PAM_COMMON_SERVICE"), common-*)" pam_left_clean

echo
echo "figures: .deb $(stat -c %s "$deb") bytes, .rpm $(stat -c %s "$rpmfile") bytes, build-packages.sh ${build_secs}s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
