#!/usr/bin/env bash
# bench/run.sh — sluice against the direct backend, httputil.ReverseProxy,
# nginx, HAProxy and Caddy, side by side in one run, on loopback only.
#
#   bench/run.sh                     full run (3 rounds of 5 s, about 10 minutes)
#   bench/run.sh --quick             1 short round (under 2 minutes), for development
#   bench/run.sh --targets sluice,nginx --workloads small,h2c
#   bench/run.sh --help
#
# It installs nothing: it names the Debian packages it is missing and stops.
# The report goes to stdout and to bench/results/latest.md; progress goes to
# stderr. See bench/README.md for what every column means.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)

ALL_TARGETS=(direct sluice sluice+features httputil nginx haproxy caddy)
ALL_WORKLOADS=(small 1m post h2c fixed)

# The "sluice+features" target runs with the features a real configuration
# uses: "--access-log FILE --retries 2 --admin 127.0.0.1:PORT" (metrics on,
# a free port per instance, scraped once after the last round), with passive
# health on as it is by default (--max-fails 3 --fail-duration 10s).
# Extra flags for it go here, or in the environment:
#   SLUICE_FEATURE_FLAGS="--lb-policy least_requests" bench/run.sh
SLUICE_FEATURE_FLAGS=${SLUICE_FEATURE_FLAGS:-}

# ---- settings (flags below override) ---------------------------------------
QUICK=0
ROUNDS=3
DURATION=5          # seconds per measured run (wrk, h2load, loadgen)
FIXED_RATE=${FIXED_RATE:-2000}   # req/s of the fixed-rate latency run
FIXED_CONNS=32      # keep-alive connections of the fixed-rate run
SMALL_CONNS=64      # wrk -c for small GET and 64 KiB POST
BIG_CONNS=8         # wrk -c for 1 MiB GET
H2_CONNS=8          # h2load -c
H2_STREAMS=10       # h2load -m
WORKERS=2           # GOMAXPROCS / worker_processes / nbthread for every target
PORT_BASE=${BENCH_PORT_BASE:-18100}
KEEP_TMP=0
OUT_FILE="$BENCH_DIR/results/latest.md"
TARGETS_ARG=""
WORKLOADS_ARG=""

usage() {
	cat <<EOF
usage: bench/run.sh [--quick] [--targets LIST] [--workloads LIST] [--rounds N]
                    [--duration SECONDS] [--rate REQ_PER_S] [--out FILE] [--keep]

  --quick            1 round of 2-second runs (under 2 minutes) instead of
                     3 rounds of ${DURATION}-second runs
  --targets LIST     comma-separated subset of: ${ALL_TARGETS[*]}
                     (ratios need "direct" and "sluice" in the list)
  --workloads LIST   comma-separated subset of: ${ALL_WORKLOADS[*]}
  --rounds N         number of interleaved rounds (default 3, quick 1)
  --duration S       seconds per measured run (default ${DURATION}, quick 2)
  --rate R           request rate of the fixed-rate latency run (default ${FIXED_RATE})
  --out FILE         where to write the report (default bench/results/latest.md)
  --keep             keep the temporary directory (configs, logs, raw outputs)

Environment: SLUICE_FEATURE_FLAGS (extra flags of sluice+features),
FIXED_RATE, BENCH_PORT_BASE (first loopback port tried, default 18100).
Needs (Debian): apt-get install -y wrk nghttp2-client nginx haproxy caddy
and a Go toolchain matching go.mod.
EOF
}

die() {
	printf 'bench: %s\n' "$*" >&2
	exit 1
}
say() { printf '%s\n' "$*" >&2; }

rounds_set=0 duration_set=0
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) QUICK=1 ;;
	--targets) [ $# -ge 2 ] || die "--targets needs a list"; TARGETS_ARG=$2; shift ;;
	--targets=*) TARGETS_ARG=${1#*=} ;;
	--workloads) [ $# -ge 2 ] || die "--workloads needs a list"; WORKLOADS_ARG=$2; shift ;;
	--workloads=*) WORKLOADS_ARG=${1#*=} ;;
	--rounds) [ $# -ge 2 ] || die "--rounds needs a number"; ROUNDS=$2; rounds_set=1; shift ;;
	--duration) [ $# -ge 2 ] || die "--duration needs seconds"; DURATION=$2; duration_set=1; shift ;;
	--rate) [ $# -ge 2 ] || die "--rate needs a number"; FIXED_RATE=$2; shift ;;
	--out) [ $# -ge 2 ] || die "--out needs a file"; OUT_FILE=$2; shift ;;
	--keep) KEEP_TMP=1 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
	shift
done
if [ "$QUICK" = 1 ]; then
	[ "$rounds_set" = 1 ] || ROUNDS=1
	[ "$duration_set" = 1 ] || DURATION=2
