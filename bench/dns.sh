#!/usr/bin/env bash
# Cluster DNS figures (issue 10): queries/s and latency of `mk8s daemon dns` answering for the
# cluster zone, loaded by Debian's dnsperf on loopback, beside CoreDNS's published figure.
# CoreDNS is not installable here, so its anchor is the number CoreDNS publishes for the same
# kind of load: coredns/deployment, kubernetes/Scaling_CoreDNS.md, "CPU and QPS": a single
# CoreDNS (default settings) on a GCE n1-standard-2 (2 vCPUs, both pegged) serves 33,669
# internal queries/s at 2.608 ms average latency (dnsperf via kubernetes/perf-tests/dns).
# Ours runs on this machine's 2 cores, which dnsperf shares; figures are medians of 3 rounds.
# Upstream forwarding is never exercised: --upstream is a loopback port nothing listens on.
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

DATA="$WORK/data"
bench_args "$DATA"
DNS_PORT=$(free_port)
printf -- '--bind-address=127.0.0.1\n--port=%s\n--upstream=127.0.0.1:%s\n' "$DNS_PORT" "$(free_port)" >"$DATA/args/dns"
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
    [ "$(dig @127.0.0.1 -p "$DNS_PORT" +short +time=1 +tries=1 kubernetes.default.svc.cluster.local A 2>/dev/null)" = 10.152.183.1 ] && break
    sleep 0.2
done
[ "$(dig @127.0.0.1 -p "$DNS_PORT" +short +time=1 +tries=1 kubernetes.default.svc.cluster.local A)" = 10.152.183.1 ] ||
    { echo "bench: dns not answering" >&2; cat "$WORK/dns.log" >&2; exit 1; }

# What a pod's resolver sends for `kubernetes.default` (search list: two NXDOMAINs, then the
# answer), plus SRV, PTR and NODATA.
cat >"$WORK/queries" <<'EOF'
kubernetes.default.default.svc.cluster.local A
kubernetes.default.svc.cluster.local A
kubernetes.default.svc.cluster.local AAAA
_https._tcp.kubernetes.default.svc.cluster.local SRV
1.183.152.10.in-addr.arpa PTR
nope.default.svc.cluster.local A
EOF

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
QPS=() AVG=() P99=()
for _ in 1 2 3; do
    # Throughput: as fast as the server answers.
    out=$(dnsperf -s 127.0.0.1 -p "$DNS_PORT" -d "$WORK/queries" -l "$SECONDS_PER_RUN" -c 4 -q 200 -t 2)
    qps=$(awk '/Queries per second:/ { print $4 }' <<<"$out")
    avg=$(awk '/Average Latency \(s\):/ { printf "%.3f", $4 * 1000 }' <<<"$out")
    lost=$(awk '/Queries lost:/ { print $3 }' <<<"$out")
    QPS+=("$qps"); AVG+=("$avg")
    # Latency: every reply's time (dnsperf -v) at half that rate; p99 of them.
    half=$(awk -v q="$qps" 'BEGIN { printf "%d", q / 2 }')
    p99=$(dnsperf -v -s 127.0.0.1 -p "$DNS_PORT" -d "$WORK/queries" -l "$SECONDS_PER_RUN" -c 4 -q 200 -t 2 -Q "$half" |
        awk '$1 == ">" { print $NF }' | sort -g | awk '{ v[NR] = $1 } END { printf "%.3f", v[int(NR * 0.99)] * 1000 }')
    P99+=("$p99")
    echo "round: $qps q/s, avg $avg ms, lost $lost; p99 $p99 ms at $half q/s" >&2
done
qps=$(echo "${QPS[*]}" | median); avg=$(echo "${AVG[*]}" | median); p99=$(echo "${P99[*]}" | median)

printf '%-40s %14s %14s\n' "dns benchmark" "mk8s dns" "CoreDNS"
printf '%-40s %14s %14s\n' "internal queries/s (1 server, 2 cores)" "$qps" "$ANCHOR_QPS"
printf '%-40s %14s %14s\n' "average latency at max rate (ms)" "$avg" "$ANCHOR_AVG_MS"
printf '%-40s %14s %14s\n' "p99 latency at half max rate (ms)" "$p99" "n/a"
echo "anchor: $ANCHOR_SRC"
awk -v o="$qps" -v a="$ANCHOR_QPS" 'BEGIN { printf "ratio queries/s mk8s dns / CoreDNS: %.3f\n", o / a }'
