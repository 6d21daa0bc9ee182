#!/usr/bin/env bash
# Kill kube-apiserver (SIGKILL by default, GEO_RESTART_SIGNAL=TERM for a graceful stop),
# start it again with the same flags, and wait until /readyz is ok.
# GEO_RESTART_DOWNTIME=<seconds> keeps it down that long before restarting.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
geo_lock_cluster
D=$GEO_CLUSTER_DIR
[[ -s $D/conf/kube-apiserver.args ]] || { geo_log restart "no cluster in $D (run up.sh)"; exit 1; }
start=$SECONDS
if geo_pid_alive kube-apiserver; then
  pid=$(<"$D/pids/kube-apiserver.pid")
  kill "-${GEO_RESTART_SIGNAL:-KILL}" "$pid"
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  geo_log restart "kube-apiserver (pid $pid) stopped"
fi
for _ in $(seq 1 100); do geo_port_busy "$GEO_APISERVER_PORT" || break; sleep 0.1; done
sleep "${GEO_RESTART_DOWNTIME:-0}"
mapfile -t args <"$D/conf/kube-apiserver.args"
geo_start kube-apiserver "$(geo_bin kube-apiserver)" "${args[@]}"
if ! geo_readyz 60; then
  geo_log restart "kube-apiserver not ready after 60s, see $D/logs/kube-apiserver.log"
  exit 1
fi
geo_log restart "kube-apiserver ready again in $((SECONDS - start))s"
