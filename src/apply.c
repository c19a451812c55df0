/*-------------------------------------------------------------------------
 *
 * apply.c
 *	  The apply worker: applies accepted inbound events, exactly once.
 *
 * One apply worker per database (started by the launcher).  Each turn it
 * claims a batch of accepted events from odoo_sync.inbound_queue (the events
 * not applied yet) and applies them in one short transaction:
 *
 *	- a batch (odoo_sync.apply_fast_batch_size, 512) is chosen by shipment:
 *	  the pickings of the oldest accepted events, then all their accepted
 *	  events in (event_time, id) order, so a shipment's pending events are
 *	  applied in their own time order even when they arrived out of order.
 *	  The claim reads the queue's two indexes directly (no plan that
 *	  statistics of an empty queue could spoil);
 *	- fast path: when every event of the batch has a built-in handler, the
 *	  whole batch runs in one subtransaction through
 *	  odoo_sync._apply_batch(ids): the events set applied first (a HOT
 *	  update returning them), milestones through the state machine
 *	  (_milestone_step) on the shipment rows in memory, the other built-in
 *	  handlers as they are, shipment rows and history written once per
 *	  batch, the queue rows deleted, billing rules once per picking on its
 *	  final state;
 *	- per-event path: when the batch has a custom handler, or anything of
 *	  the fast path failed (then nothing of it is left), at most
 *	  odoo_sync.apply_batch_size (64: one subtransaction per event, and 64 is
 *	  what PGPROC caches before snapshots of every session overflow to
 *	  pg_subtrans) events of the batch are applied, each in its own
 *	  subtransaction through odoo_sync._apply_event(id), which calls the
 *	  type's handler procedure, writes the shipment history and sets the
 *	  event to applied; after the last event of a picking in the batch, its
 *	  billing rules are evaluated once, on the final state (in a
 *	  subtransaction of their own).  An error rolls back that event only and
 *	  sets it to dead with its SQLSTATE and message; other events (and
 *	  shipments) go on.  A serialization failure or deadlock leaves the event
 *	  accepted for the next batch (up to 5 attempts);
 *	- the state change to applied commits with the handler's effects, so a
 *	  crash at any point either applied the whole batch or nothing of it:
 *	  nothing is lost and nothing is applied twice.  There is only one apply
 *	  worker per database, so no claim lock or lease is needed.
 *
 * Every transaction of this worker carries the replication origin
 * "odoo_sync_apply_<database oid>", so logical decoding (and the capture
 * worker with skip-origins=odoo_sync_apply*) knows its writes to Odoo's
 * tables are echoes of inbound events, not new business changes.
 *
 * Waking Odoo's cron runner: when a batch queued ERP actions, the batch also
 * inserts an ir_cron_trigger row for the addon's job (odoo_sync._cron_trigger)
 * and, after commit, this worker starts a short-lived dynamic background
 * worker (odoo_sync_cron_notify_main) that connects to database "postgres",
 * runs NOTIFY cron_trigger, '<this database>' and commits.  Odoo's cron
 * threads LISTEN in database postgres, not in the Odoo database, and NOTIFY
 * is delivered only to listeners of the sender's database; a background
 * worker reaches that database from inside the server with no connection
 * string, password or pg_hba entry (which libpq would need).  At most one
 * such worker is in flight; a request arriving meanwhile is remembered and
 * served when it exits.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/origin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "odoo_sync.h"
#include "inbound.h"

int			odoo_sync_apply_batch_size = 64;
static int	apply_fast_batch_size = 512;
int			odoo_sync_apply_naptime = 10000;

static SPIPlanPtr plan_apply = NULL;
static SPIPlanPtr plan_batch = NULL;
static SPIPlanPtr plan_dead = NULL;
static SPIPlanPtr plan_cron = NULL;
static SPIPlanPtr plan_bill = NULL;

static BackgroundWorkerHandle *notify_handle = NULL;
static bool notify_pending = false;
static bool origin_ready = false;

static void setup_origin(void);

/*
 * odoo_sync_apply_define_gucs
 *		The apply worker's settings (called from odoo_sync_inbound_init).
 */
