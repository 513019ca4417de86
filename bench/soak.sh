#!/usr/bin/env bash
# RSS soak: one inspecting guardian (HTTP inspection and HTTPS MITM on) under moderate load for a long
# run, its VmRSS sampled at a fixed interval. Same upstream, load generator, pinning and scheduling as
# run.sh (see bench/README.md, "RSS soak"); 127.0.0.1 only. Needs what run.sh installs and builds.
#
#   bash bench/soak.sh
#
# Environment (all optional):
#   SOAK_SECONDS=600        total load time
#   SOAK_SEGMENT=30         seconds per load segment; segments rotate HTTP GET 1 KiB, MITM GET 1 KiB,
#                           HTTP POST 64 KiB (each checked: byte-exact bodies, upstream digests)
#   SOAK_CONCURRENCY=8      connections per segment
#   SOAK_SAMPLE=10          seconds between RSS samples
#   GUARDIAN_BIN, BENCH_LOAD_CORE, BENCH_SERVE_CORE, BENCH_RT, BENCH_RESULTS as in run.sh
set -euo pipefail

TOTAL=${SOAK_SECONDS:-600}
SEG=${SOAK_SEGMENT:-30}
CONC=${SOAK_CONCURRENCY:-8}
SAMPLE=${SOAK_SAMPLE:-10}
LOAD_CORE=${BENCH_LOAD_CORE:-0}
SERVE_CORE=${BENCH_SERVE_CORE:-1}
RT=${BENCH_RT:-1}
[[ $RT == 0 || $(id -u) != 0 ]] && RT=""
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOADGEN=$REPO/bench/loadgen/target/release/bench-loadgen
GUARDIAN_BIN=${GUARDIAN_BIN:-$REPO/target/release/picoclaw-traffic-guardian}
NJS_MODULE=/usr/lib/nginx/modules/ngx_http_js_module.so
RESULTS=${BENCH_RESULTS:-$REPO/bench/results/$(date -u +%Y-%m-%d)-$(hostname -s 2>/dev/null || hostname)-soak}
[[ -z "${BENCH_RESULTS:-}" && -e $RESULTS ]] && RESULTS=$RESULTS-$(date -u +%H%M%S)

