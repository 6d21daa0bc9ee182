#!/usr/bin/env bash
# Start the local e2e control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok with fake nodes) on 127.0.0.1. All state lives under
# $GEO_CLUSTER_DIR (default <repo>/e2e/.cluster). Idempotent.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

geo_lock_cluster
start=$SECONDS
D=$GEO_CLUSTER_DIR
KUBECONFIG_OUT=$D/kubeconfig

if [[ -s $D/kubeconfig ]]; then
  alive=0
  for c in "${GEO_COMPONENTS[@]}"; do geo_pid_alive "$c" && alive=$((alive + 1)); done
  if [[ $alive -eq ${#GEO_COMPONENTS[@]} ]] && geo_readyz 5; then
    geo_log up "cluster already up (kubeconfig: $KUBECONFIG_OUT)"
    exit 0
  fi
  if [[ $alive -gt 0 ]]; then
    geo_log up "cluster partially up ($alive/${#GEO_COMPONENTS[@]} processes); restarting it"
  fi
fi
"$GEO_E2E_DIR/down.sh" --quiet

"$GEO_E2E_DIR/build.sh"

command -v openssl >/dev/null || { geo_log up "openssl is required"; exit 1; }
for port in "$GEO_ETCD_CLIENT_PORT" "$GEO_ETCD_PEER_PORT" "$GEO_APISERVER_PORT" "$GEO_KCM_PORT" "$GEO_SCHEDULER_PORT" "$GEO_KWOK_PORT"; do
  if geo_port_busy "$port"; then
    geo_log up "port 127.0.0.1:$port is already in use (see the GEO_*_PORT variables in lib.sh)"
    exit 1
  fi
done

mkdir -p "$D"/{pki,logs,pids,etcd,conf}
chmod 700 "$D/pki" "$D/etcd"

# ---------------------------------------------------------------- certificates
P=$D/pki
(
  cd "$P"
  umask 077
  newkey() { openssl ecparam -name prime256v1 -genkey -noout -out "$1.key" 2>/dev/null; }
  newkey ca
  openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=geo-e2e-ca" -out ca.crt \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  sign() { # sign NAME SUBJECT EXTFILE-CONTENT
    newkey "$1"
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
    printf '%s\n' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 3650 \
      -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
  }
  client_ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  sign apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  sign admin "/O=system:masters/CN=geo-e2e-admin" "$client_ext"
  sign kube-controller-manager "/CN=system:kube-controller-manager" "$client_ext"
  sign kube-scheduler "/CN=system:kube-scheduler" "$client_ext"
  sign kwok "/O=system:masters/CN=kwok" "$client_ext"
  # Aggregation layer (front proxy): its own CA + the client cert kube-apiserver uses.
  newkey front-proxy-ca
  openssl req -x509 -new -key front-proxy-ca.key -sha256 -days 3650 -subj "/CN=geo-e2e-front-proxy-ca" \
    -out front-proxy-ca.crt -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  newkey front-proxy-client
  openssl req -new -key front-proxy-client.key -subj "/CN=front-proxy-client" -out front-proxy-client.csr 2>/dev/null
  printf '%s\n' "$client_ext" >front-proxy-client.ext
  openssl x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key -CAcreateserial \
    -sha256 -days 3650 -extfile front-proxy-client.ext -out front-proxy-client.crt 2>/dev/null
  rm -f front-proxy-client.csr front-proxy-client.ext
  # Service-account token signing key pair (TokenRequest API).
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
)

# ----------------------------------------------------------------- kubeconfigs
KUBECTL=$(geo_bin kubectl)
SERVER=https://127.0.0.1:$GEO_APISERVER_PORT
mkkubeconfig() { # mkkubeconfig FILE CERTNAME
  local f=$1 n=$2
  "$KUBECTL" --kubeconfig="$f" config set-cluster geo-e2e --server="$SERVER" \
    --certificate-authority="$P/ca.crt" --embed-certs=true >/dev/null
  "$KUBECTL" --kubeconfig="$f" config set-credentials geo-e2e \
    --client-certificate="$P/$n.crt" --client-key="$P/$n.key" --embed-certs=true >/dev/null
  "$KUBECTL" --kubeconfig="$f" config set-context geo-e2e --cluster=geo-e2e --user=geo-e2e >/dev/null
  "$KUBECTL" --kubeconfig="$f" config use-context geo-e2e >/dev/null
  chmod 600 "$f"
}
for n in kube-controller-manager kube-scheduler kwok; do mkkubeconfig "$D/conf/$n.kubeconfig" "$n"; done
mkkubeconfig "$D/kubeconfig.tmp" admin

# ------------------------------------------------------------------- processes
# etcd's and the apiserver's flags are saved so restart.sh can reuse them verbatim.
etcd_args=(
  --name=geo-e2e
  --data-dir="$D/etcd"
  --listen-client-urls="http://127.0.0.1:$GEO_ETCD_CLIENT_PORT"
  --advertise-client-urls="http://127.0.0.1:$GEO_ETCD_CLIENT_PORT"
  --listen-peer-urls="http://127.0.0.1:$GEO_ETCD_PEER_PORT"
  --initial-advertise-peer-urls="http://127.0.0.1:$GEO_ETCD_PEER_PORT"
  --initial-cluster="geo-e2e=http://127.0.0.1:$GEO_ETCD_PEER_PORT"
  --listen-metrics-urls=""
  --unsafe-no-fsync=true
  --quota-backend-bytes=$((2 * 1024 * 1024 * 1024))
  --log-level=warn
)
printf '%s\n' "${etcd_args[@]}" >"$D/conf/etcd.args"
geo_start etcd "$(geo_bin etcd)" "${etcd_args[@]}"
for _ in $(seq 1 100); do
  geo_etcd_healthy && break
  geo_pid_alive etcd || { geo_log up "etcd died, see $D/logs/etcd.log"; tail -20 "$D/logs/etcd.log" >&2; exit 1; }
  sleep 0.1
done

# The audit log keeps the operator's own requests only (its ServiceAccount, any
# namespace), at Metadata level: e2e/bench_scale.py counts them per verb and resource,
# and the writes it makes in a steady state (there must be none).
cat >"$D/conf/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
    users: ["system:serviceaccount:geo-system:geo-operator"]
  - level: None
EOF

apiserver_args=(
  --bind-address=127.0.0.1
  --advertise-address=127.0.0.1
  --secure-port="$GEO_APISERVER_PORT"
  --etcd-servers="http://127.0.0.1:$GEO_ETCD_CLIENT_PORT"
  --cert-dir="$P"
  --tls-cert-file="$P/apiserver.crt"
  --tls-private-key-file="$P/apiserver.key"
  --client-ca-file="$P/ca.crt"
  --requestheader-client-ca-file="$P/front-proxy-ca.crt"
  --requestheader-allowed-names=front-proxy-client
  --requestheader-username-headers=X-Remote-User
  --requestheader-group-headers=X-Remote-Group
  --requestheader-extra-headers-prefix=X-Remote-Extra-
  --proxy-client-cert-file="$P/front-proxy-client.crt"
  --proxy-client-key-file="$P/front-proxy-client.key"
  --authorization-mode=Node,RBAC
  --anonymous-auth=true
  --service-account-issuer=https://kubernetes.default.svc.cluster.local
  --service-account-key-file="$P/sa.pub"
  --service-account-signing-key-file="$P/sa.key"
  --service-cluster-ip-range=10.96.0.0/16
  --endpoint-reconciler-type=none
  --allow-privileged=true
  --enable-admission-plugins=NodeRestriction
  --profiling=false
  --audit-policy-file="$D/conf/audit-policy.yaml"
  --audit-log-path="$D/logs/audit.log"
  --audit-log-format=json
  --audit-log-maxsize=100
  --audit-log-maxbackup=1
  --v=1
)
printf '%s\n' "${apiserver_args[@]}" >"$D/conf/kube-apiserver.args"
geo_start kube-apiserver "$(geo_bin kube-apiserver)" "${apiserver_args[@]}"
mv -f "$D/kubeconfig.tmp" "$KUBECONFIG_OUT"
if ! geo_readyz 60; then
  geo_log up "kube-apiserver not ready after 60s, see $D/logs/kube-apiserver.log"
  tail -30 "$D/logs/kube-apiserver.log" >&2
  exit 1
fi

geo_start kube-controller-manager "$(geo_bin kube-controller-manager)" \
  --kubeconfig="$D/conf/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig="$D/conf/kube-controller-manager.kubeconfig" \
  --authorization-kubeconfig="$D/conf/kube-controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="$GEO_KCM_PORT" \
  --cert-dir="$D/conf" \
  --leader-elect=false \
  --controllers='*' \
  --use-service-account-credentials=true \
  --service-account-private-key-file="$P/sa.key" \
  --root-ca-file="$P/ca.crt" \
  --cluster-signing-cert-file="$P/ca.crt" \
  --cluster-signing-key-file="$P/ca.key" \
  --service-cluster-ip-range=10.96.0.0/16 \
  --flex-volume-plugin-dir="$D/conf/flexvolume" \
  --kube-api-qps="$GEO_KCM_API_QPS" \
  --kube-api-burst="$GEO_KCM_API_BURST" \
  --profiling=false \
  --v=1

geo_start kube-scheduler "$(geo_bin kube-scheduler)" \
  --kubeconfig="$D/conf/kube-scheduler.kubeconfig" \
  --authentication-kubeconfig="$D/conf/kube-scheduler.kubeconfig" \
  --authorization-kubeconfig="$D/conf/kube-scheduler.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="$GEO_SCHEDULER_PORT" \
  --cert-dir="$D/conf" \
  --leader-elect=false \
  --profiling=false \
  --v=1

geo_start kwok "$(geo_bin kwok)" \
  --kubeconfig="$D/conf/kwok.kubeconfig" \
  --config="$(geo_kwok_stages)" \
  --manage-all-nodes=false \
  --manage-nodes-with-label-selector=type=kwok \
  --node-lease-duration-seconds=40 \
  --server-address="127.0.0.1:$GEO_KWOK_PORT" \
  --v=INFO

# ----------------------------------------------------------------- fake nodes
export KUBECONFIG=$KUBECONFIG_OUT
{
  for i in $(seq 0 $((GEO_KWOK_NODES - 1))); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  labels:
    type: kwok
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
EOF
  done
} >"$D/conf/nodes.yaml"
"$KUBECTL" apply -f "$D/conf/nodes.yaml" >/dev/null

# ------------------------------------------------------------------- wait
deadline=$((SECONDS + 60))
until "$KUBECTL" wait --for=condition=Ready node -l type=kwok --timeout=5s >/dev/null 2>&1; do
  for c in "${GEO_COMPONENTS[@]}"; do
    geo_pid_alive "$c" || { geo_log up "$c died, see $D/logs/$c.log"; tail -20 "$D/logs/$c.log" >&2; exit 1; }
  done
  [[ $SECONDS -lt $deadline ]] || { geo_log up "nodes not Ready after 60s"; "$KUBECTL" get nodes >&2; exit 1; }
done
until "$KUBECTL" -n default get serviceaccount default >/dev/null 2>&1; do
  [[ $SECONDS -lt $deadline ]] || { geo_log up "default ServiceAccount missing after 60s"; exit 1; }
  sleep 0.5
done

geo_log up "cluster up in $((SECONDS - start))s: $SERVER, kubeconfig $KUBECONFIG_OUT, logs $D/logs"
