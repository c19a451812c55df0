#!/usr/bin/env bash
# bench/deliver/run.sh: delivery throughput and latency (make bench-deliver).
#
# Starts a throwaway cluster (tmp_install, test/odoo_sync.conf) and nginx
# (Debian's nginx-light, as an unprivileged user, on a free loopback port,
# config in a temp dir, answering 200 to every POST), then measures:
#   1. the raw client: bench/deliver/rawcurl.c, a plain libcurl multi client
#      with the same number of keep-alive connections (16) -> requests/s
#   2. odoo_sync unbatched: N events committed at once (one transaction, as a
#      big Odoo import would), one CloudEvent per request, concurrency 16
#      -> events/s from that commit to the last 2xx
#   3. odoo_sync batched: batch_size 100 -> events/s
#   4. latency: pgbench commits single events at a steady 1,000/s for
#      LAT_SECONDS; nginx logs $msec and webhook-id; commit -> sink p50/p99
# and ends with events_per_s_batched=N, latency_p99_ms=X, ratio_vs_raw_curl=X.XX.
#
# Latency is from the event's commit timestamp (track_commit_timestamp,
# pg_xact_commit_timestamp of the event row: taken as the commit record is
# written, before the WAL flush) to nginx's $msec plus 0.5 ms: $msec is the
# time nginx read at its last wake-up, truncated to the millisecond, so the
# request arrived within the millisecond after it (the midpoint is the
# unbiased estimate).  Until 2026-11-29 it was from captured_at (now(), the
# inserting transaction's start, which adds the INSERT and its fan-out,
# ~0.3 ms, up to 1.5 ms on a busy machine) to the bare $msec (0.5 ms early
# on average); both are still printed, "from the inserting transaction's
# start".
#
# Knobs: N_UNBATCHED (50000), N_BATCHED (300000), RAW_REQUESTS (200000),
# CONC (16), LAT_SECONDS (10), LAT_RATE (1000); LANES=1 [FLOOD=100000,
# LANES_SECONDS=3, LANES_RATE=100] adds the lanes phase (more seconds, a
# larger flood to outlast them, give a steadier p99); BENCH_CONF="setting =
# value" lines for the cluster; PROFILE=1 top statements;
# PERF=unbatched|batched a profile.
set -euo pipefail
. "$(cd "$(dirname "$0")/../.." && pwd)/test/lib.sh"

N_UNBATCHED=${N_UNBATCHED:-50000}
N_BATCHED=${N_BATCHED:-300000}
RAW_REQUESTS=${RAW_REQUESTS:-200000}
CONC=${CONC:-16}
LAT_SECONDS=${LAT_SECONDS:-10}
LAT_RATE=${LAT_RATE:-1000}

