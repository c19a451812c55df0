/*-------------------------------------------------------------------------
 *
 * capture_engine.c
 *	  The rule engine: odoo_sync._capture_batch(batch jsonb, snapshot bool),
 *	  which turns decoded transactions into events, in C.
 *
 * The capture worker (capture.c) and odoo_sync.resync() call it with a
 * JSON array of decoded transactions, each {"b": <begin object of the
 * output plugin>, "r": [<row objects>]}, in commit order.  It
 *   1. keeps the I/U/D rows of watched tables (odoo_sync._capture_table),
 *      computes their key, their previous values (from odoo_sync.shadow and
 *      from earlier rows of the batch) and completes their new values
 *      (unchanged TOAST is absent from a decoded row);
 *   2. evaluates the rules of each table with the generated PL/pgSQL
 *      function odoo_sync._eval_<table> (the rules' conditions and keys are
 *      SQL), once per table with all its rows; when it raises, again in
 *      safe mode, where a failing rule is recorded in capture_error;
 *   3. keeps one event per transaction, event type and aggregate (lowest
 *      priority, then first row, then lowest rule id wins);
 *   4. builds the payloads: per rule, one call of the generated dispatcher
 *      odoo_sync._build_payloads with all the rule's aggregates (the
 *      builder's batch form, or the per-event builder inside one query);
 *      small batches, and every batch again when that raises, go event by
 *      event through odoo_sync._build_one, which records failures;
 *   5. numbers the events within their aggregates (odoo_sync._aggregate_seq,
 *      one upsert) and appends them as COPY does (table_multi_insert, the
 *      executor's index and trigger routines: the delivery fan-out, a
 *      statement trigger with a transition table, runs once for the batch);
 *   6. writes the last values of each row to the shadow.
 * Steps 1, 3, 5 and 6 used to be SQL over jsonb and composite arrays: this
 * is the same algorithm with plain C data and one statement per step.
 * A batch builder that takes no changes is asked once per distinct
 * aggregate of the batch.
 *
 * Plans of the fixed statements are prepared once per process and kept;
 * they are made again when the extension's types change (DROP and CREATE
 * EXTENSION in the same session).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "commands/dbcommands.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "parser/parse_relation.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/resowner.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

#include "bulk.h"
#include "capture.h"
#include "odoo_sync.h"

PG_FUNCTION_INFO_V1(odoo_sync_capture_batch);

/* the columns of odoo_sync.event the engine writes (all of them) */
enum
{
	EV_ID,
	EV_SEQ,
	EV_TYPE,
	EV_SOURCE,
	EV_AGGREGATE_TYPE,
	EV_AGGREGATE_ID,
	EV_AGGREGATE_SEQ,
	EV_LANE,
	EV_CORRELATION_ID,
	EV_SNAPSHOT,
	EV_COMMIT_LSN,
	EV_COMMIT_TIME,
	EV_CAPTURED_AT,
	EV_RULE_ID,
	EV_PAYLOAD,
	EV_NCOLS
};
static const char *const ev_columns[EV_NCOLS] = {
	"id", "seq", "type", "source", "aggregate_type", "aggregate_id", "aggregate_seq",
	"lane", "correlation_id", "snapshot", "commit_lsn", "commit_time", "captured_at",
	"rule_id", "payload"
};

/* rows per table_multi_insert() call */
#define EVENT_INSERT_CHUNK	1000

/* A watched table (a row of odoo_sync._capture_table). */
typedef struct CapTable
{
	char	   *name;			/* schema.table */
	int			schema_len;		/* length of its schema part */
	char	  **pk;				/* key columns */
	int			npk;
	bool		need_shadow;
	char	   *eval_fn;
} CapTable;

/* A rule (what the engine needs of odoo_sync.rule). */
typedef struct CapRule
{
	int			id;
	char	   *event_type;
	char	   *aggregate_type;
	char	   *lane;
	int			priority;
	bool		without_changes;	/* batch builder takes no changes */
	int			etype_no;		/* same number, same event_type */
	int			atype_no;		/* same number, same aggregate_type */
} CapRule;

/* A decoded transaction (its begin line). */
typedef struct CapTxn
{
	char	   *origin;			/* NULL: none */
	bool		has_lsn;
	XLogRecPtr	lsn;
	bool		has_time;
	TimestampTz time;
} CapTxn;

/* A row change of a watched table. */
typedef struct CapChange
{
	int			tord;			/* 1-based transaction position */
	int			rord;			/* 1-based row position in it */
	int			table;			/* index into tables */
	char		action;			/* I, U or D */
	char	   *key;			/* primary key as text (NULL if absent) */
	Jsonb	   *row_new;		/* "new" of the decoded row, or NULL */
	Jsonb	   *row_key;		/* "key" of the decoded row, or NULL */
	bool		unchanged_toast;
	Jsonb	   *new;			/* completed new values */
	Jsonb	   *old;			/* previous values, or NULL */
	Datum		composite;		/* as an odoo_sync._change */
} CapChange;

/* A rule that matched a change. */
typedef struct CapCand
{
	int			change;			/* index into changes */
	CapRule    *rule;
	char	   *agg;
	int			agg_no;			/* same number, same (aggregate type, id) */
} CapCand;

/* An event being built. */
typedef struct CapEvent
{
	CapCand    *cand;
	int			n;				/* position in the batch's event order */
	Jsonb	   *payload;		/* NULL: no event */
	char	   *correlation;
	int64		aggregate_seq;
} CapEvent;

/* The state of one call. */
typedef struct CapBatch
{
	MemoryContext cxt;			/* everything below lives here */
	bool		snapshot;
	CapTable   *tables;
	int			ntables;
	CapRule    *rules;
	int			nrules;
	CapTxn	   *txns;
	int			ntxns;
	CapChange  *changes;
	int			nchanges;
	int		   *key_order;		/* changes by table, key, tord, rord */
	CapCand    *cands;
	int			ncands;
	int			maxcands;
	CapEvent   *events;
	int			nevents;
	Oid			change_type;
	Oid			change_array_type;
	TupleDesc	change_desc;
} CapBatch;

/* Kept plans (made again when the odoo_sync._change type changes). */
static Oid	plans_change_type = InvalidOid;
static SPIPlanPtr plan_tables = NULL;
static SPIPlanPtr plan_rules = NULL;
static SPIPlanPtr plan_shadow_get = NULL;
static SPIPlanPtr plan_payloads = NULL;
static SPIPlanPtr plan_build_one = NULL;
static SPIPlanPtr plan_seq = NULL;
static SPIPlanPtr plan_insert = NULL;
static SPIPlanPtr plan_shadow_put = NULL;

/* kept plans of the evaluation functions, by function name */
typedef struct EvalPlan
{
	char	   *fn;
	SPIPlanPtr	plan;
} EvalPlan;
static EvalPlan *eval_plans = NULL;
static int	n_eval_plans = 0;

/* ---------------------------------------------------------------- helpers */

