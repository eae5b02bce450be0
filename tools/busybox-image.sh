#!/usr/bin/env bash
# Builds a busybox container image archive from Debian's busybox-static, with no registry.
#
#   tools/busybox-image.sh OUT.tar [IMAGE_NAME]     (default docker.io/library/busybox:1.35)
#
# OUT.tar is an OCI image layout (oci-layout, index.json, blobs/sha256/...) that also carries a
# docker-style manifest.json, so `ctr images import`, `mk8s images import` and `docker load`
# all accept it. The build is deterministic (fixed mtimes, sorted entries, numeric owner 0):
# two runs on the same machine give the same digest. Installs nothing.
#
# The default tag is not :latest on purpose: a :latest image gets imagePullPolicy Always,
# and there is no registry to pull from.
set -euo pipefail

BUSYBOX=/bin/busybox
# Same PATH as the upstream busybox image.
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() {
    printf 'busybox-image: %s\n' "$*" >&2
    exit 1
}

usage() {
    printf 'usage: %s OUT.tar [IMAGE_NAME]\n' "${0##*/}" >&2
    exit 2
}

[[ $# -ge 1 && $# -le 2 ]] || usage
out=$1
name=${2:-docker.io/library/busybox:1.35}

[[ -x $BUSYBOX ]] || die "$BUSYBOX is missing: install busybox-static (apt-get install busybox-static)"
command -v dpkg >/dev/null || die "dpkg is missing: cannot tell this machine's architecture"

# Full reference, as containerd's CRI looks images up: busybox:1.35 -> docker.io/library/busybox:1.35.
[[ $name =~ ^[A-Za-z0-9._/:-]+$ ]] || die "invalid image name: $name"
case $name in
    */*)
        first=${name%%/*}
        if [[ $first != *.* && $first != *:* && $first != localhost ]]; then
            name=docker.io/$name
        fi
        ;;
    *) name=docker.io/library/$name ;;
esac
last=${name##*/}
[[ $last == *:* ]] || name=$name:latest
tag=${name##*:}
repo=${name%:*}
[[ $repo == "${repo,,}" ]] || die "invalid image name (repository must be lowercase): $name"
[[ -n $tag ]] || die "invalid image name (empty tag): $name"

# Debian architecture -> OCI (GOARCH) name, plus variant where OCI needs one.
variant=
case $(dpkg --print-architecture) in
    amd64) arch=amd64 ;;
    arm64) arch=arm64 ;;
    armhf) arch=arm variant=v7 ;;
    armel) arch=arm variant=v5 ;;
    i386) arch=386 ;;
    ppc64el) arch=ppc64le ;;
    s390x) arch=s390x ;;
    riscv64) arch=riscv64 ;;
    mips64el) arch=mips64le ;;
    loong64) arch=loong64 ;;
    *) die "unsupported architecture: $(dpkg --print-architecture)" ;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/busybox-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
image=$work/image

# ---- root filesystem ----------------------------------------------------------------------
mkdir -p "$root"/{bin,etc,tmp,root,var,proc,sys,dev,usr/bin}
cp "$BUSYBOX" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
while IFS= read -r applet; do
    [[ -n $applet && $applet != busybox ]] || continue
    ln -sfn busybox "$root/bin/$applet"
done < <("$BUSYBOX" --list)
ln -sfn busybox "$root/bin/sh"
# So `#!/usr/bin/env sh` scripts run.
ln -sfn ../../bin/busybox "$root/usr/bin/env"
printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' \
    'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$root/etc/passwd"
printf '%s\n' 'root:x:0:' 'nobody:x:65534:' >"$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group"
chmod 0755 "$root"/{bin,etc,var,proc,sys,dev,usr,usr/bin}
chmod 0700 "$root/root"
chmod 1777 "$root/tmp"

# Deterministic tar of the entries listed (relative to -C DIR) on stdin, in the given order.
det_tar() {
    local dir=$1 dest=$2
    tar -C "$dir" --format=gnu --numeric-owner --owner=0 --group=0 --mtime=@0 \
        --no-recursion -cf "$dest" -T -
}

layer_tar=$work/layer.tar
(cd "$root" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort) | det_tar "$root" "$layer_tar"
diff_id=$(sha256sum "$layer_tar")
diff_id=${diff_id%% *}
gzip -n -9 "$layer_tar"

mkdir -p "$image/blobs/sha256"

# Stores a blob (file) under its digest; prints "DIGEST SIZE".
put_blob() {
    local f=$1 sum size
    sum=$(sha256sum "$f")
    sum=${sum%% *}
    size=$(wc -c <"$f")
    mv "$f" "$image/blobs/sha256/$sum"
    printf '%s %s\n' "$sum" "$size"
}

read -r layer_sum layer_size < <(put_blob "$layer_tar.gz")

platform=$(printf '"architecture":"%s","os":"linux"' "$arch")
[[ -z $variant ]] || platform+=$(printf ',"variant":"%s"' "$variant")

printf '{%s,"created":"1970-01-01T00:00:00Z","config":{"Env":["PATH=%s"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"mk8s tools/busybox-image.sh (busybox-static)"}]}' \
    "$platform" "$IMAGE_PATH" "$diff_id" >"$work/config.json"
read -r config_sum config_size < <(put_blob "$work/config.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$config_sum" "$config_size" "$layer_sum" "$layer_size" >"$work/manifest"
read -r manifest_sum manifest_size < <(put_blob "$work/manifest")

printf '{"imageLayoutVersion":"1.0.0"}' >"$image/oci-layout"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"},"platform":{%s}}]}' \
    "$manifest_sum" "$manifest_size" "$name" "$tag" "$platform" >"$image/index.json"
printf '[{"Config":"blobs/sha256/%s","RepoTags":["%s"],"Layers":["blobs/sha256/%s"]}]' \
    "$config_sum" "$name" "$layer_sum" >"$image/manifest.json"
find "$image" -type d -exec chmod 0755 {} +
find "$image" -type f -exec chmod 0644 {} +

# Written next to OUT and renamed, so OUT is never a half-written archive.
tmp_out=$(mktemp "$(dirname -- "$out")/.busybox-image.XXXXXX")
trap 'rm -rf "$work" "$tmp_out"' EXIT
(cd "$image" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort) | det_tar "$image" "$tmp_out"
chmod 0644 "$tmp_out"
mv -f "$tmp_out" "$out"
printf '%s sha256:%s -> %s\n' "$name" "$manifest_sum" "$out"
