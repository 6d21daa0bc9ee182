#!/usr/bin/env bash
# restart.sh [kube-apiserver|etcd]: kill one control-plane process (SIGKILL by default,
# GEO_RESTART_SIGNAL=TERM for a graceful stop), start it again with the flags up.sh
# saved for it, and wait until it answers again: kube-apiserver's /readyz, or etcd's
# /health and then the API server's /readyz (its etcd check recovers by itself).
# GEO_RESTART_DOWNTIME=<seconds> keeps it down that long before restarting.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
name=${1:-kube-apiserver}
case $name in
  kube-apiserver) port=$GEO_APISERVER_PORT ;;
  etcd) port=$GEO_ETCD_CLIENT_PORT ;;
  *) geo_log restart "usage: restart.sh [kube-apiserver|etcd] (not $name)"; exit 2 ;;
esac
geo_lock_cluster
D=$GEO_CLUSTER_DIR
[[ -s $D/conf/$name.args ]] || { geo_log restart "no $name flags in $D/conf (run up.sh)"; exit 1; }
start=$SECONDS
if geo_pid_alive "$name"; then
  pid=$(<"$D/pids/$name.pid")
  kill "-${GEO_RESTART_SIGNAL:-KILL}" "$pid"
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  geo_log restart "$name (pid $pid) stopped"
fi
for _ in $(seq 1 100); do geo_port_busy "$port" || break; sleep 0.1; done
sleep "${GEO_RESTART_DOWNTIME:-0}"
mapfile -t args <"$D/conf/$name.args"
geo_start "$name" "$(geo_bin "$name")" "${args[@]}"
if [[ $name == etcd ]]; then
  for _ in $(seq 1 300); do
    geo_etcd_healthy && break
    sleep 0.1
  done
fi
if ! geo_readyz 60; then
  geo_log restart "kube-apiserver not ready after 60s, see $D/logs/$name.log"
  exit 1
fi
geo_log restart "$name restarted, kube-apiserver ready again in $((SECONDS - start))s"
