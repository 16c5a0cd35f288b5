#!/usr/bin/env bash
# Trains the shipped model models/nin-mnist.nin: the authors' MNIST NIN
# (reference §2.2) on the 60,000 MNIST training images, validated on the
# 10,000 test images (monitoring only: no early stopping or model selection
# uses them; the model is the last epoch's).
#
#   bash scripts/train-mnist.sh            # start, or continue after an interruption
#   THREADS=1 WORK=/tmp/x bash scripts/train-mnist.sh
#
# Long: 1-1.5 minutes per epoch on 2 AVX-512 cores (40 epochs). Checkpoints, metrics and the
# log live in $WORK (outside the work tree); rerunning resumes exactly.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WORK=${WORK:-$HOME/.cache/ninbatch/train-mnist}
THREADS=${THREADS:-2}
EXTRA=${EXTRA:-}
mkdir -p "$WORK" bin
go build -o bin/ninbatch ./cmd/ninbatch
data=${DATA:-$WORK/data}
[ -f "$data/train.parquet" ] || bin/ninbatch dataset mnist --from "$(bash scripts/fetch-mnist.sh)" --out "$data"

args=(train --preset nin-mnist --init-scheme lecun --seed 1
      --epochs 40 --batch 128 --lr 0.05 --schedule cosine --warmup 2
      --momentum 0.9 --weight-decay 5e-4
      --val "$data/test.parquet" --out "$WORK/nin-mnist.nin" $EXTRA "$data/train.parquet")
resume=()
[ -f "$WORK/nin-mnist.nin.ckpt" ] && resume=(--resume)
bin/ninbatch --log-format json --threads "$THREADS" "${args[@]}" "${resume[@]}" 2>&1 | tee -a "$WORK/train.log"
cp "$WORK/nin-mnist.nin" models/nin-mnist.nin
bin/ninbatch eval --model models/nin-mnist.nin "$data/test.parquet"
