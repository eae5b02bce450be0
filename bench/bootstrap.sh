#!/usr/bin/env bash
# Times a full first `mk8s bootstrap` beside the openssl CLI sequence MicroK8s runs for the
# same job (CA, server key + CSR from csr.conf + signing, front-proxy CA and client, service
# account key), each in a fresh directory, in one run; prints medians and their ratio.
# Goal (issue 3): mk8s <= 0.5x the openssl sequence.
#
#   BENCH_RUNS=N   runs of each (default 10)
#   MK8S=path      binary to time (default target/release/mk8s)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${BENCH_RUNS:-10}"
MK8S="${MK8S:-target/release/mk8s}"
[ -x "$MK8S" ] || cargo build --release --locked
command -v openssl >/dev/null || { echo "bench: openssl is required" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# The anchor signs with the csr.conf mk8s renders for this host (rendering is not timed).
"$MK8S" bootstrap --data-dir "$WORK/seed" >/dev/null
cp "$WORK/seed/certs/csr.conf" "$WORK/csr.conf"

now_ns() { date +%s%N; }

# $1 = key command prefix: "rsa" (MicroK8s: genrsa 2048) or "ec" (P-256, what mk8s issues).
openssl_sequence() {
    local dir="$1" kind="$2"
    mkdir -p "$dir" && cd "$dir"
    key() {
        if [ "$kind" = rsa ]; then openssl genrsa -out "$1" 2048 2>/dev/null
        else openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; fi
    }
    cp "$WORK/csr.conf" csr.conf
    key ca.key
    openssl req -x509 -new -sha256 -nodes -days 3650 -key ca.key -subj "/CN=10.152.183.1" -out ca.crt
    key server.key
    openssl req -new -sha256 -key server.key -out server.csr -config csr.conf
    openssl x509 -req -sha256 -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
        -out server.crt -days 365 -extensions v3_ext -extfile csr.conf 2>/dev/null
    key front-proxy-ca.key
    openssl req -x509 -new -sha256 -nodes -days 3650 -key front-proxy-ca.key \
        -subj "/CN=front-proxy-ca" -out front-proxy-ca.crt
    key front-proxy-client.key
    openssl req -new -sha256 -key front-proxy-client.key -out front-proxy-client.csr \
        -subj "/CN=front-proxy-client"
    openssl x509 -req -sha256 -days 365 -in front-proxy-client.csr -CA front-proxy-ca.crt \
        -CAkey front-proxy-ca.key -CAcreateserial -out front-proxy-client.crt 2>/dev/null
    key serviceaccount.key
    cd - >/dev/null
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

: >"$WORK/mk8s.t"; : >"$WORK/rsa.t"; : >"$WORK/ec.t"
for i in $(seq 1 "$RUNS"); do
    # Interleaved so that machine noise hits all three alike.
    t0=$(now_ns); "$MK8S" bootstrap --data-dir "$WORK/m$i" >/dev/null; t1=$(now_ns)
    echo $(( (t1 - t0) / 1000 )) >>"$WORK/mk8s.t"
    t0=$(now_ns); openssl_sequence "$WORK/r$i" rsa; t1=$(now_ns)
    echo $(( (t1 - t0) / 1000 )) >>"$WORK/rsa.t"
    t0=$(now_ns); openssl_sequence "$WORK/e$i" ec; t1=$(now_ns)
    echo $(( (t1 - t0) / 1000 )) >>"$WORK/ec.t"
done

m=$(median <"$WORK/mk8s.t"); r=$(median <"$WORK/rsa.t"); e=$(median <"$WORK/ec.t")
files=$(find "$WORK/m1" -type f -not -name '.*' | wc -l)
awk -v m="$m" -v r="$r" -v e="$e" -v n="$RUNS" -v f="$files" 'BEGIN {
    printf "bootstrap benchmark: median of %d runs, fresh directory each, wall time\n", n
    printf "  mk8s bootstrap (%d files: 13 certs + keys, SA key, tokens, 5 kubeconfigs; fsynced)  %8.1f ms\n", f, m/1000
    printf "  anchor: openssl sequence as MicroK8s runs it (RSA-2048)                          %8.1f ms\n", r/1000
    printf "  ratio mk8s / anchor                                                            %8.3f  (goal <= 0.5)\n", m/r
    printf "  same openssl sequence with P-256 keys (mk8s key type)                          %8.1f ms\n", e/1000
    printf "  ratio mk8s / P-256 openssl sequence                                            %8.3f\n", m/e
}'
