#!/usr/bin/env bash
# Custody as a cluster on one machine, on loopback, the same way as on
# several (docs/design/cluster.md, deploy/cluster/README.md):
#   3 nats-server nodes (JetStream, R3 streams, the PKI's NKEY users),
#   MariaDB with Trillian's schema, Trillian's log server and log signer,
#   2 sequencer candidates (custodyd --role sequencer, a lease in NATS KV),
#   2 verifiers (custodyd --role verifier).
#
#   cluster.sh up              start everything (the PKI, databases and tree on first use)
#   cluster.sh down            stop everything (SIGTERM, then SIGKILL after 20 s)
#   cluster.sh status          what runs, and which sequencer leads
#   cluster.sh start NAME      start one process again (after kill or stop)
#   cluster.sh stop NAME       stop one process (SIGTERM)
#   cluster.sh kill NAME       kill one process (SIGKILL, as a crash)
#   cluster.sh env             the addresses, as shell variables
#
# NAME is one of: mariadb trillian-server trillian-signer nats-1 nats-2
# nats-3 sequencer-1 sequencer-2 verifier-1 verifier-2.
#
# Environment: CLUSTER_DIR (state, logs, pid files; default .cluster at
# the repository's root; MariaDB's socket path in it must fit in 107
# bytes), BIN (custody and custodyd; default the repository's bin), PORT_BASE (default 14000:
# NATS clients +0..+2, routes +10..+12, Trillian +20/+21, sequencers' HTTP
# +30/+31), LEASE (sequencer lease, default 3s), VERDICT_WAIT (default
# 500ms), CPUPROFILE (set: the sequencers write CPU profiles to
# log/<name>.pprof when they stop), SEQUENCER_ARGS (more custodyd flags
# for the sequencers, split at spaces, e.g. "-v"). Needs mariadb-server, nats-server and Trillian's binaries on
# PATH (or in /usr/sbin, $(go env GOPATH)/bin).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
DIR="${CLUSTER_DIR:-$root/.cluster}"
BIN="${BIN:-$root/bin}"
PORT_BASE="${PORT_BASE:-14000}"
LEASE="${LEASE:-3s}"
VERDICT_WAIT="${VERDICT_WAIT:-500ms}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
BIN="$(cd "$BIN" && pwd)"
PKI="$DIR/pki"
RUN="$DIR/run"
LOGS="$DIR/log"
SOCK="$DIR/mariadb/mysqld.sock"
NATS_URLS="tls://127.0.0.1:$((PORT_BASE)),tls://127.0.0.1:$((PORT_BASE + 1)),tls://127.0.0.1:$((PORT_BASE + 2))"
ROUTES="127.0.0.1:$((PORT_BASE + 10)),127.0.0.1:$((PORT_BASE + 11)),127.0.0.1:$((PORT_BASE + 12))"
TRILLIAN="127.0.0.1:$((PORT_BASE + 20))"
SIGNER="127.0.0.1:$((PORT_BASE + 21))"
NAMES=(mariadb trillian-server trillian-signer nats-1 nats-2 nats-3 sequencer-1 sequencer-2 verifier-1 verifier-2)
export PATH="$PATH:/usr/sbin:/usr/local/sbin:$(go env GOPATH 2>/dev/null || echo /root/go)/bin"

die() { echo "cluster.sh: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found ($2)"; }
is_root() { [ "$(id -u)" = 0 ]; }

