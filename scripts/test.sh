#!/usr/bin/env bash
# README's test command: installs what the tests need and this machine lacks, then runs `cargo test`
# (arguments are passed on, e.g. `scripts/test.sh --test api live::`).
#   - ONNX Runtime's library (scripts/ort.sh, from the PyPI wheel) for the sentiment model;
#   - Debian's chromium and Node.js with playwright-core (tests/browser, from package-lock.json) for the
#     browser test — no browser is downloaded;
#   - Python `websockets` for the permessage-deflate test;
#   - numpy for Python's onnxruntime (the wheel scripts/ort.sh unpacked), which scores the golden texts on
#     this machine as the reference of the model test (INSIGHTS_ORT_PYTHONPATH);
#   - Debian's testssl.sh, which audits the HTTPS port (tests/testssl.rs);
#   - Debian's prometheus for promtool, which lints a scrape (tests/api/metrics.rs) and checks and
#     unit-tests the alert rules (deploy/prometheus/);
#   - Python `schemathesis` (pinned: the contract test's seed reproduces with this version) for the test
#     that fuzzes the OpenAPI document (tests/api/contract.rs).
# PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) must be running; .ci/run starts them if not.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "[test] $*" >&2; }

need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/testssl ] || need_apt+=(testssl.sh)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing: ${need_apt[*]} — install them (apt-get install ${need_apt[*]}) or run as root" >&2
    exit 1
  fi
  log "installing ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! python3 -c "import websockets" 2>/dev/null; then
  log "installing python websockets"
  python3 -m pip install -q websockets==15.0.1
fi
if ! python3 -c "import schemathesis, sys; sys.exit(schemathesis.__version__ != '4.32.5')" 2>/dev/null; then
  log "installing python schemathesis 4.32.5"
  python3 -m pip install -q schemathesis==4.32.5
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  log "installing playwright-core (tests/browser, from package-lock.json)"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

ORT_DYLIB_PATH=$(scripts/ort.sh)
export ORT_DYLIB_PATH
numpy_dir=/var/tmp/insights-numpy-2.4.6
if [ ! -d "$numpy_dir/numpy" ]; then
  log "installing numpy 2.4.6 (for the reference scores of the model test)"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$numpy_dir" numpy==2.4.6
fi
INSIGHTS_ORT_PYTHONPATH="$(dirname "$(dirname "$(dirname "$ORT_DYLIB_PATH")")"):$numpy_dir"
export INSIGHTS_ORT_PYTHONPATH
exec cargo test "$@"
