/*-------------------------------------------------------------------------
 *
 * decode.c
 *	  The odoo_sync logical decoding output plugin.
 *
 * Emits, for each committed transaction, one JSON object per message written
 * (format-version 1, documented in docs/output-plugin.md):
 *
 *	B	begin: xid, commit LSN, commit time, replication origin
 *	I/U/D	one coalesced change per row of a watched table
 *	T	TRUNCATE of a watched table
 *	M	a pg_logical_emit_message() with prefix "odoo_sync"
 *	C	commit: number of rows emitted
 *
 * Odoo inserts computed columns as NULL and then updates the same row several
 * times in one transaction.  The plugin therefore buffers the rows of a
 * transaction, keyed by (relation, primary key), and emits each row once at
 * commit as seen from outside the transaction: insert then updates is an
 * insert with the final values, updates are one update, insert then delete
 * is nothing.  It never claims a before-image it did not see: "old" is only
 * emitted for REPLICA IDENTITY FULL tables.  When the buffered rows of one
 * transaction pass coalesce-memory, what is buffered is emitted and the rest
 * of that transaction streams through uncoalesced (documented).
 *
 * Filtering happens before any formatting work: a per-relation cache
 * (RelInfo, invalidated by relcache callbacks) says whether a relation is
 * watched, which columns are emitted, its key columns and how to format each
 * column.  The extension's own schema is never emitted.
 *
 * Memory: "context" is reset after every change; "txn_context" holds the
 * buffered rows of the current transaction and is reset at commit; the
 * relation cache lives in "cache_context" for the life of the decoding
 * context.  Unchanged TOAST values (on-disk pointers left in the new tuple)
 * are reported as absent ("unchanged-toast"), never as null, unless an
 * earlier change of the same row in the transaction supplied the value.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/detoast.h"
#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/bitmapset.h"
#include "replication/logical.h"
#include "replication/origin.h"
#include "replication/output_plugin.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/float.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "odoo_sync.h"

#define ODOO_SYNC_FORMAT_VERSION 1

/* Tables emitted when the consumer does not name any (add-tables). */
static const char *const default_tables =
"public.stock_picking,public.stock_move,public.stock_move_line,"
"public.stock_quant,public.stock_picking_type,public.stock_location,"
"public.sale_order,public.sale_order_line,"
"public.account_move,public.account_move_line,"
"public.res_partner,public.product_product,public.product_template,"
"public.delivery_carrier";

/*
 * Never emitted unless exclude-tables says otherwise: Odoo's chatty tables
 * and the wizard (transient) tables its flows write.
 */
static const char *const default_excluded =
"public.bus_bus,public.mail_*,public.ir_cron,public.ir_cron_trigger,"
"public.res_users_log,public.ir_attachment,public.ir_property,"
"public.choose_delivery_*,public.sale_advance_payment_inv*,"
"public.account_payment_register*,public.stock_backorder_confirmation*,"
"public.stock_immediate_transfer*,public.*_wizard*";

typedef enum ColKind
{
	COL_OTHER,					/* text output, quoted */
	COL_TEXT,					/* text-like varlena, quoted */
	COL_INT,					/* int2, int4, int8 */
	COL_FLOAT,					/* float4, float8 */
	COL_NUMERIC,
	COL_BOOL,
	COL_JSON,
	COL_JSONB,
	COL_TIMESTAMP,
	COL_TIMESTAMPTZ,
	COL_DATE
} ColKind;

typedef struct ColInfo
{
	char	   *json_key;		/* "name": */
	char	   *name;
	ColKind		kind;
	Oid			typid;
	Oid			basetypid;		/* typid, or the base type of a domain */
	bool		emit;			/* selected (or a key column) */
	bool		is_key;
	bool		varlena;
	FmgrInfo	out;
} ColInfo;

typedef struct RelInfo
{
	Oid			relid;
	bool		valid;
	bool		watched;
	char	   *header;			/* ,"schema":"...","table":"..." */
	TupleDesc	desc;
	int			natts;
	TupleDesc	emit_desc;		/* desc cut after the last emitted column */
	ColInfo    *cols;
	int			nkeys;
	AttrNumber *keys;			/* 0-based attribute numbers */
	bool		int_key;		/* one integer key column: fast path */
	bool		ri_full;
	struct RelInfo *retired_next;
} RelInfo;

typedef struct RelCacheEntry
{
	Oid			relid;			/* hash key */
	RelInfo    *info;
} RelCacheEntry;

/* A table pattern from add-tables, exclude-tables or columns. */
typedef struct TablePattern
{
	char	   *schema;
	char	   *table;
	List	   *columns;		/* only for the columns option */
} TablePattern;

typedef enum ItemKind
{
	ITEM_ROW,
	ITEM_MESSAGE,
	ITEM_TRUNCATE
} ItemKind;

typedef struct RowKey
{
	Oid			relid;
	int64		ival;
	uint32		len;			/* 0 for integer keys */
	char	   *data;
} RowKey;

typedef struct DecodeItem
{
	RowKey		key;			/* must be first: the hash key */
	ItemKind	kind;
	char		op;				/* 'I', 'U', 'D', or 0 when cancelled out */
	bool		hashed;
	RelInfo    *rel;
	HeapTuple	newtup;
	HeapTuple	oldtup;
	bits8	   *absent;			/* unchanged-TOAST columns of newtup */
	char	   *content;		/* message content */
	Size		content_len;
} DecodeItem;

typedef struct DecodeData
{
	MemoryContext context;
	MemoryContext txn_context;
	MemoryContext cache_context;

	/* options */
	bool		include_xids;
	bool		include_timestamp;
	bool		include_lsn;
	bool		include_origin;
	bool		coalesce;
	bool		messages;
	int			coalesce_memory_kb;
	List	   *add_tables;
	List	   *exclude_tables;
	List	   *column_lists;
	bool		skip_all_origins;
	List	   *skip_origins;	/* names, trailing '*' = prefix */

	/* per-transaction state */
	HTAB	   *rows;
	DecodeItem	  **items;
	int			nitems;
	int			maxitems;
	bool		begun;			/* B already written (overflow mode) */
	bool		overflow;
	int64		nemitted;

	/* origin id → skip? / name, cached */
	HTAB	   *origins;

	/* scratch arrays for deforming */
	Datum	   *values;
	bool	   *nulls;
	Datum	   *values2;
	bool	   *nulls2;
	int			maxatts;
} DecodeData;

typedef struct OriginCacheEntry
{
	RepOriginId id;
	bool		skip;
	char	   *name;
} OriginCacheEntry;

/* The relation cache outlives decoding contexts only through these. */
static HTAB *relcache = NULL;
static MemoryContext relcache_context = NULL;
static RelInfo *retired = NULL;
static bool relcache_callback_registered = false;

