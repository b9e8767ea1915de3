#!/usr/bin/env bash
# Project-local stripe-mock, Stripe's own API mock, for payment tests and local runs:
# HTTP http://127.0.0.1:12111 and HTTPS (HTTP/2, self-signed) https://127.0.0.1:12112,
# the ports Stripe's client libraries expect. Any test-mode key is accepted
# (e.g. sk_test_123). Log in .veil/log/stripe-mock.log, pidfile in .veil/stripe-mock.
# The binary is built once into .veil/bin with `go install`.
# Usage: deploy/local/stripe-mock.sh start|stop|status|restart
#
# stripe-mock is stateless: every call is validated against the bundled OpenAPI
# spec and answered with a fixture (a create echoes some of its parameters; a
# retrieve of any id returns the same fixture). It keeps nothing and sends no
# webhooks: outcomes such as a failed payment are driven by signed events that
# the tests build themselves.
set -euo pipefail
VEIL_SVC=stripe-mock
# shellcheck source=deploy/local/lib.sh
. "$(dirname "$0")/lib.sh"

# Its bundled spec is API version 2026-08-26.dahlia, the same major release as
# stripe-go v85 (2026-03-25.dahlia); Stripe adds only backwards-compatible
# changes within one release.
STRIPE_MOCK_VERSION=v0.203.0
STRIPE_MOCK_HOST=127.0.0.1
STRIPE_MOCK_HTTP_PORT=12111
STRIPE_MOCK_HTTPS_PORT=12112
STRIPE_MOCK_URL=http://$STRIPE_MOCK_HOST:$STRIPE_MOCK_HTTP_PORT
STRIPE_MOCK_KEY=sk_test_123
STRIPE_MOCK_BIN_DIR=$VEIL_DATA/bin
STRIPE_MOCK_BIN=$STRIPE_MOCK_BIN_DIR/stripe-mock
STRIPE_MOCK_BASE=$VEIL_DATA/stripe-mock
STRIPE_MOCK_PIDFILE=$STRIPE_MOCK_BASE/stripe-mock.pid
STRIPE_MOCK_LOGFILE=$VEIL_LOG/stripe-mock.log


# The pidfile path is on the command line only through the log redirection, so
# match on the listen address, which is ours alone.
our_pid() { pid_from "$STRIPE_MOCK_PIDFILE" "$STRIPE_MOCK_HOST:$STRIPE_MOCK_HTTP_PORT"; }

# ready_ok: a real API call (list customers) answered with a Stripe list object,
# not merely an open port.
ready_ok() {
  curl -fsS --max-time 2 -u "$STRIPE_MOCK_KEY:" "$STRIPE_MOCK_URL/v1/customers?limit=1" 2>/dev/null |
    grep -q '"object": *"list"'
}

start() {
  lock stripe-mock
  command -v curl >/dev/null 2>&1 || apt_install curl
  go_install_pinned stripe-mock github.com/stripe/stripe-mock "$STRIPE_MOCK_VERSION"
  if our_pid >/dev/null && ready_ok && port_open "$STRIPE_MOCK_HTTPS_PORT"; then
    log "already running (pid $(our_pid)): $STRIPE_MOCK_URL, https://$STRIPE_MOCK_HOST:$STRIPE_MOCK_HTTPS_PORT"
    return 0
  fi
  local t0 pid port
  t0=$(now_ns)
  if ! pid=$(our_pid); then
    for port in "$STRIPE_MOCK_HTTP_PORT" "$STRIPE_MOCK_HTTPS_PORT"; do
      if port_open "$port"; then
        die "port $port is taken by another process (not our stripe-mock, pidfile $STRIPE_MOCK_PIDFILE):
$(port_owner "$port")
stop it, or run 'deploy/local/stripe-mock.sh stop' in the checkout that started it"
      fi
    done
    mkdir -p "$STRIPE_MOCK_BASE"
    log "starting stripe-mock $STRIPE_MOCK_VERSION (log $STRIPE_MOCK_LOGFILE)"
    setsid nohup "$STRIPE_MOCK_BIN" \
      -http-addr "$STRIPE_MOCK_HOST:$STRIPE_MOCK_HTTP_PORT" \
      -https-addr "$STRIPE_MOCK_HOST:$STRIPE_MOCK_HTTPS_PORT" \
      </dev/null >>"$STRIPE_MOCK_LOGFILE" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$STRIPE_MOCK_PIDFILE"
  fi
  # Fail fast when the process dies; it parses its spec for a second or two first.
  local deadline=$((SECONDS + 60))
  until ready_ok && port_open "$STRIPE_MOCK_HTTPS_PORT"; do
    kill -0 "$pid" 2>/dev/null || die "stripe-mock exited during startup" "$STRIPE_MOCK_LOGFILE"
    ((SECONDS < deadline)) || die "stripe-mock did not answer $STRIPE_MOCK_URL/v1/customers within 60s" "$STRIPE_MOCK_LOGFILE"
    sleep 0.2
  done
  log "ready (pid $pid) in $(ms_since "$t0") ms: $STRIPE_MOCK_URL, https://$STRIPE_MOCK_HOST:$STRIPE_MOCK_HTTPS_PORT (key $STRIPE_MOCK_KEY)"
}

stop() {
  lock stripe-mock
  local pid
  if ! pid=$(our_pid); then
    rm -f "$STRIPE_MOCK_PIDFILE"
    log "not running"
    return 0
  fi
  log "stopping (pid $pid)"
  stop_pid "$pid" stripe-mock 30
  rm -f "$STRIPE_MOCK_PIDFILE"
  log "stopped"
}

status() {
  local pid
  if pid=$(our_pid) && ready_ok; then
    echo "stripe-mock: running (pid $pid) on $STRIPE_MOCK_URL, https://$STRIPE_MOCK_HOST:$STRIPE_MOCK_HTTPS_PORT"
  elif [[ -n ${pid:-} ]]; then
    echo "stripe-mock: process $pid alive but not answering on $STRIPE_MOCK_URL"
    return 1
  else
    echo "stripe-mock: stopped"
    return 1
  fi
}

service_main "$@"
