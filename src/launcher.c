/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher: starts the workers of every database with the extension.
 *
 * One static background worker per cluster.  It connects to no database
 * (shared catalogs only) and, every odoo_sync.launcher_naptime or when its
 * latch is set, reads pg_database.  For each database that accepts
 * connections it starts a capture worker, which doubles as the probe: the
 * worker connects, looks for the extension, and either attaches (and the
 * launcher then starts the other kinds) or marks the slot "absent" and exits.
 * Databases found without the extension are probed again after
 * odoo_sync.launcher_recheck, or at once when CREATE EXTENSION wakes the
 * launcher (odoo_sync._launcher_wake() in the install script).  DROP
 * EXTENSION needs nothing from here: the workers notice it and exit.
 *
 * Per-database workers are dynamic and never restarted by the postmaster;
 * the launcher restarts them after odoo_sync.worker_restart_delay when they
 * stop for any reason other than a missing extension.  Worker handles live in
 * this process's memory only.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "odoo_sync.h"

typedef struct LauncherDb
{
	Oid			dboid;
	BackgroundWorkerHandle *handle[OSW_NUM_KINDS];
	TimestampTz next_start[OSW_NUM_KINDS];
	bool		seen;			/* still in pg_database at the last scan */
} LauncherDb;

static LauncherDb *ldbs = NULL;
static int	nldbs = 0;

/*
 * odoo_sync_register_launcher
 *		Registers the static launcher worker (from _PG_init).
 */
void
odoo_sync_register_launcher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, ODOO_SYNC_LIBNAME);
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "odoo_sync_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "odoo_sync launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "odoo_sync launcher");
	RegisterBackgroundWorker(&worker);
}

static LauncherDb *
launcher_db(Oid dboid)
{
	for (int i = 0; i < nldbs; i++)
		if (ldbs[i].dboid == dboid)
			return &ldbs[i];
	for (int i = 0; i < nldbs; i++)
		if (ldbs[i].dboid == InvalidOid)
		{
			memset(&ldbs[i], 0, sizeof(LauncherDb));
			ldbs[i].dboid = dboid;
			return &ldbs[i];
		}
	return NULL;
}

static bool
worker_running(BackgroundWorkerHandle *handle)
{
	pid_t		pid;

	if (handle == NULL)
		return false;
	return GetBackgroundWorkerPid(handle, &pid) != BGWH_STOPPED;
}

static void
start_worker(LauncherDb *ldb, OdooSyncWorkerKind kind)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	MemoryContext old;
	bool		ok;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, ODOO_SYNC_LIBNAME);
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "odoo_sync_%s_main",
			 odoo_sync_worker_kind_functions[kind]);
	snprintf(worker.bgw_name, BGW_MAXLEN, "odoo_sync %s worker for database %u",
			 odoo_sync_worker_kind_names[kind], ldb->dboid);
	snprintf(worker.bgw_type, BGW_MAXLEN, "odoo_sync %s",
			 odoo_sync_worker_kind_names[kind]);
	worker.bgw_main_arg = ObjectIdGetDatum(ldb->dboid);
	worker.bgw_notify_pid = MyProcPid;

	ldb->next_start[kind] = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														odoo_sync_worker_restart_delay);
	if (ldb->handle[kind] != NULL)
	{
		pfree(ldb->handle[kind]);
		ldb->handle[kind] = NULL;
	}
	old = MemoryContextSwitchTo(TopMemoryContext);
	ok = RegisterDynamicBackgroundWorker(&worker, &handle);
	MemoryContextSwitchTo(old);
	if (!ok)
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("odoo_sync could not start its %s worker for database %u",
						odoo_sync_worker_kind_names[kind], ldb->dboid),
				 errhint("Raise max_worker_processes: each database with the "
						 "extension needs %d background workers.",
						 (int) OSW_NUM_KINDS)));
		return;
	}
	ldb->handle[kind] = handle;
}

static void
stop_workers(LauncherDb *ldb)
{
	for (int k = 0; k < OSW_NUM_KINDS; k++)
		if (ldb->handle[k] != NULL)
		{
			TerminateBackgroundWorker(ldb->handle[k]);
			pfree(ldb->handle[k]);
			ldb->handle[k] = NULL;
		}
}

/*
 * Reads the databases that accept connections; returns their count and
 * fills *oids (palloc'd in the caller's context).
 */
static int
list_databases(Oid **oids)
{
	MemoryContext caller = CurrentMemoryContext;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	int			n = 0,
				cap = 16;
	Oid		   *out = palloc(sizeof(Oid) * cap);

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (!db->datallowconn || db->datistemplate ||
			db->datconnlimit == DATCONNLIMIT_INVALID_DB)
			continue;
		if (n == cap)
		{
			MemoryContext old = MemoryContextSwitchTo(caller);

			cap *= 2;
			out = repalloc(out, sizeof(Oid) * cap);
			MemoryContextSwitchTo(old);
		}
		out[n++] = db->oid;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller);
	*oids = out;
	return n;
}