extern PGDLLEXPORT void _PG_output_plugin_init(OutputPluginCallbacks *cb);

static void decode_startup(LogicalDecodingContext *ctx,
						   OutputPluginOptions *opt, bool is_init);
static void decode_shutdown(LogicalDecodingContext *ctx);
static void decode_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn);
static void decode_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
						  XLogRecPtr commit_lsn);
static void decode_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
						  Relation relation, ReorderBufferChange *change);
static void decode_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
							int nrelations, Relation relations[],
							ReorderBufferChange *change);
static void decode_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
						   XLogRecPtr message_lsn, bool transactional,
						   const char *prefix, Size message_size,
						   const char *message);
static bool decode_filter_origin(LogicalDecodingContext *ctx,
								 RepOriginId origin_id);
static void relcache_forget(void *arg);

void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	AssertVariableIsOfType(&_PG_output_plugin_init, LogicalOutputPluginInit);

	cb->startup_cb = decode_startup;
	cb->begin_cb = decode_begin;
	cb->change_cb = decode_change;
	cb->truncate_cb = decode_truncate;
	cb->commit_cb = decode_commit;
	cb->message_cb = decode_message;
	cb->filter_by_origin_cb = decode_filter_origin;
	cb->shutdown_cb = decode_shutdown;
}

/* ---------------------------------------------------------------- options */

static bool
option_bool(DefElem *elem)
{
	bool		result;

	if (elem->arg == NULL)
		return true;			/* a bare option name means true */
	if (!parse_bool(strVal(elem->arg), &result))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"%s\" of the odoo_sync output plugin requires a boolean value",
						elem->defname),
				 errdetail("The value given was \"%s\".", strVal(elem->arg))));
	return result;
}

static char *
option_string(DefElem *elem)
{
	if (elem->arg == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"%s\" of the odoo_sync output plugin requires a value",
						elem->defname)));
	return strVal(elem->arg);
}

static char *
trim(char *s)
{
	char	   *end;

	while (*s == ' ' || *s == '\t' || *s == '\n')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n'))
		*--end = '\0';
	return s;
}

/*
 * Parses "schema.table" (schema defaults to public) into a TablePattern;
 * '*' is a wildcard in either part.
 */
static TablePattern *
parse_table_pattern(const char *option, char *text)
{
	TablePattern *p = palloc0(sizeof(TablePattern));
	char	   *dot;

	text = trim(text);
	if (*text == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"%s\" of the odoo_sync output plugin has an empty table name",
						option)));
	dot = strchr(text, '.');
	if (dot == NULL)
	{
		p->schema = pstrdup("public");
		p->table = pstrdup(text);
	}
	else
	{
		*dot = '\0';
		p->schema = pstrdup(trim(text));
		p->table = pstrdup(trim(dot + 1));
		if (*p->schema == '\0' || *p->table == '\0' || strchr(p->table, '.'))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"%s\" of the odoo_sync output plugin has a malformed table name",
							option),
					 errdetail("Table names are written schema.table, with * as a wildcard.")));
	}
	return p;
}

static List *
parse_table_list(const char *option, const char *value)
{
	List	   *result = NIL;
	char	   *copy = pstrdup(value);
	char	   *tok;
	char	   *save;

	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
	{
		if (*trim(tok) == '\0')
			continue;
		result = lappend(result, parse_table_pattern(option, tok));
	}
	return result;
}

/*
 * Parses the columns option: "public.t1(a,b),t2(c)".
 */
static List *
parse_column_lists(const char *value)
{
	List	   *result = NIL;
	const char *p = value;

	while (*p)
	{
		const char *open,
				   *close;
		TablePattern *tp;
		char	   *cols;
		char	   *tok;
		char	   *save;

		while (*p == ' ' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		open = strchr(p, '(');
		close = open ? strchr(open, ')') : NULL;
		if (open == NULL || close == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"columns\" of the odoo_sync output plugin is malformed near \"%s\"", p),
					 errdetail("Write it as schema.table(column, ...), schema.table(column, ...).")));
		tp = parse_table_pattern("columns", pnstrdup(p, open - p));
		cols = pnstrdup(open + 1, close - open - 1);
		for (tok = strtok_r(cols, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		{
			tok = trim(tok);
			if (*tok == '\0')
				continue;
			tp->columns = lappend(tp->columns, pstrdup(tok));
		}
		if (tp->columns == NIL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"columns\" of the odoo_sync output plugin names no column for table \"%s.%s\"",
							tp->schema, tp->table)));
		result = lappend(result, tp);
		p = close + 1;
	}
	return result;
}

static void
parse_options(DecodeData *data, List *options)
{
	ListCell   *lc;
	bool		tables_given = false;
	bool		excluded_given = false;

	foreach(lc, options)
	{
		DefElem    *elem = lfirst(lc);

		if (strcmp(elem->defname, "format-version") == 0)
		{
			char	   *v = option_string(elem);

			if (strcmp(v, "1") != 0)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("format-version \"%s\" is not supported by the odoo_sync output plugin", v),
						 errdetail("This version of odoo_sync writes format-version %d.",
								   ODOO_SYNC_FORMAT_VERSION)));
		}
		else if (strcmp(elem->defname, "include-xids") == 0)
			data->include_xids = option_bool(elem);
		else if (strcmp(elem->defname, "include-timestamp") == 0)
			data->include_timestamp = option_bool(elem);
		else if (strcmp(elem->defname, "include-lsn") == 0)
			data->include_lsn = option_bool(elem);
		else if (strcmp(elem->defname, "include-origin") == 0)
			data->include_origin = option_bool(elem);
		else if (strcmp(elem->defname, "coalesce") == 0)
			data->coalesce = option_bool(elem);
		else if (strcmp(elem->defname, "messages") == 0)
			data->messages = option_bool(elem);
		else if (strcmp(elem->defname, "coalesce-memory") == 0)
		{
			char	   *v = option_string(elem);
			int32		kb = 0;
			char	   *end;
			long		l = strtol(v, &end, 10);

			if (*end != '\0' || end == v || l < 64 || l > INT_MAX / 2)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("option \"coalesce-memory\" of the odoo_sync output plugin must be a number of kilobytes of at least 64"),
						 errdetail("The value given was \"%s\".", v)));
			kb = (int32) l;
			data->coalesce_memory_kb = kb;
		}
		else if (strcmp(elem->defname, "add-tables") == 0)
		{
			data->add_tables = parse_table_list(elem->defname, option_string(elem));
			tables_given = true;
		}
		else if (strcmp(elem->defname, "exclude-tables") == 0)
		{
			data->exclude_tables = parse_table_list(elem->defname, option_string(elem));
			excluded_given = true;
		}
		else if (strcmp(elem->defname, "columns") == 0)
			data->column_lists = parse_column_lists(option_string(elem));
		else if (strcmp(elem->defname, "skip-origins") == 0)
		{
			char	   *copy = pstrdup(option_string(elem));
			char	   *tok;
			char	   *save;

			for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
			{
				tok = trim(tok);
				if (*tok == '\0')
					continue;
				if (strcmp(tok, "*") == 0)
					data->skip_all_origins = true;
				else
					data->skip_origins = lappend(data->skip_origins, pstrdup(tok));
			}
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"%s\" is unknown to the odoo_sync output plugin",
							elem->defname),
					 errhint("Known options: format-version, add-tables, exclude-tables, columns, "
							 "skip-origins, coalesce, coalesce-memory, messages, include-xids, "
							 "include-timestamp, include-lsn, include-origin.")));
	}
	if (!tables_given)
		data->add_tables = parse_table_list("add-tables", default_tables);
	if (!excluded_given)
		data->exclude_tables = parse_table_list("exclude-tables", default_excluded);
}

