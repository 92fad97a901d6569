#!/usr/bin/env bash
# Submit one work item with kcat and wait for its result: what a producer in any language does.
#
#   BOOTSTRAP=127.0.0.1:9092 TENANT=acme ./schemas/json/kcat-submit.sh
#
# kcat is Debian's `kcat` package (apt-get install kcat); openssl signs when TENANT_KEY is set. The record
# value is one JSON object valid against work-item.schema.json (beside this file), the key is its job_id,
# and with router.tenant_keys configured the header modelyard-signature carries v1=<hex HMAC-SHA256 of the
# exact value bytes under the tenant's key>. The result is read back from <prefix>.results.
set -euo pipefail

BOOTSTRAP=${BOOTSTRAP:-127.0.0.1:9092}
PREFIX=${TOPIC_PREFIX:-modelyard}
JOB_ID=${JOB_ID:-kcat-$(date +%s)-$$}
TENANT=${TENANT:-acme}
TENANT_KEY=${TENANT_KEY:-}   # the tenant's signing key, when the router requires signed jobs
TIMEOUT=${TIMEOUT:-60}
KCAT_OPTS=${KCAT_OPTS:-}     # e.g. "-X security.protocol=SASL_PLAINTEXT -X sasl.mechanisms=PLAIN ..."

value=$(printf '{"job_id":"%s","tenant":"%s","input":"I was charged twice this month","params":{"labels":["billing","bug","account"]}}' \
  "$JOB_ID" "$TENANT")
headers=()
if [ -n "$TENANT_KEY" ]; then
  signature=$(printf '%s' "$value" | openssl dgst -sha256 -hmac "$TENANT_KEY" -r | cut -d' ' -f1)
  headers=(-H "modelyard-signature=v1=$signature")
fi

since=$(( $(date +%s) * 1000 - 5000 ))
# shellcheck disable=SC2086
printf '%s\n' "$value" | kcat $KCAT_OPTS -P -b "$BOOTSTRAP" -t "$PREFIX.jobs" -k "$JOB_ID" "${headers[@]}"
echo "submitted $JOB_ID to $PREFIX.jobs; waiting for its result on $PREFIX.results" >&2

deadline=$(( SECONDS + TIMEOUT ))
final="\"job_id\":\"$JOB_ID\",.*\"status\":\"(ok|error)\""
# shellcheck disable=SC2086
until result=$(kcat $KCAT_OPTS -C -b "$BOOTSTRAP" -t "$PREFIX.results" -o "s@$since" -e -q -f '%s\n' | grep -m1 -E "$final"); do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "no result for $JOB_ID after ${TIMEOUT}s (see: modelyard dlq list)" >&2
    exit 1
  fi
  sleep 1
done
echo "$result"
