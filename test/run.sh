#!/usr/bin/env bash
# make test: the whole suite on throwaway clusters.
#
#   1. installs the extension into a private copy of PostgreSQL (tmp_install/)
#   2. starts a cluster on a free 127.0.0.1 port (never 5432) with
#      test/odoo_sync.conf, runs pg_regress (sql/, expected/) and the
#      isolation specs (test/specs, test/expected) against it, stops it
#   3. runs every TAP test in test/t (each makes its own clusters)
#   4. runs the Odoo addon's tests when ODOO_SRC names an Odoo 17 tree
#   5. prints "N passed, N failed, N skipped" and exits non-zero on failure
#
# Everything runs as the OS user postgres; scratch space is a fresh
# directory under /tmp, removed at the end (kept with KEEP_SCRATCH=1).
# TESTS="decode_basic 010_launcher" runs only the named tests.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

passed=0; failed=0; skipped=0
failures=(); skips=()
pass() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); failures+=("$1"); echo "FAIL: $1"; }
skip() { skipped=$((skipped + 1)); skips+=("$1: $2"); echo "SKIP: $1: $2"; }
selected() { [ -z "${TESTS:-}" ] || [[ " $TESTS " == *" $1 "* ]]; }

scratch=$(mktemp -d /tmp/odoo_sync_test.XXXXXX)
chmod 755 "$scratch"; chown "$PG_USER" "$scratch"
cleanup() {
	stop_cluster "$scratch/main"
	if [ -n "${KEEP_SCRATCH:-}" ] || [ "$failed" -gt 0 -a -n "${KEEP_ON_FAIL:-}" ]; then
		echo "scratch kept in $scratch"
	else
		rm -rf "$scratch"
	fi
}
trap cleanup EXIT

make_tmp_install || { echo "could not install into tmp_install"; echo "0 passed, 1 failed"; exit 1; }

REGRESS=$(make -s -C "$TOP" --no-print-directory print-REGRESS 2>/dev/null || true)
[ -n "$REGRESS" ] || REGRESS=$(cd "$TOP/sql" && ls *.sql 2>/dev/null | grep -v '^odoo_sync--' | sed 's/\.sql$//' | sort)
ISOLATION=$(cd "$TOP/test/specs" 2>/dev/null && ls *.spec 2>/dev/null | sed 's/\.spec$//' | sort)

regress_list=(); for t in $REGRESS; do selected "$t" && regress_list+=("$t"); done
iso_list=(); for t in $ISOLATION; do selected "$t" && iso_list+=("$t"); done