/* ---------------------------------------------------------------- relation cache */

static bool
glob_match(const char *pattern, const char *s)
{
	if (*pattern == '\0')
		return *s == '\0';
	if (*pattern == '*')
	{
		for (;;)
		{
			if (glob_match(pattern + 1, s))
				return true;
			if (*s == '\0')
				return false;
			s++;
		}
	}
	return *pattern == *s && glob_match(pattern + 1, s + 1);
}

static TablePattern *
find_pattern(List *patterns, const char *schema, const char *table)
{
	ListCell   *lc;

	foreach(lc, patterns)
	{
		TablePattern *p = lfirst(lc);

		if (glob_match(p->schema, schema) && glob_match(p->table, table))
			return p;
	}
	return NULL;
}

static void
relcache_invalidate(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	RelCacheEntry *entry;

	if (relcache == NULL)
		return;
	if (OidIsValid(relid))
	{
		entry = hash_search(relcache, &relid, HASH_FIND, NULL);
		if (entry != NULL && entry->info != NULL)
			entry->info->valid = false;
		return;
	}
	hash_seq_init(&status, relcache);
	while ((entry = hash_seq_search(&status)) != NULL)
		if (entry->info != NULL)
			entry->info->valid = false;
}

static ColKind
column_kind(Oid basetypid)
{
	switch (basetypid)
	{
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case OIDOID:
			return COL_INT;
		case FLOAT4OID:
		case FLOAT8OID:
			return COL_FLOAT;
		case NUMERICOID:
			return COL_NUMERIC;
		case BOOLOID:
			return COL_BOOL;
		case JSONOID:
			return COL_JSON;
		case JSONBOID:
			return COL_JSONB;
		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:
			return COL_TEXT;
		case TIMESTAMPOID:
			return COL_TIMESTAMP;
		case TIMESTAMPTZOID:
			return COL_TIMESTAMPTZ;
		case DATEOID:
			return COL_DATE;
		default:
			return COL_OTHER;
	}
}

/*
 * Builds the cache entry of a relation: watched or not, and for watched
 * ones how to format them.  Runs inside the decoding transaction.
 */
static RelInfo *
build_relinfo(DecodeData *data, Relation relation)
{
	MemoryContext old = MemoryContextSwitchTo(relcache_context);
	RelInfo    *info = palloc0(sizeof(RelInfo));
	char	   *schema = get_namespace_name(RelationGetNamespace(relation));
	char	   *table = RelationGetRelationName(relation);
	TablePattern *columns = NULL;
	Bitmapset  *keyattrs;
	StringInfoData buf;

	info->relid = RelationGetRelid(relation);
	info->valid = true;
	info->watched = schema != NULL &&
		strcmp(schema, ODOO_SYNC_SCHEMA) != 0 &&
		find_pattern(data->add_tables, schema, table) != NULL &&
		find_pattern(data->exclude_tables, schema, table) == NULL;
	if (!info->watched)
	{
		MemoryContextSwitchTo(old);
		return info;
	}

	initStringInfo(&buf);
	appendStringInfoString(&buf, ",\"schema\":");
	escape_json(&buf, schema);
	appendStringInfoString(&buf, ",\"table\":");
	escape_json(&buf, table);
	info->header = pstrdup(buf.data);

	info->desc = CreateTupleDescCopy(RelationGetDescr(relation));
	info->natts = info->desc->natts;
	info->cols = palloc0(sizeof(ColInfo) * Max(info->natts, 1));
	info->ri_full = relation->rd_rel->relreplident == REPLICA_IDENTITY_FULL;

	/*
	 * The coalescing key: the primary key for REPLICA IDENTITY FULL tables
	 * (their old tuples hold every column), otherwise the replica identity,
	 * which is what UPDATE and DELETE records carry.
	 */
	keyattrs = RelationGetIndexAttrBitmap(relation,
										  info->ri_full ? INDEX_ATTR_BITMAP_PRIMARY_KEY :
										  INDEX_ATTR_BITMAP_IDENTITY_KEY);
	info->keys = palloc(sizeof(AttrNumber) * Max(info->natts, 1));

	columns = find_pattern(data->column_lists, schema, table);
	if (columns != NULL)
	{
		ListCell   *lc;

		foreach(lc, columns->columns)
		{
			char	   *name = lfirst(lc);
			bool		found = false;

			for (int i = 0; i < info->natts; i++)
			{
				Form_pg_attribute att = TupleDescAttr(info->desc, i);

				if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
					found = true;
			}
			if (!found)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("column \"%s\" of relation \"%s.%s\" named in option \"columns\" does not exist",
								name, schema, table)));
		}
	}

	for (int i = 0; i < info->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(info->desc, i);
		ColInfo    *col = &info->cols[i];
		Oid			outfunc;

		if (att->attisdropped)
			continue;
		col->name = pstrdup(NameStr(att->attname));
		col->is_key = bms_is_member(att->attnum - FirstLowInvalidHeapAttributeNumber,
									keyattrs);
		if (col->is_key)
			info->keys[info->nkeys++] = i;
		if (columns == NULL)
			col->emit = true;
		else
		{
			ListCell   *lc;

			col->emit = col->is_key;
			foreach(lc, columns->columns)
				if (strcmp((char *) lfirst(lc), col->name) == 0)
					col->emit = true;
		}
		resetStringInfo(&buf);
		escape_json(&buf, col->name);
		appendStringInfoChar(&buf, ':');
		col->json_key = pstrdup(buf.data);
		col->typid = att->atttypid;
		col->basetypid = getBaseType(att->atttypid);
		col->kind = column_kind(col->basetypid);
		getTypeOutputInfo(att->atttypid, &outfunc, &col->varlena);
		fmgr_info_cxt(outfunc, &col->out, relcache_context);
	}
	/*
	 * Formatting deforms a tuple only up to its last emitted column: with a
	 * column list, the long tail of an Odoo table is never touched.
	 */
	info->emit_desc = CreateTupleDescCopy(info->desc);
	info->emit_desc->natts = 0;
	for (int i = 0; i < info->natts; i++)
		if (info->cols[i].name != NULL && info->cols[i].emit)
			info->emit_desc->natts = i + 1;

	info->int_key = info->nkeys == 1 &&
		info->cols[info->keys[0]].kind == COL_INT &&
		TupleDescAttr(info->desc, info->keys[0])->attbyval;

	if (info->natts > data->maxatts)
	{
		MemoryContextSwitchTo(data->cache_context);
		data->maxatts = info->natts;
		data->values = repalloc(data->values, sizeof(Datum) * data->maxatts);
		data->nulls = repalloc(data->nulls, sizeof(bool) * data->maxatts);
		data->values2 = repalloc(data->values2, sizeof(Datum) * data->maxatts);
		data->nulls2 = repalloc(data->nulls2, sizeof(bool) * data->maxatts);
	}
	MemoryContextSwitchTo(old);
	pfree(buf.data);
	return info;
}

