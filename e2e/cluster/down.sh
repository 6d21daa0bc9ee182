#!/usr/bin/env bash
# Stop every process up.sh started and remove the cluster state in $GEO_CLUSTER_DIR.
# The binary cache ($GEO_CACHE_DIR) is kept. Set GEO_KEEP_LOGS=1 to keep logs/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
geo_lock_cluster
quiet=0
[[ ${1:-} == --quiet ]] && quiet=1

D=$GEO_CLUSTER_DIR
stopped=()
for c in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
  if geo_pid_alive "$c"; then stopped+=("$c"); fi
done
# Clients first (together), then the apiserver, then etcd.
geo_stop kwok kube-scheduler kube-controller-manager
geo_stop kube-apiserver
geo_stop etcd

# Anything else still running with this cluster's state dir on its command line
# (e.g. a pid file was lost) is ours too: stop it by pid.
if [[ -d $D ]]; then
  real=$(cd "$D" && pwd -P)
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [[ $pid == "$$" ]] && continue
    cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    case "$(readlink "$p/exe" 2>/dev/null)" in
      */etcd | */kube-apiserver | */kube-controller-manager | */kube-scheduler | */kwok) ;;
      *) continue ;;
    esac
    if [[ $cmd == *"$real/"* || $cmd == *"$D/"* ]]; then
      geo_log down "stopping leftover pid $pid: ${cmd:0:100}"
      kill -TERM "$pid" 2>/dev/null || true
      sleep 1
      kill -KILL "$pid" 2>/dev/null || true
      stopped+=("pid$pid")
    fi
  done
fi

if [[ -d $D ]]; then
  rm -rf "$D/pki" "$D/pids" "$D/etcd" "$D/conf" "$D/kubeconfig" "$D/kubeconfig.tmp"
  [[ ${GEO_KEEP_LOGS:-0} == 1 ]] || rm -rf "$D/logs"
  rmdir "$D" 2>/dev/null || true
fi
if [[ $quiet == 0 || ${#stopped[@]} -gt 0 ]]; then
  if [[ ${#stopped[@]} -gt 0 ]]; then
    geo_log down "stopped ${stopped[*]}; removed state in $D"
  else
    geo_log down "nothing was running; removed state in $D"
  fi
fi
