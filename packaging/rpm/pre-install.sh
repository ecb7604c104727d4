# %pre of the otpd RPM (packaging/rpm/pre-install.sh); $1: 1 install, 2 upgrade.
# The system user otpd, before the files owned by it are laid down:
# systemd-sysusers with the packaged sysusers.d line where available,
# groupadd/useradd otherwise (what Fedora's %sysusers_create_compat does).
if ! getent passwd otpd >/dev/null; then
	if command -v systemd-sysusers >/dev/null 2>&1; then
		echo 'u otpd - "otpd TOTP second-factor daemon" /var/lib/otpd' |
			systemd-sysusers --replace=/usr/lib/sysusers.d/otpd.conf - || :
	fi
	if ! getent passwd otpd >/dev/null; then
		getent group otpd >/dev/null || groupadd -r otpd
		useradd -r -g otpd -d /var/lib/otpd -M -s /sbin/nologin \
			-c "otpd TOTP second-factor daemon" otpd
	fi
fi
exit 0