# ---------------------------------------------------------------- pg_regress + isolation
if [ ${#regress_list[@]} -gt 0 ] || [ ${#iso_list[@]} -gt 0 ]; then
	port=$(free_port)
	echo "== cluster on 127.0.0.1:$port (pg_regress, isolation)"
	if ! start_cluster "$scratch/main" "$port"; then
		fail "cluster start"
	else
		if [ ${#regress_list[@]} -gt 0 ]; then
			mkdir -p "$scratch/regress"; chown "$PG_USER" "$scratch/regress"
			as_pg "$PGXS_DIR/src/test/regress/pg_regress" --bindir="$BIN" \
				--inputdir="$TOP" --outputdir="$scratch/regress" \
				--host=127.0.0.1 --port="$port" --dbname=contrib_regression \
				"${regress_list[@]}" >"$scratch/regress/out.txt" 2>&1
			cat "$scratch/regress/out.txt"
			for t in "${regress_list[@]}"; do
				if grep -Eq "^(test | )?$t +\.\.\. ok|^ *$t +\.\.\. ok" "$scratch/regress/out.txt"; then
					pass
				else
					fail "pg_regress $t"
				fi
			done
			[ -f "$scratch/regress/regression.diffs" ] && head -200 "$scratch/regress/regression.diffs"
		fi
		if [ ${#iso_list[@]} -gt 0 ]; then
			mkdir -p "$scratch/iso"; chown "$PG_USER" "$scratch/iso"
			as_pg "$PGXS_DIR/src/test/isolation/pg_isolation_regress" --bindir="$BIN" \
				--inputdir="$TOP/test" --outputdir="$scratch/iso" \
				--host=127.0.0.1 --port="$port" --dbname=isolation_regression \
				"${iso_list[@]}" >"$scratch/iso/out.txt" 2>&1
			cat "$scratch/iso/out.txt"
			for t in "${iso_list[@]}"; do
				if grep -Eq "^(test | )?$t +\.\.\. ok|^ *$t +\.\.\. ok" "$scratch/iso/out.txt"; then
					pass
				else
					fail "isolation $t"
				fi
			done
			[ -f "$scratch/iso/regression.diffs" ] && head -200 "$scratch/iso/regression.diffs"
		fi
		if grep -q "server process .* was terminated by signal" "$scratch/main/server.log"; then
			fail "server crash during pg_regress/isolation (see server.log)"
			grep -B5 -A5 "terminated by signal" "$scratch/main/server.log" | head -40
		fi
		stop_cluster "$scratch/main"
	fi
fi

# ---------------------------------------------------------------- TAP
for t in "$TOP"/test/t/*.pl; do
	[ -e "$t" ] || continue
	name=$(basename "$t" .pl)
	selected "$name" || continue
	dir="$scratch/tap/$name"; mkdir -p "$dir"; chown -R "$PG_USER" "$scratch/tap"
	echo "== TAP $name"
	start=$(date +%s)
	as_pg env TESTDIR="$dir" PG_REGRESS="$PGXS_DIR/src/test/regress/pg_regress" \
		PERL5LIB="$PGXS_DIR/src/test/perl:$TOP/test/perl" ODOO_SYNC_TOP="$TOP" \
		ODOO_SHARED="${ODOO_SHARED:-$TOP/../shared/odoo17}" \
		timeout "${TAP_TIMEOUT:-600}" perl "$t" >"$dir/tap.out" 2>&1
	rc=$?
	if [ ! -s "$dir/tap.out" ]; then
		# never count a test that left no output (its directory removed
		# under it, or perl not started) as anything but a failure
		fail "TAP $name left no output (exit $rc)"
		echo "    ($(( $(date +%s) - start ))s)"
		continue
	fi
	grep -E '^(not )?ok |^# |^1\.\.' "$dir/tap.out" | grep -v '^# Looks like' | sed 's/^/    /' | head -300
	n_ok=$(grep -Ec '^ok [0-9]+' "$dir/tap.out" | tr -d ' ')
	n_skip=$(grep -Eic '^ok [0-9]+[^#]*# skip' "$dir/tap.out" | tr -d ' ')
	n_notok=$(grep -Ec '^not ok [0-9]+' "$dir/tap.out" | tr -d ' ')
	n_todo=$(grep -Eic '^not ok [0-9]+[^#]*# todo' "$dir/tap.out" | tr -d ' ')
	passed=$((passed + n_ok - n_skip)); failed=$((failed + n_notok - n_todo))
	skipped=$((skipped + n_skip))
	while IFS= read -r line; do skips+=("$name: ${line#*# [Ss][Kk][Ii][Pp]}"); done < <(grep -Ei '^ok [0-9]+[^#]*# skip' "$dir/tap.out")
	if [ "$n_notok" -gt "$n_todo" ]; then
		failures+=("TAP $name")
	fi
	if grep -q '^1\.\.0 # [Ss]kip' "$dir/tap.out"; then
		skip "TAP $name" "$(sed -n 's/^1\.\.0 # [Ss][Kk][Ii][Pp] *//p' "$dir/tap.out")"
	elif [ $rc -ne 0 ] && [ "$n_notok" -eq 0 ]; then
		fail "TAP $name exited $rc without a failed assertion (died?)"
	elif ! grep -Eq '^1\.\.[1-9]' "$dir/tap.out"; then
		fail "TAP $name printed no test plan"
	fi
	if [ $rc -ne 0 ] || [ "$n_notok" -gt 0 ]; then
		echo "    --- tail of $name output:"; tail -40 "$dir/tap.out" | sed 's/^/    /'
		for log in "$dir"/tmp_check/log/*.log; do
			[ -f "$log" ] || continue
			echo "    --- tail of $(basename "$log"):"; tail -25 "$log" | sed 's/^/    /'
		done
	fi
	echo "    ($(( $(date +%s) - start ))s)"
done

# ---------------------------------------------------------------- Odoo addon
if selected odoo; then
	if [ -n "${ODOO_SRC:-}" ] && [ -x "${ODOO_SRC}/odoo-bin" ] && [ -x "$TOP/test/odoo/run.sh" ]; then
		echo "== Odoo addon tests (ODOO_SRC=$ODOO_SRC)"
		"$TOP/test/odoo/run.sh" >"$scratch/odoo.out" 2>&1
		rc=$?
		tail -40 "$scratch/odoo.out"
		if [ $rc -eq 0 ]; then pass
		elif [ $rc -eq 77 ]; then skip "odoo addon tests" "$(tail -1 "$scratch/odoo.out")"
		else fail "odoo addon tests"; fi
	elif [ -z "${ODOO_SRC:-}" ]; then
		skip "odoo addon tests" "ODOO_SRC is not set (give it an Odoo 17.0 source tree to run them)"
	elif [ ! -x "$TOP/test/odoo/run.sh" ]; then
		skip "odoo addon tests" "no addon test runner yet (test/odoo/run.sh)"
	else
		skip "odoo addon tests" "ODOO_SRC=$ODOO_SRC has no odoo-bin"
	fi
fi

echo
if [ ${#skips[@]} -gt 0 ]; then echo "Skipped:"; printf '  %s\n' "${skips[@]}"; fi
if [ ${#failures[@]} -gt 0 ]; then echo "Failed:"; printf '  %s\n' "${failures[@]}"; fi
if [ "$skipped" -gt 0 ]; then
	echo "$passed passed, $failed failed, $skipped skipped"
else
	echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