void
odoo_sync_apply_define_gucs(void)
{
	DefineCustomIntVariable("odoo_sync.apply_batch_size",
							"Most inbound events the apply worker applies in "
							"one transaction.",
							"Each event is a subtransaction; up to 64 of them "
							"fit in PostgreSQL's per-backend subtransaction "
							"cache, beyond that every other session's "
							"snapshots become slower.",
							&odoo_sync_apply_batch_size,
							64, 1, 100000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("odoo_sync.apply_fast_batch_size",
							"Most inbound events the apply worker claims for one "
							"transaction of the batch fast path.",
							"A batch of events with built-in handlers is applied "
							"at once in one subtransaction; when it needs the "
							"per-event path, only odoo_sync.apply_batch_size "
							"events of it are applied in that transaction.",
							&apply_fast_batch_size,
							512, 1, 100000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("odoo_sync.apply_naptime",
							"Longest time the apply worker sleeps when idle.",
							"Ingest wakes it at commit; this is a safety net.",
							&odoo_sync_apply_naptime,
							10000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
}

/*
 * Prepares and keeps (for the life of the worker) an SPI plan.
 */
static SPIPlanPtr
prepare(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

/*
 * The worker's statements, prepared in its first transaction.
 */
static void
prepare_plans(void)
{
	Oid			int8[1] = {INT8OID};
	Oid			int8arr[1] = {INT8ARRAYOID};
	Oid			dead[4] = {INT8OID, TEXTOID, TEXTOID, TEXTOID};
	Oid			bill[2] = {INT4OID, INT8OID};

	if (plan_apply != NULL)
		return;
	plan_apply = prepare("SELECT " ODOO_SYNC_SCHEMA "._apply_event($1)", 1, int8);
	plan_batch = prepare("SELECT " ODOO_SYNC_SCHEMA "._apply_batch($1)", 1, int8arr);
	/* a dead event stays in the queue, marked dead (odoo_sync.inbound_dead) */
	plan_dead = prepare(
						"WITH f AS (UPDATE " ODOO_SYNC_SCHEMA ".inbound SET "
						" attempts = attempts + 1, "
						" state = CASE WHEN $2 IN ('40001', '40P01') AND attempts < 4 "
						"   THEN 'accepted' ELSE 'dead' END, "
						" error_sqlstate = $2, error_message = $3, error_detail = $4, "
						" dead_at = CASE WHEN $2 IN ('40001', '40P01') AND attempts < 4 "
						"   THEN NULL ELSE pg_catalog.clock_timestamp() END "
						"WHERE id = $1 RETURNING id, state) "
						"UPDATE " ODOO_SYNC_SCHEMA ".inbound_queue q SET dead = true "
						"FROM f WHERE q.id = f.id AND f.state = 'dead'",
						4, dead);
	plan_cron = prepare("SELECT " ODOO_SYNC_SCHEMA "._cron_trigger()", 0, NULL);
	plan_bill = prepare("SELECT " ODOO_SYNC_SCHEMA "._evaluate_billing($1, $2, "
						"(SELECT correlation_id FROM " ODOO_SYNC_SCHEMA ".shipment "
						"WHERE picking_id = $1))", 2, bill);
}

/*
 * Runs plan with arg in a subtransaction.  On success returns true and the
 * first column of the first row (int4 or bool) in *result; on error returns
 * false with a copy of the error (allocated in the caller's context).
 * Must be called inside a transaction with SPI connected.
 */
static bool
run_in_subxact(SPIPlanPtr plan, Datum *args, int32 *result, ErrorData **error)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool ok = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		bool		isnull;
		int			ret = SPI_execute_plan(plan, args, NULL, false, 1);

		if (ret != SPI_OK_SELECT)
			elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(ret));
		*result = 0;
		if (SPI_processed == 1)
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				*result = SPI_gettypeid(SPI_tuptable->tupdesc, 1) == BOOLOID ?
					(int32) DatumGetBool(d) : DatumGetInt32(d);
		}
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		*error = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/*
 * Records a failed event as dead (or as retryable) with its error.
 */
static void
record_failure(int64 id, ErrorData *e)
{
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	int			ret;

	args[0] = Int64GetDatum(id);
	args[1] = CStringGetTextDatum(unpack_sql_state(e->sqlerrcode));
	args[2] = CStringGetTextDatum(e->message ? e->message : "unknown error");
	if (e->detail)
		args[3] = CStringGetTextDatum(e->detail);
	else
		nulls[3] = 'n';
	ret = SPI_execute_plan(plan_dead, args, nulls, false, 0);
	if (ret != SPI_OK_UPDATE)
		elog(ERROR, "could not record inbound event failure: %s",
			 SPI_result_code_string(ret));
	ereport(LOG,
			(errmsg("odoo_sync apply: inbound event %lld failed: %s",
					(long long) id, e->message ? e->message : "unknown error")));
}

/*
 * Compares two int32 (qsort).
 */
static int
cmp_int32(const void *a, const void *b)
{
	int32		x = *(const int32 *) a;
	int32		y = *(const int32 *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * Opens an index of the extension's schema by name.
 */
static Relation
open_index(Oid nsp, const char *name)
{
	Oid			relid = get_relname_relid(name, nsp);

	if (!OidIsValid(relid))
		elog(ERROR, "index " ODOO_SYNC_SCHEMA ".%s does not exist", name);
	return index_open(relid, AccessShareLock);
}

/*
 * Whether a queue tuple is an accepted event (not a dead one); its picking
 * in *picking.
 */
static bool
pending_tuple(HeapTuple tup, TupleDesc desc, AttrNumber att_dead,
			  AttrNumber att_picking, int32 *picking)
{
	bool		isnull;
	Datum		d = heap_getattr(tup, att_dead, desc, &isnull);

	if (isnull || DatumGetBool(d))
		return false;
	*picking = DatumGetInt32(heap_getattr(tup, att_picking, desc, &isnull));
	return !isnull;
}

/*
 * Claims up to limit accepted events: the pickings of the oldest accepted
 * events (by id), then, picking by picking in ascending order, each one's
 * accepted events in (event_time, id) order.  Fills ids and picks, returns
 * the count.
 *
 * It reads odoo_sync.inbound_queue (the events not applied yet) through its
 * two indexes directly instead of through the planner: the statistics of a
 * queue are often those of an (almost) empty table, and a plan made with
 * them scans every pending event per picking (measured: a quarter of a
 * second per claim).  Dead events stay in the queue, marked; they are
 * skipped.  Needs an active snapshot.
 */
static int
claim(int limit, int64 *ids, int32 *picks)
{
	Oid			nsp = get_namespace_oid(ODOO_SYNC_SCHEMA, false);
	Oid			relid = get_relname_relid("inbound_queue", nsp);
	Relation	rel;
	Relation	idx;
	TupleDesc	desc;
	AttrNumber	att_id,
				att_dead,
				att_picking;
	SysScanDesc scan;
	HeapTuple	tup;
	int32	   *pickings = palloc(sizeof(int32) * limit);
	int			np = 0;
	int			n = 0;

	if (!OidIsValid(relid))
		elog(ERROR, "table " ODOO_SYNC_SCHEMA ".inbound_queue does not exist");
	rel = table_open(relid, AccessShareLock);
	desc = RelationGetDescr(rel);
	att_id = get_attnum(relid, "id");
	att_dead = get_attnum(relid, "dead");
	att_picking = get_attnum(relid, "picking_id");
	if (att_id == InvalidAttrNumber || att_dead == InvalidAttrNumber ||
		att_picking == InvalidAttrNumber)
		elog(ERROR, "table " ODOO_SYNC_SCHEMA ".inbound_queue lacks a column the apply worker needs");

	/* the pickings of the oldest accepted events: inbound_queue_pkey (id) */
	idx = open_index(nsp, "inbound_queue_pkey");
	scan = systable_beginscan_ordered(rel, idx, GetActiveSnapshot(), 0, NULL);
	while (np < limit &&
		   (tup = systable_getnext_ordered(scan, ForwardScanDirection)) != NULL)
	{
		int32		picking;

		if (pending_tuple(tup, desc, att_dead, att_picking, &picking))
			pickings[np++] = picking;
	}
	systable_endscan_ordered(scan);
	index_close(idx, AccessShareLock);
	if (np == 0)
	{
		table_close(rel, AccessShareLock);
		return 0;
	}
	qsort(pickings, np, sizeof(int32), cmp_int32);

	/* their accepted events: inbound_queue_picking_idx (picking_id, event_time, id) */
	idx = open_index(nsp, "inbound_queue_picking_idx");
	for (int i = 0; i < np && n < limit; i++)
	{
		ScanKeyData key;

		if (i > 0 && pickings[i] == pickings[i - 1])
			continue;
		ScanKeyInit(&key, att_picking, BTEqualStrategyNumber, F_INT4EQ,
					Int32GetDatum(pickings[i]));
		scan = systable_beginscan_ordered(rel, idx, GetActiveSnapshot(), 1, &key);
		while (n < limit &&
			   (tup = systable_getnext_ordered(scan, ForwardScanDirection)) != NULL)
		{
			int32		picking;
			bool		isnull;

			if (!pending_tuple(tup, desc, att_dead, att_picking, &picking) ||
				picking != pickings[i])
				continue;
			ids[n] = DatumGetInt64(heap_getattr(tup, att_id, desc, &isnull));
			picks[n] = picking;
			n++;
		}
		systable_endscan_ordered(scan);
	}
	index_close(idx, AccessShareLock);
	table_close(rel, AccessShareLock);
	pfree(pickings);
	return n;
}

/*
 * The fast path: the whole claimed batch through odoo_sync._apply_batch() in
 * one subtransaction (built-in handlers only; milestones are applied in
 * memory, history and state changes are written per batch, billing rules
 * evaluated per picking).  Returns false when the batch must go the
 * per-event way instead: it has an event with a custom handler, or
 * something in it failed (then nothing of it is left, and the per-event path
 * isolates the failing event, which goes dead with its reason while the
 * others are applied once).
 */
static bool
apply_batch_at_once(int64 *ids, int n, int *queued)
{
	Datum	   *elems = palloc(sizeof(Datum) * n);
	Datum		arg;
	int32		result = 0;
	ErrorData  *e = NULL;
	int			nestlevel;
	bool		ok;

	for (int i = 0; i < n; i++)
		elems[i] = Int64GetDatum(ids[i]);
	arg = PointerGetDatum(construct_array(elems, n, INT8OID, sizeof(int64),
										  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	/*
	 * Index scans, as for the claim: the batch's statements look events up
	 * by id in a table whose statistics may be those of an empty queue.  The
	 * worker runs without JIT, so the inflated cost where no index exists
	 * costs nothing more.
	 */
	nestlevel = NewGUCNestLevel();
	(void) set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_bitmapscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	ok = run_in_subxact(plan_batch, &arg, &result, &e);
	AtEOXact_GUC(true, nestlevel);
	if (!ok)
	{
		ereport(LOG,
				(errmsg("odoo_sync apply: batch of %d inbound events failed as a whole, applying them one by one: %s",
						n, e->message ? e->message : "unknown error")));
		FreeErrorData(e);
		return false;
	}
	if (result < 0)
		return false;			/* a custom handler: per event */
	*queued += result;
	return true;
}

/*
 * Applies one batch in one transaction.  Returns the number of events
 * claimed, or -1 when the batch must be run again at once; *present is false
 * when the extension is gone, *wake_cron true when Odoo's cron runner should
 * be notified after commit.
 */
static int
apply_batch(bool *present, bool *wake_cron)
{
	int			n = 0;
	int			queued = 0;
	int64	   *ids;
	int32	   *picks;
	int64		last_applied = 0;
	int			n_fast = 0;
	int			limit;

	*wake_cron = false;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	*present = odoo_sync_extension_present();
	if (!*present)
	{
		CommitTransactionCommand();
		return 0;
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "odoo_sync apply: claiming inbound events");
	prepare_plans();

	limit = Max(odoo_sync_apply_batch_size, apply_fast_batch_size);
	ids = palloc(sizeof(int64) * limit);
	picks = palloc(sizeof(int32) * limit);
	n = claim(limit, ids, picks);

	/*
	 * The replication origin is set up before the first write, in a
	 * transaction of its own (a database that never receives inbound events
	 * gets none); the caller runs the batch again at once.
	 */
	if (n > 0 && !origin_ready)
	{
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		setup_origin();
		return -1;
	}

	if (n > 0)
	{
		pgstat_report_activity(STATE_RUNNING, "odoo_sync apply: applying inbound events");
		if (apply_batch_at_once(ids, n, &queued))
			n_fast = n;
		else if (n > odoo_sync_apply_batch_size)
		{
			/*
			 * One subtransaction per event from here: no more than
			 * apply_batch_size of them (the rest stay accepted for the next
			 * turn, in the same order).
			 */
			n = odoo_sync_apply_batch_size;
		}
	}
	for (int i = n_fast; i < n; i++)
	{
		ErrorData  *e = NULL;
		int32		nq = 0;
		Datum		idarg = Int64GetDatum(ids[i]);

		CHECK_FOR_INTERRUPTS();
		if (run_in_subxact(plan_apply, &idarg, &nq, &e))
		{
			queued += nq;
			last_applied = ids[i];
		}
		else
		{
			record_failure(ids[i], e);
			FreeErrorData(e);
		}

		/*
		 * After the last event of a picking in this batch (the claim groups
		 * them), evaluate its billing rules once, on its final state.  A rule
		 * error is logged and does not touch the applied events.
		 */
		if (last_applied != 0 && (i == n - 1 || picks[i + 1] != picks[i]))
		{
			Datum		bargs[2];

			bargs[0] = Int32GetDatum(picks[i]);
			bargs[1] = Int64GetDatum(last_applied);
			e = NULL;
			if (run_in_subxact(plan_bill, bargs, &nq, &e))
				queued += nq;
			else
			{
				ereport(WARNING,
						(errmsg("odoo_sync apply: billing rules failed for picking %d: %s",
								picks[i], e->message),
						 errdetail("They are evaluated again after the next event of that picking.")));
				FreeErrorData(e);
			}
			last_applied = 0;
		}
	}

	if (queued > 0)
	{
		ErrorData  *e = NULL;
		int32		found = 0;

		if (run_in_subxact(plan_cron, NULL, &found, &e))
			*wake_cron = found != 0;
		else
		{
			ereport(WARNING,
					(errmsg("odoo_sync apply: could not add Odoo's cron trigger: %s",
							e->message),
					 errdetail("The ERP actions wait for the cron job's next regular run.")));
			FreeErrorData(e);
		}
	}

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	return n;
}

/*
 * Starts the NOTIFY worker if a notification is due and none is in flight.
 */
static void
maybe_notify_cron(void)
{
	BackgroundWorker worker;
	pid_t		pid;
	char	   *dbname;

	if (!notify_pending)
		return;
	if (notify_handle != NULL &&
		GetBackgroundWorkerPid(notify_handle, &pid) != BGWH_STOPPED)
		return;					/* in flight: try again when it exits */
	if (notify_handle != NULL)
	{
		pfree(notify_handle);
		notify_handle = NULL;
	}

	StartTransactionCommand();
	dbname = get_database_name(MyDatabaseId);
	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, ODOO_SYNC_LIBNAME);
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "odoo_sync_cron_notify_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "odoo_sync cron notify for database %u",
			 MyDatabaseId);
	snprintf(worker.bgw_type, BGW_MAXLEN, "odoo_sync cron notify");
	strlcpy(worker.bgw_extra, dbname ? dbname : "", BGW_EXTRALEN);
	worker.bgw_notify_pid = MyProcPid;
	CommitTransactionCommand();

	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
		bool		ok = RegisterDynamicBackgroundWorker(&worker, &notify_handle);

		MemoryContextSwitchTo(old);
		if (!ok)
		{
			notify_handle = NULL;
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("odoo_sync apply could not start a worker to notify Odoo's cron runner"),
					 errdetail("The ERP actions wait for the cron job's next regular run."),
					 errhint("Raise max_worker_processes.")));
		}
	}
	notify_pending = false;
}

/*
 * Creates (if needed) and sets up this database's replication origin, after
 * dropping the origins of databases that no longer exist (origins are
 * cluster-wide and DROP DATABASE leaves them behind: worker.c).
 */
static void
setup_origin(void)
{
	char		name[NAMEDATALEN];
	RepOriginId origin;

	/* first free the state slots of dropped databases' origins, ours too */
	(void) odoo_sync_drop_orphan_origins();

	snprintf(name, sizeof(name), "%s_%u", ODOO_SYNC_APPLY_ORIGIN_PREFIX, MyDatabaseId);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	origin = replorigin_by_name(name, true);
	if (origin == InvalidRepOriginId)
		origin = replorigin_create(name);
	CommitTransactionCommand();
	replorigin_session_setup(origin);
	replorigin_session_origin = origin;
	origin_ready = true;
}

/*
 * Drops the replication origin when the extension is gone.
 */
static void
drop_origin(void)
{
	char		name[NAMEDATALEN];

	if (!origin_ready)
		return;
	snprintf(name, sizeof(name), "%s_%u", ODOO_SYNC_APPLY_ORIGIN_PREFIX, MyDatabaseId);
	replorigin_session_reset();
	replorigin_session_origin = InvalidRepOriginId;
	StartTransactionCommand();
	replorigin_drop_by_name(name, true, false);
	CommitTransactionCommand();
}

/*
 * odoo_sync_apply_main
 *		Entry point of the apply worker (started by the launcher).
 */
void
odoo_sync_apply_main(Datum main_arg)
{
	MemoryContext loop_cxt;

	if (!odoo_sync_worker_attach(OSW_APPLY, main_arg))
		proc_exit(0);

	/*
	 * Short statements only: JIT compilation would cost more than it saves,
	 * and a handler's query must never start parallel workers.
	 */
	SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("max_parallel_workers_per_gather", "0", PGC_SUSET, PGC_S_OVERRIDE);
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "odoo_sync apply loop",
									 ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		bool		present = true;
		bool		wake_cron = false;
		int			n;
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		old = MemoryContextSwitchTo(loop_cxt);
		do
		{
			n = apply_batch(&present, &wake_cron);
			if (wake_cron)
				notify_pending = true;
			CHECK_FOR_INTERRUPTS();
			/*
			 * Until a claim finds nothing: a batch smaller than the batch
			 * size does not mean the queue is empty (it is cut by picking).
			 */
		} while (present && n != 0);
		MemoryContextSwitchTo(old);
		MemoryContextReset(loop_cxt);

		if (!present)
		{
			drop_origin();
			odoo_sync_worker_detach();
			proc_exit(0);
		}
		maybe_notify_cron();

		pgstat_report_activity(STATE_IDLE, NULL);
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 notify_pending ? Min(100L, (long) odoo_sync_apply_naptime)
						 : (long) odoo_sync_apply_naptime,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * odoo_sync_cron_notify_main
 *		Short-lived worker: NOTIFY cron_trigger, '<dbname>' in database
 *		postgres, where Odoo's cron threads listen, then exit.
 */
void
odoo_sync_cron_notify_main(Datum main_arg)
{
	char		dbname[BGW_EXTRALEN];

	strlcpy(dbname, MyBgworkerEntry->bgw_extra, sizeof(dbname));
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection("postgres", NULL, 0);
	pgstat_report_appname("odoo_sync cron notify");

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	pgstat_report_activity(STATE_RUNNING, "NOTIFY cron_trigger");
	Async_Notify("cron_trigger", dbname);
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	proc_exit(0);
}
