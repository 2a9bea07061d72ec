#!/usr/bin/env bash
# Installs the Debian packages the tests use as independent peers, when missing.
set -euo pipefail
# libturbojpeg0: lossless tile copies from JPEG sources (PyTurboJPEG); marrowlink re-encodes without it.
# wrk: the HTTP load generator of `marrowlink bench store`; chromium: the review pages' browser tests.
packages=(dcmtk dicom3tools orthanc orthanc-dicomweb orthanc-wsi libpixelmed-java libturbojpeg0 wrk chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# pixelmed (the SR validator) needs a Java runtime but does not depend on one; any JRE will do.
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
