#!/usr/bin/env bash
# Build the geo-operator OCI image WITHOUT a container engine:
#   mmdebstrap (Debian bookworm rootfs) -> chroot: python3 -m venv /opt/geo + pip install the wheel
#   -> umoci (OCI layout, one layer, image config) -> skopeo (OCI archive).
# Needs root (mmdebstrap --mode=root, chroot). No mounts are made. Re-runnable: every run
# starts from an empty $OUT/work and replaces the archive at the end.
#
#   bash image/build-image.sh          (as root; writes out/image/geo-operator-<version>.tar)
#
# Knobs (env):
#   SRC                project checkout (read only)                       [the checkout this script is in]
#   OUT                output folder                                      [<checkout>/out/image]
#   PYTHON             python that builds the wheel (pip + PyPI access)   [$SRC/.venv/bin/python or python3]
#   CONSTRAINTS        pip constraints file pinning runtime deps          [none: latest from PyPI]
#   COMPILE=1|0        precompile .pyc (unchecked-hash) into the image    [1]
#   KEEP_PIP=0|1       keep pip/setuptools in /opt/geo                    [0]
#   SOURCE_DATE_EPOCH  timestamps in rootfs, layer and config             [1767225600 = 2026-01-01]
#   BUILD_CA           CA bundle pip/apt inside the chroot trust (NOT shipped) [/etc/ssl/certs/ca-certificates.crt]
#   MIRROR             Debian mirror                                      [http://deb.debian.org]
set -euo pipefail
# No `| head` anywhere below: with pipefail, a writer cut off by head's early exit fails the
# build with SIGPIPE (exit 141), now and then (seen once in CI); `sed -n 1,Np` reads it all.

SRC=${SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
OUT=${OUT:-$SRC/out/image}
COMPILE=${COMPILE:-1}
KEEP_PIP=${KEEP_PIP:-0}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1767225600}
BUILD_CA=${BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}
MIRROR=${MIRROR:-http://deb.debian.org}
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x $SRC/.venv/bin/python ]]; then PYTHON=$SRC/.venv/bin/python; else PYTHON=python3; fi
fi
NICE=(nice -n 19 ionice -c3)
UID_GEO=65532

[[ $(id -u) == 0 ]] || { echo "run as root (mmdebstrap --mode=root, chroot)" >&2; exit 1; }

T0=$(date +%s.%N)
LAST=$T0
step() { # step NAME: print the time the previous step took, then announce the next one
  local now; now=$(date +%s.%N)
  [[ -n ${CUR:-} ]] && printf '   ... %s took %.1fs\n' "$CUR" "$(echo "$now - $LAST" | bc)"
  LAST=$now; CUR=$1
  [[ $1 == done ]] || printf '==> %s\n' "$1"
}

