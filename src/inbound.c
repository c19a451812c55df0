/*-------------------------------------------------------------------------
 *
 * inbound.c
 *	  odoo_sync.ingest(): validation and idempotent storage of inbound events.
 *
 * Dispatch systems, proof-of-delivery apps and carriers report what happened
 * to a shipment as CloudEvents-shaped JSON objects.  odoo_sync.ingest() takes
 * one such object or an array of them and returns one row per event:
 *
 *	accepted	valid, stored in odoo_sync.inbound, the apply worker is woken
 *				at commit;
 *	duplicate	an event with the same (source, id) is already stored (or was
 *				earlier in the same call): nothing is stored again;
 *	rejected	invalid: sqlstate, reason and field (a JSON pointer relative
 *				to the event) say why.  Nothing is stored.
 *
 * Whole-call errors (the document is not JSON, is larger than
 * odoo_sync.ingest_max_document_size, nested deeper than
 * odoo_sync.ingest_max_depth, an array longer than odoo_sync.ingest_max_batch,
 * or not an object/array at all) raise an ERROR instead.
 *
 * Validation never recurses on the input: nesting is bounded by the fixed
 * shape of each event type (at most data -> lines -> line), the document's
 * depth is measured with the (iterative) jsonb iterator or, for text input,
 * a linear scan before parsing.  Validation itself never throws: every
 * check records a verdict and returns, so a bad event costs no
 * subtransaction.
 *
 * Idempotency is INSERT ... ON CONFLICT (source, event_id) DO NOTHING: two
 * sessions ingesting the same event concurrently serialise on the unique
 * index, and the second one sees "duplicate" once the first commits (or
 * "accepted" if it aborts).
 *
 * The shipment reference (subject) is resolved at ingest, in this order:
 * a picking id (all digits), a picking name, a tracking reference known to
 * odoo_sync (odoo_sync.shipment, or a shipment.route_assigned event in the
 * inbox, so that events right after the route assignment resolve before it
 * is applied), a stock_picking.carrier_tracking_ref.  Unknown or
 * ambiguous references are rejected here, not later.
 *
 * The function is SECURITY DEFINER: the role odoo_sync_ingest may call it
 * and do nothing else.  All SQL it runs is schema-qualified.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <limits.h>
#include <math.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "odoo_sync.h"
#include "inbound.h"

PG_FUNCTION_INFO_V1(odoo_sync_ingest);
PG_FUNCTION_INFO_V1(odoo_sync_ingest_text);

/* settings */
static int	ingest_max_document_size = 1024 * 1024;
static int	ingest_max_depth = 16;
static int	ingest_max_batch = 1000;
static int	ingest_max_clock_skew = 5 * 60 * 1000;

/* the Odoo table subjects resolve against */
#define ODOO_SCHEMA		"public"

/* outcome of the checks of one event; sqlstate NULL means valid */
typedef struct Verdict
{
	const char *sqlstate;
	char	   *reason;
	char	   *field;
} Verdict;

/* what validation extracts from a valid event */
typedef struct IngestEvent
{
	char	   *id;
	char	   *source;
	char	   *type;
	char	   *subject;
	char	   *correlation_id;
	TimestampTz time;
	JsonbValue	data;			/* jbvBinary, the data object */
	int32		picking_id;
} IngestEvent;

typedef struct IngestBatch IngestBatch;

/*
 * The call's events in input order: their outcome, and the valid ones
 * waiting for the batch insert (flush_batch).  Nothing of an event is kept
 * beyond what the insert and the result row need.
 */
typedef struct IngestResult
{
	char	   *source;
	char	   *id;
	const char *status;			/* NULL while waiting for the insert */
	Verdict		v;
} IngestResult;

struct IngestBatch
{
	MemoryContext cxt;			/* lives for the call */
	int			n;				/* events in the call */
	IngestResult *results;		/* [n] */
	int			accepted;
	/* valid events not inserted yet, as the insert's array arguments */
	int			np;
	int		   *slot;			/* [n] index in results */
	Datum	   *col[9];			/* [n] each */
	bool	   *corr_null;		/* [n] */
	/* open addressing over (source, id) of the waiting events: slot + 1 */
	int			hsize;			/* a power of two, at least 2 n */
	int		   *hash;
	/* the picking names among the call's subjects, looked up at once */
	int			nnames;
	char	  **names;			/* [n] */
	int32	   *name_ids;		/* [n] the (first) picking with that name */
	int		   *name_counts;	/* [n] pickings with that name, at most 2 */
	int		   *nhash;			/* [hsize] open addressing: index + 1 */
};

static void flush_batch(IngestBatch *b);
static int	name_find(IngestBatch *b, const char *name, bool add);

/* SPI plans, prepared once per backend */
static SPIPlanPtr plan_by_id = NULL;
static SPIPlanPtr plan_by_name = NULL;
static SPIPlanPtr plan_by_names = NULL;
static SPIPlanPtr plan_by_our_ref = NULL;
static SPIPlanPtr plan_by_odoo_ref = NULL;
static SPIPlanPtr plan_insert = NULL;
static SPIPlanPtr plan_types = NULL;

static const char *const builtin_types[] = {
	"shipment.route_assigned", "shipment.milestone", "shipment.pod",
	"shipment.weight_confirmed", "shipment.charge", NULL
};

static const char *const milestone_statuses[] = {
	"loaded", "in_transit", "arrived", "delivered", "delayed", "exception",
	"failed_delivery", "returned", NULL
};
static const char *const charge_kinds[] = {
	"fuel_surcharge", "accessorial", "waiting_time", NULL
};
static const char *const weight_uoms[] = {"kg", "lb", NULL};

/*
 * odoo_sync_inbound_init
 *		Defines the inbound settings (called by _PG_init).
 *
 * The ingest limits are PGC_SUSET rather than PGC_SIGHUP: still set in
 * postgresql.conf and reloaded, but also per role or database
 * (ALTER ROLE odoo_sync_ingest SET ...), while the roles that call ingest()
 * can never raise their own limits.
 */
