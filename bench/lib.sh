# shellcheck shell=bash
# shellcheck disable=SC2034 # CHECK_REASON is read by the scripts that source this file
# Helpers of bench/run.sh and bench/instructions.sh: templates, processes, /proc accounting, HTTP checks.
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

# poll_every INTERVAL_S TIMEOUT_S PID CMD...: run CMD every INTERVAL_S until it succeeds, failing
# early if PID exits or TIMEOUT_S passes.
poll_every() {
  local interval=$1 deadline=$((SECONDS + $2)) pid=$3
  shift 3
  until "$@"; do
    kill -0 "$pid" 2>/dev/null || return 1
    ((SECONDS < deadline)) || return 1
    sleep "$interval"
  done
}

# wait_port PORT TIMEOUT_S PID: wait until PORT accepts, failing early if PID exits.
wait_port() { poll_every 0.01 "$2" "$3" port_busy "$1"; }

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

# answers_200 URL [MAX_TIME_S]: URL answers 200.
answers_200() {
  [[ $(curl -s --max-time "${2:-1}" -o /dev/null -w '%{http_code}' "$1" || true) == 200 ]]
}

# wait_ready URL TIMEOUT_S PID: poll URL until it answers 200, failing early if PID exits.
wait_ready() { poll_every 0.005 "$2" "$3" answers_200 "$1"; }

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

# --- checks: each scenario does what it claims ---------------------------------------------------
CHECK_REASON=""
expect_ok() { # URL: a request with the benchmark's headers answers 200 "ok"
  local status body
  status=$(http_probe "$1" "${REQ_HEADERS[@]}")
  body=$(<"$WORK/probe.body")
  [[ $status == 200 && $body == ok ]] && return 0
  body=${body%%$'\n'*}
  CHECK_REASON="expected 200 ok with credentials, got $status ${body:0:60}"
  return 1
}

expect_401_without_credentials() {
  local status
  status=$(http_probe "$1" -H "x-test: headers")
  [[ $status == 401 ]] && return 0
  CHECK_REASON="expected 401 without credentials, got $status"
  return 1
}

# verify SCENARIO URL: the scenario does what it claims (auth enforced, plugins' headers present).
verify() {
  local scenario=$1 url=$2 h
  case $scenario in
    nginx-auth | wasmgate-basic-auth) expect_401_without_credentials "$url" && expect_ok "$url" ;;
    wasmgate-chain5)
      expect_401_without_credentials "$url" && expect_ok "$url" || return 1
      for h in x-rate-limit x-bench x-hostcalls x-req-header-count; do
        if [[ -z $(probe_header "$h") ]]; then
          CHECK_REASON="plugin chain incomplete: response lacks $h"
          return 1
        fi
      done
      ;;
    wasmgate-hotswap)
      expect_ok "$url" || return 1
      [[ $(probe_header x-bench-gen) == 0 ]] && return 0
      CHECK_REASON="header-append did not add x-bench-gen: 0"
      return 1
      ;;
    *) expect_ok "$url" ;;
  esac
}

# describe_commit: the commit $WASMGATE_BIN is taken to be built from, with what makes that
# uncertain (uncommitted changes, sources newer than the binary). The binary is not rebuilt here.
describe_commit() {
  local commit src src_time
  commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
  src=(gateway runtime conf fetcher Cargo.toml Cargo.lock)
  if [[ -n ${WASMGATE_COMMIT:-} ]]; then
    commit="$WASMGATE_COMMIT (given by WASMGATE_COMMIT)"
  elif [[ -n $(git -C "$REPO" status --porcelain -- "${src[@]}" 2>/dev/null) ]]; then
    commit="$commit (+ uncommitted changes)"
  fi
  src_time=$(git -C "$REPO" log -1 --format=%ct -- "${src[@]}" 2>/dev/null || echo 0)
  if [[ -z ${WASMGATE_COMMIT:-} ]] && ((${src_time:-0} > $(date -r "$WASMGATE_BIN" +%s))); then
    commit="$commit (the binary predates the last source commit, $(git -C "$REPO" log -1 --format=%h -- "${src[@]}"))"
  fi
  echo "$commit"
}
