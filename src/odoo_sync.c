/*-------------------------------------------------------------------------
 *
 * odoo_sync.c
 *	  Library entry point: _PG_init, shared memory, commit-time wake-ups.
 *
 * The library must be in shared_preload_libraries: it registers the launcher
 * background worker and a small shared-memory table, and installs two hooks
 * in every backend:
 *
 *	- a transaction callback: a transaction that wrote anything wakes the
 *	  capture worker of its database at commit (SetLatch, no polling), and
 *	  code that queued work for another worker (odoo_sync_wake_at_commit)
 *	  wakes that worker at commit, never before the data is visible;
 *	- a ProcessUtility hook that stops a database's workers before
 *	  DROP DATABASE, so that our connections never block it.
 *
 * Shared memory holds one OdooSyncDbSlot per database that has (or may have)
 * the extension; odoo_sync.max_databases sizes it.  A spinlock protects it:
 * every access is a few loads and stores.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/utility.h"
#include "utils/guc.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include <signal.h>

#include "odoo_sync.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

OdooSyncShared *OdooSyncShmem = NULL;

const char *const odoo_sync_worker_kind_names[OSW_NUM_KINDS] = {
	"capture", "deliver", "apply", "deliver critical"
};
const char *const odoo_sync_worker_kind_functions[OSW_NUM_KINDS] = {
	"capture", "deliver", "apply", "deliver_critical"
};

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/* kinds to wake when the current transaction commits (bit per kind) */
static uint32 wake_at_commit_mask = 0;
static bool endpoints_changed = false;	/* bump endpoints_gen at commit */
static bool wake_launcher_at_commit = false;
static bool xact_wrote = false;

PG_FUNCTION_INFO_V1(odoo_sync_version);
PG_FUNCTION_INFO_V1(odoo_sync_launcher_wake);
PG_FUNCTION_INFO_V1(odoo_sync_wake_at_commit_sql);

static Size
odoo_sync_shmem_size(void)
{
	return add_size(offsetof(OdooSyncShared, slots),
					mul_size(sizeof(OdooSyncDbSlot), odoo_sync_max_databases));
}

static void
odoo_sync_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(odoo_sync_shmem_size());
}

