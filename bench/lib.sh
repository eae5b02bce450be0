# Shared by the bench scripts: free loopback ports, args files that put every component on
# them, and a work dir whose processes (PIDS) are killed and which is removed on exit.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# bench_args DATA_DIR: every component's args on free ports (datastore, API server,
# controller manager, scheduler, kubelet, containerd's metrics); sets D_PORT (datastore client port) and
# A_PORT (API server port). Bootstrap points the kubeconfigs at A_PORT.
bench_args() {
    D_PORT=$(free_port); A_PORT=$(free_port)
    mkdir -p "$1/args"
    printf -- '--listen-client-urls=https://127.0.0.1:%s\n--listen-peer-urls=https://127.0.0.1:%s\n' "$D_PORT" "$(free_port)" >"$1/args/datastore"
    { cat templates/args/kube-apiserver
      printf -- '--secure-port=%s\n--bind-address=127.0.0.1\n--etcd-servers=https://127.0.0.1:%s\n' "$A_PORT" "$D_PORT"
    } >"$1/args/kube-apiserver"
    { cat templates/args/kube-controller-manager
      printf -- '--secure-port=%s\n--bind-address=127.0.0.1\n' "$(free_port)"
    } >"$1/args/kube-controller-manager"
    { cat templates/args/kube-scheduler
      printf -- '--secure-port=%s\n--bind-address=127.0.0.1\n' "$(free_port)"
    } >"$1/args/kube-scheduler"
    { cat templates/args/kubelet
      printf -- '--port=%s\n--read-only-port=%s\n--healthz-port=%s\n--address=127.0.0.1\n' "$(free_port)" "$(free_port)" "$(free_port)"
    } >"$1/args/kubelet"
    sed "s/127.0.0.1:1338/127.0.0.1:$(free_port)/" templates/containerd-template.toml >"$1/args/containerd-template.toml"
}

WORK="$(mktemp -d)"
PIDS=()
bench_cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap bench_cleanup EXIT
