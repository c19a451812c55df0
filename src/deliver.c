/*-------------------------------------------------------------------------
 *
 * deliver.c
 *	  Placeholder for the deliver worker (to be written by its issue).
 *
 * The worker attaches, then idles on its latch until the extension is
 * dropped or it is told to stop.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/guc.h"

#include "odoo_sync.h"

void
odoo_sync_deliver_init(void)
{
}

void
odoo_sync_deliver_main(Datum main_arg)
{
	if (!odoo_sync_worker_attach(OSW_DELIVER, main_arg))
		proc_exit(0);

	for (;;)
	{
		bool		present;

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		StartTransactionCommand();
		present = odoo_sync_extension_present();
		CommitTransactionCommand();
		if (!present)
		{
			odoo_sync_worker_detach();
			proc_exit(0);
		}
	}
}