static RelInfo *
get_relinfo(DecodeData *data, Relation relation)
{
	Oid			relid = RelationGetRelid(relation);
	RelCacheEntry *entry;
	bool		found;

	entry = hash_search(relcache, &relid, HASH_ENTER, &found);
	if (!found)
		entry->info = NULL;
	if (entry->info == NULL || !entry->info->valid)
	{
		/*
		 * Rows buffered in this transaction may still point at the old
		 * entry: retire it, free it at the end of the transaction.
		 */
		if (entry->info != NULL)
		{
			entry->info->retired_next = retired;
			retired = entry->info;
		}
		entry->info = NULL;
		entry->info = build_relinfo(data, relation);
	}
	return entry->info;
}

static void
free_retired(void)
{
	while (retired != NULL)
	{
		RelInfo    *next = retired->retired_next;

		/* the small strings stay until the cache context goes; rare */
		if (retired->desc)
			FreeTupleDesc(retired->desc);
		if (retired->emit_desc)
			FreeTupleDesc(retired->emit_desc);
		pfree(retired);
		retired = next;
	}
}

/* ---------------------------------------------------------------- startup */

static void
decode_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt,
			   bool is_init)
{
	DecodeData *data = palloc0(sizeof(DecodeData));
	HASHCTL		ctl;
	MemoryContextCallback *reset_cb;

	data->context = AllocSetContextCreate(ctx->context, "odoo_sync change",
										  ALLOCSET_DEFAULT_SIZES);
	data->txn_context = AllocSetContextCreate(ctx->context, "odoo_sync transaction",
											  ALLOCSET_DEFAULT_SIZES);
	data->cache_context = ctx->context;
	data->include_xids = true;
	data->include_timestamp = true;
	data->include_lsn = true;
	data->include_origin = true;
	data->coalesce = true;
	data->messages = true;
	data->coalesce_memory_kb = odoo_sync_decode_coalesce_memory;
	data->maxatts = 64;
	data->values = palloc(sizeof(Datum) * data->maxatts);
	data->nulls = palloc(sizeof(bool) * data->maxatts);
	data->values2 = palloc(sizeof(Datum) * data->maxatts);
	data->nulls2 = palloc(sizeof(bool) * data->maxatts);

	ctx->output_plugin_private = data;
	opt->output_type = OUTPUT_PLUGIN_TEXTUAL_OUTPUT;
	opt->receive_rewrites = false;

	parse_options(data, ctx->output_plugin_options);

	/*
	 * A fresh relation cache per decoding context (options differ).  It
	 * lives in the decoding context's memory, which an error may free
	 * without calling our shutdown callback: a reset callback forgets the
	 * static pointers whenever that memory goes, so that the relcache
	 * invalidation callback never touches freed memory.
	 */
	relcache_context = AllocSetContextCreate(ctx->context, "odoo_sync relation cache",
											 ALLOCSET_DEFAULT_SIZES);
	reset_cb = MemoryContextAlloc(relcache_context, sizeof(MemoryContextCallback));
	reset_cb->func = relcache_forget;
	reset_cb->arg = relcache_context;
	MemoryContextRegisterResetCallback(relcache_context, reset_cb);
	retired = NULL;
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(RelCacheEntry);
	ctl.hcxt = relcache_context;
	relcache = hash_create("odoo_sync relation cache", 128, &ctl,
						   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	if (!relcache_callback_registered)
	{
		CacheRegisterRelcacheCallback(relcache_invalidate, (Datum) 0);
		relcache_callback_registered = true;
	}

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(RepOriginId);
	ctl.entrysize = sizeof(OriginCacheEntry);
	ctl.hcxt = ctx->context;
	data->origins = hash_create("odoo_sync origins", 16, &ctl,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/* Reset callback of the relation cache's memory: forget pointers into it. */
static void
relcache_forget(void *arg)
{
	if (relcache_context == (MemoryContext) arg)
	{
		relcache = NULL;
		relcache_context = NULL;
		retired = NULL;
	}
}

static void
decode_shutdown(LogicalDecodingContext *ctx)
{
	/* the memory goes with ctx->context; the reset callback does the rest */
}

/* ---------------------------------------------------------------- origins */

/*
 * Returns the cache entry of an origin; resolves its name (catalog access:
 * only inside the decoding transaction).
 */
static OriginCacheEntry *
origin_entry(DecodeData *data, RepOriginId id)
{
	OriginCacheEntry *e;
	bool		found;

	e = hash_search(data->origins, &id, HASH_ENTER, &found);
	if (!found)
	{
		char	   *name = NULL;
		ListCell   *lc;

		e->skip = data->skip_all_origins;
		e->name = NULL;
		if (replorigin_by_oid(id, true, &name) && name != NULL)
		{
			e->name = MemoryContextStrdup(data->cache_context, name);
			foreach(lc, data->skip_origins)
				if (glob_match((char *) lfirst(lc), e->name))
					e->skip = true;
		}
	}
	return e;
}

static bool
decode_filter_origin(LogicalDecodingContext *ctx, RepOriginId origin_id)
{
	DecodeData *data = ctx->output_plugin_private;

	/* named origins are checked per change, where the catalog can be read */
	return data->skip_all_origins && origin_id != InvalidRepOriginId;
}

static bool
skip_txn_origin(DecodeData *data, ReorderBufferTXN *txn)
{
	if (txn->origin_id == InvalidRepOriginId || data->skip_origins == NIL)
		return false;
	return origin_entry(data, txn->origin_id)->skip;
}

/* ---------------------------------------------------------------- formatting */

static void
append_value(StringInfo out, ColInfo *col, Datum value)
{
	switch (col->kind)
	{
		case COL_INT:
			{
				char		buf[32];
				int64		v;

				if (col->basetypid == INT2OID)
					v = DatumGetInt16(value);
				else if (col->basetypid == INT4OID)
					v = DatumGetInt32(value);
				else if (col->basetypid == OIDOID)
					v = DatumGetObjectId(value);
				else
					v = DatumGetInt64(value);
				pg_lltoa(v, buf);
				appendStringInfoString(out, buf);
				break;
			}
		case COL_BOOL:
			appendStringInfoString(out, DatumGetBool(value) ? "true" : "false");
			break;
		case COL_FLOAT:
			{
				double		d = col->basetypid == FLOAT4OID ?
				DatumGetFloat4(value) : DatumGetFloat8(value);

				if (isnan(d) || isinf(d))
				{
					char	   *s = OutputFunctionCall(&col->out, value);

					escape_json(out, s);
				}
				else
					appendStringInfoString(out, float8out_internal(d));
				break;
			}
		case COL_NUMERIC:
			{
				char	   *s = OutputFunctionCall(&col->out, value);

				if (s[0] == 'N' || s[0] == 'I' || s[1] == 'I')
					escape_json(out, s);	/* NaN, Infinity, -Infinity */
				else
					appendStringInfoString(out, s);
				break;
			}
		case COL_JSON:
			appendStringInfoString(out, TextDatumGetCString(value));
			break;
		case COL_JSONB:
			{
				Jsonb	   *jb = DatumGetJsonbP(value);

				(void) JsonbToCString(out, &jb->root, VARSIZE(jb));
				break;
			}
		case COL_TEXT:
			escape_json(out, TextDatumGetCString(value));
			break;
		case COL_TIMESTAMP:
		case COL_TIMESTAMPTZ:
			{
				Timestamp	ts = DatumGetTimestamp(value);
				struct pg_tm tm;
				fsec_t		fsec;
				int			tz;
				const char *tzn = NULL;
				char		buf[MAXDATELEN + 1];
				bool		with_tz = col->kind == COL_TIMESTAMPTZ;

				if (TIMESTAMP_NOT_FINITE(ts))
				{
					escape_json(out, TIMESTAMP_IS_NOBEGIN(ts) ? "-infinity" : "infinity");
					break;
				}
				if (timestamp2tm(ts, with_tz ? &tz : NULL, &tm, &fsec,
								 with_tz ? &tzn : NULL, NULL) != 0)
				{
					escape_json(out, OutputFunctionCall(&col->out, value));
					break;
				}
				EncodeDateTime(&tm, fsec, with_tz, tz, tzn, USE_XSD_DATES, buf);
				escape_json(out, buf);
				break;
			}
		case COL_DATE:
			{
				DateADT		d = DatumGetDateADT(value);
				struct pg_tm tm;
				char		buf[MAXDATELEN + 1];

				if (DATE_NOT_FINITE(d))
				{
					escape_json(out, DATE_IS_NOBEGIN(d) ? "-infinity" : "infinity");
					break;
				}
				j2date(d + POSTGRES_EPOCH_JDATE, &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
				EncodeDateOnly(&tm, USE_XSD_DATES, buf);
				escape_json(out, buf);
				break;
			}
		case COL_OTHER:
			escape_json(out, OutputFunctionCall(&col->out, value));
			break;
	}
}

/*
 * Appends a JSON object with the columns of a tuple: the emitted columns, or
 * only the key columns; never absent (unchanged-TOAST) ones.
 */
static void
append_tuple(DecodeData *data, StringInfo out, RelInfo *rel, HeapTuple tuple,
			 bits8 *absent, bool keys_only)
{
	bool		first = true;

	heap_deform_tuple(tuple, rel->emit_desc, data->values, data->nulls);
	appendStringInfoChar(out, '{');
	for (int i = 0; i < rel->emit_desc->natts; i++)
	{
		ColInfo    *col = &rel->cols[i];

		if (col->name == NULL || !col->emit || (keys_only && !col->is_key))
			continue;
		if (absent != NULL && att_isnull(i, absent))
			continue;
		if (!first)
			appendStringInfoChar(out, ',');
		first = false;
		appendStringInfoString(out, col->json_key);
		if (data->nulls[i])
			appendStringInfoString(out, "null");
		else
			append_value(out, col, data->values[i]);
	}
	appendStringInfoChar(out, '}');
}

static void
write_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	DecodeData *data = ctx->output_plugin_private;
	StringInfo	out;

	OutputPluginPrepareWrite(ctx, false);
	out = ctx->out;
	appendStringInfo(out, "{\"action\":\"B\",\"format-version\":%d",
					 ODOO_SYNC_FORMAT_VERSION);
	if (data->include_xids)
		appendStringInfo(out, ",\"xid\":%u", txn->xid);
	if (data->include_lsn)
		appendStringInfo(out, ",\"commit-lsn\":\"%X/%X\"",
						 LSN_FORMAT_ARGS(txn->final_lsn));
	if (data->include_timestamp)
	{
		appendStringInfoString(out, ",\"commit-time\":");
		escape_json(out, timestamptz_to_str(txn->xact_time.commit_time));
	}
	if (data->include_origin)
	{
		appendStringInfoString(out, ",\"origin\":");
		if (txn->origin_id == InvalidRepOriginId)
			appendStringInfoString(out, "null");
		else
		{
			OriginCacheEntry *e = origin_entry(data, txn->origin_id);

			if (e->name)
				escape_json(out, e->name);
			else
				appendStringInfoString(out, "null");
		}
	}
	appendStringInfoChar(out, '}');
	OutputPluginWrite(ctx, false);
	data->begun = true;
}

static void
write_item(LogicalDecodingContext *ctx, DecodeItem *item)
{
	DecodeData *data = ctx->output_plugin_private;
	StringInfo	out;

	if (item->kind == ITEM_ROW && item->op == 0)
		return;
	OutputPluginPrepareWrite(ctx, false);
	out = ctx->out;
	switch (item->kind)
	{
		case ITEM_ROW:
			appendStringInfo(out, "{\"action\":\"%c\"", item->op);
			appendStringInfoString(out, item->rel->header);
			if (item->op == 'D')
			{
				appendStringInfoString(out, ",\"key\":");
				append_tuple(data, out, item->rel, item->oldtup, NULL, true);
				if (item->rel->ri_full)
				{
					appendStringInfoString(out, ",\"old\":");
					append_tuple(data, out, item->rel, item->oldtup, NULL, false);
				}
			}
			else
			{
				appendStringInfoString(out, ",\"new\":");
				append_tuple(data, out, item->rel, item->newtup, item->absent, false);
				if (item->op == 'U' && item->oldtup != NULL && item->rel->ri_full)
				{
					appendStringInfoString(out, ",\"old\":");
					append_tuple(data, out, item->rel, item->oldtup, NULL, false);
				}
				if (item->absent != NULL)
				{
					bool		first = true;

					appendStringInfoString(out, ",\"unchanged-toast\":[");
					for (int i = 0; i < item->rel->natts; i++)
						if (item->rel->cols[i].emit && att_isnull(i, item->absent))
						{
							if (!first)
								appendStringInfoChar(out, ',');
							first = false;
							escape_json(out, item->rel->cols[i].name);
						}
					appendStringInfoChar(out, ']');
				}
			}
			data->nemitted++;
			break;
		case ITEM_TRUNCATE:
			appendStringInfoString(out, "{\"action\":\"T\"");
			appendStringInfoString(out, item->rel->header);
			break;
		case ITEM_MESSAGE:
			{
				appendStringInfoString(out, "{\"action\":\"M\",\"transactional\":true,\"prefix\":");
				escape_json(out, ODOO_SYNC_EXTNAME);
				appendStringInfoString(out, ",\"content\":");
				escape_json(out, item->content);
				break;
			}
	}
	appendStringInfoChar(out, '}');
	OutputPluginWrite(ctx, false);
}

/* ---------------------------------------------------------------- buffering */

static uint32
rowkey_hash(const void *key, Size keysize)
{
	const RowKey *k = key;
	uint32		h;

	if (k->len == 0)
		h = hash_bytes_uint32((uint32) k->ival) ^ hash_bytes_uint32((uint32) (k->ival >> 32));
	else
		h = hash_bytes((const unsigned char *) k->data, k->len);
	return h ^ hash_bytes_uint32(k->relid);
}

static int
rowkey_compare(const void *key1, const void *key2, Size keysize)
{
	const RowKey *a = key1;
	const RowKey *b = key2;

	if (a->relid != b->relid || a->len != b->len)
		return 1;
	if (a->len == 0)
		return a->ival == b->ival ? 0 : 1;
	return memcmp(a->data, b->data, a->len);
}

static void
ensure_txn_state(DecodeData *data)
{
	if (data->rows == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(RowKey);
		ctl.entrysize = sizeof(DecodeItem);
		ctl.hash = rowkey_hash;
		ctl.match = rowkey_compare;
		ctl.hcxt = data->txn_context;
		data->rows = hash_create("odoo_sync rows", 256, &ctl,
								 HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
	}
	if (data->items == NULL)
	{
		data->maxitems = 256;
		data->items = MemoryContextAlloc(data->txn_context,
										 sizeof(DecodeItem *) * data->maxitems);
		data->nitems = 0;
	}
}

static void
append_item(DecodeData *data, DecodeItem *item)
{
	if (data->nitems == data->maxitems)
	{
		data->maxitems *= 2;
		data->items = repalloc(data->items, sizeof(DecodeItem *) * data->maxitems);
	}
	data->items[data->nitems++] = item;
}

/*
 * Computes the key of a tuple into *key (data palloc'd in the current
 * context).  Returns false when the key is not usable (no key, or a NULL
 * key column).
 */
static bool
tuple_key(DecodeData *data, RelInfo *rel, HeapTuple tuple, RowKey *key)
{
	memset(key, 0, sizeof(RowKey));
	key->relid = rel->relid;
	if (rel->nkeys == 0)
		return false;
	if (rel->int_key)
	{
		bool		isnull;
		Datum		d = heap_getattr(tuple, rel->keys[0] + 1, rel->desc, &isnull);
		Oid			base = rel->cols[rel->keys[0]].basetypid;

		if (isnull)
			return false;
		key->ival = base == INT2OID ? DatumGetInt16(d) :
			base == INT4OID ? DatumGetInt32(d) :
			base == OIDOID ? (int64) DatumGetObjectId(d) : DatumGetInt64(d);
		return true;
	}
	else
	{
		StringInfoData buf;

		initStringInfo(&buf);
		for (int k = 0; k < rel->nkeys; k++)
		{
			int			i = rel->keys[k];
			Form_pg_attribute att = TupleDescAttr(rel->desc, i);
			bool		isnull;
			Datum		d = heap_getattr(tuple, i + 1, rel->desc, &isnull);

			if (isnull)
				return false;
			if (att->attbyval)
				appendBinaryStringInfo(&buf, (char *) &d, sizeof(Datum));
			else if (att->attlen == -1)
			{
				struct varlena *v = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(d));
				uint32		len = VARSIZE_ANY_EXHDR(v);

				appendBinaryStringInfo(&buf, (char *) &len, sizeof(len));
				appendBinaryStringInfo(&buf, VARDATA_ANY(v), len);
			}
			else if (att->attlen == -2)
				appendBinaryStringInfo(&buf, DatumGetCString(d), strlen(DatumGetCString(d)) + 1);
			else
				appendBinaryStringInfo(&buf, DatumGetPointer(d), att->attlen);
		}
		key->len = buf.len;
		key->data = buf.data;
		if (key->len == 0)
			key->len = 1;		/* distinguish from an integer key */
		return true;
	}
}

/*
 * Copies a decoded tuple into the transaction context.  Values the reorder
 * buffer reassembled from TOAST chunks are detoasted (they point into memory
 * freed after this change); on-disk TOAST pointers are unchanged values: they
 * are taken from prev (an earlier version of the same row) when it has them,
 * otherwise marked absent.  Values of columns that are not emitted are
 * dropped on this (slower) path only.
 */
static HeapTuple
copy_tuple(DecodeData *data, RelInfo *rel, HeapTuple tuple, DecodeItem *prev,
		   bits8 **absent_out)
{
	bits8	   *absent = NULL;
	HeapTuple	result;
	MemoryContext old;

	/* past the memory limit rows are written at once: no need to keep them */
	MemoryContext target = data->overflow ? data->context : data->txn_context;

	*absent_out = NULL;

	/*
	 * The common case: no TOAST pointer, the tuple is copied as it is.
	 * Columns that are not emitted are skipped when formatting; dropping
	 * them here would cost a deform and a form per change.
	 */
	if (!HeapTupleHasExternal(tuple))
	{
		old = MemoryContextSwitchTo(target);
		result = heap_copytuple(tuple);
		MemoryContextSwitchTo(old);
		return result;
	}

	heap_deform_tuple(tuple, rel->desc, data->values, data->nulls);
	if (prev != NULL && prev->newtup != NULL)
		heap_deform_tuple(prev->newtup, rel->desc, data->values2, data->nulls2);
	for (int i = 0; i < rel->natts; i++)
	{
		ColInfo    *col = &rel->cols[i];
		struct varlena *v;

		if (col->name == NULL || data->nulls[i])
			continue;
		if (!col->emit)
		{
			data->nulls[i] = true;
			continue;
		}
		if (!col->varlena || TupleDescAttr(rel->desc, i)->attlen != -1)
			continue;
		v = (struct varlena *) DatumGetPointer(data->values[i]);
		if (VARATT_IS_EXTERNAL_ONDISK(v))
		{
			bool		prev_has = prev != NULL && prev->newtup != NULL &&
				!data->nulls2[i] &&
				(prev->absent == NULL || !att_isnull(i, prev->absent));

			if (prev_has)
				data->values[i] = data->values2[i];
			else
			{
				if (absent == NULL)
				{
					absent = MemoryContextAlloc(target, BITMAPLEN(rel->natts));
					memset(absent, 0xFF, BITMAPLEN(rel->natts));
				}
				/* a cleared bit means absent (att_isnull reads it so) */
				absent[i >> 3] &= ~(1 << (i & 0x07));
				data->nulls[i] = true;
			}
		}
		else if (VARATT_IS_EXTERNAL(v))
			data->values[i] = PointerGetDatum(detoast_external_attr(v));
	}
	old = MemoryContextSwitchTo(target);
	result = heap_form_tuple(rel->desc, data->values, data->nulls);
	MemoryContextSwitchTo(old);
	*absent_out = absent;
	return result;
}

static void
flush_items(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	DecodeData *data = ctx->output_plugin_private;

	if (!data->begun)
		write_begin(ctx, txn);
	for (int i = 0; i < data->nitems; i++)
		write_item(ctx, data->items[i]);
	data->nitems = 0;
	if (data->rows != NULL)
	{
		hash_destroy(data->rows);
		data->rows = NULL;
	}
}

/*
 * Past the memory limit, emit what is buffered and stream the rest of the
 * transaction uncoalesced.
 */
static void
check_memory(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	DecodeData *data = ctx->output_plugin_private;

	if (data->overflow)
		return;
	if (MemoryContextMemAllocated(data->txn_context, true) <
		(Size) data->coalesce_memory_kb * 1024)
		return;
	flush_items(ctx, txn);
	MemoryContextReset(data->txn_context);
	data->items = NULL;
	data->overflow = true;
	ereport(DEBUG1,
			(errmsg("odoo_sync: transaction %u passed coalesce-memory (%d kB); rest emitted uncoalesced",
					txn->xid, data->coalesce_memory_kb)));
}

/* Emits (overflow) or buffers an item that is not a row. */
static void
add_unkeyed_item(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, DecodeItem *item)
{
	DecodeData *data = ctx->output_plugin_private;

	if (data->overflow)
	{
		if (!data->begun)
			write_begin(ctx, txn);
		write_item(ctx, item);
		return;
	}
	append_item(data, item);
}

/* ---------------------------------------------------------------- callbacks */

static void
decode_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	DecodeData *data = ctx->output_plugin_private;

	data->rows = NULL;
	data->items = NULL;
	data->nitems = 0;
	data->begun = false;
	data->overflow = false;
	data->nemitted = 0;
	MemoryContextReset(data->txn_context);
}

static void
decode_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			  XLogRecPtr commit_lsn)
{
	DecodeData *data = ctx->output_plugin_private;
	int			live = 0;

	for (int i = 0; i < data->nitems; i++)
		if (data->items[i]->kind != ITEM_ROW || data->items[i]->op != 0)
			live++;

	/* empty and filtered transactions produce no output at all */
	if (live > 0 || data->begun)
	{
		MemoryContext old = MemoryContextSwitchTo(data->context);

		flush_items(ctx, txn);
		OutputPluginPrepareWrite(ctx, true);
		appendStringInfo(ctx->out, "{\"action\":\"C\",\"rows\":" INT64_FORMAT "}",
						 data->nemitted);
		OutputPluginWrite(ctx, true);
		MemoryContextSwitchTo(old);
		MemoryContextReset(data->context);
	}
	data->rows = NULL;
	data->items = NULL;
	data->nitems = 0;
	data->begun = false;
	data->overflow = false;
	MemoryContextReset(data->txn_context);
	free_retired();
}

static void
decode_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			  Relation relation, ReorderBufferChange *change)
{
	DecodeData *data = ctx->output_plugin_private;
	RelInfo    *rel;
	MemoryContext old;
	HeapTuple	newtup = NULL;
	HeapTuple	oldtup = NULL;
	RowKey		key;
	bool		keyed;
	DecodeItem	   *item;
	bool		found = false;
	char		op;

	/* filtering first: nothing is formatted for unwatched tables */
	rel = get_relinfo(data, relation);
	if (!rel->watched)
		return;
	if (skip_txn_origin(data, txn))
		return;

	old = MemoryContextSwitchTo(data->context);

	switch (change->action)
	{
		case REORDER_BUFFER_CHANGE_INSERT:
			op = 'I';
			if (change->data.tp.newtuple)
				newtup = &change->data.tp.newtuple->tuple;
			break;
		case REORDER_BUFFER_CHANGE_UPDATE:
			op = 'U';
			if (change->data.tp.newtuple)
				newtup = &change->data.tp.newtuple->tuple;
			if (change->data.tp.oldtuple)
				oldtup = &change->data.tp.oldtuple->tuple;
			break;
		case REORDER_BUFFER_CHANGE_DELETE:
			op = 'D';
			if (change->data.tp.oldtuple)
				oldtup = &change->data.tp.oldtuple->tuple;
			break;
		default:
			MemoryContextSwitchTo(old);
			return;
	}

	/* without a key (no replica identity), deletes carry nothing to emit */
	if (op == 'D' && oldtup == NULL)
	{
		MemoryContextSwitchTo(old);
		MemoryContextReset(data->context);
		return;
	}

	keyed = data->coalesce && !data->overflow &&
		tuple_key(data, rel, oldtup != NULL ? oldtup : newtup, &key);

	/* an UPDATE that changes the key: the old key's row is deleted */
	if (keyed && op == 'U' && oldtup != NULL)
	{
		RowKey		newkey;

		if (tuple_key(data, rel, newtup, &newkey) &&
			rowkey_compare(&key, &newkey, sizeof(RowKey)) != 0)
		{
			ReorderBufferChange fake = *change;

			fake.action = REORDER_BUFFER_CHANGE_DELETE;
			MemoryContextSwitchTo(old);
			decode_change(ctx, txn, relation, &fake);
			fake = *change;
			fake.action = REORDER_BUFFER_CHANGE_INSERT;
			fake.data.tp.oldtuple = NULL;
			decode_change(ctx, txn, relation, &fake);
			return;
		}
	}

	if (!data->overflow)
		ensure_txn_state(data);

	if (keyed)
	{
		if (key.data != NULL)
		{
			char	   *copy = MemoryContextAlloc(data->txn_context, key.len);

			memcpy(copy, key.data, key.len);
			key.data = copy;
		}
		item = hash_search(data->rows, &key, HASH_ENTER, &found);
		if (!found)
		{
			item->kind = ITEM_ROW;
			item->op = 0;
			item->hashed = true;
			item->newtup = NULL;
			item->oldtup = NULL;
			item->absent = NULL;
		}
	}
	else
	{
		item = MemoryContextAllocZero(data->overflow ? data->context : data->txn_context,
									  sizeof(DecodeItem));
		item->kind = ITEM_ROW;
		item->key = key;
	}
	item->rel = rel;

	if (!found)
	{
		/* first sight of this row in the transaction */
		item->op = op;
		if (newtup)
			item->newtup = copy_tuple(data, rel, newtup, NULL, &item->absent);
		if (oldtup)
		{
			MemoryContext o = MemoryContextSwitchTo(data->overflow ? data->context : data->txn_context);

			item->oldtup = heap_copytuple(oldtup);
			MemoryContextSwitchTo(o);
		}
		if (data->overflow)
		{
			if (!data->begun)
				write_begin(ctx, txn);
			write_item(ctx, item);
		}
		else
			append_item(data, item);
	}
	else
	{
		char		prev_op = item->op;
		bits8	   *absent = NULL;

		switch (op)
		{
			case 'I':
				/* after a delete in this transaction: the row was replaced */
				item->newtup = copy_tuple(data, rel, newtup, NULL, &absent);
				item->absent = absent;
				item->op = (prev_op == 'D') ? 'U' : (prev_op == 0 ? 'I' : prev_op);
				break;
			case 'U':
				item->newtup = copy_tuple(data, rel, newtup, item, &absent);
				item->absent = absent;
				if (prev_op == 0 || prev_op == 'D')
					item->op = 'U';
				if (item->oldtup == NULL && oldtup != NULL)
				{
					MemoryContext o = MemoryContextSwitchTo(data->txn_context);

					item->oldtup = heap_copytuple(oldtup);
					MemoryContextSwitchTo(o);
				}
				break;
			case 'D':
				if (prev_op == 'I')
				{
					/* inserted and deleted within the transaction: nothing */
					item->op = 0;
					item->newtup = NULL;
					/* forget it, so that a later insert starts afresh */
					{
						DecodeItem	   *copy = MemoryContextAlloc(data->txn_context, sizeof(DecodeItem));

						*copy = *item;
						copy->hashed = false;
						for (int i = data->nitems - 1; i >= 0; i--)
							if (data->items[i] == item)
							{
								data->items[i] = copy;
								break;
							}
						hash_search(data->rows, &key, HASH_REMOVE, NULL);
					}
				}
				else
				{
					item->op = 'D';
					if (item->oldtup == NULL || !rel->ri_full)
					{
						MemoryContext o = MemoryContextSwitchTo(data->txn_context);

						if (item->oldtup == NULL)
							item->oldtup = heap_copytuple(oldtup);
						MemoryContextSwitchTo(o);
					}
				}
				break;
		}
	}

	MemoryContextSwitchTo(old);
	MemoryContextReset(data->context);
	check_memory(ctx, txn);
}

