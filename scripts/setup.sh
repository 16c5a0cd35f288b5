#!/usr/bin/env bash
# Installs what building ninbatch needs on a fresh Debian machine and fetches
# the Go modules. Idempotent: every step is skipped when already done.
#   Debian: libopenblas-dev (pthread build) and pkg-config, gcc for cgo
#   Go modules: through the Go module proxy (go mod download)
#   tests: node/npm (DuckDB, onnxruntime), chromium (the HTML reports)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "setup: $*" >&2; }

SUDO=
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
pkgs=()
pkg-config --exists openblas 2>/dev/null || pkgs+=(libopenblas-dev)
command -v pkg-config >/dev/null || pkgs+=(pkg-config)
command -v gcc >/dev/null || pkgs+=(gcc libc6-dev)
[ -x /usr/bin/time ] || pkgs+=(time) # peak-RSS tests
if [ ${#pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] && [ -z "$SUDO" ]; then say "need root to install: ${pkgs[*]}"; exit 1; fi
  say "installing ${pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q >&2
  $SUDO apt-get install -y -q "${pkgs[@]}" >&2
fi
pkg-config --exists openblas || { say "pkg-config cannot find openblas after install"; exit 1; }

# DuckDB (npm @duckdb/node-api) for the Parquet interop test: an independent
# implementation writes ninbatch's inputs and reads its outputs back.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  say "installing nodejs npm"
  export DEBIAN_FRONTEND=noninteractive
  ${SUDO:-} apt-get update -q >&2 || true
  ${SUDO:-} apt-get install -y -q nodejs npm >&2
fi
duck=interop/duckdb
if [ ! -f "$duck/node_modules/.package-lock.json" ] || ! cmp -s "$duck/package-lock.json" "$duck/node_modules/.ninbatch-lock"; then
  say "npm ci in $duck"
  (cd "$duck" && npm ci --no-audit --no-fund --loglevel=error >&2)
  cp "$duck/package-lock.json" "$duck/node_modules/.ninbatch-lock"
fi

# onnxruntime (npm onnxruntime-node, CPU only: its postinstall would fetch
# CUDA libraries) runs the ONNX files ninbatch exports in the export test.
ort=interop/onnxruntime
if [ ! -f "$ort/node_modules/.package-lock.json" ] || ! cmp -s "$ort/package-lock.json" "$ort/node_modules/.ninbatch-lock"; then
  say "npm ci in $ort"
  (cd "$ort" && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error >&2)
  cp "$ort/package-lock.json" "$ort/node_modules/.ninbatch-lock"
fi

# Chromium (Debian chromium) opens the HTML reports headless in the report
# test: no console errors, every picture decoded.
if ! command -v chromium >/dev/null; then
  say "installing chromium"
  export DEBIAN_FRONTEND=noninteractive
  ${SUDO:-} apt-get update -q >&2 || true
  ${SUDO:-} apt-get install -y -q chromium >&2
fi

command -v go >/dev/null || { say "Go 1.26 or newer is not on PATH; install it from go.dev/dl (Debian 12's golang package is too old)"; exit 1; }
go mod download
say "ok: $(go version | cut -d' ' -f3), OpenBLAS $(pkg-config --modversion openblas)"
