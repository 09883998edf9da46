#!/usr/bin/env bash
# CI for the Linux installer: build the frozen bundle and the .deb, install it, and run the
# installed application end to end on a real head series. Exits non-zero on any failure and
# prints timings. Takes about 3 minutes on two cores (budget: 6).
#
#   installer/ci-linux.sh            (as root, or with passwordless sudo for dpkg)
#
# Checks:
#   * the bundle builds and holds the templates and the de-identification profile;
#   * the .deb installs (dpkg -i): /usr/bin/clinic2cloud, /opt/clinic2cloud, XDG autostart;
#   * `clinic2cloud --version` (cold start timed);
#   * `clinic2cloud process` on Colin27 as an identifiable MR series: exit 0, de-identified
#     (no planted identifier left anywhere, 113100), defaced with the bundled templates
#     (113102, face voxels replaced) and the manifest verifies - once normally and once with
#     stdout/stderr closed, as a windowed build runs, and once JPEG 2000 compressed;
#   * fleet configuration: the site file (built into the .deb as a conffile) is read first
#     from /etc/clinic2cloud and a key it locks cannot be overridden by the user's file;
#   * `clinic2cloud run`: headless into Azure (Azurite), and with its tray icon (Xvfb);
#   * `clinic2cloud doctor` passes; the same `process` from the installed Python package
#     (for the timing comparison) delivers the same way; dpkg -r / --purge clean up.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
T0=$(date +%s.%N)
WORK="$(mktemp -d "${TMPDIR:-/tmp}/clinic2cloud-ci.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

