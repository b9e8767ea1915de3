#!/usr/bin/env bash
# Project-local services for Veil, loopback only, passwordless, data in .veil/
# (or $VEIL_DATA_DIR), logs in .veil/log/.
#
#   deploy/local/services.sh up      start PostgreSQL 15 (5432), Redis 7 (6379),
#                                    ClickHouse (9000 native, 8123 HTTP) and Mailpit
#                                    (SMTP 1025, HTTP 8025), stripe-mock (HTTP 12111,
#                                    HTTPS 12112); installs missing Debian packages
#                                    first. Idempotent.
#   deploy/local/services.sh down    stop them all, Kafka included (deploy/local/kafka.sh);
#                                    already stopped is fine.
#   deploy/local/services.sh status  one line per service; exit 1 when PostgreSQL, Redis,
#                                    ClickHouse, Mailpit or stripe-mock is not running
#                                    (Kafka is informative).
#
# Kafka (127.0.0.1:9092) is started separately: deploy/local/kafka.sh start.
set -euo pipefail
VEIL_SVC=services
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=deploy/local/lib.sh
. "$here/lib.sh"

# Install everything missing in one apt-get run (one `apt-get update`).
install_all() {
  local pkgs=()
  [[ -x /usr/lib/postgresql/15/bin/initdb ]] || pkgs+=(postgresql-15)
  { command -v redis-server && command -v redis-cli; } >/dev/null 2>&1 || pkgs+=(redis-server redis-tools)
  { command -v clickhouse-server && command -v clickhouse-client; } >/dev/null 2>&1 ||
    pkgs+=(clickhouse-server clickhouse-client)
  command -v curl >/dev/null 2>&1 || pkgs+=(curl)
  # The portal's browser tests (e2e/browser_test.go) drive headless Chromium.
  command -v chromium >/dev/null 2>&1 || pkgs+=(chromium)
  ((${#pkgs[@]} == 0)) || apt_install "${pkgs[@]}"
}

up() {
  local t0
  t0=$(now_ns)
  install_all
  "$here/postgres.sh" start
  "$here/redis.sh" start
  "$here/clickhouse.sh" start
  "$here/mailpit.sh" start
  "$here/stripe-mock.sh" start
  log "up in $(ms_since "$t0") ms: postgres://postgres@127.0.0.1:5432/veil  redis 127.0.0.1:6379  clickhouse 127.0.0.1:9000 (http :8123)  smtp 127.0.0.1:1025 (mailpit http://127.0.0.1:8025)  stripe http://127.0.0.1:12111"
}

down() {
  local rc=0
  "$here/kafka.sh" stop || rc=1
  "$here/stripe-mock.sh" stop || rc=1
  "$here/mailpit.sh" stop || rc=1
  "$here/clickhouse.sh" stop || rc=1
  "$here/redis.sh" stop || rc=1
  "$here/postgres.sh" stop || rc=1
  return "$rc"
}

status() {
  local rc=0
  "$here/postgres.sh" status || rc=1
  "$here/redis.sh" status || rc=1
  "$here/clickhouse.sh" status || rc=1
  "$here/mailpit.sh" status || rc=1
  "$here/stripe-mock.sh" status || rc=1
  "$here/kafka.sh" status || true
  return "$rc"
}

case ${1:-} in
  up | start) up ;;
  down | stop) down ;;
  status) status ;;
  restart) down && up ;;
  *)
    echo "usage: $0 up|down|status|restart" >&2
    exit 2
    ;;
esac