/* prepares and keeps a plan, or raises */
static SPIPlanPtr
keep_plan(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "odoo_sync capture: could not prepare \"%s\": %s",
			 sql, SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

/* forgets every kept plan (the extension's types changed) */
static void
forget_plans(void)
{
	SPIPlanPtr *all[] = {&plan_tables, &plan_rules, &plan_shadow_get, &plan_payloads,
	&plan_build_one, &plan_seq, &plan_insert, &plan_shadow_put};

	for (int i = 0; i < (int) lengthof(all); i++)
	{
		if (*all[i] != NULL)
			SPI_freeplan(*all[i]);
		*all[i] = NULL;
	}
	for (int i = 0; i < n_eval_plans; i++)
	{
		SPI_freeplan(eval_plans[i].plan);
		pfree(eval_plans[i].fn);
	}
	n_eval_plans = 0;
}

/* a jsonb key of an object container, or NULL */
static JsonbValue *
jsonb_get(JsonbContainer *c, const char *key, JsonbValue *res)
{
	if (c == NULL || !JsonContainerIsObject(c))
		return NULL;
	return getKeyJsonValueFromContainer(c, key, strlen(key), res);
}

/* the text of a scalar jsonb value (->> semantics), or NULL for null */
static char *
jsonb_value_text(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return NULL;
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v->val.numeric)));
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		case jbvBinary:
			return JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
		default:
			elog(ERROR, "odoo_sync capture: unexpected jsonb value type %d", (int) v->type);
	}
	return NULL;
}

/* a container value as a Jsonb datum of its own, or NULL */
static Jsonb *
jsonb_container(JsonbValue *v)
{
	if (v == NULL || v->type != jbvBinary)
		return NULL;
	return JsonbValueToJsonb(v);
}

static Jsonb *
jsonb_concat2(Jsonb *a, Jsonb *b)
{
	return DatumGetJsonbP(DirectFunctionCall2(jsonb_concat, JsonbPGetDatum(a),
											  JsonbPGetDatum(b)));
}

/* every key of object a is a key of object b */
static bool
jsonb_keys_within(Jsonb *a, Jsonb *b)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbValue	res;
	JsonbIteratorToken tok;

	if (!JB_ROOT_IS_OBJECT(a) || !JB_ROOT_IS_OBJECT(b) ||
		JB_ROOT_COUNT(a) > JB_ROOT_COUNT(b))
		return false;
	it = JsonbIteratorInit(&a->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY &&
			getKeyJsonValueFromContainer(&b->root, v.val.string.val,
										 v.val.string.len, &res) == NULL)
			return false;
	}
	return true;
}

/* a || b, without building anything when b has every key of a */
static Jsonb *
jsonb_merge2(Jsonb *a, Jsonb *b)
{
	if (jsonb_keys_within(a, b))
		return b;
	return jsonb_concat2(a, b);
}

static Jsonb *
jsonb_empty(void)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
}

static Datum
text_array(char **vals, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *nulls = palloc(sizeof(bool) * Max(n, 1));
	int			dims[1] = {n};
	int			lbs[1] = {1};

	for (int i = 0; i < n; i++)
	{
		nulls[i] = (vals[i] == NULL);
		d[i] = nulls[i] ? (Datum) 0 : CStringGetTextDatum(vals[i]);
	}
	return PointerGetDatum(construct_md_array(d, nulls, 1, dims, lbs, TEXTOID, -1, false,
											  TYPALIGN_INT));
}

static Datum
datum_array(Datum *vals, bool *nulls, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(vals, nulls, 1, dims, lbs, elemtype,
											  typlen, typbyval, typalign));
}

/* runs a kept plan, raising on failure */
static void
run_plan(SPIPlanPtr plan, Datum *args, const char *nulls, bool read_only, int expected)
{
	int			rc = SPI_execute_plan(plan, args, nulls, read_only, 0);

	if (rc != expected)
		elog(ERROR, "odoo_sync capture: statement failed: %s", SPI_result_code_string(rc));
}

/* ---------------------------------------------------------------- context */

/* the watched tables and the rules */
static void
load_rules(CapBatch *b)
{
	MemoryContext old;

	if (plan_tables == NULL)
		plan_tables = keep_plan("SELECT ct.table_name, ct.pk, ct.need_shadow, ct.eval_fn "
								"FROM odoo_sync._capture_table ct ORDER BY ct.table_name",
								0, NULL);
	if (plan_rules == NULL)
		plan_rules = keep_plan("SELECT r.id, r.event_type, r.aggregate_type, r.lane, r.priority, "
							   "r.id = ANY (odoo_sync._rules_without_changes()) "
							   "FROM odoo_sync.rule r ORDER BY r.id",
							   0, NULL);

	run_plan(plan_tables, NULL, NULL, true, SPI_OK_SELECT);
	old = MemoryContextSwitchTo(b->cxt);
	b->ntables = SPI_processed;
	b->tables = palloc0(sizeof(CapTable) * Max(b->ntables, 1));
	for (int i = 0; i < b->ntables; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		pk;
		Datum	   *elems;
		bool	   *enulls;
		int			n;

		b->tables[i].name = SPI_getvalue(tup, desc, 1);
		b->tables[i].schema_len = strchr(b->tables[i].name, '.') ?
			(int) (strchr(b->tables[i].name, '.') - b->tables[i].name) : 0;
		pk = SPI_getbinval(tup, desc, 2, &isnull);
		deconstruct_array(DatumGetArrayTypeP(pk), TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &enulls, &n);
		b->tables[i].npk = n;
		b->tables[i].pk = palloc(sizeof(char *) * Max(n, 1));
		for (int k = 0; k < n; k++)
			b->tables[i].pk[k] = TextDatumGetCString(elems[k]);
		b->tables[i].need_shadow = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
		b->tables[i].eval_fn = SPI_getvalue(tup, desc, 4);
	}
	MemoryContextSwitchTo(old);

	run_plan(plan_rules, NULL, NULL, true, SPI_OK_SELECT);
	old = MemoryContextSwitchTo(b->cxt);
	b->nrules = SPI_processed;
	b->rules = palloc0(sizeof(CapRule) * Max(b->nrules, 1));
	for (int i = 0; i < b->nrules; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		b->rules[i].id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		b->rules[i].event_type = SPI_getvalue(tup, desc, 2);
		b->rules[i].aggregate_type = SPI_getvalue(tup, desc, 3);
		b->rules[i].lane = SPI_getvalue(tup, desc, 4);
		b->rules[i].priority = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
		b->rules[i].without_changes = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));
		if (isnull)
			b->rules[i].without_changes = false;
	}
	/* numbers for the rules' type names (compared as integers when sorting) */
	for (int i = 0; i < b->nrules; i++)
	{
		b->rules[i].etype_no = i;
		b->rules[i].atype_no = i;
		for (int j = 0; j < i; j++)
			if (strcmp(b->rules[j].event_type, b->rules[i].event_type) == 0)
			{
				b->rules[i].etype_no = b->rules[j].etype_no;
				break;
			}
		for (int j = 0; j < i; j++)
			if (strcmp(b->rules[j].aggregate_type, b->rules[i].aggregate_type) == 0)
			{
				b->rules[i].atype_no = b->rules[j].atype_no;
				break;
			}
	}
	MemoryContextSwitchTo(old);
}

/* the watched table of a decoded row's schema and table names, or -1 */
static int
find_table(CapBatch *b, JsonbValue *schema, JsonbValue *table)
{
	for (int i = 0; i < b->ntables; i++)
	{
		CapTable   *t = &b->tables[i];

		if (t->schema_len == schema->val.string.len &&
			memcmp(t->name, schema->val.string.val, t->schema_len) == 0 &&
			strlen(t->name + t->schema_len + 1) == (size_t) table->val.string.len &&
			memcmp(t->name + t->schema_len + 1, table->val.string.val,
				   table->val.string.len) == 0)
			return i;
	}
	return -1;
}

static CapRule *
find_rule(CapBatch *b, int id)
{
	int			lo = 0,
				hi = b->nrules - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;

		if (b->rules[mid].id == id)
			return &b->rules[mid];
		if (b->rules[mid].id < id)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	elog(ERROR, "odoo_sync capture: rule %d does not exist", id);
	return NULL;
}