work=$(mktemp -d /tmp/osdeliver_bench.XXXXXX)
chmod 755 "$work"; chown "$PG_USER" "$work"
nginx_pid=""
cleanup() {
	# the master's PID (the one we started), from its pid file
	if [ -f "$work/nginx/nginx.pid" ]; then
		nginx_pid=$(cat "$work/nginx/nginx.pid")
		kill "$nginx_pid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$nginx_pid" 2>/dev/null || break; sleep 0.1; done
	fi
	stop_cluster "$work/pg"
	[ -n "${KEEP_BENCH:-}" ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT

make_tmp_install
gcc -O2 -Wall -Wextra -o "$work/rawcurl" "$TOP/bench/deliver/rawcurl.c" -lcurl

# ---------------------------------------------------------------- nginx
ngport=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
daemon off;
events { worker_connections 1000; }
http {
	access_log off;
	client_body_temp_path $work/nginx/body;
	proxy_temp_path $work/nginx/proxy;
	fastcgi_temp_path $work/nginx/fastcgi;
	uwsgi_temp_path $work/nginx/uwsgi;
	scgi_temp_path $work/nginx/scgi;
	client_body_buffer_size 1m;
	client_max_body_size 64m;
	keepalive_requests 100000000;
	keepalive_timeout 300s;
	log_format lat '\$msec \$http_webhook_id';
	server {
		listen 127.0.0.1:$ngport;
		location / { return 200 'ok'; }
		location /lat { access_log $work/nginx/lat.log lat; return 200 'ok'; }
		location /lanes { access_log $work/nginx/lanes.log lat; return 200 'ok'; }
	}
}
NGINX
chown -R "$PG_USER" "$work/nginx"
as_pg /usr/sbin/nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" \
	</dev/null >"$work/nginx/stdout.log" 2>&1 &
for _ in $(seq 100); do
	curl -s -o /dev/null -X POST "http://127.0.0.1:$ngport/" && break
	sleep 0.05
done
curl -sf -o /dev/null -X POST -d '{}' "http://127.0.0.1:$ngport/" || { echo "nginx did not start"; cat "$work/nginx/error.log"; exit 1; }

# ---------------------------------------------------------------- cluster
pgport=$(free_port)
EXTRA_CONF="odoo_sync.allow_private_endpoints = on
shared_buffers = 512MB
max_wal_size = 4GB
checkpoint_timeout = 30min
synchronous_commit = on
track_commit_timestamp = on
log_min_messages = warning
${BENCH_CONF:-}
${PROFILE:+shared_preload_libraries = 'odoo_sync,pg_stat_statements'
pg_stat_statements.track = all}" start_cluster "$work/pg" "$pgport"
psql_() { as_pg psql -X -q -A -t -h 127.0.0.1 -p "$pgport" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
psql_ -c "CREATE EXTENSION odoo_sync"
for _ in $(seq 100); do
	[ "$(psql_ -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'odoo_sync deliver'")" = 1 ] && break
	sleep 0.1
done

echo "== delivery benchmark: nginx on 127.0.0.1:$ngport, PostgreSQL on 127.0.0.1:$pgport, $(nproc) cores"

# ---------------------------------------------------------------- 1. raw client
"$work/rawcurl" "http://127.0.0.1:$ngport/" "$CONC" 20000 >/dev/null   # warm-up
raw_line=$("$work/rawcurl" "http://127.0.0.1:$ngport/" "$CONC" "$RAW_REQUESTS")
raw_rps=$(sed -n 's/.*requests_per_s=\([0-9]*\).*/\1/p' <<<"$raw_line")
echo "raw libcurl multi client, $CONC keep-alive connections: $raw_line"

# ---------------------------------------------------------------- 2./3. throughput
# insert_events N TYPE: one transaction, N events over N aggregates (a
# shipment each), as capture would write them (with capture's time-ordered
# event ids, odoo_sync._event_id(): random UUIDs put each delivery_done
# index entry on a random page, ~1 us per event more than production pays);
# prints the server's clock at the end of the transaction (its commit,
# within a millisecond).
run=0
insert_events() {
	run=$((run + 1))
	psql_ -c "INSERT INTO odoo_sync.event (id, type, source, aggregate_type, aggregate_id,
		aggregate_seq, lane, correlation_id, payload)
		SELECT odoo_sync._event_id(), '$2', 'odoo://bench', 'shipment', '$2/$run/' || g, 1, 'bulk',
			   'SO' || g, jsonb_build_object('picking', 'WH/OUT/' || g, 'qty', g % 7, 'state', 'assigned')
		  FROM generate_series(1, $1) g;
		SELECT extract(epoch FROM clock_timestamp())"
}
# drain ENDPOINT: seconds from now until the endpoint's queue is empty
drain() {
	local t0 t1
	t0=$(date +%s.%N)
	while [ "$(psql_ -c "SELECT backlog FROM odoo_sync.endpoint_status WHERE name = '$1'")" != 0 ]; do
		sleep 0.2
	done
	t1=$(date +%s.%N)
	echo "$t0 $t1" | awk '{printf "%.3f", $2 - $1}'
}
# rate ENDPOINT N T0: events/s from T0 (the inserting commit) to
# the last 2xx, read from the delivery history (the drain loop only waits)
rate() {
	psql_ -c "SELECT round($2 / (extract(epoch FROM max(d.finished_at)) - $3))
		FROM odoo_sync.delivery_done d JOIN odoo_sync.endpoint e ON e.id = d.endpoint_id
		WHERE e.name = '$1' AND d.state = 'delivered'"
}

# cpu_snapshot: "pid ticks kind" for the processes of this cluster and of
# this nginx (utime + stime in clock ticks, kind from the process title),
# and "0 ticks machine" for the whole machine (both cores, other users too)
cpu_snapshot() {
	local p t k pm
	pm=$(head -1 "$work/pg/data/postmaster.pid")
	for p in $(pgrep -P "$pm") $(cat "$work/nginx/nginx.pid") $(pgrep -P "$(cat "$work/nginx/nginx.pid")"); do
		[ -r "/proc/$p/stat" ] || continue
		t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null) || continue
		k=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | sed -E 's/^postgres: //;
			s/^nginx.*/nginx/; s/^odoo_sync (deliver critical|[a-z]+).*/odoo_sync_\1/; s/^autovacuum worker.*/autovacuum/;
			s/.*127\.0\.0\.1.*/backend/; s/ +$//' | tr ' ' '_' | cut -c1-30)
		[ -n "$t" ] && echo "$p $t ${k:-other}"
	done
	awk '/^cpu / {print "0", $2 + $3 + $4 + $7 + $8, "machine"}' /proc/stat
}
# cpu_report A B: CPU centiseconds per process kind between two snapshots
cpu_report() {
	join <(sort "$1") <(sort "$2") |
	awk '{d = $4 - $2; k = $3; cpu[k] += d; if (k != "machine") tot += d} END {
		for (k in cpu) if (cpu[k] > 0 && k != "machine") printf "%s=%d ", k, cpu[k];
		printf "this_benchmark=%d machine=%d", tot, cpu["machine"] }'
}

