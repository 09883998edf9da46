#!/usr/bin/env bash
# System tools the tests use for real: Xvfb and trayer (tray), dicom3tools and dcm2niix
# (output validators), GDCM (benchmark peer), Colin27 from mricron-data (a real head),
# Azurite (Azure Blob emulator, from npm), Tesseract (text in pixels) and DejaVu fonts
# (text rendered into test images), dcmtk (storescu / storescp / echoscu: a real DICOM
# peer), openssl (test certificates for DICOM TLS), faketime (clock jumps). Debian/Ubuntu;
# skips what is already there.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
for pkg in xvfb trayer dicom3tools dcm2niix libgdcm-tools xdotool x11-utils imagemagick \
           mricron-data nodejs npm python3-tk tesseract-ocr tesseract-ocr-eng dcmtk faketime \
           fonts-dejavu-core openssl; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    need=("${need[@]/nodejs}"); need=("${need[@]/npm}")
  fi
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sed '/^$/d')
  if [ "${#need[@]}" -gt 0 ]; then
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi
if ! command -v azurite-blob >/dev/null 2>&1; then
  $SUDO npm install -g --silent azurite >/dev/null
fi
