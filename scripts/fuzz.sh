#!/usr/bin/env bash
# Runs every go test -fuzz target in turn for the given time each.
#   bash scripts/fuzz.sh            # 10s each (what CI runs)
#   bash scripts/fuzz.sh 10m        # the long local run (at least 10 minutes a target)
#   TARGETS="./io:FuzzOpenInput" bash scripts/fuzz.sh 10m
#
# -fuzzminimizetime is capped: the default (60 s of minimisation per new
# interesting input) makes a slow target such as FuzzOpenInput, which writes
# a file and opens it per execution, look stalled at "0/sec" for minutes.
# -parallel defaults to the core count; on CI's 2 cores use both.
# New corpus entries land in Go's fuzz cache; a failure is written to the
# package's testdata/fuzz/<target>/ and fails this script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
T=${1:-10s}
PAR=${PARALLEL:-$(nproc)}
TARGETS=${TARGETS:-"./nin:FuzzDecodeModel ./nin:FuzzLoadStateDict ./onnx:FuzzImport ./io:FuzzDecodeImage ./io:FuzzOpenInput"}
#
# Go 1.26's fuzz coordinator can fail a target with a bare "context deadline
# exceeded" when -fuzztime ends while a worker is mid-call (golang/go#75804,
# fixed in Go 1.27); it happened once in CI on FuzzDecodeModel. A real finding
# always writes a reproducer ("Failing input written to"), so a failure with
# the deadline message and no reproducer is run again, up to twice; anything
# else fails at once.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in $TARGETS; do
  pkg=${t%%:*} name=${t##*:}
  for try in 1 2 3; do
    echo "fuzz: $name in $pkg for $T (try $try)" >&2
    if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$T" -fuzzminimizetime 100x -parallel "$PAR" "$pkg" 2>&1 | tee "$log"; then
      break
    fi
    if [ "$try" = 3 ] || ! grep -q 'context deadline exceeded' "$log" || grep -q 'Failing input written to' "$log"; then
      echo "fuzz: $name failed" >&2
      exit 1
    fi
    echo "fuzz: $name: Go's fuzztime deadline race (golang/go#75804), no reproducer written; running it again" >&2
  done
done
