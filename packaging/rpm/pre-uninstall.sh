# %preun of the otpd RPM (packaging/rpm/pre-uninstall.sh); $1: 0 erase, 1 upgrade.
# On erase, stop and disable the units (what %systemd_preun does).
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
	systemctl --no-reload disable --now otpd.service otpd.socket >/dev/null 2>&1 || :
fi
exit 0
