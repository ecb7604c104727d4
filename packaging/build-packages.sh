#!/usr/bin/env bash
# Builds the Debian package (cargo-deb) and the RPM (cargo-generate-rpm) of
# otpd from this checkout, with one command:
#
#     packaging/build-packages.sh
#
# into target/packages/otpd_<version>-1_<arch>.deb and
# target/packages/otpd-<version>-1.<arch>.rpm. It installs what it needs when
# missing: gcc, libpam0g-dev and dpkg-dev with apt-get (sudo when not root),
# cargo-deb and cargo-generate-rpm with `cargo install --locked`. The package
# contents are listed in otpd/Cargo.toml ([package.metadata.deb] and
# [package.metadata.generate-rpm]). Run it as yourself; Rust from rustup.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
out=$repo/target/packages
stage=$out/stage
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
say() { printf '==> %s\n' "$*"; }
die() { printf 'build-packages: %s\n' "$*" >&2; exit 1; }
start=$(date +%s)

# 1. Tools.
command -v cargo >/dev/null || die "cargo not found: install Rust first (https://rustup.rs)"
if command -v dpkg-query >/dev/null; then
  missing=()
  for p in gcc libc6-dev libpam0g-dev dpkg-dev binutils; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing build dependencies: ${missing[*]}"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
if ! cargo deb --version >/dev/null 2>&1; then
  say "installing cargo-deb $CARGO_DEB_VERSION"
  cargo install --locked --quiet "cargo-deb@$CARGO_DEB_VERSION"
fi
if ! cargo generate-rpm --version >/dev/null 2>&1; then
  say "installing cargo-generate-rpm $CARGO_GENERATE_RPM_VERSION"
  cargo install --locked --quiet "cargo-generate-rpm@$CARGO_GENERATE_RPM_VERSION"
fi

# 2. The files the packages take from the checkout must be there, final.
for f in packaging/otpd.toml packaging/systemd/otpd.service packaging/systemd/otpd.socket \
  packaging/systemd/otpd.service.d/network.conf packaging/systemd/otpd.service.d/sms-user.conf \
  packaging/man/otpd.8 packaging/man/pam_otpd.8 packaging/man/otpd.toml.5 \
  packaging/completions/otpd.bash packaging/completions/_otpd packaging/completions/otpd.fish \
  packaging/sysusers.d/otpd.conf packaging/tmpfiles.d/otpd.conf packaging/pam-configs/otpd \
  packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm packaging/deb/copyright \
  packaging/deb/changelog packaging/rpm/pre-install.sh packaging/rpm/post-install.sh \
  packaging/rpm/pre-uninstall.sh packaging/rpm/post-uninstall.sh README.md LICENSE; do
  [ -s "$f" ] || die "$f is missing or empty"
done
if grep -q '@[A-Z]*@' packaging/systemd/otpd.service packaging/systemd/otpd.socket; then
  die "packaging/systemd/otpd.{service,socket} still hold a @PLACEHOLDER@; the packaged units must name /usr/sbin/otpd"
fi

# 3. Release build of the daemon and the module, with otpd's default cargo
# features: the packages need both optional parts, the self-enrolment pages
# (`web`) and the PostgreSQL store (`postgres`). Never --no-default-features.
say "building release binaries"
build_start=$(date +%s)
cargo build --release --locked -p otpd -p pam_otpd
build_secs=$(($(date +%s) - build_start))
target_dir=$(cargo metadata --no-deps --format-version 1 |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || die "cannot find cargo's target directory"
release=$target_dir/release

# 4. Stage what the manifests cannot name directly: the module under the
#    Debian multiarch directory of this build, stripped copies for the RPM
#    (cargo-deb strips what it packs from target/release itself; the
#    module it takes from the stage), gzipped manual pages for the RPM.
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch 2>/dev/null || true)
# (Not a Debian host: the tuple of the usual glibc targets.)
multiarch=${multiarch:-$(uname -m)-linux-gnu}
rm -rf "$stage"
install -d "$stage/deb/usr/lib/$multiarch/security" "$stage/rpm"
strip_lib() { strip --remove-section=.comment --remove-section=.note --strip-unneeded -o "$2" "$1"; }
strip_lib "$release/libpam_otpd.so" "$stage/deb/usr/lib/$multiarch/security/pam_otpd.so"
cp "$stage/deb/usr/lib/$multiarch/security/pam_otpd.so" "$stage/rpm/pam_otpd.so"
strip --remove-section=.comment --remove-section=.note -o "$stage/rpm/otpd" "$release/otpd"
for page in otpd.8 pam_otpd.8 otpd.toml.5; do
  gzip -9n -c "packaging/man/$page" >"$stage/rpm/$page.gz"
done

# 5. The packages.
rm -f "$out"/*.deb "$out"/*.rpm
say "building the Debian package"
# (cargo-deb warns that the staged module's path is not under target/release/,
# which is the point: that line is dropped.)
cargo deb -p otpd --no-build --output "$out/" 2>&1 |
  grep -v "Only source paths starting with exactly 'target/release/'" || true
[ -n "$(ls "$out"/*.deb 2>/dev/null)" ] || die "cargo deb made no package"
say "building the RPM"
cargo generate-rpm -p otpd --output "$out/"
[ -n "$(ls "$out"/*.rpm 2>/dev/null)" ] || die "cargo generate-rpm made no package"

deb=$(ls "$out"/*.deb)
rpm=$(ls "$out"/*.rpm)
total_secs=$(($(date +%s) - start))
echo
echo "packages (multiarch $multiarch):"
printf '  %-60s %8s bytes\n' "${deb#"$repo"/}" "$(stat -c %s "$deb")" "${rpm#"$repo"/}" "$(stat -c %s "$rpm")"
echo "  cargo build ${build_secs}s, total ${total_secs}s"
