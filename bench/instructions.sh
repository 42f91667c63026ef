#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: a deterministic complement of
# bench/run.sh (whose req/s and CPU vary ±10% between runs on a shared 2-core machine). Counts
# user-space instructions of the proxy process only; see bench/README.md for what that leaves out.
#
#   bench/instructions.sh [--requests 5000] [--scenarios LIST] [--out DIR]
#
# Needs valgrind, ab (apache2-utils), nginx, curl, python3 and a wasmgate binary (WASMGATE_BIN, else
# target/release/wasmgate, else target/debug/wasmgate).
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

usage() {
  cat <<'EOF'
usage: bench/instructions.sh [options]

  --requests N        measured requests per scenario (default 5000), after 1,000 warm-up requests
  --scenarios LIST    only these scenarios (default all):
                      nginx-proxy,nginx-auth,wasmgate,wasmgate-basic-auth,wasmgate-chain5
  --out DIR           where report.md, results.txt and the callgrind dumps go
                      (default bench/out/instr-<time>)

Each scenario runs one worker of the proxy under `valgrind --tool=callgrind`, sends the warm-up
with `ab -k -c 4`, zeroes the counters, sends N requests, dumps the counters and divides.
Environment: WASMGATE_BIN (the binary), WASMGATE_COMMIT (the commit it was built from, when it is
not the work tree's HEAD), BENCH_PORT_BASE (3 consecutive loopback ports, default 28180).
EOF
}

ALL_SCENARIOS=(nginx-proxy nginx-auth wasmgate wasmgate-basic-auth wasmgate-chain5)
WARMUP_REQUESTS=1000
CONCURRENCY=4
# valgrind makes start-up 20-50x slower; compiling or loading plugins takes longest.
START_TIMEOUT_S=120
DUMP_TIMEOUT_S=120

requests=5000 scenarios_opt="" out=""
cmdline="bench/instructions.sh $*"
while (($#)); do
  case $1 in
    --requests) requests=${2:?--requests needs a value}; shift ;;
    --scenarios) scenarios_opt=${2:?--scenarios needs a value}; shift ;;
    --out) out=${2:?--out needs a value}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done
[[ $requests =~ ^[1-9][0-9]*$ ]] || die "--requests: expected a positive integer, got $requests"
if [[ -n $scenarios_opt ]]; then
  IFS=, read -ra SCENARIOS <<<"$scenarios_opt"
  for s in "${SCENARIOS[@]}"; do
    [[ " ${ALL_SCENARIOS[*]} " == *" $s "* ]] || die "unknown scenario $s (known: ${ALL_SCENARIOS[*]})"
  done
else
  SCENARIOS=("${ALL_SCENARIOS[@]}")
fi

# --- tools -------------------------------------------------------------------------------------
missing=()
for tool in valgrind callgrind_control callgrind_annotate ab nginx htpasswd curl python3; do
  command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || missing+=("$tool")
done
((${#missing[@]} == 0)) ||
  die "missing ${missing[*]}: apt-get install valgrind apache2-utils nginx curl python3"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [[ -z ${WASMGATE_BIN:-} ]]; then
  target_dir=${CARGO_TARGET_DIR:-$REPO/target}
  for candidate in "$target_dir/release/wasmgate" "$target_dir/debug/wasmgate"; do
    if [[ -x $candidate ]]; then WASMGATE_BIN=$candidate; break; fi
  done
fi
[[ -n ${WASMGATE_BIN:-} && -x $WASMGATE_BIN ]] ||
  die "no wasmgate binary: cargo build --release -p wasmgate (or set WASMGATE_BIN)"
case $WASMGATE_BIN in
  */release/wasmgate) profile="release" ;;
  */debug/wasmgate)
    profile="debug (meaningless for instruction counts)"
    log "warning: $WASMGATE_BIN is a debug build: its instruction counts mean nothing"
    ;;
  *) profile="unknown ($WASMGATE_BIN)" ;;
esac
CACHE_FLAG=$("$WASMGATE_BIN" run --help 2>/dev/null | grep -oE -- '--[a-z-]*cache[a-z-]*' | head -n1 || true)

