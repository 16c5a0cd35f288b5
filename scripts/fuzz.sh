#!/usr/bin/env bash
# Runs every go test -fuzz target in turn for the given time each.
#   bash scripts/fuzz.sh            # 10s each (what CI runs)
#   bash scripts/fuzz.sh 10m        # the long local run (issue 5: >= 10 minutes each)
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
TARGETS=${TARGETS:-"./nin:FuzzDecodeModel ./io:FuzzDecodeImage ./io:FuzzOpenInput"}
for t in $TARGETS; do
  pkg=${t%%:*} name=${t##*:}
  echo "fuzz: $name in $pkg for $T" >&2
  go test -run '^$' -fuzz "^${name}\$" -fuzztime "$T" -fuzzminimizetime 100x -parallel "$PAR" "$pkg"
done
