-- The immutable event log: every business event odoo_sync emits, once.
-- Written by the capture worker (and odoo_sync.resync / stored procedures),
-- read by delivery. Rows are never updated or deleted, except by the
-- retention purge, which keeps events that still have pending deliveries.

CREATE TABLE @extschema@.event (
	id				uuid PRIMARY KEY,
	seq				bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
	type			text NOT NULL,
	source			text NOT NULL,
	aggregate_type	text NOT NULL,
	aggregate_id	text NOT NULL,
	aggregate_seq	bigint NOT NULL,
	lane			text NOT NULL DEFAULT 'critical'
					CHECK (lane IN ('critical', 'bulk')),
	correlation_id	text,
	snapshot		boolean NOT NULL DEFAULT false,
	commit_lsn		pg_lsn,
	commit_time		timestamptz,
	captured_at		timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	rule_id			integer,
	payload			jsonb NOT NULL,
	UNIQUE (aggregate_type, aggregate_id, aggregate_seq)
);
COMMENT ON TABLE @extschema@.event IS
	'Immutable log of business events (CloudEvents-shaped): one row per event, ordered per aggregate by aggregate_seq.';
COMMENT ON COLUMN @extschema@.event.id IS 'Stable event id: the CloudEvents id and the webhook-id header, across retries and replays.';
COMMENT ON COLUMN @extschema@.event.seq IS 'Capture order across the whole log.';
COMMENT ON COLUMN @extschema@.event.aggregate_seq IS 'Position of the event within its aggregate (1, 2, ...): delivery order per shipment.';
COMMENT ON COLUMN @extschema@.event.correlation_id IS 'Shared by every event of one order-to-cash chain (order, dispatch, proof of delivery, invoice).';
COMMENT ON COLUMN @extschema@.event.commit_lsn IS 'Commit LSN of the Odoo transaction the event comes from (NULL for snapshots and emitted events).';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.event', '');
-- captured_at grows with the log (append-only, clock_timestamp() at insert):
-- a BRIN index serves the retention purge and replay(since) at a fraction of
-- a btree's cost per captured event (measured: a btree here cost ~3 us of
-- the ~17 us per event of the capture worker).
CREATE INDEX event_captured_at_idx ON @extschema@.event USING brin (captured_at)
	WITH (pages_per_range = 32, autosummarize = on);
CREATE INDEX event_correlation_idx ON @extschema@.event (correlation_id) WHERE correlation_id IS NOT NULL;

CREATE FUNCTION @extschema@._event_immutable()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@
AS $$
BEGIN
	IF pg_catalog.current_setting('odoo_sync.purging', true) = 'on' AND TG_OP = 'DELETE' THEN
		RETURN OLD;
	END IF;
	RAISE EXCEPTION 'odoo_sync.event is immutable'
		USING ERRCODE = 'object_not_in_prerequisite_state',
			  DETAIL = pg_catalog.format('%s of event rows is not allowed.', TG_OP),
			  HINT = 'Events are never changed; use odoo_sync.redeliver() or odoo_sync.replay() to send one again, and odoo_sync.purge_events() for retention.';
END
$$;
COMMENT ON FUNCTION @extschema@._event_immutable() IS 'Private: refuses UPDATE and DELETE on the event log.';

CREATE TRIGGER event_immutable
	BEFORE UPDATE OR DELETE ON @extschema@.event
	FOR EACH ROW EXECUTE FUNCTION @extschema@._event_immutable();
CREATE TRIGGER event_no_truncate
	BEFORE TRUNCATE ON @extschema@.event
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._event_immutable();

GRANT SELECT ON @extschema@.event TO odoo_sync_reader;

-- Wake a worker of this database when the current transaction commits.
CREATE FUNCTION @extschema@._wake_at_commit(kind text)
RETURNS void
LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'odoo_sync_wake_at_commit_sql';
COMMENT ON FUNCTION @extschema@._wake_at_commit(text) IS
	'Private: wakes this database''s capture, deliver or apply worker at commit.';
REVOKE ALL ON FUNCTION @extschema@._wake_at_commit(text) FROM PUBLIC;
