-- Subtransactions and rollbacks: only what committed is emitted, coalesced
-- across subtransactions; rolled-back transactions produce nothing.
SET client_min_messages = warning;
CREATE TABLE sale_order (id serial PRIMARY KEY, name varchar, state varchar, amount_total numeric);
SELECT 'init' FROM pg_create_logical_replication_slot('regress_txn', 'odoo_sync');

-- a rolled back transaction
BEGIN;
INSERT INTO sale_order (name, state) VALUES ('S1', 'draft');
ROLLBACK;

-- a rolled back savepoint inside a committed transaction
BEGIN;
INSERT INTO sale_order (name, state) VALUES ('S2', 'draft');
SAVEPOINT a;
UPDATE sale_order SET state = 'sale' WHERE name = 'S2';
INSERT INTO sale_order (name, state) VALUES ('S3', 'draft');
ROLLBACK TO SAVEPOINT a;
SAVEPOINT b;
UPDATE sale_order SET amount_total = 100 WHERE name = 'S2';
RELEASE SAVEPOINT b;
COMMIT;

-- changes split across subtransactions coalesce into one row
BEGIN;
SAVEPOINT s1;
INSERT INTO sale_order (name, state) VALUES ('S4', NULL);
RELEASE SAVEPOINT s1;
SAVEPOINT s2;
UPDATE sale_order SET state = 'draft' WHERE name = 'S4';
RELEASE SAVEPOINT s2;
UPDATE sale_order SET state = 'sale' WHERE name = 'S4';
COMMIT;

-- a delete then an insert of the same key is an update from outside
BEGIN;
DELETE FROM sale_order WHERE name = 'S4';
INSERT INTO sale_order (id, name, state) SELECT 4, 'S4', 'cancel';
COMMIT;

-- an update then a delete is a delete
BEGIN;
UPDATE sale_order SET state = 'sent' WHERE name = 'S2';
DELETE FROM sale_order WHERE name = 'S2';
COMMIT;

-- order of first appearance is kept
BEGIN;
INSERT INTO sale_order (id, name) VALUES (10, 'S10');
INSERT INTO sale_order (id, name) VALUES (11, 'S11');
UPDATE sale_order SET state = 'x' WHERE id = 10;
COMMIT;

-- a key change: the old row goes, the new one comes
UPDATE sale_order SET id = 12 WHERE id = 11;

SELECT data FROM pg_logical_slot_get_changes('regress_txn', NULL, NULL,
	'include-xids', '0', 'include-timestamp', '0', 'include-lsn', '0');

SELECT pg_drop_replication_slot('regress_txn');
DROP TABLE sale_order;
