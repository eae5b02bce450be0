#!/usr/bin/env bash
# Packages the release binary (`cargo build --release` first) as a .deb: the man page and
# bash completion come from the binary itself, then `cargo deb --no-build` reads
# [package.metadata.deb] in Cargo.toml. Prints the .deb's path last.
set -euo pipefail
cd "$(dirname "$0")/.."
. packaging/deps.sh
mk8s_install_cargo_deb
release="$(cargo metadata --format-version 1 --no-deps --locked |
    grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)/release"
if [ ! -x "$release/mk8s" ]; then
    echo "deb: $release/mk8s is missing; run cargo build --release --locked first" >&2
    exit 1
fi
"$release/mk8s" manpage | gzip -9n >"$release/mk8s.1.gz"
"$release/mk8s" completion bash >"$release/mk8s.bash-completion"
cargo deb --no-build --quiet