/* ---------------------------------------------------------------- 1. rows */

/* the transactions and the rows of watched tables */
static void
parse_batch(CapBatch *b, Jsonb *batch)
{
	JsonbContainer *root = &batch->root;
	int			ntx;
	MemoryContext old = MemoryContextSwitchTo(b->cxt);
	int			maxchanges = 64;

	if (!JsonContainerIsArray(root))
		elog(ERROR, "odoo_sync capture: the batch is not a JSON array");
	ntx = JsonContainerSize(root);
	b->txns = palloc0(sizeof(CapTxn) * Max(ntx, 1));
	b->ntxns = ntx;
	b->changes = palloc(sizeof(CapChange) * maxchanges);
	b->nchanges = 0;

	for (int t = 0; t < ntx; t++)
	{
		JsonbValue *tx = getIthJsonbValueFromContainer(root, t);
		JsonbContainer *txc;
		JsonbValue	bv,
					rv,
					v;
		JsonbContainer *bc = NULL;
		JsonbContainer *rc;
		CapTxn	   *txn = &b->txns[t];
		int			nrows;

		if (tx == NULL || tx->type != jbvBinary)
			continue;
		txc = tx->val.binary.data;
		if (jsonb_get(txc, "b", &bv) && bv.type == jbvBinary)
			bc = bv.val.binary.data;
		if (bc != NULL)
		{
			if (jsonb_get(bc, "origin", &v) && v.type != jbvNull)
				txn->origin = jsonb_value_text(&v);
			if (jsonb_get(bc, "commit-lsn", &v) && v.type != jbvNull)
			{
				txn->has_lsn = true;
				txn->lsn = DatumGetLSN(DirectFunctionCall1(pg_lsn_in,
														   CStringGetDatum(jsonb_value_text(&v))));
			}
			if (jsonb_get(bc, "commit-time", &v) && v.type != jbvNull)
			{
				txn->has_time = true;
				txn->time = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
																	CStringGetDatum(jsonb_value_text(&v)),
																	ObjectIdGetDatum(InvalidOid),
																	Int32GetDatum(-1)));
			}
		}
		if (!jsonb_get(txc, "r", &rv) || rv.type != jbvBinary ||
			!JsonContainerIsArray(rv.val.binary.data))
			continue;
		rc = rv.val.binary.data;
		nrows = JsonContainerSize(rc);
		for (int r = 0; r < nrows; r++)
		{
			JsonbValue *row = getIthJsonbValueFromContainer(rc, r);
			JsonbContainer *c;
			char		action;
			JsonbValue	schema;
			JsonbValue	table;
			int			ti;
			CapChange  *ch;
			JsonbContainer *keysrc;

			if (row == NULL || row->type != jbvBinary)
				continue;
			c = row->val.binary.data;
			if (!jsonb_get(c, "action", &v) || v.type != jbvString || v.val.string.len != 1)
				continue;
			action = v.val.string.val[0];
			if (action != 'I' && action != 'U' && action != 'D')
				continue;
			if (!jsonb_get(c, "schema", &schema) || schema.type != jbvString ||
				!jsonb_get(c, "table", &table) || table.type != jbvString)
				continue;
			ti = find_table(b, &schema, &table);
			if (ti < 0)
				continue;

			if (b->nchanges == maxchanges)
			{
				maxchanges *= 2;
				b->changes = repalloc(b->changes, sizeof(CapChange) * maxchanges);
			}
			ch = &b->changes[b->nchanges++];
			memset(ch, 0, sizeof(CapChange));
			ch->tord = t + 1;
			ch->rord = r + 1;
			ch->table = ti;
			ch->action = action;
			ch->row_new = jsonb_container(jsonb_get(c, "new", &v));
			ch->row_key = jsonb_container(jsonb_get(c, "key", &v));
			ch->unchanged_toast = (jsonb_get(c, "unchanged-toast", &v) != NULL);

			/* the key: coalesce(new, key) ->> each key column */
			keysrc = ch->row_new ? &ch->row_new->root :
				(ch->row_key ? &ch->row_key->root : NULL);
			if (b->tables[ti].npk == 1)
			{
				if (keysrc && jsonb_get(keysrc, b->tables[ti].pk[0], &v))
					ch->key = jsonb_value_text(&v);
			}
			else
			{
				StringInfoData k;
				bool		any = false;

				initStringInfo(&k);
				for (int p = 0; p < b->tables[ti].npk; p++)
				{
					char	   *s;

					if (!keysrc || !jsonb_get(keysrc, b->tables[ti].pk[p], &v))
						continue;
					s = jsonb_value_text(&v);
					if (s == NULL)
						continue;
					if (any)
						appendStringInfoChar(&k, ',');
					appendStringInfoString(&k, s);
					any = true;
				}
				ch->key = any ? k.data : NULL;
			}
		}
	}
	MemoryContextSwitchTo(old);
}

/* orders changes by table, key, then batch position */
static CapBatch *sort_batch;

static int
cmp_by_key(const void *a, const void *b)
{
	const CapChange *x = &sort_batch->changes[*(const int *) a];
	const CapChange *y = &sort_batch->changes[*(const int *) b];
	int			c;

	if (x->table != y->table)
		return x->table < y->table ? -1 : 1;
	if (x->key == NULL || y->key == NULL)
	{
		if (x->key != y->key)
			return x->key == NULL ? 1 : -1;
	}
	else if ((c = strcmp(x->key, y->key)) != 0)
		return c;
	if (x->tord != y->tord)
		return x->tord < y->tord ? -1 : 1;
	return x->rord < y->rord ? -1 : (x->rord > y->rord ? 1 : 0);
}

/*
 * Previous values (shadow, then the earlier rows of the batch) and the
 * completed new values of every change.
 */
