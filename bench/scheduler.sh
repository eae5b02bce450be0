#!/usr/bin/env bash
# Scheduler throughput (issue 7): 1,000 pending pods (no nodeName, an image that never runs)
# on a datastore + API server + controller manager, with a Node object and no kubelet; then
# the scheduler starts and binds them all. Figures: pods bound per second from the first
# binding to the last, total time including the scheduler's start and first list, scheduler
# RSS with 1,000 pods in its snapshot. Anchor: upstream kube-scheduler's throughput threshold
# in scheduler_perf (SchedulingBasic/5000Nodes_10000Pods: 270 pods/s average, from
# test/integration/scheduler_perf/config/performance-config.yaml); kube-scheduler itself is
# not installed here to run beside ours. Goal: >= 300 pods/s.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-1000}"
ANCHOR=270
cargo build --release --locked -q
cargo bench --locked -q --bench scheduler_load --no-run 2>/dev/null
LOAD="$(ls -t target/release/deps/scheduler_load-* | grep -v '\.d$' | head -1)"
MK8S=target/release/mk8s

. bench/lib.sh

bench_args "$WORK/data"
"$MK8S" bootstrap --data-dir "$WORK/data" >/dev/null
CERTS="$WORK/data/certs"
KC="$WORK/data/credentials/client.config"
"$MK8S" daemon datastore --data-dir "$WORK/data" >"$WORK/datastore.log" 2>&1 &
PIDS+=($!)
"$MK8S" daemon apiserver --data-dir "$WORK/data" >"$WORK/apiserver.log" 2>&1 &
PIDS+=($!)
URL="https://127.0.0.1:$A_PORT"
for _ in $(seq 1 100); do
    curl -sf --cacert "$CERTS/ca.crt" "$URL/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf --cacert "$CERTS/ca.crt" "$URL/readyz" >/dev/null || { echo "bench: apiserver not ready" >&2; cat "$WORK/apiserver.log" >&2; exit 1; }
"$MK8S" daemon controller-manager --data-dir "$WORK/data" >"$WORK/kcm.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
    kubectl --kubeconfig "$KC" get serviceaccount default >/dev/null 2>&1 && break
    sleep 0.2
done

declare -A R
collect() { while read -r name value unit; do R["$name"]="$value $unit"; R["$name.v"]="$value"; done; }
"$LOAD" fill "$KC" "$N" >"$WORK/fill"
collect <"$WORK/fill"
"$LOAD" bind "$KC" "$N" >"$WORK/bind" &
BIND_PID=$!; PIDS+=("$BIND_PID")
sleep 0.5
"$MK8S" daemon scheduler --data-dir "$WORK/data" >"$WORK/scheduler.log" 2>&1 &
SCHED_PID=$!; PIDS+=("$SCHED_PID")
wait "$BIND_PID" || { echo "bench: binding did not finish" >&2; tail -20 "$WORK/scheduler.log" >&2; exit 1; }
collect <"$WORK/bind"
RSS="$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$SCHED_PID/status")"
BOUND="$(kubectl --kubeconfig "$KC" get pods -o 'jsonpath={range .items[*]}{.spec.nodeName}{"\n"}{end}' | grep -c bench-node || true)"

printf 'scheduler benchmark: %s pending pods, one node, no kubelet\n' "$N"
printf '  %-34s %14s\n' "pods created (16 clients)" "${R[create_$N]:-n/a}"
printf '  %-34s %14s\n' "pods bound (first to last)" "${R[bind_rate]:-n/a}"
printf '  %-34s %14s\n' "  anchor: upstream threshold" "$ANCHOR pods/s"
printf '  %-34s %14s\n' "  ratio mk8s / anchor" "$(awk -v a="${R[bind_rate.v]:-0}" -v b="$ANCHOR" 'BEGIN {printf "%.2f", a / b}')"
printf '  %-34s %14s\n' "scheduler start to all bound" "${R[bind_total]:-n/a}"
printf '  %-34s %14s\n' "pods on bench-node (checked)" "$BOUND"
printf '  %-34s %14s\n' "scheduler RSS with $N pods" "$RSS MiB"
printf '  goal: >= 300 pods/s bound\n'
[ "$BOUND" = "$N" ] || { echo "bench: only $BOUND of $N pods bound" >&2; exit 1; }

