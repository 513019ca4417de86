#!/usr/bin/env bash
# Load benchmark: direct vs tinyproxy vs picoclaw-traffic-guardian (tunnel, inspecting HTTP, MITM), on
# 127.0.0.1 only, one command. See bench/README.md for what each figure means.
#
#   bash bench/run.sh
#
# Environment (all optional):
#   BENCH_SECONDS=10        measurement time per case and figure (plus 0.5 s warm-up each)
#   BENCH_HOLD_SECONDS=3    how long the idle connections are held for the RSS reading
#   BENCH_HOLD_CONNS=200    idle connections held
#   BENCH_CASES="..."       subset of: direct-http direct-https tinyproxy-http tinyproxy-connect
#                           guardian-http guardian-connect guardian-mitm (default: all)
#   BENCH_NO_BUILD=1        use the binaries already built (no cargo)
#   GUARDIAN_BIN=path       guardian binary to run (default: target/release/picoclaw-traffic-guardian)
#   BENCH_RESULTS=dir       where to write the results (default: bench/results/<date>-<hostname>)
#   BENCH_LOAD_CORE=0 BENCH_SERVE_CORE=1   taskset cores: load generator / upstream + proxy
#   BENCH_NOTE="..."        a line for the lab notes (e.g. which guardian build this is)
#   BENCH_RT=1              as root, run everything measured SCHED_RR (chrt -r 10), ahead of other work:
#                           without it, other processes' time slices decide the figures (see README);
#                           the kernel's RT throttling still leaves them 5% for the few minutes of the run
#   BENCH_RT=0 BENCH_NICE=-10   no real-time: ordinary scheduling at this niceness (root only)
set -euo pipefail

