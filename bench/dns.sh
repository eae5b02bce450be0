#!/usr/bin/env bash
# Cluster DNS figures (issue 10): queries/s and latency of `mk8s daemon dns` answering for the
# cluster zone, loaded by Debian's dnsperf on loopback, beside CoreDNS's published figure.
# CoreDNS is not installable here, so its anchor is the number CoreDNS publishes for the same
# kind of load: coredns/deployment, kubernetes/Scaling_CoreDNS.md, "CPU and QPS": a single
# CoreDNS (default settings) on a GCE n1-standard-2 (2 vCPUs, both pegged) serves 33,669
# internal queries/s at 2.608 ms average latency (dnsperf via kubernetes/perf-tests/dns).
# Ours runs on this machine's 2 cores, which dnsperf shares; figures are medians of 3 rounds.
# Upstream forwarding is never exercised: --upstream is a loopback port nothing listens on.
#
# Two paths: straight at the daemon on loopback, and as a pod asks: from a network namespace
# of this run (a veth pair, TEST-NET-2 addresses) at a kube-dns Service's cluster IP, which
# `mk8s daemon proxy` (own table, own service range) DNATs to the daemon on the veth's host
# address. Packets go only between this host and that namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v dnsperf >/dev/null || { echo "bench: dnsperf not found (packaging/deps.sh test)" >&2; exit 1; }
cargo build --release --locked -q
MK8S="${CARGO_TARGET_DIR:-target}/release/mk8s"
ANCHOR_QPS=33669
ANCHOR_AVG_MS=2.608
ANCHOR_SRC="coredns/deployment kubernetes/Scaling_CoreDNS.md (CPU and QPS, internal queries, 1 instance, 2 vCPUs)"
SECONDS_PER_RUN="${DNS_BENCH_SECONDS:-10}"

. bench/lib.sh

[ "$(id -u)" = 0 ] || { echo "bench: network namespaces and nftables need root" >&2; exit 1; }
DATA="$WORK/data"
bench_args "$DATA"
DNS_PORT=$(free_port)
# Every address: loopback for the first path, the veth's host address for the pod path.
printf -- '--bind-address=0.0.0.0\n--port=%s\n--upstream=127.0.0.1:%s\n' "$DNS_PORT" "$(free_port)" >"$DATA/args/dns"
RANGE=10.152.252.0/24
SVC_IP=10.152.252.10
TABLE="mk8s-dnsb-$$"
NS="mk8s-dnsb-$$"
VETH="mk8sdb$$"
HOST_IP=198.51.100.1
POD_IP=198.51.100.2
sed -i "s#^--service-cluster-ip-range=.*#--service-cluster-ip-range=$RANGE#" "$DATA/args/kube-apiserver"
{ cat templates/args/kube-proxy
  printf -- '--nftables-table=%s\n--service-cluster-ip-range=%s\n--nodeport-addresses=192.0.2.1/32\n' "$TABLE" "$RANGE"
  printf -- '--healthz-bind-address=127.0.0.1:%s\n--metrics-bind-address=127.0.0.1:%s\n' "$(free_port)" "$(free_port)"
} >"$DATA/args/kube-proxy"
trap 'ip netns delete "$NS" 2>/dev/null || true; ip link delete "${VETH}h" 2>/dev/null || true; nft delete table ip "$TABLE" 2>/dev/null || true; bench_cleanup' EXIT
# The "pod": its own namespace, routed through the host end of a veth pair. Made before the
# daemon starts, which opens a UDP socket on each address it finds.
ip netns add "$NS"
ip link add "${VETH}h" type veth peer name "${VETH}p"
ip link set "${VETH}p" netns "$NS"
ip addr add "$HOST_IP/30" dev "${VETH}h"
ip link set "${VETH}h" up
ip -n "$NS" addr add "$POD_IP/30" dev "${VETH}p"
ip -n "$NS" link set lo up
ip -n "$NS" link set "${VETH}p" up
ip -n "$NS" route add default via "$HOST_IP"
# After the args: the kubeconfigs follow args/kube-apiserver's port.
"$MK8S" bootstrap --data-dir "$DATA" --common-dir "$WORK/common" >/dev/null
"$MK8S" daemon datastore --data-dir "$DATA" --common-dir "$WORK/common" >"$WORK/datastore.log" 2>&1 &
PIDS+=($!)
"$MK8S" daemon apiserver --data-dir "$DATA" --common-dir "$WORK/common" >"$WORK/apiserver.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 150); do
    curl -sf --cacert "$DATA/certs/ca.crt" "https://127.0.0.1:$A_PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done
"$MK8S" daemon dns --data-dir "$DATA" --common-dir "$WORK/common" >"$WORK/dns.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 150); do
    [ "$(dig @127.0.0.1 -p "$DNS_PORT" +short +time=1 +tries=1 kubernetes.default.svc.cluster.local A 2>/dev/null)" = 10.152.252.1 ] && break
    sleep 0.2
done
[ "$(dig @127.0.0.1 -p "$DNS_PORT" +short +time=1 +tries=1 kubernetes.default.svc.cluster.local A)" = 10.152.252.1 ] ||
    { echo "bench: dns not answering" >&2; cat "$WORK/dns.log" >&2; exit 1; }
