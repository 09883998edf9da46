#!/bin/sh
# Remove Clinic2Cloud from a Mac (run as root: sudo, Jamf policy script).
#
#   sudo "/Library/Application Support/Clinic2Cloud/uninstall.sh" [--purge]
#
# Keeps the machine-wide configuration and every user's ledger, quarantine and logs (the
# audit trail of what left the machine) unless --purge is given.
set -u
LABEL=org.clinic2cloud.agent
PURGE=0
[ "${1:-}" = "--purge" ] && PURGE=1
[ "$(id -u)" = 0 ] || { echo "uninstall.sh: run as root" >&2; exit 1; }

for uid in $(ps -axo uid=,comm= | awk '$2 ~ /loginwindow$/ { print $1 }' | sort -u); do
    launchctl bootout "gui/$uid/$LABEL" 2>/dev/null || true
done
rm -f "/Library/LaunchAgents/$LABEL.plist" /usr/local/bin/clinic2cloud
rm -rf /Applications/Clinic2Cloud.app
pkgutil --forget "$LABEL" >/dev/null 2>&1 || true

if [ "$PURGE" = 1 ]; then
    rm -rf "/Library/Application Support/Clinic2Cloud"
    for home in /Users/*; do
        [ -d "$home/Library" ] || continue
        rm -rf "$home/Library/Application Support/Clinic2Cloud" "$home/Library/Logs/Clinic2Cloud"
        rm -f "$home/Library/LaunchAgents/$LABEL.plist"
    done
    echo "Clinic2Cloud removed, with its configuration, ledgers, quarantine and logs."
else
    echo "Clinic2Cloud removed; configuration, ledgers, quarantine and logs kept" \
         "(--purge removes them)."
fi
exit 0