# Part 2: a 100-replica Deployment to 100 available on a whole cluster (mk8s start, kubelet,
# busybox imported), beside the same 100 pods created directly with nodeName set (no
# scheduler, no controllers) in the same run: the ratio is what the controllers and the
# scheduler add on top of the kubelet.
for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()
C="$WORK/cluster"
O=(--data-dir "$C/data" --common-dir "$C/common")
cleanup2() { "$MK8S" stop "${O[@]}" >/dev/null 2>&1 || true; bench_cleanup; }
trap cleanup2 EXIT
bench_args "$C/data"
"$MK8S" start "${O[@]}" >/dev/null
bash tools/busybox-image.sh "$C/busybox.tar" >/dev/null
"$MK8S" images import "${O[@]}" "$C/busybox.tar" >/dev/null
K=(kubectl --kubeconfig "$C/data/credentials/client.config")
NODE="$(hostname | tr '[:upper:]' '[:lower:]')"
for _ in $(seq 1 120); do
    [ "$("${K[@]}" get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ] && break
    sleep 0.5
done
for _ in $(seq 1 100); do "${K[@]}" get serviceaccount default >/dev/null 2>&1 && break; sleep 0.2; done
now() { date +%s.%N; }
# bare PREFIX COUNT: COUNT pods bound to the node by nodeName, labelled bench=PREFIX.
bare() {
    for i in $(seq 1 "$2"); do
        printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: %s-%s, labels: {bench: %s}}\nspec:\n  nodeName: %s\n  terminationGracePeriodSeconds: 0\n  containers: [{name: c, image: docker.io/library/busybox:1.35, command: [sleep, "3600"]}]\n---\n' "$1" "$i" "$1" "$NODE"
    done
}
# Warm-up (first sandbox, CNI, image snapshot), so neither measured run pays it.
bare warm 10 >"$C/warm.yaml"
"${K[@]}" create -f "$C/warm.yaml" >/dev/null
"${K[@]}" wait --for=condition=Ready pod -l bench=warm --timeout=300s >/dev/null
"${K[@]}" delete pod -l bench=warm --wait=true --timeout=300s >/dev/null
bare bare 100 >"$C/bare.yaml"
T0="$(now)"
"${K[@]}" create -f "$C/bare.yaml" >/dev/null
# Polled rather than `kubectl wait`, which waits for the pods one after another.
for _ in $(seq 1 1200); do
    [ "$("${K[@]}" get pods -l bench=bare -o 'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True)" = 100 ] && break
    sleep 0.5
done
BARE="$(awk -v a="$T0" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}')"
"${K[@]}" delete pod -l bench=bare --wait=true --timeout=600s >/dev/null
T0="$(now)"
"${K[@]}" create deployment d100 --image=docker.io/library/busybox:1.35 --replicas=100 -- sleep 3600 >/dev/null
"${K[@]}" rollout status deployment/d100 --timeout=600s >/dev/null
DEPLOY="$(awk -v a="$T0" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}')"
AVAILABLE="$("${K[@]}" get deployment d100 -o 'jsonpath={.status.availableReplicas}')"
printf '100-replica Deployment on the whole cluster\n'
printf '  %-34s %12s s\n' "100 bare pods (nodeName) to Ready" "$BARE"
printf '  %-34s %12s s\n' "Deployment to 100 available" "$DEPLOY"
printf '  %-34s %14s\n' "  ratio deployment / bare pods" "$(awk -v a="$DEPLOY" -v b="$BARE" 'BEGIN {printf "%.2f", a / b}')"
printf '  %-34s %14s\n' "available (checked)" "$AVAILABLE"
"${K[@]}" delete deployment d100 --wait=true >/dev/null
[ "$AVAILABLE" = 100 ] || { echo "bench: only $AVAILABLE of 100 available" >&2; exit 1; }
