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
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
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
 *		True when the extension exists in the current database.
 *
 * Must be called inside a transaction.
 */
bool
odoo_sync_extension_present(void)
{
	return OidIsValid(get_extension_oid(ODOO_SYNC_EXTNAME, true));
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
			slot->checked_at = GetCurrentTimestamp();
		}
		else
		{
			slot->ext_absent = false;
			slot->pid[kind] = MyProcPid;
			slot->latch[kind] = MyLatch;
		}
	}
	SpinLockRelease(&OdooSyncShmem->mutex);

	if (present)
		before_shmem_exit(worker_detach, 0);
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
		slot->checked_at = GetCurrentTimestamp();
	}
	SpinLockRelease(&OdooSyncShmem->mutex);
}