# --- workspace, ports, credentials ---------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wasmgate-instr.XXXXXX")
chmod 755 "$WORK" # nginx reads its htpasswd file here
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_base=${BENCH_PORT_BASE:-28180}
UP_PORT=$port_base PROXY_PORT=$((port_base + 1)) ADMIN_PORT=$((port_base + 2))
for p in "$UP_PORT" "$PROXY_PORT" "$ADMIN_PORT"; do
  port_busy "$p" && die "port $p on 127.0.0.1 is in use (set BENCH_PORT_BASE)"
done

[[ -n $out ]] || out="$BENCH_DIR/out/instr-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
out=$(cd "$out" && pwd)
RESULTS=$out/results.txt
: >"$RESULTS"

# The same credentials, headers and path as bench/run.sh, so requests are the same size.
BENCH_USER=bench BENCH_PASSWORD=bench-secret-7
CRED_B64=$(printf '%s:%s' "$BENCH_USER" "$BENCH_PASSWORD" | base64)
htpasswd -bcs "$WORK/htpasswd" "$BENCH_USER" "$BENCH_PASSWORD" 2>/dev/null
chmod 644 "$WORK/htpasswd"
REQ_HEADERS=(-H "Authorization: Basic $CRED_B64" -H "x-test: headers")
PATH_UNDER_TEST=/productpage
URL="http://127.0.0.1:$PROXY_PORT$PATH_UNDER_TEST"
PLUGINS_DIR=$REPO/plugins/dist
mkdir -p "$WORK/home" "$WORK/cache"

# --- processes ----------------------------------------------------------------------------------
# poll_until TIMEOUT_S PID CMD...: lib.sh's poll_every every 0.2 s, slower than run.sh's polls on
# purpose: a process under valgrind needs the CPU.
poll_until() { poll_every 0.2 "$@"; }

admin_ready() { answers_200 "http://127.0.0.1:$ADMIN_PORT/ready" 2; }

# plugins_running N: the admin's /config_dump shows N WasmPlugins, all in state `running`.
# /ready turns 200 once the routes serve, which can be before the plugins are fetched, compiled
# and instantiated (seconds under valgrind): measuring then would measure fewer plugins.
plugins_running() {
  curl -s --max-time 5 "http://127.0.0.1:$ADMIN_PORT/config_dump" | python3 -c '
import json, sys
plugins = json.load(sys.stdin).get("plugins") or {}
states = [p.get("state") for p in plugins.values()]
sys.exit(0 if len(states) == int(sys.argv[1]) and all(s == "running" for s in states) else 1)
' "$1" 2>/dev/null
}

# The upstream runs natively (not under valgrind), as in bench/run.sh.
start_upstream() {
  local dir=$WORK/upstream
  mkdir -p "$dir"
  render "$BENCH_DIR/config/nginx-upstream.conf" "$dir/nginx.conf" DIR="$dir" WORKERS=1 PORT="$UP_PORT" \
    UPSTREAM="127.0.0.1:$UP_PORT" AUTH=""
  start_bg "$dir/stdout.log" "$NGINX" -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf"
  UPSTREAM_MAIN=$BG_PID
  wait_port "$UP_PORT" 10 "$BG_PID" || { tail -n 20 "$dir/error.log" >&2 || true; return 1; }
}