static void
compute_old_new(CapBatch *b)
{
	int		   *order;
	int			ngroups = 0;
	int		   *group_start;
	char	  **gtables;
	char	  **gkeys;
	Jsonb	  **shadow;
	MemoryContext old;

	if (b->nchanges == 0)
		return;
	old = MemoryContextSwitchTo(b->cxt);
	order = palloc(sizeof(int) * b->nchanges);
	for (int i = 0; i < b->nchanges; i++)
		order[i] = i;
	sort_batch = b;
	qsort(order, b->nchanges, sizeof(int), cmp_by_key);
	b->key_order = order;		/* (write_shadow walks it again) */

	/* groups of one row (table, key) */
	group_start = palloc(sizeof(int) * (b->nchanges + 1));
	for (int i = 0; i < b->nchanges; i++)
	{
		CapChange  *c = &b->changes[order[i]];
		CapChange  *p = i > 0 ? &b->changes[order[i - 1]] : NULL;

		if (p == NULL || p->table != c->table ||
			(p->key == NULL) != (c->key == NULL) ||
			(p->key != NULL && strcmp(p->key, c->key) != 0))
			group_start[ngroups++] = i;
	}
	group_start[ngroups] = b->nchanges;

	/* the shadow of every row of a table that keeps one */
	gtables = palloc(sizeof(char *) * ngroups);
	gkeys = palloc(sizeof(char *) * ngroups);
	shadow = palloc0(sizeof(Jsonb *) * ngroups);
	{
		int			nq = 0;
		int		   *qgroup = palloc(sizeof(int) * ngroups);

		for (int g = 0; g < ngroups; g++)
		{
			CapChange  *c = &b->changes[order[group_start[g]]];

			if (b->tables[c->table].need_shadow && c->key != NULL)
			{
				gtables[nq] = b->tables[c->table].name;
				gkeys[nq] = c->key;
				qgroup[nq] = g;
				nq++;
			}
		}
		if (nq > 0)
		{
			Datum		args[2];

			if (plan_shadow_get == NULL)
			{
				Oid			types[2] = {TEXTARRAYOID, TEXTARRAYOID};

				plan_shadow_get =
					keep_plan("SELECT u.i::integer, s.vals "
							  "FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) "
							  "WITH ORDINALITY AS u(t, k, i) "
							  "JOIN odoo_sync.shadow s ON s.table_name = u.t AND s.key = u.k",
							  2, types);
			}
			args[0] = text_array(gtables, nq);
			args[1] = text_array(gkeys, nq);
			MemoryContextSwitchTo(old);
			run_plan(plan_shadow_get, args, NULL, true, SPI_OK_SELECT);
			MemoryContextSwitchTo(b->cxt);
			for (uint64 i = 0; i < SPI_processed; i++)
			{
				bool		isnull;
				int			q = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
															SPI_tuptable->tupdesc, 1, &isnull));
				Datum		vals = SPI_getbinval(SPI_tuptable->vals[i],
												 SPI_tuptable->tupdesc, 2, &isnull);

				if (!isnull && q >= 1 && q <= nq)
					shadow[qgroup[q - 1]] = DatumGetJsonbPCopy(vals);
			}
		}
	}

	/* old and new, row after row of each group */
	for (int g = 0; g < ngroups; g++)
	{
		Jsonb	   *prev = NULL;	/* merged new values of the earlier rows */

		for (int i = group_start[g]; i < group_start[g + 1]; i++)
		{
			CapChange  *c = &b->changes[order[i]];
			Jsonb	   *sh = shadow[g];

			if (c->action == 'I' && prev == NULL)
				c->old = NULL;
			else if (prev == NULL)
				c->old = sh;
			else if (sh == NULL)
				c->old = prev;
			else
				c->old = jsonb_merge2(sh, prev);

			/* the decoded row has every watched column but unchanged TOAST */
			if (c->action == 'D')
				c->new = jsonb_concat2(c->old ? c->old : jsonb_empty(),
									   c->row_key ? c->row_key : jsonb_empty());
			else if (c->old == NULL)
				c->new = c->row_new ? c->row_new : jsonb_empty();
			else if (!c->unchanged_toast && c->row_new != NULL)
				c->new = c->row_new;
			else
				c->new = jsonb_concat2(c->old, c->row_new ? c->row_new : jsonb_empty());

			if (c->action != 'D' && c->row_new != NULL)
			{
				/* a full row replaces what came before it (same keys) */
				if (prev == NULL || !c->unchanged_toast)
					prev = c->row_new;
				else
					prev = jsonb_concat2(prev, c->row_new);
			}
		}
	}
	MemoryContextSwitchTo(old);
}

/* the odoo_sync._change datum of every change */
static void
make_composites(CapBatch *b)
{
	MemoryContext old = MemoryContextSwitchTo(b->cxt);

	for (int i = 0; i < b->nchanges; i++)
	{
		CapChange  *c = &b->changes[i];
		CapTxn	   *t = &b->txns[c->tord - 1];
		Datum		values[11];
		bool		nulls[11];
		HeapTuple	tup;

		memset(nulls, 0, sizeof(nulls));
		values[0] = Int32GetDatum(c->tord);
		values[1] = Int32GetDatum(c->rord);
		values[2] = CStringGetTextDatum(b->tables[c->table].name);
		values[3] = CStringGetTextDatum(c->action == 'I' ? "insert" :
										c->action == 'U' ? "update" : "delete");
		if (c->key)
			values[4] = CStringGetTextDatum(c->key);
		else
			nulls[4] = true;
		values[5] = JsonbPGetDatum(c->new);
		if (c->old)
			values[6] = JsonbPGetDatum(c->old);
		else
			nulls[6] = true;
		if (t->origin)
			values[7] = CStringGetTextDatum(t->origin);
		else
			nulls[7] = true;
		values[8] = BoolGetDatum(b->snapshot);
		if (t->has_lsn)
			values[9] = LSNGetDatum(t->lsn);
		else
			nulls[9] = true;
		if (t->has_time)
			values[10] = TimestampTzGetDatum(t->time);
		else
			nulls[10] = true;
		tup = heap_form_tuple(b->change_desc, values, nulls);
		c->composite = HeapTupleGetDatum(tup);
	}
	MemoryContextSwitchTo(old);
}

/* ---------------------------------------------------------------- 2. rules */

static SPIPlanPtr
eval_plan(CapBatch *b, const char *fn)
{
	char	   *sql;
	Oid			types[2];

	for (int i = 0; i < n_eval_plans; i++)
		if (strcmp(eval_plans[i].fn, fn) == 0)
			return eval_plans[i].plan;
	if (eval_plans == NULL)
		eval_plans = MemoryContextAlloc(TopMemoryContext, sizeof(EvalPlan) * 64);
	if (n_eval_plans == 64)
	{
		/* more tables than that: start again */
		for (int i = 0; i < n_eval_plans; i++)
		{
			SPI_freeplan(eval_plans[i].plan);
			pfree(eval_plans[i].fn);
		}
		n_eval_plans = 0;
	}
	types[0] = b->change_array_type;
	types[1] = BOOLOID;
	sql = psprintf("SELECT x.tord, x.rord, x.rule_id, x.agg_id FROM %s($1, $2) AS x", fn);
	eval_plans[n_eval_plans].plan = keep_plan(sql, 2, types);
	eval_plans[n_eval_plans].fn = MemoryContextStrdup(TopMemoryContext, fn);
	return eval_plans[n_eval_plans++].plan;
}

/* collects the candidates the last evaluation returned */
static void
collect_candidates(CapBatch *b, int *idx, int n)
{
	MemoryContext old = MemoryContextSwitchTo(b->cxt);

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int			tord = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		int			rord = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		int			rule = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		Datum		agg = SPI_getbinval(tup, desc, 4, &isnull);
		int			lo = 0,
					hi = n - 1,
					found = -1;

		if (isnull)
			continue;
		/* idx is in (tord, rord) order */
		while (lo <= hi)
		{
			int			mid = (lo + hi) / 2;
			CapChange  *c = &b->changes[idx[mid]];

			if (c->tord == tord && c->rord == rord)
			{
				found = idx[mid];
				break;
			}
			if (c->tord < tord || (c->tord == tord && c->rord < rord))
				lo = mid + 1;
			else
				hi = mid - 1;
		}
		if (found < 0)
			elog(ERROR, "odoo_sync capture: rule evaluation returned an unknown row");
		if (b->ncands == b->maxcands)
		{
			b->maxcands = Max(64, b->maxcands * 2);
			b->cands = b->cands ? repalloc(b->cands, sizeof(CapCand) * b->maxcands) :
				palloc(sizeof(CapCand) * b->maxcands);
		}
		b->cands[b->ncands].change = found;
		b->cands[b->ncands].rule = find_rule(b, rule);
		b->cands[b->ncands].agg = TextDatumGetCString(agg);
		b->ncands++;
	}
	MemoryContextSwitchTo(old);
}

/*
 * The rules of every table, with all its rows in one call of its
 * evaluation function; when that raises, once more in safe mode (each
 * failing rule recorded in capture_error, the others go on).
 */