fi
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer"
[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || die "--duration must be a positive whole number of seconds"
[[ "$FIXED_RATE" =~ ^[1-9][0-9]*$ ]] || die "--rate must be a positive integer"

pick_list() { # $1 = comma list or "", rest = allowed values; prints chosen values in canonical order
	local arg=$1
	shift
	local -a allowed=("$@") chosen=()
	if [ -z "$arg" ]; then
		printf '%s\n' "${allowed[@]}"
		return
	fi
	local item a ok
	IFS=, read -r -a chosen <<<"$arg"
	for item in "${chosen[@]}"; do
		ok=0
		for a in "${allowed[@]}"; do [ "$item" = "$a" ] && ok=1; done
		[ "$ok" = 1 ] || die "unknown name '$item' (valid: ${allowed[*]})"
	done
	for a in "${allowed[@]}"; do
		for item in "${chosen[@]}"; do
			if [ "$item" = "$a" ]; then
				printf '%s\n' "$a"
				break
			fi
		done
	done
}
mapfile -t TARGETS < <(pick_list "$TARGETS_ARG" "${ALL_TARGETS[@]}")
mapfile -t WORKLOADS < <(pick_list "$WORKLOADS_ARG" "${ALL_WORKLOADS[@]}")
has_target() {
	local t
	for t in "${TARGETS[@]}"; do [ "$t" = "$1" ] && return 0; done
	return 1
}

# ---- prerequisites ----------------------------------------------------------
declare -A PKG_OF=([wrk]=wrk [h2load]=nghttp2-client [nginx]=nginx [haproxy]=haproxy
	[caddy]=caddy [pgrep]=procps [timeout]=coreutils [awk]=mawk)
missing_cmds=()
need() { command -v "$1" >/dev/null 2>&1 || missing_cmds+=("$1"); }
need wrk
need h2load
need pgrep
need timeout
need awk
has_target nginx && need nginx
has_target haproxy && need haproxy
has_target caddy && need caddy
if [ ${#missing_cmds[@]} -gt 0 ]; then
	pkgs=()
	for c in "${missing_cmds[@]}"; do pkgs+=("${PKG_OF[$c]}"); done
	say "bench: missing command(s): ${missing_cmds[*]}"
	say "bench: install the Debian package(s) with:  sudo apt-get install -y ${pkgs[*]}"
	say "bench: (everything: sudo apt-get install -y wrk nghttp2-client nginx haproxy caddy)"
	say "bench: or leave those targets out with --targets"
	exit 1
fi
command -v go >/dev/null 2>&1 || die "no 'go' in PATH: install a Go toolchain matching go.mod (e.g. /usr/local/go/bin)"

# ---- temporary directory, process bookkeeping, cleanup -------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench.XXXXXX")
mkdir -p "$TMP/bin" "$TMP/logs" "$TMP/out" "$TMP/conf"
STARTED_PIDS=()

tree_pids() { # pid and all its descendants
	local c
	[ -d "/proc/$1" ] || return 0
	printf '%s\n' "$1"
	for c in $(pgrep -P "$1" 2>/dev/null || true); do tree_pids "$c"; done
}

stop_pids() { # TERM the given root pids and their trees, KILL what is left after 3 s
	local -a all=()
	local p i
	for p in "$@"; do
		mapfile -t -O "${#all[@]}" all < <(tree_pids "$p")
	done
	[ ${#all[@]} -gt 0 ] || return 0
	kill -TERM "$@" 2>/dev/null || true
	for i in $(seq 30); do
		local alive=0
		for p in "${all[@]}"; do [ -d "/proc/$p" ] && alive=1; done
		[ "$alive" = 0 ] && break
		sleep 0.1
		: "$i"
	done
	for p in "${all[@]}"; do [ -d "/proc/$p" ] && kill -KILL "$p" 2>/dev/null; done
	for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ ${#STARTED_PIDS[@]} -gt 0 ]; then stop_pids "${STARTED_PIDS[@]}" 2>/dev/null; fi
	if [ "$KEEP_TMP" = 1 ]; then
		say "bench: kept $TMP"
	else
		rm -rf "$TMP"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

NEXT_PORT=$PORT_BASE
PORT=0
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
alloc_port() { # sets PORT to a free loopback port
	while port_in_use "$NEXT_PORT"; do NEXT_PORT=$((NEXT_PORT + 1)); done
	PORT=$NEXT_PORT
	NEXT_PORT=$((NEXT_PORT + 1))
}

LAST_PID=0
start_bg() { # start_bg NAME CMD...: run in the background, log to $TMP/logs/NAME.log
	local name=$1
	shift
	"$@" >"$TMP/logs/$name.log" 2>&1 &
	LAST_PID=$!
	STARTED_PIDS+=("$LAST_PID")
}

log_tail() { tail -n 5 "$1" 2>/dev/null | sed 's/^/    | /' >&2 || true; }

# ---- build --------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
say "bench: temp dir $TMP; building Go programs"
for prog in backend httputilproxy loadgen; do
	if ! (cd "$REPO_DIR" && go build -o "$TMP/bin/$prog" "./bench/$prog") >"$TMP/logs/build-$prog.log" 2>&1; then
		log_tail "$TMP/logs/build-$prog.log"
		die "could not build bench/$prog (log above)"
	fi
done

declare -A SKIP=()    # target -> reason it is not measured at all
declare -A H2_NA=()   # target -> reason it has no h2c figure
declare -A PORT1=()   # target -> HTTP/1.1 port
declare -A PORT2=()   # target -> h2c port
declare -A PIDS1=()   # target -> root pids whose CPU counts for HTTP/1.1 workloads
declare -A PIDS2=()   # target -> root pids whose CPU counts for h2c
declare -A ADMIN1=()  # target -> --admin port of the HTTP/1.1 instance (sluice+features)
declare -A ADMIN2=()  # target -> --admin port of the h2c instance

SLUICE_BIN="$TMP/bin/sluice"
SLUICE_H2C_FLAG=""
SLUICE_HAS_ADMIN=0
if has_target sluice || has_target sluice+features; then
	if (cd "$REPO_DIR" && go build -o "$SLUICE_BIN" ./cmd/sluice) >"$TMP/logs/build-sluice.log" 2>&1; then
		"$SLUICE_BIN" proxy --help >"$TMP/logs/sluice-help.txt" 2>&1 || true
		if grep -q -- '--h2c' "$TMP/logs/sluice-help.txt"; then SLUICE_H2C_FLAG=--h2c; fi
		if grep -q -- '--admin' "$TMP/logs/sluice-help.txt"; then SLUICE_HAS_ADMIN=1; fi
	else
		say "bench: SKIP sluice, sluice+features: 'go build ./cmd/sluice' failed:"
		log_tail "$TMP/logs/build-sluice.log"
		SKIP[sluice]="go build ./cmd/sluice failed"
		SKIP[sluice+features]="go build ./cmd/sluice failed"
	fi
fi

# ---- start everything -----------------------------------------------------------
LOADGEN="$TMP/bin/loadgen"
probe() { "$LOADGEN" probe -timeout "${PROBE_TIMEOUT:-10s}" "$@" >>"$TMP/logs/probe.log" 2>&1; }

alloc_port
BACKEND_PORT=$PORT
start_bg backend env GOMAXPROCS="$WORKERS" "$TMP/bin/backend" -listen "127.0.0.1:$BACKEND_PORT"
BACKEND_PID=$LAST_PID
probe -url "http://127.0.0.1:$BACKEND_PORT/" -min-bytes 100 || {
	log_tail "$TMP/logs/backend.log"
	die "the backend did not start on 127.0.0.1:$BACKEND_PORT"
}
UP="127.0.0.1:$BACKEND_PORT"

# check_target T: the target answers the three HTTP/1.1 routes, and h2c if it has a port for it.
check_target() {
	local t=$1 p1=${PORT1[$1]} p2=${PORT2[$1]:-} pid i
	# wait for the listener, giving up at once if the process has exited
	pid=${PIDS1[$1]:-$BACKEND_PID}
	for i in $(seq 50); do
		[ -d "/proc/$pid" ] || break
		port_in_use "$p1" && break
		sleep 0.2
		: "$i"
	done
	if ! [ -d "/proc/$pid" ] || ! probe -url "http://127.0.0.1:$p1/" -min-bytes 100 ||
		! probe -url "http://127.0.0.1:$p1/1m" -min-bytes 1048576 ||
		! probe -method POST -body-size 65536 -url "http://127.0.0.1:$p1/upload"; then
		SKIP[$t]="did not answer on 127.0.0.1:$p1 (see $2)"
		if [ -d "/proc/$pid" ]; then
			say "bench: SKIP $t: it did not answer correctly on 127.0.0.1:$p1 ($(tail -n 1 "$TMP/logs/probe.log")); last lines of its log:"
		else
			say "bench: SKIP $t: it exited at start; last lines of its log:"
		fi
		log_tail "$2"
		return 1
	fi
	if [ -n "$p2" ] && ! PROBE_TIMEOUT=5s probe -h2c -url "http://127.0.0.1:$p2/" -min-bytes 100; then
		H2_NA[$t]="h2c probe failed"
		say "bench: $t: no h2c on 127.0.0.1:$p2 ($(tail -n 1 "$TMP/logs/probe.log")); h2c marked n/a"
	fi
	return 0
}

start_direct() {
	PORT1[direct]=$BACKEND_PORT
	PORT2[direct]=$BACKEND_PORT
	PIDS1[direct]=""
	PIDS2[direct]=""
	check_target direct "$TMP/logs/backend.log"
}

start_sluice_variant() { # $1 = target name, [--with-admin], rest = extra flags
	local t=$1 log with_admin=0
	shift
	if [ "${1:-}" = --with-admin ]; then
		with_admin=1
		shift
	fi
	local -a admin=()
	log="$TMP/logs/$t.log"
	alloc_port
	PORT1[$t]=$PORT
	if [ "$with_admin" = 1 ]; then # every instance has an admin port of its own
		alloc_port
		ADMIN1[$t]=$PORT
		admin=(--admin "127.0.0.1:$PORT")
	fi
	start_bg "$t" env GOMAXPROCS="$WORKERS" "$SLUICE_BIN" proxy --from "127.0.0.1:${PORT1[$t]}" --to "$UP" "${admin[@]}" "$@"
	PIDS1[$t]=$LAST_PID
	check_target "$t" "$log" || return 1
	if [ -z "$SLUICE_H2C_FLAG" ]; then
		H2_NA[$t]="'sluice proxy --help' lists no --h2c"
		return 0
	fi
	# A second instance with --h2c serves the h2c workload only, so that the
	# HTTP/1.1 figures are of the plain command line.
	alloc_port
	PORT2[$t]=$PORT
	if [ "$with_admin" = 1 ]; then
		alloc_port
		ADMIN2[$t]=$PORT
		admin=(--admin "127.0.0.1:$PORT")
	fi
	start_bg "$t-h2c" env GOMAXPROCS="$WORKERS" "$SLUICE_BIN" proxy --from "127.0.0.1:${PORT2[$t]}" --to "$UP" "$SLUICE_H2C_FLAG" "${admin[@]}" "$@"
	PIDS2[$t]=$LAST_PID
	if ! PROBE_TIMEOUT=5s probe -h2c -url "http://127.0.0.1:${PORT2[$t]}/" -min-bytes 100; then
		H2_NA[$t]="h2c probe failed with --h2c"
		say "bench: $t: no h2c with $SLUICE_H2C_FLAG ($(tail -n 1 "$TMP/logs/probe.log")); h2c marked n/a"
		log_tail "$TMP/logs/$t-h2c.log"
	fi
}

start_sluice() { start_sluice_variant sluice; }
start_sluice_features() {
	local -a extra=()
	# shellcheck disable=SC2206 # word splitting of the user's flags is intended
	[ -z "$SLUICE_FEATURE_FLAGS" ] || extra=($SLUICE_FEATURE_FLAGS)
	local -a admin=()
	[ "$SLUICE_HAS_ADMIN" = 0 ] || admin=(--with-admin)
	start_sluice_variant sluice+features "${admin[@]}" --access-log "$TMP/access.log" --retries 2 "${extra[@]}"
}

start_httputil() {
	alloc_port
	PORT1[httputil]=$PORT
	PORT2[httputil]=$PORT
	start_bg httputil env GOMAXPROCS="$WORKERS" "$TMP/bin/httputilproxy" -listen "127.0.0.1:$PORT" -to "$UP"
	PIDS1[httputil]=$LAST_PID
	PIDS2[httputil]=$LAST_PID
	check_target httputil "$TMP/logs/httputil.log"
}

start_nginx() {
	local d="$TMP/nginx" user_line=""
	mkdir -p "$d"
	alloc_port
	PORT1[nginx]=$PORT
	alloc_port
	PORT2[nginx]=$PORT
	# As root, nginx would switch its workers to "nobody"; keep them as the current user.
	[ "$(id -u)" != 0 ] || user_line="user root;"
	cat >"$d/nginx.conf" <<EOF
# generated by bench/run.sh
$user_line
worker_processes $WORKERS;
daemon off;
master_process on;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $d/client_body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    # keep request bodies and responses in memory (no temp files on disk)
    client_body_buffer_size 128k;
    proxy_max_temp_file_size 0;
    upstream backend {
        server $UP;
        keepalive 256;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:${PORT1[nginx]};
        listen 127.0.0.1:${PORT2[nginx]} http2;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
	start_bg nginx nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf"
	PIDS1[nginx]=$LAST_PID
	PIDS2[nginx]=$LAST_PID
	check_target nginx "$d/error.log"
}

start_haproxy() {
	local d="$TMP/haproxy" maxconn nofile
	mkdir -p "$d"
	# haproxy refuses to start when maxconn needs more descriptors than allowed
	nofile=$(ulimit -n)
	[[ "$nofile" =~ ^[0-9]+$ ]] || nofile=1048576
	maxconn=$(((nofile - 200) / 2))
	[ "$maxconn" -le 10000 ] || maxconn=10000
	alloc_port
	PORT1[haproxy]=$PORT
	alloc_port
	PORT2[haproxy]=$PORT
	cat >"$d/haproxy.cfg" <<EOF
# generated by bench/run.sh
global
    nbthread $WORKERS
    maxconn $maxconn

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    http-reuse always

frontend fe
    bind 127.0.0.1:${PORT1[haproxy]}
    bind 127.0.0.1:${PORT2[haproxy]} proto h2
    default_backend be

backend be
    server s1 $UP
EOF
	start_bg haproxy haproxy -db -f "$d/haproxy.cfg"
	PIDS1[haproxy]=$LAST_PID
	PIDS2[haproxy]=$LAST_PID
	check_target haproxy "$TMP/logs/haproxy.log"
}

start_caddy() {
	local d="$TMP/caddy"
	mkdir -p "$d/home"
	alloc_port
	PORT1[caddy]=$PORT
	PORT2[caddy]=$PORT
	cat >"$d/Caddyfile" <<EOF
# generated by bench/run.sh
{
	admin off
	auto_https off
	servers {
		protocols h1 h2c
	}
}

http://:${PORT1[caddy]} {
	bind 127.0.0.1
	reverse_proxy $UP {
		transport http {
			keepalive 2m
			keepalive_idle_conns 1024
			keepalive_idle_conns_per_host 1024
		}
	}
}
EOF
	start_bg caddy env GOMAXPROCS="$WORKERS" HOME="$d/home" XDG_DATA_HOME="$d/home" XDG_CONFIG_HOME="$d/home" \
		caddy run --adapter caddyfile --config "$d/Caddyfile"
	PIDS1[caddy]=$LAST_PID
	PIDS2[caddy]=$LAST_PID
	check_target caddy "$TMP/logs/caddy.log"
}

for t in "${TARGETS[@]}"; do
	[ -z "${SKIP[$t]:-}" ] || continue
	case "$t" in
	direct) start_direct || true ;;
	sluice) start_sluice || true ;;
	sluice+features) start_sluice_features || true ;;
	httputil) start_httputil || true ;;
	nginx) start_nginx || true ;;
	haproxy) start_haproxy || true ;;
	caddy) start_caddy || true ;;
	esac
	if [ -n "${SKIP[$t]:-}" ]; then
		# stop whatever was started for it, so it cannot disturb the others
		for p in ${PIDS1[$t]:-} ${PIDS2[$t]:-}; do stop_pids "$p"; done
	else
		say "bench: $t ready on 127.0.0.1:${PORT1[$t]}${PORT2[$t]:+ (h2c ${PORT2[$t]})}${H2_NA[$t]:+ (h2c n/a: ${H2_NA[$t]})}"
	fi
