#!/usr/bin/env bash
# Build the macOS installer package (run on macOS, after the PyInstaller build).
#
#   installer/macos/build-pkg.sh [--app dist/Clinic2Cloud.app] [--out dist]
#                                [--config site.toml] [--site-key site.key] [--version X.Y.Z]
#   env PKG_SIGN_IDENTITY="Developer ID Installer: ..." to sign (then notarize; see
#   docs/deployment.md)
#
# Payload (installed at /):
#   /Applications/Clinic2Cloud.app                             the application
#   /Library/LaunchAgents/org.clinic2cloud.agent.plist         starts it in every GUI login
#   /Library/Application Support/Clinic2Cloud/config.example.toml, uninstall.sh
#   /Library/Application Support/Clinic2Cloud/config.toml      only with --config
#   /Library/Application Support/Clinic2Cloud/site.key         only with --site-key
# scripts/preinstall stops running agents; scripts/postinstall links
# /usr/local/bin/clinic2cloud and starts the agent in the sessions already open.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/installer/macos"
APP="$ROOT/dist/Clinic2Cloud.app"
OUT="$ROOT/dist"
CONFIG=""
SITE_KEY=""
VERSION=""
while [ $# -gt 0 ]; do
    case "$1" in
        --app) APP="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --config) CONFIG="$2"; shift 2 ;;
        --site-key) SITE_KEY="$2"; shift 2 ;;
        --version) VERSION="$2"; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "build-pkg.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -x "$APP/Contents/MacOS/clinic2cloud" ] || {
    echo "build-pkg.sh: $APP not found; run" \
         "'python -m PyInstaller --noconfirm installer/clinic2cloud.spec' on macOS first" >&2
    exit 1
}
if [ -z "$VERSION" ]; then
    VERSION="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$ROOT/agent/__init__.py")"
fi

STAGE="$(mktemp -d "${TMPDIR:-/tmp}/clinic2cloud-pkg.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
PAYLOAD="$STAGE/root"
CONF="$PAYLOAD/Library/Application Support/Clinic2Cloud"
mkdir -p "$PAYLOAD/Applications" "$PAYLOAD/Library/LaunchAgents" "$CONF"
# ditto keeps the bundle's symlinks, extended attributes and code signature intact.
ditto "$APP" "$PAYLOAD/Applications/Clinic2Cloud.app"
install -m 0644 "$HERE/org.clinic2cloud.agent.plist" "$PAYLOAD/Library/LaunchAgents/"
plutil -lint "$PAYLOAD/Library/LaunchAgents/org.clinic2cloud.agent.plist" >/dev/null
install -m 0644 "$ROOT/installer/config.example.toml" "$CONF/config.example.toml"
install -m 0755 "$HERE/uninstall.sh" "$CONF/uninstall.sh"
[ -z "$CONFIG" ] || install -m 0644 "$CONFIG" "$CONF/config.toml"
[ -z "$SITE_KEY" ] || install -m 0640 "$SITE_KEY" "$CONF/site.key"

SIGN=()
[ -z "${PKG_SIGN_IDENTITY:-}" ] || SIGN=(--sign "$PKG_SIGN_IDENTITY" --timestamp)
mkdir -p "$OUT"
PKG="$OUT/Clinic2Cloud-$VERSION.pkg"
pkgbuild --root "$PAYLOAD" \
    --component-plist "$HERE/component.plist" \
    --scripts "$HERE/scripts" \
    --identifier org.clinic2cloud.agent \
    --version "$VERSION" \
    --install-location / \
    --ownership recommended \
    ${SIGN[@]+"${SIGN[@]}"} \
    "$PKG" >/dev/null
echo "$PKG"
