#!/usr/bin/env bash
# Benchmarks wasmgate against nginx on 127.0.0.1, interleaved in rounds, and writes the results
# table into docs/PERFORMANCE.md. See bench/README.md for the scenarios and how to read the table.
#
#   bench/run.sh [--smoke] [--duration 10s] [--rounds 3] [--workers 1,2] [options]
#
# Needs nginx, wrk, curl, htpasswd (apache2-utils), python3 and a wasmgate binary (WASMGATE_BIN,
# else target/release/wasmgate, else target/debug/wasmgate).
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

usage() {
  cat <<'EOF'
usage: bench/run.sh [options]

  --smoke                 CI check: 1 round, 1 s per scenario, 1 worker, no long swap run;
                          never edits docs
  --duration D            measured wrk run per scenario (default 10s; wrk syntax: 10s, 1m)
  --rounds R              interleaved rounds; the table shows the median (default 3)
  --workers LIST          nginx worker_processes = wasmgate --threads, e.g. 1,2 (default 1,2)
  --warmup D              unmeasured wrk run before each measurement (default 2s; 0 = none)
  --connections C         wrk connections (default 50)
  --wrk-threads T         wrk threads (default 2)
  --swaps N               writes in the long hot-swap run, every --swap-interval-ms (default 1000)
  --swap-interval-ms MS   period of the plugin-config rewrites (default 100)
  --scenarios LIST        only these load scenarios (default all):
                          direct,nginx-proxy,nginx-auth,wasmgate,wasmgate-pingora,
                          wasmgate-basic-auth,wasmgate-chain5,wasmgate-hotswap
  --no-extras             skip the long hot-swap run, the memory and the cold-start measurements
  --out DIR               where results.txt, meta.txt and report.md go (default bench/out/<time>)
  --doc FILE              results file to update (default docs/PERFORMANCE.md)
  --no-doc                do not update the doc (the report is still in --out)

Environment: WASMGATE_BIN (the binary), WASMGATE_COMMIT (the commit it was built from, when it is
not the work tree's HEAD), BENCH_PORT_BASE (3 consecutive loopback ports, default
28180), BENCH_RUST_LOG (the gateway's RUST_LOG, default warn).
EOF
}

ALL_SCENARIOS=(direct nginx-proxy nginx-auth wasmgate wasmgate-pingora wasmgate-basic-auth wasmgate-chain5 wasmgate-hotswap)
PLUGIN_SCENARIOS=" wasmgate-basic-auth wasmgate-chain5 wasmgate-hotswap "

smoke=0 extras=1 duration="" rounds="" workers="" warmup="" swaps="" write_doc="" out=""
connections=50 wrk_threads=2 swap_interval_ms=100 scenarios_opt="" doc="$REPO/docs/PERFORMANCE.md"
cmdline="bench/run.sh $*"
while (($#)); do
  case $1 in
    --smoke) smoke=1 ;;
    --duration) duration=${2:?--duration needs a value}; shift ;;
    --rounds) rounds=${2:?--rounds needs a value}; shift ;;
    --workers) workers=${2:?--workers needs a value}; shift ;;
    --warmup) warmup=${2:?--warmup needs a value}; shift ;;
    --connections) connections=${2:?--connections needs a value}; shift ;;
    --wrk-threads) wrk_threads=${2:?--wrk-threads needs a value}; shift ;;
    --swaps) swaps=${2:?--swaps needs a value}; shift ;;
    --swap-interval-ms) swap_interval_ms=${2:?--swap-interval-ms needs a value}; shift ;;
    --scenarios) scenarios_opt=${2:?--scenarios needs a value}; shift ;;
    --no-extras) extras=0 ;;
    --out) out=${2:?--out needs a value}; shift ;;
    --doc) doc=${2:?--doc needs a value}; shift ;;
    --no-doc) write_doc=0 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done
if ((smoke)); then
  : "${duration:=1s}" "${rounds:=1}" "${workers:=1}" "${warmup:=0}" "${swaps:=0}"
  write_doc=0
