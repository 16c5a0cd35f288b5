#!/usr/bin/env bash
# The main job on the default model. Until `ninbatch run` lands this builds the
# binary, prints the nin-cifar10 layer table, writes a Caffe-initialised model
# file, reads it back and times the forward pass.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p bin out
go build -o bin/ninbatch ./cmd/ninbatch
bin/ninbatch info --preset nin-cifar10
bin/ninbatch init --preset nin-cifar10 --seed 1 --out out/nin-cifar10-init.nin
bin/ninbatch info out/nin-cifar10-init.nin --json | head -5
bin/ninbatch bench --model out/nin-cifar10-init.nin --batch 64 --reps 3
