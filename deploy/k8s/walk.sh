#!/usr/bin/env bash
# The Kubernetes walk-through of README "Deployment", in the order it works, against the
# cluster of kubectl's current context (or $KUBECONFIG):
#
#   PRESSROOM_K8S_SECRETS=pressroom.env deploy/k8s/walk.sh [--dry-run] [--no-wait]
#
# PRESSROOM_K8S_SECRETS: an env file (KEY=value lines) with what goes into the `pressroom`
#   Secret: PRESSROOM_S3_ACCESS_KEY, PRESSROOM_S3_SECRET_KEY, PRESSROOM_WEBHOOK_SECRET,
#   PRESSROOM_SMTP_PASSWORD, … (never committed).
# PRESSROOM_K8S_CONFIG: the shared config file (default deploy/pressroom.yaml).
# PRESSROOM_K8S_TEMPLATES: the templates folder (default templates/).
# PRESSROOM_K8S_DATA: the folder `file` sources read (default templates/samples/).
# PRESSROOM_K8S_BUS_SECRETS: where bus-secrets.sh keeps the bus's keys (default ./bus-secrets;
#   keep it: re-running keeps the same identities).
# --dry-run: kubectl apply --dry-run=client (nothing is changed; needs an API server to answer
#   discovery, as every kubectl apply does). --no-wait: do not wait for rollouts.
# KUBECTL (default kubectl) and KUBECTL_APPLY_FLAGS (e.g. --validate=false) are passed through.
# Re-running it is safe: every step creates or updates.
set -euo pipefail
cd "$(dirname "$0")/../.."

KUBECTL=${KUBECTL:-kubectl}
ns=pressroom
dry=() wait=1
for arg in "$@"; do
  case $arg in
    --dry-run) dry=(--dry-run=client) wait=0 ;;
    --no-wait) wait=0 ;;
    *) echo "walk: unknown option $arg (--dry-run, --no-wait)" >&2; exit 2 ;;
  esac
done
secrets_env=${PRESSROOM_K8S_SECRETS:-}
config=${PRESSROOM_K8S_CONFIG:-deploy/pressroom.yaml}
templates=${PRESSROOM_K8S_TEMPLATES:-templates}
data=${PRESSROOM_K8S_DATA:-templates/samples}
bus_dir=${PRESSROOM_K8S_BUS_SECRETS:-bus-secrets}
# The web console's users: a file `PRESSROOM_CONSOLE_USERS=F pressroom console user add` wrote
console_users=${PRESSROOM_K8S_CONSOLE_USERS:-}
[ -n "$secrets_env" ] && [ -f "$secrets_env" ] || {
  echo "walk: set PRESSROOM_K8S_SECRETS to an env file with the pressroom Secret's keys" \
    "(PRESSROOM_S3_ACCESS_KEY=…, PRESSROOM_S3_SECRET_KEY=…, PRESSROOM_WEBHOOK_SECRET=…)" >&2
  exit 2
}
[ -f "$config" ] || { echo "walk: no config file $config (PRESSROOM_K8S_CONFIG)" >&2; exit 2; }
[ -d "$templates" ] || { echo "walk: no templates folder $templates" >&2; exit 2; }
[ -d "$data" ] || { echo "walk: no data folder $data (PRESSROOM_K8S_DATA)" >&2; exit 2; }

n=0
step() { n=$((n + 1)); echo "walk: $n. $*" >&2; }
# shellcheck disable=SC2086  # KUBECTL_APPLY_FLAGS is a list of flags
apply() { "$KUBECTL" apply "${dry[@]}" ${KUBECTL_APPLY_FLAGS:-} "$@"; }
# `kubectl create … -o yaml` piped into apply: creates or updates (create alone fails on re-runs)
generated() { "$KUBECTL" -n "$ns" create "$@" --dry-run=client -o yaml | apply -f -; }

step "the namespace, which everything else lives in"
apply -f deploy/k8s/namespace.yaml
step "the bus's Secrets (identities per role, TLS) — before NATS, which mounts them"
deploy/k8s/bus-secrets.sh "$bus_dir" >&2
apply -f "$bus_dir/secrets.yaml"
step "the pressroom Secret (S3 keys, webhook secret, SMTP password)"
generated secret generic pressroom --from-env-file="$secrets_env"
step "the shared config ($config), templates ($templates/) and data files ($data/) as ConfigMaps"
generated configmap pressroom-config --from-file=pressroom.yaml="$config"
generated configmap pressroom-templates --from-file="$templates"
generated configmap pressroom-data --from-file="$data"
step "the console's users (PRESSROOM_K8S_CONSOLE_USERS; unset: none, nobody signs in yet)"
if [ -z "$console_users" ]; then
  console_users=$(mktemp)
  echo "users: []" > "$console_users"
fi
generated secret generic pressroom-console-users --from-file=users.yaml="$console_users"
step "NATS: 3-node cluster, JetStream on persistent volumes"
apply -f deploy/k8s/nats.yaml
step "network policies"
apply -f deploy/k8s/network.yaml
step "Pressroom: settings, the out claim, workers, bus-setup Job, autoscaler, consoles"
apply -f deploy/k8s/pressroom.yaml
step "monitoring: alert rules and scrape job for the cluster's Prometheus"
apply -f deploy/k8s/monitoring.yaml

if [ "$wait" = 1 ]; then
  step "waiting: NATS ready, streams declared (bus-setup), every worker rolled out"
  "$KUBECTL" -n "$ns" rollout status statefulset/nats --timeout=10m
  "$KUBECTL" -n "$ns" wait --for=condition=complete job/bus-setup --timeout=10m
  for deployment in scheduler fetcher renderer distributor; do
    "$KUBECTL" -n "$ns" rollout status "deployment/$deployment" --timeout=10m
  done
  echo "walk: done — kubectl -n $ns scale deployment ops-console --replicas=1, then" \
    "kubectl -n $ns exec -it deploy/ops-console -- pressroom health" >&2
fi
