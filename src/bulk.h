/*
 * bulk.h
 *		Appending many rows to a table as COPY FROM does: table_multi_insert()
 *		into slots, index entries and (optionally) the AFTER triggers through
 *		the executor's own routines.
 */
#ifndef ODOO_SYNC_BULK_H
#define ODOO_SYNC_BULK_H

#include "access/heapam.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "utils/rel.h"

typedef struct BulkInsert
{
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
	TransitionCaptureState *tcs;	/* with triggers: their transition tables */
	BulkInsertState bistate;
	TupleTableSlot **slots;		/* rows given out by bulk_insert_slot */
	int			nslots;
	int			nused;			/* slots[0..nused-1] hold rows not written yet */
	CommandId	cid;
	bool		triggers;
} BulkInsert;

extern BulkInsert *bulk_insert_begin(Relation rel, int nslots, bool triggers);
extern TupleTableSlot *bulk_insert_slot(BulkInsert *b);
extern void bulk_insert_end(BulkInsert *b);

#endif
