#!/usr/bin/env bash
# Build (only if missing) the pinned binaries of the e2e cluster from Go modules:
#   $GEO_CACHE_DIR/bin/<name>-<version>/<name>   (default GEO_CACHE_DIR=~/.cache/geo-e2e)
# Needs only Go (>= the go line of gomod/*/go.mod) and the Go module proxy.
# Usage: build.sh [NAME...]   (default: all of them)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL=(etcd kwok helm kubectl kube-scheduler kube-controller-manager kube-apiserver)
want=("$@")
[[ ${#want[@]} -gt 0 ]] || want=("${ALL[@]}")

command -v go >/dev/null || { geo_log build "go is not on PATH"; exit 1; }

# Everything Go downloads or compiles stays under the cache folder, so a warm
# cache never needs the network or a recompile.
mkdir -p "$GEO_CACHE_DIR/bin" "$GEO_CACHE_DIR/go"
export GOMODCACHE="$GEO_CACHE_DIR/go/mod"
export GOCACHE="$GEO_CACHE_DIR/go/cache"
export GOPATH="$GEO_CACHE_DIR/go/path"
export GOWORK=off CGO_ENABLED=0
export GOFLAGS="-mod=readonly -modcacherw -buildvcs=false -trimpath"
# GOPROXY / GONOSUMDB etc. are taken from the environment / `go env` as they are.

missing=()
for name in "${want[@]}"; do
  [[ -x $(geo_bin "$name") ]] || missing+=("$name")
  # kwok also needs its stage definitions next to the binary.
  [[ $name != kwok || -s $(geo_kwok_stages) ]] || missing+=(kwok-stages)
done
if [[ ${#missing[@]} -eq 0 ]]; then
  geo_log build "all binaries cached in $GEO_CACHE_DIR/bin"
  exit 0
fi

# One build at a time per cache (several checkouts may share the cache).
exec 9>"$GEO_CACHE_DIR/build.lock"
flock 9

kube_ldflags() {
  local v=${KUBE_VERSION#v} major minor
  major=${v%%.*}
  minor=${v#*.}; minor=${minor%%.*}
  local flags="-s -w" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

build_one() {
  local name=$1 out mod pkg ldflags="-s -w"
  out=$(geo_bin "$name")
  [[ -x $out ]] && return 0 # built meanwhile by another build.sh
  case "$name" in
    etcd)
      mod=etcd pkg=go.etcd.io/etcd/server/v3
      ;;
    kwok)
      mod=kwok pkg=sigs.k8s.io/kwok/cmd/kwok
      ;;
    helm)
      mod=helm pkg=helm.sh/helm/v3/cmd/helm
      ldflags+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
      ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
      ;;
    kube-*|kubectl)
      mod=kubernetes pkg=k8s.io/kubernetes/cmd/$name
      ldflags=$(kube_ldflags)
      ;;
  esac
  local start=$SECONDS tmp
  geo_log build "$name $(basename "$(dirname "$out")" | sed "s/^$name-//") ..."
  mkdir -p "$(dirname "$out")"
  tmp="$out.tmp.$$"
  (cd "$GEO_E2E_DIR/gomod/$mod" && go build -ldflags "$ldflags" -o "$tmp" "$pkg")
  mv -f "$tmp" "$out"
  geo_log build "$name done in $((SECONDS - start))s ($(du -h "$out" | cut -f1))"
}

total=$SECONDS
# Download all modules first (network), then compile (CPU).
for mod in etcd kwok helm kubernetes; do
  need=0
  for name in "${missing[@]}"; do
    case "$mod:$name" in
      etcd:etcd | kwok:kwok* | helm:helm | kubernetes:kube* ) need=1 ;;
    esac
  done
  [[ $need == 1 ]] || continue
  s=$SECONDS
  (cd "$GEO_E2E_DIR/gomod/$mod" && go mod download)
  geo_log build "modules for $mod downloaded in $((SECONDS - s))s"
done
kwok_stages() {
  # The bare kwok controller does nothing without Stage objects: take the
  # upstream "fast" node/pod stages plus the lease-based node heartbeat (what
  # kwokctl configures by default) from the kwok module. One change: pod-complete
  # (which marks every running Job pod Succeeded at once) skips GEO's tuning pods,
  # whose end the e2e kubelet runner reports from the real `geo tune` run.
  local src st
  src=$(cd "$GEO_E2E_DIR/gomod/kwok" && go mod download -json sigs.k8s.io/kwok | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  src="$src/kustomize/stage"
  st=$(geo_kwok_stages)
  mkdir -p "$(dirname "$st")"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"
    if [[ $f == pod/fast/pod-complete.yaml ]]; then
      grep -q "^      - 'Job'$" "$src/$f" || { geo_log build "unexpected $f"; return 1; }
      sed "/^      - 'Job'\$/a\\
    - key: '.metadata.labels[\"app.kubernetes.io/component\"]'\\
      operator: 'NotIn'\\
      values:\\
      - 'batch-tuner'" "$src/$f"
    else
      cat "$src/$f"
    fi
    echo
  done >"$st.tmp"
  mv -f "$st.tmp" "$st"
}

for name in "${missing[@]}"; do
  if [[ $name == kwok-stages ]]; then kwok_stages; else build_one "$name"; fi
done
geo_log build "all done in $((SECONDS - total))s"