step "tools (apt: mmdebstrap umoci skopeo)"
need=()
for p in mmdebstrap umoci skopeo bc; do command -v "$p" >/dev/null || need+=("$p"); done
if ((${#need[@]})); then
  "${NICE[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${NICE[@]}" apt-get install -y -q "${need[@]}"
fi
echo "    mmdebstrap $(dpkg-query -W -f='${Version}' mmdebstrap), umoci $(dpkg-query -W -f='${Version}' umoci), skopeo $(dpkg-query -W -f='${Version}' skopeo)"

VERSION=$("$PYTHON" -c 'import sys,tomllib;print(tomllib.load(open(sys.argv[1],"rb"))["project"]["version"])' "$SRC/pyproject.toml")
DESC=$("$PYTHON" -c 'import sys,tomllib;print(tomllib.load(open(sys.argv[1],"rb"))["project"]["description"])' "$SRC/pyproject.toml")
CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
W=$OUT/work
R=$W/rootfs
ARCHIVE=$OUT/geo-operator-$VERSION.tar
rm -rf "$W"
mkdir -p "$W"

step "rootfs: mmdebstrap bookworm (variant apt: python3 python3-venv ca-certificates)"
"${NICE[@]}" mmdebstrap --quiet --variant=apt --mode=root --format=directory \
  --include=python3,python3-venv,ca-certificates \
  --aptopt='Acquire::Retries "3"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --customize-hook='rm -f "$1/etc/apt/apt.conf.d/99mmdebstrap"' \
  bookworm "$R" \
  "deb $MIRROR/debian bookworm main" \
  "deb $MIRROR/debian bookworm-updates main" \
  "deb $MIRROR/debian-security bookworm-security main"
echo "    rootfs: $(du -sh "$R" | cut -f1), python $(chroot "$R" python3 -c 'import platform;print(platform.python_version())')"

step "wheel: pip wheel --no-deps (setuptools build backend, isolated build)"
mkdir -p "$W/src" "$W/wheels"
cp "$SRC/pyproject.toml" "$SRC/README.md" "$W/src/"
cp -r "$SRC/operator" "$W/src/"
find "$W/src" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
"${NICE[@]}" "$PYTHON" -m pip wheel --quiet --no-deps -w "$W/wheels" "$W/src"
WHEEL=$(ls "$W"/wheels/geo_operator-*.whl)
echo "    $(basename "$WHEEL") ($(du -h "$WHEEL" | cut -f1))"

step "venv /opt/geo in the rootfs (chroot): the wheel + runtime deps, no extras"
mkdir -p "$R/tmp/wheels"
cp "$WHEEL" "$R/tmp/wheels/"
cp "$BUILD_CA" "$R/tmp/build-ca.crt"     # this host's TLS-intercepting CA; removed below
cp /etc/resolv.conf "$R/etc/resolv.conf"
[[ -n ${CONSTRAINTS:-} ]] && cp "$CONSTRAINTS" "$R/tmp/constraints.txt"
CENV=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
      PIP_CERT=/tmp/build-ca.crt PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
      ${CONSTRAINTS:+PIP_CONSTRAINT=/tmp/constraints.txt})
"${NICE[@]}" chroot "$R" "${CENV[@]}" python3 -m venv /opt/geo
"${NICE[@]}" chroot "$R" "${CENV[@]}" /opt/geo/bin/pip install --quiet --no-compile "/tmp/wheels/$(basename "$WHEEL")"
chroot "$R" "${CENV[@]}" /opt/geo/bin/pip freeze --exclude geo-operator > "$OUT/requirements.lock.txt"   # use as CONSTRAINTS= to pin a rebuild
if [[ $KEEP_PIP != 1 ]]; then
  chroot "$R" "${CENV[@]}" /opt/geo/bin/pip uninstall --quiet -y pip setuptools
fi
find "$R/opt/geo" -name __pycache__ -prune -exec rm -rf {} +
if [[ $COMPILE == 1 ]]; then
  # hash-based .pyc: valid whatever the file mtimes, and the rootfs is read-only in the pod
  "${NICE[@]}" chroot "$R" "${CENV[@]}" /opt/geo/bin/python -m compileall -q -j1 \
    --invalidation-mode unchecked-hash /opt/geo/lib >/dev/null
fi
rm -rf "$R/tmp/wheels" "$R/tmp/build-ca.crt" "$R/tmp/constraints.txt"
echo "    /opt/geo: $(du -sh "$R/opt/geo" | cut -f1); biggest:"
du -sm "$R"/opt/geo/lib/python3.11/site-packages/* | sort -rn | sed -n 1,8p | \
  sed "s|$R/opt/geo/lib/python3.11/site-packages/||; s/^/      MB /"

step "user geo ($UID_GEO), cleanup, timestamps"
grep -q "^geo:" "$R/etc/passwd" || echo "geo:x:$UID_GEO:$UID_GEO:geo operator:/nonexistent:/usr/sbin/nologin" >> "$R/etc/passwd"
grep -q "^geo:" "$R/etc/group"  || echo "geo:x:$UID_GEO:" >> "$R/etc/group"
grep -q "^geo:" "$R/etc/shadow" || echo "geo:!:$((SOURCE_DATE_EPOCH / 86400))::::::" >> "$R/etc/shadow"
: > "$R/etc/resolv.conf"                # the runtime provides it
: > "$R/etc/hostname"
find "$R/dev" -mindepth 1 -delete       # no device nodes in the image: runtimes mount /dev
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/log/apt/* "$R"/var/log/dpkg.log \
       "$R"/var/cache/ldconfig/aux-cache
find "$R" -xdev -newermt "@$SOURCE_DATE_EPOCH" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
echo "    rootfs: $(du -sh "$R" | cut -f1)"

step "smoke test: chroot as $UID_GEO"
SENV=(env -i PATH=/opt/geo/bin:/usr/bin:/bin LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 HOME=/nonexistent)
chroot --userspec=$UID_GEO:$UID_GEO "$R" "${SENV[@]}" /opt/geo/bin/geo --help | sed -n 1p
chroot --userspec=$UID_GEO:$UID_GEO "$R" "${SENV[@]}" /opt/geo/bin/geo crd | sed -n '2,3p'
chroot --userspec=$UID_GEO:$UID_GEO "$R" "${SENV[@]}" /opt/geo/bin/python -c \
  'import kopf, kubernetes, tritonclient.grpc, tritonclient.http, prometheus_api_client, grafana_foundation_sdk, geo_operator.handlers; print("    imports ok")'

step "umoci: OCI layout, one layer, image config"
L=$W/oci
umoci init --layout "$L"
umoci new --image "$L:$VERSION"
umoci unpack --image "$L:$VERSION" "$W/bundle"
rmdir "$W/bundle/rootfs" && mv "$R" "$W/bundle/rootfs"       # the whole rootfs is the layer
"${NICE[@]}" umoci repack --image "$L:$VERSION" --history.created "$CREATED" \
  --history.created_by "mmdebstrap bookworm + pip install $(basename "$WHEEL") into /opt/geo" "$W/bundle"
umoci config --image "$L:$VERSION" --created "$CREATED" --author "geo-ai" \
  --history.created "$CREATED" --history.created_by "umoci config (build-image.sh)" \
  --config.user "$UID_GEO:$UID_GEO" --config.workingdir / \
  --clear config.env \
  --config.env PATH=/opt/geo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.env PYTHONDONTWRITEBYTECODE=1 --config.env PYTHONUNBUFFERED=1 --config.env LANG=C.UTF-8 \
  --clear config.entrypoint --config.entrypoint /opt/geo/bin/geo \
  --clear config.cmd --config.cmd run \
  --config.exposedports 8080/tcp --config.exposedports 9090/tcp \
  --config.label org.opencontainers.image.title=geo-operator \
  --config.label org.opencontainers.image.source=https://github.com/geo-ai/geo-operator \
  --config.label "org.opencontainers.image.version=$VERSION" \
  --config.label org.opencontainers.image.licenses=Apache-2.0 \
  --config.label "org.opencontainers.image.description=$DESC" \
  --config.label "org.opencontainers.image.created=$CREATED" \
  --manifest.annotation "org.opencontainers.image.version=$VERSION" \
  --manifest.annotation org.opencontainers.image.title=geo-operator
umoci gc --layout "$L"
rm -rf "$W/bundle"
echo "    layout: $(du -sh "$L" | cut -f1)"

step "skopeo: OCI archive"
rm -f "$ARCHIVE.tmp"
skopeo copy --quiet "oci:$L:$VERSION" "oci-archive:$ARCHIVE.tmp:ghcr.io/geo-ai/geo-operator:$VERSION"
mv "$ARCHIVE.tmp" "$ARCHIVE"
sha256sum "$ARCHIVE" > "$ARCHIVE.sha256"
skopeo inspect "oci-archive:$ARCHIVE" | "$PYTHON" -c '
import json,sys; i=json.load(sys.stdin); print("    manifest digest", i["Digest"]); print("    layers", i["Layers"])'
skopeo inspect --config "oci-archive:$ARCHIVE" | "$PYTHON" -c '
import json,sys; c=json.load(sys.stdin)["config"]
print("    entrypoint", c["Entrypoint"], "cmd", c["Cmd"], "user", c["User"])'
echo "    $ARCHIVE: $(du -h "$ARCHIVE" | cut -f1)"

step done
printf '==> total %.1fs\n' "$(echo "$(date +%s.%N) - $T0" | bc)"
