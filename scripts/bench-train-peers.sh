#!/usr/bin/env bash
# Training step against PyTorch, interleaved: rounds of ninbatch's
# BenchmarkTrainStep (batch 128) and the peers' `bench.sh --train`, each at
# the same thread count, then the per-round and median ratios against
# PyTorch's best layout.
#   bash scripts/bench-train-peers.sh [--rounds 3] [--threads 2]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PEERS=${PEERS_DIR:-../shared/peers}
export PEERS_CACHE=${PEERS_CACHE:-$HOME/.cache/ninbatch-peers}
rounds=3 threads=2
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    *) echo "usage: $0 [--rounds N] [--threads T]" >&2; exit 2 ;;
  esac
done
bash "$PEERS/setup.sh" --quiet
mkdir -p bin
go test -c -o bin/nin.test ./nin
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "cpu flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512bw|avx512vl|avx512dq|avx512_vnni|avx512_bf16)$' | tr '\n' ' ')"
echo "ninbatch kernels: $(go run ./cmd/ninbatch info --preset nin-mnist 2>/dev/null | awk '/^kernels/{print $2}')"
for r in $(seq "$rounds"); do
  echo "== round $r ninbatch $(date -u +%H:%M)"
  (cd nin && ../bin/nin.test -test.run XXX -test.bench "TrainStep/.*/b128/t$threads\$" -test.benchtime 20x) |
    grep img/s | tee -a "$out/nb"
  echo "== round $r pytorch $(date -u +%H:%M)"
  bash "$PEERS/bench.sh" --train --threads "$threads" | grep -E '^\| nin-|^fwd' | tee -a "$out/pt"
done
echo "== ninbatch / best PyTorch layout, per round, then the median"
for m in nin-mnist nin-cifar10; do
  paste <(grep "/$m/" "$out/nb" | awk '{print $(NF-1)}') \
        <(grep "^| $m " "$out/pt" | awk -F'|' '{print $6+0}' | paste - - | awk '{print ($1>$2)?$1:$2}') |
    awk -v m="$m" '{printf "%s round %d: %.1f / %.1f img/s = %.2f\n", m, NR, $1, $2, $1/$2; print $1/$2 > "/dev/stderr"}' \
    2> "$out/ratio-$m"
  sort -g "$out/ratio-$m" | awk -v m="$m" '{r[NR]=$1} END {printf "%s median %.2f\n", m, (NR%2)?r[(NR+1)/2]:(r[NR/2]+r[NR/2+1])/2}'
done
