#!/usr/bin/env bash
# Build .raybundle/: a slimmed Ray for the GPU machine, which has no package index and takes at
# most 64 MiB of carried files (Ray's cp312 wheel is 79 MB). Run here (where pip reaches the
# registries), then carry it: run(command="experiments/reproduce_gpu.sh ray-check",
# carry=[".raybundle"]).
#
# What is left out: the folders `macdmp reproduce` does not use (jars, rllib, serve, llm, tune,
# train, data) and the dashboard's web page; the rest packs to about 28 MB with xz. Ray's own
# dependencies that the GPU machine's image lacks (jsonschema and its three) come as wheels.
#
#   experiments/ray_bundle.sh [RAY_VERSION]      (default 2.60.0, the one tested there)
set -euo pipefail
VER="${1:-2.60.0}"
PLAT=(--python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64)
B=.raybundle
grep -qx "/$B/" .git/info/exclude 2>/dev/null || echo "/$B/" >>.git/info/exclude
rm -rf "$B" && mkdir -p "$B"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: "${PLAT[@]}" -d "$tmp" "ray==$VER"
# unpack keeping the file modes (raylet and gcs_server are executables)
python3 - "$tmp"/ray-*.whl "$tmp/x" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for info in z.infolist():
        path = z.extract(info, sys.argv[2])
        if info.external_attr >> 16:
            os.chmod(path, (info.external_attr >> 16) & 0o777)
PY
rm -rf "$tmp"/x/ray/{jars,rllib,serve,llm,tune,train,data} "$tmp/x/ray/dashboard/client/build"
tar cf - -C "$tmp/x" . | xz -6 -T2 >"$B/ray.tar.xz"
python3 -m pip download -q --no-deps --only-binary=:all: "${PLAT[@]}" -d "$B" \
  jsonschema jsonschema-specifications referencing rpds-py
ls -la "$B"; du -sh "$B"
