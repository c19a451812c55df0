-- Endpoint settings: a bad value is refused with an error naming the field,
-- not a constraint name and a dump of the row; replay refuses a window that
-- ends before it starts.
CREATE DATABASE endpoint_regress;
\c endpoint_regress
CREATE EXTENSION odoo_sync;
SET timezone = 'UTC';
SET datestyle = 'ISO';
SELECT odoo_sync.create_endpoint('e', 'https://203.0.113.10/x', concurrency => 0, enabled => false);
SELECT odoo_sync.create_endpoint('e', 'https://203.0.113.10/x', batch_size => 5000, enabled => false);
SELECT odoo_sync.create_endpoint('e', 'https://203.0.113.10/x', rate_limit => 0, enabled => false);
SELECT odoo_sync.create_endpoint('e', 'https://203.0.113.10/x', backoff_base => '10 s', backoff_max => '1 s', enabled => false);
SELECT odoo_sync.create_endpoint('e', 'https://203.0.113.10/x', timeout => '0 s', enabled => false);
SELECT odoo_sync.create_endpoint('e', 'https://203.0.113.10/x', max_age => '-1 hour', enabled => false);
SELECT odoo_sync.create_endpoint('', 'https://203.0.113.10/x', enabled => false);
SELECT odoo_sync.create_endpoint(NULL, 'https://203.0.113.10/x', enabled => false);
SELECT odoo_sync.create_endpoint('e', 'https://203.0.113.10/x', enabled => false) > 0 AS created;
SELECT odoo_sync.create_endpoint('e', 'https://203.0.113.11/y', enabled => false);
SELECT odoo_sync.create_endpoint('f', 'https://203.0.113.11/y', enabled => false) > 0 AS created;
SELECT odoo_sync.alter_endpoint('f', '{"name": "e"}');
SELECT odoo_sync.alter_endpoint('f', '{"name": "f2"}');
SELECT odoo_sync.drop_endpoint('f2');
-- alter: unknown keys list the valid ones; a value of the wrong type is named
SELECT odoo_sync.alter_endpoint('e', '{"concurency": 8}');
SELECT odoo_sync.alter_endpoint('e', '{"secret": "x"}');
SELECT odoo_sync.alter_endpoint('e', '{"max_age": "banana"}');
SELECT odoo_sync.alter_endpoint('e', '{"concurrency": "many"}');
SELECT odoo_sync.alter_endpoint('e', '{"enabled": "maybe"}');
SELECT odoo_sync.alter_endpoint('e', '{"concurrency": 300}');
SELECT odoo_sync.alter_endpoint('e', '{"backoff_max": "100 ms"}');
SELECT odoo_sync.alter_endpoint('e', '{"concurrency": 8, "max_age": "2 days"}');
SELECT concurrency, max_age FROM odoo_sync.endpoint WHERE name = 'e';
-- replay
SELECT odoo_sync.replay('e', '2026-11-02 00:00+00', '2026-11-01 00:00+00');
SELECT odoo_sync.replay('e', NULL);
SELECT odoo_sync.replay('e', now() - interval '1 day', now());
\c contrib_regression
DROP DATABASE endpoint_regress;