# argv NAME: the command line of a process, one word a line.
argv() {
  local i
  case "$1" in
  mariadb)
    printf '%s\n' mariadbd --no-defaults --datadir="$DIR/mariadb/data" --socket="$SOCK" --skip-networking \
      --pid-file="$DIR/mariadb/mariadbd.pid" --log-error="$LOGS/mariadb.err" --skip-name-resolve \
      --innodb-buffer-pool-size=256M --innodb-log-file-size=128M --max-connections=500 \
      --innodb-flush-log-at-trx-commit=1 --sync-binlog=1
    if is_root; then echo --user=root; fi
    ;;
  trillian-server)
    printf '%s\n' trillian_log_server --storage_system=mysql --mysql_uri="root@unix($SOCK)/trillian" \
      --quota_system=noop --rpc_endpoint="$TRILLIAN" --http_endpoint= --tree_gc=false \
      --tls_cert_file="$PKI/tls/server.pem" --tls_key_file="$PKI/tls/server.key" --logtostderr
    ;;
  trillian-signer)
    printf '%s\n' trillian_log_signer --storage_system=mysql --mysql_uri="root@unix($SOCK)/trillian" \
      --quota_system=noop --force_master --sequencer_interval=20ms --batch_size=2000 --num_sequencers=2 \
      --rpc_endpoint="$SIGNER" --http_endpoint= \
      --tls_cert_file="$PKI/tls/server.pem" --tls_key_file="$PKI/tls/server.key" --logtostderr
    ;;
  nats-?)
    printf '%s\n' nats-server --config "$DIR/$1.conf"
    ;;
  sequencer-?)
    i="${1#sequencer-}"
    printf '%s\n' "$BIN/custodyd" --role sequencer --pki "$PKI" --nats-url "$NATS_URLS" \
      --db "root@unix($SOCK)/custody" --trillian "$TRILLIAN" --tree-id "$(cat "$DIR/tree-id")" \
      --instance "$1" --lease "$LEASE" --verdict-wait "$VERDICT_WAIT" --replicas 3 \
      --http "127.0.0.1:$((PORT_BASE + 29 + i))" --log-format text
    if [ -n "${CPUPROFILE:-}" ]; then printf '%s\n' --cpuprofile "$LOGS/$1.pprof"; fi
    if [ -n "${SEQUENCER_ARGS:-}" ]; then printf '%s\n' $SEQUENCER_ARGS; fi
    ;;
  verifier-?)
    printf '%s\n' "$BIN/custodyd" --role verifier --pki "$PKI" --nats-url "$NATS_URLS" --log-format text
    ;;
  *) die "no process $1 (one of: ${NAMES[*]})" ;;
  esac
}