# PERF=unbatched|batched: a perf profile of the deliver worker in that phase
perf_start() {
	[ "${PERF:-}" = "$1" ] || return 0
	dpid=$(psql_ -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'odoo_sync deliver'")
	perf record -F 999 -g -o "$work/perf.data" -p "$dpid" -- sleep 4 >"$work/perf.log" 2>&1 &
	perf_pid=$!
}
perf_show() {
	[ "${PERF:-}" = "$1" ] || return 0
	wait "$perf_pid" || cat "$work/perf.log"
	ls -l "$work/perf.data" >&2
	perf report -i "$work/perf.data" --stdio --no-children --percent-limit 1 -g none 2>/dev/null |
		grep -v '^#' | grep -v '^$' | head -40
}

psql_ -c "SELECT odoo_sync.create_endpoint('unbatched', 'http://127.0.0.1:$ngport/u',
	secret => 'whsec_YmVuY2htYXJrLXNlY3JldC1rZXktMzJieXRlcyE=', concurrency => $CONC)" >/dev/null
psql_ -c "SELECT odoo_sync.subscribe('unbatched', '{bench.unbatched}')" >/dev/null
psql_ -c "SELECT odoo_sync.create_endpoint('batched', 'http://127.0.0.1:$ngport/b',
	secret => 'whsec_YmVuY2htYXJrLXNlY3JldC1rZXktMzJieXRlcyE=', concurrency => $CONC, batch_size => 100)" >/dev/null
psql_ -c "SELECT odoo_sync.subscribe('batched', '{bench.batched}')" >/dev/null
sleep 1.2   # the worker picks up new endpoints within a second

insert_events 2000 bench.unbatched >/dev/null; drain unbatched >/dev/null     # warm-up
psql_ -c "DELETE FROM odoo_sync.delivery_done"

t0=$(insert_events "$N_UNBATCHED" bench.unbatched)
cpu_snapshot >"$work/cpu_u0"
perf_start unbatched
secs=$(drain unbatched)
cpu_snapshot >"$work/cpu_u1"
perf_show unbatched
unb=$(rate unbatched "$N_UNBATCHED" "$t0")
echo "odoo_sync unbatched: $N_UNBATCHED events, concurrency $CONC: $unb events/s (queue drained ${secs}s after commit)"
echo "  CPU centiseconds while it drained: $(cpu_report "$work/cpu_u0" "$work/cpu_u1")"

t0=$(insert_events "$N_BATCHED" bench.batched)
cpu_snapshot >"$work/cpu_b0"
perf_start batched
secs=$(drain batched)
cpu_snapshot >"$work/cpu_b1"
perf_show batched
bat=$(rate batched "$N_BATCHED" "$t0")
echo "odoo_sync batched(100): $N_BATCHED events, concurrency $CONC: $bat events/s (queue drained ${secs}s after commit)"
echo "  CPU centiseconds while it drained: $(cpu_report "$work/cpu_b0" "$work/cpu_b1")"