static void
evaluate_rules(CapBatch *b)
{
	int		   *idx = palloc(sizeof(int) * Max(b->nchanges, 1));

	for (int t = 0; t < b->ntables; t++)
	{
		int			n = 0;
		Datum	   *elems;
		Datum		args[2];
		SPIPlanPtr volatile plan;
		MemoryContext oldcxt = CurrentMemoryContext;
		ResourceOwner oldowner = CurrentResourceOwner;
		volatile bool failed = false;
		int			ncands_before = b->ncands;

		for (int i = 0; i < b->nchanges; i++)
			if (b->changes[i].table == t)
				idx[n++] = i;
		if (n == 0)
			continue;
		elems = palloc(sizeof(Datum) * n);
		for (int i = 0; i < n; i++)
			elems[i] = b->changes[idx[i]].composite;
		args[0] = datum_array(elems, NULL, n, b->change_type);
		plan = eval_plan(b, b->tables[t].eval_fn);

		args[1] = BoolGetDatum(false);
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(oldcxt);
		PG_TRY();
		{
			run_plan(plan, args, NULL, false, SPI_OK_SELECT);
			collect_candidates(b, idx, n);
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcxt);
			CurrentResourceOwner = oldowner;
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(oldcxt);
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcxt);
			CurrentResourceOwner = oldowner;
			failed = true;
		}
		PG_END_TRY();

		if (failed)
		{
			/* one rule raised: again rule by rule, recording failures */
			b->ncands = ncands_before;
			args[1] = BoolGetDatum(true);
			run_plan(plan, args, NULL, false, SPI_OK_SELECT);
			collect_candidates(b, idx, n);
		}
	}
}

/* ---------------------------------------------------------------- 3. events */

static int
cmp_dedup(const void *a, const void *b)
{
	const CapCand *x = (const CapCand *) a;
	const CapCand *y = (const CapCand *) b;
	const CapChange *cx = &sort_batch->changes[x->change];
	const CapChange *cy = &sort_batch->changes[y->change];

	if (cx->tord != cy->tord)
		return cx->tord < cy->tord ? -1 : 1;
	if (x->rule->etype_no != y->rule->etype_no)
		return x->rule->etype_no < y->rule->etype_no ? -1 : 1;
	if (x->agg_no != y->agg_no)
		return x->agg_no < y->agg_no ? -1 : 1;
	if (x->rule->priority != y->rule->priority)
		return x->rule->priority < y->rule->priority ? -1 : 1;
	if (cx->rord != cy->rord)
		return cx->rord < cy->rord ? -1 : 1;
	return x->rule->id < y->rule->id ? -1 : (x->rule->id > y->rule->id ? 1 : 0);
}

static int
cmp_event_order(const void *a, const void *b)
{
	const CapEvent *x = (const CapEvent *) a;
	const CapEvent *y = (const CapEvent *) b;
	const CapChange *cx = &sort_batch->changes[x->cand->change];
	const CapChange *cy = &sort_batch->changes[y->cand->change];

	if (cx->tord != cy->tord)
		return cx->tord < cy->tord ? -1 : 1;
	if (cx->rord != cy->rord)
		return cx->rord < cy->rord ? -1 : 1;
	if (x->cand->rule->priority != y->cand->rule->priority)
		return x->cand->rule->priority < y->cand->rule->priority ? -1 : 1;
	return x->cand->rule->id < y->cand->rule->id ? -1 :
		(x->cand->rule->id > y->cand->rule->id ? 1 : 0);
}

/* orders candidates by aggregate (type, id) */
static int
cmp_cand_agg(const void *a, const void *b)
{
	const CapCand *x = *(CapCand *const *) a;
	const CapCand *y = *(CapCand *const *) b;

	if (x->rule->atype_no != y->rule->atype_no)
		return x->rule->atype_no < y->rule->atype_no ? -1 : 1;
	return strcmp(x->agg, y->agg);
}

/* numbers the distinct aggregates of the candidates (one sort on text) */
static void
number_aggregates(CapBatch *b)
{
	CapCand   **byagg = palloc(sizeof(CapCand *) * Max(b->ncands, 1));
	int			no = 0;

	for (int i = 0; i < b->ncands; i++)
		byagg[i] = &b->cands[i];
	if (b->ncands > 1)
		qsort(byagg, b->ncands, sizeof(CapCand *), cmp_cand_agg);
	for (int i = 0; i < b->ncands; i++)
	{
		if (i > 0 && cmp_cand_agg(&byagg[i - 1], &byagg[i]) != 0)
			no++;
		byagg[i]->agg_no = no;
	}
	pfree(byagg);
}

/* one event per transaction, event type and aggregate, in event order */
static void
choose_events(CapBatch *b)
{
	MemoryContext old = MemoryContextSwitchTo(b->cxt);

	number_aggregates(b);
	sort_batch = b;
	if (b->ncands > 1)
		qsort(b->cands, b->ncands, sizeof(CapCand), cmp_dedup);
	b->events = palloc0(sizeof(CapEvent) * Max(b->ncands, 1));
	b->nevents = 0;
	for (int i = 0; i < b->ncands; i++)
	{
		CapCand    *c = &b->cands[i];
		CapCand    *p = i > 0 ? &b->cands[i - 1] : NULL;

		if (p != NULL &&
			b->changes[p->change].tord == b->changes[c->change].tord &&
			p->rule->etype_no == c->rule->etype_no &&
			p->agg_no == c->agg_no)
			continue;
		b->events[b->nevents++].cand = c;
	}
	if (b->nevents > 1)
		qsort(b->events, b->nevents, sizeof(CapEvent), cmp_event_order);
	for (int i = 0; i < b->nevents; i++)
		b->events[i].n = i + 1;
	MemoryContextSwitchTo(old);
}

/* ---------------------------------------------------------------- 4. payloads */

/* orders positions of the events array by aggregate id */
static CapEvent *sort_events;

static int
cmp_event_agg(const void *a, const void *b)
{
	int			x = sort_events[*(const int *) a].cand->agg_no;
	int			y = sort_events[*(const int *) b].cand->agg_no;

	return x < y ? -1 : (x > y ? 1 : 0);
}

/*
 * per rule, all its events with one call of odoo_sync._build_payloads
 *
 * A batch builder that takes no changes gives the same payload for the same
 * aggregate within one statement: it is asked once per distinct aggregate
 * (a product at a location changed in five transactions of the batch is
 * built once for its five events).
 */
