#!/usr/bin/env bash
# Starts a 3-node Garage cluster on loopback (replication factor 3), creates a
# key and a bucket, and writes the S3 settings to DIR/env (sourceable).
# Usage: garage-cluster.sh start DIR | stop DIR | kill-node DIR N | start-node DIR N
# Ports: node N (1..3) listens on S3 39N0 and RPC 39N1 (3910/3911, 3920/3921, 3930/3931).
set -euo pipefail
GARAGE=${GARAGE:-garage}
cmd=$1
dir=$(realpath -m "$2")

conf() { echo "$dir/node$1/garage.toml"; }
g() { "$GARAGE" -c "$(conf 1)" "$@"; }

start_node() {
    local n=$1
    "$GARAGE" -c "$(conf "$n")" server >"$dir/node$n/log" 2>&1 &
    echo $! >"$dir/node$n/pid"
}

wait_port() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "garage: nothing listens on port $1" >&2
    return 1
}

case $cmd in
start)
    mkdir -p "$dir"
    secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    for n in 1 2 3; do
        mkdir -p "$dir/node$n/meta" "$dir/node$n/data"
        cat >"$(conf "$n")" <<TOML
metadata_dir = "$dir/node$n/meta"
data_dir = "$dir/node$n/data"
db_engine = "sqlite"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:39${n}1"
rpc_public_addr = "127.0.0.1:39${n}1"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:39${n}0"
TOML
        start_node "$n"
    done
    for n in 1 2 3; do wait_port "39${n}1"; done
    # Connect nodes 2 and 3 to node 1, then give each a role in zone dc1.
    for n in 2 3; do
        id=$("$GARAGE" -c "$(conf "$n")" node id -q 2>/dev/null)
        g node connect "$id" >/dev/null
    done
    sleep 1
    for n in 1 2 3; do
        id=$("$GARAGE" -c "$(conf "$n")" node id -q 2>/dev/null | cut -d@ -f1)
        g layout assign -z dc1 -c 1G "$id" >/dev/null
    done
    g layout apply --version 1 >/dev/null
    key_out=$(g key create snap-torture)
    key_id=$(echo "$key_out" | awk -F': *' '/Key ID/ {print $2; exit}')
    secret_key=$(echo "$key_out" | awk -F': *' '/Secret key/ {print $2; exit}')
    g bucket create snap >/dev/null
    g bucket allow --read --write --owner snap --key snap-torture >/dev/null
    for n in 1 2 3; do wait_port "39${n}0"; done
    cat >"$dir/env" <<ENV
export AWS_ACCESS_KEY_ID=$key_id
export AWS_SECRET_ACCESS_KEY=$secret_key
export AWS_DEFAULT_REGION=garage
export GARAGE_ENDPOINTS="http://127.0.0.1:3910 http://127.0.0.1:3920 http://127.0.0.1:3930"
export GARAGE_BUCKET=snap
ENV
    echo "garage cluster up in $dir (settings: $dir/env)"
    ;;
stop)
    for n in 1 2 3; do
        [ -f "$dir/node$n/pid" ] && kill "$(cat "$dir/node$n/pid")" 2>/dev/null || true
    done
    ;;
kill-node)
    kill -9 "$(cat "$dir/node$3/pid")"
    ;;
start-node)
    start_node "$3"
    wait_port "39${3}0"
    ;;
*)
    echo "usage: $0 start|stop DIR | kill-node|start-node DIR N" >&2
    exit 2
    ;;
esac
