/*-------------------------------------------------------------------------
 *
 * capture.c
 *	  The capture worker: decodes WAL in its own process and turns committed
 *	  changes into business events, exactly once.
 *
 * One capture worker runs per database that has the extension.  It owns a
 * logical replication slot "odoo_sync_capture_<dboid>" using the extension's
 * own output plugin (decode.c) and a replication origin of the same name
 * (slots and origins are cluster-wide, hence the database OID).
 *
 * Decoding happens in this process through the logical decoding API, not
 * through a walsender: the decoding context stays open across turns, our
 * prepare_write/write callbacks copy each JSON line the plugin writes into
 * a batch buffer, and records are fed with XLogReadRecord and
 * LogicalDecodingProcessRecord up to the flushed end of WAL (the model is
 * pg_logical_slot_get_changes_guts).  The decoder runs its callbacks in a
 * transaction of its own; the batch is processed afterwards, outside it.
 *
 * Exactly once: after one or more decoded transactions (a burst queued in
 * WAL is batched, up to odoo_sync.capture_batch_size transactions) the
 * worker starts its own transaction, runs the rule engine
 * (odoo_sync._capture_batch) which appends the events and updates the
 * shadow, sets replorigin_session_origin_lsn to the end LSN of the last
 * transaction of the batch, and commits: the events and the progress are
 * durable together.  Only then is the slot advanced
 * (LogicalConfirmReceivedLocation).  After a crash the slot may replay
 * transactions that were already captured; those that end at or before the
 * origin's progress are dropped from the batch before the engine sees them.
 *
 * The slot's confirmed position follows the event log, never delivery: a
 * dead endpoint cannot make WAL pile up.  When nothing is left to capture,
 * the slot is confirmed up to the end of what was read, so unrelated WAL is
 * released too.
 *
 * Rules change the plugin's options (tables and columns to decode): each
 * write transaction compares the rule version it sees with the one the
 * decoding context was built with; when they differ the batch is thrown
 * away (nothing was written) and decoding starts again from the slot with
 * the new options.
 *
 * Waking: any commit that wrote wakes this worker (odoo_sync.c); it then
 * reads the new WAL at once.  odoo_sync.capture_idle_timeout is only a
 * safety net (and the pace of the extension-presence check and of the
 * retention purge).  DROP EXTENSION: the worker drops its slot and origin
 * and exits, so no WAL is retained for a database that no longer captures.
 *
 * Errors: an error inside the worker ends it (the launcher starts it again
 * after odoo_sync.worker_restart_delay); nothing is lost since progress is
 * only recorded with the events.  A rule that fails at run time does not
 * raise here: the engine records it in odoo_sync.capture_error.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>
#include <sys/resource.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogreader.h"
#include "access/xlogutils.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/value.h"
#include "pgstat.h"
#include "portability/instr_time.h"
#include "postmaster/interrupt.h"
#include "replication/decode.h"
#include "replication/logical.h"
#include "replication/origin.h"
#include "replication/slot.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "odoo_sync.h"

/* GUCs */
static int	capture_idle_timeout = 10000;	/* ms */
static int	capture_batch_size = 1000;	/* transactions per write */
static int	event_retention = 7 * 24 * 3600;	/* s */
static int	purge_interval = 3600;	/* s, 0 = never */
static bool purging = false;

/* flush the batch when its text passes this size or row count */
#define CAPTURE_BATCH_BYTES		(16 * 1024 * 1024)
#define CAPTURE_BATCH_ROWS		20000

/* State of the worker (one per process) */
static char slot_name[NAMEDATALEN];
static RepOriginId origin_id = InvalidRepOriginId;
static XLogRecPtr origin_progress = InvalidXLogRecPtr;
static LogicalDecodingContext *decoding_ctx = NULL;
static int64 ctx_rules_version = -1;
static MemoryContext capture_context = NULL;