static void
build_payloads_set(CapBatch *b)
{
	int		   *idx = palloc(sizeof(int) * Max(b->nevents, 1));
	int		   *sorted = palloc(sizeof(int) * Max(b->nevents, 1));
	int		   *first = palloc(sizeof(int) * (b->nevents + 1));	/* of each distinct */

	if (plan_payloads == NULL)
	{
		Oid			types[4] = {INT4OID, TEXTARRAYOID, b->change_array_type, BOOLOID};

		plan_payloads =
			keep_plan("SELECT p.ord, p.payload, p.correlation_id "
					  "FROM odoo_sync._build_payloads($1, $2, "
					  "CASE WHEN $4 THEN NULL ELSE ARRAY(SELECT odoo_sync._change_json(c) "
					  "FROM pg_catalog.unnest($3) AS c) END) AS p",
					  4, types);
	}

	for (int r = 0; r < b->nrules; r++)
	{
		CapRule    *rule = &b->rules[r];
		int			n = 0;
		int			nd = 0;
		bool		dedup = false;
		char	  **aggs;
		Datum	   *chs;
		Datum		args[4];

		/* the rule's events, in (tord, rord) order: event order is that */
		for (int i = 0; i < b->nevents; i++)
			if (b->events[i].cand->rule == rule)
				idx[n++] = i;
		if (n == 0)
			continue;
		aggs = palloc(sizeof(char *) * n);
		chs = palloc(sizeof(Datum) * n);

		if (n >= 8 && rule->without_changes)
		{
			/* distinct aggregates (at least 8: the batch form is used) */
			memcpy(sorted, idx, sizeof(int) * n);
			sort_events = b->events;
			qsort(sorted, n, sizeof(int), cmp_event_agg);
			for (int i = 0; i < n; i++)
				if (i == 0 || b->events[sorted[i]].cand->agg_no !=
					b->events[sorted[i - 1]].cand->agg_no)
					first[nd++] = i;
			first[nd] = n;
			dedup = (nd >= 8);
		}
		if (dedup)
		{
			for (int d = 0; d < nd; d++)
				aggs[d] = b->events[sorted[first[d]]].cand->agg;
		}
		else
		{
			for (int i = 0; i < n; i++)
			{
				aggs[i] = b->events[idx[i]].cand->agg;
				chs[i] = b->changes[b->events[idx[i]].cand->change].composite;
			}
		}
		args[0] = Int32GetDatum(rule->id);
		args[1] = text_array(aggs, dedup ? nd : n);
		/* a batch builder that takes no changes: do not build them */
		args[3] = BoolGetDatum(n >= 8 && rule->without_changes);
		args[2] = datum_array(chs, NULL, DatumGetBool(args[3]) ? 0 : n, b->change_type);
		run_plan(plan_payloads, args, NULL, false, SPI_OK_SELECT);
		{
			MemoryContext old = MemoryContextSwitchTo(b->cxt);

			for (uint64 i = 0; i < SPI_processed; i++)
			{
				HeapTuple	tup = SPI_tuptable->vals[i];
				TupleDesc	desc = SPI_tuptable->tupdesc;
				bool		isnull;
				int			ord = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
				Datum		payload;
				Jsonb	   *p;
				char	   *corr;

				if (isnull || ord < 1 || ord > (dedup ? nd : n))
					continue;
				payload = SPI_getbinval(tup, desc, 2, &isnull);
				if (isnull)
					continue;
				p = DatumGetJsonbPCopy(payload);
				corr = SPI_getvalue(tup, desc, 3);
				if (dedup)
				{
					for (int k = first[ord - 1]; k < first[ord]; k++)
					{
						b->events[sorted[k]].payload = p;
						b->events[sorted[k]].correlation = corr;
					}
				}
				else
				{
					b->events[idx[ord - 1]].payload = p;
					b->events[idx[ord - 1]].correlation = corr;
				}
			}
			MemoryContextSwitchTo(old);
		}
		SPI_freetuptable(SPI_tuptable);
	}
}

/* event by event through odoo_sync._build_one (safe: failures recorded) */
static void
build_payloads_each(CapBatch *b, bool safe)
{
	if (plan_build_one == NULL)
	{
		Oid			types[5] = {INT4OID, TEXTOID, TEXTOID, b->change_type, BOOLOID};

		plan_build_one =
			keep_plan("SELECT x -> 'p', x ->> 'c' FROM "
					  "odoo_sync._build_one($1, $2, $3, $4, $5) AS x", 5, types);
	}
	for (int i = 0; i < b->nevents; i++)
	{
		CapEvent   *e = &b->events[i];
		Datum		args[5];
		bool		isnull;
		Datum		payload;

		args[0] = Int32GetDatum(e->cand->rule->id);
		args[1] = CStringGetTextDatum(e->cand->rule->aggregate_type);
		args[2] = CStringGetTextDatum(e->cand->agg);
		args[3] = b->changes[e->cand->change].composite;
		args[4] = BoolGetDatum(safe);
		e->payload = NULL;
		e->correlation = NULL;
		run_plan(plan_build_one, args, NULL, false, SPI_OK_SELECT);
		if (SPI_processed != 1)
			continue;
		payload = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
		{
			MemoryContext old = MemoryContextSwitchTo(b->cxt);

			e->payload = DatumGetJsonbPCopy(payload);
			e->correlation = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
			MemoryContextSwitchTo(old);
		}
		SPI_freetuptable(SPI_tuptable);
	}
}

/*
 * The payloads: set-based for a batch of 16 events or more (below that,
 * planning the set-based queries costs more than it saves); when that
 * raises, again event by event in safe mode.
 */
static void
build_payloads(CapBatch *b)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool failed = false;

	if (b->nevents == 0)
		return;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		if (b->nevents >= 16)
			build_payloads_set(b);
		else
			build_payloads_each(b, false);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		failed = true;
	}
	PG_END_TRY();
	if (failed)
	{
		for (int i = 0; i < b->nevents; i++)
		{
			b->events[i].payload = NULL;
			b->events[i].correlation = NULL;
		}
		build_payloads_each(b, true);
	}
}

/* ---------------------------------------------------------------- 5. the log */

/*
 * insert_events_direct
 *		Appends n events to odoo_sync.event as COPY does: table_multi_insert()
 *		in chunks, index entries and the AFTER triggers (the delivery fan-out
 *		is per statement with a transition table: it runs once, with all the
 *		rows) through the executor's own routines, the identity from its
 *		sequence.  Returns false, having written nothing, when the table is
 *		not the one this is written for (another column, a BEFORE or INSTEAD
 *		row trigger, a rule): the caller then uses INSERT.
 *
 * The values arrays are per event; id and captured_at are made here.
 */
static bool
insert_events_direct(int n, char **types, char **atypes, char **aids, Datum *seqs,
					 char **lanes, char **corrs, Datum *lsns, bool *lsn_nulls,
					 Datum *times, Datum *rules, Datum *payloads, bool snapshot)
{
	Oid			nsp = get_namespace_oid(ODOO_SYNC_SCHEMA, false);
	Oid			relid = get_relname_relid("event", nsp);
	Relation	rel;
	TupleDesc	desc;
	AttrNumber	att[EV_NCOLS];
	int			live = 0;
	Oid			seqid;
	BulkInsert *bulk;
	Datum		source;
	Datum		db_snapshot = BoolGetDatum(snapshot);
	int			gucnest;

	if (!OidIsValid(relid))
		return false;
	rel = table_open(relid, RowExclusiveLock);
	desc = RelationGetDescr(rel);
	for (int i = 0; i < desc->natts; i++)
		if (!TupleDescAttr(desc, i)->attisdropped)
			live++;
	for (int c = 0; c < EV_NCOLS; c++)
		att[c] = attnameAttNum(rel, ev_columns[c], false);
	for (int c = 0; c < EV_NCOLS; c++)
		if (att[c] == InvalidAttrNumber)
			live = -1;
	if (live != EV_NCOLS || rel->rd_rel->relkind != RELKIND_RELATION ||
		rel->rd_rules != NULL ||
		(rel->trigdesc != NULL &&
		 (rel->trigdesc->trig_insert_before_row ||
		  rel->trigdesc->trig_insert_instead_row)))
	{
		table_close(rel, NoLock);
		return false;
	}
	seqid = getIdentitySequence(relid, att[EV_SEQ], true);
	if (!OidIsValid(seqid))
	{
		table_close(rel, NoLock);
		return false;
	}

	/*
	 * The fan-out trigger's transition table holds the whole batch (~0.5 kB
	 * per event): let it stay in memory rather than spill to a temporary
	 * file (work_mem is back to its value at the end of the insert).
	 */
	gucnest = NewGUCNestLevel();
	if (work_mem < 64 * 1024)
		(void) set_config_option("work_mem", "65536", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);

	bulk = bulk_insert_begin(rel, Min(n, EVENT_INSERT_CHUNK), true);
	source = CStringGetTextDatum(get_database_name(MyDatabaseId));

	for (int k = 0; k < n; k++)
	{
		TupleTableSlot *slot = bulk_insert_slot(bulk);
		Datum	   *v = slot->tts_values;
		bool	   *nl = slot->tts_isnull;

#define SET(col, val) (v[att[col] - 1] = (val), nl[att[col] - 1] = false)
		SET(EV_ID, UUIDPGetDatum(odoo_sync_make_event_id()));
		SET(EV_SEQ, Int64GetDatum(nextval_internal(seqid, false)));
		SET(EV_TYPE, CStringGetTextDatum(types[k]));
		SET(EV_SOURCE, source);
		SET(EV_AGGREGATE_TYPE, CStringGetTextDatum(atypes[k]));
		SET(EV_AGGREGATE_ID, CStringGetTextDatum(aids[k]));
		SET(EV_AGGREGATE_SEQ, seqs[k]);
		SET(EV_LANE, CStringGetTextDatum(lanes[k]));
		if (corrs[k] != NULL)
			SET(EV_CORRELATION_ID, CStringGetTextDatum(corrs[k]));
		SET(EV_SNAPSHOT, db_snapshot);
		if (!lsn_nulls[k])
			SET(EV_COMMIT_LSN, lsns[k]);
		SET(EV_COMMIT_TIME, times[k]);
		SET(EV_CAPTURED_AT, TimestampTzGetDatum(GetCurrentTimestamp()));
		SET(EV_RULE_ID, rules[k]);
		SET(EV_PAYLOAD, payloads[k]);
#undef SET
		ExecStoreVirtualTuple(slot);
	}

	bulk_insert_end(bulk);
	AtEOXact_GUC(true, gucnest);
	table_close(rel, NoLock);
	return true;
}

