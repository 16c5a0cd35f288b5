#!/usr/bin/env bash
# Runs the Dockerfile's steps on this Debian machine as far as it can without
# a container registry (no base image can be pulled): builds the binary with
# the build stage's command, checks that every shared library it links comes
# from a package the runtime stage installs (libopenblas0-pthread and what it
# depends on, libc6), and scores MNIST as an unprivileged user (uid 10001, the
# image's) with the model at the image's path layout. With docker or podman
# and a reachable registry, `docker build .` runs the real thing.
#   bash scripts/container-check.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { echo "container-check: $*" >&2; }
grep -q '^FROM debian:bookworm-slim' Dockerfile || { say "the runtime stage is not debian:bookworm-slim"; exit 1; }
. /etc/os-release
[ "${VERSION_CODENAME:-}" = bookworm ] || say "warning: this machine is $PRETTY_NAME, the image is bookworm"
tmp=$(mktemp -d /tmp/ninbatch-container.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"

# the build stage
build=$(sed -n 's/^RUN \(CGO_ENABLED=1 go build .*\) -o \/out\/ninbatch \(.*\) \\$/\1 -o '"${tmp//\//\\/}"'\/ninbatch \2/p' Dockerfile)
[ -n "$build" ] || { say "no go build step found in the Dockerfile"; exit 1; }
say "$build"
eval "$build"

# the runtime stage's packages cover what the binary links
allowed=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
  --no-replaces --no-enhances libopenblas0-pthread 2>/dev/null | grep -v '^ ' | sed 's/:.*//' | sort -u)
allowed=$(printf '%s\nlibc6\nlibopenblas0-pthread\n' "$allowed" | sort -u)
bad=0
while read -r lib; do
  real=$(readlink -f "$lib")
  pkg=$(dpkg -S "$real" 2>/dev/null | head -1 | cut -d: -f1) || pkg=
  [ -n "$pkg" ] || pkg=$(dpkg -S "$lib" 2>/dev/null | head -1 | cut -d: -f1) || pkg=
  if [ -z "$pkg" ] || ! grep -qx "$pkg" <<<"$allowed"; then
    say "links $lib (package ${pkg:-unknown}), which the runtime stage does not install"; bad=1
  else
    say "links $(basename "$lib") from $pkg"
  fi
done < <(ldd "$tmp/ninbatch" | awk '/=> \// {print $3} /^\t\/[^ ]+ \(/ {print $1}')
[ "$bad" = 0 ] || exit 1

# the image's layout, run as its unprivileged user
mkdir -p "$tmp/models" "$tmp/work"
cp models/nin-mnist.nin "$tmp/models/"
mnist=$(bash scripts/fetch-mnist.sh)
"$tmp/ninbatch" --log-format json dataset mnist --from "$mnist" --out "$tmp/data" 2>/dev/null
chmod -R a+rX "$tmp"
chown 10001:10001 "$tmp/work" 2>/dev/null || chmod 777 "$tmp/work"
as_user=(setpriv --reuid=10001 --regid=10001 --clear-groups)
[ "$(id -u)" = 0 ] || as_user=()
(cd "$tmp/work" && env -i PATH=/usr/bin:/bin NINBATCH_LOG_FORMAT=json "${as_user[@]}" "$tmp/ninbatch" run \
  --model "$tmp/models/nin-mnist.nin" --out "$tmp/work/scored" --summary "$tmp/work/summary.json" "$tmp/data/test.parquet") \
  > "$tmp/run.log" 2>&1 || { cat "$tmp/run.log" >&2; say "the run as uid 10001 failed"; exit 1; }
grep -Eq '"rows_scored": ?10000,' "$tmp/work/summary.json" || { cat "$tmp/work/summary.json" >&2; say "the run did not score 10,000 rows"; exit 1; }
owner=$(stat -c %u "$tmp/work/scored/test.parquet")
say "scored 10,000 rows as uid ${owner} (the image's user is 10001)"