static void
odoo_sync_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	OdooSyncShmem = ShmemInitStruct("odoo_sync", odoo_sync_shmem_size(), &found);
	if (!found)
	{
		memset(OdooSyncShmem, 0, odoo_sync_shmem_size());
		SpinLockInit(&OdooSyncShmem->mutex);
		OdooSyncShmem->nslots = odoo_sync_max_databases;
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * odoo_sync_find_slot
 *		Returns the slot of a database, or NULL.
 *
 * With create, a free slot is claimed for the database (NULL when all are
 * taken).  The caller must hold OdooSyncShmem->mutex.
 */
OdooSyncDbSlot *
odoo_sync_find_slot(Oid dboid, bool create)
{
	OdooSyncDbSlot *free_slot = NULL;

	for (int i = 0; i < OdooSyncShmem->nslots; i++)
	{
		OdooSyncDbSlot *slot = &OdooSyncShmem->slots[i];

		if (slot->dboid == dboid)
			return slot;
		if (slot->dboid == InvalidOid && free_slot == NULL)
			free_slot = slot;
	}
	if (create && free_slot != NULL)
	{
		memset(free_slot, 0, sizeof(*free_slot));
		free_slot->dboid = dboid;
		return free_slot;
	}
	return NULL;
}

/*
 * odoo_sync_wake
 *		Sets the latch of a database's worker of the given kind, if running.
 */
void
odoo_sync_wake(Oid dboid, OdooSyncWorkerKind kind)
{
	Latch	   *latch = NULL;
	OdooSyncDbSlot *slot;

	if (OdooSyncShmem == NULL)
		return;
	SpinLockAcquire(&OdooSyncShmem->mutex);
	slot = odoo_sync_find_slot(dboid, false);
	if (slot != NULL)
		latch = slot->latch[kind];
	SpinLockRelease(&OdooSyncShmem->mutex);

	/* a latch stays valid memory (PGPROC) even if its owner just exited */
	if (latch != NULL)
		SetLatch(latch);
}

/*
 * odoo_sync_wake_at_commit
 *		Wakes a worker of this database when the current transaction commits.
 *
 * Nothing happens if it aborts: the worker would find nothing new.
 */
void
odoo_sync_wake_at_commit(OdooSyncWorkerKind kind)
{
	wake_at_commit_mask |= (1U << kind);
}

/*
 * odoo_sync_endpoints_gen
 *		This database's endpoint generation: it changes when a transaction
 *		that changed endpoints or their secrets commits (the deliver workers
 *		reload their endpoints then, not at every wake-up).
 */
uint32
odoo_sync_endpoints_gen(void)
{
	OdooSyncDbSlot *slot;
	uint32		gen = 0;

	if (OdooSyncShmem == NULL)
		return 0;
	SpinLockAcquire(&OdooSyncShmem->mutex);
	slot = odoo_sync_find_slot(MyDatabaseId, false);
	if (slot != NULL)
		gen = slot->endpoints_gen;
	SpinLockRelease(&OdooSyncShmem->mutex);
	return gen;
}

/*
 * odoo_sync._endpoints_generation(): this database's endpoint generation
 * (tests and diagnosis: it moves once per committed change of endpoints or
 * secrets).
 */
PG_FUNCTION_INFO_V1(odoo_sync_endpoints_generation);
Datum
odoo_sync_endpoints_generation(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64((int64) odoo_sync_endpoints_gen());
}

/*
 * odoo_sync_wake_launcher
 *		Asks the launcher to look at this database again now (used by
 *		CREATE EXTENSION through odoo_sync._launcher_wake()).
 */
void
odoo_sync_wake_launcher(void)
{
	Latch	   *latch = NULL;
	OdooSyncDbSlot *slot;

	if (OdooSyncShmem == NULL)
		return;
	SpinLockAcquire(&OdooSyncShmem->mutex);
	slot = odoo_sync_find_slot(MyDatabaseId, true);
	if (slot != NULL)
	{
		slot->recheck = true;
		slot->ext_absent = false;
	}
	latch = OdooSyncShmem->launcher_latch;
	SpinLockRelease(&OdooSyncShmem->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/*
 * odoo_sync.version(): the version of the loaded library.
 */
Datum
odoo_sync_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(ODOO_SYNC_VERSION));
}

/*
 * odoo_sync._launcher_wake(): at commit, ask the launcher to probe this
 * database now (CREATE EXTENSION calls it; before commit the new workers
 * would not see the extension yet).
 */
Datum
odoo_sync_launcher_wake(PG_FUNCTION_ARGS)
{
	wake_launcher_at_commit = true;
	PG_RETURN_VOID();
}

/*
 * odoo_sync._wake_at_commit(kind text): wakes this database's worker of that
 * kind when the transaction commits: 'capture', 'apply', 'deliver critical'
 * (the critical lane's deliver worker), 'deliver bulk' (the bulk lane's),
 * 'deliver' (both), or 'deliver endpoints' (both, which reload their
 * endpoints: the triggers on odoo_sync.endpoint and _endpoint_secret).
 */
Datum
odoo_sync_wake_at_commit_sql(PG_FUNCTION_ARGS)
{
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (strcmp(kind, "deliver endpoints") == 0)
	{
		endpoints_changed = true;
		odoo_sync_wake_at_commit(OSW_DELIVER);
		odoo_sync_wake_at_commit(OSW_DELIVER_CRITICAL);
		PG_RETURN_VOID();
	}

	/* 'deliver': both deliver workers (work queued for both lanes) */
	if (strcmp(kind, "deliver") == 0)
	{
		odoo_sync_wake_at_commit(OSW_DELIVER);
		odoo_sync_wake_at_commit(OSW_DELIVER_CRITICAL);
		PG_RETURN_VOID();
	}
	if (strcmp(kind, "deliver bulk") == 0)
	{
		odoo_sync_wake_at_commit(OSW_DELIVER);
		PG_RETURN_VOID();
	}
	for (int k = 0; k < OSW_NUM_KINDS; k++)
		if (strcmp(kind, odoo_sync_worker_kind_names[k]) == 0)
		{
			odoo_sync_wake_at_commit((OdooSyncWorkerKind) k);
			PG_RETURN_VOID();
		}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown odoo_sync worker kind \"%s\"", kind),
			 errdetail("Known kinds are capture, deliver, deliver critical, deliver bulk, deliver endpoints and apply.")));
	PG_RETURN_VOID();
}