static void
launcher_scan(void)
{
	Oid		   *oids;
	int			n = list_databases(&oids);
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < nldbs; i++)
		ldbs[i].seen = false;

	for (int i = 0; i < n; i++)
	{
		LauncherDb *ldb = launcher_db(oids[i]);
		OdooSyncDbSlot *slot;
		bool		absent,
					recheck,
					dropping,
					present;
		TimestampTz checked_at;

		if (ldb == NULL)
			break;				/* more databases than odoo_sync.max_databases */
		ldb->seen = true;

		SpinLockAcquire(&OdooSyncShmem->mutex);
		slot = odoo_sync_find_slot(oids[i], true);
		if (slot == NULL)
		{
			SpinLockRelease(&OdooSyncShmem->mutex);
			break;
		}
		absent = slot->ext_absent;
		recheck = slot->recheck;
		dropping = slot->dropping;
		checked_at = slot->checked_at;
		present = slot->latch[OSW_CAPTURE] != NULL || slot->ext_present;
		slot->recheck = false;
		SpinLockRelease(&OdooSyncShmem->mutex);

		if (dropping)
			continue;

		if (!worker_running(ldb->handle[OSW_CAPTURE]))
		{
			bool		due = now >= ldb->next_start[OSW_CAPTURE];

			if (absent && !recheck &&
				!TimestampDifferenceExceeds(checked_at, now,
											odoo_sync_launcher_recheck))
				due = false;
			if (recheck)
				due = true;
			if (due)
				start_worker(ldb, OSW_CAPTURE);
		}

		/*
		 * Once a worker has found the extension, the other kinds follow,
		 * also while capture is failing and restarting (for example with
		 * wal_level below logical): inbound and delivery do not need
		 * decoding.
		 */
		if (!present || absent)
			continue;
		for (int k = OSW_CAPTURE + 1; k < OSW_NUM_KINDS; k++)
			if (!worker_running(ldb->handle[k]) && now >= ldb->next_start[k])
				start_worker(ldb, (OdooSyncWorkerKind) k);
	}

	/* forget databases that are gone */
	for (int i = 0; i < nldbs; i++)
	{
		if (ldbs[i].dboid == InvalidOid || ldbs[i].seen)
			continue;
		stop_workers(&ldbs[i]);
		SpinLockAcquire(&OdooSyncShmem->mutex);
		{
			OdooSyncDbSlot *slot = odoo_sync_find_slot(ldbs[i].dboid, false);

			if (slot != NULL && !slot->dropping)
				slot->dboid = InvalidOid;
		}
		SpinLockRelease(&OdooSyncShmem->mutex);
		ldbs[i].dboid = InvalidOid;
	}
	pfree(oids);
}

static void
launcher_detach(int code, Datum arg)
{
	SpinLockAcquire(&OdooSyncShmem->mutex);
	OdooSyncShmem->launcher_pid = 0;
	OdooSyncShmem->launcher_latch = NULL;
	SpinLockRelease(&OdooSyncShmem->mutex);
}

/*
 * odoo_sync_launcher_main
 *		Entry point of the launcher worker.
 */
void
odoo_sync_launcher_main(Datum main_arg)
{
	MemoryContext loop_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("odoo_sync launcher");

	nldbs = odoo_sync_max_databases;
	ldbs = MemoryContextAllocZero(TopMemoryContext, sizeof(LauncherDb) * nldbs);
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "odoo_sync launcher loop",
									 ALLOCSET_DEFAULT_SIZES);

	SpinLockAcquire(&OdooSyncShmem->mutex);
	OdooSyncShmem->launcher_pid = MyProcPid;
	OdooSyncShmem->launcher_latch = MyLatch;
	SpinLockRelease(&OdooSyncShmem->mutex);
	before_shmem_exit(launcher_detach, 0);

	ereport(LOG, (errmsg("odoo_sync launcher started")));

	for (;;)
	{
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		old = MemoryContextSwitchTo(loop_cxt);
		pgstat_report_activity(STATE_RUNNING, "scanning databases");
		if (odoo_sync_enabled)
			launcher_scan();
		else
			for (int i = 0; i < nldbs; i++)
				if (ldbs[i].dboid != InvalidOid)
					stop_workers(&ldbs[i]);
		pgstat_report_activity(STATE_IDLE, NULL);
		MemoryContextSwitchTo(old);
		MemoryContextReset(loop_cxt);

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 odoo_sync_launcher_naptime,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
