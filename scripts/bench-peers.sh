#!/usr/bin/env bash
# ninbatch, ONNX Runtime and PyTorch interleaved in one run (see scripts/bench_peers.py).
#   bash scripts/bench-peers.sh [--models nin-cifar10] [--batches 1,16,64] [--threads 1,2] [--reps 5]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PEERS=${PEERS_DIR:-../shared/peers}
export PEERS_CACHE=${PEERS_CACHE:-$HOME/.cache/ninbatch-peers}
bash "$PEERS/setup.sh" --quiet
mkdir -p bin
go build -o bin/ninbatch ./cmd/ninbatch
export PYTHONDONTWRITEBYTECODE=1 NODE_PATH="$PEERS_CACHE/ort/node_modules"
exec /usr/bin/python3 scripts/bench_peers.py "$@"
