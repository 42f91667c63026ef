# shellcheck shell=bash
# Helpers of bench/run.sh: templates, processes, /proc accounting, HTTP checks.
# Sourced, not run. Every process started here is recorded in BENCH_PIDS and stopped by bench_cleanup.

BENCH_PIDS=()

log() { printf '%s bench: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# render TEMPLATE OUT KEY=VALUE...: copy TEMPLATE to OUT with every {{KEY}} replaced by VALUE.
render() {
  local tpl=$1 out=$2 kv text
  shift 2
  text=$(<"$tpl")
  for kv in "$@"; do
    text=${text//"{{${kv%%=*}}}"/"${kv#*=}"}
  done
  if [[ $text == *'{{'*'}}'* ]]; then
    die "template $tpl: placeholder left unfilled in $out"
  fi
  printf '%s\n' "$text" >"$out"
}

# port_busy PORT: true if something accepts connections on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port PORT TIMEOUT_S PID: wait until PORT accepts, failing early if PID exits.
wait_port() {
  local port=$1 deadline=$((SECONDS + $2)) pid=$3
  until port_busy "$port"; do
    kill -0 "$pid" 2>/dev/null || return 1
    ((SECONDS < deadline)) || return 1
    sleep 0.01
  done
}

# start_bg LOG CMD...: start CMD in the background, output to LOG; its pid is in BG_PID.
start_bg() {
  local logfile=$1
  shift
  "$@" >"$logfile" 2>&1 &
  BG_PID=$!
  BENCH_PIDS+=("$BG_PID")
}

# stop_pid PID [SIGNAL]: signal PID, wait up to 5 s for it to exit, then SIGKILL; reap it.
stop_pid() {
  local pid=$1 sig=${2:-TERM} i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -s "$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < 500; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.01
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid did not exit after SIG$sig; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

bench_cleanup() {
  local pid
  for pid in "${BENCH_PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null && stop_pid "$pid" TERM
  done
  BENCH_PIDS=()
  if [[ -n ${WORK:-} && -d $WORK ]]; then rm -rf -- "$WORK"; fi
}

# tree_pids PID: PID and its direct children (an nginx master and its workers).
tree_pids() {
  printf '%s\n' "$1"
  pgrep -P "$1" || true
}

# cpu_ticks PID...: utime + stime of these processes (each covers all its threads), in clock ticks.
cpu_ticks() {
  local pid line rest total=0
  local -a f
  for pid in "$@"; do
    read -r line <"/proc/$pid/stat" || continue
    rest=${line##*) }          # the command name may contain spaces and parentheses
    read -ra f <<<"$rest"      # f[0] is field 3 (state): utime is field 14, stime field 15
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}

# rss_kib PID...: sum of VmRSS of these processes, in KiB.
rss_kib() {
  local pid key value total=0
  for pid in "$@"; do
    while read -r key value _; do
      if [[ $key == VmRSS: ]]; then total=$((total + value)); fi
    done <"/proc/$pid/status"
  done
  echo "$total"
}

# http_probe URL [CURL_ARGS...]: prints "STATUS" and leaves headers in $WORK/probe.headers and
# the body in $WORK/probe.body. STATUS is 000 when no HTTP answer came.
http_probe() {
  local url=$1
  shift
  curl -s --max-time 5 -o "$WORK/probe.body" -D "$WORK/probe.headers" -w '%{http_code}' "$@" "$url" || true
}

# probe_header NAME: the value of response header NAME of the last http_probe (first one), or "".
probe_header() {
  local name=$1 line
  while IFS= read -r line; do
    line=${line%$'\r'}
    if [[ ${line,,} == "${name,,}:"* ]]; then
      line=${line#*:}
      echo "${line# }"
      return 0
    fi
  done <"$WORK/probe.headers"
  echo ""
}

# wait_ready URL TIMEOUT_S PID: poll URL until it answers 200, failing early if PID exits.
wait_ready() {
  local url=$1 deadline=$((SECONDS + $2)) pid=$3
  until [[ $(curl -s --max-time 1 -o /dev/null -w '%{http_code}' "$url" || true) == 200 ]]; do
    kill -0 "$pid" 2>/dev/null || return 1
    ((SECONDS < deadline)) || return 1
    sleep 0.005
  done
}

# seconds_of DURATION: wrk-style duration (10s, 2m, 1h, or bare seconds) as whole seconds.
seconds_of() {
  local d=$1
  case $d in
    *s) echo "${d%s}" ;;
    *m) echo $((${d%m} * 60)) ;;
    *h) echo $((${d%h} * 3600)) ;;
    *) echo "$d" ;;
  esac
}

# now_us: wall clock in microseconds, without a fork.
now_us() {
  local t=$EPOCHREALTIME
  echo "${t%.*}${t#*.}"
}
