#!/usr/bin/env bash
# Installs the system packages mk8s needs. Sourced by install.sh and test.sh.
#   mk8s_install_packages build   -> what building and running mk8s needs
#   mk8s_install_packages test    -> plus what the test suite drives
#   mk8s_install_cargo_deb        -> cargo-deb, which packages the release binary as a .deb
set -euo pipefail

mk8s_apt() {
    export DEBIAN_FRONTEND=noninteractive
    if [ "$(id -u)" -ne 0 ]; then
        echo "mk8s: installing system packages needs root (run with sudo)" >&2
        return 1
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

mk8s_install_packages() {
    local what="${1:-build}"
    # openssl: the CLI is the tests' judge and the benchmark's anchor; ca-certificates for cargo.
    # containerd, runc and the CNI plugins run the pods; busybox-static becomes the sandbox image;
    # iptables for the CNI portmap plugin (hostPort); nftables (`nft`) for the service proxy.
    local pkgs=(openssl ca-certificates gcc libc6-dev pkg-config hostname util-linux mount coreutils iproute2
        protobuf-compiler libprotobuf-dev containerd runc containernetworking-plugins busybox-static
        iptables nftables)
    if [ "$what" = test ]; then
        # dig (bind9-dnsutils) judges the cluster DNS; dnsperf loads it (bench/dns.sh);
        # dpkg-dev has dpkg-shlibdeps, which finds the .deb's library dependencies.
        pkgs+=(procps etcd-server etcd-client curl bind9-dnsutils dnsperf dpkg-dev)
    fi
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "mk8s: installing ${missing[*]}"
        mk8s_apt "${missing[@]}"
    fi
    if [ "$what" = test ] && ! command -v kubectl >/dev/null; then
        # The machine image ships kubectl 1.32; Debian's own is far older but parses kubeconfigs.
        echo "mk8s: kubectl not found; installing Debian's kubernetes-client" >&2
        mk8s_apt kubernetes-client
    fi
    if [ "$what" = test ] && ! python3 -c 'import kubernetes' 2>/dev/null; then
        # The Python client is one of the API server's judges (tests/python/client_test.py).
        command -v python3 >/dev/null || mk8s_apt python3
        python3 -m pip --version >/dev/null 2>&1 || mk8s_apt python3-pip
        echo "mk8s: installing the Python kubernetes client 32.0.1 from PyPI"
        python3 -m pip install -q 'kubernetes==32.0.1' 2>/dev/null ||
            python3 -m pip install -q --break-system-packages 'kubernetes==32.0.1'
    fi
    if ! command -v cargo >/dev/null; then
        echo "mk8s: cargo (Rust 1.89 or newer) is required to build mk8s; install it with rustup" >&2
        return 1
    fi
}

# cargo-deb from crates.io, pinned: `cargo deb --no-build` packages the release binary
# (packaging/deb-test.sh); [package.metadata.deb] in Cargo.toml says what goes in.
MK8S_CARGO_DEB_VERSION=3.8.0

mk8s_install_cargo_deb() {
    if cargo deb --version 2>/dev/null | grep -qx "cargo-deb $MK8S_CARGO_DEB_VERSION\( .*\)\?"; then
        return 0
    fi
    echo "mk8s: installing cargo-deb $MK8S_CARGO_DEB_VERSION from crates.io"
    # Its own target dir, removed after, so the project's target dir gets none of its build.
    local tmp
    tmp="$(mktemp -d)"
    CARGO_TARGET_DIR="$tmp" cargo install --quiet --locked --force \
        cargo-deb --version "$MK8S_CARGO_DEB_VERSION" || { rm -rf "$tmp"; return 1; }
    rm -rf "$tmp"
}
