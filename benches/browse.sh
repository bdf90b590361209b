#!/usr/bin/env bash
# Sequential read throughput of one big file through `snap webdav` (curl)
# and `snap mount` (cat), against `snap dump` of the same file, in one run,
# as ratios. Usage: benches/browse.sh [SIZE_MIB] (default 512); SNAP=path to
# the binary (default target/release/snap, built if missing). Writes a
# Markdown table to target/bench/browse.md.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-512}
snap=${SNAP:-target/release/snap}
[ -x "$snap" ] || cargo build --release
work=$(mktemp -d "${TMPDIR:-/tmp}/snap-browse-bench.XXXXXX")
mnt="$work/mnt"
cleanup() {
    [ -n "${dav_pid:-}" ] && kill "$dav_pid" 2>/dev/null || true
    if [ -n "${mount_pid:-}" ]; then kill "$mount_pid" 2>/dev/null || true; wait "$mount_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
export SNAP_PASSWORD=bench
s() { "$snap" -q -r "$work/repo" --cache-dir "$work/cache" "$@"; }
mkdir -p "$work/src" "$mnt"
head -c $((size_mib << 20)) /dev/urandom > "$work/src/big.bin"
s init >/dev/null
s create "$work/src" >/dev/null
sha=$(sha256sum < "$work/src/big.bin" | cut -d' ' -f1)
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
# seconds COMMAND...: wall time of the command, whose stdout is checked against the source.
seconds() {
    drop
    local t0 t1 got
    t0=$(date +%s.%N)
    got=$("$@" | sha256sum | cut -d' ' -f1)
    t1=$(date +%s.%N)
    [ "$got" = "$sha" ] || { echo "wrong bytes from: $*" >&2; exit 1; }
    echo "$t1 - $t0" | bc -l
}
path="latest$work/src/big.bin"
t_dump=$(seconds s dump latest "$work/src/big.bin")
# Started directly (not through s), so $! is snap's own pid.
"$snap" -q -r "$work/repo" --cache-dir "$work/cache" webdav --listen 127.0.0.1:0 > "$work/dav.out" & dav_pid=$!
for _ in $(seq 100); do grep -q http:// "$work/dav.out" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://[^ ]*' "$work/dav.out")
t_dav=$(seconds curl -sf "$url$path")
"$snap" -q -r "$work/repo" --cache-dir "$work/cache" mount "$mnt" > "$work/mount.out" & mount_pid=$!
for _ in $(seq 100); do grep -q mounted "$work/mount.out" 2>/dev/null && break; sleep 0.1; done
t_mount=$(seconds cat "$mnt/$path")
mbs() { echo "scale=1; $size_mib / $1" | bc -l; }
ratio() { echo "scale=2; $t_dump / $1" | bc -l; }
mkdir -p target/bench
{
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, snap at $(git rev-parse --short HEAD), $size_mib MiB random file, page cache dropped before each read where allowed."
    echo
    echo "| reader | seconds | MiB/s | throughput / dump's |"
    echo "|---|---|---|---|"
    echo "| snap dump > pipe | $t_dump | $(mbs "$t_dump") | 1.00 |"
    echo "| snap webdav + curl | $t_dav | $(mbs "$t_dav") | $(ratio "$t_dav") |"
    echo "| snap mount + cat | $t_mount | $(mbs "$t_mount") | $(ratio "$t_mount") |"
} | tee target/bench/browse.md
