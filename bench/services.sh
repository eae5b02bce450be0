#!/usr/bin/env bash
# The service proxy's rule sync for 1,000 Services x 10 endpoints (issue 10), beside its anchor.
#
# Runs the datastore, the API server and `mk8s daemon proxy` (own table, a service range no
# one else uses, NodePorts on a TEST-NET address only; no packet is sent anywhere), creates
# 1,000 ClusterIP Services and 1,000 EndpointSlices of 10 endpoints each, and reads the proxy's
# own figure: `mk8s_proxy_last_sync_duration_seconds` (read the stores, build the ruleset, one
# `nft -j -f -` transaction), the median of BENCH_SYNCS full syncs.
#
# Anchor: upstream publishes no sync time for kube-proxy's nftables mode (KEP-3866, Scalability:
# "We do not currently have any apples-to-apples comparisons"; kubernetes.io blog "NFTables mode
# for kube-proxy", 2025-02-28, on control plane latency: "Unfortunately I don't have cool graphs
# for this part."). So the anchor is measured in the same run: `nft -f` loading the very same
# ruleset (the proxy's table as `nft list` prints it, renamed) with the same delete-and-recreate
# transaction: the floor any nft-driving proxy pays. Printed as a ratio (proxy / nft floor).
#
#   BENCH_SYNCS=N   full syncs sampled (default 5)
#   MK8S=path       binary (default target/release/mk8s, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
SYNCS="${BENCH_SYNCS:-5}"
MK8S="${MK8S:-target/release/mk8s}"
[ -x "$MK8S" ] || cargo build --release --locked -q
[ "$(id -u)" = 0 ] || { echo "bench: nftables needs root" >&2; exit 1; }
command -v nft >/dev/null || { echo "bench: nft is required (packaging/deps.sh)" >&2; exit 1; }

. bench/lib.sh

TABLE="mk8s-bench-$$"
ANCHOR="mk8s-anchor-$$"
# 10.96.0.0/20 holds the 1,000 cluster IPs; no traffic is ever sent to them.
RANGE=10.96.0.0/20
bench_args "$WORK/data"
sed -i "s#^--service-cluster-ip-range=.*#--service-cluster-ip-range=$RANGE#" "$WORK/data/args/kube-apiserver"
H_PORT=$(free_port); M_PORT=$(free_port)
{ cat templates/args/kube-proxy
  printf -- '--nftables-table=%s\n--service-cluster-ip-range=%s\n--nodeport-addresses=192.0.2.1/32\n' "$TABLE" "$RANGE"
  printf -- '--healthz-bind-address=127.0.0.1:%s\n--metrics-bind-address=127.0.0.1:%s\n--nftables-sync-period=3s\n' "$H_PORT" "$M_PORT"
} >"$WORK/data/args/kube-proxy"
"$MK8S" bootstrap --data-dir "$WORK/data" >/dev/null
trap 'nft delete table ip "$TABLE" 2>/dev/null || true; nft delete table ip "$ANCHOR" 2>/dev/null || true; bench_cleanup' EXIT

"$MK8S" daemon datastore --data-dir "$WORK/data" >"$WORK/datastore.log" 2>&1 &
PIDS+=($!)
"$MK8S" daemon apiserver --data-dir "$WORK/data" >"$WORK/apiserver.log" 2>&1 &
PIDS+=($!)
KC=(kubectl --kubeconfig "$WORK/data/credentials/client.config")
for _ in $(seq 1 200); do "${KC[@]}" get --raw /readyz >/dev/null 2>&1 && break; sleep 0.1; done
"${KC[@]}" get --raw /readyz >/dev/null || { echo "bench: apiserver not ready" >&2; cat "$WORK/apiserver.log" >&2; exit 1; }
"$MK8S" daemon proxy --data-dir "$WORK/data" >"$WORK/proxy.log" 2>&1 &
PROXY=$!; PIDS+=("$PROXY")

