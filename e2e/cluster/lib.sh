# shellcheck shell=bash
# Shared settings for the e2e cluster scripts. Sourced, not executed.

GEO_E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GEO_REPO_ROOT="$(cd "$GEO_E2E_DIR/../.." && pwd)"

# Pinned versions. The Go module versions themselves are pinned (with
# checksums) in gomod/<name>/go.mod + go.sum; keep these in sync with them.
ETCD_VERSION=v3.6.16
KUBE_VERSION=v1.34.4
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0

GEO_CACHE_DIR="${GEO_CACHE_DIR:-$HOME/.cache/geo-e2e}"
GEO_CLUSTER_DIR="${GEO_CLUSTER_DIR:-$GEO_REPO_ROOT/e2e/.cluster}"

# Ports (all on 127.0.0.1). Override through the environment if they clash.
GEO_ETCD_CLIENT_PORT="${GEO_ETCD_CLIENT_PORT:-23790}"
GEO_ETCD_PEER_PORT="${GEO_ETCD_PEER_PORT:-23800}"
GEO_APISERVER_PORT="${GEO_APISERVER_PORT:-16443}"
GEO_KCM_PORT="${GEO_KCM_PORT:-16257}"          # kube-controller-manager secure port
GEO_SCHEDULER_PORT="${GEO_SCHEDULER_PORT:-16259}" # kube-scheduler secure port
GEO_KWOK_PORT="${GEO_KWOK_PORT:-16280}"        # kwok health/metrics port
GEO_KWOK_NODES="${GEO_KWOK_NODES:-2}"
# kube-controller-manager's client rate limit, Kubernetes' defaults (20 / 30): its
# Deployment controller then creates about 5 ReplicaSets a second, which bounds how fast a
# burst of GeoDeployments can become Ready whatever the operator does (e2e/bench_scale.py).
GEO_KCM_API_QPS="${GEO_KCM_API_QPS:-20}"
GEO_KCM_API_BURST="${GEO_KCM_API_BURST:-30}"

geo_bin() { # geo_bin NAME -> path of the cached binary
  local name=$1 version
  case "$name" in
    etcd) version=$ETCD_VERSION ;;
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl) version=$KUBE_VERSION ;;
    kwok) version=$KWOK_VERSION ;;
    helm) version=$HELM_VERSION ;;
    *) echo "unknown binary $name" >&2; return 1 ;;
  esac
  echo "$GEO_CACHE_DIR/bin/$name-$version/$name"
}

# kwok's stage definitions, next to its binary; the revision is in the name, so a
# change to what build.sh writes is picked up by every cache without a rebuild.
# 2: Job pods labelled app.kubernetes.io/component=batch-tuner are left Running
#    (the e2e kubelet runner completes them with the tuner's real exit code).
GEO_KWOK_STAGES_REV=2
geo_kwok_stages() { echo "$(dirname "$(geo_bin kwok)")/stages-$GEO_KWOK_STAGES_REV.yaml"; }

geo_log() { echo "[$1] ${*:2}" >&2; }

# All processes managed by up.sh / down.sh, in start order.
GEO_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

geo_pid_alive() { # geo_pid_alive NAME -> 0 if the recorded pid runs the expected binary
  local name=$1 pidfile="$GEO_CLUSTER_DIR/pids/$1.pid" pid exe
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  kill -0 "$pid" 2>/dev/null || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  [[ $exe == */$name || $exe == */$name" (deleted)" ]]
}

geo_port_busy() { # geo_port_busy PORT -> 0 if something listens on 127.0.0.1:PORT
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

geo_etcd_healthy() { # -> 0 if etcd's /health says so
  curl -fsS "http://127.0.0.1:$GEO_ETCD_CLIENT_PORT/health" 2>/dev/null | grep -q '"health":"true"'
}

geo_readyz() { # geo_readyz TIMEOUT_SECONDS -> 0 once kube-apiserver's /readyz is ok
  local deadline=$((SECONDS + $1))
  while :; do
    if [[ $(curl -sS --max-time 2 --cacert "$GEO_CLUSTER_DIR/pki/ca.crt" \
      "https://127.0.0.1:$GEO_APISERVER_PORT/readyz" 2>/dev/null) == ok ]]; then
      return 0
    fi
    [[ $SECONDS -lt $deadline ]] || return 1
    sleep 0.2
  done
}

geo_start() { # geo_start NAME BINARY ARGS... : start a detached process, log + pid under GEO_CLUSTER_DIR
  local name=$1 bin=$2
  shift 2
  mkdir -p "$GEO_CLUSTER_DIR/logs" "$GEO_CLUSTER_DIR/pids"
  echo "==== $(date -u +%FT%TZ) starting $name" >>"$GEO_CLUSTER_DIR/logs/$name.log"
  # setsid: own session, so a Ctrl-C in the calling terminal/test runner does not reach it.
  setsid "$bin" "$@" >>"$GEO_CLUSTER_DIR/logs/$name.log" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$GEO_CLUSTER_DIR/pids/$name.pid"
  geo_log up "started $name (pid $!)"
}

geo_stop() { # geo_stop NAME... : SIGTERM them all, wait up to 15s, then SIGKILL
  local name pids=() pid i left
  for name in "$@"; do
    if geo_pid_alive "$name"; then
      pid=$(<"$GEO_CLUSTER_DIR/pids/$name.pid")
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for i in $(seq 1 150); do
    left=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
    [[ $left == 1 ]] || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for i in $(seq 1 50); do
    left=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
    [[ $left == 1 ]] || break
    sleep 0.1
  done
  for name in "$@"; do rm -f "$GEO_CLUSTER_DIR/pids/$name.pid"; done
}

geo_lock_cluster() { # serialise up/down/restart on the same GEO_CLUSTER_DIR (re-entrant for child scripts)
  [[ -z ${GEO_CLUSTER_LOCKED:-} ]] || return 0
  local dir="$GEO_CACHE_DIR/locks"
  mkdir -p "$dir"
  exec 8>"$dir/cluster-$(printf '%s' "$GEO_CLUSTER_DIR" | md5sum | cut -c1-16).lock"
  flock 8
  export GEO_CLUSTER_LOCKED=1
}
