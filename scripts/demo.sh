#!/usr/bin/env bash
# The main job on the shipped default model and data: fetch MNIST through the
# Go module proxy, convert it to Hugging Face-style Parquet, score the 10,000
# test images with models/nin-mnist.nin into Parquet, then report accuracy and
# speed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p bin out
go build -o bin/ninbatch ./cmd/ninbatch
model=models/nin-mnist.nin
[ -f data/mnist/test.parquet ] || bin/ninbatch dataset mnist --from "$(bash scripts/fetch-mnist.sh)" --out data/mnist
bin/ninbatch info "$model" | sed -n 1,3p  # sed reads to the end: head would SIGPIPE info under pipefail
bin/ninbatch run --model "$model" --out out/scored --force --summary out/summary.json data/mnist/test.parquet  # --force: rescore on every demo run
bin/ninbatch eval --model "$model" data/mnist/test.parquet
echo
echo "scored rows: out/scored/test.parquet"
sed -n 's/^  "\(rows_in\|rows_scored\|rows_error\|seconds\|img_per_s\)": \(.*\),$/  \1: \2/p' out/summary.json
