/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  The extension-wide settings (odoo_sync.*).
 *
 * Settings of one concern (capture, delivery, inbound) are defined by that
 * concern's init function; this file holds the ones the launcher and the
 * output plugin use.  Tunables are PGC_SIGHUP; only what sizes shared memory
 * is PGC_POSTMASTER.  _PG_init reserves the "odoo_sync" prefix afterwards,
 * so a misspelt odoo_sync.* setting is an error, not silently ignored.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "utils/guc.h"

#include "odoo_sync.h"

bool		odoo_sync_enabled = true;
int			odoo_sync_launcher_naptime = 2000;
int			odoo_sync_launcher_recheck = 60000;
int			odoo_sync_worker_restart_delay = 1000;
int			odoo_sync_max_databases = 32;
int			odoo_sync_decode_coalesce_memory = 65536;

void
odoo_sync_define_core_gucs(void)
{
	DefineCustomBoolVariable("odoo_sync.enabled",
							 "Runs the odoo_sync workers.",
							 "When off, the launcher stops every worker and "
							 "starts none; nothing is lost, work resumes when "
							 "it is turned on again.",
							 &odoo_sync_enabled,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("odoo_sync.launcher_naptime",
							"Time between two looks of the launcher at the "
							"databases of the cluster.",
							"New databases are probed and stopped workers "
							"restarted within this delay.",
							&odoo_sync_launcher_naptime,
							2000, 100, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("odoo_sync.launcher_recheck",
							"Time after which a database found without the "
							"extension is probed again.",
							"CREATE EXTENSION wakes the launcher at once; "
							"this is only a safety net.",
							&odoo_sync_launcher_recheck,
							60000, 1000, 24 * 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("odoo_sync.worker_restart_delay",
							"Delay before a stopped or crashed worker is "
							"started again.",
							NULL,
							&odoo_sync_worker_restart_delay,
							1000, 0, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("odoo_sync.max_databases",
							"Largest number of databases with the extension "
							"in one cluster.",
							"Sizes shared memory; each such database runs "
							"three background workers, so max_worker_processes "
							"must leave room for them.",
							&odoo_sync_max_databases,
							32, 1, 1024,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("odoo_sync.decode_coalesce_memory",
							"Memory one decoded transaction may use for "
							"coalescing its rows.",
							"Past this amount the output plugin emits what it "
							"holds and the rest of the transaction uncoalesced. "
							"The output plugin option coalesce-memory "
							"overrides it per slot.",
							&odoo_sync_decode_coalesce_memory,
							65536, 64, INT_MAX / 2,
							PGC_SIGHUP, GUC_UNIT_KB,
							NULL, NULL, NULL);
}
