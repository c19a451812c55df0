#!/usr/bin/env bash
# test/odoo/demo.sh (make demo-odoo): the whole odoo_sync loop on a real
# Odoo 17 server with its cron thread, in a throwaway cluster.
#
#   ODOO_SRC=/path/to/odoo17 make demo-odoo
#   SCREENSHOTS=docs/screenshots ...   also saves PNGs of the main screens
#   KEEP_RUNNING=1 ...                 leaves Odoo, the sink and the cluster up
#                                      (admin/admin) and prints how to stop them
#   DEMO_ORDERS=5                      orders in the latency run
set -uo pipefail
. "$(dirname "$0")/../lib.sh"

ODOO_SRC="${ODOO_SRC:?set ODOO_SRC to an Odoo 17.0 source tree}"
ODOO_PY="${ODOO_PY:-/usr/bin/python3}"
ODOO_USER="${ODOO_USER:-odoo}"
SHARED="${ODOO_SHARED:-$TOP/../shared/odoo17}"
[ -x "$ODOO_SRC/odoo-bin" ] || { echo "no odoo-bin in ODOO_SRC=$ODOO_SRC"; exit 1; }
id "$ODOO_USER" >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash "$ODOO_USER"
make_tmp_install || { echo "could not install the extension into tmp_install"; exit 1; }

scratch=$(mktemp -d /tmp/odoo_sync_demo.XXXXXX); chmod 755 "$scratch"
pick_port() { local p; while :; do p=$(free_port); case $p in 5432|5433|8069|8072) ;; *) echo "$p"; return;; esac; done; }
PG_PORT=$(pick_port); HTTP_PORT=$(pick_port)
odoo_pid=""; sink_pid=""
cleanup() {
	[ -n "${KEEP_RUNNING:-}" ] && return
	[ -n "$odoo_pid" ] && kill "$odoo_pid" 2>/dev/null && wait "$odoo_pid" 2>/dev/null
	[ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null
	stop_cluster "$scratch/pg"
	rm -rf "$scratch"
}
trap cleanup EXIT
psql_pg() { as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$scratch/pg" -p "$PG_PORT" -U postgres "$@"; }

echo "== PostgreSQL 127.0.0.1:$PG_PORT with odoo_sync preloaded; Odoo demo database restored"
EXTRA_CONF="odoo_sync.allow_private_endpoints = on" start_cluster "$scratch/pg" "$PG_PORT" || exit 1
psql_pg -d postgres -c "CREATE ROLE odoo LOGIN SUPERUSER PASSWORD 'odoo'" -c "CREATE DATABASE demo OWNER odoo" || exit 1
as_pg pg_restore --no-owner --role=odoo -h "$scratch/pg" -p "$PG_PORT" -U postgres -d demo "$SHARED/odoo17_demo.dump" || exit 1
psql_pg -d demo -c "DELETE FROM ir_attachment WHERE url LIKE '/web/assets/%'" -c "CREATE EXTENSION odoo_sync" >/dev/null || exit 1

mkdir -p "$scratch/odoo/data"
cat > "$scratch/odoo/odoo.conf" <<CONF
[options]
addons_path = $ODOO_SRC/addons,$ODOO_SRC/odoo/addons,$TOP/odoo_addon
data_dir = $scratch/odoo/data
db_host = 127.0.0.1
db_port = $PG_PORT
db_user = odoo
db_password = odoo
http_interface = 127.0.0.1
http_port = $HTTP_PORT
list_db = False
workers = 0
max_cron_threads = 1
CONF
chown -R "$ODOO_USER" "$scratch/odoo"
echo "== installing the addon (odoo-bin -i odoo_sync)"
runuser -u "$ODOO_USER" -- "$ODOO_PY" "$ODOO_SRC/odoo-bin" -c "$scratch/odoo/odoo.conf" -d demo -i odoo_sync \
	--stop-after-init --logfile="$scratch/odoo/install.log" || { tail -30 "$scratch/odoo/install.log"; exit 1; }
echo "== starting Odoo on http://127.0.0.1:$HTTP_PORT (1 cron thread) and the loopback sink"
runuser -u "$ODOO_USER" -- "$ODOO_PY" "$ODOO_SRC/odoo-bin" -c "$scratch/odoo/odoo.conf" -d demo \
	--logfile="$scratch/odoo/server.log" </dev/null >/dev/null 2>&1 &
odoo_pid=$!
"$ODOO_PY" "$TOP/test/sink/sink.py" --port 0 --port-file "$scratch/sink.port" >/dev/null 2>&1 &
sink_pid=$!
for i in $(seq 1 120); do
	[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/web/login")" = 200 ] && [ -s "$scratch/sink.port" ] && break
	kill -0 "$odoo_pid" 2>/dev/null || { tail -30 "$scratch/odoo/server.log"; exit 1; }
	sleep 0.5
done
"$ODOO_PY" "$TOP/test/odoo/demo_flow.py" --odoo "http://127.0.0.1:$HTTP_PORT" --db demo \
	--sink "http://127.0.0.1:$(cat "$scratch/sink.port")" \
	--dsn "host=127.0.0.1 port=$PG_PORT dbname=demo user=odoo password=odoo" --orders "${DEMO_ORDERS:-5}" \
	${SCREENSHOTS:+--screenshots "$SCREENSHOTS"}
rc=$?
if [ -n "${KEEP_RUNNING:-}" ]; then
	echo "left running: Odoo http://127.0.0.1:$HTTP_PORT (admin/admin, db demo, pid $odoo_pid), sink pid $sink_pid,"
	echo "PostgreSQL 127.0.0.1:$PG_PORT ($scratch/pg). Stop: kill $odoo_pid $sink_pid; runuser -u postgres -- $BIN/pg_ctl -D $scratch/pg/data stop; rm -rf $scratch"
fi
exit $rc
