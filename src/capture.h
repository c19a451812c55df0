/*-------------------------------------------------------------------------
 *
 * capture.h
 *	  Declarations shared by the capture files (capture_engine.c,
 *	  capture_funcs.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ODOO_SYNC_CAPTURE_H
#define ODOO_SYNC_CAPTURE_H

#include "postgres.h"

#include "utils/uuid.h"

/* a new event id: a time-ordered UUID (version 7) */
extern pg_uuid_t *odoo_sync_make_event_id(void);

#endif							/* ODOO_SYNC_CAPTURE_H */