else
  : "${duration:=10s}" "${rounds:=3}" "${workers:=1,2}" "${warmup:=2s}" "${swaps:=1000}" "${write_doc:=1}"
fi

[[ $duration =~ ^[1-9][0-9]*[smh]?$ ]] || die "--duration: expected e.g. 10s, got $duration"
[[ $warmup =~ ^[0-9]+[smh]?$ ]] || die "--warmup: expected e.g. 2s or 0, got $warmup"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds: expected a positive integer"
[[ $workers =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--workers: expected e.g. 1,2"
[[ $connections =~ ^[1-9][0-9]*$ && $wrk_threads =~ ^[1-9][0-9]*$ ]] || die "bad --connections/--wrk-threads"
((wrk_threads <= connections)) || die "--wrk-threads must not exceed --connections"
[[ $swaps =~ ^[0-9]+$ && $swap_interval_ms =~ ^[1-9][0-9]*$ ]] || die "bad --swaps/--swap-interval-ms"
IFS=, read -ra WORKERS <<<"$workers"
if [[ -n $scenarios_opt ]]; then
  IFS=, read -ra SCENARIOS <<<"$scenarios_opt"
  for s in "${SCENARIOS[@]}"; do
    [[ " ${ALL_SCENARIOS[*]} " == *" $s "* ]] || die "unknown scenario $s"
  done
else
  SCENARIOS=("${ALL_SCENARIOS[@]}")
fi

# --- tools -------------------------------------------------------------------------------------
missing=()
for tool in nginx wrk curl htpasswd python3 pgrep; do
  command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || missing+=("$tool")
done
if ((${#missing[@]})); then
  log "missing ${missing[*]}: running scripts/setup (apt-get install nginx wrk apache2-utils curl)"
  "$REPO/scripts/setup" || die "install nginx wrk apache2-utils curl python3 procps, then retry"
fi
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
  */release/wasmgate) profile="release (Cargo.toml [profile.release])" ;;
  */debug/wasmgate) profile="debug (not representative)" ;;
  *) profile="unknown ($WASMGATE_BIN)" ;;
esac
# A module-cache flag, once the gateway has one: its name is read from --help rather than assumed.
CACHE_FLAG=$("$WASMGATE_BIN" run --help 2>/dev/null | grep -oE -- '--[a-z-]*cache[a-z-]*' | head -n1 || true)

# --- workspace, ports, credentials ---------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wasmgate-bench.XXXXXX")
# nginx workers drop root privileges (to nobody) and must read their htpasswd file here.
chmod 755 "$WORK"
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_base=${BENCH_PORT_BASE:-28180}
UP_PORT=$port_base PROXY_PORT=$((port_base + 1)) ADMIN_PORT=$((port_base + 2))
for p in "$UP_PORT" "$PROXY_PORT" "$ADMIN_PORT"; do
  port_busy "$p" && die "port $p on 127.0.0.1 is in use (set BENCH_PORT_BASE)"
done

suffix=""
((smoke)) && suffix=-smoke
[[ -n $out ]] || out="$BENCH_DIR/out/$(date -u +%Y%m%dT%H%M%SZ)$suffix"
mkdir -p "$out"
RESULTS=$out/results.txt META=$out/meta.txt
: >"$RESULTS"

BENCH_USER=bench BENCH_PASSWORD=bench-secret-7
CRED_B64=$(printf '%s:%s' "$BENCH_USER" "$BENCH_PASSWORD" | base64)
# {SHA} (one SHA-1 per request) is the cheapest scheme htpasswd writes; its default (apr1) runs
# 1,000 MD5 rounds per request and would make nginx look slower than it can be.
htpasswd -bcs "$WORK/htpasswd" "$BENCH_USER" "$BENCH_PASSWORD" 2>/dev/null
chmod 644 "$WORK/htpasswd"
# Every scenario sends exactly these headers, so requests are the same size everywhere; `x-test`
# selects the `headers` scenario of the hostcalls plugin (ignored by everything else).
REQ_HEADERS=(-H "Authorization: Basic $CRED_B64" -H "x-test: headers")
PATH_UNDER_TEST=/productpage
PLUGINS_DIR=$REPO/plugins/dist
mkdir -p "$WORK/home" "$WORK/cache"

# --- machine and versions ---------------------------------------------------------------------
{
  echo "date_utc=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "command=$cmdline"
  echo "nproc=$(nproc)"
  echo "cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "kernel=$(uname -sr)"
  echo "mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "rustc=$(rustc --version 2>/dev/null || echo n/a)"
  echo "nginx=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
  echo "wrk=$(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}')"
  echo "python=$(python3 --version 2>&1)"
  echo "wasmgate=$("$WASMGATE_BIN" --version 2>&1 | head -n1)"
  echo "wasmgate_bin=$WASMGATE_BIN"
  echo "wasmgate_built=$(date -u -r "$WASMGATE_BIN" '+%Y-%m-%d %H:%M UTC')"
  commit=$(describe_commit)
  echo "commit=$commit"
  echo "profile=$profile"
  echo "duration=$duration"
  echo "rounds=$rounds"
  echo "warmup=$warmup"
  echo "workers=$workers"
  echo "connections=$connections"
  echo "wrk_threads=$wrk_threads"
  echo "swap_interval_ms=$swap_interval_ms"
  echo "cache_flag=${CACHE_FLAG:-none}"
  echo "smoke=$smoke"
} >"$META"

# --- processes ----------------------------------------------------------------------------------
# start_nginx NAME TEMPLATE WORKERS PORT [AUTH]: an nginx in the foreground; pids in TARGET_PIDS.
start_nginx() {
  local name=$1 tpl=$2 n=$3 port=$4 auth=${5:-} dir i
  dir=$WORK/$name
  rm -rf "$dir" && mkdir -p "$dir"
  render "$BENCH_DIR/config/$tpl" "$dir/nginx.conf" DIR="$dir" WORKERS="$n" PORT="$port" \
    UPSTREAM="127.0.0.1:$UP_PORT" AUTH="$auth"
  start_bg "$dir/stdout.log" "$NGINX" -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf"
  TARGET_MAIN=$BG_PID
  if ! wait_port "$port" 10 "$BG_PID"; then
    tail -n 20 "$dir/error.log" >&2 || true
    return 1
  fi
  for ((i = 0; i < 500; i++)); do
    mapfile -t TARGET_PIDS < <(tree_pids "$TARGET_MAIN")
    ((${#TARGET_PIDS[@]} > n)) && return 0
    sleep 0.01
  done
  log "nginx $name: $n workers did not start"
  return 1
}

# start_wasmgate NAME THREADS TEMPLATE...: the gateway on PROXY_PORT with these config files.
start_wasmgate() {
  local name=$1 n=$2 dir tpl
  shift 2
  dir=$WORK/$name
  rm -rf "$dir" && mkdir -p "$dir/conf"
  for tpl in "$@"; do
    render "$BENCH_DIR/config/$tpl" "$dir/conf/$tpl" PORT="$PROXY_PORT" UPSTREAM="127.0.0.1:$UP_PORT" \
      PLUGINS="$PLUGINS_DIR" USER="$BENCH_USER" PASSWORD="$BENCH_PASSWORD" GEN=0
  done
  local -a cache_args=()
  [[ -n $CACHE_FLAG ]] && cache_args=("$CACHE_FLAG" "$WORK/cache")
  START_US=$(now_us)
  start_bg "$dir/wasmgate.log" env HOME="$WORK/home" XDG_CACHE_HOME="$WORK/cache" \
    RUST_LOG="${BENCH_RUST_LOG:-warn}" "$WASMGATE_BIN" run --config-dir "$dir/conf" \
    --listen-address 127.0.0.1 --admin-addr "127.0.0.1:$ADMIN_PORT" --threads "$n" \
    --access-log off --grace-period 0 --http1-engine "${HTTP1_ENGINE:-native}" "${cache_args[@]}"
  TARGET_MAIN=$BG_PID
  TARGET_PIDS=("$BG_PID")
  TARGET_LOG=$dir/wasmgate.log
  if ! wait_ready "http://127.0.0.1:$ADMIN_PORT/ready" 60 "$BG_PID" || ! wait_port "$PROXY_PORT" 5 "$BG_PID"; then
    log "wasmgate $name did not become ready; its log:"
    tail -n 20 "$TARGET_LOG" >&2 || true
    return 1
  fi
}

stop_target() {
  # wasmgate: SIGINT with --grace-period 0 exits at once; nginx: SIGTERM is its fast shutdown.
  stop_pid "$TARGET_MAIN" "${1:-TERM}"
}

# run_wrk DURATION OUTFILE URL [CONNECTIONS THREADS]: prints the BENCH line's fields, or fails.
run_wrk() {
  local d=$1 file=$2 url=$3 c=${4:-$connections} t=${5:-$wrk_threads}
  wrk -t"$t" -c"$c" -d"$d" --timeout 5s -s "$BENCH_DIR/wrk-report.lua" "${REQ_HEADERS[@]}" "$url" >"$file" 2>&1 || true
  local line
  line=$(grep -m1 '^BENCH ' "$file" || true)
  [[ -n $line ]] || { tail -n 5 "$file" >&2; return 1; }
  echo "${line#BENCH }"
}

# record FIELDS...: one results line (a reason is free text, last, on one line).
record() {
  local line="$*"
  printf '%s\n' "${line//$'\n'/ }" >>"$RESULTS"
}

# Do WasmPlugins run in this build? The Istio basic-auth scenario must deny a request without
# credentials; a build that only parses WasmPlugins lets it through. Measuring a plugin that does
# not run would be a lie, so plugin scenarios are skipped (not failed) in that case.
probe_chains() {
  CHAINS=0 CHAINS_REASON="" CHAINS_STATUS=skipped
  if ! start_wasmgate probe 1 gateway.yaml plugin-basic-auth.yaml; then
    CHAINS=error CHAINS_STATUS=failed CHAINS_REASON="wasmgate with the basic-auth WasmPlugin did not start"
    stop_target INT
    return
  fi
  local status
  status=$(http_probe "http://127.0.0.1:$PROXY_PORT$PATH_UNDER_TEST" -H "x-test: headers")
  case $status in
    401) CHAINS=1 ;;
    200) CHAINS_REASON="WasmPlugin chains not available in this build (basic-auth answered 200 without credentials)" ;;
    *) CHAINS=error CHAINS_STATUS=failed CHAINS_REASON="basic-auth WasmPlugin: expected 401 without credentials, got $status" ;;
  esac
  stop_target INT
}

# --- one measurement ------------------------------------------------------------------------------
FAILURES=0

# measure ROUND WORKERS SCENARIO [latency]: one wrk run against a fresh proxy. With `latency`, one
# connection instead of --connections: a closed loop that never queues, so percentiles are the
# time to serve one request (what a plugin adds), not the queueing of a saturated proxy.
measure() {
  local round=$1 n=$2 scenario=$3 url="http://127.0.0.1:$PROXY_PORT$PATH_UNDER_TEST"
  local kind=load c=$connections t=$wrk_threads
  [[ ${4:-} == latency ]] && kind=latency c=1 t=1
  local head="kind=$kind round=$round workers=$n scenario=$scenario"
  local started=1 swap_pid="" stats t0 t1 rss swapline=""

  if [[ $PLUGIN_SCENARIOS == *" $scenario "* && $CHAINS != 1 ]]; then
    record "$head status=$CHAINS_STATUS reason=$CHAINS_REASON"
    [[ $CHAINS == error ]] && FAILURES=$((FAILURES + 1))
    return 0
  fi
  case $scenario in
    direct)
      url="http://127.0.0.1:$UP_PORT$PATH_UNDER_TEST"
      TARGET_PIDS=("${UPSTREAM_PIDS[@]}") TARGET_MAIN=""
      ;;
    nginx-proxy) start_nginx proxy nginx-proxy.conf "$n" "$PROXY_PORT" || started=0 ;;
    nginx-auth)
      start_nginx proxy nginx-proxy.conf "$n" "$PROXY_PORT" \
        "auth_basic \"bench\"; auth_basic_user_file $WORK/htpasswd;" || started=0
      ;;
    wasmgate) start_wasmgate gw "$n" gateway.yaml || started=0 ;;
    wasmgate-pingora) HTTP1_ENGINE=pingora start_wasmgate gw "$n" gateway.yaml || started=0 ;;
    wasmgate-basic-auth) start_wasmgate gw "$n" gateway.yaml plugin-basic-auth.yaml || started=0 ;;
    wasmgate-chain5) start_wasmgate gw "$n" gateway.yaml plugin-chain.yaml || started=0 ;;
    wasmgate-hotswap) start_wasmgate gw "$n" gateway.yaml plugin-hotswap.yaml || started=0 ;;
  esac
  local stop_sig=TERM
  [[ $scenario == wasmgate* ]] && stop_sig=INT
  if ((!started)); then
    record "$head status=failed reason=did not start"
    FAILURES=$((FAILURES + 1))
    [[ -n $TARGET_MAIN ]] && stop_target "$stop_sig"
    return 0
  fi
  if ! verify "$scenario" "$url"; then
    log "$scenario (workers=$n): $CHECK_REASON"
    record "$head status=failed reason=$CHECK_REASON"
    FAILURES=$((FAILURES + 1))
    [[ -n $TARGET_MAIN ]] && stop_target "$stop_sig"
    return 0
  fi

  [[ $warmup == 0 || $warmup == 0s ]] || run_wrk "$warmup" "$WORK/warmup.out" "$url" "$c" "$t" >/dev/null || true
  if [[ $scenario == wasmgate-hotswap ]]; then
    render "$BENCH_DIR/config/plugin-hotswap.yaml" "$WORK/hotswap.tpl" PLUGINS="$PLUGINS_DIR" GEN=@GEN@
    python3 "$BENCH_DIR/hotswap.py" --template "$WORK/hotswap.tpl" \
      --target "$WORK/gw/conf/plugin-hotswap.yaml" --port "$PROXY_PORT" --path "$PATH_UNDER_TEST" \
      --header "Authorization: Basic $CRED_B64" --header "x-test: headers" \
      --admin "127.0.0.1:$ADMIN_PORT" --pid "$TARGET_MAIN" --interval-ms "$swap_interval_ms" \
      --duration "$(seconds_of "$duration")" >"$WORK/hotswap.out" 2>&1 &
    swap_pid=$!
    BENCH_PIDS+=("$swap_pid")
  fi
  t0=$(cpu_ticks "${TARGET_PIDS[@]}")
  if stats=$(run_wrk "$duration" "$WORK/wrk.out" "$url" "$c" "$t"); then
    t1=$(cpu_ticks "${TARGET_PIDS[@]}")
    rss=$(rss_kib "${TARGET_PIDS[@]}")
    if [[ -n $swap_pid ]]; then
      wait "$swap_pid" || true
      swapline=$(grep -m1 '^SWAPS ' "$WORK/hotswap.out" || true)
      [[ -n $swapline ]] || { tail -n 5 "$WORK/hotswap.out" >&2; swapline="SWAPS swaps=-1"; }
      swapline=" ${swapline#SWAPS }"
    fi
    record "$head status=ok cpu_ticks=$((t1 - t0)) clk_tck=$CLK_TCK rss_kib=$rss $stats$swapline"
    log "$scenario workers=$n round=$round${4:+ ($4)}: $(sed -E 's/.*requests=([0-9]+) duration_us=([0-9]+).*p99_us=([0-9]+).*/\1 requests in \2 us, p99 \3 us/' <<<"$stats")"
  else
    record "$head status=failed reason=wrk produced no result"
    FAILURES=$((FAILURES + 1))
  fi
  [[ -n $swap_pid ]] && stop_pid "$swap_pid" TERM
  [[ -n $TARGET_MAIN ]] && stop_target "$stop_sig"
  return 0
}