void
odoo_sync_inbound_init(void)
{
	DefineCustomIntVariable("odoo_sync.ingest_max_document_size",
							"Largest document odoo_sync.ingest() accepts.",
							"The size of the text (ingest(text)) or of the "
							"jsonb value (ingest(jsonb)); larger calls fail "
							"as a whole.",
							&ingest_max_document_size,
							1024 * 1024, 1024, 256 * 1024 * 1024,
							PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);
	DefineCustomIntVariable("odoo_sync.ingest_max_depth",
							"Deepest nesting of objects and arrays "
							"odoo_sync.ingest() accepts.",
							"The batch array and the event object count as "
							"levels; a proof of delivery needs 5.",
							&ingest_max_depth,
							16, 6, 1000,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("odoo_sync.ingest_max_batch",
							"Most events one odoo_sync.ingest() call accepts.",
							NULL,
							&ingest_max_batch,
							1000, 1, 100000,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("odoo_sync.ingest_max_clock_skew",
							"How far in the future an inbound event's time "
							"may be.",
							"Events whose time (or proof-of-delivery "
							"delivered_at) is later than now plus this are "
							"rejected.",
							&ingest_max_clock_skew,
							5 * 60 * 1000, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	odoo_sync_apply_define_gucs();
}

/* ---------------------------------------------------------------- verdicts */

static bool
fail(Verdict *v, const char *sqlstate, const char *field,
	 const char *fmt,...)
pg_attribute_printf(4, 5);

/*
 * Records why an event is rejected and returns false.
 */
static bool
fail(Verdict *v, const char *sqlstate, const char *field, const char *fmt,...)
{
	va_list		ap;
	char		buf[512];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	v->sqlstate = sqlstate;
	v->reason = pstrdup(buf);
	v->field = pstrdup(field);
	return false;
}

/*
 * A JSON pointer: base + "/" + key, with ~ and / escaped, keys cut at 64
 * bytes (a path names a field, it does not echo input back).
 */
static char *
path_join(const char *base, const char *key, int keylen)
{
	StringInfoData s;

	initStringInfo(&s);
	appendStringInfoString(&s, base);
	appendStringInfoChar(&s, '/');
	for (int i = 0; i < keylen && i < 64; i++)
	{
		if (key[i] == '~')
			appendStringInfoString(&s, "~0");
		else if (key[i] == '/')
			appendStringInfoString(&s, "~1");
		else
			appendStringInfoChar(&s, key[i]);
	}
	return s.data;
}

static char *
path_index(const char *base, int i)
{
	return psprintf("%s/%d", base, i);
}

static const char *
json_type_name(JsonbValue *jv)
{
	switch (jv->type)
	{
		case jbvNull:
			return "null";
		case jbvString:
			return "a string";
		case jbvNumeric:
			return "a number";
		case jbvBool:
			return "a boolean";
		case jbvBinary:
			return JsonContainerIsObject(jv->val.binary.data) ? "an object" : "an array";
		case jbvObject:
			return "an object";
		case jbvArray:
			return "an array";
		default:
			return "a value";
	}
}

static bool
in_list(const char *s, int len, const char *const *list)
{
	for (int i = 0; list[i] != NULL; i++)
		if ((int) strlen(list[i]) == len && memcmp(list[i], s, len) == 0)
			return true;
	return false;
}

/* ---------------------------------------------------------------- members */

typedef enum
{
	GET_OK,
	GET_ABSENT,
	GET_FAILED
} GetResult;

/*
 * Looks up a member.  Absent or null optional members give GET_ABSENT;
 * absent or null required ones fail.
 */
static GetResult
get_member(JsonbContainer *obj, const char *base, const char *key,
		   bool required, JsonbValue *buf, Verdict *v)
{
	JsonbValue *jv = getKeyJsonValueFromContainer(obj, key, strlen(key), buf);

	if (jv != NULL && jv->type != jbvNull)
		return GET_OK;
	if (!required)
		return GET_ABSENT;
	if (jv == NULL)
		fail(v, "2203A", path_join(base, key, strlen(key)),
			 "missing required member \"%s\"", key);
	else
		fail(v, "23502", path_join(base, key, strlen(key)),
			 "member \"%s\" must not be null", key);
	return GET_FAILED;
}

/*
 * A string member of minlen..maxlen characters; *out gets a copy.
 */
static GetResult
get_string(JsonbContainer *obj, const char *base, const char *key,
		   bool required, int minlen, int maxlen, char **out, Verdict *v)
{
	JsonbValue	buf;
	GetResult	r = get_member(obj, base, key, required, &buf, v);
	int			nchars;

	if (r != GET_OK)
		return r;
	if (buf.type != jbvString)
	{
		fail(v, "42804", path_join(base, key, strlen(key)),
			 "member \"%s\" must be a string, not %s", key, json_type_name(&buf));
		return GET_FAILED;
	}
	nchars = pg_mbstrlen_with_len(buf.val.string.val, buf.val.string.len);
	if (nchars < minlen)
	{
		fail(v, "22023", path_join(base, key, strlen(key)),
			 "member \"%s\" must not be empty", key);
		return GET_FAILED;
	}
	if (nchars > maxlen)
	{
		fail(v, "22001", path_join(base, key, strlen(key)),
			 "member \"%s\" is longer than %d characters", key, maxlen);
		return GET_FAILED;
	}
	if (out)
		*out = pnstrdup(buf.val.string.val, buf.val.string.len);
	return GET_OK;
}

/*
 * A string member whose value is one of list.
 */
static GetResult
get_enum(JsonbContainer *obj, const char *base, const char *key,
		 bool required, const char *const *list, char **out, Verdict *v)
{
	char	   *s;
	GetResult	r = get_string(obj, base, key, required, 1, 64, &s, v);

	if (r != GET_OK)
		return r;
	if (!in_list(s, strlen(s), list))
	{
		StringInfoData allowed;

		initStringInfo(&allowed);
		for (int i = 0; list[i] != NULL; i++)
			appendStringInfo(&allowed, "%s%s", i ? ", " : "", list[i]);
		fail(v, "22023", path_join(base, key, strlen(key)),
			 "member \"%s\" must be one of %s", key, allowed.data);
		return GET_FAILED;
	}
	if (out)
		*out = s;
	return GET_OK;
}

/*
 * A number member in [min, max]; integral when integer.
 */
static GetResult
get_number(JsonbContainer *obj, const char *base, const char *key,
		   bool required, double min, double max, bool integer,
		   double *out, Verdict *v)
{
	JsonbValue	buf;
	GetResult	r = get_member(obj, base, key, required, &buf, v);
	double		d;

	if (r != GET_OK)
		return r;
	if (buf.type != jbvNumeric)
	{
		fail(v, "42804", path_join(base, key, strlen(key)),
			 "member \"%s\" must be a number, not %s", key, json_type_name(&buf));
		return GET_FAILED;
	}
	d = DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow,
										   NumericGetDatum(buf.val.numeric)));
	if (isnan(d) || d < min || d > max)
	{
		fail(v, "22003", path_join(base, key, strlen(key)),
			 "member \"%s\" must be between %g and %g", key, min, max);
		return GET_FAILED;
	}
	if (integer && d != floor(d))
	{
		fail(v, "22023", path_join(base, key, strlen(key)),
			 "member \"%s\" must be an integer", key);
		return GET_FAILED;
	}
	if (out)
		*out = d;
	return GET_OK;
}

/*
 * Parses an RFC 3339 date-time (YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM)), with
 * every field range-checked.  Never throws.
 */
static bool
parse_rfc3339(const char *s, int len, TimestampTz *out)
{
	struct pg_tm tm;
	fsec_t		fsec = 0;
	int			tz = 0;
	int			pos = 0;
	Timestamp	ts;

#define DIGITS(n, dst) \
	do { \
		int _v = 0; \
		for (int _i = 0; _i < (n); _i++) \
		{ \
			if (pos >= len || !isdigit((unsigned char) s[pos])) \
				return false; \
			_v = _v * 10 + (s[pos++] - '0'); \
		} \
		(dst) = _v; \
	} while (0)
#define EXPECT(c) \
	do { \
		if (pos >= len || s[pos] != (c)) \
			return false; \
		pos++; \
	} while (0)

	memset(&tm, 0, sizeof(tm));
	DIGITS(4, tm.tm_year);
	EXPECT('-');
	DIGITS(2, tm.tm_mon);
	EXPECT('-');
	DIGITS(2, tm.tm_mday);
	if (pos >= len || (s[pos] != 'T' && s[pos] != 't' && s[pos] != ' '))
		return false;
	pos++;
	DIGITS(2, tm.tm_hour);
	EXPECT(':');
	DIGITS(2, tm.tm_min);
	EXPECT(':');
	DIGITS(2, tm.tm_sec);
	if (pos < len && s[pos] == '.')
	{
		int			ndig = 0;
		int			scale = 100000;

		pos++;
		while (pos < len && isdigit((unsigned char) s[pos]))
		{
			if (ndig < 6)
			{
				fsec += (s[pos] - '0') * scale;
				scale /= 10;
			}
			ndig++;
			pos++;
		}
		if (ndig == 0 || ndig > 9)
			return false;
	}
	if (pos < len && (s[pos] == 'Z' || s[pos] == 'z'))
		pos++;
	else if (pos < len && (s[pos] == '+' || s[pos] == '-'))
	{
		int			sign = s[pos] == '+' ? 1 : -1;
		int			hh,
					mm;

		pos++;
		DIGITS(2, hh);
		EXPECT(':');
		DIGITS(2, mm);
		if (hh > 23 || mm > 59)
			return false;
		/* PostgreSQL counts time zones in seconds west of Greenwich */
		tz = -sign * (hh * 3600 + mm * 60);
	}
	else
		return false;
	if (pos != len)
		return false;
#undef DIGITS
#undef EXPECT

	if (tm.tm_year < 1 || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
		tm.tm_mday > day_tab[isleap(tm.tm_year)][tm.tm_mon - 1] ||
		tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
		return false;
	if (tm2timestamp(&tm, fsec, &tz, &ts) != 0 || !IS_VALID_TIMESTAMP(ts))
		return false;
	*out = ts;
	return true;
}

/*
 * A timestamp member (RFC 3339 string); with not_future, no later than now
 * plus odoo_sync.ingest_max_clock_skew.
 */
static GetResult
get_timestamp(JsonbContainer *obj, const char *base, const char *key,
			  bool required, bool not_future, TimestampTz *out, Verdict *v)
{
	JsonbValue	buf;
	GetResult	r = get_member(obj, base, key, required, &buf, v);
	TimestampTz ts;

	if (r != GET_OK)
		return r;
	if (buf.type != jbvString)
	{
		fail(v, "42804", path_join(base, key, strlen(key)),
			 "member \"%s\" must be an RFC 3339 timestamp string, not %s",
			 key, json_type_name(&buf));
		return GET_FAILED;
	}
	if (!parse_rfc3339(buf.val.string.val, buf.val.string.len, &ts))
	{
		fail(v, "22007", path_join(base, key, strlen(key)),
			 "member \"%s\" is not a valid RFC 3339 timestamp "
			 "(like 2026-11-29T14:20:01Z)", key);
		return GET_FAILED;
	}
	if (not_future &&
		ts > TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
										 ingest_max_clock_skew))
	{
		fail(v, "22008", path_join(base, key, strlen(key)),
			 "member \"%s\" is more than %s in the future "
			 "(odoo_sync.ingest_max_clock_skew)", key,
			 GetConfigOptionByName("odoo_sync.ingest_max_clock_skew", NULL, false));
		return GET_FAILED;
	}
	if (out)
		*out = ts;
	return GET_OK;
}

/*
 * An object (or array, when want_array) member; *out gets its container.
 */
static GetResult
get_container(JsonbContainer *obj, const char *base, const char *key,
			  bool required, bool want_array, JsonbValue *out, Verdict *v)
{
	GetResult	r = get_member(obj, base, key, required, out, v);

	if (r != GET_OK)
		return r;
	if (out->type != jbvBinary ||
		(want_array ? !JsonContainerIsArray(out->val.binary.data)
		 : !JsonContainerIsObject(out->val.binary.data)))
	{
		fail(v, "42804", path_join(base, key, strlen(key)),
			 "member \"%s\" must be %s, not %s", key,
			 want_array ? "an array" : "an object", json_type_name(out));
		return GET_FAILED;
	}
	return GET_OK;
}

/* CloudEvents extension attribute names: lower-case letters and digits */
static bool
is_extension_name(const char *s, int len)
{
	if (len < 1 || len > 20)
		return false;
	for (int i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')))
			return false;
	return true;
}

/*
 * Every member of obj must be in allowed; with extensions, other members
 * may be CloudEvents extension attributes with scalar values.
 */
static bool
check_members(JsonbContainer *obj, const char *base,
			  const char *const *allowed, bool extensions, Verdict *v)
{
	JsonbIterator *it = JsonbIteratorInit(obj);
	JsonbValue	jv;
	JsonbIteratorToken tok;
	char	   *key = NULL;
	int			keylen = 0;

	while ((tok = JsonbIteratorNext(&it, &jv, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			key = jv.val.string.val;
			keylen = jv.val.string.len;
			if (in_list(key, keylen, allowed))
				key = NULL;
			else if (!extensions || !is_extension_name(key, keylen))
				return fail(v, "22023", path_join(base, key, keylen),
							"unknown member \"%.*s\"", Min(keylen, 64), key);
		}
		else if (tok == WJB_VALUE && key != NULL)
		{
			/* an extension attribute: scalars only */
			if (jv.type == jbvBinary)
				return fail(v, "42804", path_join(base, key, keylen),
							"extension attribute \"%.*s\" must be a string, "
							"number or boolean", Min(keylen, 64), key);
			key = NULL;
		}
	}
	return true;
}

/* ---------------------------------------------------------------- data per type */

/*
 * The data of each built-in type (docs/schemas/inbound/<type>.json says the
 * same).  Each returns false with *v filled at the first problem.
 */
static bool
validate_route_assigned(JsonbContainer *d, Verdict *v)
{
	static const char *const allowed[] = {
		"route", "vehicle", "driver", "planned_eta", "tracking_ref", "carrier", NULL
	};

	if (!check_members(d, "/data", allowed, false, v))
		return false;
	if (get_string(d, "/data", "route", true, 1, 200, NULL, v) == GET_FAILED ||
		get_string(d, "/data", "vehicle", false, 1, 200, NULL, v) == GET_FAILED ||
		get_string(d, "/data", "driver", false, 1, 200, NULL, v) == GET_FAILED ||
		get_timestamp(d, "/data", "planned_eta", false, false, NULL, v) == GET_FAILED ||
		get_string(d, "/data", "tracking_ref", false, 1, 100, NULL, v) == GET_FAILED ||
		get_string(d, "/data", "carrier", false, 1, 200, NULL, v) == GET_FAILED)
		return false;
	return true;
}

static bool
validate_milestone(JsonbContainer *d, Verdict *v)
{
	static const char *const allowed[] = {
		"status", "location", "eta", "exception_code", "exception_text", "note", NULL
	};
	static const char *const loc_allowed[] = {"name", "lat", "lon", NULL};
	char	   *status;
	JsonbValue	loc;
	GetResult	r;

	if (!check_members(d, "/data", allowed, false, v))
		return false;
	if (get_enum(d, "/data", "status", true, milestone_statuses, &status, v) != GET_OK)
		return false;
	r = get_container(d, "/data", "location", false, false, &loc, v);
	if (r == GET_FAILED)
		return false;
	if (r == GET_OK)
	{
		JsonbContainer *lc = loc.val.binary.data;
		GetResult	rlat,
					rlon;

		if (!check_members(lc, "/data/location", loc_allowed, false, v) ||
			get_string(lc, "/data/location", "name", false, 1, 200, NULL, v) == GET_FAILED)
			return false;
		rlat = get_number(lc, "/data/location", "lat", false, -90, 90, false, NULL, v);
		if (rlat == GET_FAILED)
			return false;
		rlon = get_number(lc, "/data/location", "lon", false, -180, 180, false, NULL, v);
		if (rlon == GET_FAILED)
			return false;
		if (rlat != rlon)
			return fail(v, "2203A",
						rlat == GET_ABSENT ? "/data/location/lat" : "/data/location/lon",
						"location needs both \"lat\" and \"lon\"");
	}
	if (get_timestamp(d, "/data", "eta", false, false, NULL, v) == GET_FAILED ||
		get_string(d, "/data", "exception_code", strcmp(status, "exception") == 0 ||
				   strcmp(status, "failed_delivery") == 0, 1, 64, NULL, v) == GET_FAILED ||
		get_string(d, "/data", "exception_text", false, 1, 1000, NULL, v) == GET_FAILED ||
		get_string(d, "/data", "note", false, 1, 1000, NULL, v) == GET_FAILED)
		return false;
	return true;
}

static bool
validate_pod(JsonbContainer *d, Verdict *v)
{
	static const char *const allowed[] = {
		"signed_by", "signature_ref", "photo_ref", "delivered_at", "lines",
		"weight", "weight_uom", "note", NULL
	};
	static const char *const line_allowed[] = {"move_id", "product_id", "quantity", NULL};
	GetResult	rsig,
				rphoto,
				r;
	JsonbValue	lines;

	if (!check_members(d, "/data", allowed, false, v))
		return false;
	if (get_string(d, "/data", "signed_by", true, 1, 200, NULL, v) != GET_OK)
		return false;
	if ((rsig = get_string(d, "/data", "signature_ref", false, 1, 1000, NULL, v)) == GET_FAILED ||
		(rphoto = get_string(d, "/data", "photo_ref", false, 1, 1000, NULL, v)) == GET_FAILED)
		return false;
	if (rsig == GET_ABSENT && rphoto == GET_ABSENT)
		return fail(v, "2203A", "/data/signature_ref",
					"a proof of delivery needs \"signature_ref\" or \"photo_ref\"");
	if (get_timestamp(d, "/data", "delivered_at", true, true, NULL, v) != GET_OK)
		return false;
	r = get_container(d, "/data", "lines", false, true, &lines, v);
	if (r == GET_FAILED)
		return false;
	if (r == GET_OK)
	{
		JsonbContainer *lc = lines.val.binary.data;
		int			n = JsonContainerSize(lc);

		if (n < 1 || n > 1000)
			return fail(v, "22023", "/data/lines",
						"\"lines\" must have 1 to 1000 items");
		for (int i = 0; i < n; i++)
		{
			JsonbValue *line = getIthJsonbValueFromContainer(lc, i);
			char	   *base = path_index("/data/lines", i);
			JsonbContainer *o;
			GetResult	rm,
						rp;

			if (line->type != jbvBinary || !JsonContainerIsObject(line->val.binary.data))
				return fail(v, "42804", base, "a line must be an object, not %s",
							json_type_name(line));
			o = line->val.binary.data;
			if (!check_members(o, base, line_allowed, false, v))
				return false;
			if ((rm = get_number(o, base, "move_id", false, 1, INT_MAX, true, NULL, v)) == GET_FAILED ||
				(rp = get_number(o, base, "product_id", false, 1, INT_MAX, true, NULL, v)) == GET_FAILED)
				return false;
			if (rm == GET_ABSENT && rp == GET_ABSENT)
				return fail(v, "2203A", path_join(base, "move_id", 7),
							"a line needs \"move_id\" or \"product_id\"");
			if (get_number(o, base, "quantity", true, 0, 1e9, false, NULL, v) != GET_OK)
				return false;
		}
	}
	if (get_number(d, "/data", "weight", false, 0, 1e7, false, NULL, v) == GET_FAILED ||
		get_enum(d, "/data", "weight_uom", false, weight_uoms, NULL, v) == GET_FAILED ||
		get_string(d, "/data", "note", false, 1, 1000, NULL, v) == GET_FAILED)
		return false;
	return true;
}

static bool
validate_weight_confirmed(JsonbContainer *d, Verdict *v)
{
	static const char *const allowed[] = {"weight", "uom", "packages", NULL};
	double		w;

	if (!check_members(d, "/data", allowed, false, v))
		return false;
	if (get_number(d, "/data", "weight", true, 0, 1e7, false, &w, v) != GET_OK)
		return false;
	if (w <= 0)
		return fail(v, "22003", "/data/weight", "member \"weight\" must be positive");
	if (get_enum(d, "/data", "uom", false, weight_uoms, NULL, v) == GET_FAILED ||
		get_number(d, "/data", "packages", false, 0, 1e6, true, NULL, v) == GET_FAILED)
		return false;
	return true;
}

static bool
validate_charge(JsonbContainer *d, Verdict *v)
{
	static const char *const allowed[] = {
		"code", "kind", "amount", "currency", "description", "quantity", NULL
	};
	char	   *cur;

	if (!check_members(d, "/data", allowed, false, v))
		return false;
	if (get_string(d, "/data", "code", true, 1, 64, NULL, v) != GET_OK ||
		get_enum(d, "/data", "kind", true, charge_kinds, NULL, v) != GET_OK ||
		get_number(d, "/data", "amount", true, -1e9, 1e9, false, NULL, v) != GET_OK ||
		get_string(d, "/data", "currency", true, 3, 3, &cur, v) != GET_OK)
		return false;
	for (int i = 0; i < 3; i++)
		if (cur[i] < 'A' || cur[i] > 'Z')
			return fail(v, "22023", "/data/currency",
						"member \"currency\" must be an ISO 4217 code like \"EUR\"");
	if (get_string(d, "/data", "description", false, 1, 1000, NULL, v) == GET_FAILED ||
		get_number(d, "/data", "quantity", false, 0, 1e9, false, NULL, v) == GET_FAILED)
		return false;
	return true;
}

/* ---------------------------------------------------------------- envelope */

/*
 * Validates one event (a JSON value from the document) and fills *out.
 * custom_types: types registered by integrators (any object as data).
 */
static bool
validate_event(JsonbValue *ev, IngestEvent *out, List *custom_types, Verdict *v)
{
	static const char *const allowed[] = {
		"specversion", "id", "source", "type", "time", "subject",
		"correlationid", "datacontenttype", "dataschema", "traceparent",
		"tracestate", "data", NULL
	};
	JsonbContainer *e;
	JsonbValue	buf;
	GetResult	r;
	char	   *s;
	bool		builtin;

	if (ev->type != jbvBinary || !JsonContainerIsObject(ev->val.binary.data))
		return fail(v, "42804", "", "an event must be a JSON object, not %s",
					json_type_name(ev));
	e = ev->val.binary.data;

	/* id and source first: the result row names the event with them */
	if (get_string(e, "", "id", true, 1, 200, &out->id, v) != GET_OK ||
		get_string(e, "", "source", true, 1, 500, &out->source, v) != GET_OK)
		return false;
	if (!check_members(e, "", allowed, true, v))
		return false;
	r = get_string(e, "", "specversion", false, 1, 10, &s, v);
	if (r == GET_FAILED)
		return false;
	if (r == GET_OK && strcmp(s, "1.0") != 0)
		return fail(v, "22023", "/specversion", "member \"specversion\" must be \"1.0\"");
	if (get_string(e, "", "type", true, 1, 100, &out->type, v) != GET_OK)
		return false;
	builtin = in_list(out->type, strlen(out->type), builtin_types);
	if (!builtin)
	{
		ListCell   *lc;
		bool		found = false;

		foreach(lc, custom_types)
			if (strcmp((char *) lfirst(lc), out->type) == 0)
				found = true;
		if (!found)
			return fail(v, "42704", "/type", "unknown event type \"%.100s\"", out->type);
	}
	if (get_timestamp(e, "", "time", true, true, &out->time, v) != GET_OK)
		return false;

	/* subject: a string, or a picking id as a JSON integer */
	r = get_member(e, "", "subject", true, &buf, v);
	if (r != GET_OK)
		return false;
	if (buf.type == jbvNumeric)
	{
		double		id;

		if (get_number(e, "", "subject", true, 1, INT_MAX, true, &id, v) != GET_OK)
			return false;
		out->subject = psprintf("%d", (int) id);
	}
	else if (get_string(e, "", "subject", true, 1, 200, &out->subject, v) != GET_OK)
		return false;

	out->correlation_id = NULL;
	if (get_string(e, "", "correlationid", false, 1, 200, &out->correlation_id, v) == GET_FAILED)
		return false;
	r = get_string(e, "", "datacontenttype", false, 1, 100, &s, v);
	if (r == GET_FAILED)
		return false;
	if (r == GET_OK && strcmp(s, "application/json") != 0)
		return fail(v, "22023", "/datacontenttype",
					"member \"datacontenttype\" must be \"application/json\"");
	if (get_string(e, "", "dataschema", false, 1, 1000, NULL, v) == GET_FAILED ||
		get_string(e, "", "traceparent", false, 1, 100, NULL, v) == GET_FAILED ||
		get_string(e, "", "tracestate", false, 1, 1000, NULL, v) == GET_FAILED)
		return false;

	if (get_container(e, "", "data", true, false, &out->data, v) != GET_OK)
		return false;
	if (!builtin)
		return true;
	if (strcmp(out->type, "shipment.route_assigned") == 0)
		return validate_route_assigned(out->data.val.binary.data, v);
	if (strcmp(out->type, "shipment.milestone") == 0)
		return validate_milestone(out->data.val.binary.data, v);
	if (strcmp(out->type, "shipment.pod") == 0)
		return validate_pod(out->data.val.binary.data, v);
	if (strcmp(out->type, "shipment.weight_confirmed") == 0)
		return validate_weight_confirmed(out->data.val.binary.data, v);
	return validate_charge(out->data.val.binary.data, v);
}

/* ---------------------------------------------------------------- SPI */

/*
 * Prepares and keeps (for the life of the backend) an SPI plan.
 */
static SPIPlanPtr
prepare(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

/*
 * The lookups and the insert, prepared at the first call of the backend.
 * Everything is schema-qualified: the plans do not depend on search_path.
 */
static void
prepare_plans(void)
{
	Oid			int4[1] = {INT4OID};
	Oid			text1[1] = {TEXTOID};
	Oid			textarr[1] = {TEXTARRAYOID};
	Oid			ins[9] = {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
	INT4ARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID, JSONBARRAYOID, JSONBARRAYOID};

	if (plan_insert != NULL)
		return;
	plan_by_id = prepare("SELECT id FROM " ODOO_SCHEMA ".stock_picking WHERE id = $1",
						 1, int4);
	plan_by_name = prepare("SELECT id FROM " ODOO_SCHEMA ".stock_picking "
						   "WHERE name = $1 LIMIT 2", 1, text1);
	/* the names of a whole call at once (prefetch_names) */
	/* (a join, not name = ANY ($1): that was planned as a sequential scan) */
	plan_by_names = prepare("SELECT u.name, pg_catalog.min(p.id), pg_catalog.count(*) "
							"FROM pg_catalog.unnest($1) AS u(name) "
							"JOIN " ODOO_SCHEMA ".stock_picking p ON p.name = u.name "
							"GROUP BY u.name", 1, textarr);
	/* tracking references we know of, applied or still in the inbox */
	plan_by_our_ref = prepare("SELECT picking_id FROM " ODOO_SYNC_SCHEMA ".shipment "
							  "WHERE tracking_ref = $1 "
							  "UNION SELECT picking_id FROM " ODOO_SYNC_SCHEMA ".inbound "
							  "WHERE type = 'shipment.route_assigned' "
							  "AND data->>'tracking_ref' = $1 AND state <> 'dead' "
							  "LIMIT 2", 1, text1);
	plan_by_odoo_ref = prepare("SELECT id FROM " ODOO_SCHEMA ".stock_picking "
							   "WHERE carrier_tracking_ref = $1 LIMIT 2", 1, text1);
	plan_types = prepare("SELECT type FROM " ODOO_SYNC_SCHEMA ".handler", 0, NULL);
	/* the inbox row and, for the apply worker, the queue row */
	plan_insert = prepare("WITH ins AS (INSERT INTO " ODOO_SYNC_SCHEMA ".inbound "
						  "(source, event_id, type, subject, picking_id, event_time, "
						  "correlation_id, data, envelope) "
						  "SELECT u.s, u.e, u.t, u.sub, u.p, u.tm, u.c, u.d, u.env - 'data' "
						  "FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), "
						  "pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5), "
						  "pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8), "
						  "pg_catalog.unnest($9)) "
						  "AS u(s, e, t, sub, p, tm, c, d, env) "
						  "ON CONFLICT (source, event_id) DO NOTHING "
						  "RETURNING id, picking_id, event_time, source, event_id), "
						  "q AS (INSERT INTO " ODOO_SYNC_SCHEMA ".inbound_queue "
						  "(id, picking_id, event_time) "
						  "SELECT id, picking_id, event_time FROM ins) "
						  "SELECT source, event_id FROM ins",
						  9, ins);
}

/*
 * Runs a lookup plan; returns the number of rows (0, 1 or 2) and the first
 * picking id in *id.
 */
static int
lookup(SPIPlanPtr plan, Datum arg, int32 *id)
{
	bool		isnull;
	int			ret = SPI_execute_plan(plan, &arg, NULL, false, 2);

	if (ret != SPI_OK_SELECT)
		elog(ERROR, "subject lookup failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
	{
		SPI_freetuptable(SPI_tuptable);
		return 0;
	}
	*id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									  1, &isnull));
	if (SPI_processed > 1)
	{
		int32		id2 = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[1],
													  SPI_tuptable->tupdesc,
													  1, &isnull));

		if (id2 == *id)
		{
			SPI_freetuptable(SPI_tuptable);
			return 1;
		}
	}
	ret = (int) SPI_processed;
	/* a batch runs up to four lookups per event: do not keep their results */
	SPI_freetuptable(SPI_tuptable);
	return ret;
}

/*
 * Resolves the subject to a picking id.
 */
static bool
resolve_subject(IngestBatch *b, IngestEvent *ev, Verdict *v)
{
	const char *s = ev->subject;
	size_t		len = strlen(s);
	bool		digits = len > 0 && len <= 10;
	Datum		arg = CStringGetTextDatum(s);
	SPIPlanPtr	by_text[3] = {plan_by_name, plan_by_our_ref, plan_by_odoo_ref};

	for (size_t i = 0; i < len && digits; i++)
		if (!isdigit((unsigned char) s[i]))
			digits = false;
	if (digits)
	{
		int64		n = strtoll(s, NULL, 10);

		if (n > 0 && n <= INT_MAX &&
			lookup(plan_by_id, Int32GetDatum((int32) n), &ev->picking_id) == 1)
			return true;
	}
	for (int i = 0; i < 3; i++)
	{
		int			n;
		int			k;

		/*
		 * Tracking references of route assignments still in the inbox
		 * count, also those earlier in this call: store them first.
		 */
		if (by_text[i] == plan_by_our_ref)
			flush_batch(b);
		if (by_text[i] == plan_by_name && (k = name_find(b, s, false)) >= 0)
		{
			n = b->name_counts[k];
			ev->picking_id = b->name_ids[k];
		}
		else
			n = lookup(by_text[i], arg, &ev->picking_id);

		if (n == 1)
			return true;
		if (n > 1)
			return fail(v, "21000", "/subject",
						"shipment reference \"%.200s\" matches several pickings", s);
	}
	return fail(v, "23503", "/subject",
				"unknown shipment reference \"%.200s\" (no picking with that id, "
				"name or tracking reference)", s);
}

/*
 * The event types integrators registered handlers for (any object as data);
 * read once per call.
 */
static List *
load_custom_types(void)
{
	List	   *types = NIL;
	int			ret = SPI_execute_plan(plan_types, NULL, NULL, true, 0);

	if (ret != SPI_OK_SELECT)
		elog(ERROR, "handler lookup failed: %s", SPI_result_code_string(ret));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *t = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		if (t != NULL && !in_list(t, strlen(t), builtin_types))
			types = lappend(types, t);
	}
	return types;
}

