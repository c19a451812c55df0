-- Last part of the install script.

-- Capture needs logical decoding with our plugin; inbound and delivery do
-- not. A server set up without it still gets the extension (and its inbound
-- side works), but says so now rather than only in the server log.
DO $check$
DECLARE
	v_plugins text := pg_catalog.current_setting('output_plugin_libraries', true);
BEGIN
	IF pg_catalog.current_setting('wal_level') <> 'logical' THEN
		RAISE WARNING 'odoo_sync cannot capture changes: wal_level is %', pg_catalog.current_setting('wal_level')
			USING DETAIL = 'Outbound events need logical decoding; ingest, apply and delivery of events already in the log work meanwhile.',
				  HINT = 'Set wal_level = logical in postgresql.conf and restart the server.';
	END IF;
	IF v_plugins IS NOT NULL
	   AND NOT 'odoo_sync' = ANY (pg_catalog.string_to_array(pg_catalog.replace(v_plugins, ' ', ''), ',')) THEN
		RAISE WARNING 'odoo_sync cannot capture changes: output_plugin_libraries does not list odoo_sync'
			USING DETAIL = pg_catalog.format('output_plugin_libraries is "%s".', v_plugins),
				  HINT = 'Add odoo_sync to output_plugin_libraries in postgresql.conf and reload.';
	END IF;
END
$check$;

-- Start this database's workers now rather than at the launcher's next
-- safety recheck.
SELECT @extschema@._launcher_wake();