# --- extras: long hot-swap run, memory per plugin, cold start ---------------------------------------
SWAP_WARMUP=65s
swap_run() {
  local n=$1 head="kind=swaps workers=$1" secs wrk_pid line swapline
  if [[ $CHAINS != 1 ]]; then record "$head status=$CHAINS_STATUS reason=$CHAINS_REASON"; return 0; fi
  if ! start_wasmgate gw "$n" gateway.yaml plugin-hotswap.yaml || ! verify wasmgate-hotswap "http://127.0.0.1:$PROXY_PORT$PATH_UNDER_TEST"; then
    record "$head status=failed reason=${CHECK_REASON:-did not start}"
    FAILURES=$((FAILURES + 1))
    stop_target INT
    return 0
  fi
  local url="http://127.0.0.1:$PROXY_PORT$PATH_UNDER_TEST"
  # Load before the first RSS sample for longer than the gateway's 60 s downstream keep-alive:
  # Pingora keeps each worker's pending keep-alive timers in 10 ms slots up to 60 s ahead, a map
  # that grows for the first minute of load whatever the swaps do (docs/PERFORMANCE.md).
  run_wrk "$SWAP_WARMUP" "$WORK/warmup.out" "$url" >/dev/null || true
  secs=$(((swaps * swap_interval_ms + 999) / 1000 + 7))   # the writes, the settle wait, RSS pause
  log "hot swap: $swaps writes every $swap_interval_ms ms under load (workers=$n, ~${secs}s)"
  run_wrk "${secs}s" "$WORK/swaps-wrk.out" "$url" >"$WORK/swaps-wrk.line" &
  wrk_pid=$!
  BENCH_PIDS+=("$wrk_pid")
  render "$BENCH_DIR/config/plugin-hotswap.yaml" "$WORK/hotswap.tpl" PLUGINS="$PLUGINS_DIR" GEN=@GEN@
  python3 "$BENCH_DIR/hotswap.py" --template "$WORK/hotswap.tpl" \
    --target "$WORK/gw/conf/plugin-hotswap.yaml" --port "$PROXY_PORT" --path "$PATH_UNDER_TEST" \
    --header "Authorization: Basic $CRED_B64" --header "x-test: headers" \
    --admin "127.0.0.1:$ADMIN_PORT" --pid "$TARGET_MAIN" --interval-ms "$swap_interval_ms" \
    --swaps "$swaps" >"$WORK/swaps.out" 2>&1 || true
  wait "$wrk_pid" || true
  line=$(<"$WORK/swaps-wrk.line")
  swapline=$(grep -m1 '^SWAPS ' "$WORK/swaps.out" || true)
  if [[ -n $line && -n $swapline ]]; then
    record "$head status=ok $line ${swapline#SWAPS }"
  else
    tail -n 5 "$WORK/swaps.out" "$WORK/swaps-wrk.out" >&2 || true
    record "$head status=failed reason=no result from wrk or hotswap.py"
    FAILURES=$((FAILURES + 1))
  fi
  stop_target INT
}