/* ---------------------------------------------------------------- limits */

/*
 * Depth of a jsonb document (top level = 1), or max + 1 as soon as it is
 * deeper than max.  The jsonb iterator keeps its own stack: no recursion.
 */
static int
jsonb_depth(Jsonb *jb, int max)
{
	JsonbIterator *it = JsonbIteratorInit(&jb->root);
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			depth = 0,
				deepest = 0;

	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		if (tok == WJB_BEGIN_ARRAY || tok == WJB_BEGIN_OBJECT)
		{
			if (++depth > deepest)
				deepest = depth;
			if (deepest > max)
				return deepest;
		}
		else if (tok == WJB_END_ARRAY || tok == WJB_END_OBJECT)
			depth--;
	}
	return deepest;
}

/*
 * Depth of JSON text, measured before parsing (strings skipped); stops at
 * max + 1.
 */
static int
text_depth(const char *s, size_t len, int max)
{
	int			depth = 0,
				deepest = 0;
	bool		in_string = false;

	for (size_t i = 0; i < len; i++)
	{
		char		c = s[i];

		if (in_string)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
		}
		else if (c == '"')
			in_string = true;
		else if (c == '[' || c == '{')
		{
			if (++depth > deepest)
				deepest = depth;
			if (deepest > max)
				return deepest;
		}
		else if (c == ']' || c == '}')
			depth--;
	}
	return deepest;
}