# ---------------------------------------------------------------- 4. latency at a steady rate
psql_ -c "SELECT odoo_sync.create_endpoint('latency', 'http://127.0.0.1:$ngport/lat',
	secret => 'whsec_YmVuY2htYXJrLXNlY3JldC1rZXktMzJieXRlcyE=', concurrency => $CONC)" >/dev/null
psql_ -c "SELECT odoo_sync.subscribe('latency', '{dispatch.order.ready}')" >/dev/null
psql_ -c "VACUUM ANALYZE odoo_sync.delivery"
sleep 1.2
cat >"$work/lat.sql" <<'SQL'
INSERT INTO odoo_sync.event (id, type, source, aggregate_type, aggregate_id, aggregate_seq, lane, payload)
VALUES (odoo_sync._event_id(), 'dispatch.order.ready', 'odoo://bench', 'shipment', gen_random_uuid()::text, 1,
        'critical', '{"picking": "WH/OUT/00042", "carrier": 2}');
SQL
chown "$PG_USER" "$work/lat.sql"
as_pg pgbench -n -h 127.0.0.1 -p "$pgport" -U postgres -c 4 -j 2 -R "$LAT_RATE" -T "$LAT_SECONDS" \
	-f "$work/lat.sql" postgres >"$work/pgbench.out" 2>&1 || { cat "$work/pgbench.out"; exit 1; }
drain latency >/dev/null
sent=$(wc -l <"$work/nginx/lat.log")
psql_ -c "CREATE TABLE lat (msec numeric, id uuid)"
awk '{print $1 "\t" $2}' "$work/nginx/lat.log" | psql_ -c "COPY lat FROM STDIN"
read -r p50 p99 s50 s99 <<<"$(psql_ -F ' ' -c "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2),
	round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 2),
	round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms_start)::numeric, 2),
	round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms_start)::numeric, 2)
	FROM (SELECT (l.msec + 0.0005 - extract(epoch FROM pg_xact_commit_timestamp(e.xmin))) * 1000 AS ms,
	             (l.msec + 0.0005 - extract(epoch FROM e.captured_at)) * 1000 AS ms_start
	        FROM lat l JOIN odoo_sync.event e ON e.id = l.id) x")"
tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$work/pgbench.out" | head -1)
echo "latency at ${LAT_RATE} events/s for ${LAT_SECONDS}s ($sent events, pgbench tps $tps): commit -> sink p50 ${p50} ms, p99 ${p99} ms (from the inserting transaction's start: p50 ${s50} ms, p99 ${s99} ms)"
psql_ -c "SELECT 'endpoint_status: ' || name || ' delivered_5m=' || delivered_5m || ' p50=' || latency_p50_ms || 'ms p99=' || latency_p99_ms || 'ms (commit -> 2xx recorded)' FROM odoo_sync.endpoint_status WHERE name = 'latency'"

# ---------------------------------------------------------------- 5. lanes (LANES=1)
# critical events at 100/s on an idle endpoint, then again while a flood of
# FLOOD bulk events (inventory.changed) drains through the same endpoint.
# Opt-in: it queues 100k bulk deliveries and waits for them to drain
# (docs/delivery.md, known limits, has the current figures).
if [ -n "${LANES:-}" ]; then
psql_ -c "SELECT odoo_sync.create_endpoint('lanes', 'http://127.0.0.1:$ngport/lanes', concurrency => $CONC)" >/dev/null
psql_ -c "SELECT odoo_sync.subscribe('lanes', '{dispatch.order.ready,inventory.changed}')" >/dev/null
psql_ -c "CREATE TABLE lanes_phase (phase text, since timestamptz)"
sleep 1.2
sed 's/dispatch.order.ready/dispatch.order.ready/' "$work/lat.sql" >"$work/lanes.sql"
psql_ -c "INSERT INTO lanes_phase VALUES ('idle', clock_timestamp())"
as_pg pgbench -n -h 127.0.0.1 -p "$pgport" -U postgres -c 2 -j 1 -R "${LANES_RATE:-100}" -T "${LANES_SECONDS:-3}" -f "$work/lanes.sql" postgres >/dev/null 2>&1
drain lanes >/dev/null
psql_ -c "INSERT INTO odoo_sync.event (id, type, source, aggregate_type, aggregate_id, aggregate_seq, lane, payload)
	SELECT odoo_sync._event_id(), 'inventory.changed', 'odoo://bench', 'product', 'flood/' || g, 1, 'bulk',
		   jsonb_build_object('product', g, 'qty', g % 11) FROM generate_series(1, ${FLOOD:-100000}) g"