done

LIVE=()
for t in "${TARGETS[@]}"; do
	[ -n "${SKIP[$t]:-}" ] && continue
	LIVE+=("$t")
	[ -n "${PORT2[$t]:-}" ] || H2_NA[$t]=${H2_NA[$t]:-"no h2c listener"}
done
[ ${#LIVE[@]} -gt 0 ] || die "no target could be started"

# ---- accounting -------------------------------------------------------------------
# cpu_ticks PID...: utime+stime (+ cutime+cstime of reaped children) summed over the
# process trees rooted at the given pids, in clock ticks.
cpu_ticks() {
	local total=0 pid stat rest
	local -a f
	for pid in $(for r in "$@"; do tree_pids "$r"; done); do
		stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
		rest=${stat##*) }
		read -r -a f <<<"$rest"
		total=$((total + f[11] + f[12] + f[13] + f[14]))
	done
	printf '%s\n' "$total"
}
# reset_hwm PID...: reset the peak RSS of every process of the trees (clear_refs 5).
reset_hwm() {
	local pid
	for pid in $(for r in "$@"; do tree_pids "$r"; done); do
		echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true
	done
}
# hwm_kb PID...: VmHWM summed over the trees, in KiB.
hwm_kb() {
	local pid total=0 kb
	for pid in $(for r in "$@"; do tree_pids "$r"; done); do
		kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
		total=$((total + ${kb:-0}))
	done
	printf '%s\n' "$total"
}

# system_busy_ticks: busy CPU time of the whole machine (user+nice+system+irq+softirq).
system_busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }
# harness_ticks: CPU time of this script's reaped children (load generators included).
harness_ticks() {
	local stat rest
	local -a f
	stat=$(cat "/proc/$$/stat")
	rest=${stat##*) }
	read -r -a f <<<"$rest"
	printf '%s\n' $((f[11] + f[12] + f[13] + f[14]))
}

# ---- workloads ----------------------------------------------------------------------
BODY64K="$TMP/body64k"
head -c 65536 /dev/zero | tr '\0' a >"$BODY64K"
LUA_POST="$BENCH_DIR/wrk/post64k.lua"
[ -f "$LUA_POST" ] || die "missing $LUA_POST"
RUN_TIMEOUT=$((DURATION + 30))

warm_up() { # workload url-base
	case "$1" in
	small) h2load --h1 -n 3000 -c "$SMALL_CONNS" "$2/" ;;
	1m) h2load --h1 -n 48 -c "$BIG_CONNS" "$2/1m" ;;
	post) h2load --h1 -n 1000 -c "$SMALL_CONNS" -d "$BODY64K" "$2/upload" ;;
	h2c) h2load -n 3000 -c "$H2_CONNS" -m "$H2_STREAMS" "$2/" ;;
	fixed) h2load --h1 -n 1000 -c "$FIXED_CONNS" "$2/" ;;
	esac >/dev/null 2>&1 || true
}

