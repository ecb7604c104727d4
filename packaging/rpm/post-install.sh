# %post of the otpd RPM (packaging/rpm/post-install.sh); $1: 1 install, 2 upgrade.
# /var/lib/otpd (0700 otpd:otpd) from the packaged tmpfiles.d entry; on a
# first installation under systemd, enables and starts otpd.socket and
# otpd.service; on upgrade the service is restarted by %postun.
# RPM distributions configure PAM with authselect, not pam-auth-update: this
# package never touches /etc/pam.d. Add "auth required pam_otpd.so" where
# you want the code (see /usr/share/doc/otpd/examples and pam_otpd(8)).
if command -v systemd-tmpfiles >/dev/null 2>&1; then
	systemd-tmpfiles --create /usr/lib/tmpfiles.d/otpd.conf || :
fi
if [ ! -d /var/lib/otpd ]; then
	install -d -m 0700 -o otpd -g otpd /var/lib/otpd
fi
# The key that seals the store: made once, never replaced.
if [ ! -e /etc/otpd/otpd.key ]; then
	install -d -m 0755 /etc/otpd
	/usr/sbin/otpd keygen /etc/otpd/otpd.key >/dev/null && chown otpd:otpd /etc/otpd/otpd.key
fi
if [ "$1" -eq 1 ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
	systemctl enable --now otpd.socket otpd.service >/dev/null 2>&1 || :
fi
exit 0
