/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  What every per-database worker does first and last.
 *
 * A worker is started by the launcher with its database's OID as argument.
 * odoo_sync_worker_attach() sets up signals, connects, checks that the
 * extension exists in that database, and publishes the worker's PID and
 * latch in the database's shared-memory slot so that commits can wake it.
 * When the extension is absent it marks the slot so and the caller exits
 * quietly: the launcher will not start that database's workers again until
 * CREATE EXTENSION wakes it or odoo_sync.launcher_recheck passes.
 *
 * A capture worker also drops, when it starts, the replication origins our
 * workers created for databases that no longer exist (DROP DATABASE leaves
 * them behind: origins are cluster-wide).  Each holds one of
 * max_replication_slots replication state slots, so after a few dropped
 * databases the next capture worker to start would find none free.  The
 * launcher cannot do it: it has no database, and pg_replication_origin is
 * not a catalog it can open without one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/origin.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "executor/spi.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "odoo_sync.h"

static OdooSyncWorkerKind my_kind;

static void
worker_detach(int code, Datum arg)
{
	OdooSyncDbSlot *slot;

	SpinLockAcquire(&OdooSyncShmem->mutex);
	slot = odoo_sync_find_slot(MyDatabaseId, false);
	if (slot != NULL && slot->pid[my_kind] == MyProcPid)
	{
		slot->pid[my_kind] = 0;
		slot->latch[my_kind] = NULL;
	}
	SpinLockRelease(&OdooSyncShmem->mutex);
}

/*
 * odoo_sync_extension_present
 *		True when the extension exists in the current database; it is then
 *		share-locked until the transaction ends.
 *
 * Must be called inside a transaction, before any of the extension's tables
 * is touched.  DROP EXTENSION locks the extension first, then its objects
 * one by one: a worker's transaction that held one of its tables and waited
 * for another that DROP EXTENSION already held made a deadlock, which the
 * detector could resolve by aborting DROP EXTENSION (the isolation tests'
 * teardown, with the capture worker).  With the extension locked first, the
 * transaction runs before the drop, or waits for it and finds it gone.
 */
bool
odoo_sync_extension_present(void)
{
	Oid			extoid = get_extension_oid(ODOO_SYNC_EXTNAME, true);

	if (!OidIsValid(extoid))
		return false;
	/* accepts invalidations: the lookup below sees a drop that committed */
	LockDatabaseObject(ExtensionRelationId, extoid, 0, AccessShareLock);
	return OidIsValid(get_extension_oid(ODOO_SYNC_EXTNAME, true));
}

/*
 * The database oid in one of our origin names ("<prefix>_<digits>"), or
 * InvalidOid when the name is not one of ours.
 */
static Oid
origin_database(const char *name)
{
	static const char *const prefixes[] = {
		ODOO_SYNC_CAPTURE_ORIGIN_PREFIX "_", ODOO_SYNC_APPLY_ORIGIN_PREFIX "_"
	};

	for (size_t i = 0; i < lengthof(prefixes); i++)
	{
		size_t		len = strlen(prefixes[i]);
		const char *digits = name + len;
		char	   *end;
		unsigned long oid;

		if (strncmp(name, prefixes[i], len) != 0 || *digits < '0' || *digits > '9')
			continue;
		errno = 0;
		oid = strtoul(digits, &end, 10);
		if (errno == 0 && *end == '\0' && oid > 0 && oid <= PG_UINT32_MAX)
			return (Oid) oid;
	}
	return InvalidOid;
}

/*
 * odoo_sync_drop_orphan_origins
 *		Drops our replication origins whose database no longer exists.
 *
 * Runs its own transaction; must be called outside one.  Returns how many
 * were dropped.
 */
int
odoo_sync_drop_orphan_origins(void)
{
	List	   *orphans = NIL;
	ListCell   *lc;
	int			n = 0;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT roname FROM pg_catalog.pg_replication_origin", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_replication_origin");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		Oid			dboid;

		if (name == NULL)
			continue;
		dboid = origin_database(name);
		if (OidIsValid(dboid) &&
			!SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(dboid)))
		{
			MemoryContext old = MemoryContextSwitchTo(CurTransactionContext);

			orphans = lappend(orphans, pstrdup(name));
			MemoryContextSwitchTo(old);
		}
	}
	SPI_finish();
	foreach(lc, orphans)
	{
		/* missing_ok: another capture worker may be doing the same */
		replorigin_drop_by_name((char *) lfirst(lc), true, false);
		ereport(LOG,
				(errmsg("odoo_sync dropped replication origin \"%s\" of a dropped database",
						(char *) lfirst(lc))));
		n++;
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
	return n;
}

/*
 * odoo_sync_worker_attach
 *		Prologue of every per-database worker.
 *
 * Returns false when the extension is not installed in the database (the
 * caller then exits with proc_exit(0)).  On true, the worker is connected,
 * outside any transaction, and registered in shared memory.
 */
bool
odoo_sync_worker_attach(OdooSyncWorkerKind kind, Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);
	bool		present;
	OdooSyncDbSlot *slot;
	char		appname[NAMEDATALEN];

	my_kind = kind;
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);

	snprintf(appname, sizeof(appname), "odoo_sync %s",
			 odoo_sync_worker_kind_names[kind]);
	pgstat_report_appname(appname);

	/*
	 * Workers run many short, cheap statements whose estimated costs can
	 * still pass jit_above_cost (queue tables that were empty when last
	 * analyzed, generated rule functions): compiling them costs far more
	 * than running them (measured: 170 ms per capture batch).  No JIT and
	 * no parallel query in our workers.
	 */
	SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("max_parallel_workers_per_gather", "0", PGC_SUSET, PGC_S_OVERRIDE);

	StartTransactionCommand();
	present = odoo_sync_extension_present();
	CommitTransactionCommand();

	SpinLockAcquire(&OdooSyncShmem->mutex);
	slot = odoo_sync_find_slot(dboid, true);
	if (slot != NULL)
	{
		if (!present)
		{
			slot->ext_absent = true;
			slot->ext_present = false;
			slot->checked_at = GetCurrentTimestamp();
		}
		else
		{
			slot->ext_absent = false;
			slot->ext_present = true;
			slot->pid[kind] = MyProcPid;
			slot->latch[kind] = MyLatch;
		}
	}
	SpinLockRelease(&OdooSyncShmem->mutex);

	if (present)
	{
		before_shmem_exit(worker_detach, 0);
		if (kind == OSW_CAPTURE)
			(void) odoo_sync_drop_orphan_origins();
	}
	return present;
}

/*
 * odoo_sync_worker_detach
 *		Marks the database as without the extension (DROP EXTENSION seen by
 *		a worker), so that the launcher does not restart its workers.
 */
void
odoo_sync_worker_detach(void)
{
	OdooSyncDbSlot *slot;

	SpinLockAcquire(&OdooSyncShmem->mutex);
	slot = odoo_sync_find_slot(MyDatabaseId, false);
	if (slot != NULL)
	{
		slot->ext_absent = true;
		slot->ext_present = false;
		slot->checked_at = GetCurrentTimestamp();
	}
	SpinLockRelease(&OdooSyncShmem->mutex);
}