# The Service pods are pointed at, with the daemon on the veth's host address as its endpoint
# (as `mk8s enable dns` points kube-dns at the node's address).
"$MK8S" daemon proxy --data-dir "$DATA" --common-dir "$WORK/common" >"$WORK/proxy.log" 2>&1 &
PROXY=$!; PIDS+=("$PROXY")
kubectl --kubeconfig "$DATA/credentials/client.config" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec:
  clusterIP: $SVC_IP
  ports: [{name: dns, port: 53, protocol: UDP, targetPort: $DNS_PORT}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-bench
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: bench}
addressType: IPv4
ports: [{name: dns, port: $DNS_PORT, protocol: UDP}]
endpoints: [{addresses: ["$HOST_IP"], conditions: {ready: true}}]
EOF
pod_dig() { ip netns exec "$NS" dig @"$SVC_IP" +short +time=1 +tries=1 kubernetes.default.svc.cluster.local A 2>/dev/null; }
for _ in $(seq 1 150); do [ "$(pod_dig)" = 10.152.252.1 ] && break; sleep 0.2; done
[ "$(pod_dig)" = 10.152.252.1 ] ||
    { echo "bench: $SVC_IP not answering from the namespace" >&2; tail -n 20 "$WORK/proxy.log" "$WORK/dns.log" >&2; exit 1; }

# What a pod's resolver sends for `kubernetes.default` (search list: two NXDOMAINs, then the
# answer), plus SRV, PTR and NODATA.
cat >"$WORK/queries" <<'EOF'
kubernetes.default.default.svc.cluster.local A
kubernetes.default.svc.cluster.local A
kubernetes.default.svc.cluster.local AAAA
_https._tcp.kubernetes.default.svc.cluster.local SRV
1.252.152.10.in-addr.arpa PTR
nope.default.svc.cluster.local A
EOF

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# rounds WHERE -- DNSPERF...: 3 rounds of throughput then of p99 at half that rate; sets QPS,
# AVG and P99 (medians).
rounds() {
    local where="$1"; shift 2
    local qs=() as=() ps=() out qps avg lost half p99
    for _ in 1 2 3; do
        # Throughput: as fast as the server answers.
        out=$("$@" -d "$WORK/queries" -l "$SECONDS_PER_RUN" -c 4 -q 200 -t 2)
        qps=$(awk '/Queries per second:/ { print $4 }' <<<"$out")
        avg=$(awk '/Average Latency \(s\):/ { printf "%.3f", $4 * 1000 }' <<<"$out")
        lost=$(awk '/Queries lost:/ { print $3 }' <<<"$out")
        qs+=("$qps"); as+=("$avg")
        # Latency: every reply's time (dnsperf -v) at half that rate; p99 of them.
        half=$(awk -v q="$qps" 'BEGIN { printf "%d", q / 2 }')
        p99=$("$@" -v -d "$WORK/queries" -l "$SECONDS_PER_RUN" -c 4 -q 200 -t 2 -Q "$half" |
            awk '$1 == ">" { print $NF }' | sort -g | awk '{ v[NR] = $1 } END { printf "%.3f", v[int(NR * 0.99)] * 1000 }')
        ps+=("$p99")
        echo "round ($where): $qps q/s, avg $avg ms, lost $lost; p99 $p99 ms at $half q/s" >&2
    done
    QPS=$(echo "${qs[*]}" | median); AVG=$(echo "${as[*]}" | median); P99=$(echo "${ps[*]}" | median)
}
rounds loopback -- dnsperf -s 127.0.0.1 -p "$DNS_PORT"
qps=$QPS avg=$AVG p99=$P99
rounds pod -- ip netns exec "$NS" dnsperf -s "$SVC_IP" -p 53
pod_qps=$QPS pod_avg=$AVG pod_p99=$P99

printf '%-40s %14s %14s\n' "dns benchmark" "mk8s dns" "CoreDNS"
printf '%-40s %14s %14s\n' "internal queries/s (1 server, 2 cores)" "$qps" "$ANCHOR_QPS"
printf '%-40s %14s %14s\n' "average latency at max rate (ms)" "$avg" "$ANCHOR_AVG_MS"
printf '%-40s %14s %14s\n' "p99 latency at half max rate (ms)" "$p99" "n/a"
printf '%-40s %14s %14s\n' "from a pod netns via the Service: q/s" "$pod_qps" "$ANCHOR_QPS"
printf '%-40s %14s %14s\n' "  average latency at max rate (ms)" "$pod_avg" "$ANCHOR_AVG_MS"
printf '%-40s %14s %14s\n' "  p99 latency at half max rate (ms)" "$pod_p99" "n/a"
echo "anchor: $ANCHOR_SRC"
awk -v o="$qps" -v a="$ANCHOR_QPS" 'BEGIN { printf "ratio queries/s mk8s dns / CoreDNS: %.3f\n", o / a }'
awk -v o="$pod_qps" -v a="$ANCHOR_QPS" 'BEGIN { printf "ratio queries/s from a pod (through the proxy) / CoreDNS: %.3f\n", o / a }'
kill -TERM "$PROXY"; wait "$PROXY" 2>/dev/null || true
