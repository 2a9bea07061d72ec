#!/usr/bin/env bash
# Puts the review pages' slide viewer into api/static/viewer/dist/: the published bundles of
# dicom-microscopy-viewer and dicomweb-client at the versions package-lock.json pins (npm ci, no
# install scripts), with their licences. Run by `make setup`; the app serves the files, so nothing is
# fetched from the internet at run time. Without npm the pages work without the slide viewer.
set -euo pipefail
cd "$(dirname "$0")/.."
here=api/static/viewer
dist=$here/dist
stamp=$dist/.lock-sha256
want=$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
if ! command -v npm >/dev/null 2>&1; then
  echo "npm not found: the review pages will have no slide viewer (install Node.js and npm, then make setup)" >&2
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/package.json" "$here/package-lock.json" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
rm -rf "$dist"
mkdir -p "$dist"
dmv=$work/node_modules/dicom-microscopy-viewer
cp "$dmv"/dist/dicomMicroscopyViewer.bundle.min.js "$dmv"/dist/dicomMicroscopyViewer.bundle.min.js.LICENSE.txt \
  "$dmv"/dist/*.wasm "$dmv"/dist/dynamic-import/*.wasm "$dist/"
# The bundle starts its frame decoder as a module worker from PUBLIC_LIB_URL + "dataLoader.worker.min.js" (the
# page sets the URL); the dynamic-import build of the worker is the one that runs as a module (root = self).
cp "$dmv"/dist/dynamic-import/dataLoader.worker.min.js "$dist/"
cp "$dmv/LICENSE" "$dist/dicom-microscopy-viewer.LICENSE"
cp "$work/node_modules/dicomweb-client/build/dicomweb-client.js" "$dist/"
cp "$work/node_modules/dicomweb-client/LICENSE" "$dist/dicomweb-client.LICENSE"
echo "$want" > "$stamp"
echo "slide viewer assets in $dist"
