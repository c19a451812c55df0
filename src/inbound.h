/*-------------------------------------------------------------------------
 *
 * inbound.h
 *	  Declarations shared by inbound.c (ingest) and apply.c (apply worker).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ODOO_SYNC_INBOUND_H
#define ODOO_SYNC_INBOUND_H

#include "postgres.h"

/* apply worker settings (defined in apply.c, registered by inbound.c) */
extern int	odoo_sync_apply_batch_size;
extern int	odoo_sync_apply_naptime;

extern void odoo_sync_apply_define_gucs(void);

/* short-lived worker that sends NOTIFY cron_trigger in database postgres */
extern PGDLLEXPORT void odoo_sync_cron_notify_main(Datum main_arg);

#endif							/* ODOO_SYNC_INBOUND_H */