/* The batch of decoded transactions waiting to be written. */
static StringInfoData batch;
static int	batch_ntxn = 0;		/* complete transactions in batch */
static int	batch_rows = 0;		/* their rows */
static bool in_txn = false;		/* between a B and its C */
static int	txn_start = 0;		/* batch.len at the B of the current txn */
static int	txn_rows = 0;		/* rows of the current txn so far */
static int64 txn_rules_version = -1;	/* rule change seen in the txn */
static bool txn_has_rows = false;	/* an I, U or D line in the txn */
static XLogRecPtr batch_end_lsn = InvalidXLogRecPtr;
static char txn_commit_time[64];
static char batch_commit_time[64];
static bool need_restart = false;
static instr_time batch_decode_time;	/* spent decoding the batch */

/*
 * odoo_sync_capture_init
 *		Defines the capture settings (called by _PG_init).
 */
void
odoo_sync_capture_init(void)
{
	DefineCustomIntVariable("odoo_sync.capture_idle_timeout",
							"Longest sleep of the capture worker when no "
							"commit wakes it.",
							"Commits wake the worker at once; this is a "
							"safety net, and the pace of its housekeeping.",
							&capture_idle_timeout,
							10000, 10, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("odoo_sync.capture_batch_size",
							"Largest number of decoded transactions the "
							"capture worker writes in one transaction.",
							"A burst of small transactions queued in WAL is "
							"written in batches of this size.",
							&capture_batch_size,
							1000, 1, 100000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("odoo_sync.event_retention",
							"Age after which events are purged from the "
							"event log.",
							"Events that still have pending deliveries are "
							"kept whatever their age.",
							&event_retention,
							7 * 24 * 3600, 60, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("odoo_sync.purge_interval",
							"Time between two retention purges of the event "
							"log by the capture worker.",
							"0 disables the purge (run odoo_sync.purge_events() "
							"yourself).",
							&purge_interval,
							3600, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	/* read by the event log's immutability trigger (10_event.sql) */
	DefineCustomBoolVariable("odoo_sync.purging",
							 "Lets the retention purge delete events.",
							 "Set only by odoo_sync.purge_events(), for its "
							 "own transaction.",
							 &purging,
							 false,
							 PGC_SUSET, GUC_NOT_IN_SAMPLE,
							 NULL, NULL, NULL);
}

/* ---------------------------------------------------------------- callbacks */

/*
 * capture_prepare_write
 *		The plugin starts a line: empty the output buffer (ctx->out lives in
 *		the decoding context).
 */
static void
capture_prepare_write(LogicalDecodingContext *ctx, XLogRecPtr lsn,
					  TransactionId xid, bool last_write)
{
	resetStringInfo(ctx->out);
}

/* copies "commit-time" of a B line into dst (empty when absent) */
static void
extract_commit_time(const char *line, char *dst, size_t dstlen)
{
	const char *p = strstr(line, "\"commit-time\":\"");
	size_t		n = 0;

	dst[0] = '\0';
	if (p == NULL)
		return;
	p += strlen("\"commit-time\":\"");
	while (p[n] != '\0' && p[n] != '"' && n < dstlen - 1)
		n++;
	memcpy(dst, p, n);
	dst[n] = '\0';
}

/*
 * capture_write
 *		Appends one line of the output plugin to the batch.
 *
 * The batch is a JSON array of {"b": <begin line>, "r": [<row lines>]}.  At
 * the commit line (lsn is then the transaction's end LSN) a transaction
 * that was already captured before a crash is cut off again.
 */
static void
capture_write(LogicalDecodingContext *ctx, XLogRecPtr lsn,
			  TransactionId xid, bool last_write)
{
	const char *line = ctx->out->data;
	char		action = '?';
	MemoryContext old = MemoryContextSwitchTo(capture_context);

	if (strncmp(line, "{\"action\":\"", 11) == 0)
		action = line[11];

	switch (action)
	{
		case 'B':
			txn_start = batch.len;
			appendStringInfoString(&batch, batch_ntxn > 0 ? ",{\"b\":" : "{\"b\":");
			appendBinaryStringInfo(&batch, line, ctx->out->len);
			appendStringInfoString(&batch, ",\"r\":[");
			extract_commit_time(line, txn_commit_time, sizeof(txn_commit_time));
			txn_rows = 0;
			txn_rules_version = -1;
			txn_has_rows = false;
			in_txn = true;
			break;
		case 'C':
			if (!in_txn)
				break;
			in_txn = false;

			/*
			 * A rule change newer than our options: what commits after it
			 * must be decoded with the new ones.  Stop after this one.
			 */
			if (txn_rules_version > ctx_rules_version)
				need_restart = true;
			if (lsn <= origin_progress || !txn_has_rows)
			{
				/* captured before the last restart, or only messages */
				batch.len = txn_start;
				batch.data[batch.len] = '\0';
				break;
			}
			appendStringInfoString(&batch, "]}");
			batch_ntxn++;
			batch_rows += txn_rows;
			batch_end_lsn = lsn;
			strlcpy(batch_commit_time, txn_commit_time, sizeof(batch_commit_time));
			break;
		default:
			if (!in_txn)
				break;
			if (action == 'I' || action == 'U' || action == 'D')
				txn_has_rows = true;
			else if (action == 'M')
			{
				const char *p = strstr(line, "\"content\":\"rules_version:");

				if (p != NULL)
					txn_rules_version = strtoll(p + strlen("\"content\":\"rules_version:"),
												NULL, 10);
			}
			if (txn_rows++ > 0)
				appendStringInfoChar(&batch, ',');
			appendBinaryStringInfo(&batch, line, ctx->out->len);
			break;
	}
	MemoryContextSwitchTo(old);
}

/* ---------------------------------------------------------------- slot */

/*
 * capture_drop_and_exit
 *		The extension is gone: drop the slot (it would retain WAL forever)
 *		and the origin, mark the database so, and exit.  Outside any
 *		transaction on entry.
 */
static void
capture_drop_and_exit(void)
{
	char		name[NAMEDATALEN];

	strlcpy(name, slot_name, sizeof(name));
	ereport(LOG,
			(errmsg("odoo_sync capture: extension dropped, dropping slot \"%s\"",
					name)));
	if (decoding_ctx != NULL)
	{
		FreeDecodingContext(decoding_ctx);
		decoding_ctx = NULL;
	}
	if (MyReplicationSlot != NULL)
		ReplicationSlotRelease();
	if (SearchNamedReplicationSlot(name, true) != NULL)
		ReplicationSlotDrop(name, true);
	if (origin_id != InvalidRepOriginId)
	{
		replorigin_session_reset();
		replorigin_session_origin = InvalidRepOriginId;
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		replorigin_drop_by_name(name, true, false);
		CommitTransactionCommand();
	}
	odoo_sync_worker_detach();
	proc_exit(0);
}

/*
 * capture_setup_slot_and_origin
 *		Creates the slot on the first start in this database, and sets up
 *		the origin for this session when it exists (it is created by the
 *		first write, capture_ensure_origin).  Outside any transaction on
 *		entry and exit.
 */
static void
capture_setup_slot_and_origin(void)
{
	bool		created = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (!odoo_sync_extension_present())
	{
		CommitTransactionCommand();
		odoo_sync_worker_detach();
		proc_exit(0);
	}
	if (SearchNamedReplicationSlot(slot_name, true) == NULL)
	{
		LogicalDecodingContext *ctx;

		CheckLogicalDecodingRequirements();
		pgstat_report_activity(STATE_RUNNING, "creating replication slot");
		ReplicationSlotCreate(slot_name, true, RS_EPHEMERAL, false);
		ctx = CreateInitDecodingContext(ODOO_SYNC_LIBNAME, NIL, false,
										InvalidXLogRecPtr,
										XL_ROUTINE(.page_read = read_local_xlog_page,
												   .segment_open = wal_segment_open,
												   .segment_close = wal_segment_close),
										NULL, NULL, NULL);
		DecodingContextFindStartpoint(ctx);
		FreeDecodingContext(ctx);
		ReplicationSlotPersist();
		ReplicationSlotRelease();
		created = true;
		ereport(LOG,
				(errmsg("odoo_sync capture: created replication slot \"%s\"",
						slot_name)));
	}
	CommitTransactionCommand();

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	/* a new slot starts now: progress of an older one means nothing */
	if (created)
		replorigin_drop_by_name(slot_name, true, false);
	origin_id = replorigin_by_name(slot_name, true);
	CommitTransactionCommand();

	/* no origin yet: nothing was ever written, the first write creates it */
	origin_progress = InvalidXLogRecPtr;
	if (origin_id != InvalidRepOriginId)
	{
		replorigin_session_setup(origin_id);
		replorigin_session_origin = origin_id;
		origin_progress = replorigin_session_get_progress(false);
	}
}

/*
 * Creates the replication origin before the first write (a database whose
 * rules never match anything never gets one).
 */
static void
capture_ensure_origin(void)
{
	if (origin_id != InvalidRepOriginId)
		return;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	origin_id = replorigin_by_name(slot_name, true);
	if (origin_id == InvalidRepOriginId)
		origin_id = replorigin_create(slot_name);
	CommitTransactionCommand();
	replorigin_session_setup(origin_id);
	replorigin_session_origin = origin_id;
}

/* one output plugin option, as pg_logical_slot_get_changes builds them */
static DefElem *
option(const char *name, const char *value)
{
	return makeDefElem(pstrdup(name), (Node *) makeString(pstrdup(value)), -1);
}

/*
 * (Re)creates the decoding context with the options the current rules ask
 * for, and positions the reader at the slot's restart LSN.
 */
static void
capture_start_decoding(void)
{
	List	   *options = NIL;
	MemoryContext old;

	if (decoding_ctx != NULL)
	{
		FreeDecodingContext(decoding_ctx);
		decoding_ctx = NULL;
	}
	resetStringInfo(&batch);
	batch_ntxn = 0;
	INSTR_TIME_SET_ZERO(batch_decode_time);
	batch_rows = 0;
	in_txn = false;
	need_restart = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (!odoo_sync_extension_present())
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
		capture_drop_and_exit();
	}
	SPI_connect();
	if (SPI_execute("SELECT rules_version, add_tables, columns, skip_origins "
					"FROM odoo_sync._capture_options()", true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "odoo_sync capture: could not read the capture options");

	old = MemoryContextSwitchTo(capture_context);
	{
		TupleDesc	desc = SPI_tuptable->tupdesc;
		HeapTuple	tup = SPI_tuptable->vals[0];
		char	   *version = SPI_getvalue(tup, desc, 1);
		char	   *tables = SPI_getvalue(tup, desc, 2);
		char	   *columns = SPI_getvalue(tup, desc, 3);
		char	   *skip = SPI_getvalue(tup, desc, 4);

		ctx_rules_version = strtoll(version, NULL, 10);
		options = lappend(options, option("format-version", "1"));
		options = lappend(options, option("include-xids", "false"));
		/* no rule: decode as little as possible */
		options = lappend(options, option("add-tables",
										  tables ? tables : "odoo_sync_none.none"));
		if (columns)
			options = lappend(options, option("columns", columns));
		if (skip)
			options = lappend(options, option("skip-origins", skip));
	}
	MemoryContextSwitchTo(old);
	SPI_finish();
	PopActiveSnapshot();

	if (MyReplicationSlot == NULL)
		ReplicationSlotAcquire(slot_name, true);

	old = MemoryContextSwitchTo(capture_context);
	decoding_ctx = CreateDecodingContext(InvalidXLogRecPtr, options, false,
										 XL_ROUTINE(.page_read = read_local_xlog_page,
													.segment_open = wal_segment_open,
													.segment_close = wal_segment_close),
										 capture_prepare_write, capture_write,
										 NULL);
	MemoryContextSwitchTo(old);
	CommitTransactionCommand();

	if (XLogRecPtrIsInvalid(MyReplicationSlot->data.restart_lsn))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("replication slot \"%s\" has no valid restart position",
						slot_name),
				 errhint("Drop the slot; the capture worker creates a new one "
						 "(then run odoo_sync.resync() for what was missed).")));
	XLogBeginRead(decoding_ctx->reader, MyReplicationSlot->data.restart_lsn);
}

/* ---------------------------------------------------------------- writing */

/*
 * capture_flush
 *		Writes the batched transactions: events, shadow and origin progress
 *		in one transaction, then advances the slot.
 *
 * When the rules changed since the decoding context was built, nothing is
 * written and need_restart is set.
 */
static void
capture_flush(void)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	bool		restart = false;
	XLogRecPtr	end_lsn = batch_end_lsn;
	instr_time	write_start;
	instr_time	write_time;
	struct rusage ru0,
				ru1;
	int64		nevents = 0;

	if (batch_ntxn == 0)
		return;

	INSTR_TIME_SET_CURRENT(write_start);
	getrusage(RUSAGE_SELF, &ru0);
	pgstat_report_activity(STATE_RUNNING, "writing events");
	capture_ensure_origin();
	appendStringInfoChar(&batch, ']');
	memmove(batch.data + 1, batch.data, batch.len + 1);
	batch.data[0] = '[';
	batch.len++;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (!odoo_sync_extension_present())
	{
		PopActiveSnapshot();
		AbortCurrentTransaction();
		capture_drop_and_exit();
	}
	SPI_connect();
	if (SPI_execute("SELECT rules_version FROM odoo_sync._capture_state",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "odoo_sync capture: could not read the rule version");
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 1, &isnull);

		restart = (isnull || DatumGetInt64(d) != ctx_rules_version);
	}
	if (!restart)
	{
		args[0] = CStringGetTextDatum(batch.data);
		if (SPI_execute_with_args("SELECT odoo_sync._capture_batch($1::jsonb)",
								  1, argtypes, args, NULL, false, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "odoo_sync capture: the rule engine failed");
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 1, &isnull);

			nevents = isnull ? 0 : DatumGetInt32(d);
		}
	}
	SPI_finish();
	PopActiveSnapshot();

	if (restart)
	{
		AbortCurrentTransaction();
		need_restart = true;
	}
	else
	{
		replorigin_session_origin_lsn = end_lsn;
		replorigin_session_origin_timestamp = GetCurrentTimestamp();
		if (batch_commit_time[0] != '\0')
			replorigin_session_origin_timestamp =
				DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
														CStringGetDatum(batch_commit_time),
														ObjectIdGetDatum(InvalidOid),
														Int32GetDatum(-1)));
		CommitTransactionCommand();
		replorigin_session_origin_lsn = InvalidXLogRecPtr;
		replorigin_session_origin_timestamp = 0;
		origin_progress = end_lsn;
		LogicalConfirmReceivedLocation(end_lsn);
		INSTR_TIME_SET_CURRENT(write_time);
		INSTR_TIME_SUBTRACT(write_time, write_start);
		getrusage(RUSAGE_SELF, &ru1);
		elog(DEBUG1, "odoo_sync capture: %d transactions, %d rows: decoded in %.3f ms, "
			 INT64_FORMAT " events written in %.3f ms (%.3f ms of CPU)",
			 batch_ntxn, batch_rows, INSTR_TIME_GET_MILLISEC(batch_decode_time),
			 nevents, INSTR_TIME_GET_MILLISEC(write_time),
			 ((ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) * 1000.0 +
			  (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1000.0 +
			  (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) * 1000.0 +
			  (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1000.0));
	}

	resetStringInfo(&batch);
	if (batch.maxlen > CAPTURE_BATCH_BYTES)
	{
		/* give back the memory of an unusually large batch */
		pfree(batch.data);
		initStringInfo(&batch);
	}
	batch_ntxn = 0;
	batch_rows = 0;
	INSTR_TIME_SET_ZERO(batch_decode_time);
}

