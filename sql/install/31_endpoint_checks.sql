-- odoo_sync install script: endpoint settings checked with errors that name
-- the field (the table's CHECK constraints stay as the last line of defence,
-- but their message names a constraint and dumps the whole row).

CREATE FUNCTION @extschema@._endpoint_check()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	v_field text;
	v_rule	text;
	v_value text;
BEGIN
	IF NEW.name IS NULL OR btrim(NEW.name) = '' OR NEW.name <> btrim(NEW.name)
	   OR length(NEW.name) > 63 OR NEW.name ~ '[[:cntrl:]]' THEN
		RAISE EXCEPTION 'invalid endpoint name: %', coalesce('"' || NEW.name || '"', 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Field "name" must be 1 to 63 characters, without leading or trailing spaces or control characters.';
	END IF;
	IF NEW.url IS NULL THEN
		RAISE EXCEPTION 'an endpoint needs a URL'
			USING ERRCODE = 'null_value_not_allowed', DETAIL = 'Field "url" is null.';
	END IF;
	IF EXISTS (SELECT 1 FROM @extschema@.endpoint e WHERE e.name = NEW.name AND e.id IS DISTINCT FROM NEW.id) THEN
		RAISE EXCEPTION 'endpoint "%" already exists', NEW.name
			USING ERRCODE = 'unique_violation',
				  DETAIL = 'Field "name" must be unique.',
				  HINT = 'Change it with odoo_sync.alter_endpoint(), or pick another name.';
	END IF;
	SELECT f, r, v INTO v_field, v_rule, v_value
	  FROM (VALUES
		(1, 'concurrency', 'between 1 and 256', NEW.concurrency::text, NEW.concurrency BETWEEN 1 AND 256),
		(2, 'batch_size', 'between 1 and 1000', NEW.batch_size::text, NEW.batch_size BETWEEN 1 AND 1000),
		(3, 'rate_limit', 'above 0 (or null: no limit)', NEW.rate_limit::text, NEW.rate_limit IS NULL OR NEW.rate_limit > 0),
		(4, 'max_attempts', 'at least 1', NEW.max_attempts::text, NEW.max_attempts >= 1),
		(5, 'breaker_threshold', 'at least 1', NEW.breaker_threshold::text, NEW.breaker_threshold >= 1),
		(6, 'connect_timeout', 'above 0', NEW.connect_timeout::text, NEW.connect_timeout > '0'),
		(7, 'timeout', 'above 0', NEW.timeout::text, NEW.timeout > '0'),
		(8, 'max_age', 'above 0', NEW.max_age::text, NEW.max_age > '0'),
		(9, 'backoff_base', 'above 0', NEW.backoff_base::text, NEW.backoff_base > '0'),
		(10, 'backoff_max', 'at least backoff_base (' || NEW.backoff_base || ')', NEW.backoff_max::text,
			NEW.backoff_max >= NEW.backoff_base),
		(11, 'breaker_cooldown', 'at least 0', NEW.breaker_cooldown::text, NEW.breaker_cooldown >= '0'))
		AS c (n, f, r, v, ok)
	 WHERE ok IS NOT TRUE
	 ORDER BY n
	 LIMIT 1;
	IF v_field IS NOT NULL THEN
		RAISE EXCEPTION 'endpoint setting % must be %', v_field, v_rule
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('Field "%s" is %s.', v_field, coalesce(v_value, 'null'));
	END IF;
	RETURN NEW;
END
$$;
COMMENT ON FUNCTION @extschema@._endpoint_check() IS
	'Private: checks an endpoint''s settings before the table''s constraints do, with an error naming the field.';
REVOKE ALL ON FUNCTION @extschema@._endpoint_check() FROM PUBLIC;
CREATE TRIGGER endpoint_check BEFORE INSERT OR UPDATE ON @extschema@.endpoint
	FOR EACH ROW EXECUTE FUNCTION @extschema@._endpoint_check();

-- The deliver workers reload their endpoints when a change commits (and
-- once a second anyway), not at every wake-up: whatever changes endpoints
-- or secrets, the functions or a direct statement, bumps the database's
-- endpoint generation at commit through these triggers.
CREATE FUNCTION @extschema@._endpoints_generation()
RETURNS bigint
LANGUAGE c STRICT VOLATILE
AS 'MODULE_PATHNAME', 'odoo_sync_endpoints_generation';
COMMENT ON FUNCTION @extschema@._endpoints_generation() IS
	'Private: this database''s endpoint generation, which moves once per committed change of endpoints or secrets (the deliver workers reload then).';

CREATE FUNCTION @extschema@._endpoints_changed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
BEGIN
	PERFORM @extschema@._wake_at_commit('deliver endpoints');
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION @extschema@._endpoints_changed() IS
	'Private: at commit, tells the deliver workers to reload their endpoints.';
REVOKE ALL ON FUNCTION @extschema@._endpoints_changed() FROM PUBLIC;
CREATE TRIGGER endpoints_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
	ON @extschema@.endpoint FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._endpoints_changed();
CREATE TRIGGER endpoints_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
	ON @extschema@._endpoint_secret FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._endpoints_changed();
