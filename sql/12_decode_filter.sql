-- Table and column filtering, the extension's own tables, strict options.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS odoo_sync;
CREATE TABLE stock_move (id serial PRIMARY KEY, state varchar, product_qty numeric, reference varchar, write_date timestamp);
CREATE TABLE stock_quant (id serial PRIMARY KEY, product_id int, location_id int, quantity numeric);
CREATE TABLE bus_bus (id serial PRIMARY KEY, message text);
CREATE TABLE no_key (v text);
SELECT 'init' FROM pg_create_logical_replication_slot('regress_filter', 'odoo_sync');

INSERT INTO stock_move (state, product_qty, reference, write_date) VALUES ('draft', 3, 'WH/OUT/1', '2026-11-29 10:00');
INSERT INTO stock_quant (product_id, location_id, quantity) VALUES (1, 8, 10);
INSERT INTO bus_bus (message) VALUES ('ping');
INSERT INTO no_key VALUES ('a');
UPDATE no_key SET v = 'b';
-- tables in the extension's schema are never emitted, whatever add-tables says
CREATE TABLE odoo_sync.regress_own (id int PRIMARY KEY);
INSERT INTO odoo_sync.regress_own VALUES (1);

-- only the watched columns of stock_move (the key is always included)
SELECT data FROM pg_logical_slot_peek_changes('regress_filter', NULL, NULL,
	'include-xids', '0', 'include-timestamp', '0', 'include-lsn', '0',
	'add-tables', 'public.stock_*, public.bus_bus, public.no_key',
	'columns', 'public.stock_move(state, product_qty)');

-- exclude-tables wins over add-tables; the default excludes bus_bus
SELECT data FROM pg_logical_slot_peek_changes('regress_filter', NULL, NULL,
	'include-xids', '0', 'include-timestamp', '0', 'include-lsn', '0',
	'add-tables', '*.*', 'exclude-tables', 'public.stock_quant,public.no_key');
SELECT data FROM pg_logical_slot_peek_changes('regress_filter', NULL, NULL,
	'include-xids', '0', 'include-timestamp', '0', 'include-lsn', '0',
	'add-tables', '*.*');

-- strict options: each error names the option
SELECT data FROM pg_logical_slot_peek_changes('regress_filter', NULL, NULL, 'no-such-option', '1');
SELECT data FROM pg_logical_slot_peek_changes('regress_filter', NULL, NULL, 'format-version', '2');
SELECT data FROM pg_logical_slot_peek_changes('regress_filter', NULL, NULL, 'include-xids', 'maybe');
SELECT data FROM pg_logical_slot_peek_changes('regress_filter', NULL, NULL, 'coalesce-memory', '12');
SELECT data FROM pg_logical_slot_peek_changes('regress_filter', NULL, NULL, 'columns', 'public.stock_move');
SELECT data FROM pg_logical_slot_peek_changes('regress_filter', NULL, NULL, 'columns', 'public.stock_move()');
SELECT data FROM pg_logical_slot_peek_changes('regress_filter', NULL, NULL, 'add-tables', 'a.b.c');
\set VERBOSITY terse
SELECT data FROM pg_logical_slot_peek_changes('regress_filter', NULL, NULL,
	'add-tables', 'public.stock_move', 'columns', 'public.stock_move(no_such_column)');
\set VERBOSITY default
-- after an error inside decoding, the session goes on: DDL (relcache
-- invalidations) and decoding again work
ALTER TABLE stock_move ADD COLUMN after_error int;
SELECT count(*) FROM pg_logical_slot_peek_changes('regress_filter', NULL, NULL,
	'add-tables', 'public.stock_move', 'columns', 'public.stock_move(state)');

SELECT pg_drop_replication_slot('regress_filter');
DROP TABLE stock_move, stock_quant, bus_bus, no_key, odoo_sync.regress_own;
