#!/usr/bin/env bash
# The .deb, for real: builds it (packaging/deb.sh, from the release build), installs it with
# dpkg -i, checks what it installed, removes it with dpkg -r and purges it: the machine is left
# as it was. Needs root; refuses to run where an mk8s package or /usr/bin/mk8s already is, or
# where mk8s runs on the default roots (removing the package stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
if [ "$(id -u)" -ne 0 ]; then
    echo "deb-test: dpkg -i needs root (run with sudo)" >&2
    exit 1
fi
if dpkg-query -W -f='${Status}' mk8s 2>/dev/null | grep -q "ok installed"; then
    echo "deb-test: an mk8s package is installed already; not touching it" >&2
    exit 1
fi
if [ -e /usr/bin/mk8s ] || [ -e /lib/systemd/system/mk8s.service ]; then
    echo "deb-test: /usr/bin/mk8s or the mk8s unit exists outside any package; not touching it" >&2
    exit 1
fi

deb="$(packaging/deb.sh | tail -n 1)"
release="$(cargo metadata --format-version 1 --no-deps --locked |
    grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)/release"
if env -u MK8S_SNAP_DATA -u MK8S_SNAP_COMMON "$release/mk8s" status >/dev/null 2>&1; then
    # The package's prerm stops the supervisor of the default roots: not someone's cluster.
    echo "deb-test: mk8s runs on the default roots here; removing the package would stop it" >&2
    exit 1
fi
[ -f "$deb" ] || { echo "deb-test: packaging/deb.sh made no .deb ($deb)" >&2; exit 1; }
tmp="$(mktemp -d)"
cleanup() {
    dpkg -P mk8s >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

passed=0
check() { # check WHAT COMMAND...: runs COMMAND, fails the script with WHAT if it fails.
    local what="$1"
    shift
    if ! "$@"; then
        echo "deb-test: FAILED: $what" >&2
        exit 1
    fi
    passed=$((passed + 1))
}

depends="$(dpkg-deb -f "$deb" Depends)"
for d in containerd runc containernetworking-plugins nftables iptables busybox-static libc6; do
    check "Depends names $d ($depends)" grep -qw -- "$d" <<<"$depends"
done

check "dpkg -i $deb" dpkg -i "$deb"
check "dpkg lists the package installed" \
    sh -c "dpkg-query -W -f='\${Status}' mk8s | grep -q 'install ok installed'"
for f in /usr/bin/mk8s /lib/systemd/system/mk8s.service /usr/share/man/man1/mk8s.1.gz \
    /usr/share/bash-completion/completions/mk8s; do
    check "$f installed" test -s "$f"
done
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
check "mk8s --version says $version" \
    sh -c "[ \"\$(/usr/bin/mk8s --version)\" = 'mk8s $version' ]"
status="$(/usr/bin/mk8s status --data-dir "$tmp/data" --common-dir "$tmp/common")" && rc=0 || rc=$?
check "status of a fresh data dir exits 1 (got $rc)" test "$rc" -eq 1
check "status says not running (got '$status')" test "$status" = "mk8s is not running"
check "the man page is mk8s's" sh -c "zcat /usr/share/man/man1/mk8s.1.gz | grep -q '^\.TH mk8s'"
if command -v systemd-analyze >/dev/null; then
    # No man: Documentation= is checked by the file above instead.
    check "systemd-analyze verify mk8s.service" \
        systemd-analyze verify --man=no /lib/systemd/system/mk8s.service
fi

check "dpkg -r mk8s" dpkg -r mk8s
for f in /usr/bin/mk8s /lib/systemd/system/mk8s.service /usr/share/man/man1/mk8s.1.gz \
    /usr/share/bash-completion/completions/mk8s /usr/share/doc/mk8s; do
    check "$f removed" test ! -e "$f"
done
check "dpkg -P mk8s" dpkg -P mk8s
check "dpkg forgot mk8s" sh -c "! dpkg-query -W mk8s >/dev/null 2>&1"
echo "deb-test: $(basename "$deb") ($(($(stat -c %s "$deb") / 1024)) KiB) in $((SECONDS - started)) s"
echo "deb-test: $passed passed, 0 failed"
