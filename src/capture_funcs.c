/*-------------------------------------------------------------------------
 *
 * capture_funcs.c
 *	  SQL-callable helpers of the capture rule engine, in C because they run
 *	  once per captured row or event.
 *
 * odoo_sync._event_id() gives event ids: UUIDs of version 7 (RFC 9562), a
 * millisecond Unix timestamp followed by a counter and random bits.  They
 * are as unique and as stable as random (version 4) ids, but they grow with
 * time, so that the primary key of the event log is appended to at its
 * right edge instead of at a random leaf page per event (in a burst that
 * is most of the cost of an insert into the log).
 *
 * odoo_sync.is_internal_location(integer) and odoo_sync.is_outgoing(integer)
 * are the lookups the default catalog's rule conditions make for every
 * stock quant, move and picking row.  They remember their answers for as
 * long as the calling expression lives and the current command does not
 * change (a rule evaluation over a batch of thousands of rows looks each
 * location or picking type up once instead of once per row); a write of the
 * calling transaction (a new command id) or another transaction starts
 * afresh.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "storage/proc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "capture.h"
#include "odoo_sync.h"

PG_FUNCTION_INFO_V1(odoo_sync_event_id);
PG_FUNCTION_INFO_V1(odoo_sync_is_internal_location);
PG_FUNCTION_INFO_V1(odoo_sync_is_outgoing);

/*
 * odoo_sync_make_event_id
 *		A new UUID of version 7: 48 bits of Unix time in milliseconds, the
 *		version, 12 bits of a counter that keeps the ids of this process
 *		increasing within a millisecond, the variant, and 62 random bits.
 */
