#!/usr/bin/env bash
# `ninbatch run` throughput against the bare forward
# pass (`ninbatch bench`) at the same batch and threads, and peak RSS of
# scoring 20,000 and 200,000 32x32 PNG rows with nin-cifar10.
#   bash scripts/measure-run.sh [WORKDIR]      (needs ~1 GB of disk; run on a quiet machine)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
W=${1:-$HOME/.cache/ninbatch/measure-run}
BATCH=${BATCH:-64}
THREADS=${THREADS:-2}
mkdir -p "$W" bin
go build -o bin/ninbatch ./cmd/ninbatch
if [ ! -f "$W/pq/train.parquet" ]; then
  # CIFAR-10 binary-format files with synthetic content: 200,000 train and 20,000 test rows
  mkdir -p "$W/bin-cifar"
  /usr/bin/python3 - "$W/bin-cifar" <<'PY'
import sys, numpy as np
d = sys.argv[1]; rng = np.random.default_rng(1); yy, xx = np.mgrid[0:32, 0:32]
def batch(n, path):
    out = np.empty((n, 3073), np.uint8); out[:, 0] = rng.integers(0, 10, n)
    for i in range(0, n, 1000):
        k = min(1000, n - i)
        base = (xx[None] * rng.integers(1, 8, (k, 1, 1)) + yy[None] * rng.integers(1, 8, (k, 1, 1))) % 256
        img = np.stack([(base + c * 40 + rng.integers(0, 16, (k, 32, 32))) % 256 for c in range(3)], 1)
        out[i:i + k, 1:] = img.astype(np.uint8).reshape(k, 3072)
    out.tofile(path)
for j in range(1, 6): batch(40000, f"{d}/data_batch_{j}.bin")
batch(20000, f"{d}/test_batch.bin")
PY
  bin/ninbatch dataset cifar10 --from "$W/bin-cifar" --out "$W/pq"
fi
[ -f "$W/cifar.nin" ] || bin/ninbatch init --preset nin-cifar10 --seed 1 --out "$W/cifar.nin"
bench() { bin/ninbatch bench --model "$W/cifar.nin" --batch "$BATCH" --threads "$THREADS" --reps 5 --json; }
echo "bench before: $(bench)"
for n in 20k 200k; do
  f=$W/pq/test.parquet; [ $n = 200k ] && f=$W/pq/train.parquet
  rm -rf "$W/out-$n"
  /usr/bin/time -v bin/ninbatch --log-format json --cpuprofile "$W/run-$n.prof" run --model "$W/cifar.nin" \
    --batch "$BATCH" --threads "$THREADS" --out "$W/out-$n" --summary "$W/summary-$n.json" "$f" 2> "$W/time-$n.log" >/dev/null
  echo "$n: $(grep -E 'Maximum resident' "$W/time-$n.log" | sed 's/^[[:space:]]*//'), $(grep -E '"img_per_s"|"infer_seconds"|"decode_seconds"|"seconds"' "$W/summary-$n.json" | tr -d ' \n')"
done
echo "bench after: $(bench)"
