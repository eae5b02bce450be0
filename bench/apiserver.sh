#!/usr/bin/env bash
# The mk8s API server on the mk8s datastore, measured in one run beside its anchor: raw etcd
# puts into the same datastore. Figures (issue 5): creates/s of 1 KiB ConfigMaps with 32
# clients vs raw puts/s (ratio), create p50/p99, list of 10,000 ConfigMaps, watch delivery
# p99 to 100 watchers, API server RSS idle and with 10,000 objects.
# Goals: api/raw >= 0.5; create p99 <= 20 ms; RSS idle <= 50 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
cargo bench --locked -q --bench apiserver_load --no-run 2>/dev/null
LOAD="$(ls -t target/release/deps/apiserver_load-* | grep -v '\.d$' | head -1)"
MK8S=target/release/mk8s

. bench/lib.sh

"$MK8S" bootstrap --data-dir "$WORK/data" >/dev/null
CERTS="$WORK/data/certs"
bench_args "$WORK/data"
"$MK8S" daemon datastore --data-dir "$WORK/data" >"$WORK/datastore.log" 2>&1 &
PIDS+=($!)
"$MK8S" daemon apiserver --data-dir "$WORK/data" >"$WORK/apiserver.log" 2>&1 &
API_PID=$!; PIDS+=("$API_PID")
URL="https://127.0.0.1:$A_PORT"
for _ in $(seq 1 100); do
    curl -sf --cacert "$CERTS/ca.crt" "$URL/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf --cacert "$CERTS/ca.crt" "$URL/readyz" >/dev/null || { echo "bench: apiserver not ready" >&2; cat "$WORK/apiserver.log" >&2; exit 1; }
sleep 1
rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
RSS_IDLE="$(rss "$API_PID")"

declare -A R
collect() { while read -r name value unit; do R["$name"]="$value $unit"; R["$name.v"]="$value"; done; }
collect < <("$LOAD" raw32 "https://127.0.0.1:$D_PORT" "$CERTS")
collect < <("$LOAD" create32 "$URL" "$CERTS")
collect < <("$LOAD" fill "$URL" "$CERTS" 10000)
RSS_FILLED="$(rss "$API_PID")"
collect < <("$LOAD" list "$URL" "$CERTS")
RSS_LISTED="$(rss "$API_PID")"
collect < <("$LOAD" watch100 "$URL" "$CERTS")
RSS_FULL="$(rss "$API_PID")"

printf '%-34s %16s\n' "apiserver benchmark" "value"
for k in raw_puts_32 api_creates_32 create_p50 create_p99 fill_10000 list_10000_p50 watch_100_events watch_100_p99; do
    printf '%-34s %16s\n' "$k" "${R[$k]:-n/a}"
done
printf '%-34s %16s\n' "apiserver_rss_idle" "$RSS_IDLE MiB"
printf '%-34s %16s\n' "apiserver_rss_after_10k_creates" "$RSS_FILLED MiB"
printf '%-34s %16s\n' "apiserver_rss_after_10k_lists" "$RSS_LISTED MiB"
printf '%-34s %16s\n' "apiserver_rss_with_10k_objects" "$RSS_FULL MiB"
awk -v a="${R[api_creates_32.v]}" -v r="${R[raw_puts_32.v]}" \
    'BEGIN { printf "ratio api creates / raw datastore puts: %.2f (goal >= 0.50)\n", a / r }'
echo "goals: create_p99 <= 20 ms; apiserver_rss_idle <= 50 MiB"
