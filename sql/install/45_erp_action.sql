-- odoo_sync install script: the lifecycle of ERP actions and the billing
-- rules' variables, as functions.
--
-- ERP actions (odoo_sync.erp_action, created by the inbound concern) are
-- executed by the Odoo addon through the ORM.  Whoever executes them (the
-- addon's cron job, or an integrator's own runner) does so through these
-- functions rather than by writing the table:
--
--   erp_action_claim(exclude)       pending -> running, the next runnable one
--   erp_action_finish(id, state, …) running -> done | failed | pending
--   erp_action_retry(ids)           failed | cancelled | pending -> pending
--   erp_action_cancel(ids, reason)  pending | failed -> cancelled
--
-- The claim is meant to run in the same transaction as the execution and
-- the finish: a crash rolls the action back to pending, and SKIP LOCKED
-- keeps two runners from taking the same action.  So a running action
-- whose row nobody holds locked was abandoned (claimed in a transaction
-- that committed without finishing it, e.g. a claim typed in psql):
-- retry and cancel take those too, and leave alone the running actions a
-- live runner holds.

CREATE FUNCTION @extschema@.erp_action_claim(p_exclude bigint[] DEFAULT '{}')
RETURNS SETOF @extschema@.erp_action
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
	UPDATE erp_action a
	   SET state = 'running', attempts = a.attempts + 1,
		   updated_at = clock_timestamp()
	 WHERE a.id = (
			SELECT b.id FROM erp_action b
			 WHERE b.state = 'pending'
			   AND NOT (b.id = ANY (coalesce(p_exclude, '{}')))
			   AND (b.depends_on IS NULL OR EXISTS (
					SELECT 1 FROM erp_action d
					 WHERE d.idempotency_key = b.depends_on AND d.state = 'done'))
			 ORDER BY b.id
			 LIMIT 1
			   FOR UPDATE SKIP LOCKED)
	RETURNING a.*;
$$;
COMMENT ON FUNCTION @extschema@.erp_action_claim(bigint[]) IS
	'Claims the oldest pending ERP action whose dependency is done (skipping p_exclude and actions locked by another runner): state running, attempts + 1. Returns it, or no row. Execute it and call erp_action_finish in the same transaction.';

CREATE FUNCTION @extschema@.erp_action_finish(p_id bigint, p_state text,
											  p_result jsonb DEFAULT NULL,
											  p_error text DEFAULT NULL)
