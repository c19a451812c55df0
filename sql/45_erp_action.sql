-- The lifecycle of ERP actions through SQL functions (claim, finish, retry,
-- cancel) and the billing rules' variables (set_billing_var): what the addon's
-- cron job and an integrator's own runner call instead of writing the tables.
CREATE DATABASE erp_regress;
\c erp_regress
CREATE EXTENSION odoo_sync;
-- three actions of one picking, chained as the billing rules chain them,
-- and one of another picking
INSERT INTO odoo_sync.erp_action (idempotency_key, kind, picking_id, depends_on)
VALUES ('validate_picking:7', 'validate_picking', 7, NULL),
       ('create_invoice:7', 'create_invoice', 7, 'validate_picking:7'),
       ('post_invoice:7', 'post_invoice', 7, 'create_invoice:7'),
       ('validate_picking:8', 'validate_picking', 8, NULL);
CREATE FUNCTION claim(p_exclude bigint[] DEFAULT '{}') RETURNS text LANGUAGE sql AS $$
	SELECT coalesce((SELECT idempotency_key || ' attempt ' || attempts || ' ' || state
	                   FROM odoo_sync.erp_action_claim(p_exclude)), 'nothing')
$$;
CREATE FUNCTION key_id(k text) RETURNS bigint LANGUAGE sql AS $$
	SELECT id FROM odoo_sync.erp_action WHERE idempotency_key = k
$$;
-- only actions whose dependency is done are runnable, oldest first
SELECT claim();
SELECT claim();
SELECT claim();
-- finishing needs a valid state, an error unless done, a running action
SELECT odoo_sync.erp_action_finish(key_id('validate_picking:7'), 'finished');
SELECT odoo_sync.erp_action_finish(key_id('validate_picking:7'), 'failed');
SELECT odoo_sync.erp_action_finish(-1, 'done');
SELECT odoo_sync.erp_action_finish(key_id('create_invoice:7'), 'done');
SELECT state, result FROM odoo_sync.erp_action_finish(key_id('validate_picking:7'), 'done', '{"picking": 7}');
-- now its dependant is runnable; a retryable failure goes back to pending
SELECT claim(ARRAY[key_id('validate_picking:8')]);
SELECT state, attempts, last_error FROM odoo_sync.erp_action_finish(key_id('create_invoice:7'), 'pending', NULL, 'account locked');
SELECT claim(ARRAY[key_id('validate_picking:8')]);
SELECT state, attempts, last_error FROM odoo_sync.erp_action_finish(key_id('create_invoice:7'), 'failed', NULL, 'no income account');
-- a failed action blocks what depends on it, until retried
SELECT claim(ARRAY[key_id('validate_picking:8')]);
SELECT odoo_sync.erp_action_retry(ARRAY[key_id('create_invoice:7'), key_id('validate_picking:7')]);
SELECT idempotency_key, state, attempts, last_error FROM odoo_sync.erp_action ORDER BY id;
-- cancel needs a reason, records who, leaves done actions alone
SELECT odoo_sync.erp_action_cancel(ARRAY[key_id('create_invoice:7')], ' ');
SELECT odoo_sync.erp_action_cancel(ARRAY[key_id('create_invoice:7'), key_id('validate_picking:7')], 'invoiced by hand');
SELECT state, last_error ~ '^cancelled by \S+ at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: invoiced by hand$' AS recorded
  FROM odoo_sync.erp_action WHERE idempotency_key = 'create_invoice:7';
SELECT claim(ARRAY[key_id('validate_picking:8')]);
-- a claim committed without a finish (typed in psql, or a runner that broke
-- the one-transaction rule) leaves the action running with nobody holding
-- it (validate_picking:8, claimed at the top): retry and cancel take it.
-- (One a live runner holds is left alone: test/specs/erp_action_claim.spec.)
BEGIN;
SELECT odoo_sync.erp_action_retry(ARRAY[key_id('validate_picking:8')]) AS retried_abandoned;
ROLLBACK;
SELECT odoo_sync.erp_action_cancel(ARRAY[key_id('validate_picking:8')], 'picked up by hand') AS cancelled_abandoned;
SELECT idempotency_key, state FROM odoo_sync.erp_action WHERE idempotency_key = 'validate_picking:8';
-- billing variables
SELECT odoo_sync.set_billing_var('partial_billing', 'true');
SELECT odoo_sync.set_billing_var('partial_billing', 'true');
SELECT name, vars FROM odoo_sync.billing_rule ORDER BY priority;
SELECT odoo_sync.set_billing_var('partial_billing', '"yes"');
SELECT odoo_sync.set_billing_var('partial_billing', NULL);
SELECT odoo_sync.set_billing_var('no_such_var', 'true');
SELECT odoo_sync.set_billing_var('Bad-Name', 'true');
-- privileges: a reader may look but not claim; the operator may claim but
-- not change billing rules
CREATE ROLE erp_reader IN ROLE odoo_sync_reader;
CREATE ROLE erp_operator IN ROLE odoo_sync_operator;
SET ROLE erp_reader;
SELECT count(*) FROM odoo_sync.erp_action;
SELECT odoo_sync.erp_action_claim();
SET ROLE erp_operator;
SELECT odoo_sync.erp_action_retry(ARRAY[key_id('create_invoice:7')]);
SELECT idempotency_key FROM odoo_sync.erp_action_claim();
SELECT odoo_sync.set_billing_var('partial_billing', 'false');
RESET ROLE;
\c contrib_regression
DROP DATABASE erp_regress;
DROP ROLE erp_reader, erp_operator;
