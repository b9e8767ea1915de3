#!/usr/bin/env bash
# Fuzzes the control plane's REST API from its own OpenAPI document with
# schemathesis: a control plane and a gateway run on a scratch database,
# schemathesis sends generated requests as an admin, a provider and a
# consumer, and fails on any 5xx, any status or content type the document
# does not declare, any response that does not match its schema, and any
# request outside the schema that is accepted.
#
# positive_data_acceptance is left out: opaque cursors and Idempotency-Keys
# are plain strings in the schema, but only the ones the API issued (or a
# key not yet used with another body) are accepted, so generated ones are
# refused by design. The stateful phase is left out too: it infers links
# between operations from responses and, for example, reads
# /v1/admin/approvals/{id} with the literal "bulk" from the bulk route.
#
# Needs bin/veil (make build) and Postgres and Redis (make services). The venv
# lives at ${VEIL_DATA_DIR:-<checkout>/.veil}/venv-schemathesis.
#
# Usage: deploy/ci/api_fuzz.sh [--max-examples N]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
data_dir="${VEIL_DATA_DIR:-$root/.veil}"
venv="$data_dir/venv-schemathesis"
req="$here/api-requirements.txt"
stamp="$venv/.veil-requirements.sha256"
python="${PYTHON:-python3}"
max_examples=25
if [[ ${1:-} == --max-examples ]]; then
	max_examples=$2
fi

if [ ! -x "$venv/bin/python" ]; then
	echo "api_fuzz: creating venv $venv" >&2
	mkdir -p "$data_dir"
	"$python" -m venv "$venv" || { echo "api_fuzz: '$python -m venv' failed (on Debian: apt-get install python3-venv)" >&2; rm -rf "$venv"; exit 1; }
fi
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
	"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
	echo "$want" >"$stamp"
fi

veil="$root/bin/veil"
[ -x "$veil" ] || { echo "api_fuzz: $veil is missing: run make build" >&2; exit 1; }

db="veil_api_fuzz"
pg="postgres://postgres@127.0.0.1:5432/$db?sslmode=disable"
psql_admin=(psql -h 127.0.0.1 -U postgres -d postgres -qAt)
if command -v psql >/dev/null; then
	"${psql_admin[@]}" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
fi
"$veil" migrate --only postgres --postgres-url "$pg" >/dev/null

# A Redis database of its own, emptied first: the fuzzer's seed is fixed,
# so it sends the same Idempotency-Keys every run, and an answer stored by
# an earlier run (with older code) would be replayed instead of tested.
redis_db=${API_FUZZ_REDIS_DB:-13}
redis-cli -h 127.0.0.1 -n "$redis_db" FLUSHDB >/dev/null || { echo "api_fuzz: cannot empty Redis database $redis_db" >&2; exit 1; }
export VEIL_REDIS_DB=$redis_db

free_port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
gw_port=$(free_port)
gw_metrics=$(free_port)
cp_metrics=$(free_port)
gw_admin=$(mktemp -d)/admin.sock
secret="api-fuzz-$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
log="$data_dir/log/api-fuzz-control-plane.log"
mkdir -p "$(dirname "$log")"
# Caddy's admin API on a unix socket, as in production; metrics off the default ports.
VEIL_GATEWAY_ADDR=127.0.0.1:$gw_port VEIL_GATEWAY_ADMIN_ADDR="unix/$gw_admin|0600" VEIL_METRICS_ADDR=127.0.0.1:$gw_metrics \
	"$veil" gateway --log-level warn >"$log.gateway" 2>&1 &
gw_pid=$!
# Stripe is stripe-mock (started by services.sh), so that the payment
# routes and the webhook answer as they do where Stripe is configured.
VEIL_STRIPE_SECRET_KEY=sk_test_123 VEIL_STRIPE_WEBHOOK_SECRET="whsec_$secret" VEIL_STRIPE_API_BASE=http://127.0.0.1:12111 \
VEIL_JWT_SECRET=$secret "$veil" control-plane --postgres-url "$pg" --control-plane-addr "127.0.0.1:$port" \
	--gateway-admin-url "unix://$gw_admin" --gateway-url "http://127.0.0.1:$gw_port" --metrics-addr "127.0.0.1:$cp_metrics" \
	--rate-limit-ip= --rate-limit-token= --rate-limit-payment= --log-level warn >"$log" 2>&1 &
cp_pid=$!
trap 'kill $cp_pid $gw_pid 2>/dev/null || true; wait $cp_pid $gw_pid 2>/dev/null || true' EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
	curl -fsS "$base/readyz" >/dev/null 2>&1 && break
	kill -0 $cp_pid 2>/dev/null || { echo "api_fuzz: the control plane exited; its log:" >&2; tail -n 40 "$log" >&2; exit 1; }
	sleep 0.2
done

status=0
for who in "platform operator admin" "acme alice provider" "acme carol consumer"; do
	read -r org user role <<<"$who"
	token=$(VEIL_JWT_SECRET=$secret "$veil" token --org "$org" --user "$user" --role "$role")
	echo "== schemathesis as $role ($org/$user)"
	if ! "$venv/bin/schemathesis" run "$base/openapi.json" \
		--header "Authorization: Bearer $token" \
		--checks all --exclude-checks positive_data_acceptance --phases examples,coverage,fuzzing \
		--max-examples "$max_examples" --seed "${API_FUZZ_SEED:-1}" \
		--request-timeout 10 --no-color; then
		status=1
	fi
done
if [ $status -ne 0 ]; then
	echo "api_fuzz: failures above; the control plane's log is $log" >&2
	grep -E '"level":"ERROR"' "$log" | tail -n 20 >&2 || true
fi
exit $status