pg_uuid_t *
odoo_sync_make_event_id(void)
{
	static uint64 last_ms = 0;
	static uint32 counter = 0;
	pg_uuid_t  *uuid = palloc(sizeof(pg_uuid_t));
	TimestampTz now = GetCurrentTimestamp();
	uint64		ms;
	uint64		rnd;

	/* TimestampTz counts microseconds since 2000-01-01 */
	ms = (uint64) (now / 1000) +
		(uint64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;
	if (ms <= last_ms)
	{
		/* same millisecond (or the clock went back): count on */
		ms = last_ms;
		if (++counter > 0xFFF)
		{
			ms = ++last_ms;
			counter = 0;
		}
	}
	else
	{
		last_ms = ms;
		counter = 0;
	}
	rnd = pg_prng_uint64(&pg_global_prng_state);

	uuid->data[0] = (unsigned char) (ms >> 40);
	uuid->data[1] = (unsigned char) (ms >> 32);
	uuid->data[2] = (unsigned char) (ms >> 24);
	uuid->data[3] = (unsigned char) (ms >> 16);
	uuid->data[4] = (unsigned char) (ms >> 8);
	uuid->data[5] = (unsigned char) ms;
	uuid->data[6] = (unsigned char) (0x70 | ((counter >> 8) & 0x0F));
	uuid->data[7] = (unsigned char) counter;
	uuid->data[8] = (unsigned char) (0x80 | ((rnd >> 56) & 0x3F));
	uuid->data[9] = (unsigned char) (rnd >> 48);
	uuid->data[10] = (unsigned char) (rnd >> 40);
	uuid->data[11] = (unsigned char) (rnd >> 32);
	uuid->data[12] = (unsigned char) (rnd >> 24);
	uuid->data[13] = (unsigned char) (rnd >> 16);
	uuid->data[14] = (unsigned char) (rnd >> 8);
	uuid->data[15] = (unsigned char) rnd;
	return uuid;
}

/*
 * odoo_sync_event_id
 *		odoo_sync._event_id(): a new event id.
 */
Datum
odoo_sync_event_id(PG_FUNCTION_ARGS)
{
	PG_RETURN_UUID_P(odoo_sync_make_event_id());
}

/* ---------------------------------------------------------------- lookups */

/* A remembered answer: id -> true/false. */
typedef struct LookupEntry
{
	int32		id;				/* hash key */
	bool		answer;
} LookupEntry;

/* What one call site remembers (in fn_extra). */
typedef struct LookupCache
{
	HTAB	   *answers;
	LocalTransactionId lxid;	/* valid for this transaction... */
	CommandId	cid;			/* ...and this command */
} LookupCache;

/*
 * cached_lookup
 *		The boolean "<column> = '<value>'" of the row of <table> with this
 *		id (false when there is no such row or the id is NULL), remembered
 *		per call site while the transaction and its command id stay the
 *		same.
 */
static bool
cached_lookup(FunctionCallInfo fcinfo, const char *query, SPIPlanPtr *plan)
{
	LookupCache *cache = (LookupCache *) fcinfo->flinfo->fn_extra;
	CommandId	cid = GetCurrentCommandId(false);
	int32		id;
	LookupEntry *entry;
	bool		hit;

	if (PG_ARGISNULL(0))
		return false;
	id = PG_GETARG_INT32(0);

	if (cache == NULL)
	{
		HASHCTL		ctl;

		cache = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(LookupCache));
		ctl.keysize = sizeof(int32);
		ctl.entrysize = sizeof(LookupEntry);
		ctl.hcxt = fcinfo->flinfo->fn_mcxt;
		cache->answers = hash_create("odoo_sync lookup cache", 64, &ctl,
									 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		cache->lxid = MyProc->lxid;
		cache->cid = cid;
		fcinfo->flinfo->fn_extra = cache;
	}
	else if (cache->lxid != MyProc->lxid || cache->cid != cid)
	{
		/* another transaction, or this one wrote since: forget */
		HASH_SEQ_STATUS seq;
		LookupEntry *e;

		hash_seq_init(&seq, cache->answers);
		while ((e = hash_seq_search(&seq)) != NULL)
			hash_search(cache->answers, &e->id, HASH_REMOVE, NULL);
		cache->lxid = MyProc->lxid;
		cache->cid = cid;
	}

	entry = hash_search(cache->answers, &id, HASH_FIND, &hit);
	if (!hit)
	{
		Datum		args[1] = {Int32GetDatum(id)};
		bool		answer = false;
		int			rc;

		SPI_connect();
		if (*plan == NULL)
		{
			Oid			argtypes[1] = {INT4OID};
			SPIPlanPtr	p = SPI_prepare(query, 1, argtypes);

			if (p == NULL)
				elog(ERROR, "odoo_sync: could not prepare lookup: %s",
					 SPI_result_code_string(SPI_result));
			SPI_keepplan(p);
			*plan = p;
		}
		rc = SPI_execute_plan(*plan, args, NULL, true, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "odoo_sync: lookup failed: %s", SPI_result_code_string(rc));
		if (SPI_processed == 1)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 1, &isnull);

			answer = !isnull && DatumGetBool(d);
		}
		SPI_finish();
		entry = hash_search(cache->answers, &id, HASH_ENTER, NULL);
		entry->answer = answer;
	}
	return entry->answer;
}

/*
 * odoo_sync_is_internal_location
 *		is_internal_location(location_id): the Odoo location has usage
 *		'internal' (stock on hand).
 */
Datum
odoo_sync_is_internal_location(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;

	PG_RETURN_BOOL(cached_lookup(fcinfo,
								 "SELECT l.usage OPERATOR(pg_catalog.=) 'internal' "
								 "FROM public.stock_location l "
								 "WHERE l.id OPERATOR(pg_catalog.=) $1",
								 &plan));
}

/*
 * odoo_sync_is_outgoing
 *		is_outgoing(picking_type_id): the Odoo picking type is a delivery
 *		(code 'outgoing').
 */
Datum
odoo_sync_is_outgoing(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;

	PG_RETURN_BOOL(cached_lookup(fcinfo,
								 "SELECT t.code OPERATOR(pg_catalog.=) 'outgoing' "
								 "FROM public.stock_picking_type t "
								 "WHERE t.id OPERATOR(pg_catalog.=) $1",
								 &plan));
}