static int
cmp_aggregate(const void *a, const void *b)
{
	const CapEvent *x = *(CapEvent *const *) a;
	const CapEvent *y = *(CapEvent *const *) b;

	if (x->cand->agg_no != y->cand->agg_no)
		return x->cand->agg_no < y->cand->agg_no ? -1 : 1;
	return x->n < y->n ? -1 : (x->n > y->n ? 1 : 0);
}

/* numbers the events within their aggregates and appends them */
static int
append_events(CapBatch *b)
{
	CapEvent  **ev;
	int			n = 0;
	int			ngroups = 0;
	int		   *gstart;
	char	  **gtypes;
	char	  **gids;
	Datum	   *gcounts;
	Datum		args[12];

	ev = palloc(sizeof(CapEvent *) * Max(b->nevents, 1));
	for (int i = 0; i < b->nevents; i++)
		if (b->events[i].payload != NULL)
			ev[n++] = &b->events[i];
	if (n == 0)
		return 0;

	/* per aggregate: how many, then one upsert of the last numbers */
	qsort(ev, n, sizeof(CapEvent *), cmp_aggregate);
	gstart = palloc(sizeof(int) * (n + 1));
	for (int i = 0; i < n; i++)
		if (i == 0 || ev[i]->cand->agg_no != ev[i - 1]->cand->agg_no)
			gstart[ngroups++] = i;
	gstart[ngroups] = n;
	gtypes = palloc(sizeof(char *) * ngroups);
	gids = palloc(sizeof(char *) * ngroups);
	gcounts = palloc(sizeof(Datum) * ngroups);
	for (int g = 0; g < ngroups; g++)
	{
		gtypes[g] = ev[gstart[g]]->cand->rule->aggregate_type;
		gids[g] = ev[gstart[g]]->cand->agg;
		gcounts[g] = Int64GetDatum(gstart[g + 1] - gstart[g]);
	}
	if (plan_seq == NULL)
	{
		Oid			types[3] = {TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID};

		/* (RETURNING gives the rows in the order of the input) */
		plan_seq = keep_plan("INSERT INTO odoo_sync._aggregate_seq AS a "
							 "(aggregate_type, aggregate_id, last_seq) "
							 "SELECT u.t, u.i, u.c FROM (SELECT pg_catalog.unnest($1) AS t, "
							 "pg_catalog.unnest($2) AS i, pg_catalog.unnest($3) AS c) AS u "
							 "ON CONFLICT (aggregate_type, aggregate_id) "
							 "DO UPDATE SET last_seq = a.last_seq + EXCLUDED.last_seq "
							 "RETURNING a.aggregate_type, a.aggregate_id, a.last_seq",
							 3, types);
	}
	args[0] = text_array(gtypes, ngroups);
	args[1] = text_array(gids, ngroups);
	args[2] = datum_array(gcounts, NULL, ngroups, INT8OID);
	run_plan(plan_seq, args, NULL, false, SPI_OK_INSERT_RETURNING);
	if (SPI_processed != (uint64) ngroups)
		elog(ERROR, "odoo_sync capture: aggregate numbering returned " UINT64_FORMAT
			 " rows for %d aggregates", SPI_processed, ngroups);
	for (int g = 0; g < ngroups; g++)
	{
		HeapTuple	tup = SPI_tuptable->vals[g];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		char	   *t = SPI_getvalue(tup, desc, 1);
		char	   *id = SPI_getvalue(tup, desc, 2);
		int64		last = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		int			cnt = gstart[g + 1] - gstart[g];

		if (strcmp(t, gtypes[g]) != 0 || strcmp(id, gids[g]) != 0)
			elog(ERROR, "odoo_sync capture: aggregate numbering returned rows out of order");
		for (int i = 0; i < cnt; i++)
			ev[gstart[g] + i]->aggregate_seq = last - cnt + 1 + i;
	}
	SPI_freetuptable(SPI_tuptable);

	/* the events, in event order */
	{
		char	  **types = palloc(sizeof(char *) * n);
		char	  **atypes = palloc(sizeof(char *) * n);
		char	  **aids = palloc(sizeof(char *) * n);
		Datum	   *seqs = palloc(sizeof(Datum) * n);
		char	  **lanes = palloc(sizeof(char *) * n);
		char	  **corrs = palloc(sizeof(char *) * n);
		Datum	   *lsns = palloc(sizeof(Datum) * n);
		bool	   *lsn_nulls = palloc(sizeof(bool) * n);
		Datum	   *times = palloc(sizeof(Datum) * n);
		Datum	   *rules = palloc(sizeof(Datum) * n);
		Datum	   *payloads = palloc(sizeof(Datum) * n);
		TimestampTz now = GetCurrentTransactionStartTimestamp();
		int			k = 0;

		for (int i = 0; i < b->nevents; i++)
		{
			CapEvent   *e = &b->events[i];
			CapChange  *c;
			CapTxn	   *t;

			if (e->payload == NULL)
				continue;
			c = &b->changes[e->cand->change];
			t = &b->txns[c->tord - 1];
			types[k] = e->cand->rule->event_type;
			atypes[k] = e->cand->rule->aggregate_type;
			aids[k] = e->cand->agg;
			seqs[k] = Int64GetDatum(e->aggregate_seq);
			lanes[k] = e->cand->rule->lane;
			corrs[k] = e->correlation;
			lsn_nulls[k] = !t->has_lsn;
			lsns[k] = t->has_lsn ? LSNGetDatum(t->lsn) : (Datum) 0;
			times[k] = TimestampTzGetDatum(t->has_time ? t->time : now);
			rules[k] = Int32GetDatum(e->cand->rule->id);
			payloads[k] = JsonbPGetDatum(e->payload);
			k++;
		}
		if (insert_events_direct(n, types, atypes, aids, seqs, lanes, corrs, lsns,
								 lsn_nulls, times, rules, payloads, b->snapshot))
		{
			odoo_sync_wake_at_commit(OSW_DELIVER);
			return n;
		}

		/*
		 * (unnest in the select list: the arrays are walked in step, where
		 * ROWS FROM would first copy each into a tuplestore)
		 */
		if (plan_insert == NULL)
		{
			Oid			atypes_[12] = {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID,
				TEXTARRAYOID, TEXTARRAYOID, BOOLOID, get_array_type(LSNOID),
				get_array_type(TIMESTAMPTZOID), INT4ARRAYOID, get_array_type(JSONBOID), TEXTOID};

			plan_insert =
				keep_plan("INSERT INTO odoo_sync.event "
						  "(id, type, source, aggregate_type, aggregate_id, aggregate_seq, lane, "
						  "correlation_id, snapshot, commit_lsn, commit_time, rule_id, payload) "
						  "SELECT odoo_sync._event_id(), u.type, $12, "
						  "u.atype, u.aid, u.seq, u.lane, u.corr, $7, u.lsn, u.ctime, u.rule, u.payload "
						  "FROM (SELECT pg_catalog.unnest($1) AS type, pg_catalog.unnest($2) AS atype, "
						  "pg_catalog.unnest($3) AS aid, pg_catalog.unnest($4) AS seq, "
						  "pg_catalog.unnest($5) AS lane, pg_catalog.unnest($6) AS corr, "
						  "pg_catalog.unnest($8) AS lsn, pg_catalog.unnest($9) AS ctime, "
						  "pg_catalog.unnest($10) AS rule, pg_catalog.unnest($11) AS payload) AS u",
						  12, atypes_);
		}
		args[0] = text_array(types, n);
		args[1] = text_array(atypes, n);
		args[2] = text_array(aids, n);
		args[3] = datum_array(seqs, NULL, n, INT8OID);
		args[4] = text_array(lanes, n);
		args[5] = text_array(corrs, n);
		args[6] = BoolGetDatum(b->snapshot);
		args[7] = datum_array(lsns, lsn_nulls, n, LSNOID);
		args[8] = datum_array(times, NULL, n, TIMESTAMPTZOID);
		args[9] = datum_array(rules, NULL, n, INT4OID);
		args[10] = datum_array(payloads, NULL, n, JSONBOID);
		/* the source: this database */
		args[11] = CStringGetTextDatum(get_database_name(MyDatabaseId));
		run_plan(plan_insert, args, NULL, false, SPI_OK_INSERT);
		if (SPI_processed != (uint64) n)
			elog(ERROR, "odoo_sync capture: " UINT64_FORMAT " events appended of %d",
				 SPI_processed, n);
	}
	odoo_sync_wake_at_commit(OSW_DELIVER);
	return n;
}