# parse_wrk FILE: prints "requests rps p50_us p99_us p999_us errors"
parse_wrk() {
	awk '
	function us(s) {
		if (s ~ /us$/) return s + 0
		if (s ~ /ms$/) return (substr(s, 1, length(s) - 2) + 0) * 1000
		if (s ~ /m$/) return (substr(s, 1, length(s) - 1) + 0) * 60e6
		if (s ~ /s$/) return (substr(s, 1, length(s) - 1) + 0) * 1e6
		return -1
	}
	/ requests in / { req = $1 }
	/^Requests\/sec:/ { rps = $2 }
	/^ +50%/ { p50 = us($2) }
	/^ +99%/ { p99 = us($2) }
	/Non-2xx or 3xx responses:/ { err += $NF }
	/Socket errors:/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) err += $i + 0 }
	END {
		if (req == "" || rps == "") { print "- - - - - -"; exit }
		printf "%d %.1f %d %d - %d\n", req, rps, p50, p99, err
	}' "$1"
}

# parse_h2load FILE LOGFILE: same fields; latencies from the per-request log
parse_h2load() {
	local pcts
	pcts=$(awk -F'\t' '$2 ~ /^2/ { print $3 }' "$2" 2>/dev/null | sort -n | awk '
		{ a[NR] = $1 }
		END {
			if (NR == 0) { print "- -"; exit }
			i50 = int(0.50 * NR); if (i50 < 1) i50 = 1
			i99 = int(0.99 * NR); if (i99 < 1) i99 = 1
			print a[i50], a[i99]
		}')
	awk -v pcts="$pcts" '
	/^finished in/ { secs = $3 + 0 }
	/^requests:/ { ok = $8; bad = $10 + $12 + $14 }
	/^status codes:/ { non2xx = $5 + $7 + $9 }
	END {
		if (secs <= 0 || ok == "") { print "- - - - - -"; exit }
		split(pcts, p, " ")
		printf "%d %.1f %s %s - %d\n", ok, ok / secs, p[1], p[2], bad + non2xx
	}' "$1"
}

# parse_loadgen FILE
parse_loadgen() {
	awk '
	/^requests=/ {
		for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
		printf "%d %.1f %d %d %d %d\n", v["requests"], v["achieved_rps"], v["p50_us"], v["p99_us"], v["p999_us"], v["errors"] + v["dropped"]
		found = 1
	}
	END { if (!found) print "- - - - - -" }' "$1"
}

RESULTS="$TMP/results.tsv"
: >"$RESULTS"

run_one() { # workload target round
	local w=$1 t=$2 r=$3 port roots url out parsed
	local -a cmd
	if [ "$w" = h2c ]; then
		if [ -n "${H2_NA[$t]:-}" ]; then
			printf '%s\t%s\t%s\tna\n' "$w" "$t" "$r" >>"$RESULTS"
			return
		fi
		port=${PORT2[$t]}
		roots=${PIDS2[$t]}
	else
		port=${PORT1[$t]}
		roots=${PIDS1[$t]}
	fi
	url="http://127.0.0.1:$port"
	out="$TMP/out/$w.$t.$r.txt"
	case "$w" in
	small) cmd=(wrk -t1 -c"$SMALL_CONNS" -d"${DURATION}s" --latency "$url/") ;;
	1m) cmd=(wrk -t1 -c"$BIG_CONNS" -d"${DURATION}s" --latency "$url/1m") ;;
	post) cmd=(wrk -t1 -c"$SMALL_CONNS" -d"${DURATION}s" --latency -s "$LUA_POST" "$url/upload") ;;
	h2c) cmd=(h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D "$DURATION" --log-file "$out.log" "$url/") ;;
	fixed) cmd=("$LOADGEN" rate -url "$url/" -rate "$FIXED_RATE" -conns "$FIXED_CONNS" -duration "${DURATION}s") ;;
	esac

	warm_up "$w" "$url"
	local -a rootv=()
	read -r -a rootv <<<"$roots"
	local p0=0 p1=0 b0 b1 hwm=-
	if [ ${#rootv[@]} -gt 0 ]; then
		reset_hwm "${rootv[@]}"
		p0=$(cpu_ticks "${rootv[@]}")
	fi
	b0=$(cpu_ticks "$BACKEND_PID")
	local s0 h0 t0 s1 h1 t1
	s0=$(system_busy_ticks)
	h0=$(harness_ticks)
	t0=$(date +%s%N)
	timeout "$RUN_TIMEOUT" "${cmd[@]}" >"$out" 2>&1 || say "bench: $w/$t round $r: ${cmd[0]} exited with an error (see $out)"
	t1=$(date +%s%N)
	h1=$(harness_ticks)
	s1=$(system_busy_ticks)
	b1=$(cpu_ticks "$BACKEND_PID")
	if [ ${#rootv[@]} -gt 0 ]; then
		p1=$(cpu_ticks "${rootv[@]}")
		hwm=$(hwm_kb "${rootv[@]}")
	fi
	case "$w" in
	h2c) parsed=$(parse_h2load "$out" "$out.log") ;;
	fixed) parsed=$(parse_loadgen "$out") ;;
	*) parsed=$(parse_wrk "$out") ;;
	esac
	rm -f "$out.log"
	# the access log of sluice+features would otherwise grow for the whole run
	[ ! -f "$TMP/access.log" ] || : >"$TMP/access.log"
	local pcpu=-
	[ ${#rootv[@]} -eq 0 ] || pcpu=$((p1 - p0))
	# workload target round | requests rps p50 p99 p999 errors | proxy_ticks backend_ticks hwm_kb
	# CPU of everything else on the machine during the run, in cores: all busy
	# time minus the target's, the backend's and the harness's (load generator included)
	local other
	other=$(awk -v s=$((s1 - s0)) -v p="$pcpu" -v b=$((b1 - b0)) -v h=$((h1 - h0)) -v ns=$((t1 - t0)) -v hz="$CLK_TCK" \
		'BEGIN { o = s - (p == "-" ? 0 : p) - b - h; if (o < 0) o = 0; printf "%.2f", o / hz / (ns / 1e9) }')
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$t" "$r" "${parsed// /$'\t'}" "$pcpu" "$((b1 - b0))" "$hwm" "$other" >>"$RESULTS"
	local req=${parsed%% *}
	local rest=${parsed#* }
	say "bench:   $(printf '%-6s %-16s' "$w" "$t") ${rest%% *} req/s, $req requests, proxy CPU $(awk -v c="$pcpu" -v n="$req" -v hz="$CLK_TCK" 'BEGIN { if (c == "-" || n + 0 == 0) print "-"; else printf "%.1f µs/req", c / hz * 1e6 / n }'), other load $other cores"
}

# ---- the run ----------------------------------------------------------------------------
n_runs=$((ROUNDS * ${#WORKLOADS[@]} * ${#LIVE[@]}))
say "bench: ${#LIVE[@]} target(s) [${LIVE[*]}] x ${#WORKLOADS[@]} workload(s) [${WORKLOADS[*]}] x $ROUNDS round(s) of ${DURATION}s: about $((n_runs * (DURATION + 1) / 60 + 1)) min"
START_TIME=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$ROUNDS"); do
	say "bench: round $r of $ROUNDS"
	for w in "${WORKLOADS[@]}"; do
		for t in "${LIVE[@]}"; do
			run_one "$w" "$t" "$r"
		done
	done
done
ELAPSED=$(($(date +%s) - START_TIME))
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- metrics -------------------------------------------------------------------------
# scrape PORT: GET /metrics from a sluice admin endpoint (bash's /dev/tcp,
# HTTP/1.0 so the server closes when done); the body on stdout.
scrape() {
	local port=$1
	(
		exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
		printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
		timeout 10 cat <&3
	) 2>/dev/null | tr -d '\r' | sed '1,/^$/d'
}
# metrics_summary FILE: one line from the sluice_ series of a scrape.
metrics_summary() {
	awk '
	/^sluice_requests_total\{/ { n += $NF; if ($0 ~ /code="2/) ok += $NF }
	/^sluice_retries_total / { r = $NF }
	/^sluice_aborted_responses_total / { a = $NF }
	/^sluice_upstream_failures_total\{/ { f += $NF }
	/^sluice_upstream_healthy\{/ { h = h (h == "" ? "" : ",") $NF }
	END {
		if (n == "") { print "no sluice_requests_total in the scrape"; exit }
		printf "%.0f requests counted (%.0f 2xx), %.0f retries, %.0f aborted, %.0f upstream failures, upstream healthy=%s", n, ok, r, a, f, h
	}' "$1"
}
METRICS_LINES=()
for t in "${LIVE[@]}"; do
	for m_inst in 1 2; do
		if [ "$m_inst" = 1 ]; then m_port=${ADMIN1[$t]:-} m_name=$t; else m_port=${ADMIN2[$t]:-} m_name=$t-h2c; fi
		[ -n "$m_port" ] || continue
		m_file="$TMP/logs/$m_name.metrics.txt"
		if scrape "$m_port" >"$m_file" && grep -q '^sluice_requests_total' "$m_file"; then
			METRICS_LINES+=("$m_name /metrics after the run: $(metrics_summary "$m_file")")
		else
			METRICS_LINES+=("$m_name /metrics after the run: scrape of 127.0.0.1:$m_port failed")
		fi
		say "bench: ${METRICS_LINES[-1]}"
	done
done

# ---- report ---------------------------------------------------------------------------
# Per workload and target: the median over rounds of every figure, the worst
# (largest) peak RSS, the sum of errors, the spread of the headline figure, and
# the lowest and highest p99 of a round.
summarize() {
	awk -F'\t' -v hz="$CLK_TCK" '
	function median(list,    n, a, i, j, t) {
		n = split(list, a, " ")
		if (n == 0) return "-"
		for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
		if (n % 2) return a[(n + 1) / 2]
		return (a[n / 2] + a[n / 2 + 1]) / 2
	}
	function add(k, v) { if (v != "-" && v != "") L[k] = L[k] " " v }
	{
		key = $1 SUBSEP $2
		if (!(key in seen)) { seen[key] = 1; order[++n] = key }
		if ($4 == "na") { na[key] = 1; next }
		if ($4 == "-") { failed[key]++; next }
		req = $4 + 0
		add(key SUBSEP "rps", $5); add(key SUBSEP "p50", $6); add(key SUBSEP "p99", $7); add(key SUBSEP "p999", $8)
		err[key] += $9
		if ($10 != "-" && req > 0) add(key SUBSEP "pcpu", $10 / hz * 1e6 / req)
		if (req > 0) add(key SUBSEP "bcpu", $11 / hz * 1e6 / req)
		if ($12 != "-" && $12 + 0 > hwm[key] + 0) hwm[key] = $12
		rps = $5 + 0
		if (!(key in lo) || rps < lo[key]) lo[key] = rps
		if (!(key in hi) || rps > hi[key]) hi[key] = rps
		if ($7 != "-") {
			p99 = $7 + 0
			if (!(key in lo99) || p99 < lo99[key]) lo99[key] = p99
			if (!(key in hi99) || p99 > hi99[key]) hi99[key] = p99
		}
	}
	END {
		for (i = 1; i <= n; i++) {
			key = order[i]; split(key, kt, SUBSEP)
			if (key in na && !((key SUBSEP "rps") in L)) { print kt[1], kt[2], "na"; continue }
			if (!((key SUBSEP "rps") in L)) { print kt[1], kt[2], "failed"; continue }
			m = median(L[key SUBSEP "rps"])
			spread = (m > 0) ? (hi[key] - lo[key]) / m * 100 : 0
			print kt[1], kt[2], "ok", m, median(L[key SUBSEP "p50"]), median(L[key SUBSEP "p99"]), median(L[key SUBSEP "p999"]),
				median(L[key SUBSEP "pcpu"]), median(L[key SUBSEP "bcpu"]), (key in hwm ? hwm[key] : "-"), err[key] + failed[key], spread,
				(key in lo99 ? lo99[key] : "-"), (key in hi99 ? hi99[key] : "-")
		}
	}' "$RESULTS"
}

render() {
	summarize | awk -v rounds="$ROUNDS" '
	function lat(us) {
		if (us == "-" || us == "") return "-"
		us += 0
		if (us < 1000) return sprintf("%d µs", us)
		if (us < 1e6) return sprintf("%.2f ms", us / 1000)
		return sprintf("%.2f s", us / 1e6)
	}
	function ratio(a, b) { if (a == "-" || b == "" || b == "-" || b + 0 == 0) return "—"; return sprintf("%.2f", a / b) }
	function num(v, fmt) { if (v == "-" || v == "") return "—"; return sprintf(fmt, v) }
	function mib(kb) { if (kb == "-" || kb == "") return "—"; return sprintf("%.1f", kb / 1024) }
	{
		w = $1; t = $2
		if (!(w in wseen)) { wseen[w] = 1; worder[++nw] = w }
		rows[w] = rows[w] " " t
		st[w, t] = $3
		if ($3 != "ok") next
		rps[w, t] = $4; p50[w, t] = $5; p99[w, t] = $6; p999[w, t] = $7
		pcpu[w, t] = $8; bcpu[w, t] = $9; hwm[w, t] = $10; err[w, t] = $11; spr[w, t] = $12
		lo99[w, t] = $13; hi99[w, t] = $14
	}
	END {
		title["small"] = "Small GET, HTTP/1.1 keep-alive (wrk -t1 -c" ENVIRON["SMALL_CONNS"] ", ~100-byte body)"
		title["1m"] = "1 MiB GET, HTTP/1.1 keep-alive (wrk -t1 -c" ENVIRON["BIG_CONNS"] ")"
		title["post"] = "64 KiB POST, HTTP/1.1 keep-alive (wrk -t1 -c" ENVIRON["SMALL_CONNS"] ")"
		title["h2c"] = "Small GET over h2c, prior knowledge (h2load -c" ENVIRON["H2_CONNS"] " -m" ENVIRON["H2_STREAMS"] "); proxies talk HTTP/1.1 upstream"
		title["fixed"] = "Fixed rate " ENVIRON["FIXED_RATE"] " req/s over " ENVIRON["FIXED_CONNS"] " keep-alive connections, latency from scheduled send time (bench/loadgen)"
		for (i = 1; i <= nw; i++) {
			w = worder[i]
			print "### " title[w]
			print ""
			sp = (rounds > 1) ? " spread |" : ""
			spd = (rounds > 1) ? "---:|" : ""
			if (w == "fixed") {
				print "| target | achieved req/s | p50 | p99 | p99.9 | p99 ×direct | p99 ×sluice | proxy CPU µs/req | CPU ×sluice | backend CPU µs/req | peak RSS MiB | errors |" (rounds > 1 ? " p99 of the rounds |" : "")
				print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" spd
			} else if (w == "1m") {
				print "| target | MiB/s | ×direct | ×sluice | p50 | p99 | proxy CPU ms/MiB | CPU ×sluice | backend CPU ms/MiB | peak RSS MiB | errors |" sp
				print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" spd
			} else {
				print "| target | req/s | ×direct | ×sluice | p50 | p99 | proxy CPU µs/req | CPU ×sluice | backend CPU µs/req | peak RSS MiB | errors |" sp
				print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" spd
			}
			n = split(rows[w], ts, " ")
			for (j = 1; j <= n; j++) {
				t = ts[j]
				if (st[w, t] != "ok") {
					cols = ((w == "fixed") ? 12 : 11) + (rounds > 1)
					line = "| " t " | " (st[w, t] == "na" ? "n/a" : "failed") " |"
					for (k = 3; k <= cols; k++) line = line " — |"
					print line
					continue
				}
				d = ((w, "direct") in rps && st[w, "direct"] == "ok") ? "direct" : ""
				s = (st[w, "sluice"] == "ok") ? "sluice" : ""
				if (w == "1m") { pc = num(pcpu[w, t] / 1000, "%.3f"); bc = num(bcpu[w, t] / 1000, "%.3f"); if (pcpu[w, t] == "-") pc = "—" }
				else { pc = num(pcpu[w, t], "%.1f"); bc = num(bcpu[w, t], "%.1f") }
				cs = (s != "" && pcpu[w, t] != "-") ? ratio(pcpu[w, t], pcpu[w, s]) : "—"
				if (w == "fixed") {
					printf "| %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |", t, rps[w, t], lat(p50[w, t]), lat(p99[w, t]), lat(p999[w, t]),
						(d != "" ? ratio(p99[w, t], p99[w, d]) : "—"), (s != "" ? ratio(p99[w, t], p99[w, s]) : "—"),
						pc, cs, bc, mib(hwm[w, t]), err[w, t]
					if (rounds > 1) printf " %s |", (lo99[w, t] == "-" ? "—" : lat(lo99[w, t]) " – " lat(hi99[w, t]))
					printf "\n"
				} else {
					printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |", t, sprintf("%.0f", rps[w, t]),
						(d != "" ? ratio(rps[w, t], rps[w, d]) : "—"), (s != "" ? ratio(rps[w, t], rps[w, s]) : "—"),
						lat(p50[w, t]), lat(p99[w, t]), pc, cs, bc, mib(hwm[w, t]), err[w, t]
					if (rounds > 1) printf " %.0f%% |", spr[w, t]
					printf "\n"
				}
			}
			print ""
		}
	}'
}

# paired_p99: the fixed-rate p99 round by round. The targets of a round run
# back to back, under the same conditions, so counting the rounds in which
# sluice was at or below another target says more than two medians of a few
# noisy rounds do.
paired_p99() {
	awk -F'\t' '$1 == "fixed" && $4 != "na" && $4 != "-" && $7 != "-" {
		if (!($2 in seen)) { seen[$2] = 1; order[++n] = $2 }
		p[$2, $3] = $7 + 0; rounds[$3] = 1
	}
	END {
		for (i = 1; i <= n; i++) {
			s = order[i]
			if (s !~ /^sluice/) continue
			line = ""
			for (j = 1; j <= n; j++) {
				t = order[j]
				if (t ~ /^sluice/ || t == "direct") continue
				k = 0; m = 0
				for (r in rounds) if (((s, r) in p) && ((t, r) in p)) { m++; if (p[s, r] <= p[t, r]) k++ }
				if (m) line = line (line == "" ? "" : ", ") t "\047s in " k " of " m
			}
			if (line != "") print "- " s "\047s p99 was at or below " line " rounds"
		}
	}' "$RESULTS"
}

versions() {
	local v
	printf -- '- machine: %s cores, %s, kernel %s\n' "$(nproc)" \
		"$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo unknown CPU)" "$(uname -r)"
	# How an idle CPU sleeps moves the fixed-rate latency of every target more
	# than most code changes do (docs/performance.md, "Idle CPUs on a virtual
	# machine").
	local idle
	idle=$(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo unknown)
	[ ! -r /sys/module/haltpoll/parameters/guest_halt_poll_ns ] ||
		idle="$idle, guest_halt_poll_ns $(cat /sys/module/haltpoll/parameters/guest_halt_poll_ns)"
	printf -- '- cpuidle driver: %s\n' "$idle"
	printf -- '- go: %s\n' "$(go version | awk '{print $3}')"
	if has_target sluice || has_target sluice+features; then
		v=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo "no commit")
		[ -z "$(git -C "$REPO_DIR" status --porcelain 2>/dev/null | head -1)" ] || v="$v + uncommitted changes"
		local feat="--access-log FILE --retries 2"
		[ "$SLUICE_HAS_ADMIN" = 0 ] || feat="$feat --admin 127.0.0.1:PORT"
		[ -z "$SLUICE_FEATURE_FLAGS" ] || feat="$feat $SLUICE_FEATURE_FLAGS"
		printf -- '- sluice: %s; h2c flag: %s; sluice+features flags: %s (passive health on by default)\n' "$v" \
			"${SLUICE_H2C_FLAG:-none}" "$feat"
		local l
		for l in "${METRICS_LINES[@]}"; do printf -- '- %s\n' "$l"; done
	fi
	! has_target nginx || printf -- '- nginx: %s\n' "$(nginx -v 2>&1 | sed 's/.*version: //')"
	! has_target haproxy || printf -- '- haproxy: %s\n' "$(haproxy -v 2>&1 | head -1 | awk '{print $3}')"
	! has_target caddy || printf -- '- caddy: %s\n' "$(caddy version 2>&1 | awk '{print $1}')"
	printf -- '- wrk: %s; h2load: %s\n' "$(wrk -v 2>&1 | head -1 | awk '{print $2}')" "$(h2load --version 2>&1 | awk '{print $2}')"
}

{
	echo "# sluice benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "\`bench/run.sh$([ "$QUICK" = 1 ] && echo ' --quick')${TARGETS_ARG:+ --targets $TARGETS_ARG}${WORKLOADS_ARG:+ --workloads $WORKLOADS_ARG}\`:" \
		"$ROUNDS round(s), ${DURATION}s per run, targets interleaved in every round, all on loopback," \
		"$WORKERS workers each; figures are medians over rounds; run took $((ELAPSED / 60))m$((ELAPSED % 60))s."
	echo
	versions
	awk -F'\t' -v n="$(nproc)" '$4 != "na" && NF >= 13 { s += $13; k++; if ($13 + 0 > m + 0) { m = $13; at = $1 "/" $2 " round " $3 } }
		END { if (k) printf "- other processes on the machine used %.2f of %d cores on average during the measured runs, at most %.2f (%s); on a quiet machine it is 0.1-0.2 (loopback softirq work), well above that means the figures are noisy\n", s / k, n, m, at }' "$RESULTS"
	echo "- load average (1, 5, 15 min) at start: $LOAD_START; at end: $LOAD_END"
	echo
	for t in "${TARGETS[@]}"; do
		[ -z "${SKIP[$t]:-}" ] || echo "- **$t skipped**: ${SKIP[$t]}"
	done
	if printf '%s\n' "${WORKLOADS[@]}" | grep -qx h2c; then
		for t in "${LIVE[@]}"; do
			[ -z "${H2_NA[$t]:-}" ] || echo "- $t has no h2c figure: ${H2_NA[$t]}"
		done
	fi
	echo
	export SMALL_CONNS BIG_CONNS H2_CONNS H2_STREAMS FIXED_RATE FIXED_CONNS
	render
	if [ "$ROUNDS" -gt 1 ] && printf '%s\n' "${WORKLOADS[@]}" | grep -qx fixed; then
		paired=$(paired_p99)
		if [ -n "$paired" ]; then
			echo "Fixed rate, round by round (the targets of a round run back to back):"
			echo
			echo "$paired"
			echo
		fi
	fi
	echo "CPU = utime+stime of the target's processes (the backend's, in the backend column) over the measured run," \
		"divided by requests completed; peak RSS = VmHWM summed over the target's processes (reset before each run)." \
		"×direct / ×sluice = this row divided by that row. The machine is shared and noisy: compare ratios within one run, not absolute figures across runs."
} >"$TMP/report.md"

mkdir -p "$(dirname "$OUT_FILE")"
cp "$TMP/report.md" "$OUT_FILE"
cat "$TMP/report.md"
say "bench: report written to $OUT_FILE"
