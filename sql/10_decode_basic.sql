-- The odoo_sync output plugin: insert, update, delete, coalescing of Odoo's
-- insert-then-update pattern, insert-then-delete, column types.
SET client_min_messages = warning;
CREATE TABLE stock_picking (
	id serial PRIMARY KEY,
	name varchar,
	state varchar,
	origin varchar,
	partner_id integer,
	scheduled_date timestamp,
	weight numeric,
	carrier_price float8,
	is_locked boolean,
	picking_properties jsonb,
	note text
);
CREATE TABLE mail_message (id serial PRIMARY KEY, body text);
CREATE TABLE unrelated (id serial PRIMARY KEY, v text);

SELECT 'init' FROM pg_create_logical_replication_slot('regress_basic', 'odoo_sync');

-- Odoo's create: insert with NULL state, then two updates in one transaction
BEGIN;
INSERT INTO stock_picking (name, state, origin, partner_id, scheduled_date, weight, carrier_price, is_locked, picking_properties)
	VALUES ('WH/OUT/00001', NULL, 'S00001', 7, '2026-11-30 08:00:00', 4.5, 5.25, true, '{"dock": "B"}');
UPDATE stock_picking SET state = 'draft' WHERE id = 1;
UPDATE stock_picking SET state = 'assigned', weight = 3.0 WHERE id = 1;
INSERT INTO mail_message (body) VALUES ('chatter');
COMMIT;

-- updates only: one U with the final values
BEGIN;
UPDATE stock_picking SET state = 'done' WHERE id = 1;
UPDATE stock_picking SET note = 'left at the door' WHERE id = 1;
COMMIT;

-- insert then delete: nothing at all
BEGIN;
INSERT INTO stock_picking (name) VALUES ('WH/OUT/00002');
DELETE FROM stock_picking WHERE name = 'WH/OUT/00002';
COMMIT;

-- unwatched tables only: no transaction in the output
INSERT INTO mail_message (body) VALUES ('more chatter');
INSERT INTO unrelated (v) VALUES ('x');

-- a delete carries the key only (REPLICA IDENTITY DEFAULT)
DELETE FROM stock_picking WHERE id = 1;

-- special values
INSERT INTO stock_picking (name, weight, carrier_price, note) VALUES ('q"uote\', 'NaN', 'Infinity', E'line\nbreak');

SELECT data FROM pg_logical_slot_get_changes('regress_basic', NULL, NULL,
	'include-xids', '0', 'include-timestamp', '0', 'include-lsn', '0',
	'add-tables', 'public.stock_picking,public.mail_message');

-- the default table list (Odoo's business tables) also excludes chatter
INSERT INTO mail_message (body) VALUES ('x');
UPDATE stock_picking SET state = 'cancel';
SELECT data FROM pg_logical_slot_get_changes('regress_basic', NULL, NULL,
	'include-xids', '0', 'include-timestamp', '0', 'include-lsn', '0');

-- with xids, LSNs and times: present (values not printed)
INSERT INTO stock_picking (name) VALUES ('WH/OUT/00003');
SELECT (data::jsonb ? 'xid') AS has_xid, (data::jsonb ? 'commit-lsn') AS has_lsn,
	   (data::jsonb ? 'commit-time') AS has_time, data::jsonb->'origin' AS origin,
	   (data::jsonb->>'commit-lsn')::pg_lsn > '0/0' AS lsn_valid
  FROM pg_logical_slot_get_changes('regress_basic', NULL, NULL)
 WHERE data::jsonb->>'action' = 'B';

SELECT pg_drop_replication_slot('regress_basic');
DROP TABLE stock_picking, mail_message, unrelated;
