/*
 * bulk.c
 *		Appending many rows to a table as COPY FROM does (see CopyFrom()):
 *		one executor state for the whole append, rows written by
 *		table_multi_insert() in batches (one WAL record per page instead of
 *		per row), then each row's index entries and AFTER ROW triggers
 *		through the executor's routines; statement triggers (and their
 *		transition tables) around the whole append when asked for.
 *
 * Used for the event log (capture_engine.c: the delivery fan-out is a
 * statement trigger with a transition table) and for delivered history
 * (deliver.c, no triggers).  Callers check first that the table has no
 * BEFORE or INSTEAD row trigger and no rule, which this does not run.
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"

#include "bulk.h"

BulkInsert *
bulk_insert_begin(Relation rel, int nslots, bool triggers)
{
	BulkInsert *b = palloc0(sizeof(BulkInsert));
	RangeTblEntry *rte;

	b->rel = rel;
	b->triggers = triggers;
	b->nslots = nslots;
	b->estate = CreateExecutorState();
	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(rel);
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	rte->requiredPerms = ACL_INSERT;
	ExecInitRangeTable(b->estate, list_make1(rte));
	b->rri = makeNode(ResultRelInfo);
	ExecInitResultRelation(b->estate, b->rri, 1);
	CheckValidResultRel(b->rri, CMD_INSERT);
	ExecOpenIndices(b->rri, false);
	b->cid = GetCurrentCommandId(true);
	b->estate->es_output_cid = b->cid;
	if (triggers)
	{
		AfterTriggerBeginQuery();
		ExecBSInsertTriggers(b->estate, b->rri);
		b->tcs = MakeTransitionCaptureState(rel->trigdesc, RelationGetRelid(rel),
											CMD_INSERT);
	}
	b->bistate = GetBulkInsertState();
	b->slots = palloc(sizeof(TupleTableSlot *) * nslots);
	for (int i = 0; i < nslots; i++)
		b->slots[i] = table_slot_create(rel, &b->estate->es_tupleTable);
	return b;
}

/* writes the rows in slots[0..m-1] (virtual tuples the caller stored) */
static void
bulk_insert_flush(BulkInsert *b, int m)
{
	Assert(m <= b->nslots);
	if (b->rel->rd_att->constr)
		for (int j = 0; j < m; j++)
			ExecConstraints(b->rri, b->slots[j], b->estate);
	table_multi_insert(b->rel, b->slots, m, b->cid, 0, b->bistate);
	for (int j = 0; j < m; j++)
	{
		List	   *recheck = NIL;

		if (b->rri->ri_NumIndices > 0)
			recheck = ExecInsertIndexTuples(b->rri, b->slots[j], b->estate, false, false,
											NULL, NIL);
		if (b->triggers)
			ExecARInsertTriggers(b->estate, b->rri, b->slots[j], recheck, b->tcs);
		list_free(recheck);
	}
	ResetPerTupleExprContext(b->estate);
}

/*
 * bulk_insert_slot
 *		An empty slot (every column NULL) for the next row: the caller sets
 *		its columns and stores it with ExecStoreVirtualTuple().  The rows are
 *		written nslots at a time, and the last ones by bulk_insert_end().
 */
TupleTableSlot *
bulk_insert_slot(BulkInsert *b)
{
	TupleTableSlot *slot;

	if (b->nused == b->nslots)
	{
		bulk_insert_flush(b, b->nused);
		b->nused = 0;
	}
	slot = b->slots[b->nused++];
	ExecClearTuple(slot);
	memset(slot->tts_isnull, true, sizeof(bool) * slot->tts_tupleDescriptor->natts);
	return slot;
}

void
bulk_insert_end(BulkInsert *b)
{
	if (b->nused > 0)
		bulk_insert_flush(b, b->nused);
	FreeBulkInsertState(b->bistate);
	if (b->triggers)
	{
		ExecASInsertTriggers(b->estate, b->rri, b->tcs);
		AfterTriggerEndQuery(b->estate);
	}
	ExecResetTupleTable(b->estate->es_tupleTable, false);
	ExecCloseResultRelations(b->estate);
	ExecCloseRangeTableRelations(b->estate);
	FreeExecutorState(b->estate);
	pfree(b->slots);
	pfree(b);
}