memory_run() {
  local n=$1 plugins=$2 head="kind=memory workers=$1 plugins=$2" idle warm
  local -a files=(bookinfo.yaml)
  case $plugins in
    1) files+=(plugin-basic-auth.yaml) ;;
    5) files+=(plugin-chain.yaml) ;;
  esac
  if ((plugins > 0)) && [[ $CHAINS != 1 ]]; then record "$head status=$CHAINS_STATUS reason=$CHAINS_REASON"; return 0; fi
  if ! start_wasmgate mem "$n" "${files[@]}"; then
    record "$head status=failed reason=did not start"
    FAILURES=$((FAILURES + 1))
    return 0
  fi
  idle=$(rss_kib "$TARGET_MAIN")
  local url="http://127.0.0.1:$PROXY_PORT$PATH_UNDER_TEST"
  if ((plugins > 0)) && ! expect_401_without_credentials "$url"; then
    record "$head status=failed reason=$CHECK_REASON"
    FAILURES=$((FAILURES + 1))
    stop_target INT
    return 0
  fi
  # Traffic on every worker thread, so each one has instantiated its plugin VMs.
  run_wrk 1s "$WORK/mem-wrk.out" "$url" "$((4 * n))" "$n" >/dev/null || true
  sleep 0.2
  warm=$(rss_kib "$TARGET_MAIN")
  record "$head status=ok rss_idle_kib=$idle rss_warm_kib=$warm"
  stop_target INT
}

