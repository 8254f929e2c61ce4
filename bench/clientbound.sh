#!/bin/bash
# clientbound.sh: is the harness's h1 p99 a property of the server or of the
# load generator? It runs the harness's h1 load (wrk -t2 -c64 --latency, the
# client pinned to CPU 0, the server to CPU 1) against two servers that both
# outrun that client:
#   nginx-null  nginx answering every request with 1 KiB from its config
#               (`return 200`): no proxy, no cache, no file, five fields
#   pop         our PoP serving the same 1 KiB object as a cache hit
# and prints, per run, req/s, p50, p90, p99, the client's CPU, and how long
# wrk's two threads stood runnable but waiting for the one client core
# (/proc/PID/task/TID/schedstat). If nginx-null's p99 rises as ours does when
# the client core saturates, the column measures the client.
#
#   bash bench/clientbound.sh            # 3 rounds of 3 s each, about 40 s
#   ROUNDS=5 DURATION=5 THREADS="1 2" bash bench/clientbound.sh
#
# Needs root (taskset, nginx as root), nginx, wrk, openssl, Go. Everything it
# starts is stopped, and its temp dir removed, on exit.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
THREADS=${THREADS:-2}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
NULL_PORT=${NULL_PORT:-18690}
POP_PORT=${POP_PORT:-18691}
ORIGIN_PORT=${ORIGIN_PORT:-18692}

for t in nginx wrk openssl go taskset; do
	command -v "$t" >/dev/null || { echo "clientbound: $t is required" >&2; exit 1; }
done
REPO=$(cd "$(dirname "$0")/.." && pwd)
T=$(mktemp -d /tmp/clientbound.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$T"
}
trap cleanup EXIT

(cd "$REPO" && go build -o "$T/pop" ./pop/cmd/pop && go build -o "$T/origin" ./origin/cmd/origin)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
	-addext subjectAltName=IP:127.0.0.1 -keyout "$T/key.pem" -out "$T/cert.pem" 2>/dev/null

body=$(head -c 1024 /dev/zero | tr '\0' x)
mkdir -p "$T/nginx"
cat >"$T/nginx/nginx.conf" <<EOF
user root;
worker_processes 1;
daemon off;
pid $T/nginx/nginx.pid;
error_log $T/nginx/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_timeout 300s; keepalive_requests 1000000;
  client_body_temp_path $T/nginx/body; proxy_temp_path $T/nginx/proxy;
  fastcgi_temp_path $T/nginx/fcgi; uwsgi_temp_path $T/nginx/uwsgi; scgi_temp_path $T/nginx/scgi;
  ssl_certificate $T/cert.pem;
  ssl_certificate_key $T/key.pem;
  ssl_protocols TLSv1.3;
  server {
    listen 127.0.0.1:$NULL_PORT ssl backlog=4096;
    location / { default_type application/octet-stream; return 200 "$body"; }
  }
}
EOF
taskset -c "$SERVER_CPU" nginx -p "$T/nginx" -c "$T/nginx/nginx.conf" -e "$T/nginx/error.log" >"$T/nginx.log" 2>&1 &
PIDS+=($!)
taskset -c "$SERVER_CPU" "$T/origin" -listen "" -http "127.0.0.1:$ORIGIN_PORT" -log-requests=false >"$T/origin.log" 2>&1 &
PIDS+=($!)
sleep 0.3
taskset -c "$SERVER_CPU" "$T/pop" -listen "127.0.0.1:$POP_PORT" -origin "http://127.0.0.1:$ORIGIN_PORT" \
	-cert "$T/cert.pem" -key "$T/key.pem" -admin "" >"$T/pop.log" 2>&1 &
PIDS+=($!)

wait_up() {
	for _ in $(seq 50); do curl -sfk -o /dev/null "$1" && return 0; sleep 0.1; done
	echo "clientbound: $1 did not answer; logs in $T" >&2
	cat "$T"/*.log >&2
	exit 1
}
NULL_URL=https://127.0.0.1:$NULL_PORT/obj/1k.bin
POP_URL=https://127.0.0.1:$POP_PORT/gen/1k
wait_up "$NULL_URL"
wait_up "$POP_URL" # the first request fills the cache; the runs are hits
curl -sfk -D - -o /dev/null "$POP_URL" | grep -qi 'cache-status:.*hit' || { echo "clientbound: the PoP did not answer a hit" >&2; exit 1; }

# run NAME URL THREADS: one wrk run, one output line.
run() {
	local name=$1 url=$2 threads=$3
	taskset -c "$CLIENT_CPU" wrk -t"$threads" -c64 -d"${DURATION}s" --latency "$url" >"$T/wrk.out" 2>&1 &
	local w=$! tid wait0=0 wait1=0 cpu0 cpu1
	sleep 0.5
	cpu0=$(awk '{print $14+$15}' "/proc/$w/stat")
	for tid in /proc/$w/task/*; do wait0=$((wait0 + $(awk '{print $2}' "$tid/schedstat"))); done
	sleep "$((DURATION - 1))"
	cpu1=$(awk '{print $14+$15}' "/proc/$w/stat")
	for tid in /proc/$w/task/*; do wait1=$((wait1 + $(awk '{print $2}' "$tid/schedstat"))); done
	wait "$w"
	awk -v name="$name" -v th="$threads" -v cpu=$((cpu1 - cpu0)) -v wt=$((wait1 - wait0)) -v secs=$((DURATION - 1)) '
		$1 == "50%" {p50 = $2} $1 == "90%" {p90 = $2} $1 == "99%" {p99 = $2} $1 == "Requests/sec:" {rps = $2}
		END {printf "%-10s  wrk -t%s  %9.0f req/s  p50 %8s  p90 %8s  p99 %8s  client CPU %3.0f%%  wrk threads runnable-but-waiting %3.0f%% of a core\n",
			name, th, rps, p50, p90, p99, cpu / secs, wt / 1e7 / secs}' "$T/wrk.out"
}

echo "clientbound: server CPU $SERVER_CPU, client CPU $CLIENT_CPU, $ROUNDS rounds x ${DURATION}s, wrk -c64"
for th in $THREADS; do
	for _ in $(seq "$ROUNDS"); do
		run nginx-null "$NULL_URL" "$th"
		run pop "$POP_URL" "$th"
	done
done
