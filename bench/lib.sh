# Shared by the bench scripts: free loopback ports, args files that put every component on
# them, and a work dir whose processes (PIDS) are killed and which is removed on exit.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# bench_args DATA_DIR: args/datastore and args/kube-apiserver on free ports; sets D_PORT
# (datastore client port) and A_PORT (API server port).
bench_args() {
    D_PORT=$(free_port); A_PORT=$(free_port)
    mkdir -p "$1/args"
    printf -- '--listen-client-urls=https://127.0.0.1:%s\n--listen-peer-urls=https://127.0.0.1:%s\n' "$D_PORT" "$(free_port)" >"$1/args/datastore"
    { cat templates/args/kube-apiserver
      printf -- '--secure-port=%s\n--bind-address=127.0.0.1\n--etcd-servers=https://127.0.0.1:%s\n' "$A_PORT" "$D_PORT"
    } >"$1/args/kube-apiserver"
}

WORK="$(mktemp -d)"
PIDS=()
bench_cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap bench_cleanup EXIT
