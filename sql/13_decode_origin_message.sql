-- Replication origins (skip-origins: how the apply worker avoids echo) and
-- transactional messages with the prefix odoo_sync, in transaction order.
SET client_min_messages = warning;
CREATE TABLE stock_picking (id serial PRIMARY KEY, name varchar, carrier_tracking_ref varchar);
SELECT 'init' FROM pg_create_logical_replication_slot('regress_origin', 'odoo_sync');
SELECT 'created' FROM pg_replication_origin_create('odoo_sync_apply_test');
SELECT 'created' FROM pg_replication_origin_create('other_origin');

INSERT INTO stock_picking (name) VALUES ('WH/OUT/1');

SELECT pg_replication_origin_session_setup('odoo_sync_apply_test');
UPDATE stock_picking SET carrier_tracking_ref = 'TRK-1' WHERE id = 1;
SELECT pg_replication_origin_session_reset();

SELECT pg_replication_origin_session_setup('other_origin');
UPDATE stock_picking SET carrier_tracking_ref = 'TRK-2' WHERE id = 1;
SELECT pg_replication_origin_session_reset();

-- messages: only the odoo_sync prefix, in order with the rows
BEGIN;
SELECT 'm1' FROM pg_logical_emit_message(true, 'odoo_sync', '{"type":"custom.event","n":1}');
INSERT INTO stock_picking (name) VALUES ('WH/OUT/2');
SELECT 'm2' FROM pg_logical_emit_message(true, 'other_prefix', 'ignored');
SELECT 'm3' FROM pg_logical_emit_message(true, 'odoo_sync', 'second');
COMMIT;
-- a message alone is a transaction too
SELECT 'm4' FROM pg_logical_emit_message(true, 'odoo_sync', 'alone');
-- a rolled back message is never seen
BEGIN;
SELECT 'm5' FROM pg_logical_emit_message(true, 'odoo_sync', 'rolled back');
ROLLBACK;
-- non-transactional messages come at once, outside any transaction
SELECT 'm6' FROM pg_logical_emit_message(false, 'odoo_sync', 'now');

-- everything, with the origin names
SELECT data FROM pg_logical_slot_peek_changes('regress_origin', NULL, NULL,
	'include-xids', '0', 'include-timestamp', '0', 'include-lsn', '0');
-- skip our own apply origins by prefix
SELECT data FROM pg_logical_slot_peek_changes('regress_origin', NULL, NULL,
	'include-xids', '0', 'include-timestamp', '0', 'include-lsn', '0',
	'skip-origins', 'odoo_sync_apply*', 'messages', 'false');
-- skip every origin
SELECT data FROM pg_logical_slot_peek_changes('regress_origin', NULL, NULL,
	'include-xids', '0', 'include-timestamp', '0', 'include-lsn', '0',
	'skip-origins', '*', 'messages', 'false');

SELECT pg_drop_replication_slot('regress_origin');
SELECT pg_replication_origin_drop('odoo_sync_apply_test');
SELECT pg_replication_origin_drop('other_origin');
DROP TABLE stock_picking;
