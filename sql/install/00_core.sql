-- odoo_sync install script: core objects.
-- The install script is the concatenation of sql/install/*.sql in name order.

\echo Use "CREATE EXTENSION odoo_sync" to load this file. \quit

-- Roles (least privilege). They are cluster-wide: created once, kept by
-- DROP EXTENSION (other databases of the cluster may use them).
DO $roles$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'odoo_sync_admin') THEN
		CREATE ROLE odoo_sync_admin NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'odoo_sync_operator') THEN
		CREATE ROLE odoo_sync_operator NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'odoo_sync_reader') THEN
		CREATE ROLE odoo_sync_reader NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'odoo_sync_ingest') THEN
		CREATE ROLE odoo_sync_ingest NOLOGIN;
	END IF;
END
$roles$;
GRANT odoo_sync_reader TO odoo_sync_operator;
GRANT odoo_sync_operator TO odoo_sync_admin;

GRANT USAGE ON SCHEMA @extschema@ TO odoo_sync_reader, odoo_sync_ingest;

CREATE FUNCTION @extschema@.version()
RETURNS text
LANGUAGE c STRICT IMMUTABLE
AS 'MODULE_PATHNAME', 'odoo_sync_version';
COMMENT ON FUNCTION @extschema@.version() IS
	'Version of the loaded odoo_sync library.';
GRANT EXECUTE ON FUNCTION @extschema@.version() TO PUBLIC;

CREATE FUNCTION @extschema@._launcher_wake()
RETURNS void
LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'odoo_sync_launcher_wake';
COMMENT ON FUNCTION @extschema@._launcher_wake() IS
	'Private: asks the launcher to start this database''s workers now.';
REVOKE ALL ON FUNCTION @extschema@._launcher_wake() FROM PUBLIC;

CREATE VIEW @extschema@.workers AS
	SELECT a.pid, a.backend_type AS worker, a.state, a.query AS activity,
		   a.wait_event_type, a.wait_event, a.backend_start
	  FROM pg_catalog.pg_stat_activity a
	 WHERE a.datname = pg_catalog.current_database()
	   AND a.backend_type LIKE 'odoo\_sync %';
COMMENT ON VIEW @extschema@.workers IS
	'The odoo_sync background workers of this database.';
GRANT SELECT ON @extschema@.workers TO odoo_sync_reader;