RETURNS @extschema@.erp_action
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	v_action erp_action;
BEGIN
	IF p_state IS NULL OR p_state NOT IN ('done', 'failed', 'pending') THEN
		RAISE EXCEPTION 'invalid final state for an ERP action: %', coalesce(p_state, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Field "state" must be done, failed or pending (pending: try again later).';
	END IF;
	IF p_state <> 'done' AND p_error IS NULL THEN
		RAISE EXCEPTION 'an ERP action that is not done needs an error text'
			USING ERRCODE = 'null_value_not_allowed',
				  DETAIL = 'Field "error" is null for state ' || p_state || '.';
	END IF;
	SELECT * INTO v_action FROM erp_action WHERE id = p_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'ERP action % does not exist', p_id
			USING ERRCODE = 'no_data_found', DETAIL = 'Field "id" names no row of odoo_sync.erp_action.';
	END IF;
	IF v_action.state <> 'running' THEN
		RAISE EXCEPTION 'ERP action % is not running', p_id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'Its state is ' || v_action.state || '; only a claimed (running) action can be finished.',
				  HINT = 'Claim it with odoo_sync.erp_action_claim() first.';
	END IF;
	UPDATE erp_action
	   SET state = p_state,
		   result = CASE WHEN p_state = 'done' THEN p_result ELSE result END,
		   last_error = CASE WHEN p_state = 'done' THEN NULL ELSE p_error END,
		   updated_at = clock_timestamp()
	 WHERE id = p_id
	RETURNING * INTO v_action;
	RETURN v_action;
END
$$;
COMMENT ON FUNCTION @extschema@.erp_action_finish(bigint, text, jsonb, text) IS
	'Records the outcome of a claimed (running) ERP action: done with its result, failed for good with the error, or pending (with the error) to be tried again.';

CREATE FUNCTION @extschema@.erp_action_retry(p_ids bigint[])
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	v_n integer;
BEGIN
	UPDATE erp_action
	   SET state = 'pending', attempts = 0, last_error = NULL,
		   updated_at = clock_timestamp()
	 WHERE id IN (SELECT a.id FROM erp_action a
				   WHERE a.id = ANY (p_ids)
					 AND a.state IN ('failed', 'cancelled', 'pending', 'running')
					 FOR UPDATE SKIP LOCKED);
	GET DIAGNOSTICS v_n = ROW_COUNT;
	IF v_n > 0 THEN
		PERFORM _cron_trigger();
	END IF;
	RETURN v_n;
END
$$;
COMMENT ON FUNCTION @extschema@.erp_action_retry(bigint[]) IS
	'Puts failed, cancelled, pending and abandoned running ERP actions (claimed by a transaction that committed without finishing them) back to pending with attempts reset, and asks Odoo''s cron runner to run the addon''s job; returns how many. Done actions, and running ones a live runner holds, are left alone.';

CREATE FUNCTION @extschema@.erp_action_cancel(p_ids bigint[], p_reason text)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	v_n integer;
BEGIN
	IF p_reason IS NULL OR btrim(p_reason) = '' THEN
		RAISE EXCEPTION 'cancelling an ERP action needs a reason'
			USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Field "reason" is empty.';
	END IF;
	UPDATE erp_action
	   SET state = 'cancelled',
		   last_error = format('cancelled by %s at %s: %s', session_user,
							   to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
							   p_reason),
		   updated_at = clock_timestamp()
	 WHERE id IN (SELECT a.id FROM erp_action a
				   WHERE a.id = ANY (p_ids)
					 AND a.state IN ('pending', 'failed', 'running')
					 FOR UPDATE SKIP LOCKED);
	GET DIAGNOSTICS v_n = ROW_COUNT;
	RETURN v_n;
END
$$;
COMMENT ON FUNCTION @extschema@.erp_action_cancel(bigint[], text) IS
	'Cancels pending, failed and abandoned running ERP actions (for example an invoice made by hand), recording who, when and why in last_error; returns how many. Done actions and running ones a live runner holds are left alone; actions depending on a cancelled one wait until it is retried.';

CREATE FUNCTION @extschema@.set_billing_var(p_var text, p_value jsonb)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	v_n integer;
BEGIN
	IF p_var IS NULL OR p_var !~ '^[a-z][a-z0-9_]*$' THEN
		RAISE EXCEPTION 'invalid billing rule variable name: %', coalesce(p_var, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Field "var" must match ^[a-z][a-z0-9_]*$.';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM billing_rule WHERE vars ? p_var) THEN
		RAISE EXCEPTION 'no billing rule has a variable named %', p_var
			USING ERRCODE = 'undefined_object',
				  DETAIL = 'Field "var" is not a key of any odoo_sync.billing_rule.vars.';
	END IF;
	-- a value of another type would make the rules' comparisons (for
	-- example $partial_billing == true) silently never hold
	IF EXISTS (SELECT 1 FROM billing_rule
				WHERE vars ? p_var
				  AND jsonb_typeof(vars -> p_var) IS DISTINCT FROM jsonb_typeof(p_value)) THEN
		RAISE EXCEPTION 'billing rule variable % is %, not %', p_var,
				(SELECT string_agg(DISTINCT jsonb_typeof(vars -> p_var), ' or ')
				   FROM billing_rule WHERE vars ? p_var),
				coalesce(jsonb_typeof(p_value), 'SQL NULL')
			USING ERRCODE = 'datatype_mismatch',
				  DETAIL = 'Field "value" must have the type the rules'' conditions compare it with.';
	END IF;
	UPDATE billing_rule
	   SET vars = jsonb_set(vars, ARRAY[p_var], p_value)
	 WHERE vars ? p_var AND vars -> p_var IS DISTINCT FROM p_value;
	GET DIAGNOSTICS v_n = ROW_COUNT;
	RETURN v_n;
END
$$;
COMMENT ON FUNCTION @extschema@.set_billing_var(text, jsonb) IS
	'Sets a variable (for example partial_billing) in every billing rule that declares it; returns how many rules changed.';

REVOKE ALL ON FUNCTION @extschema@.erp_action_claim(bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.erp_action_finish(bigint, text, jsonb, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.erp_action_retry(bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.erp_action_cancel(bigint[], text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.set_billing_var(text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.erp_action_claim(bigint[]),
	@extschema@.erp_action_finish(bigint, text, jsonb, text),
	@extschema@.erp_action_retry(bigint[]),
	@extschema@.erp_action_cancel(bigint[], text) TO odoo_sync_operator;
GRANT EXECUTE ON FUNCTION @extschema@.set_billing_var(text, jsonb) TO odoo_sync_admin;
