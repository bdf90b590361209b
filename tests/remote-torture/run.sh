#!/usr/bin/env bash
# The remote torture run (`just remote-torture`): many hosts backing up into
# one repository on a 3-node Garage cluster while forget --prune runs in a
# loop and one Garage node is killed and restarted. Afterwards nothing may be
# lost: every kept snapshot restores bit-exact, `verify --read-data` is clean,
# and the hosts' shared data was stored once.
#
# Needs: garage 2.5.0 on PATH (or GARAGE=...; `cargo install garage --version
# 2.5.0 --locked`), jq. SNAP=path/to/snap (default: target/release/snap).
# HOSTS (default 8), ROUNDS (default 3), SHARED_MIB (default 64).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
SNAP=${SNAP:-$root/target/release/snap}
HOSTS=${HOSTS:-8}
ROUNDS=${ROUNDS:-3}
SHARED_MIB=${SHARED_MIB:-64}
work=$(mktemp -d /tmp/snap-remote-torture.XXXXXX)
cluster=$work/garage
trap '"$here/garage-cluster.sh" stop "$cluster" || true' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
log() { echo "[$(date +%T)] $*"; }

"$here/garage-cluster.sh" start "$cluster"
# shellcheck disable=SC1091
source "$cluster/env"
read -r -a endpoints <<<"$GARAGE_ENDPOINTS"
# Node 2 is the one killed; clients talk to nodes 1 and 3, which must carry
# on with a quorum of 2 of 3.
repo_via() { echo "s3:${endpoints[$(( $1 % 2 == 0 ? 0 : 2 ))]}/$GARAGE_BUCKET/repo"; }

export SNAP_PASSWORD_FILE=$work/password
echo "torture-password" >"$SNAP_PASSWORD_FILE"
snap() { "$SNAP" "$@"; }

log "data: ${SHARED_MIB} MiB shared by $HOSTS hosts, 4 MiB unique each per round"
mkdir -p "$work/data/shared"
for i in $(seq "$SHARED_MIB"); do head -c 1048576 /dev/urandom >"$work/data/shared/f$i"; done
# Many small files too, as real trees have.
mkdir -p "$work/data/shared/small"
for i in $(seq 500); do head -c $((RANDOM % 4096 + 1)) /dev/urandom >"$work/data/shared/small/s$i"; done
for h in $(seq "$HOSTS"); do mkdir -p "$work/data/host$h"; done

add_round() { # host round
    for i in 1 2 3 4; do head -c 1048576 /dev/urandom >"$work/data/host$1/r$2-$i"; done
}

backup() { # host round
    local h=$1 r=$2
    snap -r "$(repo_via "$h")" --cache-dir "$work/cache$h" --retry-lock 10m --json \
        create --host "host$h" --tag "round-$r" "$work/data/shared" "$work/data/host$h" \
        >"$work/create-$h-$r.json" 2>"$work/create-$h-$r.err"
}

snap -r "$(repo_via 1)" --cache-dir "$work/cache1" init --kdf-memory-kib 8192 >/dev/null

# Host 1 goes first, alone: the other hosts' shared data must then dedup.
add_round 1 1
backup 1 1 || fail "first backup: $(cat "$work/create-1-1.err")"

log "$HOSTS hosts x $ROUNDS rounds, forget --prune in a loop, node 2 killed and restarted"
pids=()
for h in $(seq "$HOSTS"); do
    (
        for r in $(seq "$ROUNDS"); do
            [ "$h" = 1 ] && [ "$r" = 1 ] && continue
            add_round "$h" "$r"
            backup "$h" "$r" || { echo "host$h round $r failed: $(tail -3 "$work/create-$h-$r.err")"; exit 1; }
        done
    ) &
    pids+=($!)
done
(
    while [ ! -f "$work/stop-pruner" ]; do
        snap -r "$(repo_via 0)" --cache-dir "$work/cache-pruner" --retry-lock 10m \
            forget --keep-last 2 --prune >>"$work/pruner.log" 2>&1 || echo "pruner failed" >>"$work/pruner.log"
        sleep 2
    done
) &
pruner=$!
sleep 20
log "killing garage node 2"
"$here/garage-cluster.sh" kill-node "$cluster" 2
sleep 20
log "restarting garage node 2"
"$here/garage-cluster.sh" start-node "$cluster" 2
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
touch "$work/stop-pruner"
wait "$pruner"
[ "$failed" = 0 ] || fail "a backup failed (logs in $work)"
if grep -q "pruner failed" "$work/pruner.log"; then
    fail "forget --prune failed: $(grep -B3 'pruner failed' "$work/pruner.log" | head -20)"
fi

repo=$(repo_via 0)
log "final prune, then verify --read-data"
snap -r "$repo" --cache-dir "$work/cache-check" forget --keep-last 2 --prune >/dev/null
snap -r "$repo" --cache-dir "$work/cache-check" verify --read-data >"$work/verify.log" 2>&1 ||
    fail "verify: $(tail -20 "$work/verify.log")"

log "restoring every kept snapshot"
snap -r "$repo" --cache-dir "$work/cache-check" --json snapshots >"$work/snapshots.json"
kept=$(jq length "$work/snapshots.json")
[ "$kept" -ge "$HOSTS" ] || fail "only $kept snapshots kept for $HOSTS hosts"
jq -r '.[] | "\(.id) \(.host) \(.tags[0])"' "$work/snapshots.json" | while read -r id host tag; do
    r=${tag#round-}
    h=${host#host}
    target=$work/restore/$id
    snap -r "$repo" --cache-dir "$work/cache-check" -q restore "$id" --target "$target"
    got=$(find "$target" -type f | wc -l)
    want=$(( SHARED_MIB + 500 + 4 * r ))
    [ "$got" = "$want" ] || fail "snapshot $id ($host $tag): $got files restored, want $want"
    # Every restored file is byte-identical to its source.
    (cd "$target$work/data" && find . -type f -print0 | xargs -0 -n 200 sh -c 'for f; do cmp -s "$f" "'"$work/data"'/$f" || { echo "differs: $f"; exit 1; }; done' _) ||
        fail "snapshot $id restored wrong bytes"
    rm -rf "$target"
done

log "cross-host dedup"
shared_bytes=$(du -sb "$work/data/shared" | cut -f1)
for h in $(seq 2 "$HOSTS"); do
    added=$(jq '.summary.bytes_added_raw' "$work/create-$h-1.json")
    # Each other host's first backup adds its own 4 MiB (plus tree blobs),
    # not the shared data again.
    [ "$added" -lt $(( 4 * 1048576 + shared_bytes / 20 )) ] ||
        fail "host$h added $added bytes in its first backup: the shared $shared_bytes bytes did not dedup"
done
log "OK: $kept snapshots kept and restored bit-exact, verify clean, shared data stored once"
rm -rf "$work"