say() { printf '\n== %s\n' "$*"; }
fail() { echo "ci-linux: FAIL: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
declare -A TIMES

# -- tools ---------------------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q '.[dev]'
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -c "import PyInstaller" 2>/dev/null || pip install -q 'pyinstaller>=6.0'
if [ ! -f /usr/share/mricron/templates/ch2.nii.gz ]; then
    say "installing mricron-data (Colin27)"
    $SUDO apt-get install -y -qq mricron-data >/dev/null
fi
# Defacing is checked when the package provides it (it is always wired into the pipeline
# when [deface] enabled = true; a build without it would quarantine every head).
EXPECT_DEFACED=""
if python -c "from agent.deface import DefaceStage" 2>/dev/null; then
    EXPECT_DEFACED="--expect-defaced"
fi

# -- build ---------------------------------------------------------------------------------
say "PyInstaller bundle"
t=$(now)
python -m PyInstaller --noconfirm --log-level WARN installer/clinic2cloud.spec
TIMES[build_bundle]=$(since "$t")
BUNDLE="$ROOT/dist/clinic2cloud"
for f in clinic2cloud _internal/templates/head.nii.gz _internal/templates/labels.nii.gz \
         _internal/config.example.toml; do
    [ -e "$BUNDLE/$f" ] || fail "bundle lacks $f"
done
ls "$BUNDLE"/_internal/agent/deid/data/*.json >/dev/null || fail "bundle lacks agent/deid/data"
ls -d "$BUNDLE"/_internal/pylibjpeg_openjpeg-*.dist-info >/dev/null \
    || fail "bundle lacks the pylibjpeg-openjpeg metadata (entry points)"
ls -d "$BUNDLE"/_internal/imagecodecs >/dev/null \
    || fail "bundle lacks imagecodecs (the JPEG Lossless encoder of defaced images)"
BUNDLE_MB=$(du -sm "$BUNDLE" | cut -f1)

say ".deb"
t=$(now)
# With a site configuration, as IT builds it: /etc/clinic2cloud/config.toml, a conffile.
cat > "$WORK/site.toml" <<'EOF'
[policy]
locked = ["deface.enabled"]

[watch]
folder = "~/Clinic2Cloud/Export"

[target]
path = "~/Clinic2Cloud/Outbox"
EOF
DEB="$(installer/linux/build-deb.sh --config "$WORK/site.toml")"
TIMES[build_deb]=$(since "$t")
DEB_MB=$(du -m "$DEB" | cut -f1)
[ "$(dpkg-deb --field "$DEB" Package)" = clinic2cloud ] || fail "bad control file"

say "dpkg -i"
t=$(now)
$SUDO dpkg -i "$DEB" >/dev/null
TIMES[dpkg_install]=$(since "$t")
[ -x /opt/clinic2cloud/clinic2cloud ] || fail "/opt/clinic2cloud/clinic2cloud missing"
[ "$(readlink /usr/bin/clinic2cloud)" = /opt/clinic2cloud/clinic2cloud ] \
    || fail "/usr/bin/clinic2cloud is not the symlink"
grep -q '^Exec=/usr/bin/clinic2cloud run$' /etc/xdg/autostart/clinic2cloud.desktop \
    || fail "XDG autostart entry missing"
cmp -s /etc/clinic2cloud/config.toml "$WORK/site.toml" || fail "site config not installed"
# (no "| grep -q" under pipefail: grep exiting early would fail the pipeline)
[[ "$(dpkg-query --control-show clinic2cloud conffiles)" == *"/etc/clinic2cloud/config.toml"* ]] \
    || fail "the site config is not a conffile"

# -- the installed application ------------------------------------------------------------
# Every run below has its own agent home: nothing of the CI user's real config or state.
export CLINIC2CLOUD_HOME="$WORK/home"
say "clinic2cloud --version"
# A true cold start (nothing of the bundle in the page cache), when this machine lets us.
if [ "${CI_DROP_CACHES:-0}" = 1 ] && [ -w /proc/sys/vm/drop_caches ]; then
    sync; echo 3 > /proc/sys/vm/drop_caches
fi
t=$(now)
VERSION_OUT="$(clinic2cloud --version)"
TIMES[version_cold]=$(since "$t")
t=$(now)
for _ in 1 2 3 4 5; do clinic2cloud --version >/dev/null; done
TIMES[version_warm]=$(awk -v s="$(since "$t")" 'BEGIN { printf "%.2f", s / 5 }')
echo "$VERSION_OUT"
[ "$VERSION_OUT" = "clinic2cloud $(python -c 'import agent; print(agent.__version__)')" ] \
    || fail "--version printed '$VERSION_OUT'"

say "a real head series (Colin27)"
python -m tests.installer.head_series "$WORK/src" >/dev/null
# The same, JPEG 2000 compressed: the frozen app must decode it (pylibjpeg-openjpeg, found
# through its entry point metadata) to deface it.
python -m tests.installer.head_series "$WORK/src-j2k" --compress j2k >/dev/null

run_process() {  # name, command..., -- then checks
    local name="$1"; shift
    export CLINIC2CLOUD_HOME="$WORK/home-$name"
    local t rc=0
    t=$(now)
    "$@" process "$WORK/src" --out "$WORK/out-$name" --json > "$WORK/$name.json" || rc=$?
    TIMES[process_$name]=$(since "$t")
    [ "$rc" = 0 ] || { cat "$WORK/$name.json"; tail -20 "$WORK/home-$name/logs/clinic2cloud.log";
                       fail "process ($name) exited $rc"; }
    python -m tests.installer.check_delivery "$WORK/out-$name" "$WORK/src" $EXPECT_DEFACED \
        || fail "delivery check ($name)"
}

say "frozen: clinic2cloud process"
run_process frozen /usr/bin/clinic2cloud
grep -q '"delivered": 1' "$WORK/frozen.json" || fail "frozen run did not deliver 1 series"

say "frozen, no console (stdout/stderr closed, as the windowed build runs)"
export CLINIC2CLOUD_HOME="$WORK/home-windowed"
rc=0
/usr/bin/clinic2cloud process "$WORK/src" --out "$WORK/out-windowed" </dev/null >&- 2>&- || rc=$?
[ "$rc" = 0 ] || fail "process without stdout/stderr exited $rc"
python -m tests.installer.check_delivery "$WORK/out-windowed" "$WORK/src" $EXPECT_DEFACED \
    || fail "delivery check (windowed)"
grep -q "de-identified" "$WORK/home-windowed/logs/clinic2cloud.log" || fail "no log file"

say "frozen: clinic2cloud process on the JPEG 2000 series"
export CLINIC2CLOUD_HOME="$WORK/home-j2k"
t=$(now)
/usr/bin/clinic2cloud process "$WORK/src-j2k" --out "$WORK/out-j2k" --json > "$WORK/j2k.json" \
    || { cat "$WORK/j2k.json"; fail "process (JPEG 2000) failed"; }
TIMES[process_j2k]=$(since "$t")
python -m tests.installer.check_delivery "$WORK/out-j2k" "$WORK/src-j2k" $EXPECT_DEFACED \
    || fail "delivery check (JPEG 2000)"

say "fleet configuration: /etc/clinic2cloud/config.toml read first, its locked key holds"
# A user as on a workstation: no CLINIC2CLOUD_HOME, the platform's folders under a fresh HOME.
USER_HOME="$WORK/userhome"
mkdir -p "$USER_HOME/Clinic2Cloud/Export" "$USER_HOME/Clinic2Cloud/Outbox" \
    "$USER_HOME/.config/Clinic2Cloud"
as_user() {
    env -u CLINIC2CLOUD_HOME -u XDG_CONFIG_HOME -u XDG_DATA_HOME -u XDG_STATE_HOME \
        HOME="$USER_HOME" "$@"
}
printf '[deface]\nenabled = false\n' > "$USER_HOME/.config/Clinic2Cloud/config.toml"
rc=0
as_user clinic2cloud doctor > "$WORK/locked.txt" 2>&1 || rc=$?
# shellcheck disable=SC2015  # the "||" branch fails the run, whichever test was false
[ "$rc" = 2 ] && grep -q "locked by the machine-wide" "$WORK/locked.txt" \
    || { cat "$WORK/locked.txt"; fail "a locked key was accepted (exit $rc)"; }
rm "$USER_HOME/.config/Clinic2Cloud/config.toml"

say "clinic2cloud doctor"
as_user clinic2cloud doctor | tee "$WORK/doctor.txt" || fail "doctor found problems"
grep -q "^configuration: /etc/clinic2cloud/config.toml" "$WORK/doctor.txt" \
    || fail "doctor did not read the machine-wide configuration"
grep -q "^state: $USER_HOME/.local/share/Clinic2Cloud" "$WORK/doctor.txt" \
    || fail "state is not in the user's data folder"

# The long-lived agent, frozen: Azure sync (into the Azurite emulator) and the tray icon
# (in a virtual X display with a system tray). scripts/test.sh installs both tools.
say "frozen: clinic2cloud run --headless, delivering to Azure (Azurite)"
if command -v azurite-blob >/dev/null; then
    t=$(now)
    python -m tests.installer.frozen_agent azure /usr/bin/clinic2cloud || fail "Azure run"
    TIMES[run_azure]=$(since "$t")
else
    echo "SKIPPED: azurite-blob not installed (npm install -g azurite)"
fi
say "frozen: clinic2cloud run with its tray icon (Xvfb)"
if command -v xvfb-run >/dev/null; then
    t=$(now)
    xvfb-run -a python -m tests.installer.frozen_agent tray /usr/bin/clinic2cloud \
        || fail "tray run"
    TIMES[run_tray]=$(since "$t")
else
    echo "SKIPPED: xvfb-run not installed (apt-get install xvfb trayer)"
fi

say "the same from the installed Python package (for comparison)"
run_process package "$ROOT/.venv/bin/clinic2cloud"

say "dpkg -r / --purge"
$SUDO dpkg -r clinic2cloud >/dev/null
# shellcheck disable=SC2015
[ ! -e /usr/bin/clinic2cloud ] && [ ! -e /opt/clinic2cloud/clinic2cloud ] \
    || fail "dpkg -r left the application behind"
$SUDO dpkg --purge clinic2cloud >/dev/null
# shellcheck disable=SC2015
[ ! -e /etc/xdg/autostart/clinic2cloud.desktop ] && [ ! -e /etc/clinic2cloud ] \
    || fail "purge left the autostart entry or /etc/clinic2cloud"

# -- numbers ------------------------------------------------------------------------------
say "summary"
printf '%-28s %s\n' "bundle size" "${BUNDLE_MB} MB (dist/clinic2cloud)" \
    ".deb size" "${DEB_MB} MB ($(basename "$DEB"))" \
    "build bundle" "${TIMES[build_bundle]} s" "build .deb" "${TIMES[build_deb]} s" \
    "dpkg -i" "${TIMES[dpkg_install]} s" \
    "--version, first run" "${TIMES[version_cold]} s" \
    "--version, warm (mean of 5)" "${TIMES[version_warm]} s" \
    "process, frozen" "${TIMES[process_frozen]} s" \
    "process, frozen, JPEG 2000" "${TIMES[process_j2k]} s" \
    "process, Python package" "${TIMES[process_package]} s" \
    "run: Azure / tray (s)" "${TIMES[run_azure]:-skipped} / ${TIMES[run_tray]:-skipped}" \
    "defacing checked" "$([ -n "$EXPECT_DEFACED" ] && echo yes || echo "no (no DefaceStage)")" \
    "total" "$(since "$T0") s"
echo "ci-linux: OK"
