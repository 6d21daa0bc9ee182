#!/usr/bin/env bash
# Run the built geo-operator image the way the chart's pod would, without a container engine:
# from the OCI archive, as the image's User (65532:65532), read-only root, the image's
# Entrypoint and Env, KUBERNETES_SERVICE_HOST/PORT, and a service-account directory mounted
# read-only at /var/run/secrets/kubernetes.io/serviceaccount (fake token/ca.crt/namespace
# unless SA_DIR is given). After the program it runs an in-cluster-config check (CHECK=0: not).
#
#   ./run-image.sh                       # MODE=chroot: `geo --help` + the check
#   MODE=runc ./run-image.sh             # the most faithful: runc on umoci's bundle
#   MODE=all ./run-image.sh              # chroot, userns, rootless, runc
#   TIMEOUT=15 MODE=runc ./run-image.sh run --log-level=info   # args replace Cmd, like the chart's `args:`
#
# Modes (none leaves a mount behind: every mount is made in a private mount namespace):
#   chroot    root: unshare --mount --pid --fork, pod mounts, chroot --userspec=65532:65532
#   userns    root: unshare --user --map-root-user --mount --pid --fork, pod mounts, then a nested
#             user namespace mapping 65532 -> that namespace's root; `unshare --root` does the chroot
#   rootless  the userns path as uid 65534 (nobody) on a `umoci unpack --rootless` bundle
#   runc      root: `runc run` on the bundle umoci unpack wrote; config.json edited to the chart's
#             securityContext (runAsUser 65532, capabilities drop ALL, allowPrivilegeEscalation
#             false, readOnlyRootFilesystem); own network namespace unless HOSTNET=1
# Env: ARCHIVE, RUN (scratch dir), SA_DIR, KUBERNETES_SERVICE_HOST/PORT, CHECK, TIMEOUT (s, default 20)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ARCHIVE=${ARCHIVE:-$HERE/../out/image/geo-operator-0.1.0.tar}
RUN=${RUN:-$HERE/../out/image/run}
MODE=${MODE:-chroot}
CHECK=${CHECK:-1}
TIMEOUT=${TIMEOUT:-20}
KHOST=${KUBERNETES_SERVICE_HOST:-10.96.0.1}
KPORT=${KUBERNETES_SERVICE_PORT:-443}
ARGS=("$@")
(( ${#ARGS[@]} )) || ARGS=(--help)
NICE=(nice -n 19 ionice -c3)
SA_MNT=/var/run/secrets/kubernetes.io/serviceaccount
NB=(setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=/tmp)

[[ $(id -u) == 0 ]] || { echo "run as root (MODE=rootless drops to uid 65534 by itself)" >&2; exit 1; }
[[ -f $ARCHIVE ]] || { echo "no $ARCHIVE: run build-image.sh first" >&2; exit 1; }
mkdir -p "$RUN"; chmod 755 "$RUN"

# --- the image, unpacked (again only when the archive changed) ---------------------------------
STAMP=$(sha256sum "$ARCHIVE" | cut -c1-64)
if [[ $(cat "$RUN/stamp" 2>/dev/null) != "$STAMP" ]]; then
  echo "==> unpack $ARCHIVE (skopeo copy oci-archive: -> oci:, umoci unpack)"
  rm -rf "$RUN/oci" "$RUN/bundle" "$RUN/rootless" "$RUN/stamp"
  skopeo copy --quiet "oci-archive:$ARCHIVE" "oci:$RUN/oci:image"
  "${NICE[@]}" umoci unpack --image "$RUN/oci:image" "$RUN/bundle" >/dev/null
  cp "$RUN/bundle/config.json" "$RUN/config.image.json"
  echo "$STAMP" > "$RUN/stamp"
fi
B=$RUN/bundle
# /var/run is a symlink to /run in the image: resolve the mount point INSIDE the rootfs (a plain
# mkdir/mount on "$B/rootfs/var/run/..." would follow the absolute link to the host's /run)
SA_IN=$(chroot "$B/rootfs" /usr/bin/realpath -m "$SA_MNT")
# mount points a runtime creates (the bundle is a scratch copy)
mkdir -p "$B/rootfs$SA_IN" "$B/rootfs/check"

# --- a service-account directory ---------------------------------------------------------------
if [[ -z ${SA_DIR:-} ]]; then
  SA_DIR=$RUN/sa
  if [[ ! -s $SA_DIR/ca.crt ]]; then
    mkdir -p "$SA_DIR"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
      -subj /CN=fake-kube-ca -days 3650 -out "$SA_DIR/ca.crt" 2>/dev/null
    printf 'fake.jwt.token' > "$SA_DIR/token"
    printf 'geo-system' > "$SA_DIR/namespace"
  fi
  chmod 755 "$SA_DIR"; chmod 644 "$SA_DIR"/*
fi
cat > "$RUN/check_incluster.py" <<'EOF'
import os, kubernetes
from geo_operator.k8s.client import load_config   # what `geo run` calls
load_config()
c = kubernetes.client.Configuration.get_default_copy()
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
tok = c.api_key.get("BearerToken") or c.api_key.get("authorization") or ""
caps = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
try:
    open("/opt/geo/x", "w"); ro = "WRITABLE"
except OSError as e:
    ro = "read-only (%s)" % e.strerror
print("    in-cluster config ok: host", c.host, "| ca", c.ssl_ca_cert, "| token", tok[:12] + "...",
      "| namespace", open(sa + "/namespace").read(), "| uid/gid", os.getuid(), os.getgid(),
      "| CapEff", caps, "| rootfs", ro)
EOF
chmod 644 "$RUN/check_incluster.py"

# The pod's mounts, made inside a private mount namespace; then the launcher.
#   pod-ns.sh chroot|userns ROOTFS SA_DIR CHECK_PY UID GID SA_IN -- PROGRAM...
cat > "$RUN/pod-ns.sh" <<'EOF'
set -eu
how=$1 R=$2 SA=$3 CHK=$4 uid=$5 gid=$6 SA_IN=$7; shift 8
mount --make-rprivate / 2>/dev/null || true
for p in dev proc tmp etc/resolv.conf check "${SA_IN#/}"; do   # never mount through a link out of the rootfs
  [ ! -L "$R/$p" ] || { echo "pod-ns.sh: $R/$p is a symlink, refusing" >&2; exit 1; }
done
mount --bind "$R" "$R"
mount -t tmpfs -o nosuid,mode=755,size=64k tmpfs "$R/dev"
for d in null zero full random urandom tty; do touch "$R/dev/$d"; mount --bind "/dev/$d" "$R/dev/$d"; done
mkdir "$R/dev/shm" "$R/dev/pts"
mount -t tmpfs -o nosuid,nodev,mode=1777,size=64m tmpfs "$R/dev/shm"
ln -s /proc/self/fd "$R/dev/fd"
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
mount -t tmpfs -o nosuid,nodev,mode=1777,size=64m tmpfs "$R/tmp"
mkdir -p "$R/check"; touch "$R/check/check_incluster.py"; mount --bind "$CHK" "$R/check/check_incluster.py"
mount --bind "$SA" "$R$SA_IN"
mount -o remount,bind,ro,nosuid,nodev,noexec "$R$SA_IN"
mount --bind /etc/resolv.conf "$R/etc/resolv.conf"
mount -o remount,bind,ro "$R/etc/resolv.conf"
mount -o remount,bind,ro "$R"                     # readOnlyRootFilesystem: true
case $how in
  chroot) exec chroot --userspec="$uid:$gid" "$R" "$@" ;;
  # a nested user namespace in which uid/gid 65532 is this namespace's root; unshare chroots
  # (--root) before exec, while it still holds CAP_SYS_CHROOT
  userns) exec unshare --user --map-user="$uid" --map-group="$gid" --root="$R" --wd=/ "$@" ;;
esac
EOF
chmod 644 "$RUN/pod-ns.sh"

# --- Entrypoint, Env, User from the image config (umoci's config.json) -------------------------
J() { python3 -c "import json,sys; p=json.load(open(sys.argv[1]))['process']; $1" "$RUN/config.image.json"; }
mapfile -t IMG_ENV < <(J 'print("\n".join(p["env"]))')
ENTRY=$(J 'print(p["args"][0])')
IUID=$(J 'print(p["user"]["uid"])'); IGID=$(J 'print(p["user"]["gid"])')
POD_ENV=(env -i "${IMG_ENV[@]}" KUBERNETES_SERVICE_HOST="$KHOST" KUBERNETES_SERVICE_PORT="$KPORT")

launch() { # launch MODE PROGRAM...
  local m=$1; shift
  case $m in
    chroot)
      timeout -s INT -k 5 "$TIMEOUT" unshare --mount --pid --fork --propagation private \
        bash "$RUN/pod-ns.sh" chroot "$B/rootfs" "$SA_DIR" "$RUN/check_incluster.py" "$IUID" "$IGID" "$SA_IN" -- "${POD_ENV[@]}" "$@" ;;
    userns)
      timeout -s INT -k 5 "$TIMEOUT" unshare --user --map-root-user --mount --pid --fork \
        bash "$RUN/pod-ns.sh" userns "$B/rootfs" "$SA_DIR" "$RUN/check_incluster.py" "$IUID" "$IGID" "$SA_IN" -- "${POD_ENV[@]}" "$@" ;;
    rootless)
      if [[ ! -d $RUN/rootless/bundle/rootfs ]]; then
        rm -rf "$RUN/rootless"; mkdir -p "$RUN/rootless"
        cp -a "$RUN/oci" "$RUN/rootless/oci"; chown -R 65534:65534 "$RUN/rootless"
        (cd "$RUN/rootless" && "${NICE[@]}" "${NB[@]}" umoci unpack --rootless --image oci:image bundle >/dev/null 2>&1)
      fi
      "${NB[@]}" mkdir -p "$RUN/rootless/bundle/rootfs$SA_IN" "$RUN/rootless/bundle/rootfs/check"
      timeout -s INT -k 5 "$TIMEOUT" "${NB[@]}" unshare --user --map-root-user --mount --pid --fork \
        bash "$RUN/pod-ns.sh" userns "$RUN/rootless/bundle/rootfs" "$SA_DIR" "$RUN/check_incluster.py" "$IUID" "$IGID" "$SA_IN" -- "${POD_ENV[@]}" "$@" ;;
    runc)
      python3 - "$RUN/config.image.json" "$B/config.json" "$SA_DIR" "$RUN/check_incluster.py" "${HOSTNET:-0}" "$KHOST" "$KPORT" "$@" <<'EOF'
import json, sys
src, dst, sa, chk, hostnet, host, port, *argv = sys.argv[1:]
c = json.load(open(src)); p = c["process"]
p["terminal"] = False
p["args"] = argv
p["env"] += ["KUBERNETES_SERVICE_HOST=" + host, "KUBERNETES_SERVICE_PORT=" + port]
p["noNewPrivileges"] = True                                          # allowPrivilegeEscalation: false
p["capabilities"] = {k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")}  # drop: [ALL]
c["root"]["readonly"] = True                                         # readOnlyRootFilesystem: true
c["mounts"] += [
  {"destination": "/var/run/secrets/kubernetes.io/serviceaccount", "type": "bind", "source": sa,
   "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]},
  {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]},
  {"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf", "options": ["rbind", "ro"]},
  {"destination": "/check/check_incluster.py", "type": "bind", "source": chk, "options": ["rbind", "ro"]},
]
if hostnet == "1":   # else its own netns: only lo, so `geo run` can't reach an API server (and takes no host port)
  c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
json.dump(c, open(dst, "w"), indent=2)
EOF
      touch "$B/rootfs/check/check_incluster.py"
      local id=geo-$$
      timeout -s INT -k 5 "$TIMEOUT" runc --root "$RUN/runc-state" run -b "$B" "$id"
      local rc=$?
      runc --root "$RUN/runc-state" delete -f "$id" 2>/dev/null || true
      return $rc ;;
    *) echo "unknown MODE $m" >&2; return 2 ;;
  esac
}

rc_all=0
for m in $([[ $MODE == all ]] && echo chroot userns rootless runc || echo "$MODE"); do
  echo "==> MODE=$m: $ENTRY ${ARGS[*]}  (uid $IUID:$IGID)"
  s=$(date +%s.%N)
  launch "$m" "$ENTRY" "${ARGS[@]}" || { rc=$?; echo "    exit $rc"; [[ $rc == 124 ]] || rc_all=$rc; }
  printf '    (%.1fs)\n' "$(echo "$(date +%s.%N) - $s" | bc)"
  if [[ $CHECK == 1 ]]; then
    launch "$m" /opt/geo/bin/python /check/check_incluster.py || { rc_all=$?; echo "    check failed"; }
  fi
done
if mount | grep -q -- "$RUN"; then echo "WARNING: mounts left under $RUN:" >&2; mount | grep -- "$RUN" >&2; exit 1; fi
exit $rc_all
