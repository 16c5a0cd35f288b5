#!/usr/bin/env bash
# `ninbatch run` against `ninbatch bench` on nin-imagenet
# (seed-1 init model) at batch 64, 2 threads, scoring the 10,000 MNIST test rows
# upscaled to 224x224x3 by preprocessing; bench and run alternate (the machine
# drifts by 15-30% within minutes), and run's peak RSS comes from /usr/bin/time -v.
#   bash scripts/measure-run-imagenet.sh [ROUNDS]   (after scripts/demo.sh has made data/mnist)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROUNDS=${1:-2}
W=${NINBATCH_MEASURE_DIR:-$HOME/.cache/ninbatch/measure-run-imagenet}
mkdir -p "$W" bin
go build -o bin/ninbatch ./cmd/ninbatch
[ -f data/mnist/test.parquet ] || { echo "data/mnist/test.parquet is missing: run scripts/demo.sh first" >&2; exit 2; }
[ -f "$W/imagenet.nin" ] || bin/ninbatch init --preset nin-imagenet --seed 1 --out "$W/imagenet.nin" >/dev/null
bench() { bin/ninbatch bench --model "$W/imagenet.nin" --batch 64 --threads 2 --reps 5 | grep -o '): [0-9.]* img/s' | tr -d '):'; }
echo "bench: $(bench)"
for r in $(seq "$ROUNDS"); do
  rm -rf "$W/out"
  /usr/bin/time -v bin/ninbatch run --model "$W/imagenet.nin" --batch 64 --threads 2 --out "$W/out" \
    --summary "$W/summary.json" data/mnist/test.parquet >/dev/null 2>"$W/time.log"
  echo "run: $(grep -o '"img_per_s": [0-9.]*' "$W/summary.json" | grep -o '[0-9.]*$') img/s, decode CPU $(grep -o '"decode_seconds": [0-9.]*' "$W/summary.json" | grep -o '[0-9.]*$') s, $(grep 'Maximum resident' "$W/time.log" | sed 's/^[[:space:]]*//')"
  echo "bench: $(bench)"
done
