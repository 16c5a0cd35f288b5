#!/usr/bin/env bash
# Nightly scoring from cron, e.g. in /etc/cron.d/ninbatch:
#   15 2 * * *  scorer  /opt/ninbatch/deploy/cron-nightly.sh >> /var/log/ninbatch.log 2>&1
# Reruns are cheap: inputs already scored with the same model and unchanged
# content are skipped (the manifest in the output directory says which), a
# run killed half-way resumes, and a run that overlaps the previous night's
# is refused by the lock (exit 75) instead of racing it.
set -uo pipefail
NINBATCH=${NINBATCH:-/opt/ninbatch/bin/ninbatch}
MODEL=${MODEL:-/opt/ninbatch/models/nin-mnist.nin}
IN=${IN:-/data/images}
OUT=${OUT:-/data/scored}
day=$(date -u +%F)
"$NINBATCH" --log-format json run --model "$MODEL" --out "$OUT" --summary "$OUT/_summary-$day.json" "$IN"
rc=$?
case $rc in
  0) ;;                                                       # every row scored
  3) echo "ninbatch: finished with unreadable rows, see $OUT/_summary-$day.json" >&2 ;;
  2) echo "ninbatch: configuration error (a flag, the model or a path); fix it before the next run" >&2 ;;
  75) echo "ninbatch: a previous run still holds $OUT; nothing was done, the next run catches up" >&2 ;;
  *) echo "ninbatch: run failed (exit $rc); the next run resumes" >&2 ;;
esac
exit $rc