/*
 * Whole-call limits: raise an ERROR when exceeded.
 */
static void
check_size(size_t size)
{
	if (size > (size_t) ingest_max_document_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("inbound document is too large"),
				 errdetail("The document has %zu bytes; odoo_sync.ingest_max_document_size is %d bytes.",
						   size, ingest_max_document_size),
				 errhint("Send the events in smaller batches.")));
}

static void
depth_error(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("inbound document is nested too deeply"),
			 errdetail("Objects and arrays may be nested at most %d levels deep "
					   "(odoo_sync.ingest_max_depth).", ingest_max_depth)));
}

/* ---------------------------------------------------------------- ingest */

/*
 * Appends one result row (index, source, id, status, sqlstate, reason,
 * field) to the call's tuplestore.
 */
static void
emit(ReturnSetInfo *rsinfo, int index, const char *source, const char *id,
	 const char *status, Verdict *v)
{
	Datum		values[7];
	bool		nulls[7];

	memset(nulls, 0, sizeof(nulls));
	values[0] = Int32GetDatum(index);
	if (source)
		values[1] = CStringGetTextDatum(source);
	else
		nulls[1] = true;
	if (id)
		values[2] = CStringGetTextDatum(id);
	else
		nulls[2] = true;
	values[3] = CStringGetTextDatum(status);
	if (v != NULL && v->sqlstate != NULL)
	{
		values[4] = CStringGetTextDatum(v->sqlstate);
		values[5] = CStringGetTextDatum(v->reason);
		values[6] = CStringGetTextDatum(v->field);
	}
	else
		nulls[4] = nulls[5] = nulls[6] = true;
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

static uint32
key_hash(const char *source, const char *id)
{
	uint32		h = hash_bytes((const unsigned char *) source, strlen(source));

	return hash_combine(h, hash_bytes((const unsigned char *) id, strlen(id)));
}

/*
 * Finds the waiting event with this (source, id); with add, registers
 * waiting event p when there is none.  Returns the waiting event's index in
 * the pending arrays, or -1.
 */
static int
key_find(IngestBatch *b, const char *source, const char *id, bool add, int p)
{
	uint32		i = key_hash(source, id) & (b->hsize - 1);

	while (b->hash[i] != 0)
	{
		IngestResult *r = &b->results[b->slot[b->hash[i] - 1]];

		if (strcmp(r->id, id) == 0 && strcmp(r->source, source) == 0)
			return b->hash[i] - 1;
		i = (i + 1) & (b->hsize - 1);
	}
	if (add)
		b->hash[i] = p + 1;
	return -1;
}

/*
 * The index of a prefetched picking name, or -1; with add, registers it
 * (count 0: no such picking) when it is not there.
 */
static int
name_find(IngestBatch *b, const char *name, bool add)
{
	uint32		i;

	if (b->nhash == NULL)
		return -1;
	i = hash_bytes((const unsigned char *) name, strlen(name)) & (b->hsize - 1);
	while (b->nhash[i] != 0)
	{
		if (strcmp(b->names[b->nhash[i] - 1], name) == 0)
			return b->nhash[i] - 1;
		i = (i + 1) & (b->hsize - 1);
	}
	if (!add)
		return -1;
	b->names[b->nnames] = pstrdup(name);
	b->name_ids[b->nnames] = 0;
	b->name_counts[b->nnames] = 0;
	b->nhash[i] = ++b->nnames;
	return b->nnames - 1;
}

/*
 * Looks up the pickings named by the call's string subjects with one query,
 * instead of one lookup per event (most subjects are picking names).
 * resolve_subject then takes a name from here; a subject found by picking
 * id first, or not a string, is not affected.
 */
static void
prefetch_names(IngestBatch *b, JsonbContainer *root, bool is_batch)
{
	MemoryContext old = MemoryContextSwitchTo(b->cxt);
	Datum	   *elems;
	Datum		arg;
	int			ret;

	b->names = palloc(sizeof(char *) * b->n);
	b->name_ids = palloc(sizeof(int32) * b->n);
	b->name_counts = palloc(sizeof(int) * b->n);
	b->nhash = palloc0(sizeof(int) * b->hsize);
	for (int i = 0; i < b->n; i++)
	{
		JsonbValue *ev = is_batch ? getIthJsonbValueFromContainer(root, i) : NULL;
		JsonbContainer *c = is_batch ? NULL : root;
		JsonbValue	buf;

		if (ev != NULL && ev->type == jbvBinary && JsonContainerIsObject(ev->val.binary.data))
			c = ev->val.binary.data;
		if (c == NULL || !JsonContainerIsObject(c) ||
			getKeyJsonValueFromContainer(c, "subject", 7, &buf) == NULL ||
			buf.type != jbvString || buf.val.string.len == 0 ||
			buf.val.string.len > 800)
			continue;
		(void) name_find(b, pnstrdup(buf.val.string.val, buf.val.string.len), true);
	}
	if (b->nnames == 0)
	{
		MemoryContextSwitchTo(old);
		return;
	}
	elems = palloc(sizeof(Datum) * b->nnames);
	for (int i = 0; i < b->nnames; i++)
		elems[i] = CStringGetTextDatum(b->names[i]);
	arg = PointerGetDatum(construct_array(elems, b->nnames, TEXTOID, -1, false, TYPALIGN_INT));
	MemoryContextSwitchTo(old);

	ret = SPI_execute_plan(plan_by_names, &arg, NULL, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "subject lookup failed: %s", SPI_result_code_string(ret));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		char	   *name = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);
		int			k = name ? name_find(b, name, false) : -1;
		int64		count;

		if (k < 0)
			continue;
		b->name_ids[k] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r],
													 SPI_tuptable->tupdesc, 2, &isnull));
		count = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
											SPI_tuptable->tupdesc, 3, &isnull));
		b->name_counts[k] = count > 2 ? 2 : (int) count;
	}
	SPI_freetuptable(SPI_tuptable);
}

