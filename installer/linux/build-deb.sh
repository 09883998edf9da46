#!/usr/bin/env bash
# Build the Debian/Ubuntu package from the PyInstaller bundle.
#
#   installer/linux/build-deb.sh [--dist dist/clinic2cloud] [--out dist]
#                                [--config site.toml] [--version X.Y.Z]
#
# Layout of the package:
#   /opt/clinic2cloud/                  the one-folder application (no Python needed)
#   /usr/bin/clinic2cloud               symlink: the command on the PATH
#   /etc/xdg/autostart/clinic2cloud.desktop   starts the tray agent at every user's login
#   /usr/share/applications/clinic2cloud.desktop  the same in the applications menu
#   /etc/clinic2cloud/                  machine-wide configuration folder (read first)
#   /etc/clinic2cloud/config.toml       only with --config: the site's file, a conffile so
#                                       upgrades never overwrite a local edit silently
#   /usr/share/doc/clinic2cloud/        example fleet configuration, copyright
# Per-user state (ledger, quarantine, logs) is never touched by the package, not even by
# purge: it is the audit trail of what left the machine.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/installer/linux"
DIST="$ROOT/dist/clinic2cloud"
OUT="$ROOT/dist"
CONFIG=""
VERSION=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dist) DIST="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --config) CONFIG="$2"; shift 2 ;;
        --version) VERSION="$2"; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "build-deb.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

[ -x "$DIST/clinic2cloud" ] || {
    echo "build-deb.sh: $DIST/clinic2cloud not found; run" \
         "'python -m PyInstaller --noconfirm installer/clinic2cloud.spec' first" >&2
    exit 1
}
if [ -z "$VERSION" ]; then
    VERSION="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$ROOT/agent/__init__.py")"
fi
ARCH="$(dpkg --print-architecture)"
# The bundle's native libraries need at least the C library it was built against.
LIBC="$(dpkg-query -W -f='${Version}' libc6 | sed 's/-.*//')"
SIZE_KB="$(du -sk "$DIST" | cut -f1)"

STAGE="$(mktemp -d "${TMPDIR:-/tmp}/clinic2cloud-deb.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
PKG="$STAGE/pkg"
install -d "$PKG/DEBIAN" "$PKG/opt" "$PKG/usr/bin" "$PKG/etc/xdg/autostart" \
    "$PKG/etc/clinic2cloud" "$PKG/usr/share/doc/clinic2cloud" "$PKG/usr/share/applications"
cp -a "$DIST" "$PKG/opt/clinic2cloud"
# A bundle built by root with a restrictive umask must still be runnable by every user.
chmod -R u+rwX,go+rX,go-w "$PKG/opt/clinic2cloud"
ln -s /opt/clinic2cloud/clinic2cloud "$PKG/usr/bin/clinic2cloud"
install -m 0644 "$HERE/clinic2cloud.desktop" "$PKG/etc/xdg/autostart/clinic2cloud.desktop"
# The same entry in the applications menu: how a user starts the agent again after Quit.
grep -v '^X-GNOME-Autostart' "$HERE/clinic2cloud.desktop" \
    > "$PKG/usr/share/applications/clinic2cloud.desktop"
chmod 0644 "$PKG/usr/share/applications/clinic2cloud.desktop"
install -m 0644 "$ROOT/installer/config.example.toml" \
    "$PKG/usr/share/doc/clinic2cloud/config.example.toml"
install -m 0644 "$HERE/copyright" "$PKG/usr/share/doc/clinic2cloud/copyright"

sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@LIBC@/$LIBC/" \
    -e "s/@SIZE_KB@/$SIZE_KB/" "$HERE/control.in" > "$PKG/DEBIAN/control"
for script in postinst prerm postrm; do
    install -m 0755 "$HERE/$script" "$PKG/DEBIAN/$script"
done
if [ -n "$CONFIG" ]; then
    install -m 0644 "$CONFIG" "$PKG/etc/clinic2cloud/config.toml"
    echo /etc/clinic2cloud/config.toml > "$PKG/DEBIAN/conffiles"
fi
# Also a conffile: an administrator may edit the autostart entry (e.g. add Hidden=true).
echo /etc/xdg/autostart/clinic2cloud.desktop >> "$PKG/DEBIAN/conffiles"

mkdir -p "$OUT"
DEB="$OUT/clinic2cloud_${VERSION}_${ARCH}.deb"
# --root-owner-group: every file root-owned without fakeroot. gzip is read by every dpkg
# and compresses the 400 MB bundle in seconds; xz is ~25% smaller but takes minutes on two
# cores (DEB_COMPRESSION=xz:6 for releases; zstd needs Debian 12 / Ubuntu 21.10 to install).
COMPRESSION="${DEB_COMPRESSION:-gzip:6}"
dpkg-deb --root-owner-group -Z"${COMPRESSION%%:*}" -z"${COMPRESSION##*:}" \
    --build "$PKG" "$DEB" >/dev/null
echo "$DEB"
