-- The extension installs, reports its version, and owns its schema.
CREATE EXTENSION odoo_sync;
SELECT odoo_sync.version() = (SELECT extversion FROM pg_extension WHERE extname = 'odoo_sync') AS version_matches;
SELECT nspname FROM pg_namespace n JOIN pg_extension e ON e.extnamespace = n.oid WHERE e.extname = 'odoo_sync';
-- it cannot be relocated
ALTER EXTENSION odoo_sync SET SCHEMA public;
-- the prefix is reserved
SET odoo_sync.no_such_setting = 1;
SHOW odoo_sync.launcher_naptime;
DROP EXTENSION odoo_sync;
CREATE EXTENSION odoo_sync;