/*
 * Inserts the waiting events with one INSERT ... SELECT FROM unnest(...)
 * ON CONFLICT (source, event_id) DO NOTHING: those it returns are accepted,
 * the others were stored already (duplicate).  One statement per call
 * instead of one per event: executor start-up, the check constraint and
 * each index's descent were most of ingest's cost.  Rows are inserted in
 * input order (identity ids, hence apply order, follow it).
 */
static void
flush_batch(IngestBatch *b)
{
	static const Oid elemtypes[9] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT4OID,
	TIMESTAMPTZOID, TEXTOID, JSONBOID, JSONBOID};
	Datum		args[9];
	int			ret;
	MemoryContext old;

	if (b->np == 0)
		return;
	old = MemoryContextSwitchTo(b->cxt);
	for (int c = 0; c < 9; c++)
	{
		int16		typlen;
		bool		typbyval;
		char		typalign;
		int			dims[1] = {b->np};
		int			lbs[1] = {1};

		get_typlenbyvalalign(elemtypes[c], &typlen, &typbyval, &typalign);
		args[c] = PointerGetDatum(construct_md_array(b->col[c],
													 c == 6 ? b->corr_null : NULL,
													 1, dims, lbs, elemtypes[c],
													 typlen, typbyval, typalign));
	}
	MemoryContextSwitchTo(old);

	ret = SPI_execute_plan(plan_insert, args, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "inbound insert failed: %s", SPI_result_code_string(ret));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *source = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		char	   *id = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		int			p = key_find(b, source, id, false, 0);

		if (p < 0)
			elog(ERROR, "inbound insert returned an event it was not given");
		b->results[b->slot[p]].status = "accepted";
		b->accepted++;
	}
	SPI_freetuptable(SPI_tuptable);
	for (int p = 0; p < b->np; p++)
		if (b->results[b->slot[p]].status == NULL)
			b->results[b->slot[p]].status = "duplicate";
	b->np = 0;
	memset(b->hash, 0, sizeof(int) * b->hsize);
}

