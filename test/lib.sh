# Shared shell helpers for test/run.sh, demo/demo.sh and bench/run.sh.
# Source it; it sets TOP, PGBIN_SYS, TMP_INSTALL, BIN.

TOP="${TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
PG_CONFIG_SYS="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
PGBIN_SYS="$("$PG_CONFIG_SYS" --bindir)"
PGLIB_SYS="$("$PG_CONFIG_SYS" --pkglibdir)"
PGSHARE_SYS="$("$PG_CONFIG_SYS" --sharedir)"
TMP_INSTALL="$TOP/tmp_install"
BIN="$TMP_INSTALL$PGBIN_SYS"
PGXS_DIR="$(cd "$(dirname "$("$PG_CONFIG_SYS" --pgxs)")/../.." && pwd)"
PG_USER="${PG_USER:-postgres}"

# A private copy of the PostgreSQL installation with our extension installed
# into it: tests never touch the system's PostgreSQL, and two checkouts can
# test side by side. PostgreSQL finds its share and lib directories relative
# to its own binary, so the copy is self-contained.
make_tmp_install() {
	local pgroot
	pgroot="$(dirname "$(dirname "$PGBIN_SYS")")"   # /usr/lib/postgresql/15
	if [ ! -x "$BIN/postgres" ] || [ "$PGBIN_SYS/postgres" -nt "$BIN/postgres" ]; then
		rm -rf "$TMP_INSTALL"
		mkdir -p "$TMP_INSTALL$(dirname "$pgroot")" "$TMP_INSTALL$(dirname "$PGSHARE_SYS")"
		cp -a "$pgroot" "$TMP_INSTALL$(dirname "$pgroot")/"
		cp -a "$PGSHARE_SYS" "$TMP_INSTALL$(dirname "$PGSHARE_SYS")/"
	fi
	make -s -C "$TOP" install DESTDIR="$TMP_INSTALL" >/dev/null
}

# Runs a command as the unprivileged PostgreSQL OS user (initdb and postgres
# refuse root); as that user already, runs it directly.
as_pg() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u "$PG_USER" -- env PATH="$BIN:$PATH" "$@"
	else
		env PATH="$BIN:$PATH" "$@"
	fi
}

# A free TCP port on 127.0.0.1, never 5432.
free_port() {
	python3 - <<'PY'
import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if p != 5432:
        print(p); break
PY
}

# start_cluster DIR PORT: initdb + start a throwaway cluster with our settings.
start_cluster() {
	local dir="$1" port="$2"
	mkdir -p "$dir"; chown "$PG_USER" "$dir" 2>/dev/null || true
	as_pg initdb -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
		cat "$dir/initdb.log" >&2; return 1; }
	{
		cat "$TOP/test/odoo_sync.conf"
		echo "port = $port"
		echo "listen_addresses = '127.0.0.1'"
		echo "unix_socket_directories = '$dir'"
		[ -n "${EXTRA_CONF:-}" ] && printf '%s\n' "$EXTRA_CONF"
	} >>"$dir/data/postgresql.conf"
	as_pg pg_ctl -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null || {
		tail -20 "$dir/server.log" >&2; return 1; }
}

stop_cluster() {
	local dir="$1"
	[ -f "$dir/data/postmaster.pid" ] && as_pg pg_ctl -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}