log() { printf '[soak %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for f in "$LOADGEN" "$GUARDIAN_BIN"; do [[ -x $f ]] || die "no $f (run bench/run.sh once, or build it)"; done
if ! command -v nginx >/dev/null || [[ ! -f $NJS_MODULE ]]; then die "nginx with njs missing (bench/run.sh installs it)"; fi

PIDS=()
TMP=""
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  if [[ -n "$TMP" && -d "$TMP" ]]; then rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PRIO=()
[[ -n $RT ]] && PRIO=(chrt -r 10)
ON_LOAD=("${PRIO[@]}" taskset -c "$LOAD_CORE")
ON_SERVE=("${PRIO[@]}" taskset -c "$SERVE_CORE")
ulimit -n 65536 2>/dev/null || true
TMP=$(mktemp -d "${TMPDIR:-/tmp}/picoclaw-soak.XXXXXX")
chmod 755 "$TMP"
mkdir -p "$RESULTS" "$TMP/www" "$TMP/nginx"

free_port() { # a free high port on 127.0.0.1
  local p
  for _ in $(seq 1 500); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
  done
  die "no free port"
}

(
  cd "$TMP"
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -days 2 \
    -subj "/CN=picoclaw soak test CA" -keyout ca.key -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj "/CN=127.0.0.1" \
    -keyout server.key -out server.csr 2>/dev/null
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile server.ext -out server.pem 2>/dev/null
) || die "openssl failed"
"$LOADGEN" gen-json --bytes 1024 --out "$TMP/www/1k"
chmod 755 "$TMP/www" && chmod 644 "$TMP/www/1k"
HTTP_PORT=$(free_port)
HTTPS_PORT=$(free_port)
cat >"$TMP/digest.js" <<'EOF'
function sha256(r) {
    var body = r.requestBuffer;
    if (body === undefined) { r.return(500, "body not in memory\n"); return; }
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
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 10000000;
    default_type application/json;
    client_body_temp_path $TMP/nginx/body;
    js_import digest from $TMP/digest.js;
    server {
        listen 127.0.0.1:$HTTP_PORT;
        listen 127.0.0.1:$HTTPS_PORT ssl;
        ssl_certificate $TMP/server.pem;
        ssl_certificate_key $TMP/server.key;
        root $TMP/www;
        location = /1k { }
        location = /post { client_max_body_size 1m; client_body_buffer_size 1m; js_content digest.sha256; }
    }
}
EOF
"${ON_SERVE[@]}" nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx.conf" &
PIDS+=($!)

HOME_DIR=$TMP/home
mkdir -p "$HOME_DIR" && chmod 700 "$HOME_DIR"
printf '{"listen":"127.0.0.1:0","proxy_auth":false,"https_inspection":true,"upstream_ca_file":"%s"}\n' \
  "$TMP/ca.pem" >"$HOME_DIR/config.json"
GENV=(env -i "PATH=/usr/local/bin:/usr/bin:/bin" "HOME=$HOME_DIR" "PICOCLAW_TRAFFIC_GUARDIAN_HOME=$HOME_DIR")
"${GENV[@]}" "$GUARDIAN_BIN" ca init >"$TMP/ca-init.out" 2>&1 || die "ca init: $(tail -3 "$TMP/ca-init.out")"
"${GENV[@]}" "${ON_SERVE[@]}" "$GUARDIAN_BIN" start >"$TMP/g.out" 2>"$TMP/g.err" &
GPID=$!
PIDS+=("$GPID")
PORT=""
for _ in $(seq 1 150); do
  line=$(grep -m1 -o 'listening on http://127\.0\.0\.1:[0-9]*' "$TMP/g.err" 2>/dev/null || true)
  if [[ -n $line ]]; then PORT=${line##*:}; break; fi
  sleep 0.1
done
[[ -n $PORT ]] || die "guardian did not start: $(tail -3 "$TMP/g.err")"
sleep 0.5
rss() { awk '/^VmRSS:/{print $2}' "/proc/$GPID/status"; }
IDLE=$(rss)
log "guardian pid $GPID on 127.0.0.1:$PORT, idle RSS $IDLE KiB; ${TOTAL}s of load at concurrency $CONC, results in $RESULTS"

echo "t_s,rss_kib,hwm_kib,threads" >"$RESULTS/soak-rss.csv"
T0=$(date +%s)
(
  while kill -0 "$GPID" 2>/dev/null; do
    awk -v t=$(($(date +%s) - T0)) '/^VmRSS:/{r=$2} /^VmHWM:/{h=$2} /^Threads:/{n=$2} END{printf "%d,%d,%d,%d\n", t, r, h, n}' \
      "/proc/$GPID/status" >>"$RESULTS/soak-rss.csv"
    sleep "$SAMPLE"
  done
) &
PIDS+=($!)

"$LOADGEN" header >"$RESULTS/soak-load.csv"
: >"$RESULTS/soak-errors.log"
P=127.0.0.1:$PORT
KINDS=(
  "get1k-http --target http://127.0.0.1:$HTTP_PORT/1k --proxy $P --expect-file $TMP/www/1k"
  "get1k-mitm --target https://127.0.0.1:$HTTPS_PORT/1k --ca $HOME_DIR/ca/ca.pem --proxy $P --connect --expect-file $TMP/www/1k"
  "post64k-http --target http://127.0.0.1:$HTTP_PORT/post --proxy $P --post-bytes 65536"
)
i=0
while (($(date +%s) - T0 < TOTAL)); do
  k=${KINDS[$((i % 3))]}
  # shellcheck disable=SC2086 # the option string splits into words on purpose (no spaces in paths)
  "${ON_LOAD[@]}" "$LOADGEN" load --case soak --figure ${k%% *} --concurrency "$CONC" --seconds "$SEG" ${k#* } \
    >>"$RESULTS/soak-load.csv" 2>>"$RESULTS/soak-errors.log" || log "load generator failed (soak-errors.log)"
  i=$((i + 1))
done
sleep "$SAMPLE"
awk -v t=$(($(date +%s) - T0)) '/^VmRSS:/{r=$2} /^VmHWM:/{h=$2} /^Threads:/{n=$2} END{printf "%d,%d,%d,%d\n", t, r, h, n}' \
  "/proc/$GPID/status" >>"$RESULTS/soak-rss.csv"

# Flatness: every sample after the first minute (warm-up: allocator arenas, leaf cache, connection pools)
# against their median.
{
  echo "# RSS soak"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); uptime at the end: $(uptime)"
  echo "- command: SOAK_SECONDS=$TOTAL SOAK_SEGMENT=$SEG SOAK_CONCURRENCY=$CONC SOAK_SAMPLE=$SAMPLE bash bench/soak.sh"
  echo "- guardian: $("$GUARDIAN_BIN" --version), pid $GPID, idle RSS before load $IDLE KiB"
  awk -F, 'NR > 1 { ok += $5; err += $6 + $7 + $8 + $9 + $10 } END { printf "- load: %d segments, %d checked-OK requests, %d errors\n", NR - 1, ok, err }' \
    "$RESULTS/soak-load.csv"
  # Sorted samples after the first minute (portable: no gawk asort).
  awk -F, 'NR > 1 && $1 >= 60 { print $2 }' "$RESULTS/soak-rss.csv" | sort -n >"$TMP/rss-sorted"
  awk -F, 'NR > 1 { hwm = $3 } END { print hwm }' "$RESULTS/soak-rss.csv" >"$TMP/hwm"
  awk -v hwm="$(cat "$TMP/hwm")" '{ v[++n] = $1 }
    END {
      if (n == 0) { print "- no samples after 60 s"; exit }
      med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
      lo = v[1]; hi = v[n]
      printf "- RSS samples after 60 s: %d, min %.1f MiB, median %.1f MiB, max %.1f MiB; spread %+.1f%% / %+.1f%% of the median; peak (VmHWM) %.1f MiB\n", n, lo / 1024, med / 1024, hi / 1024, (lo - med) * 100 / med, (hi - med) * 100 / med, hwm / 1024
      printf "- verdict: %s\n", ((hi - med) * 100 / med <= 10 && (med - lo) * 100 / med <= 10) ? "flat within +-10% (PASS)" : "NOT flat within +-10% (MISS)"
    }' "$TMP/rss-sorted"
} | tee "$RESULTS/soak-summary.md"