psql_ -c "INSERT INTO lanes_phase VALUES ('flood', clock_timestamp())"
cpu_snapshot >"$work/cpu0"
as_pg pgbench -n -h 127.0.0.1 -p "$pgport" -U postgres -c 2 -j 1 -R "${LANES_RATE:-100}" -T "${LANES_SECONDS:-3}" -f "$work/lanes.sql" postgres >/dev/null 2>&1
cpu_snapshot >"$work/cpu1"
left=$(psql_ -c "SELECT count(*) FROM odoo_sync.deliveries
	WHERE endpoint = 'lanes' AND lane = 'bulk' AND state IN ('pending', 'in_flight')")
drain lanes >/dev/null
psql_ -c "CREATE TABLE lanes_log (msec numeric, id uuid)"
awk '{print $1 "\t" $2}' "$work/nginx/lanes.log" | psql_ -c "COPY lanes_log FROM STDIN"
read -r lidle lflood sidle sflood <<<"$(psql_ -F ' ' -c "WITH c AS (
	SELECT (SELECT phase FROM lanes_phase p WHERE p.since <= e.captured_at ORDER BY since DESC LIMIT 1) AS phase,
	       (l.msec + 0.0005 - extract(epoch FROM pg_xact_commit_timestamp(e.xmin))) * 1000 AS ms,
	       (l.msec + 0.0005 - extract(epoch FROM e.captured_at)) * 1000 AS ms_start
	  FROM lanes_log l JOIN odoo_sync.event e ON e.id = l.id WHERE e.type = 'dispatch.order.ready')
	SELECT round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) FILTER (WHERE phase = 'idle')::numeric, 2),
	       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) FILTER (WHERE phase = 'flood')::numeric, 2),
	       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms_start) FILTER (WHERE phase = 'idle')::numeric, 2),
	       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms_start) FILTER (WHERE phase = 'flood')::numeric, 2)
	  FROM c")"
echo "lanes: dispatch.order.ready commit -> sink p99 idle ${lidle} ms, under a ${FLOOD:-100000}-event bulk flood ${lflood} ms, ratio $(awk -v a="$lflood" -v b="$lidle" 'BEGIN { printf "%.2f", a / b }') ($left bulk events still queued when the critical ones were done; from the inserting transaction's start: ${sidle} / ${sflood} ms)"
# CPU used during the 3 s of critical events under the flood, per process
# kind (2 cores = 600 centiseconds available)
echo "lanes: CPU centiseconds during the 3 s flood window (2 cores = 600): $(
	join <(sort "$work/cpu0") <(sort "$work/cpu1") |
	awk '{d = $4 - $2; k = $3; cpu[k] += d; if (k != "machine") tot += d} END {
		for (k in cpu) if (cpu[k] > 0 && k != "machine") printf "%s=%d ", k, cpu[k];
		printf "this_benchmark=%d machine=%d", tot, cpu["machine"] }')"
fi

if [ -n "${PROFILE:-}" ]; then
	psql_ -c "CREATE EXTENSION pg_stat_statements"
	psql_ -F ' | ' -c "SELECT calls, round(total_exec_time) AS ms, round(mean_exec_time::numeric, 3) AS mean_ms, rows,
		left(regexp_replace(query, '\s+', ' ', 'g'), 90) FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12"
fi
ratio=$(awk -v a="$unb" -v b="$raw_rps" 'BEGIN { printf "%.2f", a / b }')
echo "events_per_s_batched=$bat"
echo "latency_p99_ms=$p99"
echo "ratio_vs_raw_curl=$ratio"