metric() { curl -sf "http://127.0.0.1:$M_PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

# 1,000 Services, each with one EndpointSlice of 10 ready endpoints (never contacted).
python3 - "$WORK/objects.yaml" <<'EOF'
import sys
docs = []
for i in range(1000):
    docs.append(f"""apiVersion: v1
kind: Service
metadata: {{name: s{i}, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8080}}]
""")
    eps = "\n".join(
        f"- {{addresses: [\"10.{200 + i // 250}.{i % 250}.{j + 1}\"], conditions: {{ready: true}}}}"
        for j in range(10))
    docs.append(f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: s{i}-1
  namespace: default
  labels: {{kubernetes.io/service-name: s{i}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
{eps}
""")
open(sys.argv[1], "w").write("---\n".join(docs))
EOF
START=$(date +%s.%N)
"${KC[@]}" create -f "$WORK/objects.yaml" >/dev/null
CREATED=$(date +%s.%N)
for _ in $(seq 1 600); do
    P="$(metric mk8s_proxy_service_ports || true)"; E="$(metric mk8s_proxy_endpoints || true)"
    [ "${P:-0}" -ge 1000 ] && [ "${E:-0}" -ge 10000 ] && break
    sleep 0.2
done
[ "${P:-0}" -ge 1000 ] && [ "${E:-0}" -ge 10000 ] || { echo "bench: proxy never programmed 1000x10 (ports=$P endpoints=$E)" >&2; tail -20 "$WORK/proxy.log" >&2; exit 1; }
PROGRAMMED=$(date +%s.%N)

# Full syncs of the whole ruleset (every sync period).
SAMPLES=()
LAST="$(metric kubeproxy_sync_proxy_rules_duration_seconds_count)"
while [ "${#SAMPLES[@]}" -lt "$SYNCS" ]; do
    sleep 0.2
    N="$(metric kubeproxy_sync_proxy_rules_duration_seconds_count)"
    if [ "$N" != "$LAST" ]; then
        LAST="$N"
        SAMPLES+=("$(metric mk8s_proxy_last_sync_duration_seconds)")
    fi
done
RULES="$(nft list table ip "$TABLE" | wc -l)"

# Anchor: the same ruleset through nft alone, same transaction shape.
nft list table ip "$TABLE" | sed "1s/^table ip $TABLE /table ip $ANCHOR /" >"$WORK/anchor.nft"
{ echo "add table ip $ANCHOR"; echo "delete table ip $ANCHOR"; cat "$WORK/anchor.nft"; } >"$WORK/anchor-txn.nft"
# The copy must not see traffic either: it is loaded and dropped at once each round.
ANCHORS=()
for _ in $(seq 1 "$SYNCS"); do
    t0=$(date +%s%N)
    nft -f "$WORK/anchor-txn.nft"
    t1=$(date +%s%N)
    nft delete table ip "$ANCHOR"
    ANCHORS+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.6f", (b - a) / 1e9}')")
done

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR + 1) / 2)]}'; }
P_MED="$(median "${SAMPLES[@]}")"
A_MED="$(median "${ANCHORS[@]}")"
printf '%-44s %14s\n' "services benchmark (1000 svc x 10 endpoints)" "value"
printf '%-44s %11.1f ms\n' "proxy_full_sync_median" "$(awk -v v="$P_MED" 'BEGIN {print v * 1000}')"
printf '%-44s %11.1f ms\n' "anchor_nft_f_same_ruleset_median" "$(awk -v v="$A_MED" 'BEGIN {print v * 1000}')"
printf '%-44s %12.2fx\n' "ratio_proxy_over_nft" "$(awk -v a="$P_MED" -v b="$A_MED" 'BEGIN {print a / b}')"
printf '%-44s %11.1f s\n' "create_2000_objects (kubectl)" "$(awk -v a="$START" -v b="$CREATED" 'BEGIN {print b - a}')"
printf '%-44s %11.1f s\n' "created_to_programmed" "$(awk -v a="$CREATED" -v b="$PROGRAMMED" 'BEGIN {print b - a}')"
printf '%-44s %14s\n' "table_lines (nft list)" "$RULES"
printf '%-44s %14s\n' "binary" "$MK8S"
echo "upstream: no published nftables-mode sync time (KEP-3866 Scalability section;"
echo "  kubernetes.io/blog/2025/02/28/nftables-kube-proxy: \"I don't have cool graphs for this part\");"
echo "  the anchor above is nft itself loading the same ruleset, measured in this run."
kill -TERM "$PROXY"; wait "$PROXY" 2>/dev/null || true
nft list table ip "$TABLE" >/dev/null 2>&1 && echo "bench: table $TABLE left behind" >&2 || true
