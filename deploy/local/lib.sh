# shellcheck shell=bash
# Shared helpers for the project-local service scripts in deploy/local/.
# Sourced, never executed. Callers set `set -euo pipefail` themselves.
#
# Layout (all under VEIL_DATA_DIR, default <checkout>/.veil):
#   log/            every service's log
#   run/            lock files
#   postgres/ redis/ clickhouse/ kafka/   data and generated configs

VEIL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VEIL_DATA=${VEIL_DATA_DIR:-$VEIL_ROOT/.veil}
mkdir -p "$VEIL_DATA"
VEIL_DATA=$(cd "$VEIL_DATA" && pwd)
VEIL_LOG=$VEIL_DATA/log
VEIL_RUN=$VEIL_DATA/run
mkdir -p "$VEIL_LOG" "$VEIL_RUN"
# Other users (postgres) must be able to traverse these.
chmod 755 "$VEIL_DATA" "$VEIL_LOG" 2>/dev/null || true
export VEIL_ROOT VEIL_DATA VEIL_LOG VEIL_RUN

: "${VEIL_SVC:=veil}"

log() { printf '[%s] %s\n' "$VEIL_SVC" "$*" >&2; }

# die MESSAGE [LOGFILE...]: print the message and the tail of each log, exit 1.
die() {
  local msg=$1
  shift
  printf '[%s] ERROR: %s\n' "$VEIL_SVC" "$msg" >&2
  local f
  for f in "$@"; do
    if [[ -s $f ]]; then
      printf '[%s] ---- last 40 lines of %s ----\n' "$VEIL_SVC" "$f" >&2
      tail -n 40 "$f" >&2 || true
      printf '[%s] ---- end of %s ----\n' "$VEIL_SVC" "$f" >&2
    fi
  done
  exit 1
}

# with_root CMD...: run as root (sudo when we are not root).
with_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

# apt_install PKG...: install the missing Debian packages. `apt-get update` runs once
# per invocation tree (VEIL_APT_UPDATED is exported to child scripts).
apt_install() {
  local missing=() p
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install ${missing[*]} by hand"
  if [[ ${VEIL_APT_UPDATED:-} != 1 ]]; then
    log "apt-get update"
    with_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$VEIL_LOG/apt.log" 2>&1 ||
      die "apt-get update failed" "$VEIL_LOG/apt.log"
    export VEIL_APT_UPDATED=1
  fi
  log "apt-get install ${missing[*]}"
  with_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}" >>"$VEIL_LOG/apt.log" 2>&1 ||
    die "apt-get install ${missing[*]} failed" "$VEIL_LOG/apt.log"
}

# port_open PORT [HOST]: true when something accepts TCP connections there.
port_open() {
  local port=$1 host=${2:-127.0.0.1}
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

# port_owner PORT: describe the listener(s) on PORT (best effort, for messages).
port_owner() {
  if command -v ss >/dev/null 2>&1; then
    ss -ltnpH "sport = :$1" 2>/dev/null | sed 's/^/    /' || true
  fi
}

# port_pids PORT: pids listening on TCP PORT (needs ss; empty when unknown).
port_pids() {
  command -v ss >/dev/null 2>&1 || return 0
  ss -ltnpH "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u || true
}

# pid_from FILE [WORD]: print the pid in FILE when that process is alive (and, with
# WORD, when its command line contains WORD: a stale pidfile may name a reused pid).
pid_from() {
  local f=$1 word=${2:-} pid
  [[ -s $f ]] || return 1
  pid=$(head -n1 "$f" | tr -dc '0-9')
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
  if [[ -n $word ]] && ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$word"; then
    return 1
  fi
  printf '%s\n' "$pid"
}

# wait_for SECONDS DESCRIPTION CMD...: poll CMD every 0.5 s until it succeeds or the
# deadline passes (returns 1). Never a fixed sleep.
wait_for() {
  local secs=$1 desc=$2
  shift 2
  local deadline=$((SECONDS + secs))
  while ((SECONDS < deadline)); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.5
  done
  log "timed out after ${secs}s waiting for $desc"
  return 1
}

# stop_pid PID NAME [SECONDS]: SIGTERM, wait with a deadline, then SIGKILL.
stop_pid() {
  local pid=$1 name=$2 secs=${3:-60}
  kill -TERM "$pid" 2>/dev/null || return 0
  local deadline=$((SECONDS + secs))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name (pid $pid) still running after ${secs}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_for 10 "$name to exit" bash -c "! kill -0 $pid" || true
  fi
}

# lock NAME: serialize concurrent runs of one service's start/stop (fd 9).
# Every daemon started while the lock is held MUST be started with `9>&-`, or it
# inherits the fd and keeps the lock for its whole life.
lock() {
  exec 9>"$VEIL_RUN/$1.lock"
  if command -v flock >/dev/null 2>&1; then
    flock -w 300 9 || die "could not take lock $VEIL_RUN/$1.lock"
  fi
}

# ms_since START_NS: elapsed milliseconds, for timing messages.
now_ns() { date +%s%N; }
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

# go_install_pinned NAME MODULE VERSION: build MODULE@VERSION into $VEIL_DATA/bin/NAME
# once; again only when the pin changes. A `go install` build carries no version of
# its own, hence the stamp beside it.
go_install_pinned() {
  local name=$1 module=$2 version=$3
  local dir=$VEIL_DATA/bin
  local bin=$dir/$name stamp=$dir/$name.version
  if [[ -x $bin && -f $stamp && $(cat "$stamp") == "$version" ]]; then
    return 0
  fi
  command -v go >/dev/null 2>&1 || die "go not found: it builds $name (go install $module@$version)"
  local t0
  t0=$(now_ns)
  log "building $name $version into $dir (log $VEIL_LOG/$name-install.log)"
  mkdir -p "$dir"
  # Outside the checkout, so the project's go.mod and GOFLAGS play no part.
  (cd / && GOBIN=$dir GOFLAGS='' go install "$module@$version") >"$VEIL_LOG/$name-install.log" 2>&1 ||
    die "go install $module@$version failed" "$VEIL_LOG/$name-install.log"
  echo "$version" >"$stamp"
  log "built $bin in $(ms_since "$t0") ms"
}


# service_main ACTION: the command line of a service script, which defines
# start, stop and status; restart is stop then start. USAGE_EXTRA adds the
# script's own actions to the usage line.
service_main() {
  case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    restart) stop && start ;;
    *)
      echo "usage: $0 start|stop|status|restart${USAGE_EXTRA:-}" >&2
      exit 2
      ;;
  esac
}