# valgrind_args NAME: callgrind writing to $out/callgrind.NAME.out; the dump that
# `callgrind_control -d` triggers goes to callgrind.NAME.out.1 (no %p in the name).
valgrind_args() {
  VG=(valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.$1.out")
}

# start_nginx_vg NAME [AUTH]: nginx's proxy config, one process (no master), under callgrind.
start_nginx_vg() {
  local name=$1 auth=${2:-} dir=$WORK/$1
  rm -rf "$dir" && mkdir -p "$dir"
  render "$BENCH_DIR/config/nginx-proxy.conf" "$dir/nginx.conf" DIR="$dir" WORKERS=1 PORT="$PROXY_PORT" \
    UPSTREAM="127.0.0.1:$UP_PORT" AUTH="$auth"
  # The template already has `daemon off;` and `worker_processes 1;`: without a master, the one
  # process serving requests is the one valgrind runs.
  printf 'master_process off;\n%s\n' "$(<"$dir/nginx.conf")" >"$dir/nginx.conf"
  valgrind_args "$name"
  rm -f "$out/callgrind.$name.out"*
  start_bg "$dir/valgrind.log" "${VG[@]}" "$NGINX" -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf"
  TARGET_MAIN=$BG_PID TARGET_LOG=$dir/valgrind.log STOP_SIG=TERM
  poll_until "$START_TIMEOUT_S" "$BG_PID" port_busy "$PROXY_PORT" || {
    log "nginx $name did not start under valgrind:"
    tail -n 20 "$dir/error.log" "$TARGET_LOG" >&2 || true
    return 1
  }
}

# start_wasmgate_vg NAME PLUGINS TEMPLATE...: the gateway, one worker thread, under callgrind;
# ready once PLUGINS WasmPlugins run.
start_wasmgate_vg() {
  local name=$1 plugins=$2 dir=$WORK/$1 tpl
  shift 2
  rm -rf "$dir" && mkdir -p "$dir/conf"
  for tpl in "$@"; do
    render "$BENCH_DIR/config/$tpl" "$dir/conf/$tpl" PORT="$PROXY_PORT" UPSTREAM="127.0.0.1:$UP_PORT" \
      PLUGINS="$PLUGINS_DIR" USER="$BENCH_USER" PASSWORD="$BENCH_PASSWORD" GEN=0
  done
  local -a cache_args=()
  [[ -n $CACHE_FLAG ]] && cache_args=("$CACHE_FLAG" "$WORK/cache")
  local -a args=(run --config-dir "$dir/conf" --listen-address 127.0.0.1
    --admin-addr "127.0.0.1:$ADMIN_PORT" --threads 1 --access-log off --grace-period 0
    --http1-engine native "${cache_args[@]}")
  local -a envs=(env HOME="$WORK/home" XDG_CACHE_HOME="$WORK/cache" RUST_LOG=warn)
  if ((plugins > 0)); then
    # Fill the module cache natively first: compiling the plugins under valgrind would take
    # minutes, and the compiled code is the same.
    start_bg "$dir/prime.log" "${envs[@]}" "$WASMGATE_BIN" "${args[@]}"
    if ! poll_until 60 "$BG_PID" plugins_running "$plugins"; then
      log "wasmgate $name did not become ready (natively, priming the module cache):"
      tail -n 20 "$dir/prime.log" >&2 || true
      stop_pid "$BG_PID" INT
      return 1
    fi
    stop_pid "$BG_PID" INT
  fi
  valgrind_args "$name"
  rm -f "$out/callgrind.$name.out"*
  start_bg "$dir/valgrind.log" "${envs[@]}" "${VG[@]}" "$WASMGATE_BIN" "${args[@]}"
  TARGET_MAIN=$BG_PID TARGET_LOG=$dir/valgrind.log STOP_SIG=INT
  if ! poll_until "$START_TIMEOUT_S" "$BG_PID" admin_ready ||
    ! poll_until "$START_TIMEOUT_S" "$BG_PID" plugins_running "$plugins" ||
    ! poll_until 10 "$BG_PID" port_busy "$PROXY_PORT"; then
    log "wasmgate $name did not become ready under valgrind within ${START_TIMEOUT_S}s; its log:"
    tail -n 20 "$TARGET_LOG" >&2 || true
    return 1
  fi
}

# stop_target: the proxy under valgrind may take a while to exit; give it 30 s before SIGKILL.
stop_target() {
  local i
  kill -s "$STOP_SIG" "$TARGET_MAIN" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    kill -0 "$TARGET_MAIN" 2>/dev/null || break
    sleep 0.2
  done
  stop_pid "$TARGET_MAIN" KILL
}

# run_ab N FILE: N keep-alive requests; fails (with the reason in CHECK_REASON) unless all N
# completed with a 2xx.
run_ab() {
  local n=$1 file=$2 complete failed non2xx keepalive
  ab -q -k -s 60 -c "$CONCURRENCY" -n "$n" "${REQ_HEADERS[@]}" "$URL" >"$file" 2>&1 || true
  complete=$(awk '/^Complete requests:/ {print $3}' "$file")
  failed=$(awk '/^Failed requests:/ {print $3}' "$file")
  non2xx=$(awk '/^Non-2xx responses:/ {print $3}' "$file")
  keepalive=$(awk '/^Keep-Alive requests:/ {print $3}' "$file")
  if [[ $complete != "$n" || $failed != 0 || ${non2xx:-0} != 0 ]]; then
    CHECK_REASON="ab: complete=${complete:-?} failed=${failed:-?} non-2xx=${non2xx:-0} of $n"
    tail -n 5 "$file" >&2 || true
    return 1
  fi
  # Without keep-alive every request would also pay a connection's set-up.
  [[ $keepalive == "$n" ]] || log "warning: only ${keepalive:-0} of $n requests used keep-alive"
  AB_KEEPALIVE=${keepalive:-0}
}

# dump_total NAME: trigger a dump, wait for its file, print the total instruction count (Ir).
dump_total() {
  local name=$1 file=$out/callgrind.$1.out.1 deadline=$((SECONDS + DUMP_TIMEOUT_S)) total
  callgrind_control -d "$TARGET_MAIN" >"$WORK/$name.dump.log" 2>&1 ||
    { cat "$WORK/$name.dump.log" >&2; return 1; }
  # The file is complete once its closing `totals:` line is written.
  until [[ -f $file ]] && grep -q '^totals:' "$file"; do
    ((SECONDS < deadline)) || { log "no complete dump in $file"; return 1; }
    sleep 0.2
  done
  total=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
  [[ $total =~ ^[0-9]+$ ]] || { log "no PROGRAM TOTALS in callgrind_annotate $file"; return 1; }
  echo "$total"
}

# --- one measurement ------------------------------------------------------------------------------
FAILURES=0
declare -A PER_REQ=()

measure() {
  local scenario=$1 started=1 total t0
  t0=$SECONDS
  TARGET_MAIN=""
  case $scenario in
    nginx-proxy) start_nginx_vg "$scenario" || started=0 ;;
    nginx-auth)
      start_nginx_vg "$scenario" "auth_basic \"bench\"; auth_basic_user_file $WORK/htpasswd;" || started=0
      ;;
    wasmgate) start_wasmgate_vg "$scenario" 0 gateway.yaml || started=0 ;;
    wasmgate-basic-auth) start_wasmgate_vg "$scenario" 1 gateway.yaml plugin-basic-auth.yaml || started=0 ;;
    wasmgate-chain5) start_wasmgate_vg "$scenario" 5 gateway.yaml plugin-chain.yaml || started=0 ;;
  esac
  if ((!started)); then
    fail "$scenario" "did not start"
    return 0
  fi
  log "$scenario: started under valgrind in $((SECONDS - t0)) s"
  if ! verify "$scenario" "$URL"; then
    fail "$scenario" "$CHECK_REASON"
    return 0
  fi
  if ! run_ab "$WARMUP_REQUESTS" "$WORK/$scenario.warmup.ab"; then
    fail "$scenario" "warm-up: $CHECK_REASON"
    return 0
  fi
  if ! callgrind_control -z "$TARGET_MAIN" >"$WORK/$scenario.zero.log" 2>&1; then
    cat "$WORK/$scenario.zero.log" >&2
    fail "$scenario" "callgrind_control -z failed"
    return 0
  fi
  if ! run_ab "$requests" "$out/$scenario.ab.txt"; then
    fail "$scenario" "$CHECK_REASON"
    return 0
  fi
  if ! total=$(dump_total "$scenario"); then
    fail "$scenario" "callgrind dump failed"
    return 0
  fi
  stop_target
  # What callgrind writes at exit covers only the shutdown: keep the measured dump (.out.1) only.
  rm -f "$out/callgrind.$scenario.out"
  PER_REQ[$scenario]=$(awk -v t="$total" -v n="$requests" 'BEGIN {printf "%.1f", t / n}')
  printf 'scenario=%s status=ok requests=%s instructions=%s per_request=%s keepalive=%s\n' \
    "$scenario" "$requests" "$total" "${PER_REQ[$scenario]}" "$AB_KEEPALIVE" >>"$RESULTS"
  log "$scenario: $total instructions / $requests requests = $(kilo "${PER_REQ[$scenario]}")k per request ($((SECONDS - t0)) s)"
}