static void
odoo_sync_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			xact_wrote = TransactionIdIsValid(GetTopTransactionIdIfAny());
			break;
		case XACT_EVENT_COMMIT:
			{
				uint32		mask = wake_at_commit_mask;

				if (xact_wrote)
					mask |= (1U << OSW_CAPTURE);
				wake_at_commit_mask = 0;
				xact_wrote = false;
				if (endpoints_changed && MyDatabaseId != InvalidOid &&
					OdooSyncShmem != NULL)
				{
					OdooSyncDbSlot *slot;

					/*
					 * Before the wake-ups below, which look at it; the
					 * slot is made if the launcher has not yet (as
					 * odoo_sync_wake_launcher does), so no change is lost.
					 */
					SpinLockAcquire(&OdooSyncShmem->mutex);
					slot = odoo_sync_find_slot(MyDatabaseId, true);
					if (slot != NULL)
						slot->endpoints_gen++;
					SpinLockRelease(&OdooSyncShmem->mutex);
				}
				endpoints_changed = false;
				if (wake_launcher_at_commit)
				{
					wake_launcher_at_commit = false;
					odoo_sync_wake_launcher();
				}
				if (mask != 0 && MyDatabaseId != InvalidOid)
				{
					for (int k = 0; k < OSW_NUM_KINDS; k++)
						if (mask & (1U << k))
							odoo_sync_wake(MyDatabaseId, (OdooSyncWorkerKind) k);
				}
				break;
			}
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/*
			 * A prepared transaction commits in another session (COMMIT
			 * PREPARED) without these callbacks' state: the workers find
			 * its work at their next sweep, within a second.
			 */
			wake_at_commit_mask = 0;
			wake_launcher_at_commit = false;
			endpoints_changed = false;
			xact_wrote = false;
			break;
		default:
			break;
	}
}

/*
 * Stops the workers of a database about to be dropped, and waits (bounded)
 * for them to exit: DROP DATABASE refuses to run while anyone is connected.
 */
static void
odoo_sync_release_database(const char *dbname)
{
	Oid			dboid = get_database_oid(dbname, true);
	pid_t		pids[OSW_NUM_KINDS];
	OdooSyncDbSlot *slot;

	if (!OidIsValid(dboid) || OdooSyncShmem == NULL)
		return;

	SpinLockAcquire(&OdooSyncShmem->mutex);
	slot = odoo_sync_find_slot(dboid, false);
	memset(pids, 0, sizeof(pids));
	if (slot != NULL)
	{
		slot->dropping = true;
		memcpy(pids, slot->pid, sizeof(pids));
	}
	SpinLockRelease(&OdooSyncShmem->mutex);

	for (int k = 0; k < OSW_NUM_KINDS; k++)
		if (pids[k] != 0)
			kill(pids[k], SIGTERM);

	/* wait up to 10 s for them to go; DROP DATABASE reports anything left */
	for (int i = 0; i < 1000; i++)
	{
		bool		alive = false;

		for (int k = 0; k < OSW_NUM_KINDS; k++)
			if (pids[k] != 0 && kill(pids[k], 0) == 0)
				alive = true;
		if (!alive)
			break;
		CHECK_FOR_INTERRUPTS();
		pg_usleep(10000L);
	}
}

static void
odoo_sync_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
						 bool readOnlyTree, ProcessUtilityContext context,
						 ParamListInfo params, QueryEnvironment *queryEnv,
						 DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	char	   *volatile dropped = NULL;

	if (IsA(parsetree, DropdbStmt))
	{
		dropped = ((DropdbStmt *) parsetree)->dbname;
		odoo_sync_release_database(dropped);
	}

	PG_TRY();
	{
		if (prev_ProcessUtility)
			prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		/* dropped or not, the launcher may look at that database again */
		if (dropped != NULL && OdooSyncShmem != NULL)
		{
			Oid			dboid = get_database_oid(dropped, true);
			OdooSyncDbSlot *slot;
			Latch	   *launcher;

			SpinLockAcquire(&OdooSyncShmem->mutex);
			for (int i = 0; i < OdooSyncShmem->nslots; i++)
			{
				slot = &OdooSyncShmem->slots[i];
				if (slot->dropping &&
					(!OidIsValid(dboid) || slot->dboid == dboid))
					slot->dropping = false;
			}
			launcher = OdooSyncShmem->launcher_latch;
			SpinLockRelease(&OdooSyncShmem->mutex);
			/* rescan now: forget the database and drop its origins */
			if (launcher != NULL)
				SetLatch(launcher);
		}
	}
	PG_END_TRY();
}

/*
 * _PG_init
 *		Module load: GUCs, shared memory, hooks, the launcher.
 *
 * Refuses to load outside shared_preload_libraries, where the workers and
 * shared memory could not exist.
 */
void
_PG_init(void)
{
	if (IsBinaryUpgrade)
		return;

	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("odoo_sync must be loaded via shared_preload_libraries"),
				 errhint("Add \"odoo_sync\" to shared_preload_libraries and "
						 "to output_plugin_libraries in postgresql.conf, "
						 "set wal_level = logical, and restart the server.")));

	odoo_sync_define_core_gucs();
	odoo_sync_capture_init();
	odoo_sync_deliver_init();
	odoo_sync_inbound_init();
	MarkGUCPrefixReserved("odoo_sync");

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = odoo_sync_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = odoo_sync_shmem_startup;
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = odoo_sync_ProcessUtility;

	RegisterXactCallback(odoo_sync_xact_callback, NULL);

	odoo_sync_register_launcher();
}