coldstart_run() {
  local plugins=$1 runs=$2 n=$3 head="kind=coldstart plugins=$1 workers=$3" i t0 t1 first="" list=""
  local -a files=(bookinfo.yaml)
  ((plugins == 5)) && files+=(plugin-chain.yaml)
  if ((plugins > 0)) && [[ $CHAINS != 1 ]]; then record "$head status=$CHAINS_STATUS reason=$CHAINS_REASON"; return 0; fi
  # A fresh module cache: the first start fills it (compiles), the next ones are the warm starts.
  rm -rf "${WORK:?}/cache" "${WORK:?}/home" && mkdir -p "$WORK/cache" "$WORK/home"
  for ((i = 0; i <= runs; i++)); do
    if ! start_wasmgate cold "$n" "${files[@]}"; then
      record "$head status=failed reason=did not start"
      FAILURES=$((FAILURES + 1))
      return 0
    fi
    t1=$(now_us) t0=$START_US
    stop_target INT
    if ((i == 0)); then first=$(((t1 - t0) / 1000)); else list+="${list:+,}$(((t1 - t0) / 1000))"; fi
  done
  record "$head status=ok first_ms=$first warm_ms=$list"
}

# --- the run --------------------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
started_at=$SECONDS
log "wasmgate: $WASMGATE_BIN ($profile)"
log "results: $out"