pid_of() { cat "$RUN/$1.pid" 2>/dev/null || true; }
running() { local p; p="$(pid_of "$1")"; [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

start() {
  local name="$1" cmd
  running "$name" && { echo "$name runs (pid $(pid_of "$name"))"; return 0; }
  mapfile -t cmd < <(argv "$name")
  mkdir -p "$RUN" "$LOGS"
  # Its own session: a signal to this script or its caller's group does
  # not reach it; down and kill address it by its pid file.
  setsid "${cmd[@]}" >>"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
  echo "$name started (pid $!, log $LOGS/$name.log)"
}

signal() {
  local name="$1" sig="$2" p
  p="$(pid_of "$name")"
  [ -n "$p" ] || { echo "$name: no pid file"; return 0; }
  kill -"$sig" "$p" 2>/dev/null || true
}

stop() {
  local name="$1" p i
  p="$(pid_of "$name")"
  running "$name" || { rm -f "$RUN/$name.pid"; return 0; }
  kill -TERM "$p" 2>/dev/null || true
  for i in $(seq 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true
  rm -f "$RUN/$name.pid"
  echo "$name stopped"
}

# wait_for WHAT CMD...: retry CMD for up to 90 s.
wait_for() {
  local what="$1" i
  shift
  for i in $(seq 900); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "$what did not come up in 90 s (logs in $LOGS)"
}

sql() { mariadb --no-defaults --socket="$SOCK" -uroot "$@"; }

trillian_schema() {
  local d
  d="$(cd "$root" && go mod download -json github.com/google/trillian | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -f "$d/storage/mysql/schema/storage.sql" ] || die "Trillian's schema not found in the module cache ($d)"
  echo "$d/storage/mysql/schema/storage.sql"
}

up() {
  need mariadbd "Debian package mariadb-server"
  need mariadb "Debian package mariadb-client"
  need nats-server "go install github.com/nats-io/nats-server/v2@v2.15.2"
  need trillian_log_server "go install github.com/google/trillian/cmd/trillian_log_server@v1.8.0"
  need trillian_log_signer "go install github.com/google/trillian/cmd/trillian_log_signer@v1.8.0"
  [ -x "$BIN/custodyd" ] && [ -x "$BIN/custody" ] || die "no custody and custodyd in $BIN (make build)"
  mkdir -p "$RUN" "$LOGS"
  [ -d "$PKI" ] || "$BIN/custody" pki init --dir "$PKI" >/dev/null
  local i
  for i in 1 2 3; do
    mkdir -p "$DIR/nats-$i"
    "$BIN/custody" nats-config --pki "$PKI" --cluster custody --name "nats-$i" \
      --listen "127.0.0.1:$((PORT_BASE + i - 1))" --store "$DIR/nats-$i" \
      --cluster-listen "127.0.0.1:$((PORT_BASE + 9 + i))" --routes "$ROUTES" > "$DIR/nats-$i.conf"
  done
  if [ ! -d "$DIR/mariadb/data" ]; then
    mkdir -p "$DIR/mariadb"
    local user=()
    is_root && user=(--user=root)
    mariadb-install-db --no-defaults --datadir="$DIR/mariadb/data" --auth-root-authentication-method=normal \
      --skip-test-db --skip-name-resolve "${user[@]}" > "$LOGS/mariadb-install.log" 2>&1 ||
      die "mariadb-install-db failed: $(tail -5 "$LOGS/mariadb-install.log")"
  fi
  start mariadb
  wait_for MariaDB sql -e 'SELECT 1'
  if ! sql -e 'USE trillian' 2>/dev/null; then
    sql -e 'CREATE DATABASE trillian; CREATE DATABASE custody'
    sql trillian < "$(trillian_schema)"
  fi
  start trillian-server
  start trillian-signer
  if [ ! -s "$DIR/tree-id" ]; then
    wait_for "Trillian's log server" bash -c "exec 3<>/dev/tcp/${TRILLIAN%:*}/${TRILLIAN#*:}"
    "$BIN/custody" trillian create-tree --pki "$PKI" --trillian "$TRILLIAN" --name custody > "$DIR/tree-id"
  fi
  for i in 1 2 3; do start "nats-$i"; done
  for i in 1 2 3; do wait_for "nats-$i" bash -c "exec 3<>/dev/tcp/127.0.0.1/$((PORT_BASE + i - 1))"; done
  start sequencer-1
  start sequencer-2
  start verifier-1
  start verifier-2
  for i in 1 2; do wait_for "sequencer-$i" curl -sfk "https://127.0.0.1:$((PORT_BASE + 29 + i))/healthz"; done
  wait_for "the partners' registration" "$BIN/custody" register --pki "$PKI" --nats "$NATS_URLS"
  echo "cluster up: NATS $NATS_URLS; ledger https://127.0.0.1:$((PORT_BASE + 30))/ledger (and :$((PORT_BASE + 31))); tree $(cat "$DIR/tree-id"); state in $DIR"
}

down() {
  local i
  for ((i = ${#NAMES[@]} - 1; i >= 0; i--)); do stop "${NAMES[$i]}"; done
}

status() {
  local n
  for n in "${NAMES[@]}"; do
    if running "$n"; then echo "$n running (pid $(pid_of "$n"))"; else echo "$n down"; fi
  done
  for n in sequencer-1 sequencer-2; do
    grep -h "sequencer lease held" "$LOGS/$n.log" 2>/dev/null | tail -1 | sed "s/^/$n: /" || true
  done
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
start) [ $# = 2 ] || die "start NAME"; argv "$2" >/dev/null; start "$2" ;;
stop) [ $# = 2 ] || die "stop NAME"; argv "$2" >/dev/null; stop "$2" ;;
kill)
  [ $# = 2 ] || die "kill NAME"
  argv "$2" >/dev/null
  if running "$2"; then signal "$2" KILL; echo "$2 killed"; else echo "$2 is not running"; fi
  rm -f "$RUN/$2.pid"
  ;;
env)
  echo "CLUSTER_DIR=$DIR"
  echo "PKI=$PKI"
  echo "NATS_URLS=$NATS_URLS"
  echo "ROUTES=$ROUTES"
  echo "LEDGER_URLS=https://127.0.0.1:$((PORT_BASE + 30)),https://127.0.0.1:$((PORT_BASE + 31))"
  echo "TRILLIAN=$TRILLIAN"
  echo "DB=root@unix($SOCK)/custody"
  echo "TREE_ID=$(cat "$DIR/tree-id" 2>/dev/null || true)"
  ;;
*) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