/*
 * Validates and resolves one event; a valid one waits for the batch insert
 * (a repeat of a waiting one is a duplicate at once), an invalid one is
 * rejected.  Runs in a short-lived context; what must outlive it is copied
 * into the batch's.
 */
static void
ingest_one(IngestBatch *b, int index, JsonbValue *jv, Jsonb *whole,
		   List *custom_types)
{
	IngestEvent ev;
	Verdict		v;
	IngestResult *r = &b->results[index];
	MemoryContext old;
	int			p;

	memset(&ev, 0, sizeof(ev));
	memset(&v, 0, sizeof(v));
	if (!validate_event(jv, &ev, custom_types, &v) || !resolve_subject(b, &ev, &v))
	{
		old = MemoryContextSwitchTo(b->cxt);
		r->source = ev.source ? pstrdup(ev.source) : NULL;
		r->id = ev.id ? pstrdup(ev.id) : NULL;
		r->status = "rejected";
		r->v.sqlstate = v.sqlstate;
		r->v.reason = pstrdup(v.reason);
		r->v.field = pstrdup(v.field);
		MemoryContextSwitchTo(old);
		return;
	}

	old = MemoryContextSwitchTo(b->cxt);
	r->source = pstrdup(ev.source);
	r->id = pstrdup(ev.id);
	p = b->np;
	b->slot[p] = index;
	if (key_find(b, ev.source, ev.id, true, p) >= 0)
	{
		/* the same (source, id) earlier in this call */
		r->status = "duplicate";
		MemoryContextSwitchTo(old);
		return;
	}
	b->col[0][p] = CStringGetTextDatum(ev.source);
	b->col[1][p] = CStringGetTextDatum(ev.id);
	b->col[2][p] = CStringGetTextDatum(ev.type);
	b->col[3][p] = CStringGetTextDatum(ev.subject);
	b->col[4][p] = Int32GetDatum(ev.picking_id);
	b->col[5][p] = TimestampTzGetDatum(ev.time);
	b->corr_null[p] = ev.correlation_id == NULL;
	b->col[6][p] = ev.correlation_id ? CStringGetTextDatum(ev.correlation_id) : (Datum) 0;
	b->col[7][p] = JsonbPGetDatum(JsonbValueToJsonb(&ev.data));
	b->col[8][p] = JsonbPGetDatum(whole ? whole : JsonbValueToJsonb(jv));
	b->np++;
	MemoryContextSwitchTo(old);
}