fail() {
  log "error: $1 FAILED: $2"
  printf 'scenario=%s status=failed reason=%s\n' "$1" "${2//$'\n'/ }" >>"$RESULTS"
  FAILURES=$((FAILURES + 1))
  [[ -z $TARGET_MAIN ]] || stop_target
}

kilo() { awk -v x="$1" 'BEGIN {printf "%.1f", x / 1000}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
# extra A B DIVISOR: (A - B) / DIVISOR in thousands, signed.
extra() { awk -v a="$1" -v b="$2" -v d="$3" 'BEGIN {printf "%+.1f", (a - b) / d / 1000}'; }

# --- the run --------------------------------------------------------------------------------------
started_at=$SECONDS
log "wasmgate: $WASMGATE_BIN ($profile)"
log "results: $out"
start_upstream || die "the upstream nginx did not start"
expect_ok "http://127.0.0.1:$UP_PORT$PATH_UNDER_TEST" || die "upstream: $CHECK_REASON"

for scenario in "${SCENARIOS[@]}"; do
  measure "$scenario"
done
stop_pid "$UPSTREAM_MAIN" TERM

# --- report ---------------------------------------------------------------------------------------
commit=$(describe_commit)

base_nginx=${PER_REQ[nginx-proxy]:-}
base_gw=${PER_REQ[wasmgate]:-}
table() {
  local s v plugins xn xg add
  echo "| scenario | instructions / request (k) | × nginx proxy | × wasmgate | added per plugin (k) |"
  echo "|---|---:|---:|---:|---:|"
  for s in "${SCENARIOS[@]}"; do
    v=${PER_REQ[$s]:-}
    if [[ -z $v ]]; then
      echo "| $s | failed | | | |"
      continue
    fi
    xn="" xg="" add=""
    [[ -n $base_nginx ]] && xn=$(ratio "$v" "$base_nginx")
    [[ -n $base_gw && $s == wasmgate* ]] && xg=$(ratio "$v" "$base_gw")
    plugins=0
    case $s in
      wasmgate-basic-auth) plugins=1 ;;
      wasmgate-chain5) plugins=5 ;;
    esac
    ((plugins > 0)) && [[ -n $base_gw ]] && add=$(extra "$v" "$base_gw" "$plugins")
    [[ $s == nginx-auth && -n $base_nginx ]] && add="$(extra "$v" "$base_nginx" 1) (auth_basic)"
    echo "| $s | $(kilo "$v") | $xn | $xg | $add |"
  done
}

