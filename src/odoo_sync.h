/*-------------------------------------------------------------------------
 *
 * odoo_sync.h
 *	  Declarations shared by the files of the odoo_sync extension.
 *
 * Processes: every database that has the extension gets a set of dynamic
 * background workers (one per OdooSyncWorkerKind), started and restarted by
 * the launcher (launcher.c).  Backends and workers find each other through a
 * small shared-memory table of database slots (odoo_sync.c), which holds the
 * latch of every worker so that a commit can wake the right one at once.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ODOO_SYNC_H
#define ODOO_SYNC_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "storage/latch.h"
#include "storage/spin.h"

#define ODOO_SYNC_SCHEMA		"odoo_sync"
#define ODOO_SYNC_EXTNAME		"odoo_sync"
#define ODOO_SYNC_LIBNAME		"odoo_sync"

/* Replication origins used by the extension's own writers (no echo). */
#define ODOO_SYNC_APPLY_ORIGIN_PREFIX	"odoo_sync_apply"
#define ODOO_SYNC_CAPTURE_ORIGIN_PREFIX "odoo_sync_capture"

/* The kinds of per-database workers, in start order. */
typedef enum OdooSyncWorkerKind
{
	OSW_CAPTURE = 0,			/* decodes WAL into the event log */
	OSW_DELIVER,				/* sends events to endpoints over HTTP */
	OSW_APPLY,					/* applies inbound events */
	OSW_DELIVER_CRITICAL,		/* sends the critical lane (OSW_DELIVER: bulk) */
	OSW_NUM_KINDS
} OdooSyncWorkerKind;

/* "deliver critical": the name in backend_type and _wake_at_commit() */
extern const char *const odoo_sync_worker_kind_names[OSW_NUM_KINDS];
/* entry point of each kind: odoo_sync_<this>_main */
extern const char *const odoo_sync_worker_kind_functions[OSW_NUM_KINDS];

/* GUCs (guc.c) */
extern int	odoo_sync_launcher_naptime;
extern int	odoo_sync_launcher_recheck;
extern int	odoo_sync_worker_restart_delay;
extern int	odoo_sync_max_databases;
extern int	odoo_sync_decode_coalesce_memory;
extern bool odoo_sync_enabled;

extern void odoo_sync_define_core_gucs(void);

/* per-concern initialisation called by _PG_init (each defines its GUCs) */
extern void odoo_sync_capture_init(void);
extern void odoo_sync_deliver_init(void);
extern void odoo_sync_inbound_init(void);

/* shared memory and wake-ups (odoo_sync.c) */
extern void odoo_sync_wake(Oid dboid, OdooSyncWorkerKind kind);
extern void odoo_sync_wake_at_commit(OdooSyncWorkerKind kind);
extern uint32 odoo_sync_endpoints_gen(void);
extern void odoo_sync_wake_launcher(void);

/* launcher (launcher.c) */
extern void odoo_sync_register_launcher(void);
extern PGDLLEXPORT void odoo_sync_launcher_main(Datum main_arg);

/* per-database workers (worker.c and the file of each kind) */
extern bool odoo_sync_worker_attach(OdooSyncWorkerKind kind, Datum main_arg);
extern bool odoo_sync_extension_present(void);
extern int	odoo_sync_drop_orphan_origins(void);
extern void odoo_sync_worker_detach(void);
extern PGDLLEXPORT void odoo_sync_capture_main(Datum main_arg);
extern PGDLLEXPORT void odoo_sync_deliver_main(Datum main_arg);
extern PGDLLEXPORT void odoo_sync_deliver_critical_main(Datum main_arg);
extern PGDLLEXPORT void odoo_sync_apply_main(Datum main_arg);

/*
 * What the two deliver workers of a database (one per lane) share about an
 * endpoint, so that its limits hold for the endpoint, not per process:
 * requests in flight (per worker; the sum is held to the endpoint's
 * concurrency), the rate limit's token bucket, and the circuit breaker.
 * Protected by OdooSyncShmem->mutex; endpoint_id 0 = free entry.  Used by
 * deliver.c only.
 */
#define ODOO_SYNC_DELIVER_ENDPOINTS 64

typedef struct OdooSyncEndpointShare
{
	int32		endpoint_id;
	int16		active[2];		/* requests in flight, per lane's worker */
	bool		waiting[2];		/* that lane's worker waits for a request of
								 * the other to end (wake it then) */
	int16		circuit;		/* deliver.c's Circuit */
	bool		probe_in_flight;
	int8		probe_by;		/* lane + 1 of the probe's worker, 0 = none */
	int32		failures;		/* consecutive */
	TimestampTz opened_at;
	double		tokens;
	TimestampTz tokens_at;
} OdooSyncEndpointShare;

/* shared-memory slot bookkeeping used by the launcher (odoo_sync.c) */
typedef struct OdooSyncDbSlot
{
	Oid			dboid;			/* InvalidOid when the slot is free */
	bool		ext_absent;		/* probe found no extension */
	bool		ext_present;	/* a worker found the extension (stays set
								 * while that worker restarts) */
	bool		recheck;		/* CREATE EXTENSION asked for a new probe */
	bool		dropping;		/* DROP DATABASE in progress */
	TimestampTz checked_at;		/* when ext_absent was last set */
	pid_t		pid[OSW_NUM_KINDS];
	Latch	   *latch[OSW_NUM_KINDS];
	uint32		endpoints_gen;	/* bumped when a transaction that changed
								 * endpoints or secrets commits */
	OdooSyncEndpointShare endpoints[ODOO_SYNC_DELIVER_ENDPOINTS];
} OdooSyncDbSlot;

typedef struct OdooSyncShared
{
	slock_t		mutex;			/* protects everything below */
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	int			nslots;
	OdooSyncDbSlot slots[FLEXIBLE_ARRAY_MEMBER];
} OdooSyncShared;

extern OdooSyncShared *OdooSyncShmem;

extern OdooSyncDbSlot *odoo_sync_find_slot(Oid dboid, bool create);

#endif							/* ODOO_SYNC_H */
