#!/usr/bin/env bash
# Pod start latency and kubelet footprint (issue 6), beside the floor containerd itself sets:
# the same containerd (mk8s's own, same config) driven straight through CRI with
# RunPodSandbox + CreateContainer + StartContainer, one pod at a time and 30 at once; then the
# same pods as Kubernetes Pods through mk8s (create → status Running: API server, kubelet,
# CRI, status write), and the kubelet's RSS idle and with 30 pods. Anchors: upstream's pod
# startup SLO (p99 <= 5 s) and the CRI floor measured here. Goals: p50 <= 0.3 s, p99 <= 1 s,
# kubelet RSS <= 30 MB with 30 pods.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
cargo build --release --locked -q --bench pods_load
MK8S="$PWD/target/release/mk8s"
LOAD="$(ls -t target/release/deps/pods_load-* | grep -v '\.d$' | head -1)"
. bench/lib.sh
O=(--data-dir "$WORK/data" --common-dir "$WORK/common")
cleanup() { "$MK8S" stop "${O[@]}" >/dev/null 2>&1 || true; bench_cleanup; }
trap cleanup EXIT

bench_args "$WORK/data"
"$MK8S" start "${O[@]}" >/dev/null
bash tools/busybox-image.sh "$WORK/busybox.tar" >/dev/null
"$MK8S" images import "${O[@]}" "$WORK/busybox.tar" >/dev/null
IMAGE=docker.io/library/busybox:1.35
NODE="$(hostname | tr '[:upper:]' '[:lower:]')"
KUBECTL=(kubectl --kubeconfig "$WORK/data/credentials/client.config")
for _ in $(seq 1 120); do
    [ "$("${KUBECTL[@]}" get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ] && break
    sleep 0.5
done

"$LOAD" cri "$WORK/common/run/containerd.sock" "$IMAGE" >"$WORK/cri"
sleep 10 # idle kubelet
KUBELET_PID="$(cat "$WORK/common/run/kubelet.pid")" "$LOAD" api "$WORK/data/credentials/client.config" "$NODE" "$IMAGE" >"$WORK/api"

fig() { awk -v k="$2" '$1 == k {print $2}' "$WORK/$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}'; }
printf 'pods benchmark (image present; CRI floor = the same containerd driven directly)\n'
printf '  %-28s %10s %10s %8s\n' figure "CRI floor" mk8s ratio
for k in single_p50 single_p99 30_p50 30_p99; do
    a="$(fig cri "cri_$k")"; m="$(fig api "api_$k")"
    printf '  %-28s %7s ms %7s ms %8s\n' "create -> Running $k" "$a" "$m" "$(ratio "$m" "$a")"
done
printf '  %-28s %10s %10s %8s\n' "kubelet footprint" idle "30 pods" ""
for k in rss anon pss; do
    printf '  %-28s %6s MiB %6s MiB\n' "$k" "$(fig api "kubelet_${k}_idle")" "$(fig api "kubelet_${k}_30")"
done
printf '  (goal: RSS <= 30 MB with 30 pods; RSS counts the pages of the mk8s binary that all daemons\n'
printf '   share, anon is the kubelet'"'"'s own memory, PSS splits the shared pages among the daemons)\n'
printf '  goals: p50 <= 300 ms, p99 <= 1000 ms; upstream SLO p99 <= 5000 ms\n'
