#!/usr/bin/env bash
# The bus's Secrets for deploy/k8s: one nkey identity per role, the server's TLS certificate,
# and one Secret per Pressroom role holding only that role's seed and the CA.
#
#   deploy/k8s/bus-secrets.sh [FOLDER]      # FOLDER keeps the keys (default: ./bus-secrets)
#   PUBLISHERS="billing crm" deploy/k8s/bus-secrets.sh   # one identity per calling system
#
# Re-running keeps existing keys (`pressroom bus auth` never replaces a seed unless --rotate);
# apply the output with kubectl. With cert-manager, replace the `nats-tls` Secret by a
# Certificate for the same names (keys ca.crt, tls.crt, tls.key).
set -euo pipefail
dir=${1:-bus-secrets}
ns=pressroom
hosts="nats,nats.$ns.svc,nats.$ns.svc.cluster.local"
for i in 0 1 2; do hosts="$hosts,nats-$i.nats-cluster.$ns.svc,nats-$i.nats-cluster.$ns.svc.cluster.local"; done

# Users and seeds (auth.conf without a tls block: nats.yaml has its own, with in-pod paths);
# each calling system its own account and seed (publisher-NAME.nk; without names, publisher.nk).
publishers=()
for name in ${PUBLISHERS:-}; do publishers+=(--publisher "$name"); done
pressroom bus auth --out "$dir/identities" ${publishers[@]+"${publishers[@]}"} >/dev/null
# A CA and a server certificate for every name the clients use.
pressroom bus auth --out "$dir/tls" --tls --host "$hosts" >/dev/null
# The studio's key pair: renderers seal recorded payloads to the public half; only the
# console (the private half) opens them.
[ -f "$dir/studio/seal.key" ] || pressroom pdf keys "$dir/studio" >/dev/null

secret() { kubectl -n "$ns" create secret generic "$@" --dry-run=client -o yaml; echo "---"; }
{
  secret nats-auth --from-file=auth.conf="$dir/identities/auth.conf"
  secret nats-tls --from-file=ca.crt="$dir/tls/ca.pem" \
    --from-file=tls.crt="$dir/tls/server-cert.pem" --from-file=tls.key="$dir/tls/server-key.pem"
  secret pressroom-studio-key --from-file=studio-seal.pem="$dir/studio/seal.key"
  secret pressroom-studio-public --from-file=studio-seal.pub="$dir/studio/seal.pub"
  for role in fetcher renderer distributor scheduler ops; do
    secret "pressroom-bus-$role" --from-file="$role.nk=$dir/identities/$role.nk" \
      --from-file=ca.pem="$dir/tls/ca.pem"
  done
} > "$dir/secrets.yaml"
echo "wrote $dir/secrets.yaml: kubectl apply -f $dir/secrets.yaml"
echo "each calling system publishes with its own seed ($dir/identities/publisher*.nk) and $dir/tls/ca.pem"
