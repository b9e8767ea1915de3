#!/usr/bin/env bash
# Runs every ClickHouse migration (schemas/clickhouse/*.sql) twice on a current
# ClickHouse engine (chdb-core, in-process) and prints the resulting tables.
#
# The Python venv lives at ${VEIL_DATA_DIR:-<checkout>/.veil}/venv-chdb; it is
# created on the first run and reused afterwards (pip runs again only when
# deploy/ci/requirements.txt changes).
#
# Usage: deploy/ci/clickhouse_current.sh [--schemas DIR]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
data_dir="${VEIL_DATA_DIR:-$root/.veil}"
venv="$data_dir/venv-chdb"
req="$here/requirements.txt"
stamp="$venv/.veil-requirements.sha256"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
	echo "clickhouse_current: creating venv $venv" >&2
	mkdir -p "$data_dir"
	if ! "$python" -m venv "$venv"; then
		echo "clickhouse_current: '$python -m venv' failed (on Debian: apt-get install python3-venv)" >&2
		rm -rf "$venv"
		exit 1
	fi
fi

want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
	echo "clickhouse_current: installing $(grep -v '^#' "$req" | tr '\n' ' ')into $venv" >&2
	"$venv/bin/python" -m pip install --disable-pip-version-check --quiet -r "$req"
	echo "$want" >"$stamp"
fi

exec "$venv/bin/python" "$here/clickhouse_current.py" "$@"
