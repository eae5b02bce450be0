#!/usr/bin/env bash
# The mk8s datastore beside Debian's real etcd 3.4, in one run, on loopback, both with the
# cluster's mutual TLS and an fsync per commit (etcd's default; mk8s's group commit), and
# each figure printed with the ratio mk8s / etcd.
# Goals (issue 4): >= 2x etcd's put throughput at 64 clients, <= 0.25x its RSS.
#
#   CHECK_PERF=0   skip `etcdctl check perf --load=s` (60 s per server)
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in etcd etcdctl; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is required (apt-get install etcd-server etcd-client)" >&2; exit 1; }
done
cargo build --release --locked -q
cargo bench --locked -q --bench datastore_load --no-run 2>/dev/null
LOAD="$(ls -t target/release/deps/datastore_load-* | grep -v '\.d$' | head -1)"
MK8S=target/release/mk8s

. bench/lib.sh

"$MK8S" bootstrap --data-dir "$WORK/data" >/dev/null
CERTS="$WORK/data/certs"
ctl() { local ep="$1"; shift; ETCDCTL_API=3 etcdctl --endpoints="$ep" --cacert="$CERTS/ca.crt" \
    --cert="$CERTS/apiserver-etcd-client.crt" --key="$CERTS/apiserver-etcd-client.key" "$@"; }
wait_ready() { for _ in $(seq 1 100); do ctl "$1" endpoint health >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "bench: $1 not ready" >&2; exit 1; }

E_PORT=$(free_port); E_PEER=$(free_port); M_PORT=$(free_port); M_PEER=$(free_port)
ETCD_EP="https://127.0.0.1:$E_PORT"; MK8S_EP="https://127.0.0.1:$M_PORT"

etcd --name bench --data-dir "$WORK/etcd" \
    --listen-client-urls "$ETCD_EP" --advertise-client-urls "$ETCD_EP" \
    --listen-peer-urls "https://127.0.0.1:$E_PEER" --initial-advertise-peer-urls "https://127.0.0.1:$E_PEER" \
    --initial-cluster "bench=https://127.0.0.1:$E_PEER" \
    --cert-file "$CERTS/datastore.crt" --key-file "$CERTS/datastore.key" --trusted-ca-file "$CERTS/ca.crt" --client-cert-auth \
    --peer-cert-file "$CERTS/datastore.crt" --peer-key-file "$CERTS/datastore.key" --peer-trusted-ca-file "$CERTS/ca.crt" \
    --peer-client-cert-auth --logger=zap --log-level=error >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!; PIDS+=("$ETCD_PID")
mkdir -p "$WORK/data/args"
printf -- '--listen-client-urls=%s\n--listen-peer-urls=https://127.0.0.1:%s\n' "$MK8S_EP" "$M_PEER" >"$WORK/data/args/datastore"
"$MK8S" daemon datastore --data-dir "$WORK/data" >"$WORK/mk8s.log" 2>&1 &
MK8S_PID=$!; PIDS+=("$MK8S_PID")
wait_ready "$ETCD_EP"; wait_ready "$MK8S_EP"

declare -A R
run() { # server endpoint phase
    while read -r name value unit; do R["$1/$name"]="$value"; U["$name"]="$unit"; done < <("$LOAD" "$2" "$CERTS" "$3")
}
declare -A U
if [ "${CHECK_PERF:-1}" = 1 ]; then
    for s in etcd mk8s; do
        ep=$ETCD_EP; [ $s = mk8s ] && ep=$MK8S_EP
        out="$(ctl "$ep" check perf --load=s 2>&1 || true)"
        echo "== $s: etcdctl check perf --load=s" >&2
        echo "$out" >&2
        R["$s/check_perf_throughput"]="$( (grep -o 'Throughput is [0-9]*' <<<"$out" || echo 0) | grep -o '[0-9]*' | head -1)"
        R["$s/check_perf_slowest"]="$( (grep -o 'Slowest request took *[0-9.]*s' <<<"$out" || echo 0s) | grep -o '[0-9.][0-9.]*s' | tr -d s | head -1)"
        if grep -q '^FAIL' <<<"$out"; then R["$s/check_perf_verdict"]=FAIL; else R["$s/check_perf_verdict"]=PASS; fi
    done
    U[check_perf_throughput]="writes/s"; U[check_perf_slowest]="s"
fi
for phase in put1 put64 range1000 watch100 load100k; do
    run etcd "$ETCD_EP" "$phase"
    run mk8s "$MK8S_EP" "$phase"
done
rss() { awk '/VmRSS/ {print $2/1024}' "/proc/$1/status"; }
R[etcd/rss_after_100k]="$(rss "$ETCD_PID")"; R[mk8s/rss_after_100k]="$(rss "$MK8S_PID")"; U[rss_after_100k]="MiB"
R[etcd/db_size]="$(du -sb "$WORK/etcd" | awk '{print $1/1048576}')"
R[mk8s/db_size]="$(du -sb "$WORK/data/var/lib/datastore" | awk '{print $1/1048576}')"; U[db_size]="MiB"

printf '%-26s %14s %14s %10s\n' "datastore benchmark" "etcd 3.4" "mk8s" "mk8s/etcd"
for m in check_perf_throughput check_perf_slowest put_1_client put_64_clients range_1000_p50 range_1000_p99 watch_100_p99 load_100k rss_after_100k db_size; do
    [ -n "${R[etcd/$m]:-}" ] || continue
    awk -v m="$m" -v e="${R[etcd/$m]}" -v k="${R[mk8s/$m]}" -v u="${U[$m]:-}" \
        'BEGIN { r = (e > 0) ? sprintf("%.2f", k / e) : "n/a"; printf "%-26s %14s %14s %10s\n", m " (" u ")", e, k, r }'
done
[ -n "${R[etcd/check_perf_verdict]:-}" ] && echo "etcdctl check perf --load=s: etcd ${R[etcd/check_perf_verdict]}, mk8s ${R[mk8s/check_perf_verdict]}"
echo "goals: put_64_clients ratio >= 2.00; rss_after_100k ratio <= 0.25"
