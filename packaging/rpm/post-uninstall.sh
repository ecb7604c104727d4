# %postun of the otpd RPM (packaging/rpm/post-uninstall.sh); $1: 0 erase, 1 upgrade.
# Upgrade: restart a running daemon on the new binary. Erase: rpm has no
# purge; like a Debian "remove", the store in /var/lib/otpd (enrolled
# secrets), its key /etc/otpd/otpd.key and the otpd user are kept, and a changed /etc/otpd/otpd.toml is
# saved as otpd.toml.rpmsave. Delete /var/lib/otpd by hand to drop the
# secrets (and /var/lib/otpd-anchor with it, or a new store is refused).
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
	if [ "$1" -ge 1 ]; then
		systemctl try-restart otpd.service >/dev/null 2>&1 || :
	fi
fi
exit 0
