-- TOAST: an unchanged TOASTed value is reported absent ("unchanged-toast"),
-- never null; a value seen earlier in the transaction is kept. TRUNCATE.
-- REPLICA IDENTITY FULL: old values; coalesce off; the memory limit.
SET client_min_messages = warning;
CREATE TABLE stock_picking (id serial PRIMARY KEY, name varchar, state varchar, note text);
ALTER TABLE stock_picking ALTER COLUMN note SET STORAGE EXTERNAL;
CREATE TABLE res_partner (id serial PRIMARY KEY, name varchar, city varchar);
ALTER TABLE res_partner REPLICA IDENTITY FULL;
SELECT 'init' FROM pg_create_logical_replication_slot('regress_toast', 'odoo_sync');

INSERT INTO stock_picking (name, state, note) VALUES ('WH/OUT/1', 'draft', repeat('x', 5000));
-- the note is not touched: it is absent from "new", listed as unchanged
UPDATE stock_picking SET state = 'assigned' WHERE id = 1;
-- changed then untouched in one transaction: the new value is kept
BEGIN;
UPDATE stock_picking SET note = repeat('y', 6000) WHERE id = 1;
UPDATE stock_picking SET state = 'done' WHERE id = 1;
COMMIT;

SELECT data::jsonb->>'action' AS action,
	   data::jsonb->'new'->>'state' AS state,
	   length(data::jsonb->'new'->>'note') AS note_length,
	   data::jsonb->'new' ? 'note' AS has_note,
	   data::jsonb->'unchanged-toast' AS unchanged
  FROM pg_logical_slot_get_changes('regress_toast', NULL, NULL,
	'include-xids', '0', 'include-timestamp', '0', 'include-lsn', '0');

-- REPLICA IDENTITY FULL: "old" is the row as it was before the transaction
INSERT INTO res_partner (name, city) VALUES ('Azure Interior', 'Fremont');
BEGIN;
UPDATE res_partner SET city = 'Oakland' WHERE id = 1;
UPDATE res_partner SET city = 'Berkeley' WHERE id = 1;
COMMIT;
DELETE FROM res_partner WHERE id = 1;
SELECT data FROM pg_logical_slot_get_changes('regress_toast', NULL, NULL,
	'include-xids', '0', 'include-timestamp', '0', 'include-lsn', '0');

-- TRUNCATE: rows buffered for the table before it are dropped
BEGIN;
INSERT INTO res_partner (name) VALUES ('gone');
TRUNCATE res_partner;
INSERT INTO res_partner (name) VALUES ('after');
COMMIT;
SELECT data FROM pg_logical_slot_get_changes('regress_toast', NULL, NULL,
	'include-xids', '0', 'include-timestamp', '0', 'include-lsn', '0');

-- coalesce off: every change as it happened
BEGIN;
INSERT INTO stock_picking (id, name) VALUES (2, 'WH/OUT/2');
UPDATE stock_picking SET state = 'draft' WHERE id = 2;
COMMIT;
SELECT data FROM pg_logical_slot_peek_changes('regress_toast', NULL, NULL,
	'include-xids', '0', 'include-timestamp', '0', 'include-lsn', '0', 'coalesce', 'off',
	'columns', 'public.stock_picking(state)');
SELECT data FROM pg_logical_slot_get_changes('regress_toast', NULL, NULL,
	'include-xids', '0', 'include-timestamp', '0', 'include-lsn', '0',
	'columns', 'public.stock_picking(state)');

-- past coalesce-memory the rest of the transaction is emitted uncoalesced:
-- every row still comes out, some more than once, and nothing is lost
BEGIN;
INSERT INTO stock_picking (id, name, state) SELECT g, 'P' || g, NULL FROM generate_series(100, 2099) g;
UPDATE stock_picking SET state = 'draft' WHERE id >= 100;
COMMIT;
SELECT count(*) AS messages,
	   count(DISTINCT data::jsonb->'new'->>'id') FILTER (WHERE data::jsonb->>'action' IN ('I', 'U')) AS distinct_rows,
	   count(*) FILTER (WHERE data::jsonb->>'action' = 'U') > 0 AS some_uncoalesced,
	   count(*) FILTER (WHERE data::jsonb->>'action' = 'B') AS begins
  FROM pg_logical_slot_peek_changes('regress_toast', NULL, NULL, 'coalesce-memory', '64');
-- and with the default limit, one insert per row with its final state
SELECT count(*) FILTER (WHERE data::jsonb->>'action' = 'I') AS inserts,
	   count(*) FILTER (WHERE data::jsonb->>'action' = 'U') AS updates,
	   count(*) FILTER (WHERE data::jsonb->'new'->>'state' = 'draft') AS final_state
  FROM pg_logical_slot_get_changes('regress_toast', NULL, NULL);

SELECT pg_drop_replication_slot('regress_toast');
DROP TABLE stock_picking, res_partner;
