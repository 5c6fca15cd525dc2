#!/usr/bin/env bash
# Installs ONNX Runtime's shared library from the PyPI `onnxruntime` wheel (once, outside the clone) and
# prints its path, for ORT_DYLIB_PATH. The version must match the one that optimized models/*.onnx.
set -euo pipefail
version=1.32.0
dir=${INSIGHTS_ORT_DIR:-/var/tmp/insights-ort-$version}
lib="$dir/onnxruntime/capi/libonnxruntime.so.$version"
if [ ! -f "$lib" ]; then
  # --no-deps: only the shared library inside the wheel is used, not its Python side.
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$dir" "onnxruntime==$version" >&2
fi
echo "$lib"