static void
decode_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
				int nrelations, Relation relations[],
				ReorderBufferChange *change)
{
	DecodeData *data = ctx->output_plugin_private;

	if (skip_txn_origin(data, txn))
		return;
	for (int r = 0; r < nrelations; r++)
	{
		RelInfo    *rel = get_relinfo(data, relations[r]);
		DecodeItem	   *item;

		if (!rel->watched)
			continue;
		if (!data->overflow)
		{
			ensure_txn_state(data);
			/* rows buffered for this table are gone with it */
			for (int i = 0; i < data->nitems; i++)
			{
				DecodeItem	   *it = data->items[i];

				if (it->kind == ITEM_ROW && it->rel->relid == rel->relid && it->op != 0)
				{
					if (it->hashed)
					{
						DecodeItem	   *copy = MemoryContextAlloc(data->txn_context, sizeof(DecodeItem));

						*copy = *it;
						copy->hashed = false;
						hash_search(data->rows, &it->key, HASH_REMOVE, NULL);
						data->items[i] = copy;
						it = copy;
					}
					it->op = 0;
				}
			}
		}
		item = MemoryContextAllocZero(data->overflow ? data->context : data->txn_context,
									  sizeof(DecodeItem));
		item->kind = ITEM_TRUNCATE;
		item->rel = rel;
		add_unkeyed_item(ctx, txn, item);
	}
	MemoryContextReset(data->context);
}

