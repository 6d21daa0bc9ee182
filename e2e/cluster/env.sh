# shellcheck shell=bash
# Source me: puts the cached kubectl/helm first on PATH and points KUBECONFIG at
# the e2e cluster.   . e2e/cluster/env.sh
_geo_env_lib="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)/lib.sh"
# shellcheck source=lib.sh
source "$_geo_env_lib"
export GEO_CACHE_DIR GEO_CLUSTER_DIR
export PATH="$(dirname "$(geo_bin kubectl)"):$(dirname "$(geo_bin helm)"):$PATH"
export KUBECONFIG="$GEO_CLUSTER_DIR/kubeconfig"
unset _geo_env_lib