start_nginx upstream nginx-upstream.conf 1 "$UP_PORT" || die "the upstream nginx did not start"
UPSTREAM_PIDS=("${TARGET_PIDS[@]}")
UPSTREAM_MAIN=$TARGET_MAIN
expect_ok "http://127.0.0.1:$UP_PORT$PATH_UNDER_TEST" || die "upstream: $CHECK_REASON"

probe_chains
if [[ $CHAINS == 1 ]]; then chains_text=available; else chains_text="plugin scenarios $CHAINS_STATUS: $CHAINS_REASON"; fi
log "WasmPlugin chains: $chains_text"
echo "chains=$chains_text" >>"$META"

for ((round = 1; round <= rounds; round++)); do
  for n in "${WORKERS[@]}"; do
    for scenario in "${SCENARIOS[@]}"; do
      measure "$round" "$n" "$scenario"
    done
  done
done

if ((extras)); then
  max_n=${WORKERS[0]}
  for n in "${WORKERS[@]}"; do ((n > max_n)) && max_n=$n; done
  if [[ " ${SCENARIOS[*]} " == *" wasmgate-hotswap "* ]] && ((swaps > 0)); then
    swap_run "$max_n"
  fi
  # Latency at light load: what a request costs in time when nothing queues (1 worker).
  for scenario in nginx-proxy wasmgate wasmgate-basic-auth wasmgate-chain5; do
    [[ " ${SCENARIOS[*]} " == *" $scenario "* ]] && measure 1 1 "$scenario" latency
  done
  for n in "${WORKERS[@]}"; do
    for plugins in 0 1 5; do memory_run "$n" "$plugins"; done
  done
  runs=5
  ((smoke)) && runs=1
  for plugins in 0 5; do coldstart_run "$plugins" "$runs" "$max_n"; done
fi

stop_pid "$UPSTREAM_MAIN" TERM
{
  echo "wall_s=$((SECONDS - started_at))"
  echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"
} >>"$META"

report_args=(--results "$RESULTS" --meta "$META" --out "$out/report.md")
((write_doc)) && report_args+=(--doc "$doc")
python3 "$BENCH_DIR/report.py" "${report_args[@]}"
log "report: $out/report.md$( ((write_doc)) && echo " and $doc")"
log "done in $((SECONDS - started_at)) s, $FAILURES failure(s)"
((FAILURES == 0))
