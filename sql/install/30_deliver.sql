-- Delivery: endpoints, subscriptions, the delivery queue and its history.
--
-- Tables:
--   endpoint          where events go (URL, headers, timeouts, concurrency,
--                     batch size, rate limit, retry policy, breaker policy)
--   _endpoint_secret  the signing secret, readable by the extension owner only
--   endpoint_state    circuit breaker state, written by the deliver worker
--   subscription      event type patterns and lanes routed to an endpoint
--   delivery_chunk    new deliveries, up to 256 events of one endpoint,
--                     lane, ordering and aggregate type per row, as the
--                     fan-out trigger writes them: a
--                     worker claims a chunk, sends its events and, when
--                     every one has had its first answer, deletes it and
--                     writes their history (or a delivery row each for the
--                     events that must wait or be retried)
--   delivery          pending and in-flight deliveries one by one: retries,
--                     events waiting behind an earlier one of their
--                     aggregate, and what operators queue again (claimed,
--                     and deleted once delivered or dead)
--   delivery_done     finished deliveries (delivered or dead), insert-only
--   delivery_attempt  failed attempts (status, error, when), insert-only
--   delivery_request  operator requests (redeliver, replay, retry_dead):
--                     who and when
--
-- A claimed row carries a lease: the claim moves next_at to the lease
-- expiry, so a row left behind by a crashed worker becomes claimable again
-- by itself (a restarted worker also releases its predecessor's leases at
-- once).

CREATE TABLE @extschema@.endpoint (
	id					integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name				text NOT NULL UNIQUE,
	url					text NOT NULL,
	headers				jsonb NOT NULL DEFAULT '{}'
						CHECK (pg_catalog.jsonb_typeof(headers) = 'object'),
	connect_timeout		interval NOT NULL DEFAULT '5 seconds',
	timeout				interval NOT NULL DEFAULT '30 seconds',
	concurrency			integer NOT NULL DEFAULT 4 CHECK (concurrency BETWEEN 1 AND 256),
	batch_size			integer NOT NULL DEFAULT 1 CHECK (batch_size BETWEEN 1 AND 1000),
	rate_limit			double precision CHECK (rate_limit > 0),
	max_attempts		integer NOT NULL DEFAULT 12 CHECK (max_attempts >= 1),
	max_age				interval NOT NULL DEFAULT '24 hours',
	backoff_base		interval NOT NULL DEFAULT '1 second',
	backoff_max			interval NOT NULL DEFAULT '1 hour',
	breaker_threshold	integer NOT NULL DEFAULT 10 CHECK (breaker_threshold >= 1),
	breaker_cooldown	interval NOT NULL DEFAULT '30 seconds',
	verify_tls			boolean NOT NULL DEFAULT true,
	enabled				boolean NOT NULL DEFAULT true,
	created_at			timestamptz NOT NULL DEFAULT pg_catalog.now(),
	created_by			text NOT NULL DEFAULT session_user,
	CHECK (connect_timeout > '0' AND timeout > '0' AND backoff_base > '0'
		   AND backoff_max >= backoff_base AND max_age > '0')
);
COMMENT ON TABLE @extschema@.endpoint IS
	'HTTP endpoints events are delivered to (one row per receiver); change through odoo_sync.create_endpoint() and odoo_sync.alter_endpoint().';
COMMENT ON COLUMN @extschema@.endpoint.batch_size IS '1 = one CloudEvent per request (application/cloudevents+json); more = up to this many per request (application/cloudevents-batch+json).';
COMMENT ON COLUMN @extschema@.endpoint.rate_limit IS 'Largest number of requests per second sent to this endpoint (NULL = no limit).';
COMMENT ON COLUMN @extschema@.endpoint.concurrency IS 'Largest number of requests in flight to this endpoint (one keep-alive connection each, or HTTP/2 streams).';
COMMENT ON COLUMN @extschema@.endpoint.enabled IS 'When false, deliveries still queue up but nothing is sent (a pause).';
COMMENT ON COLUMN @extschema@.endpoint.headers IS 'Extra request headers (object of name: value); visible to the admin role only.';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.endpoint', '');

-- Only the extension owner reads this table (the worker runs as superuser);
-- the admin role writes it through odoo_sync.set_endpoint_secret().
CREATE TABLE @extschema@._endpoint_secret (
	endpoint_id		integer PRIMARY KEY
					REFERENCES @extschema@.endpoint (id) ON DELETE CASCADE,
	secret			text NOT NULL,
	set_at			timestamptz NOT NULL DEFAULT pg_catalog.now(),
	set_by			text NOT NULL DEFAULT session_user
);
COMMENT ON TABLE @extschema@._endpoint_secret IS
	'Private: Standard Webhooks signing secret of each endpoint (write-only for everyone but the extension owner).';
REVOKE ALL ON @extschema@._endpoint_secret FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('@extschema@._endpoint_secret', '');