/*
 * The body of both ingest() variants, for a parsed document whose size was
 * checked: depth, shape and batch limits, then each event in order, one
 * insert for the valid ones.  Uses SPI; the result is a materialized set.
 */
static Datum
ingest_document(FunctionCallInfo fcinfo, Jsonb *doc)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	JsonbContainer *root = &doc->root;
	MemoryContext per_event,
				old;
	List	   *custom_types;
	bool		is_batch;
	int			n;
	Oid			picking_rel;
	IngestBatch b;

	if (jsonb_depth(doc, ingest_max_depth) > ingest_max_depth)
		depth_error();
	is_batch = JsonContainerIsArray(root) && !JsonContainerIsScalar(root);
	if (!is_batch && !JsonContainerIsObject(root))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("inbound document must be an event object or an array of events"),
				 errdetail("The document is a JSON scalar.")));
	n = is_batch ? JsonContainerSize(root) : 1;
	if (n > ingest_max_batch)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("inbound batch is too large"),
				 errdetail("The batch has %d events; odoo_sync.ingest_max_batch is %d.",
						   n, ingest_max_batch)));

	picking_rel = RangeVarGetRelid(makeRangeVar(ODOO_SCHEMA, "stock_picking", -1),
								   AccessShareLock, true);
	if (!OidIsValid(picking_rel))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("odoo_sync.ingest needs Odoo's table " ODOO_SCHEMA ".stock_picking"),
				 errdetail("Shipment references are resolved against Odoo pickings; "
						   "this database has none.")));

	InitMaterializedSRF(fcinfo, 0);

	/* made before SPI_connect: the results outlive SPI's memory */
	memset(&b, 0, sizeof(b));
	b.cxt = AllocSetContextCreate(CurrentMemoryContext, "odoo_sync ingest batch",
								  ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(b.cxt);
	b.n = n;
	b.results = palloc0(sizeof(IngestResult) * n);
	b.slot = palloc(sizeof(int) * n);
	for (int c = 0; c < 9; c++)
		b.col[c] = palloc(sizeof(Datum) * n);
	b.corr_null = palloc(sizeof(bool) * n);
	b.hsize = 8;
	while (b.hsize < 2 * n)
		b.hsize *= 2;
	b.hash = palloc0(sizeof(int) * b.hsize);
	MemoryContextSwitchTo(old);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	prepare_plans();
	custom_types = load_custom_types();
	/* (one event: its own lookup is cheaper than the set-up of the query) */
	if (n > 1)
		prefetch_names(&b, root, is_batch);

	per_event = AllocSetContextCreate(CurrentMemoryContext, "odoo_sync ingest event",
									  ALLOCSET_DEFAULT_SIZES);
	if (!is_batch)
	{
		JsonbValue	jv;

		jv.type = jbvBinary;
		jv.val.binary.data = root;
		jv.val.binary.len = VARSIZE(doc) - VARHDRSZ;
		old = MemoryContextSwitchTo(per_event);
		ingest_one(&b, 0, &jv, doc, custom_types);
		MemoryContextSwitchTo(old);
	}
	else
	{
		for (int i = 0; i < n; i++)
		{
			JsonbValue *jv;

			CHECK_FOR_INTERRUPTS();
			old = MemoryContextSwitchTo(per_event);
			jv = getIthJsonbValueFromContainer(root, i);
			ingest_one(&b, i, jv, NULL, custom_types);
			MemoryContextSwitchTo(old);
			MemoryContextReset(per_event);
		}
	}
	MemoryContextDelete(per_event);
	flush_batch(&b);
	SPI_finish();

	for (int i = 0; i < n; i++)
		emit(rsinfo, i, b.results[i].source, b.results[i].id, b.results[i].status,
			 &b.results[i].v);
	MemoryContextDelete(b.cxt);

	if (b.accepted > 0)
		odoo_sync_wake_at_commit(OSW_APPLY);
	return (Datum) 0;
}

