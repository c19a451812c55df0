#!/usr/bin/env bash
# test/odoo/run.sh: the Odoo addon on a real Odoo 17 (make test-odoo, and
# make test when ODOO_SRC is set).
#
#   1. a throwaway PostgreSQL cluster (tmp_install, free ports, our config,
#      odoo_sync.allow_private_endpoints = on for the loopback sink)
#   2. the Odoo 17 demo dump restored into database "tmpl"; copied to
#      "odoo_sync_test", where CREATE EXTENSION odoo_sync runs
#   3. install refused on "tmpl" (no extension): the message names
#      CREATE EXTENSION odoo_sync
#   4. -i odoo_sync on odoo_sync_test with the addon's tests (--test-tags
#      /odoo_sync: install, controller, ERP actions, full chain with the
#      extension's workers and a loopback sink)
#   5. -u stock with Odoo's own stock and sale_stock classes (TestPickShip,
#      TestPacking, TestStockFlowPostInstall, TestSaleStock,
#      TestSaleStockMultiCompany), with the extension and the addon installed
#   6. uninstall: the extension and its data stay
#   7. stops everything, removes the scratch directory (KEEP_SCRATCH=1 keeps it)
#
# Prints one line per check and "N passed, N failed"; exits non-zero on any
# failure, 77 when the extension in this tree lacks the surfaces the addon
# needs (capture, delivery, inbound not merged yet).
#
# Environment: ODOO_SRC (an Odoo 17.0 tree, required), ODOO_PY
# (/usr/bin/python3), ODOO_SHARED (../shared/odoo17), ODOO_USER (odoo),
# ODOO_TEST_TAGS_EXTRA (more --test-tags for step 4), ODOO_SKIP_STOCK=1
# (skip step 5), ODOO_SYNC_CHAIN_ORDERS (orders in the latency run, 5).
set -uo pipefail
. "$(dirname "$0")/../lib.sh"

ODOO_SRC="${ODOO_SRC:?set ODOO_SRC to an Odoo 17.0 source tree}"
ODOO_PY="${ODOO_PY:-/usr/bin/python3}"
ODOO_USER="${ODOO_USER:-odoo}"
SHARED="${ODOO_SHARED:-$TOP/../shared/odoo17}"
DUMP="$SHARED/odoo17_demo.dump"
ADDONS="$TOP/odoo_addon"
ADDON_TAGS="/odoo_sync"
STOCK_POST_TAGS="/stock:TestStockFlowPostInstall,/sale_stock:TestSaleStock,/sale_stock:TestSaleStockMultiCompany"
STOCK_AT_TAGS="/stock:TestPickShip,/stock:TestPacking"

passed=0; failed=0; results=()
ok() { passed=$((passed + 1)); results+=("ok    $1"); echo "ok: $1"; }
ko() { failed=$((failed + 1)); results+=("FAIL  $1"); echo "FAIL: $1"; }
t_start=$(date +%s)

[ -x "$ODOO_SRC/odoo-bin" ] || { echo "no odoo-bin in ODOO_SRC=$ODOO_SRC"; exit 1; }
[ -f "$DUMP" ] || { echo "no Odoo demo dump at $DUMP"; exit 1; }
"$ODOO_PY" -c 'import psycopg2, werkzeug, lxml, babel, reportlab, PIL, passlib, websocket' 2>/dev/null \
	|| { echo "missing Debian python3-* packages for Odoo (see $SHARED/README.md) or python3-websocket (Odoo's test runner)"; exit 1; }
id "$ODOO_USER" >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash "$ODOO_USER"

make_tmp_install || { echo "could not install the extension into tmp_install"; exit 1; }

scratch=$(mktemp -d /tmp/odoo_sync_odoo.XXXXXX)
chmod 755 "$scratch"
pick_port() { local p; while :; do p=$(free_port); case $p in 5432|5433|8069|8072) ;; *) echo "$p"; return;; esac; done; }
PG_PORT=$(pick_port); HTTP_PORT=$(pick_port)
cleanup() {
	stop_cluster "$scratch/pg"
	if [ -n "${KEEP_SCRATCH:-}" ]; then echo "scratch kept in $scratch"; else rm -rf "$scratch"; fi
}
trap cleanup EXIT