/*
 * capture_purge
 *		Retention: odoo_sync.purge_events() with odoo_sync.event_retention,
 *		in a transaction of its own (no origin progress involved).
 */
static void
capture_purge(void)
{
	char		sql[128];

	pgstat_report_activity(STATE_RUNNING, "purging old events");
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	snprintf(sql, sizeof(sql),
			 "SELECT odoo_sync.purge_events(pg_catalog.make_interval(secs => %d))",
			 event_retention);
	SPI_execute(sql, false, 1);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/* ---------------------------------------------------------------- main */

/*
 * odoo_sync_capture_main
 *		Entry point of the capture worker of one database.
 */
void
odoo_sync_capture_main(Datum main_arg)
{
	TimestampTz last_purge = GetCurrentTimestamp();

	if (!odoo_sync_worker_attach(OSW_CAPTURE, main_arg))
		proc_exit(0);

	capture_context = AllocSetContextCreate(TopMemoryContext,
											"odoo_sync capture",
											ALLOCSET_DEFAULT_SIZES);
	{
		MemoryContext old = MemoryContextSwitchTo(capture_context);

		initStringInfo(&batch);
		MemoryContextSwitchTo(old);
	}
	snprintf(slot_name, sizeof(slot_name), "%s_%u",
			 ODOO_SYNC_CAPTURE_ORIGIN_PREFIX, MyDatabaseId);

	capture_setup_slot_and_origin();
	capture_start_decoding();

	for (;;)
	{
		XLogRecPtr	end_of_wal;
		long		timeout = capture_idle_timeout;
		int			rc;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (need_restart)
			capture_start_decoding();

		pgstat_report_activity(STATE_RUNNING, "decoding");
		end_of_wal = GetFlushRecPtr(NULL);
		while (decoding_ctx->reader->EndRecPtr < end_of_wal)
		{
			XLogRecord *record;
			char	   *errm = NULL;
			instr_time	t0,
						t1;

			INSTR_TIME_SET_CURRENT(t0);
			record = XLogReadRecord(decoding_ctx->reader, &errm);
			if (errm)
				elog(ERROR, "odoo_sync capture: could not read WAL: %s", errm);
			if (record != NULL)
				LogicalDecodingProcessRecord(decoding_ctx, decoding_ctx->reader);
			INSTR_TIME_SET_CURRENT(t1);
			INSTR_TIME_ACCUM_DIFF(batch_decode_time, t1, t0);
			if (need_restart)
				break;
			if (!in_txn &&
				(batch_ntxn >= capture_batch_size || batch_rows >= CAPTURE_BATCH_ROWS ||
				 batch.len >= CAPTURE_BATCH_BYTES))
			{
				capture_flush();
				if (need_restart)
					break;
			}
			CHECK_FOR_INTERRUPTS();
		}
		capture_flush();
		if (need_restart)
			continue;

		/* everything read is captured: let the slot release that WAL */
		if (decoding_ctx->reader->EndRecPtr != InvalidXLogRecPtr &&
			MyReplicationSlot->data.confirmed_flush < decoding_ctx->reader->EndRecPtr)
			LogicalConfirmReceivedLocation(decoding_ctx->reader->EndRecPtr);

		/* the extension may have been dropped (that commit woke us) */
		{
			bool		present;

			SetCurrentStatementStartTimestamp();
			StartTransactionCommand();
			present = odoo_sync_extension_present();
			CommitTransactionCommand();
			if (!present)
				capture_drop_and_exit();
		}

		/* retention purge at its own pace */
		if (purge_interval > 0 &&
			TimestampDifferenceExceeds(last_purge, GetCurrentTimestamp(),
									   purge_interval * 1000))
		{
			capture_purge();
			last_purge = GetCurrentTimestamp();
		}

		/* asynchronous commits are flushed by the WAL writer: look again soon */
		if (GetXLogInsertRecPtr() > GetFlushRecPtr(NULL))
			timeout = Min(timeout, 10);

		pgstat_report_activity(STATE_IDLE, "waiting for commits");
		rc = WaitLatch(MyLatch,
					   WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					   timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		(void) rc;
	}
}