/*
 * odoo_sync.ingest(jsonb): see the file header.
 */
Datum
odoo_sync_ingest(PG_FUNCTION_ARGS)
{
	Jsonb	   *doc = PG_GETARG_JSONB_P(0);

	check_size(VARSIZE(doc) - VARHDRSZ);
	return ingest_document(fcinfo, doc);
}

/*
 * odoo_sync.ingest(text): size and depth are checked on the text, before
 * it is parsed; a parse error is reported as such.
 */
Datum
odoo_sync_ingest_text(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	size_t		len = VARSIZE_ANY_EXHDR(t);
	char	   *cstr;
	Jsonb	   *volatile doc = NULL;
	MemoryContext cxt = CurrentMemoryContext;

	check_size(len);
	if (text_depth(VARDATA_ANY(t), len, ingest_max_depth) > ingest_max_depth)
		depth_error();
	cstr = text_to_cstring(t);
	PG_TRY();
	{
		doc = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(cstr)));
	}
	PG_CATCH();
	{
		ErrorData  *e;

		/* rethrown at once as an ERROR: no subtransaction needed */
		MemoryContextSwitchTo(cxt);
		e = CopyErrorData();
		FlushErrorState();
		ereport(ERROR,
				(errcode(e->sqlerrcode),
				 errmsg("inbound document is not valid JSON"),
				 errdetail("%s", e->detail ? e->detail : e->message)));
	}
	PG_END_TRY();
	return ingest_document(fcinfo, doc);
}