static void
decode_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			   XLogRecPtr message_lsn, bool transactional,
			   const char *prefix, Size message_size, const char *message)
{
	DecodeData *data = ctx->output_plugin_private;
	DecodeItem	   *item;

	if (!data->messages || strcmp(prefix, ODOO_SYNC_EXTNAME) != 0)
		return;

	if (!transactional)
	{
		StringInfo	out;

		OutputPluginPrepareWrite(ctx, true);
		out = ctx->out;
		appendStringInfoString(out, "{\"action\":\"M\",\"transactional\":false,\"prefix\":");
		escape_json(out, prefix);
		if (data->include_lsn)
			appendStringInfo(out, ",\"lsn\":\"%X/%X\"", LSN_FORMAT_ARGS(message_lsn));
		appendStringInfoString(out, ",\"content\":");
		escape_json(out, pnstrdup(message, message_size));
		appendStringInfoChar(out, '}');
		OutputPluginWrite(ctx, true);
		return;
	}

	if (skip_txn_origin(data, txn))
		return;
	if (!data->overflow)
		ensure_txn_state(data);
	item = MemoryContextAllocZero(data->overflow ? data->context : data->txn_context,
								  sizeof(DecodeItem));
	item->kind = ITEM_MESSAGE;
	item->content = MemoryContextAlloc(data->overflow ? data->context : data->txn_context,
									   message_size + 1);
	memcpy(item->content, message, message_size);
	item->content[message_size] = '\0';
	item->content_len = message_size;
	add_unkeyed_item(ctx, txn, item);
}
