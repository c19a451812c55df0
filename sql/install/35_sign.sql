-- odoo_sync install script: signing for callers other than the delivery
-- worker (src/sign_sql.c), such as the addon's test ping, without reading
-- the write-only secret.

CREATE FUNCTION @extschema@._sign(secret text, msg_id text, ts bigint, body text)
RETURNS text
LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'odoo_sync_sign';
COMMENT ON FUNCTION @extschema@._sign(text, text, bigint, text) IS
	'Private: Standard Webhooks signature of msg_id.ts.body with that secret.';
REVOKE ALL ON FUNCTION @extschema@._sign(text, text, bigint, text) FROM PUBLIC;

CREATE FUNCTION @extschema@.sign_webhook(p_endpoint text, p_msg_id text,
										 p_timestamp bigint, p_body text)
RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	v_secret text;
BEGIN
	IF p_msg_id IS NULL OR p_timestamp IS NULL OR p_body IS NULL THEN
		RAISE EXCEPTION 'cannot sign a message with a null part'
			USING ERRCODE = 'null_value_not_allowed',
				  DETAIL = 'Fields "msg_id", "timestamp" and "body" are required.';
	END IF;
	SELECT s.secret INTO v_secret
	  FROM _endpoint_secret s
	 WHERE s.endpoint_id = _endpoint_id(p_endpoint);
	IF v_secret IS NULL THEN
		RETURN NULL;			-- no secret: the endpoint's deliveries are unsigned too
	END IF;
	RETURN _sign(v_secret, p_msg_id, p_timestamp, p_body);
END
$$;
COMMENT ON FUNCTION @extschema@.sign_webhook(text, text, bigint, text) IS
	'The webhook-signature header ("v1,<base64>") a delivery of that message id, timestamp and body to the endpoint would carry, computed with the endpoint''s secret without revealing it; NULL when the endpoint has no secret. For test pings: whoever may call it can sign messages the endpoint will trust, so only odoo_sync_admin may.';
REVOKE ALL ON FUNCTION @extschema@.sign_webhook(text, text, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.sign_webhook(text, text, bigint, text) TO odoo_sync_admin;