/* ---------------------------------------------------------------- 6. shadow */

/* the last values of every row of a table that keeps a shadow */
static void
write_shadow(CapBatch *b)
{
	int		   *order = palloc(sizeof(int) * Max(b->nchanges, 1));
	int			n = 0;
	char	  **dt = palloc(sizeof(char *) * Max(b->nchanges, 1));
	char	  **dk = palloc(sizeof(char *) * Max(b->nchanges, 1));
	char	  **pt = palloc(sizeof(char *) * Max(b->nchanges, 1));
	char	  **pk = palloc(sizeof(char *) * Max(b->nchanges, 1));
	Datum	   *pv = palloc(sizeof(Datum) * Max(b->nchanges, 1));
	int			nd = 0,
				np = 0;
	Datum		args[5];

	/* (key_order: by table, key, tord, rord) */
	for (int i = 0; i < b->nchanges; i++)
	{
		CapChange  *c = &b->changes[b->key_order[i]];

		if (b->tables[c->table].need_shadow && c->key != NULL)
			order[n++] = b->key_order[i];
	}
	if (n == 0)
		return;
	for (int i = 0; i < n; i++)
	{
		CapChange  *c = &b->changes[order[i]];
		CapChange  *next = i + 1 < n ? &b->changes[order[i + 1]] : NULL;

		/* the last change of each row */
		if (next != NULL && next->table == c->table && strcmp(next->key, c->key) == 0)
			continue;
		if (c->action == 'D')
		{
			dt[nd] = b->tables[c->table].name;
			dk[nd++] = c->key;
		}
		else
		{
			pt[np] = b->tables[c->table].name;
			pk[np] = c->key;
			pv[np++] = JsonbPGetDatum(c->new);
		}
	}
	if (plan_shadow_put == NULL)
	{
		Oid			types[5] = {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
		get_array_type(JSONBOID)};

		plan_shadow_put =
			keep_plan("WITH del AS (DELETE FROM odoo_sync.shadow s "
					  "USING ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS d(t, k) "
					  "WHERE s.table_name = d.t AND s.key = d.k) "
					  "INSERT INTO odoo_sync.shadow AS s (table_name, key, vals) "
					  "SELECT u.t, u.k, u.v FROM (SELECT pg_catalog.unnest($3) AS t, "
					  "pg_catalog.unnest($4) AS k, pg_catalog.unnest($5) AS v) AS u "
					  "ON CONFLICT (table_name, key) DO UPDATE SET vals = EXCLUDED.vals",
					  5, types);
	}
	args[0] = text_array(dt, nd);
	args[1] = text_array(dk, nd);
	args[2] = text_array(pt, np);
	args[3] = text_array(pk, np);
	args[4] = datum_array(pv, NULL, np, JSONBOID);
	run_plan(plan_shadow_put, args, NULL, false, SPI_OK_INSERT);
}

/* ---------------------------------------------------------------- entry */

/*
 * odoo_sync_capture_batch
 *		odoo_sync._capture_batch(batch jsonb, snapshot boolean): the events
 *		of decoded transactions; returns how many were appended.
 */
Datum
odoo_sync_capture_batch(PG_FUNCTION_ARGS)
{
	Jsonb	   *batch = PG_GETARG_JSONB_P(0);
	CapBatch	b;
	Oid			nsp;
	int			nevents = 0;

	memset(&b, 0, sizeof(b));
	b.snapshot = PG_ARGISNULL(1) ? false : PG_GETARG_BOOL(1);
	b.cxt = AllocSetContextCreate(CurrentMemoryContext, "odoo_sync capture batch",
								  ALLOCSET_DEFAULT_SIZES);

	nsp = get_namespace_oid(ODOO_SYNC_SCHEMA, false);
	b.change_type = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
									CStringGetDatum("_change"), ObjectIdGetDatum(nsp));
	if (!OidIsValid(b.change_type))
		elog(ERROR, "odoo_sync capture: type odoo_sync._change does not exist");
	b.change_array_type = get_array_type(b.change_type);
	{
		MemoryContext old = MemoryContextSwitchTo(b.cxt);

		b.change_desc = lookup_rowtype_tupdesc_copy(b.change_type, -1);
		MemoryContextSwitchTo(old);
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "odoo_sync capture: SPI_connect failed");
	if (plans_change_type != b.change_type)
	{
		forget_plans();
		plans_change_type = b.change_type;
	}

	load_rules(&b);
	parse_batch(&b, batch);
	if (b.nchanges > 0)
	{
		compute_old_new(&b);
		make_composites(&b);
		evaluate_rules(&b);
		choose_events(&b);
		build_payloads(&b);
		nevents = append_events(&b);
		write_shadow(&b);
	}
	SPI_finish();
	MemoryContextDelete(b.cxt);
	PG_RETURN_INT32(nevents);
}
