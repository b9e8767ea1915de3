#!/usr/bin/env bash
# make demo: run veil dev in the background, walk the scenario with
# `veil demo`, then stop veil dev. Services must be up (make services).
# DEMO_KEEP=1 leaves veil dev running afterwards.
set -euo pipefail
VEIL_SVC=demo
# shellcheck source=deploy/local/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$VEIL_ROOT"

[[ -x bin/veil ]] || die "bin/veil is missing: run make build"

# veil dev uses the real broker when it runs (make kafka), else its embedded one.
if port_open 9092; then
  log "a Kafka broker answers on 127.0.0.1:9092: veil dev uses it"
  export VEIL_KAFKA_BROKERS=127.0.0.1:9092
else
  export VEIL_KAFKA_BROKERS=
fi
for port in 8081 8080 8000 8082 9180 9181 9183; do
  if port_open "$port"; then
    die "something already listens on 127.0.0.1:$port (a veil dev left running?); stop it first"
  fi
done

# Notices by email go to mailpit when it runs (make services starts it).
mailpit_url=
if port_open 1025 && port_open 8025; then
  export VEIL_SMTP_ADDR=${VEIL_SMTP_ADDR:-127.0.0.1:1025} VEIL_SMTP_TLS=${VEIL_SMTP_TLS:-none}
  mailpit_url=http://127.0.0.1:8025
fi

# Plan files: veil dev watches this directory and the demo saves its
# hybrid plan there. Files of earlier runs name APIs that may be gone.
export VEIL_PRICING_DIR=$VEIL_DATA/pricing
mkdir -p "$VEIL_PRICING_DIR"
rm -f "$VEIL_PRICING_DIR"/*.yaml

# The demo ends its consumer's billing period at once (a month cannot
# pass in a demo); the billing cycle then closes and invoices it within
# seconds instead of after the default grace of an hour.
export VEIL_BILLING_GRACE=${VEIL_BILLING_GRACE:-1s} VEIL_BILLING_INTERVAL=${VEIL_BILLING_INTERVAL:-1s}

# Payments: veil dev collects through stripe-mock (make services starts it)
# unless a Stripe key is set; the payments cycle runs every second, so the
# demo's retries and suspension happen at once once it moves their time.
export VEIL_PAYMENTS_INTERVAL=${VEIL_PAYMENTS_INTERVAL:-1s}
demo_stripe=()
if [[ -z ${VEIL_STRIPE_SECRET_KEY:-} ]] && ! port_open 12111; then
  log "stripe-mock does not answer on 127.0.0.1:12111 (make services starts it): the demo leaves payments out"
  demo_stripe=(--stripe-webhook-secret "")
fi

devlog=$VEIL_LOG/dev.log
log "starting veil dev (log: $devlog)"
VEIL_DATA_DIR=$VEIL_DATA bin/veil dev >"$devlog" 2>&1 &
dev=$!
stop_dev() {
  if [[ ${DEMO_KEEP:-} == 1 ]]; then
    log "veil dev keeps running (pid $dev); stop it with: kill $dev"
    return
  fi
  kill "$dev" 2>/dev/null || true
  wait "$dev" 2>/dev/null || true
}
trap stop_dev EXIT

# Give veil dev a moment to fail fast (e.g. port taken, migrations refused).
for _ in $(seq 1 50); do
  kill -0 "$dev" 2>/dev/null || die "veil dev exited early" "$devlog"
  port_open 8081 && break
  sleep 0.2
done
kill -0 "$dev" 2>/dev/null || die "veil dev exited early" "$devlog"

bin/veil demo --kafka-brokers 127.0.0.1:9092 --mailpit-url "$mailpit_url" "${demo_stripe[@]}" || die "the demo failed" "$devlog"