S=${BENCH_SECONDS:-10}
HOLD_SECONDS=${BENCH_HOLD_SECONDS:-3}
HOLD_CONNS=${BENCH_HOLD_CONNS:-200}
ALL_CASES="direct-http direct-https tinyproxy-http tinyproxy-connect guardian-http guardian-connect guardian-mitm"
CASES=${BENCH_CASES:-$ALL_CASES}
LOAD_CORE=${BENCH_LOAD_CORE:-0}
SERVE_CORE=${BENCH_SERVE_CORE:-1}
NICE=${BENCH_NICE:--10}
RT=${BENCH_RT:-1}
[[ $RT == 0 ]] && RT=""
if [[ $(id -u) != 0 ]]; then NICE=0 RT=""; fi
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$REPO/bench
LOADGEN=$BENCH/loadgen/target/release/bench-loadgen
GUARDIAN_BIN_GIVEN=${GUARDIAN_BIN:+1}
GUARDIAN_BIN=${GUARDIAN_BIN:-$REPO/target/release/picoclaw-traffic-guardian}
STARTED=$(date -u +%s)
COMMAND_LINE="BENCH_SECONDS=$S BENCH_HOLD_SECONDS=$HOLD_SECONDS BENCH_HOLD_CONNS=$HOLD_CONNS BENCH_RT=${RT:-0} BENCH_NICE=$NICE BENCH_CASES=\"$CASES\""
[[ -n "$GUARDIAN_BIN_GIVEN" ]] && COMMAND_LINE+=" GUARDIAN_BIN=$GUARDIAN_BIN"
[[ -n "${BENCH_NO_BUILD:-}" ]] && COMMAND_LINE+=" BENCH_NO_BUILD=$BENCH_NO_BUILD"
COMMAND_LINE+=" bash bench/run.sh"

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ----------------------------------------------------------------------------------------------------------
# Cleanup: every process we start is recorded here and killed on exit.
PIDS=()
TMP=""
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [[ -n "$TMP" && -d "$TMP" ]]; then rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ----------------------------------------------------------------------------------------------------------
# Dependencies from Debian: nginx (with the njs module for the POST digest), wrk, tinyproxy, openssl, taskset.
NJS_MODULE=/usr/lib/nginx/modules/ngx_http_js_module.so
need_pkgs=()
command -v nginx >/dev/null || need_pkgs+=(nginx-light)
[[ -f $NJS_MODULE ]] || need_pkgs+=(libnginx-mod-http-js)
command -v wrk >/dev/null || need_pkgs+=(wrk)
command -v tinyproxy >/dev/null || need_pkgs+=(tinyproxy)
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v taskset >/dev/null || need_pkgs+=(util-linux)
if ((${#need_pkgs[@]})); then
  log "installing ${need_pkgs[*]}"
  SUDO=""
  [[ $(id -u) == 0 ]] || SUDO=sudo
  # Debian's postinst would start nginx and tinyproxy as services listening on all addresses; forbid
  # service starts for the duration of the install unless a policy is already in place.
  made_policy=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >&2
  if [[ -n "$made_policy" ]]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi

# ----------------------------------------------------------------------------------------------------------
# Builds (release). A failed guardian build only skips the guardian cases.
GUARDIAN_BUILD_ERR=""
if [[ -z "${BENCH_NO_BUILD:-}" ]]; then
  log "building the load generator (release)"
  cargo build --release --locked --quiet --manifest-path "$BENCH/loadgen/Cargo.toml" >&2 \
    || die "load generator build failed"
  if [[ -z "$GUARDIAN_BIN_GIVEN" ]]; then
    log "building the guardian (release)"
    if ! (cd "$REPO" && cargo build --release --quiet) >"${TMPDIR:-/tmp}/bench-guardian-build.$$.log" 2>&1; then
      GUARDIAN_BUILD_ERR="guardian build failed: $(tail -3 "${TMPDIR:-/tmp}/bench-guardian-build.$$.log" | tr '\n,' '  ')"
    fi
    rm -f "${TMPDIR:-/tmp}/bench-guardian-build.$$.log"
  fi
fi
[[ -x $LOADGEN ]] || die "no load generator at $LOADGEN (build it or unset BENCH_NO_BUILD)"

# ----------------------------------------------------------------------------------------------------------
# Results directory and lab notes.
RESULTS=${BENCH_RESULTS:-$BENCH/results/$(date -u +%Y-%m-%d)-$(hostname -s 2>/dev/null || hostname)}
if [[ -z "${BENCH_RESULTS:-}" && -e $RESULTS ]]; then RESULTS=$RESULTS-$(date -u +%H%M%S); fi
mkdir -p "$RESULTS"
: >"$RESULTS/errors.log"
echo "case,reason" >"$RESULTS/skipped.csv"
"$LOADGEN" header >"$RESULTS/raw.csv"
"$LOADGEN" header >"$RESULTS/hold.csv"
echo "case,figure,concurrency,seconds,requests,req_per_s,p50_ms,p99_ms,non2xx,socket_errors" >"$RESULTS/wrk.csv"
echo "proxy,idle_kib,peak_load_kib,held_conns,held_ok,held_rss_kib,peak_kib" >"$RESULTS/rss.csv"
echo "case,figure,proxy_cpu_s,upstream_cpu_s" >"$RESULTS/cpu.csv"
{
  echo "$COMMAND_LINE"
  if [[ -n "${BENCH_NOTE:-}" ]]; then echo "BENCH_NOTE=$BENCH_NOTE"; fi
} >"$RESULTS/command.txt"
{
  echo "date_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(hostname)"
  echo "kernel: $(uname -srm)"
  echo "cpu: $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
  echo "cores: $(nproc)"
  echo "memory: $(awk '/^MemTotal/{print $2" kB"}' /proc/meminfo)"
  echo "pinning: load generator on core $LOAD_CORE; upstream (nginx) and proxy on core $SERVE_CORE; ${RT:+SCHED_RR priority 10}${RT:-niceness $NICE}"
  echo "uptime_before: $(uptime)"
  echo "busiest_processes_before (top, one sample):"
  top -bn1 -w 100 2>/dev/null | sed -n '8,12p' | awk '{print "  " $9 "% " $12}' || true
  echo "repo_commit: $(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown) ($(git -C "$REPO" rev-parse --abbrev-ref HEAD 2>/dev/null || echo ?))"
} >"$RESULTS/machine.txt"
{
  echo "nginx: $(nginx -v 2>&1)"
  echo "njs: $(dpkg-query -W -f='${Version}' libnginx-mod-http-js 2>/dev/null || echo unknown)"
  echo "tinyproxy: $(tinyproxy -v 2>&1 | head -1)"
  echo "wrk: $(wrk -v 2>&1 | head -1 || true)"
  echo "openssl: $(openssl version)"
  echo "rustc: $(rustc -V 2>/dev/null || echo none)"
  echo "cargo: $(cargo -V 2>/dev/null || echo none)"
  echo "guardian: $( ([[ -x $GUARDIAN_BIN ]] && "$GUARDIAN_BIN" --version 2>&1) || echo "not built")"
} >"$RESULTS/versions.txt"
log "results in $RESULTS"

if (($(nproc) < 2)); then
  log "WARNING: fewer than 2 cores; load generator and servers share core 0"
  LOAD_CORE=0
  SERVE_CORE=0
fi
ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true
# Everything measured runs through these: pinned, and (as root) ahead of other work on the machine.
PRIO=(nice -n "$NICE")
[[ -n $RT ]] && PRIO=(chrt -r 10)
ON_LOAD=("${PRIO[@]}" taskset -c "$LOAD_CORE")
ON_SERVE=("${PRIO[@]}" taskset -c "$SERVE_CORE")

TMP=$(mktemp -d "${TMPDIR:-/tmp}/picoclaw-bench.XXXXXX")
chmod 755 "$TMP" # nginx workers may run as nobody

# ----------------------------------------------------------------------------------------------------------
# Ports: random high ports on 127.0.0.1, checked free (nothing answers a connect, not listed by ss).
USED_PORTS=" "
pick_port() { # pick_port VAR
  local p
  for _ in $(seq 1 500); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    [[ $USED_PORTS == *" $p "* ]] && continue
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue; fi
    if command -v ss >/dev/null && [[ -n $(ss -Htan "( sport = :$p )" 2>/dev/null) ]]; then continue; fi
    USED_PORTS+="$p "
    printf -v "$1" '%s' "$p"
    return 0
  done
  die "no free port found"
}
wait_port() { # wait_port PORT PID NAME
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# ----------------------------------------------------------------------------------------------------------
# Throwaway test CA and server certificate (127.0.0.1 and localhost).
log "making the test CA and server certificate"
(
  cd "$TMP"
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -days 2 \
    -subj "/CN=picoclaw bench test CA" -keyout ca.key -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -subj "/CN=127.0.0.1" -keyout server.key -out server.csr 2>/dev/null
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile server.ext -out server.pem 2>/dev/null
) || die "openssl failed"
TEST_CA=$TMP/ca.pem

# ----------------------------------------------------------------------------------------------------------
# Upstream: nginx on 127.0.0.1, HTTP and HTTPS, keep-alive. /1k and /16m are deterministic JSON files;
# /post reads the body (njs, in memory) and answers its SHA-256 in hex, which the load generator checks.
WWW=$TMP/www
mkdir -p "$WWW" "$TMP/nginx"
"$LOADGEN" gen-json --bytes 1024 --out "$WWW/1k"
"$LOADGEN" gen-json --bytes $((16 * 1024 * 1024)) --out "$WWW/16m"
chmod 755 "$WWW" && chmod 644 "$WWW"/*
pick_port HTTP_PORT
pick_port HTTPS_PORT
cat >"$TMP/digest.js" <<'EOF'
function sha256(r) {
    var body = r.requestBuffer;
    if (body === undefined) {
        r.return(500, "body not in memory\n");
        return;
    }
    r.return(200, require('crypto').createHash('sha256').update(body).digest('hex'));
}
export default {sha256};
EOF
cat >"$TMP/nginx.conf" <<EOF
load_module $NJS_MODULE;
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 10000000;
    default_type application/json;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    js_import digest from $TMP/digest.js;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:bench:1m;
    server {
        listen 127.0.0.1:$HTTP_PORT;
        listen 127.0.0.1:$HTTPS_PORT ssl;
        ssl_certificate $TMP/server.pem;
        ssl_certificate_key $TMP/server.key;
        root $WWW;
        location = /1k { }
        location = /16m { }
        location = /post {
            client_max_body_size 1m;
            client_body_buffer_size 1m;
            js_content digest.sha256;
        }
    }
}
EOF
log "starting nginx on 127.0.0.1:$HTTP_PORT (http) and 127.0.0.1:$HTTPS_PORT (https), core $SERVE_CORE"
"${ON_SERVE[@]}" nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx.conf" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
if ! wait_port "$HTTP_PORT" "$NGINX_PID" || ! wait_port "$HTTPS_PORT" "$NGINX_PID"; then
  die "nginx did not start: $(tail -5 "$TMP/nginx/error.log" 2>/dev/null)"
fi
NGINX_WORKERS=$(ps -o pid= --ppid "$NGINX_PID" 2>/dev/null | tr -d ' ' | tr '\n' ' ')

# ----------------------------------------------------------------------------------------------------------
# Proxies.
declare -A PROXY_PORT=() PROXY_PID=() SKIP=()
skip() { # skip CASE REASON
  local reason=${2//,/;}
  reason=${reason//$'\n'/ }
  SKIP[$1]=$reason
  echo "$1,$reason" >>"$RESULTS/skipped.csv"
  log "SKIPPED $1: $reason"
}
wants() { [[ " $CASES " == *" $1 "* ]]; }

if wants tinyproxy-http || wants tinyproxy-connect; then
  pick_port TP_PORT
  cat >"$TMP/tinyproxy.conf" <<EOF
Port $TP_PORT
Listen 127.0.0.1
Bind 127.0.0.1
Timeout 600
MaxClients 1024
Allow 127.0.0.1
ConnectPort $HTTPS_PORT
DisableViaHeader Yes
LogFile "$TMP/tinyproxy.log"
LogLevel Warning
EOF
  log "starting tinyproxy on 127.0.0.1:$TP_PORT, core $SERVE_CORE"
  "${ON_SERVE[@]}" tinyproxy -d -c "$TMP/tinyproxy.conf" >"$TMP/tinyproxy.out" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  if wait_port "$TP_PORT" "$pid"; then
    PROXY_PORT[tinyproxy]=$TP_PORT
    PROXY_PID[tinyproxy]=$pid
  else
    skip tinyproxy "tinyproxy start failed: $(tail -3 "$TMP/tinyproxy.out" "$TMP/tinyproxy.log" 2>/dev/null)"
  fi
fi

# start_guardian NAME INSPECT(true|false): temp home, scrubbed environment, wait for `listening on`.
start_guardian() {
  local name=$1 inspect=$2 home=$TMP/$1-home pid port line
  mkdir -p "$home" && chmod 700 "$home"
  local genv=(env -i "PATH=/usr/local/bin:/usr/bin:/bin" "HOME=$home" "PICOCLAW_TRAFFIC_GUARDIAN_HOME=$home")
  if [[ -n "$GUARDIAN_BUILD_ERR" ]]; then skip "$name" "$GUARDIAN_BUILD_ERR"; return 0; fi
  if [[ ! -x $GUARDIAN_BIN ]]; then skip "$name" "guardian start failed: no binary at $GUARDIAN_BIN"; return 0; fi
  if [[ $inspect == true ]]; then
    printf '{"listen":"127.0.0.1:0","proxy_auth":false,"https_inspection":true,"upstream_ca_file":"%s"}\n' \
      "$TEST_CA" >"$home/config.json"
    if ! "${genv[@]}" "$GUARDIAN_BIN" ca init >"$home/ca-init.out" 2>&1 || [[ ! -f $home/ca/ca.pem ]]; then
      skip "$name" "guardian ca init failed: $(tail -3 "$home/ca-init.out")"
      return 0
    fi
  else
    printf '{"listen":"127.0.0.1:0","proxy_auth":false}\n' >"$home/config.json"
  fi
  chmod 600 "$home/config.json"
  "${genv[@]}" "${ON_SERVE[@]}" "$GUARDIAN_BIN" start >"$home/stdout" 2>"$home/stderr" &
  pid=$!
  PIDS+=("$pid")
  port=""
  for _ in $(seq 1 150); do
    line=$(grep -m1 -o 'listening on http://127\.0\.0\.1:[0-9]*' "$home/stderr" 2>/dev/null || true)
    if [[ -n $line ]]; then port=${line##*:}; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z $port ]]; then
    skip "$name" "guardian start failed: $(tail -3 "$home/stderr" 2>/dev/null)"
    kill -TERM "$pid" 2>/dev/null || true
    return 0
  fi
  PROXY_PORT[$name]=$port
  PROXY_PID[$name]=$pid
  log "guardian ($name) listening on 127.0.0.1:$port, core $SERVE_CORE"
}
if wants guardian-http || wants guardian-connect; then start_guardian guardian false; fi
if wants guardian-mitm; then start_guardian guardian-mitm true; fi

rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || true; }
hwm_kib() { awk '/^VmHWM:/{print $2}' "/proc/$1/status" 2>/dev/null || true; }
sleep 0.5
declare -A IDLE_RSS=()
for p in "${!PROXY_PID[@]}"; do IDLE_RSS[$p]=$(rss_kib "${PROXY_PID[$p]}"); done

# ----------------------------------------------------------------------------------------------------------
# Routes: the load generator's options per case; empty when the case cannot run.
route() { # route CASE -> prints options, or nothing
  local h=http://127.0.0.1:$HTTP_PORT s=https://127.0.0.1:$HTTPS_PORT
  case $1 in
    direct-http) echo "--target $h" ;;
    direct-https) echo "--target $s --ca $TEST_CA" ;;
    tinyproxy-http) [[ -n ${PROXY_PORT[tinyproxy]:-} ]] && echo "--target $h --proxy 127.0.0.1:${PROXY_PORT[tinyproxy]}" ;;
    tinyproxy-connect) [[ -n ${PROXY_PORT[tinyproxy]:-} ]] && echo "--target $s --ca $TEST_CA --proxy 127.0.0.1:${PROXY_PORT[tinyproxy]} --connect" ;;
    guardian-http) [[ -n ${PROXY_PORT[guardian]:-} ]] && echo "--target $h --proxy 127.0.0.1:${PROXY_PORT[guardian]}" ;;
    guardian-connect) [[ -n ${PROXY_PORT[guardian]:-} ]] && echo "--target $s --ca $TEST_CA --proxy 127.0.0.1:${PROXY_PORT[guardian]} --connect" ;;
    guardian-mitm) [[ -n ${PROXY_PORT[guardian-mitm]:-} ]] && echo "--target $s --ca $TMP/guardian-mitm-home/ca/ca.pem --proxy 127.0.0.1:${PROXY_PORT[guardian-mitm]} --connect" ;;
  esac
  return 0
}
figure_opts() { # figure_opts FIGURE -> path suffix is added to --target by measure()
  case $1 in
    get1k-c1) echo "/1k --concurrency 1 --expect-file $WWW/1k" ;;
    get1k-c32) echo "/1k --concurrency 32 --expect-file $WWW/1k" ;;
    get16m-c1) echo "/16m --concurrency 1 --expect-file $WWW/16m --timeout 60" ;;
    post64k-c8) echo "/post --concurrency 8 --post-bytes 65536" ;;
  esac
}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
# User + system CPU ticks of a process (all its threads); 0 when there is none.
cpu_ticks() { if [[ -n ${1:-} ]]; then awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; else echo 0; fi; }
proxy_pid_of() { # proxy_pid_of CASE
  case $1 in
    tinyproxy-*) echo "${PROXY_PID[tinyproxy]:-}" ;;
    guardian-http | guardian-connect) echo "${PROXY_PID[guardian]:-}" ;;
    guardian-mitm) echo "${PROXY_PID[guardian-mitm]:-}" ;;
  esac
}
upstream_ticks() {
  local t=0 w
  for w in $NGINX_WORKERS; do t=$((t + $(cpu_ticks "$w"))); done
  echo "$t"
}
measure() { # measure CASE FIGURE
  local r f path rest opts ppid p0 p1 u0 u1
  r=$(route "$1")
  [[ -z $r ]] && return 0
  ppid=$(proxy_pid_of "$1")
  p0=$(cpu_ticks "$ppid")
  u0=$(upstream_ticks)
  f=$(figure_opts "$2")
  path=${f%% *}
  rest=${f#* }
  # The path goes onto the URL that follows --target.
  opts=$(sed -E "s#(--target [^ ]+)#\\1$path#" <<<"$r")
  # shellcheck disable=SC2086 # word splitting of the option strings is intended (no spaces in paths)
  if ! "${ON_LOAD[@]}" "$LOADGEN" load --case "$1" --figure "$2" --seconds "$S" $opts $rest \
    >>"$RESULTS/raw.csv" 2>>"$RESULTS/errors.log"; then
    log "load generator failed for $1 $2 (see errors.log)"
    return 0
  fi
  p1=$(cpu_ticks "$ppid")
  u1=$(upstream_ticks)
  awk -v c="$1" -v f="$2" -v p=$((p1 - p0)) -v u=$((u1 - u0)) -v hz="$CLK_TCK" \
    'BEGIN { printf "%s,%s,%.2f,%.2f\n", c, f, p / hz, u / hz }' >>"$RESULTS/cpu.csv"
  local row
  row=$(tail -1 "$RESULTS/raw.csv")
  awk -F, '{ printf "  %-18s %-11s ok=%-8s errors=%-5s req/s=%-10s MB/s=%-8s p50=%sms p99=%sms\n", $1, $2, $5, $6, $14, $15, $16, $17 }' <<<"$row" >&2
}

FIGURES="get1k-c1 get1k-c32 get16m-c1 post64k-c8"
n_cases=0
for c in $CASES; do [[ -n $(route "$c") ]] && n_cases=$((n_cases + 1)); done
log "measuring $n_cases cases x 4 figures x ${S}s (interleaved per figure, so drift hits all cases alike)"
for fig in $FIGURES; do
  for c in $CASES; do measure "$c" "$fig"; done
done

declare -A PEAK_LOAD=()
for p in "${!PROXY_PID[@]}"; do PEAK_LOAD[$p]=$(hwm_kib "${PROXY_PID[$p]}"); done

# ----------------------------------------------------------------------------------------------------------
# wrk cross-check (plain HTTP, 1 KiB, concurrency 32, half the time): wrk cannot CONNECT.
WRK_SECONDS=$(awk -v s="$S" 'BEGIN { v = int(s / 2); if (v < 1) v = 1; print v }')
wrk_case() { # wrk_case CASE PROXY_PORT|""
  local out url
  if [[ -n $2 ]]; then url=http://127.0.0.1:$2/; else url=http://127.0.0.1:$HTTP_PORT/1k; fi
  out=$(WRK_URL="http://127.0.0.1:$HTTP_PORT/1k" WRK_PROXY=$([[ -n $2 ]] && echo 1 || echo 0) \
    WRK_HOST="127.0.0.1:$HTTP_PORT" WRK_EXPECT_LEN=1024 \
    "${ON_LOAD[@]}" wrk -t1 -c32 -d"${WRK_SECONDS}s" -s "$BENCH/wrk-check.lua" "$url" 2>&1) || true
  local line
  line=$(grep '^WRK,' <<<"$out" | tail -1)
  if [[ -z $line ]]; then
    log "wrk failed for $1: $(tail -2 <<<"$out")"
    return 0
  fi
  awk -F, -v c="$1" '{ d = $3 / 1e6; printf "%s,get1k-c32,32,%.2f,%d,%.1f,%s,%s,%d,%d\n", c, d, $2, $2 / d, $4, $5, $6, $7 }' \
    <<<"$line" >>"$RESULTS/wrk.csv"
  log "  wrk $1: $(tail -1 "$RESULTS/wrk.csv")"
}
if command -v wrk >/dev/null; then
  log "wrk cross-check, ${WRK_SECONDS}s each"
  wants direct-http && wrk_case direct-http ""
  [[ -n $(route tinyproxy-http) ]] && wants tinyproxy-http && wrk_case tinyproxy-http "${PROXY_PORT[tinyproxy]}"
  [[ -n $(route guardian-http) ]] && wants guardian-http && wrk_case guardian-http "${PROXY_PORT[guardian]}"
fi

# ----------------------------------------------------------------------------------------------------------
# Memory: idle, peak after the load figures, and with HOLD_CONNS idle keep-alive connections held open
# (CONNECT + TLS tunnels for tinyproxy and the tunnelling guardian, intercepted TLS for the MITM guardian).
hold_case() { # hold_case PROXY CASE
  local p=$1 pid=${PROXY_PID[$1]} r opts ready=$TMP/ready-$1 hp held="" peak row ok
  r=$(route "$2")
  [[ -z $r ]] && return 0
  opts=$(sed -E "s#(--target [^ ]+)#\\1/1k#" <<<"$r")
  rm -f "$ready"
  log "holding $HOLD_CONNS idle connections through $p for ${HOLD_SECONDS}s"
  # shellcheck disable=SC2086
  "${ON_LOAD[@]}" "$LOADGEN" hold --case "$2" --figure "hold$HOLD_CONNS" --concurrency "$HOLD_CONNS" \
    --seconds "$HOLD_SECONDS" --ready-file "$ready" --expect-file "$WWW/1k" $opts \
    >>"$RESULTS/hold.csv" 2>>"$RESULTS/errors.log" &
  hp=$!
  PIDS+=("$hp")
  for _ in $(seq 1 300); do
    [[ -f $ready ]] && break
    kill -0 "$hp" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -f $ready ]]; then
    sleep 0.5
    held=$(rss_kib "$pid")
  fi
  wait "$hp" || log "hold run failed for $p"
  peak=$(hwm_kib "$pid")
  row=$(tail -1 "$RESULTS/hold.csv")
  ok=$(awk -F, '{print $5}' <<<"$row")
  echo "$p,${IDLE_RSS[$p]:-},${PEAK_LOAD[$p]:-},$HOLD_CONNS,${ok:-0},$held,$peak" >>"$RESULTS/rss.csv"
  log "  $p: idle ${IDLE_RSS[$p]:-?} KiB, peak after load ${PEAK_LOAD[$p]:-?} KiB, held ${held:-?} KiB (${ok:-0}/$HOLD_CONNS ok), peak $peak KiB"
}
[[ -n ${PROXY_PID[tinyproxy]:-} ]] && hold_case tinyproxy tinyproxy-connect
[[ -n ${PROXY_PID[guardian]:-} ]] && hold_case guardian guardian-connect
[[ -n ${PROXY_PID[guardian-mitm]:-} ]] && hold_case guardian-mitm guardian-mitm

# Cases asked for but never measured (their proxy was skipped) get a skip row per case.
for c in $CASES; do
  if [[ -z $(route "$c") ]]; then
    case $c in
      tinyproxy-*) [[ -n ${SKIP[tinyproxy]:-} ]] && echo "$c,${SKIP[tinyproxy]}" >>"$RESULTS/skipped.csv" ;;
      guardian-mitm) ;;
      guardian-*) [[ -n ${SKIP[guardian]:-} ]] && echo "$c,${SKIP[guardian]}" >>"$RESULTS/skipped.csv" ;;
    esac
  fi
done
for c in $ALL_CASES; do
  wants "$c" || echo "$c,not selected (BENCH_CASES)" >>"$RESULTS/skipped.csv"
done

# ----------------------------------------------------------------------------------------------------------
# Summary.
{
  echo "uptime_after: $(uptime)"
  echo "busiest_processes_after (top, one sample):"
  top -bn1 -w 100 2>/dev/null | sed -n '8,12p' | awk '{print "  " $9 "% " $12}' || true
} >>"$RESULTS/machine.txt"
echo "duration_s: $(($(date -u +%s) - STARTED))" >>"$RESULTS/machine.txt"
{
  echo "# Load benchmark: $(basename "$RESULTS")"
  echo
  echo "Command: \`$COMMAND_LINE\`"
  echo
  if [[ -n "${BENCH_NOTE:-}" ]]; then
    echo "Note: $BENCH_NOTE"
    echo
  fi
  echo '```'
  cat "$RESULTS/machine.txt"
  cat "$RESULTS/versions.txt"
  echo '```'
  echo
  echo "Each row: ${S} s after a 0.5 s warm-up, every response checked (status 200, body byte-exact or the"
  echo "upstream's SHA-256 of the POST body); a row with failed checks is marked **ERRORS** (details in errors.log)."
  echo "Ratios: HTTP rows to direct-http / tinyproxy-http, HTTPS rows to direct-https / tinyproxy-connect;"
  echo "req/s for the GET and POST figures, MB/s for the 16 MiB download. MB/s is payload (response body, plus the"
  echo "request body for POST), 10^6 bytes per second. Latency is per request, from writing it to its last body byte."
  echo
  "$LOADGEN" report --dir "$RESULTS"
} >"$RESULTS/summary.md"
cat "$RESULTS/summary.md"
log "done in $(($(date -u +%s) - STARTED)) s; results in $RESULTS"