{
  echo "# Instructions per request (callgrind)"
  echo
  echo "User-space instructions of the proxy process per request (valgrind callgrind, Ir), over"
  echo "$requests keep-alive requests \`ab -k -c $CONCURRENCY\` after $WARMUP_REQUESTS warm-up requests;"
  echo "one nginx process (\`master_process off\`, 1 worker) or wasmgate \`--threads 1\`."
  echo "The kernel's work (syscalls, loopback TCP) and the upstream are not counted."
  echo "*Added per plugin*: basic-auth's extra over wasmgate; the chain's extra over wasmgate / 5;"
  echo "for nginx-auth, auth_basic's extra over nginx-proxy."
  echo
  table
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- command: \`$cmdline\`"
  echo "- machine: $(nproc) cores, $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -sr)"
  echo "- wasmgate: \`$WASMGATE_BIN\` ($profile), $("$WASMGATE_BIN" --version 2>&1 | head -n1), built $(date -u -r "$WASMGATE_BIN" '+%Y-%m-%d %H:%M UTC')"
  echo "- commit: $commit"
  echo "- nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
  echo "- valgrind: $(valgrind --version)"
  echo "- wall time: $((SECONDS - started_at)) s, $FAILURES failure(s)"
} >"$out/report.md"

echo
table
echo
log "report: $out/report.md (callgrind dumps: $out/callgrind.*.out.1)"
log "done in $((SECONDS - started_at)) s, $FAILURES failure(s)"
((FAILURES == 0))