psql_pg() { as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$scratch/pg" -p "$PG_PORT" -U postgres "$@"; }

echo "== cluster on 127.0.0.1:$PG_PORT, Odoo test HTTP port $HTTP_PORT, scratch $scratch"
EXTRA_CONF="odoo_sync.allow_private_endpoints = on" start_cluster "$scratch/pg" "$PG_PORT" \
	|| { echo "cluster did not start"; exit 1; }
psql_pg -d postgres -c "CREATE ROLE odoo LOGIN SUPERUSER PASSWORD 'odoo'" \
	-c "CREATE DATABASE tmpl OWNER odoo" || exit 1
t=$(date +%s)
as_pg pg_restore --no-owner --role=odoo -h "$scratch/pg" -p "$PG_PORT" -U postgres -d tmpl "$DUMP" \
	|| { echo "pg_restore failed"; exit 1; }
psql_pg -d tmpl -c "DELETE FROM ir_attachment WHERE url LIKE '/web/assets/%'" >/dev/null
psql_pg -d postgres -c "CREATE DATABASE odoo_sync_test TEMPLATE tmpl OWNER odoo" || exit 1
psql_pg -d odoo_sync_test -c "CREATE EXTENSION odoo_sync" || { echo "CREATE EXTENSION failed"; exit 1; }
echo "   demo dump restored, extension created ($(( $(date +%s) - t ))s)"

missing=$(psql_pg -d odoo_sync_test -Atc "
	SELECT string_agg(n, ', ') FROM unnest(ARRAY['ingest', 'redeliver', 'add_rule', 'reapply']) n
	 WHERE NOT EXISTS (SELECT 1 FROM pg_proc p WHERE p.proname = n
						  AND p.pronamespace = 'odoo_sync'::regnamespace)
	UNION ALL
	SELECT string_agg(r, ', ') FROM unnest(ARRAY['odoo_sync.endpoint_status', 'odoo_sync.erp_action',
		'odoo_sync.capture_status']) r WHERE to_regclass(r) IS NULL" | paste -sd' ')
if [ -n "${missing// /}" ]; then
	echo "SKIP: the extension built from $TOP lacks $missing (capture, delivery and inbound must be merged)"
	exit 77
fi

mkdir -p "$scratch/odoo/data"; chown -R "$ODOO_USER" "$scratch/odoo"
cat > "$scratch/odoo/odoo.conf" <<CONF
[options]
addons_path = $ODOO_SRC/addons,$ODOO_SRC/odoo/addons,$ADDONS
data_dir = $scratch/odoo/data
db_host = 127.0.0.1
db_port = $PG_PORT
db_user = odoo
db_password = odoo
http_interface = 127.0.0.1
http_port = $HTTP_PORT
list_db = False
workers = 0
max_cron_threads = 0
CONF
chown "$ODOO_USER" "$scratch/odoo/odoo.conf"

# odoo <log name> <args...>: one odoo-bin run as $ODOO_USER, log kept in scratch
odoo() {
	local name="$1"; shift
	local log="$scratch/odoo/$name.log"
	runuser -u "$ODOO_USER" -- env ODOO_SYNC_LATENCY_FILE="$scratch/odoo/latency.json" \
		ODOO_SYNC_SINK="$TOP/test/sink/sink.py" ODOO_SYNC_CHAIN_ORDERS="${ODOO_SYNC_CHAIN_ORDERS:-5}" \
		"$ODOO_PY" "$ODOO_SRC/odoo-bin" -c "$scratch/odoo/odoo.conf" --stop-after-init \
		--log-level=test --logfile="$log" "$@"
	local rc=$?
	chmod -R a+rX "$scratch/odoo" 2>/dev/null
	return $rc
}
# summary of a test log: "N tests ... 0 failed, 0 error(s)" lines and the failures
test_summary() {
	grep -E "odoo.tests.stats|odoo.tests.result|: (FAIL|ERROR): " "$1" | sed 's/^[0-9-]* [0-9:,]* [0-9]* [A-Z]* [^ ]* /   /'
}
tests_ok() {
	grep -q "odoo.tests.result: 0 failed, 0 error(s)" "$1" && ! grep -q "odoo.tests.result: [1-9]" "$1" \
		&& ! grep -Eq "odoo.tests.result: [0-9]+ failed, [1-9]" "$1"
}

# ------------------------------------------------------------------ 3. refused without the extension
echo "== install on a database without the extension (must be refused)"
t=$(date +%s)
odoo refused -d tmpl -i odoo_sync
state=$(psql_pg -d tmpl -Atc "SELECT state FROM ir_module_module WHERE name = 'odoo_sync'")
if [ "$state" != installed ] && grep -q "CREATE EXTENSION odoo_sync" "$scratch/odoo/refused.log"; then
	ok "install refused without the extension, message says: $(grep -o "Ask your DBA.*" "$scratch/odoo/refused.log" | head -1 | cut -c1-60)... ($(( $(date +%s) - t ))s)"
else
	ko "install without the extension was not refused clearly (module state '$state')"
	tail -20 "$scratch/odoo/refused.log"
fi

# ------------------------------------------------------------------ 4. install + addon tests
echo "== -i odoo_sync with --test-tags $ADDON_TAGS${ODOO_TEST_TAGS_EXTRA:+,$ODOO_TEST_TAGS_EXTRA}"
t=$(date +%s)
odoo install -d odoo_sync_test -i odoo_sync --http-port="$HTTP_PORT" \
	--test-tags "$ADDON_TAGS${ODOO_TEST_TAGS_EXTRA:+,$ODOO_TEST_TAGS_EXTRA}"
rc=$?
log="$scratch/odoo/install.log"
test_summary "$log"
n_run=$(grep -c "Starting Test" "$log")
grep -E "Starting (TestInstall|TestController|TestErpAction|TestChain|TestStock|TestSale)" "$log" \
	| sed -E 's/.*Starting ([A-Za-z]+)\.([a-z0-9_]+).*/\1.\2/' | awk '{print "   ran " $0}'
if grep -q "odoo_sync chain:" "$log"; then
	grep -o "odoo_sync chain:.*" "$log" | sed 's/^/   /'
fi
skips=$(grep -E "skipped|SkipTest|Skipping" "$log" | grep -v "^ " | grep -o "odoo_sync.tests.*" | head -3)
[ -n "$skips" ] && echo "   skipped: $skips"
if [ $rc -eq 0 ] && tests_ok "$log" && [ "$n_run" -gt 0 ]; then
	ok "addon installed; $n_run odoo_sync tests passed ($(( $(date +%s) - t ))s)"
else
	ko "addon install or tests (rc $rc; log $log)"
	grep -B2 -A25 -E ": (FAIL|ERROR): " "$log" | head -120
	grep -E "CRITICAL|Traceback" -A15 "$log" | head -40
fi
for c in TestInstall TestController TestErpAction TestChain; do
	grep -q "Starting $c\." "$log" || ko "odoo_sync tests of class $c did not run"
done
state=$(psql_pg -d odoo_sync_test -Atc "SELECT state FROM ir_module_module WHERE name = 'odoo_sync'")
[ "$state" = installed ] || ko "odoo_sync is '$state' after -i"

# ------------------------------------------------------------------ 5. Odoo's at_install stock tests
if [ -z "${ODOO_SKIP_STOCK:-}" ]; then
	# post_install tests run only for the modules of this run: -u stock
	# updates stock and the modules depending on it (sale_stock, odoo_sync...)
	echo "== -u stock with --test-tags $STOCK_AT_TAGS,$STOCK_POST_TAGS (extension and addon installed)"
	t=$(date +%s)
	odoo stock -d odoo_sync_test -u stock --http-port="$HTTP_PORT" --test-tags "$STOCK_AT_TAGS,$STOCK_POST_TAGS"
	rc=$?
	log="$scratch/odoo/stock.log"
	test_summary "$log"
	n_run=$(grep -c "Starting Test" "$log")
	if [ $rc -eq 0 ] && tests_ok "$log" && [ "$n_run" -gt 0 ]; then
		grep -E "Starting Test" "$log" | sed -E 's/.*Starting ([A-Za-z]+)\..*/\1/' | sort | uniq -c \
			| awk '{print "   ran " $1 " tests of " $2}'
		ok "Odoo's own stock/sale_stock classes: $n_run tests passed ($(( $(date +%s) - t ))s)"
	else
		ko "Odoo's stock tests (rc $rc, $n_run run; log $log)"
		grep -B2 -A25 -E ": (FAIL|ERROR): " "$log" | head -80
	fi
fi

# ------------------------------------------------------------------ 6. uninstall keeps the extension's data
echo "== uninstall odoo_sync"
before=$(psql_pg -d odoo_sync_test -Atc "SELECT (SELECT count(*) FROM odoo_sync.inbound) || '/' || (SELECT count(*) FROM odoo_sync.erp_action) || '/' || (SELECT count(*) FROM odoo_sync.event)")
runuser -u "$ODOO_USER" -- "$ODOO_PY" "$ODOO_SRC/odoo-bin" shell -c "$scratch/odoo/odoo.conf" -d odoo_sync_test \
	--no-http --logfile="$scratch/odoo/uninstall.log" >/dev/null 2>&1 <<'PY'
env["ir.module.module"].search([("name", "=", "odoo_sync")]).button_immediate_uninstall()
env.cr.commit()
PY
after=$(psql_pg -d odoo_sync_test -Atc "SELECT (SELECT count(*) FROM odoo_sync.inbound) || '/' || (SELECT count(*) FROM odoo_sync.erp_action) || '/' || (SELECT count(*) FROM odoo_sync.event)")
state=$(psql_pg -d odoo_sync_test -Atc "SELECT state FROM ir_module_module WHERE name = 'odoo_sync'")
ext=$(psql_pg -d odoo_sync_test -Atc "SELECT extversion FROM pg_extension WHERE extname = 'odoo_sync'")
if [ "$state" = uninstalled ] && [ -n "$ext" ] && [ "${before%/*}" = "${after%/*}" ] && [ "${after##*/}" -ge "${before##*/}" ]; then
	ok "uninstalled; extension $ext and its data kept (inbound/actions/events $before -> $after)"
else
	ko "uninstall: module '$state', extension '$ext', inbound/actions/events $before -> $after"
	tail -20 "$scratch/odoo/uninstall.log"
fi

echo
printf '%s\n' "${results[@]}"
if [ -f "$scratch/odoo/latency.json" ]; then echo "POD -> invoice posted latency: $(cat "$scratch/odoo/latency.json")"; fi
echo "odoo: $passed passed, $failed failed ($(( $(date +%s) - t_start ))s)"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
