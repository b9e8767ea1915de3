#!/usr/bin/env bash
# Project-local Mailpit, an SMTP server that keeps every message it gets and shows
# them over HTTP, for the control plane's email in tests and local runs:
# SMTP 127.0.0.1:1025 (any username and password, or none; no TLS), web UI and
# API http://127.0.0.1:8025. Data in .veil/mailpit, log in .veil/log/mailpit.log.
# The binary is built once into .veil/bin with `go install`.
# Usage: deploy/local/mailpit.sh start|stop|status
#
# Nothing is relayed: mail sent here never leaves the machine.
set -euo pipefail
VEIL_SVC=mailpit
# shellcheck source=deploy/local/lib.sh
. "$(dirname "$0")/lib.sh"

MAILPIT_VERSION=v1.33.1
MAILPIT_HOST=127.0.0.1
MAILPIT_SMTP_PORT=1025
MAILPIT_HTTP_PORT=8025
MAILPIT_URL=http://$MAILPIT_HOST:$MAILPIT_HTTP_PORT
MAILPIT_BIN_DIR=$VEIL_DATA/bin
MAILPIT_BIN=$MAILPIT_BIN_DIR/mailpit
MAILPIT_BASE=$VEIL_DATA/mailpit
MAILPIT_DB=$MAILPIT_BASE/mailpit.db
MAILPIT_PIDFILE=$MAILPIT_BASE/mailpit.pid
MAILPIT_LOGFILE=$VEIL_LOG/mailpit.log
# Tests send to a fresh address each and never delete, so keep enough messages that
# a full test run does not prune the ones a running test still looks for.
MAILPIT_MAX_MESSAGES=5000


our_pid() { pid_from "$MAILPIT_PIDFILE" "$MAILPIT_DB"; }

ready_ok() { curl -fsS --max-time 2 "$MAILPIT_URL/readyz" >/dev/null 2>&1; }

start() {
  lock mailpit
  command -v curl >/dev/null 2>&1 || apt_install curl
  go_install_pinned mailpit github.com/axllent/mailpit "$MAILPIT_VERSION"
  if our_pid >/dev/null && ready_ok && port_open "$MAILPIT_SMTP_PORT"; then
    log "already running (pid $(our_pid)): smtp $MAILPIT_HOST:$MAILPIT_SMTP_PORT, http $MAILPIT_URL"
    return 0
  fi
  local t0 pid port
  t0=$(now_ns)
  if ! pid=$(our_pid); then
    for port in "$MAILPIT_SMTP_PORT" "$MAILPIT_HTTP_PORT"; do
      if port_open "$port"; then
        die "port $port is taken by another process (not our mailpit, pidfile $MAILPIT_PIDFILE):
$(port_owner "$port")
stop it, or run 'deploy/local/services.sh down' in the checkout that started it"
      fi
    done
    mkdir -p "$MAILPIT_BASE"
    log "starting mailpit $MAILPIT_VERSION (database $MAILPIT_DB, log $MAILPIT_LOGFILE)"
    setsid nohup "$MAILPIT_BIN" \
      --smtp "$MAILPIT_HOST:$MAILPIT_SMTP_PORT" \
      --listen "$MAILPIT_HOST:$MAILPIT_HTTP_PORT" \
      --smtp-auth-accept-any --smtp-auth-allow-insecure \
      --database "$MAILPIT_DB" \
      --max "$MAILPIT_MAX_MESSAGES" \
      --disable-version-check \
      --smtp-disable-rdns \
      </dev/null >>"$MAILPIT_LOGFILE" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$MAILPIT_PIDFILE"
  fi
  # Fail fast when the process dies; readyz answers once HTTP and SMTP are up.
  local deadline=$((SECONDS + 60))
  until ready_ok && port_open "$MAILPIT_SMTP_PORT"; do
    kill -0 "$pid" 2>/dev/null || die "mailpit exited during startup" "$MAILPIT_LOGFILE"
    ((SECONDS < deadline)) || die "mailpit did not answer $MAILPIT_URL/readyz within 60s" "$MAILPIT_LOGFILE"
    sleep 0.2
  done
  log "ready (pid $pid) in $(ms_since "$t0") ms: smtp $MAILPIT_HOST:$MAILPIT_SMTP_PORT, http $MAILPIT_URL"
}

stop() {
  lock mailpit
  local pid
  if ! pid=$(our_pid); then
    rm -f "$MAILPIT_PIDFILE"
    log "not running"
    return 0
  fi
  log "stopping (pid $pid)"
  stop_pid "$pid" mailpit 30
  rm -f "$MAILPIT_PIDFILE"
  log "stopped"
}

status() {
  local pid
  if pid=$(our_pid) && ready_ok; then
    echo "mailpit:    running (pid $pid) on smtp $MAILPIT_HOST:$MAILPIT_SMTP_PORT, http $MAILPIT_URL, data $MAILPIT_BASE"
  elif [[ -n ${pid:-} ]]; then
    echo "mailpit:    process $pid alive but not answering on $MAILPIT_URL/readyz"
    return 1
  else
    echo "mailpit:    stopped"
    return 1
  fi
}

service_main "$@"