CREATE TABLE @extschema@.endpoint_state (
	endpoint_id		integer PRIMARY KEY
					REFERENCES @extschema@.endpoint (id) ON DELETE CASCADE,
	circuit			text NOT NULL DEFAULT 'closed'
					CHECK (circuit IN ('closed', 'open', 'half_open')),
	failures		integer NOT NULL DEFAULT 0,
	opened_at		timestamptz,
	changed_at		timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE @extschema@.endpoint_state IS
	'Circuit breaker state of each endpoint, as last written by the deliver worker.';

CREATE TABLE @extschema@.subscription (
	id				integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	endpoint_id		integer NOT NULL
					REFERENCES @extschema@.endpoint (id) ON DELETE CASCADE,
	types			text[] NOT NULL,
	type_likes		text[] NOT NULL,
	lanes			text[] NOT NULL DEFAULT '{critical,bulk}'
					CHECK (lanes <@ '{critical,bulk}'::text[] AND lanes <> '{}'),
	ordered			boolean NOT NULL DEFAULT true,
	enabled			boolean NOT NULL DEFAULT true,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	created_by		text NOT NULL DEFAULT session_user
);
COMMENT ON TABLE @extschema@.subscription IS
	'Routes event types (patterns such as dispatch.*) and lanes to an endpoint; ordered per aggregate unless ordered = false.';
COMMENT ON COLUMN @extschema@.subscription.type_likes IS 'The type patterns as LIKE patterns (derived from types).';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.subscription', '');
CREATE INDEX subscription_endpoint_idx ON @extschema@.subscription (endpoint_id);

CREATE TABLE @extschema@.delivery_request (
	id				bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	operation		text NOT NULL
					CHECK (operation IN ('redeliver', 'replay', 'retry_dead')),
	endpoint_id		integer,
	arguments		jsonb NOT NULL,
	deliveries		bigint NOT NULL DEFAULT 0,
	requested_by	text NOT NULL DEFAULT session_user,
	requested_at	timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE @extschema@.delivery_request IS
	'Operator requests that sent events again (redeliver, replay, retry_dead): who, when, what, how many deliveries.';

CREATE TABLE @extschema@.delivery (
	id				bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	endpoint_id		integer NOT NULL,
	event_id		uuid NOT NULL,
	aggregate_type	text NOT NULL,
	aggregate_id	text NOT NULL,
	aggregate_seq	bigint NOT NULL,
	lane			text NOT NULL,
	ordered			boolean NOT NULL,
	event_at		timestamptz NOT NULL,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	next_at			timestamptz NOT NULL DEFAULT pg_catalog.now(),
	attempts		integer NOT NULL DEFAULT 0,
	leased_by		integer,
	last_status		integer,
	last_error		text,
	request_id		bigint
);
COMMENT ON TABLE @extschema@.delivery IS
	'Pending and in-flight deliveries (one row per event and endpoint); finished ones move to delivery_done.';
COMMENT ON COLUMN @extschema@.delivery.next_at IS 'When the row may be claimed: the retry time, or the lease expiry while in flight.';
COMMENT ON COLUMN @extschema@.delivery.leased_by IS 'PID of the deliver worker holding the row in flight (NULL when waiting).';
COMMENT ON COLUMN @extschema@.delivery.event_at IS 'Commit time of the event (capture time when unknown): latency is measured from it.';
-- A queue: room for HOT updates (a claim updates every row of a page at
-- once, so a page must keep room for all its rows' new versions), and
-- vacuum soon after a burst so that claims do not walk dead entries.
ALTER TABLE @extschema@.delivery SET (fillfactor = 45,
	autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
	autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 20000,
	autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000,
	autovacuum_vacuum_cost_delay = 0);
-- Claims scan by id and filter on next_at: next_at is not indexed, so
-- claiming (lease) and rescheduling are HOT updates that add no index
-- entries, and a busy queue does not bloat its indexes.  One partial index
-- per lane, and the claim names its lane as a constant: a critical claim
-- reads only critical entries whatever the statistics say, so it costs the
-- same with an empty queue or a backlog of 100k bulk rows (a single index
-- with the lane as a parameter let the planner prefer the primary key and
-- filter the whole bulk backlog on lane).  The claim orders by (id + 0),
-- which only these indexes provide: an id-ordered primary key scan
-- filtering on endpoint is never an alternative (it walked the whole queue
-- for every endpoint with nothing to send).
CREATE INDEX delivery_claim_critical_idx ON @extschema@.delivery (endpoint_id, (id + 0))
	WHERE lane = 'critical';
CREATE INDEX delivery_claim_bulk_idx ON @extschema@.delivery (endpoint_id, (id + 0))
	WHERE lane = 'bulk';
CREATE INDEX delivery_aggregate_idx
	ON @extschema@.delivery (endpoint_id, aggregate_type, aggregate_id, aggregate_seq);
SELECT pg_catalog.pg_extension_config_dump('@extschema@.delivery', '');

CREATE TABLE @extschema@.delivery_chunk (
	id				bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	endpoint_id		integer NOT NULL,
	lane			text NOT NULL,
	ordered			boolean NOT NULL,
	first_seq		bigint NOT NULL,
	n				integer NOT NULL,
	agg_type		text NOT NULL,
	ids				bigint[] NOT NULL,
	event_ids		uuid[] NOT NULL,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	next_at			timestamptz NOT NULL DEFAULT pg_catalog.now(),
	leased_by		integer
);
COMMENT ON TABLE @extschema@.delivery_chunk IS
	'New deliveries, up to 256 events of one endpoint, lane, ordering and aggregate type per row in capture order (ids[i] is the delivery id of event_ids[i]); a deliver worker claims the row, sends the events, and replaces it by their history or by one delivery row each for those that must wait or be retried.';
COMMENT ON COLUMN @extschema@.delivery_chunk.agg_type IS 'Aggregate type of its events (a chunk holds one): a delivery of another chunk or a retry of this type waits for this chunk when it is older.';
COMMENT ON COLUMN @extschema@.delivery_chunk.first_seq IS 'Capture order (event.seq) of its first event.';
ALTER TABLE @extschema@.delivery_chunk SET (fillfactor = 70,
	autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 500,
	autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 500,
	autovacuum_vacuum_cost_delay = 0);
CREATE INDEX delivery_chunk_claim_idx ON @extschema@.delivery_chunk (endpoint_id, lane, id);
-- a row waits for older chunks of its aggregate type (the row claim), a
-- chunk's event for older chunks of the other lane of its type (the chunk
-- claim): index probes, also while the other lane has a backlog of chunks
-- of other types
CREATE INDEX delivery_chunk_type_idx ON @extschema@.delivery_chunk (endpoint_id, agg_type, lane, first_seq);
SELECT pg_catalog.pg_extension_config_dump('@extschema@.delivery_chunk', '');

CREATE TABLE @extschema@.delivery_done (
	id				bigint NOT NULL,	-- the delivery's id (no index: written once per event, looked up by event)
	endpoint_id		integer NOT NULL,
	event_id		uuid NOT NULL,
	state			text NOT NULL CHECK (state IN ('delivered', 'dead')),
	lane			text NOT NULL,
	attempts		integer NOT NULL,
	status			integer,
	error			text,
	response_excerpt text,
	event_at		timestamptz NOT NULL,
	created_at		timestamptz NOT NULL,
	finished_at		timestamptz NOT NULL,
	request_id		bigint,
	retried_by		bigint
);
COMMENT ON TABLE @extschema@.delivery_done IS
	'Finished deliveries: delivered (2xx) or dead (with the last status, error and a bounded response excerpt).';
COMMENT ON COLUMN @extschema@.delivery_done.retried_by IS 'For dead rows sent again by odoo_sync.retry_dead(): the delivery_request id.';
-- Time ranges (endpoint_status's last 5 minutes, purge_deliveries) over an
-- append-only table: a BRIN, not a btree written once per delivered event
-- (~1 us of the ~11 us an event costs the worker at 90k events/s).
CREATE INDEX delivery_done_finished_idx ON @extschema@.delivery_done USING brin (finished_at)
	WITH (pages_per_range = 32, autosummarize = on);
CREATE INDEX delivery_done_event_idx ON @extschema@.delivery_done (event_id);
CREATE INDEX delivery_done_dead_idx ON @extschema@.delivery_done (endpoint_id)
	WHERE state = 'dead' AND retried_by IS NULL;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.delivery_done', '');

CREATE TABLE @extschema@.delivery_attempt (
	delivery_id		bigint NOT NULL,
	endpoint_id		integer NOT NULL,
	event_id		uuid NOT NULL,
	attempt			integer NOT NULL,
	status			integer,
	error			text,
	at				timestamptz NOT NULL,
	retry_at		timestamptz
);
COMMENT ON TABLE @extschema@.delivery_attempt IS
	'Failed delivery attempts (successes are in delivery_done): status or error, when, and when the next try is due (NULL = dead).';
CREATE INDEX delivery_attempt_idx ON @extschema@.delivery_attempt (delivery_id);
CREATE INDEX delivery_attempt_endpoint_idx ON @extschema@.delivery_attempt (endpoint_id, at);

-- C helpers ---------------------------------------------------------------

CREATE FUNCTION @extschema@._check_url(url text)
RETURNS void
LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'odoo_sync_check_url';
COMMENT ON FUNCTION @extschema@._check_url(text) IS
	'Private: raises an error unless url is an acceptable endpoint URL (http or https; no private, loopback or link-local address unless odoo_sync.allow_private_endpoints).';
REVOKE ALL ON FUNCTION @extschema@._check_url(text) FROM PUBLIC;

CREATE FUNCTION @extschema@._check_secret(secret text)
RETURNS void
LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'odoo_sync_check_secret';
COMMENT ON FUNCTION @extschema@._check_secret(text) IS
	'Private: raises an error (never showing the secret or the statement) unless secret is usable.';
REVOKE ALL ON FUNCTION @extschema@._check_secret(text) FROM PUBLIC;

CREATE FUNCTION @extschema@._raise_hidden(sqlstate text, message text, detail text, hint text)
RETURNS void
LANGUAGE c
AS 'MODULE_PATHNAME', 'odoo_sync_raise_hidden';
COMMENT ON FUNCTION @extschema@._raise_hidden(text, text, text, text) IS
	'Private: raises an error whose statement text is kept out of the server log (used where a statement may carry a secret).';
REVOKE ALL ON FUNCTION @extschema@._raise_hidden(text, text, text, text) FROM PUBLIC;

-- Fan-out -----------------------------------------------------------------

CREATE FUNCTION @extschema@._type_like(pattern text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog
AS $$
	SELECT replace(replace(replace(replace(pattern, '\', '\\'), '%', '\%'), '_', '\_'), '*', '%')
$$;
COMMENT ON FUNCTION @extschema@._type_like(text) IS
	'Private: a subscription type pattern (* = any characters) as a LIKE pattern.';

CREATE FUNCTION @extschema@._fan_out()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	v_critical boolean;
	v_bulk boolean;
	v_any boolean;
BEGIN
	-- chunks of up to 256 events per endpoint, lane, ordering and
	-- aggregate type, in capture order, each event with its delivery id
	INSERT INTO @extschema@.delivery_chunk
		(endpoint_id, lane, ordered, first_seq, n, agg_type, ids, event_ids)
	SELECT z.endpoint_id, z.lane, z.ordered, min(z.seq), count(*),
		   z.aggregate_type,
		   array_agg(z.did ORDER BY z.seq), array_agg(z.id ORDER BY z.seq)
	  FROM (SELECT m.*, nextval('@extschema@.delivery_id_seq') AS did,
				   (row_number() OVER (PARTITION BY m.endpoint_id, m.lane, m.ordered,
													m.aggregate_type
									   ORDER BY m.seq) - 1) / 256 AS part
			  FROM (SELECT s.endpoint_id, e.id, e.seq, e.lane, e.aggregate_type,
						   bool_or(s.ordered) AS ordered
					  FROM new_events e
					  JOIN @extschema@.subscription s
						ON s.enabled AND e.lane = ANY (s.lanes)
					   AND e.type LIKE ANY (s.type_likes)
					  JOIN @extschema@.endpoint ep
						ON ep.id = s.endpoint_id AND ep.rate_limit IS NULL
					 GROUP BY s.endpoint_id, e.id, e.seq, e.lane, e.aggregate_type) m
			 ORDER BY m.seq) z
	 GROUP BY z.endpoint_id, z.lane, z.ordered, z.aggregate_type, z.part
	 ORDER BY min(z.seq);
	v_any := FOUND;
	-- a rate-limited endpoint takes its events one by one: a chunk would
	-- hold up to 256 of them (and their history) for minutes at a
	-- partner's pace, and a crash would send them all again
	IF NOT EXISTS (SELECT 1 FROM @extschema@.endpoint ep WHERE ep.rate_limit IS NOT NULL) THEN
		v_any := v_any;
	ELSE
	INSERT INTO @extschema@.delivery
		(endpoint_id, event_id, aggregate_type, aggregate_id, aggregate_seq,
		 lane, ordered, event_at)
	SELECT s.endpoint_id, e.id, e.aggregate_type, e.aggregate_id, e.aggregate_seq,
		   e.lane, bool_or(s.ordered), coalesce(e.commit_time, e.captured_at)
	  FROM new_events e
	  JOIN @extschema@.subscription s
		ON s.enabled AND e.lane = ANY (s.lanes)
	   AND e.type LIKE ANY (s.type_likes)
	  JOIN @extschema@.endpoint ep
		ON ep.id = s.endpoint_id AND ep.rate_limit IS NOT NULL
	 GROUP BY s.endpoint_id, e.id, e.aggregate_type, e.aggregate_id,
			  e.aggregate_seq, e.lane, e.commit_time, e.captured_at, e.seq
	 ORDER BY e.seq;
	v_any := v_any OR FOUND;
	END IF;
	IF v_any THEN
		-- each lane has its own deliver worker: wake the ones with new work
		-- (lanes of the new events; a lane no subscription took only costs
		-- an idle turn)
		SELECT bool_or(e.lane = 'critical'), bool_or(e.lane <> 'critical')
		  INTO v_critical, v_bulk FROM new_events e;
		IF v_critical THEN
			PERFORM @extschema@._wake_at_commit('deliver critical');
		END IF;
		IF v_bulk THEN
			PERFORM @extschema@._wake_at_commit('deliver bulk');
		END IF;
	END IF;
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION @extschema@._fan_out() IS
	'Private: creates the deliveries of new events (as chunks) for every matching enabled subscription, in the inserting transaction, and wakes the deliver worker of each lane concerned at commit.';
-- a trigger needs no EXECUTE grant to fire; nobody is to call it otherwise
REVOKE ALL ON FUNCTION @extschema@._fan_out() FROM PUBLIC;

CREATE TRIGGER event_fan_out
	AFTER INSERT ON @extschema@.event
	REFERENCING NEW TABLE AS new_events
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._fan_out();

-- CloudEvents -------------------------------------------------------------

CREATE FUNCTION @extschema@._trace_id(correlation_id text, event_id uuid)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
	SELECT CASE WHEN pg_catalog.lower(pg_catalog.replace(coalesce(correlation_id, ''), '-', ''))
					 OPERATOR(pg_catalog.~) '^[0-9a-f]{32}$'
				 AND coalesce(correlation_id, '') OPERATOR(pg_catalog.!~) '^[0-]+$'
				THEN pg_catalog.lower(pg_catalog.replace(correlation_id, '-', ''))
			ELSE pg_catalog.md5(coalesce(correlation_id, event_id::text)) END
$$;
COMMENT ON FUNCTION @extschema@._trace_id(text, uuid) IS
	'Private: W3C trace id of an event (the correlation id when it is 32 hex digits or a UUID, else its MD5).';

-- No SET clause: a plain expression, inlined into the claim query.
CREATE FUNCTION @extschema@.traceparent(e @extschema@.event)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
	SELECT '00-' || @extschema@._trace_id(e.correlation_id, e.id) ||
		'-' || pg_catalog.substr(pg_catalog.md5(e.id::text), 1, 16) || '-01'
$$;
COMMENT ON FUNCTION @extschema@.traceparent(@extschema@.event) IS
	'W3C traceparent of an event: trace id from the correlation id (itself when it is 32 hex digits or a UUID, else its MD5), parent id from the event id.';
GRANT EXECUTE ON FUNCTION @extschema@.traceparent(@extschema@.event) TO odoo_sync_reader;

-- No SET clause (it would prevent inlining into the claim query): every
-- name is qualified.
CREATE FUNCTION @extschema@.cloudevent(e @extschema@.event)
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
	SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
		'specversion', '1.0',
		'id', e.id,
		'source', e.source,
		'type', e.type,
		'subject', e.aggregate_type || '/' || e.aggregate_id,
		'time', pg_catalog.to_char(pg_catalog.timezone('UTC', coalesce(e.commit_time, e.captured_at)),
						'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
		'datacontenttype', 'application/json',
		'sequence', e.aggregate_seq::text,
		'correlationid', e.correlation_id,
		'lane', e.lane,
		'traceparent', @extschema@.traceparent(e))) OPERATOR(pg_catalog.||)
		pg_catalog.jsonb_build_object('data', e.payload)
$$;
COMMENT ON FUNCTION @extschema@.cloudevent(@extschema@.event) IS
	'The CloudEvents 1.0 structured form of an event, as delivered (extensions: sequence, correlationid, lane, traceparent).';
GRANT EXECUTE ON FUNCTION @extschema@.cloudevent(@extschema@.event) TO odoo_sync_reader;

-- Endpoint and subscription API (admin) -------------------------------------

CREATE FUNCTION @extschema@._endpoint_id(endpoint text)
RETURNS integer
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	r integer;
BEGIN
	SELECT e.id INTO r FROM @extschema@.endpoint e WHERE e.name = _endpoint_id.endpoint;
	IF r IS NULL THEN
		RAISE EXCEPTION 'endpoint "%" does not exist', endpoint
			USING ERRCODE = 'undefined_object',
				  HINT = 'The endpoints are listed in odoo_sync.endpoints.';
	END IF;
	RETURN r;
END
$$;
COMMENT ON FUNCTION @extschema@._endpoint_id(text) IS 'Private: id of the endpoint of that name, or an error.';

CREATE FUNCTION @extschema@._check_headers(headers jsonb)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog
AS $$
DECLARE
	k text;
	v jsonb;
BEGIN
	IF jsonb_typeof(headers) <> 'object' THEN
		RAISE EXCEPTION 'endpoint headers must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	FOR k, v IN SELECT * FROM jsonb_each(headers) LOOP
		IF k !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]+$' THEN
			RAISE EXCEPTION 'invalid header name "%"', k
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		IF jsonb_typeof(v) <> 'string' OR (v #>> '{}') ~ '[\r\n\x01-\x08\x0b\x0c\x0e-\x1f]' THEN
			RAISE EXCEPTION 'value of header "%" must be a single-line string', k
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		IF lower(k) IN ('content-type', 'content-length', 'host', 'webhook-id',
						'webhook-timestamp', 'webhook-signature', 'traceparent',
						'transfer-encoding', 'connection') THEN
			RAISE EXCEPTION 'header "%" is set by odoo_sync', k
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
	END LOOP;
END
$$;
COMMENT ON FUNCTION @extschema@._check_headers(jsonb) IS 'Private: validates extra endpoint headers (values never appear in the message).';

CREATE FUNCTION @extschema@.set_endpoint_secret(endpoint text, secret text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	eid integer;
BEGIN
	PERFORM @extschema@._check_secret(secret);
	SELECT e.id INTO eid FROM @extschema@.endpoint e WHERE e.name = set_endpoint_secret.endpoint;
	IF eid IS NULL THEN
		PERFORM @extschema@._raise_hidden('42704',
			pg_catalog.format('endpoint "%s" does not exist', endpoint), NULL, NULL);
	END IF;
	INSERT INTO @extschema@._endpoint_secret (endpoint_id, secret)
	VALUES (eid, secret)
	ON CONFLICT (endpoint_id) DO UPDATE
		SET secret = excluded.secret, set_at = pg_catalog.now(), set_by = session_user;
END
$$;
COMMENT ON FUNCTION @extschema@.set_endpoint_secret(text, text) IS
	'Sets the Standard Webhooks signing secret of an endpoint ("whsec_" + base64, or any other text used as raw bytes). Write-only: no view or function shows it back. Pass it as a bind parameter so that statement logging cannot record it.';
REVOKE ALL ON FUNCTION @extschema@.set_endpoint_secret(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.set_endpoint_secret(text, text) TO odoo_sync_admin;

CREATE FUNCTION @extschema@.create_endpoint(
	name text,
	url text,
	secret text DEFAULT NULL,
	headers jsonb DEFAULT '{}',
	concurrency integer DEFAULT 4,
	batch_size integer DEFAULT 1,
	rate_limit double precision DEFAULT NULL,
	connect_timeout interval DEFAULT '5 seconds',
	timeout interval DEFAULT '30 seconds',
	max_attempts integer DEFAULT 12,
	max_age interval DEFAULT '24 hours',
	backoff_base interval DEFAULT '1 second',
	backoff_max interval DEFAULT '1 hour',
	breaker_threshold integer DEFAULT 10,
	breaker_cooldown interval DEFAULT '30 seconds',
	verify_tls boolean DEFAULT true,
	enabled boolean DEFAULT true)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	eid integer;
	msg text;
	det text;
	hnt text;
	st text;
BEGIN
	IF secret IS NOT NULL THEN
		PERFORM @extschema@._check_secret(secret);
	END IF;
	-- The statement may carry the secret: any error is re-raised with the
	-- statement kept out of the server log.
	BEGIN
		PERFORM @extschema@._check_url(url);
		PERFORM @extschema@._check_headers(headers);
		INSERT INTO @extschema@.endpoint AS e
			(name, url, headers, concurrency, batch_size, rate_limit,
			 connect_timeout, timeout, max_attempts, max_age, backoff_base,
			 backoff_max, breaker_threshold, breaker_cooldown, verify_tls, enabled)
		VALUES (create_endpoint.name, create_endpoint.url, create_endpoint.headers,
				create_endpoint.concurrency, create_endpoint.batch_size,
				create_endpoint.rate_limit, create_endpoint.connect_timeout,
				create_endpoint.timeout, create_endpoint.max_attempts,
				create_endpoint.max_age, create_endpoint.backoff_base,
				create_endpoint.backoff_max, create_endpoint.breaker_threshold,
				create_endpoint.breaker_cooldown, create_endpoint.verify_tls,
				create_endpoint.enabled)
		RETURNING e.id INTO eid;
	EXCEPTION WHEN OTHERS THEN
		GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
			det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
		PERFORM @extschema@._raise_hidden(st, msg, nullif(det, ''), nullif(hnt, ''));
	END;
	INSERT INTO @extschema@.endpoint_state (endpoint_id) VALUES (eid);
	IF secret IS NOT NULL THEN
		INSERT INTO @extschema@._endpoint_secret (endpoint_id, secret) VALUES (eid, secret);
	END IF;
	PERFORM @extschema@._wake_at_commit('deliver');
	RETURN eid;
END
$$;
COMMENT ON FUNCTION @extschema@.create_endpoint(text, text, text, jsonb, integer, integer, double precision, interval, interval, integer, interval, interval, interval, integer, interval, boolean, boolean) IS
	'Creates an endpoint (URL checked: http or https, no private address unless odoo_sync.allow_private_endpoints) and returns its id. The secret is write-only.';
REVOKE ALL ON FUNCTION @extschema@.create_endpoint(text, text, text, jsonb, integer, integer, double precision, interval, interval, integer, interval, interval, interval, integer, interval, boolean, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.create_endpoint(text, text, text, jsonb, integer, integer, double precision, interval, interval, integer, interval, interval, interval, integer, interval, boolean, boolean) TO odoo_sync_admin;

CREATE FUNCTION @extschema@.alter_endpoint(endpoint text, settings jsonb)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	eid integer := @extschema@._endpoint_id(endpoint);
	k text;
	st text;
	msg text;
	det text;
	hnt text;
BEGIN
	FOR k IN SELECT jsonb_object_keys(settings) LOOP
		IF k NOT IN ('url', 'headers', 'concurrency', 'batch_size', 'rate_limit',
					 'connect_timeout', 'timeout', 'max_attempts', 'max_age',
					 'backoff_base', 'backoff_max', 'breaker_threshold',
					 'breaker_cooldown', 'verify_tls', 'enabled', 'name') THEN
			IF k ~* 'secret' THEN
				RAISE EXCEPTION 'unknown endpoint setting "%"', k
					USING ERRCODE = 'invalid_parameter_value',
						  HINT = 'Use odoo_sync.set_endpoint_secret() for the secret.';
			END IF;
			RAISE EXCEPTION 'unknown endpoint setting "%"', k
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = 'The settings are: name, url, headers, concurrency, batch_size, rate_limit, connect_timeout, timeout, max_attempts, max_age, backoff_base, backoff_max, breaker_threshold, breaker_cooldown, verify_tls, enabled.';
		END IF;
		-- each value in its own type, so that a bad one is named
		BEGIN
			PERFORM CASE
				WHEN k IN ('concurrency', 'batch_size', 'max_attempts', 'breaker_threshold')
					THEN (settings->>k)::integer::text
				WHEN k = 'rate_limit' THEN (settings->>k)::double precision::text
				WHEN k IN ('connect_timeout', 'timeout', 'max_age', 'backoff_base',
						   'backoff_max', 'breaker_cooldown') THEN (settings->>k)::interval::text
				WHEN k IN ('verify_tls', 'enabled') THEN (settings->>k)::boolean::text
			END;
		EXCEPTION WHEN data_exception THEN
			RAISE EXCEPTION 'invalid value for endpoint setting "%": %', k, settings->k
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = format('Field "%s": %s.', k, SQLERRM);
		END;
	END LOOP;
	IF settings ? 'url' THEN
		PERFORM @extschema@._check_url(settings->>'url');
	END IF;
	IF settings ? 'headers' THEN
		PERFORM @extschema@._check_headers(settings->'headers');
	END IF;
	UPDATE @extschema@.endpoint e SET
		name = coalesce(settings->>'name', e.name),
		url = coalesce(settings->>'url', e.url),
		headers = coalesce(settings->'headers', e.headers),
		concurrency = coalesce((settings->>'concurrency')::integer, e.concurrency),
		batch_size = coalesce((settings->>'batch_size')::integer, e.batch_size),
		rate_limit = CASE WHEN settings ? 'rate_limit'
						  THEN (settings->>'rate_limit')::double precision
						  ELSE e.rate_limit END,
		connect_timeout = coalesce((settings->>'connect_timeout')::interval, e.connect_timeout),
		timeout = coalesce((settings->>'timeout')::interval, e.timeout),
		max_attempts = coalesce((settings->>'max_attempts')::integer, e.max_attempts),
		max_age = coalesce((settings->>'max_age')::interval, e.max_age),
		backoff_base = coalesce((settings->>'backoff_base')::interval, e.backoff_base),
		backoff_max = coalesce((settings->>'backoff_max')::interval, e.backoff_max),
		breaker_threshold = coalesce((settings->>'breaker_threshold')::integer, e.breaker_threshold),
		breaker_cooldown = coalesce((settings->>'breaker_cooldown')::interval, e.breaker_cooldown),
		verify_tls = coalesce((settings->>'verify_tls')::boolean, e.verify_tls),
		enabled = coalesce((settings->>'enabled')::boolean, e.enabled)
	 WHERE e.id = eid;
	PERFORM @extschema@._wake_at_commit('deliver');
EXCEPTION WHEN invalid_parameter_value OR unique_violation THEN
	-- the settings check (_endpoint_check) names the field: say just that,
	-- not the whole UPDATE as context
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
		det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
	PERFORM @extschema@._raise_hidden(st, msg, nullif(det, ''), nullif(hnt, ''));
END
$$;
COMMENT ON FUNCTION @extschema@.alter_endpoint(text, jsonb) IS
	'Changes settings of an endpoint, e.g. alter_endpoint(''billing'', ''{"enabled": false}''); the worker picks them up within a second.';
REVOKE ALL ON FUNCTION @extschema@.alter_endpoint(text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.alter_endpoint(text, jsonb) TO odoo_sync_admin;

CREATE FUNCTION @extschema@.drop_endpoint(endpoint text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	eid integer := @extschema@._endpoint_id(endpoint);
	n bigint;
BEGIN
	SELECT count(*) + coalesce((SELECT sum(c.n) FROM @extschema@.delivery_chunk c
								  WHERE c.endpoint_id = eid), 0)
	  INTO n FROM @extschema@.delivery WHERE endpoint_id = eid;
	IF n > 0 THEN
		RAISE EXCEPTION 'endpoint "%" still has % pending deliveries', endpoint, n
			USING ERRCODE = 'object_in_use',
				  HINT = 'Wait for them, or disable the endpoint and use odoo_sync.cancel_deliveries() first.';
	END IF;
	DELETE FROM @extschema@.endpoint WHERE id = eid;
END
$$;
COMMENT ON FUNCTION @extschema@.drop_endpoint(text) IS
	'Drops an endpoint and its subscriptions; refused while deliveries are pending.';
REVOKE ALL ON FUNCTION @extschema@.drop_endpoint(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.drop_endpoint(text) TO odoo_sync_admin;

CREATE FUNCTION @extschema@.cancel_deliveries(endpoint text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	eid integer := @extschema@._endpoint_id(endpoint);
	n bigint;
	m bigint;
BEGIN
	-- chunks first, in flight or not (a worker finishing one finds it gone
	-- and records nothing of it); then the rows, with a snapshot that sees
	-- any a worker wrote when it recorded a chunk meanwhile
	WITH c AS (
		DELETE FROM @extschema@.delivery_chunk WHERE endpoint_id = eid RETURNING *
	)
	INSERT INTO @extschema@.delivery_done
		(id, endpoint_id, event_id, state, lane, attempts, status, error,
		 event_at, created_at, finished_at)
	SELECT u.id, c.endpoint_id, u.event_id, 'dead', c.lane, 0, NULL,
		   'cancelled by ' || session_user,
		   coalesce(e.commit_time, e.captured_at, c.created_at), c.created_at,
		   pg_catalog.clock_timestamp()
	  FROM c CROSS JOIN LATERAL unnest(c.ids, c.event_ids) AS u(id, event_id)
	  LEFT JOIN @extschema@.event e ON e.id = u.event_id;
	GET DIAGNOSTICS m = ROW_COUNT;
	WITH d AS (
		DELETE FROM @extschema@.delivery WHERE endpoint_id = eid RETURNING *
	)
	INSERT INTO @extschema@.delivery_done
		(id, endpoint_id, event_id, state, lane, attempts, status, error,
		 event_at, created_at, finished_at, request_id)
	SELECT d.id, d.endpoint_id, d.event_id, 'dead', d.lane, d.attempts, d.last_status,
		   'cancelled by ' || session_user, d.event_at, d.created_at,
		   pg_catalog.clock_timestamp(), d.request_id
	  FROM d;
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n + m;
END
$$;
COMMENT ON FUNCTION @extschema@.cancel_deliveries(text) IS
	'Moves every pending delivery of an endpoint to the dead state (error "cancelled by <user>"); they can be sent again with odoo_sync.retry_dead().';
REVOKE ALL ON FUNCTION @extschema@.cancel_deliveries(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.cancel_deliveries(text) TO odoo_sync_admin;

CREATE FUNCTION @extschema@.subscribe(
	endpoint text,
	types text[],
	lanes text[] DEFAULT '{critical,bulk}',
	ordered boolean DEFAULT true)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	eid integer := @extschema@._endpoint_id(endpoint);
	sid integer;
	t text;
BEGIN
	IF types IS NULL OR cardinality(types) = 0 THEN
		RAISE EXCEPTION 'a subscription needs at least one event type pattern'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use ''{*}'' for every event type.';
	END IF;
	FOREACH t IN ARRAY types LOOP
		IF t IS NULL OR t !~ '^[A-Za-z0-9_.*-]+$' THEN
			RAISE EXCEPTION 'invalid event type pattern "%"', t
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = 'Patterns are event types made of letters, digits, ".", "_", "-", with "*" matching any characters.';
		END IF;
	END LOOP;
	IF lanes IS NULL OR NOT lanes <@ '{critical,bulk}'::text[] OR cardinality(lanes) = 0 THEN
		RAISE EXCEPTION 'invalid lanes %', lanes
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Lanes are "critical" and "bulk".';
	END IF;
	INSERT INTO @extschema@.subscription AS s (endpoint_id, types, type_likes, lanes, ordered)
	SELECT eid, types, array_agg(@extschema@._type_like(p)), lanes, ordered
	  FROM unnest(types) p
	RETURNING s.id INTO sid;
	RETURN sid;
END
$$;
COMMENT ON FUNCTION @extschema@.subscribe(text, text[], text[], boolean) IS
	'Routes events whose type matches one of the patterns (e.g. {dispatch.*}) and whose lane is listed to an endpoint, from now on; returns the subscription id.';
REVOKE ALL ON FUNCTION @extschema@.subscribe(text, text[], text[], boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.subscribe(text, text[], text[], boolean) TO odoo_sync_admin;

CREATE FUNCTION @extschema@.unsubscribe(subscription integer)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
BEGIN
	DELETE FROM @extschema@.subscription s WHERE s.id = unsubscribe.subscription;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'subscription % does not exist', subscription
			USING ERRCODE = 'undefined_object';
	END IF;
END
$$;
COMMENT ON FUNCTION @extschema@.unsubscribe(integer) IS
	'Removes a subscription (pending deliveries are kept and still sent).';
REVOKE ALL ON FUNCTION @extschema@.unsubscribe(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.unsubscribe(integer) TO odoo_sync_admin;

-- Replay and operations (operator) -----------------------------------------

-- The one way an operator request queues events again: for each (endpoint,
-- event) pair, a delivery unless the event is still pending (or in flight)
-- there, in capture order, counted in the request.  Requests on one
-- endpoint take turns (a transaction-level advisory lock per endpoint, in
-- endpoint order so that requests on several endpoints cannot deadlock):
-- two concurrent replays would otherwise both find an event not pending and
-- queue it twice.
CREATE FUNCTION @extschema@._queue_again(rid bigint, endpoint_ids integer[], event_ids uuid[])
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	n bigint;
BEGIN
	PERFORM pg_advisory_xact_lock(hashtext('odoo_sync.queue_again'), x.ep)
	   FROM (SELECT DISTINCT ep FROM unnest(endpoint_ids) ep ORDER BY ep) x;
	INSERT INTO @extschema@.delivery
		(endpoint_id, event_id, aggregate_type, aggregate_id, aggregate_seq,
		 lane, ordered, event_at, request_id)
	SELECT p.ep, e.id, e.aggregate_type, e.aggregate_id, e.aggregate_seq, e.lane,
		   coalesce((SELECT bool_or(s.ordered) FROM @extschema@.subscription s
					  WHERE s.endpoint_id = p.ep AND e.type LIKE ANY (s.type_likes)), true),
		   coalesce(e.commit_time, e.captured_at), rid
	  FROM (SELECT DISTINCT u.ep, u.ev FROM unnest(endpoint_ids, event_ids) AS u(ep, ev)) p
	  JOIN @extschema@.event e ON e.id = p.ev
	 WHERE NOT EXISTS (
			SELECT 1 FROM @extschema@.delivery d
			 WHERE d.endpoint_id = p.ep AND d.aggregate_type = e.aggregate_type
			   AND d.aggregate_id = e.aggregate_id AND d.aggregate_seq = e.aggregate_seq
			   AND d.event_id = e.id)
	   AND NOT EXISTS (
			SELECT 1 FROM @extschema@.delivery_chunk c
			 WHERE c.endpoint_id = p.ep AND c.agg_type = e.aggregate_type
			   AND e.id = ANY (c.event_ids))
	 ORDER BY e.seq;
	GET DIAGNOSTICS n = ROW_COUNT;
	UPDATE @extschema@.delivery_request SET deliveries = n WHERE id = rid;
	IF n > 0 THEN
		PERFORM @extschema@._wake_at_commit('deliver');
	END IF;
	RETURN n;
END
$$;
COMMENT ON FUNCTION @extschema@._queue_again(bigint, integer[], uuid[]) IS
	'Private: queues each (endpoint, event) pair again for request rid unless the event is pending there; one request per endpoint at a time. Returns how many were queued.';
REVOKE ALL ON FUNCTION @extschema@._queue_again(bigint, integer[], uuid[]) FROM PUBLIC;

CREATE FUNCTION @extschema@.redeliver(event_id uuid, endpoint text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	eid integer;
	rid bigint;
	eps integer[];
BEGIN
	IF endpoint IS NOT NULL THEN
		eid := @extschema@._endpoint_id(endpoint);
	END IF;
	IF NOT EXISTS (SELECT 1 FROM @extschema@.event e WHERE e.id = redeliver.event_id) THEN
		RAISE EXCEPTION 'event % does not exist', event_id
			USING ERRCODE = 'undefined_object';
	END IF;
	INSERT INTO @extschema@.delivery_request (operation, endpoint_id, arguments)
	VALUES ('redeliver', eid, jsonb_build_object('event_id', event_id, 'endpoint', endpoint))
	RETURNING id INTO rid;
	-- With an endpoint: to it, subscribed or not. Without: to every endpoint
	-- with a matching subscription.
	SELECT coalesce(array_agg(ep.id), '{}') INTO eps
	  FROM @extschema@.event e
	  JOIN @extschema@.endpoint ep ON (eid IS NOT NULL AND ep.id = eid)
		OR (eid IS NULL AND EXISTS (
				SELECT 1 FROM @extschema@.subscription s
				 WHERE s.endpoint_id = ep.id AND s.enabled
				   AND e.lane = ANY (s.lanes) AND e.type LIKE ANY (s.type_likes)))
	 WHERE e.id = redeliver.event_id;
	RETURN @extschema@._queue_again(rid, eps,
		array_fill(redeliver.event_id, ARRAY[cardinality(eps)]));
END
$$;
COMMENT ON FUNCTION @extschema@.redeliver(uuid, text) IS
	'Sends an event again (same webhook-id) to the given endpoint, or to every endpoint subscribed to it, except where it is still pending (it is sent once anyway); returns the number of deliveries queued. Recorded in delivery_request.';
REVOKE ALL ON FUNCTION @extschema@.redeliver(uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.redeliver(uuid, text) TO odoo_sync_operator;

CREATE FUNCTION @extschema@.replay(endpoint text, since timestamptz,
								   until timestamptz DEFAULT NULL,
								   types text[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	eid integer := @extschema@._endpoint_id(endpoint);
	rid bigint;
	likes text[];
	evs uuid[];
BEGIN
	IF since IS NULL THEN
		RAISE EXCEPTION 'replay needs a start time'
			USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Field "since" is null.';
	END IF;
	IF until IS NOT NULL AND until < since THEN
		RAISE EXCEPTION 'replay window ends before it starts'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('Field "until" (%s) is before "since" (%s).', until, since);
	END IF;
	IF types IS NOT NULL THEN
		SELECT array_agg(@extschema@._type_like(p)) INTO likes FROM unnest(types) p;
	END IF;
	INSERT INTO @extschema@.delivery_request (operation, endpoint_id, arguments)
	VALUES ('replay', eid, jsonb_build_object('endpoint', endpoint, 'since', since,
											  'until', until, 'types', types))
	RETURNING id INTO rid;
	-- Without types: the events the endpoint's subscriptions match now.
	SELECT coalesce(array_agg(e.id), '{}') INTO evs
	  FROM @extschema@.event e
	 WHERE e.captured_at >= since
	   AND (until IS NULL OR e.captured_at < until)
	   AND CASE WHEN likes IS NOT NULL THEN e.type LIKE ANY (likes)
				ELSE EXISTS (SELECT 1 FROM @extschema@.subscription s
							  WHERE s.endpoint_id = eid AND s.enabled
								AND e.lane = ANY (s.lanes)
								AND e.type LIKE ANY (s.type_likes)) END;
	RETURN @extschema@._queue_again(rid, array_fill(eid, ARRAY[cardinality(evs)]), evs);
END
$$;
COMMENT ON FUNCTION @extschema@.replay(text, timestamptz, timestamptz, text[]) IS
	'Sends again (same webhook-ids) the events captured in [since, until) that the endpoint''s subscriptions match (or that match types), except those still pending there (sent once anyway); returns the number of deliveries queued. Recorded in delivery_request.';
REVOKE ALL ON FUNCTION @extschema@.replay(text, timestamptz, timestamptz, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.replay(text, timestamptz, timestamptz, text[]) TO odoo_sync_operator;

CREATE FUNCTION @extschema@.retry_dead(endpoint text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	eid integer := @extschema@._endpoint_id(endpoint);
	rid bigint;
	evs uuid[];
BEGIN
	INSERT INTO @extschema@.delivery_request (operation, endpoint_id, arguments)
	VALUES ('retry_dead', eid, jsonb_build_object('endpoint', endpoint))
	RETURNING id INTO rid;
	-- A dead letter whose event is pending there again (redelivered, say)
	-- is marked retried too: that pending delivery settles it.
	WITH dead AS (
		UPDATE @extschema@.delivery_done d SET retried_by = rid
		 WHERE d.endpoint_id = eid AND d.state = 'dead' AND d.retried_by IS NULL
		RETURNING d.event_id
	)
	SELECT coalesce(array_agg(DISTINCT event_id), '{}') INTO evs FROM dead;
	RETURN @extschema@._queue_again(rid, array_fill(eid, ARRAY[cardinality(evs)]), evs);
END
$$;
COMMENT ON FUNCTION @extschema@.retry_dead(text) IS
	'Sends every dead delivery of an endpoint again (same webhook-ids, attempts start over; not an event pending there again already); returns how many. Recorded in delivery_request.';
REVOKE ALL ON FUNCTION @extschema@.retry_dead(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.retry_dead(text) TO odoo_sync_operator;

CREATE FUNCTION @extschema@.purge_deliveries(older_than interval DEFAULT '7 days')
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	n bigint;
BEGIN
	DELETE FROM @extschema@.delivery_attempt WHERE at < pg_catalog.now() - older_than;
	DELETE FROM @extschema@.delivery_done
	 WHERE finished_at < pg_catalog.now() - older_than
	   AND (state = 'delivered' OR retried_by IS NOT NULL);
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$$;
COMMENT ON FUNCTION @extschema@.purge_deliveries(interval) IS
	'Deletes delivered (and retried dead) history and failed attempts older than the given age; dead letters not yet retried are kept. Returns the number of deliveries purged.';
REVOKE ALL ON FUNCTION @extschema@.purge_deliveries(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.purge_deliveries(interval) TO odoo_sync_admin;

-- Views -------------------------------------------------------------------

CREATE VIEW @extschema@.endpoints AS
	SELECT ep.id, ep.name, ep.url, ep.enabled, ep.concurrency, ep.batch_size,
		   ep.rate_limit, ep.connect_timeout, ep.timeout, ep.max_attempts,
		   ep.max_age, ep.backoff_base, ep.backoff_max, ep.breaker_threshold,
		   ep.breaker_cooldown, ep.verify_tls,
		   ARRAY(SELECT jsonb_object_keys(ep.headers)) AS header_names,
		   CASE WHEN s.secret IS NULL THEN NULL
				WHEN length(s.secret) <= 8 THEN '****'
				ELSE '****' || right(s.secret, 4) END AS secret_hint,
		   s.set_at AS secret_set_at, ep.created_at, ep.created_by
	  FROM @extschema@.endpoint ep
	  LEFT JOIN @extschema@._endpoint_secret s ON s.endpoint_id = ep.id;
COMMENT ON VIEW @extschema@.endpoints IS
	'Endpoints with their settings; the secret only as a hint (****abcd) and headers by name only.';
GRANT SELECT ON @extschema@.endpoints TO odoo_sync_reader;

CREATE VIEW @extschema@.subscriptions AS
	SELECT s.id, ep.name AS endpoint, s.types, s.lanes, s.ordered, s.enabled,
		   s.created_at, s.created_by
	  FROM @extschema@.subscription s
	  JOIN @extschema@.endpoint ep ON ep.id = s.endpoint_id;
COMMENT ON VIEW @extschema@.subscriptions IS 'Subscriptions with their endpoint''s name.';
GRANT SELECT ON @extschema@.subscriptions TO odoo_sync_reader;

CREATE VIEW @extschema@.deliveries AS
	SELECT d.id, ep.name AS endpoint, d.event_id, e.type, d.aggregate_type,
		   d.aggregate_id, d.aggregate_seq, d.lane,
		   CASE WHEN d.leased_by IS NOT NULL AND d.next_at > pg_catalog.now()
				THEN 'in_flight' ELSE 'pending' END AS state,
		   d.attempts, d.last_status AS status, d.last_error AS error,
		   NULL::text AS response_excerpt, d.created_at, d.next_at,
		   NULL::timestamptz AS finished_at, d.request_id
	  FROM @extschema@.delivery d
	  JOIN @extschema@.endpoint ep ON ep.id = d.endpoint_id
	  LEFT JOIN @extschema@.event e ON e.id = d.event_id
	UNION ALL
	-- events of chunks: in flight while their chunk is leased, until its
	-- history is written
	SELECT u.id, ep.name, u.event_id, e.type, e.aggregate_type, e.aggregate_id,
		   e.aggregate_seq, c.lane,
		   CASE WHEN c.leased_by IS NOT NULL AND c.next_at > pg_catalog.now()
				THEN 'in_flight' ELSE 'pending' END,
		   CASE WHEN c.leased_by IS NOT NULL AND c.next_at > pg_catalog.now()
				THEN 1 ELSE 0 END, NULL::integer, NULL::text, NULL::text,
		   c.created_at, c.next_at, NULL::timestamptz, NULL::bigint
	  FROM @extschema@.delivery_chunk c
	  JOIN @extschema@.endpoint ep ON ep.id = c.endpoint_id
	 CROSS JOIN LATERAL unnest(c.ids, c.event_ids) AS u(id, event_id)
	  LEFT JOIN @extschema@.event e ON e.id = u.event_id
	UNION ALL
	SELECT d.id, ep.name, d.event_id, e.type, e.aggregate_type, e.aggregate_id,
		   e.aggregate_seq, d.lane, d.state, d.attempts, d.status, d.error,
		   d.response_excerpt, d.created_at, NULL, d.finished_at, d.request_id
	  FROM @extschema@.delivery_done d
	  JOIN @extschema@.endpoint ep ON ep.id = d.endpoint_id
	  LEFT JOIN @extschema@.event e ON e.id = d.event_id;
COMMENT ON VIEW @extschema@.deliveries IS
	'Every delivery, pending, in flight, delivered or dead, with its endpoint, event type and last outcome.';
GRANT SELECT ON @extschema@.deliveries TO odoo_sync_reader;

CREATE VIEW @extschema@.dead_letters AS
	SELECT d.id, ep.name AS endpoint, d.event_id, e.type, e.aggregate_type,
		   e.aggregate_id, d.attempts, d.status, d.error, d.response_excerpt,
		   d.created_at, d.finished_at
	  FROM @extschema@.delivery_done d
	  JOIN @extschema@.endpoint ep ON ep.id = d.endpoint_id
	  LEFT JOIN @extschema@.event e ON e.id = d.event_id
	 WHERE d.state = 'dead' AND d.retried_by IS NULL;
COMMENT ON VIEW @extschema@.dead_letters IS
	'Dead deliveries not yet sent again: last HTTP status, error and response excerpt. odoo_sync.retry_dead(endpoint) sends them again.';
GRANT SELECT ON @extschema@.dead_letters TO odoo_sync_reader;

CREATE VIEW @extschema@.endpoint_status AS
	SELECT ep.id, ep.name, ep.enabled,
		   coalesce(st.circuit, 'closed') AS circuit,
		   st.failures AS consecutive_failures,
		   coalesce(q.backlog, 0) AS backlog, coalesce(q.in_flight, 0) AS in_flight,
		   q.oldest_pending_age,
		   h.delivered_5m, a.failed_attempts_5m, h.dead_5m,
		   (SELECT count(*) FROM @extschema@.delivery_done x
			 WHERE x.endpoint_id = ep.id AND x.state = 'dead' AND x.retried_by IS NULL) AS dead,
		   h.latency_p50_ms, h.latency_p95_ms, h.latency_p99_ms,
		   a.last_error, a.last_failure_at
	  FROM @extschema@.endpoint ep
	  LEFT JOIN @extschema@.endpoint_state st ON st.endpoint_id = ep.id
	  LEFT JOIN LATERAL (
		SELECT sum(x.n)::bigint AS backlog,
			   sum(x.n) FILTER (WHERE x.leased_by IS NOT NULL
								AND x.next_at > pg_catalog.now())::bigint AS in_flight,
			   pg_catalog.now() - min(x.created_at) AS oldest_pending_age
		  FROM (SELECT 1 AS n, d.leased_by, d.next_at, d.created_at
				  FROM @extschema@.delivery d WHERE d.endpoint_id = ep.id
				UNION ALL
				SELECT c.n, c.leased_by, c.next_at, c.created_at
				  FROM @extschema@.delivery_chunk c WHERE c.endpoint_id = ep.id) x) q ON true
	  LEFT JOIN LATERAL (
		SELECT count(*) FILTER (WHERE x.state = 'delivered') AS delivered_5m,
			   count(*) FILTER (WHERE x.state = 'dead') AS dead_5m,
			   round((percentile_cont(0.5) WITHIN GROUP (ORDER BY l))::numeric, 1) AS latency_p50_ms,
			   round((percentile_cont(0.95) WITHIN GROUP (ORDER BY l))::numeric, 1) AS latency_p95_ms,
			   round((percentile_cont(0.99) WITHIN GROUP (ORDER BY l))::numeric, 1) AS latency_p99_ms
		  FROM @extschema@.delivery_done x,
			   LATERAL (SELECT CASE WHEN x.state = 'delivered'
									THEN extract(epoch FROM x.finished_at - x.event_at) * 1000
							   END AS l) lat
		 WHERE x.endpoint_id = ep.id
		   AND x.finished_at > pg_catalog.now() - interval '5 minutes') h ON true
	  LEFT JOIN LATERAL (
		SELECT count(*) FILTER (WHERE t.at > pg_catalog.now() - interval '5 minutes') AS failed_attempts_5m,
			   (array_agg(coalesce(t.error, 'HTTP ' || t.status) ORDER BY t.at DESC))[1] AS last_error,
			   max(t.at) AS last_failure_at
		  FROM (SELECT * FROM @extschema@.delivery_attempt t0
				 WHERE t0.endpoint_id = ep.id ORDER BY t0.at DESC LIMIT 100) t) a ON true;
COMMENT ON VIEW @extschema@.endpoint_status IS
	'Per endpoint: circuit state, backlog, in flight, oldest pending age, delivered/failed/dead in the last 5 minutes, dead letters, latency percentiles (commit to 2xx, last 5 minutes) and the last error.';
GRANT SELECT ON @extschema@.endpoint_status TO odoo_sync_reader;

GRANT SELECT ON @extschema@.subscription, @extschema@.delivery,
	@extschema@.delivery_chunk, @extschema@.delivery_done, @extschema@.delivery_attempt,
	@extschema@.delivery_request, @extschema@.endpoint_state TO odoo_sync_reader;
GRANT SELECT (id, name, url, concurrency, batch_size, rate_limit, connect_timeout,
	timeout, max_attempts, max_age, backoff_base, backoff_max, breaker_threshold,
	breaker_cooldown, verify_tls, enabled, created_at, created_by)
	ON @extschema@.endpoint TO odoo_sync_reader;
GRANT SELECT ON @extschema@.endpoint TO odoo_sync_admin;

-- Demo / test helper ------------------------------------------------------

CREATE FUNCTION @extschema@.create_loopback_endpoint(name text, port integer,
													 path text DEFAULT '/hook',
													 secret text DEFAULT NULL,
													 types text[] DEFAULT '{*}')
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, @extschema@
AS $$
DECLARE
	eid integer;
BEGIN
	eid := @extschema@.create_endpoint(name, pg_catalog.format('http://127.0.0.1:%s%s', port, path),
		secret, backoff_base => '200 milliseconds', backoff_max => '5 seconds');
	PERFORM @extschema@.subscribe(name, types);
	RETURN eid;
END
$$;
COMMENT ON FUNCTION @extschema@.create_loopback_endpoint(text, integer, text, text, text[]) IS
	'Demo and test helper: an endpoint at http://127.0.0.1:<port><path> subscribed to types (needs odoo_sync.allow_private_endpoints = on); returns its id.';
REVOKE ALL ON FUNCTION @extschema@.create_loopback_endpoint(text, integer, text, text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.create_loopback_endpoint(text, integer, text, text, text[]) TO odoo_sync_admin;
