/*-------------------------------------------------------------------------
 *
 * deliver.c
 *	  The deliver workers: send the event log's deliveries to endpoints.
 *
 * Two workers per database, one per lane: "odoo_sync deliver critical"
 * (OSW_DELIVER_CRITICAL) claims and sends only critical deliveries,
 * "odoo_sync deliver" (OSW_DELIVER) only bulk ones, so that a critical
 * event never waits for a bulk turn (responses, JSON, signing, recording)
 * of the same process.  Everything below describes one worker and its lane.
 *
 * Queue.  odoo_sync.delivery holds pending and in-flight deliveries (one row
 * per event and endpoint), created by the fan-out trigger on odoo_sync.event
 * in the inserting transaction, which also wakes this worker at commit.
 * Finished deliveries move to odoo_sync.delivery_done (delivered or dead), so
 * the hot table only holds what is still to do.
 *
 * Turn.  Each turn of the loop, in one short transaction: record the results
 * of the requests that finished, persist circuit breaker changes, and claim
 * more work (lock with SELECT ... FOR UPDATE SKIP LOCKED, then an UPDATE by
 * ctid that moves next_at to a lease expiry).  The transaction commits, then
 * the requests are started; no transaction or snapshot is held while HTTP
 * runs.  Queued requests are started before a turn, so that receivers work
 * while the database does.  Claims are large and rare (at least half a
 * lane's target), results are recorded in batches (within RESULT_DELAY).
 *
 * Plans.  Queue statements are generic plans, kept, made with the planner
 * methods that only pay off on a small table disabled (see queue_plan_off):
 * the queue's statistics are nearly always stale, and a plan made for an
 * empty queue was quadratic against a flood.  Rows the worker holds are
 * found again by the ctid its claim wrote (TID scans, checked by id).
 * Claimed rows whose worker died become claimable again when the lease
 * expires; a starting worker releases its lane's leases at once (they were
 * its predecessor's: a lane has one deliver worker), never the other lane's.
 *
 * Ordering.  For ordered subscriptions, a delivery is claimable only when no
 * delivery of the same endpoint and aggregate with a smaller aggregate_seq
 * is still in the queue (pending, retrying or in flight), whatever its lane:
 * event n+1 of a shipment is not sent before event n is delivered or dead,
 * also when the two are in different lanes, hence different workers (the
 * check is made in SQL against the queue, which only loses a row when its
 * result commits).
 *
 * Lanes.  What must hold per endpoint whatever the lane is shared by the two
 * workers in the database's shared-memory slot (OdooSyncEndpointShare, see
 * share_of): requests in flight per lane, with their sum held to the
 * endpoint's concurrency and bulk requests to concurrency - max(1,
 * concurrency / 4) so that a bulk flood always leaves places for critical
 * events; the rate limit's token bucket; the circuit breaker.  A worker
 * waiting for a place the other holds is woken when the other frees one.
 *
 * Retries.  408, 425, 429, 5xx, timeouts and connection errors are retried
 * with exponential backoff and full jitter (uniform in [0, min(backoff_max,
 * backoff_base * 2^(attempt-1))]), or after Retry-After when the endpoint
 * sends one; other answers (3xx, 4xx) are final.  A delivery is dead when it
 * failed finally, used max_attempts, or its next try would be later than
 * created_at + max_age; the dead row keeps the status, error and a bounded
 * excerpt of the response.
 *
 * Circuit breaker.  breaker_threshold consecutive failures (5xx, 408,
 * timeouts, connection errors; of both lanes) open the circuit: queued work is released,
 * nothing is claimed.  After breaker_cooldown one request probes (half-open);
 * success closes the circuit, failure opens it again.
 *
 * Rate limit.  A token bucket per endpoint (burst of one request, shared by
 * both lanes) spaces requests at 1 / rate_limit seconds.
 *
 * Memory.  Endpoints, queued items and requests live in DeliverContext and
 * are freed one by one; per-turn work uses TurnContext, reset every turn.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#ifdef __linux__
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/md5.h"
#include "executor/executor.h"
#include "parser/parse_relation.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "bulk.h"
#include "odoo_sync.h"
#include "deliver.h"

bool		odoo_sync_allow_private_endpoints = false;
static int	deliver_lease_margin = 60000;
static int	deliver_critical_slice = 100;

#define LANE_CRITICAL 0
#define LANE_BULK 1
#define NLANES 2
static const char *const lane_names[NLANES] = {"critical", "bulk"};

#define KEY_MAX SIGN_KEY_MAX
#define CLAIM_MAX 5000
#define CLAIM_MIN 512
#define CHUNK_MAX 256			/* events per chunk, as the fan-out writes them */
#define CHUNK_CLAIM 32			/* chunks looked at per endpoint and claim */

/*
 * Results are recorded at once past this many, else within RESULT_DELAY
 * (sooner when nothing else is running): a successor in an aggregate waits
 * for its predecessor to be recorded, and each turn costs a transaction.
 */
#define RESULT_BATCH 256
#define RESULT_DELAY_US 10000

typedef enum Circuit
{
	CIRCUIT_CLOSED,
	CIRCUIT_OPEN,
	CIRCUIT_HALF_OPEN
} Circuit;
static const char *const circuit_names[] = {"closed", "open", "half_open"};

typedef struct DItem
{
	int64		id;
	ItemPointerData tid;		/* the row version the claim wrote */
	int32		attempts;
	TimestampTz created_at;
	char		event_id[40];
	char	   *json;			/* the CloudEvent, NULL if the event is gone */
	int			jsonlen;
	char	   *traceparent;
	/* an event of a chunk (else a delivery row) */
	struct Chunk *chunk;
	int			idx;			/* its place in the chunk */
	struct AggEntry *agg;		/* its aggregate (ordered chunks), or NULL */
	struct DItem *next_held;	/* in its aggregate's queue of waiting items */
	bool		agg_busy;		/* the one of its aggregate queued or in flight */
} DItem;

/*
 * How an event of a chunk ended its first turn.  Only END_OK ends in the
 * history alone; the others are written as delivery rows (END_RETRY,
 * END_HELD) or as a dead letter (END_DEAD), so that every later attempt
 * goes the way of the one-by-one queue.
 */
typedef enum ItemEnd
{
	END_NONE = 0,
	END_OK,
	END_DEAD,
	END_RETRY,					/* failed, retry at retry_at */
	END_HELD					/* not sent: waits behind an earlier event of its
								 * aggregate, or given back */
} ItemEnd;

typedef struct ChunkResult
{
	char		end;			/* ItemEnd */
	bool		sent;
	int32		status;
	TimestampTz at;
	TimestampTz retry_at;
	char	   *error;
	char	   *excerpt;
} ChunkResult;

/*
 * A claimed chunk: its events are sent like claimed rows; when every one
 * has ended its first turn, the chunk is recorded (deleted, its history
 * and rows written) in one statement group.
 */
typedef struct Chunk
{
	int64		id;
	struct Endpoint *ep;
	int			lane;
	bool		ordered;
	bool		other_lane;		/* the other lane had chunks of its aggregate type */
	char	   *agg_type;		/* of its events */
	int			n;
	int			open;			/* events without an end yet */
	TimestampTz created_at;
	int64	   *ids;
	char	  (*event_ids)[40];
	TimestampTz *event_at;
	struct AggEntry **aggs;
	ChunkResult *res;
	struct Chunk *next;			/* all chunks in memory */
} Chunk;

/*
 * Per endpoint and aggregate, the ordered events of chunks in memory: one
 * is queued or in flight at a time (busy), the others wait in held order.
 * Once one of them must be retried (or waits behind a delivery row), the
 * aggregate is poisoned: the rest are written as rows behind it.  An entry
 * lives until the last chunk with an event of it is recorded, so that a
 * newer chunk claimed meanwhile still sees the poison (the rows are written
 * in the same transaction as its claim, before it).
 */
#define AGG_KEYLEN 160
typedef struct AggEntry
{
	char		key[AGG_KEYLEN];	/* endpoint id / aggregate type / id; a
									 * longer key is cut: two aggregates then
									 * share an entry, which only orders more */
	int			refs;			/* events in memory */
	bool		busy;
	bool		poisoned;
	int64		poison_chunk;	/* the newest chunk whose rows poisoned it */
	DItem	   *held_head;
	DItem	   *held_tail;
} AggEntry;

typedef struct Queue
{
	DItem	  **items;
	int			head;
	int			tail;
	int			cap;
} Queue;

typedef struct Endpoint
{
	int			id;
	bool		present;		/* still in the endpoint table */
	bool		enabled;
	char	   *name;
	char	   *url;
	char	  **headers;		/* "Name: value" */
	int			nheaders;
	long		connect_ms;
	long		timeout_ms;
	int			concurrency;
	int			batch_size;
	double		rate_limit;		/* 0 = none */
	int			max_attempts;
	int64		max_age_ms;
	char		max_age_text[64];	/* as written, for error texts */
	int64		backoff_base_ms;
	int64		backoff_max_ms;
	int			breaker_threshold;
	int64		breaker_cooldown_ms;
	bool		verify_tls;
	unsigned char key[KEY_MAX];
	int			keylen;			/* -1: no secret, no signature */
	bool		secret_warned;	/* an unusable secret was reported */

	/* runtime */
	Queue		queue[NLANES];
	int			active[NLANES]; /* requests in flight */
	int			active_items[NLANES];
	int			held_items[NLANES];	/* chunk events waiting behind their aggregate */
	bool		want_claim[NLANES];
	bool		results_waiting[NLANES];	/* results not yet recorded */
	TimestampTz next_due[NLANES];	/* 0 = none known */
	TimestampTz *due[NLANES];	/* retry times this worker scheduled */
	int			ndue[NLANES];
	Circuit		circuit;
	int			failures;
	TimestampTz opened_at;
	bool		probe_in_flight;
	bool		state_dirty;
	double		tokens;
	TimestampTz tokens_at;
	int64		request_us;		/* moving average of request durations, 0 = none yet */

	/* what the other lane's worker shares (see share_of) */
	int			share_idx;		/* index in my_slot->endpoints, -1 = none */
	OdooSyncEndpointShare own_share;	/* used when no shared entry is free */
	bool		share_warned;
	bool		rate_blocked;	/* dispatch stopped for lack of a token */
} Endpoint;

typedef struct Send
{
	HttpRequest req;			/* first: http.c hands it back */
	Endpoint   *ep;
	int			lane;
	int			nitems;
	DItem	  **items;
	char	   *body;
	struct curl_slist *hdrs;
	bool		probe;
} Send;

/* results waiting to be recorded */
typedef struct Results
{
	int			n_ok;
	int			cap_ok;
	Datum	   *ok_id;
	Datum	   *ok_status;
	Datum	   *ok_at;
	ItemPointerData *ok_tid;
	int			n_fail;
	int			cap_fail;
	Datum	   *f_id;
	Datum	   *f_status;
	Datum	   *f_error;
	Datum	   *f_excerpt;
	Datum	   *f_at;
	Datum	   *f_retry;
	ItemPointerData *f_tid;
	int			n_rel;
	int			cap_rel;
	Datum	   *rel_id;
	ItemPointerData *rel_tid;
} Results;

static MemoryContext DeliverContext = NULL;
static MemoryContext TurnContext = NULL;
static Endpoint **endpoints = NULL;
static int	nendpoints = 0;
static Results results;
static Chunk *chunks = NULL;	/* claimed, not yet recorded */
static bool wake_other_lane = false;	/* after this turn's commit */
static int	nchunks_complete = 0;
static HTAB *agg_table = NULL;
static TimestampTz endpoints_loaded_at = 0;
static uint32 endpoints_gen_loaded = 0;	/* odoo_sync_endpoints_gen() then */
static uint32 turn_gen = 0;		/* read before this turn's snapshot */
static bool claim_all = true;
static TimestampTz reload_at = 0;
static TimestampTz last_sweep = 0;	/* last claim over every endpoint */	/* an endpoint reload is due then */

/*
 * This worker's lane: a database has one deliver worker per lane
 * (OSW_DELIVER_CRITICAL, OSW_DELIVER for bulk), each claiming and sending
 * only its lane's deliveries.  Per endpoint they share, in shared memory,
 * the requests in flight, the rate limit's bucket and the circuit breaker.
 */
static int	my_lane = LANE_BULK;
static OdooSyncWorkerKind other_kind = OSW_DELIVER_CRITICAL;
static OdooSyncDbSlot *my_slot = NULL;

static SPIPlanPtr plan_claim = NULL;
static SPIPlanPtr plan_lease = NULL;
static SPIPlanPtr plan_ok = NULL;
static SPIPlanPtr plan_ok_by_id = NULL;
static SPIPlanPtr plan_fail = NULL;
static SPIPlanPtr plan_fail_by_id = NULL;
static SPIPlanPtr plan_release = NULL;
static SPIPlanPtr plan_state = NULL;

PG_FUNCTION_INFO_V1(odoo_sync_check_url);
PG_FUNCTION_INFO_V1(odoo_sync_check_secret);
PG_FUNCTION_INFO_V1(odoo_sync_raise_hidden);

/* ------------------------------------------------------------------ */
/* settings */

void
odoo_sync_deliver_init(void)
{
	DefineCustomBoolVariable("odoo_sync.allow_private_endpoints",
							 "Allows endpoints on loopback, private and "
							 "link-local addresses.",
							 "Off by default so that an endpoint URL cannot "
							 "reach the database server's own network; turn "
							 "it on for tests, demos and on-premises receivers.",
							 &odoo_sync_allow_private_endpoints,
							 false,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("odoo_sync.delivery_lease_margin",
							"Time added to an endpoint's timeout to form the "
							"lease of a claimed delivery.",
							"A delivery whose worker died is sent again when "
							"its lease expires (a restarted worker takes its "
							"predecessor's deliveries back at once).",
							&deliver_lease_margin,
							60000, 1000, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("odoo_sync.deliver_critical_slice",
							"CPU time slice, in microseconds, the critical lane's "
							"deliver worker asks of the Linux scheduler (0: the "
							"kernel's default).",
							"With a slice shorter than other processes', the "
							"kernel (EEVDF, Linux 6.12 and later) lets it run "
							"as soon as a critical event wakes it instead of "
							"after the running process's slice.  Ignored "
							"elsewhere.",
							&deliver_critical_slice,
							100, 0, 100000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
}

/* ------------------------------------------------------------------ */
/* small helpers */

static void
queue_push(Queue *q, DItem *it)
{
	if (q->tail == q->cap)
	{
		if (q->head > 0)
		{
			memmove(q->items, q->items + q->head,
					sizeof(DItem *) * (q->tail - q->head));
			q->tail -= q->head;
			q->head = 0;
		}
		if (q->tail == q->cap)
		{
			q->cap = q->cap ? q->cap * 2 : 64;
			q->items = q->items ?
				repalloc(q->items, sizeof(DItem *) * q->cap) :
				MemoryContextAlloc(DeliverContext, sizeof(DItem *) * q->cap);
		}
	}
	q->items[q->tail++] = it;
}

static inline int
queue_len(Queue *q)
{
	return q->tail - q->head;
}

static DItem *
queue_pop(Queue *q)
{
	DItem	   *it;

	if (q->head == q->tail)
		return NULL;
	it = q->items[q->head++];
	if (q->head == q->tail)
		q->head = q->tail = 0;
	return it;
}

static void
grow(Datum **arr, int *cap, int need)
{
	if (need <= *cap)
		return;
	*cap = Max(need, *cap ? *cap * 2 : 256);
	*arr = *arr ? repalloc(*arr, sizeof(Datum) * *cap) :
		MemoryContextAlloc(DeliverContext, sizeof(Datum) * *cap);
}

/* same for the ctid arrays (kept in step with the Datum arrays) */
static void
grow_tid(ItemPointerData **arr, int oldcap, int cap)
{
	if (cap <= oldcap && *arr != NULL)
		return;
	*arr = *arr ? repalloc(*arr, sizeof(ItemPointerData) * cap) :
		MemoryContextAlloc(DeliverContext, sizeof(ItemPointerData) * cap);
}

/* a tid[] of n items (pointing into tids, which must outlive it) */
static ArrayType *
make_tid_array(ItemPointerData *tids, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		d[i] = PointerGetDatum(&tids[i]);
	return construct_array(d, n, TIDOID, sizeof(ItemPointerData), false,
						   TYPALIGN_SHORT);
}

static void
free_item(DItem *it)
{
	if (it->json)
		pfree(it->json);
	if (it->traceparent)
		pfree(it->traceparent);
	pfree(it);
}

/* bounded, valid text from a response body */
static char *
clean_excerpt(const char *s, int len)
{
	StringInfoData b;
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;

	initStringInfo(&b);
	for (int i = 0; i < len;)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == 0)
		{
			i++;
			continue;
		}
		if (c < 0x80)
		{
			appendStringInfoChar(&b, c);
			i++;
			continue;
		}
		if (utf8)
		{
			int			l = pg_utf_mblen((const unsigned char *) s + i);

			if (i + l <= len && pg_utf8_islegal((const unsigned char *) s + i, l))
			{
				appendBinaryStringInfo(&b, s + i, l);
				i += l;
				continue;
			}
		}
		appendStringInfoChar(&b, '?');
		i++;
	}
	return b.data;
}

static Datum
text_datum(const char *s)
{
	return PointerGetDatum(cstring_to_text(s));
}

static ArrayType *
make_array(Datum *d, int n, Oid type)
{
	switch (type)
	{
		case INT8OID:
			return construct_array(d, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
		case INT4OID:
			return construct_array(d, n, INT4OID, 4, true, TYPALIGN_INT);
		case TIMESTAMPTZOID:
			return construct_array(d, n, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
		case BOOLOID:
			return construct_array(d, n, BOOLOID, 1, true, TYPALIGN_CHAR);
		case TEXTOID:
			return construct_array(d, n, TEXTOID, -1, false, TYPALIGN_INT);
		default:
			elog(ERROR, "make_array: unexpected element type %u", type);
			return NULL;		/* keep the compiler quiet */
	}
}

/*
 * Planner methods the queue statements are planned without.  The queue's
 * statistics are nearly always wrong (a flood arrives within a second;
 * analyze may last have seen the queue empty), and a plan chosen for an
 * empty queue (sequential scans, sorts, hash joins, a whole index walked
 * as a stand-in for a sequential scan) is quadratic against a flood: one
 * claim ran for minutes with 100k rows queued.  Without these methods, the
 * plans are the same whatever the statistics say: the lane's partial index
 * in (id + 0) order, predecessor checks as index probes, rows found by
 * ctid or primary key; their cost follows the rows touched, not the
 * queue's length.  (enable_sort stays on: with it off, a 500-row claim of
 * the same shape ran 400 ms instead of 6 ms.)
 */
static const char *const queue_plan_off[] = {
	"enable_seqscan", "enable_bitmapscan", "enable_hashjoin", "enable_mergejoin"
};

/*
 * Statements that find queue rows by ctid (the versions the claim wrote)
 * leave the planner nothing but a TID scan: with stale statistics an index
 * walked whole with the ctid list as a filter looked cheaper.
 */
static const char *const tid_plan_off[] = {
	"enable_seqscan", "enable_bitmapscan", "enable_indexscan",
	"enable_indexonlyscan", "enable_hashjoin", "enable_mergejoin"
};

/*
 * run_plan
 *		Prepares sql once as a generic plan (kept across transactions; planned
 *		again only when the plan cache invalidates it) and executes it, with
 *		queue_plan_off in force for that statement.  Planning afresh at every
 *		turn (custom plans) cost a quarter of the worker's time.
 */
static void
run_plan_with(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types,
			  Datum *values, int expect, const char *const *off, int noff)
{
	int			rc;
	int			level = NewGUCNestLevel();

	for (int i = 0; i < noff; i++)
		(void) set_config_option(off[i], "off", PGC_USERSET,
								 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	if (*plan == NULL)
	{
		SPIPlanPtr	p = SPI_prepare_cursor(sql, nargs, types,
										   CURSOR_OPT_GENERIC_PLAN);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		*plan = p;
	}
	rc = SPI_execute_plan(*plan, values, NULL, false, 0);
	if (rc != expect)
		elog(ERROR, "SPI_execute_plan returned %s", SPI_result_code_string(rc));
	AtEOXact_GUC(true, level);
}

/* a statement on the queue found by key (queue_plan_off) */
static void
run_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types,
		 Datum *values, int expect)
{
	run_plan_with(plan, sql, nargs, types, values, expect,
				  queue_plan_off, lengthof(queue_plan_off));
}

/* a statement on queue rows found by ctid only (tid_plan_off) */
static void
run_tid_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types,
			 Datum *values, int expect)
{
	run_plan_with(plan, sql, nargs, types, values, expect,
				  tid_plan_off, lengthof(tid_plan_off));
}

/* ------------------------------------------------------------------ */
/* what the two lanes' workers share about an endpoint */

static int	lane_cap(Endpoint *ep, int lane);
static void release_queued(Endpoint *ep);
static void item_end(DItem *it, ItemEnd end, long status, const char *error,
					 const char *excerpt, TimestampTz at, TimestampTz retry_at);

/*
 * share_of
 *		The endpoint's entry in this database's shared slot, found by id
 *		(the index is cached and checked), or a new entry initialised from
 *		this worker's state.  When all ODOO_SYNC_DELIVER_ENDPOINTS entries are
 *		taken, the endpoint's private copy: its limits then hold per worker.
 *		The caller holds OdooSyncShmem->mutex.
 */
static OdooSyncEndpointShare *
share_of(Endpoint *ep)
{
	OdooSyncEndpointShare *sh;
	int			free_idx = -1;

	if (my_slot == NULL)
		return &ep->own_share;
	if (ep->share_idx >= 0 &&
		my_slot->endpoints[ep->share_idx].endpoint_id == ep->id)
		return &my_slot->endpoints[ep->share_idx];
	for (int i = 0; i < ODOO_SYNC_DELIVER_ENDPOINTS; i++)
	{
		sh = &my_slot->endpoints[i];
		if (sh->endpoint_id == ep->id)
		{
			ep->share_idx = i;
			return sh;
		}
		if (sh->endpoint_id == 0 && free_idx < 0)
			free_idx = i;
	}
	ep->share_idx = free_idx;
	if (free_idx < 0)
		return &ep->own_share;
	sh = &my_slot->endpoints[free_idx];
	*sh = ep->own_share;
	sh->endpoint_id = ep->id;
	sh->circuit = ep->circuit;
	sh->failures = ep->failures;
	sh->opened_at = ep->opened_at;
	/* what this worker has in flight, should it have lost its entry */
	sh->active[my_lane] = ep->active[my_lane];
	return sh;
}

static OdooSyncEndpointShare *
share_lock(Endpoint *ep)
{
	SpinLockAcquire(&OdooSyncShmem->mutex);
	return share_of(ep);
}

static void
share_unlock(Endpoint *ep, OdooSyncEndpointShare *sh)
{
	SpinLockRelease(&OdooSyncShmem->mutex);
	if (sh == &ep->own_share && my_slot != NULL && !ep->share_warned)
	{
		ep->share_warned = true;
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("endpoint \"%s\" has no shared delivery state", ep->name),
				 errdetail("A database shares the state of at most %d endpoints between its two deliver workers.",
						   ODOO_SYNC_DELIVER_ENDPOINTS),
				 errhint("Its concurrency and rate limit now hold per lane, and each lane has its own circuit breaker.")));
	}
}

/*
 * breaker_adopt
 *		Takes the shared circuit state (copied under the mutex) into the
 *		endpoint: queued work goes back to the table when the circuit
 *		opened, claims resume when it closed or half-opened.
 */
static void
breaker_adopt(Endpoint *ep, OdooSyncEndpointShare *copy)
{
	Circuit		was = ep->circuit;

	ep->circuit = (Circuit) copy->circuit;
	ep->failures = copy->failures;
	ep->opened_at = copy->opened_at;
	ep->probe_in_flight = copy->probe_in_flight;
	if (ep->circuit == was)
		return;
	if (ep->circuit == CIRCUIT_OPEN)
		release_queued(ep);
	else
		for (int l = 0; l < NLANES; l++)
			ep->want_claim[l] = true;
}

/* reads the shared circuit state (the other worker may have changed it) */
static void
breaker_pull(Endpoint *ep)
{
	OdooSyncEndpointShare *sh = share_lock(ep);
	OdooSyncEndpointShare copy = *sh;

	share_unlock(ep, sh);
	breaker_adopt(ep, &copy);
}

/* at start: what a previous worker of this lane held is no longer held */
static void
share_reset_lane(void)
{
	bool		wake_other = false;

	if (my_slot == NULL)
		return;
	SpinLockAcquire(&OdooSyncShmem->mutex);
	for (int i = 0; i < ODOO_SYNC_DELIVER_ENDPOINTS; i++)
	{
		OdooSyncEndpointShare *sh = &my_slot->endpoints[i];

		/* the other worker may wait for places our predecessor held */
		if (sh->active[my_lane] > 0 && sh->waiting[1 - my_lane])
		{
			sh->waiting[1 - my_lane] = false;
			wake_other = true;
		}
		sh->active[my_lane] = 0;
		sh->waiting[my_lane] = false;
		if (sh->probe_by == my_lane + 1)
		{
			sh->probe_in_flight = false;
			sh->probe_by = 0;
		}
	}
	SpinLockRelease(&OdooSyncShmem->mutex);
	if (wake_other)
		odoo_sync_wake(MyDatabaseId, other_kind);
}

/*
 * Forgets the entries of endpoints that no longer exist (ids are never
 * reused; entries above the largest id this worker read may be new ones of
 * the other worker).  With clear_all (the extension was dropped: a new one
 * starts its ids over), every entry.
 */
static void
share_forget(bool clear_all)
{
	int			max_id = 0;

	if (my_slot == NULL)
		return;
	for (int i = 0; i < nendpoints; i++)
		max_id = Max(max_id, endpoints[i]->id);
	SpinLockAcquire(&OdooSyncShmem->mutex);
	for (int i = 0; i < ODOO_SYNC_DELIVER_ENDPOINTS; i++)
	{
		OdooSyncEndpointShare *sh = &my_slot->endpoints[i];
		bool		keep = false;

		if (sh->endpoint_id == 0)
			continue;
		if (!clear_all)
		{
			keep = sh->endpoint_id > max_id;
			for (int k = 0; k < nendpoints && !keep; k++)
				keep = endpoints[k]->id == sh->endpoint_id && endpoints[k]->present;
		}
		if (!keep)
			memset(sh, 0, sizeof(*sh));
	}
	SpinLockRelease(&OdooSyncShmem->mutex);
}

/* ------------------------------------------------------------------ */
/* endpoints */

static Endpoint *
find_endpoint(int id)
{
	for (int i = 0; i < nendpoints; i++)
		if (endpoints[i]->id == id)
			return endpoints[i];
	return NULL;
}

static bool have_results(void);

/*
 * load_endpoints
 *		(Re)reads the endpoint table.  Must run inside a transaction with SPI
 *		connected.
 */
static void
load_endpoints(bool first)
{
	static SPIPlanPtr plan = NULL;
	int			rc;

	/* a kept plan: the second's reload costs the critical lane no planning */
	if (plan == NULL)
	{
		plan = SPI_prepare("SELECT e.id, e.name, e.url, e.enabled,"
						 " (extract(epoch FROM e.connect_timeout) * 1000)::int8,"
						 " (extract(epoch FROM e.timeout) * 1000)::int8,"
						 " e.concurrency, e.batch_size, coalesce(e.rate_limit, 0),"
						 " e.max_attempts,"
						 " (extract(epoch FROM e.max_age) * 1000)::int8,"
						 " (extract(epoch FROM e.backoff_base) * 1000)::int8,"
						 " (extract(epoch FROM e.backoff_max) * 1000)::int8,"
						 " e.breaker_threshold,"
						 " (extract(epoch FROM e.breaker_cooldown) * 1000)::int8,"
						 " e.verify_tls, s.secret,"
						 " (SELECT string_agg(key || ': ' || value, E'\\n')"
						 "    FROM pg_catalog.jsonb_each_text(e.headers)),"
						 " st.circuit, st.failures, st.opened_at, e.max_age::text"
						 " FROM odoo_sync.endpoint e"
						 " LEFT JOIN odoo_sync._endpoint_secret s ON s.endpoint_id = e.id"
						 " LEFT JOIN odoo_sync.endpoint_state st ON st.endpoint_id = e.id"
						   " ORDER BY e.id", 0, NULL);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
	}
	rc = SPI_execute_plan(plan, NULL, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read odoo_sync.endpoint");

	for (int i = 0; i < nendpoints; i++)
		endpoints[i]->present = false;

	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	td = SPI_tuptable->tupdesc;
		bool		isnull;
		int			id = DatumGetInt32(SPI_getbinval(tup, td, 1, &isnull));
		Endpoint   *ep = find_endpoint(id);
		char	   *s;
		char	   *secret;
		bool		was_enabled;

		if (ep == NULL)
		{
			ep = MemoryContextAllocZero(DeliverContext, sizeof(Endpoint));
			ep->id = id;
			ep->tokens = 1;
			ep->share_idx = -1;
			endpoints = endpoints ?
				repalloc(endpoints, sizeof(Endpoint *) * (nendpoints + 1)) :
				MemoryContextAlloc(DeliverContext, sizeof(Endpoint *));
			endpoints[nendpoints++] = ep;
			for (int l = 0; l < NLANES; l++)
				ep->want_claim[l] = true;
			/* circuit state survives restarts */
			s = SPI_getvalue(tup, td, 19);
			if (s && strcmp(s, "open") == 0)
			{
				ep->circuit = CIRCUIT_OPEN;
				ep->opened_at = DatumGetTimestampTz(SPI_getbinval(tup, td, 21, &isnull));
				if (isnull)
					ep->opened_at = GetCurrentTimestamp();
			}
			else if (s && strcmp(s, "half_open") == 0)
			{
				ep->circuit = CIRCUIT_OPEN;
				ep->opened_at = 0;
			}
			ep->failures = DatumGetInt32(SPI_getbinval(tup, td, 20, &isnull));
			if (isnull)
				ep->failures = 0;
			/* what a new shared entry starts from (see share_of) */
			ep->own_share.endpoint_id = id;
			ep->own_share.circuit = ep->circuit;
			ep->own_share.failures = ep->failures;
			ep->own_share.opened_at = ep->opened_at;
			ep->own_share.tokens = 1;
		}
		was_enabled = ep->enabled;
		ep->present = true;
		s = SPI_getvalue(tup, td, 2);
		if (ep->name == NULL || strcmp(ep->name, s) != 0)
		{
			if (ep->name)
				pfree(ep->name);
			ep->name = MemoryContextStrdup(DeliverContext, s);
		}
		s = SPI_getvalue(tup, td, 3);
		if (ep->url == NULL || strcmp(ep->url, s) != 0)
		{
			/* libcurl keeps its own copy of the URL of running requests */
			if (ep->url)
				pfree(ep->url);
			ep->url = MemoryContextStrdup(DeliverContext, s);
		}
		ep->enabled = DatumGetBool(SPI_getbinval(tup, td, 4, &isnull));
		ep->connect_ms = DatumGetInt64(SPI_getbinval(tup, td, 5, &isnull));
		ep->timeout_ms = DatumGetInt64(SPI_getbinval(tup, td, 6, &isnull));
		ep->concurrency = DatumGetInt32(SPI_getbinval(tup, td, 7, &isnull));
		ep->batch_size = DatumGetInt32(SPI_getbinval(tup, td, 8, &isnull));
		ep->rate_limit = DatumGetFloat8(SPI_getbinval(tup, td, 9, &isnull));
		ep->max_attempts = DatumGetInt32(SPI_getbinval(tup, td, 10, &isnull));
		ep->max_age_ms = DatumGetInt64(SPI_getbinval(tup, td, 11, &isnull));
		s = SPI_getvalue(tup, td, 22);
		strlcpy(ep->max_age_text, s ? s : "?", sizeof(ep->max_age_text));
		ep->backoff_base_ms = DatumGetInt64(SPI_getbinval(tup, td, 12, &isnull));
		ep->backoff_max_ms = DatumGetInt64(SPI_getbinval(tup, td, 13, &isnull));
		ep->breaker_threshold = DatumGetInt32(SPI_getbinval(tup, td, 14, &isnull));
		ep->breaker_cooldown_ms = DatumGetInt64(SPI_getbinval(tup, td, 15, &isnull));
		ep->verify_tls = DatumGetBool(SPI_getbinval(tup, td, 16, &isnull));
		secret = SPI_getvalue(tup, td, 17);
		ep->keylen = secret ? sign_key_from_secret(secret, ep->key, KEY_MAX) : -1;
		if (secret)
		{
			explicit_bzero(secret, strlen(secret));
			if (ep->keylen >= 0)
				ep->secret_warned = false;
			else if (!ep->secret_warned)
			{
				/* once per bad secret, not at every reload */
				ep->secret_warned = true;
				ereport(WARNING,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("secret of endpoint \"%s\" is not usable; its requests are sent unsigned",
								ep->name),
						 errhint("Set it again with odoo_sync.set_endpoint_secret().")));
			}
		}
		s = SPI_getvalue(tup, td, 18);
		for (int h = 0; h < ep->nheaders; h++)
			pfree(ep->headers[h]);
		if (ep->headers)
			pfree(ep->headers);
		ep->nheaders = 0;
		ep->headers = NULL;
		if (s)
		{
			char	   *save;
			char	   *tok;
			int			n = 1;

			for (char *p = s; *p; p++)
				if (*p == '\n')
					n++;
			ep->headers = MemoryContextAlloc(DeliverContext, sizeof(char *) * n);
			for (tok = strtok_r(s, "\n", &save); tok; tok = strtok_r(NULL, "\n", &save))
				ep->headers[ep->nheaders++] = MemoryContextStrdup(DeliverContext, tok);
		}
		if (!ep->enabled && was_enabled)
			release_queued(ep);
		if (ep->enabled && !was_enabled)
			for (int l = 0; l < NLANES; l++)
				ep->want_claim[l] = true;
		if (first)
			ep->state_dirty = false;
	}

	for (int i = 0; i < nendpoints; i++)
		if (!endpoints[i]->present)
		{
			endpoints[i]->enabled = false;
			release_queued(endpoints[i]);
		}
	share_forget(false);
	endpoints_loaded_at = GetCurrentTimestamp();
	endpoints_gen_loaded = turn_gen;
}

/* ------------------------------------------------------------------ */
/* results */

static void
add_ok(DItem *it, long status, TimestampTz at)
{
	Results    *r = &results;
	int			n = r->n_ok + 1;
	int			c = r->cap_ok;

	grow(&r->ok_id, &c, n);
	c = r->cap_ok;
	grow(&r->ok_status, &c, n);
	c = r->cap_ok;
	grow(&r->ok_at, &c, n);
	grow_tid(&r->ok_tid, r->cap_ok, c);
	r->cap_ok = c;
	r->ok_tid[r->n_ok] = it->tid;
	r->ok_id[r->n_ok] = Int64GetDatum(it->id);
	r->ok_status[r->n_ok] = Int32GetDatum((int32) status);
	r->ok_at[r->n_ok] = TimestampTzGetDatum(at);
	r->n_ok = n;
}

static void
add_fail(DItem *it, long status, const char *error, const char *excerpt,
		 TimestampTz at, TimestampTz retry_at)
{
	Results    *r = &results;
	int			n = r->n_fail + 1;
	int			c;
	MemoryContext old = MemoryContextSwitchTo(DeliverContext);

	c = r->cap_fail;
	grow(&r->f_id, &c, n);
	c = r->cap_fail;
	grow(&r->f_status, &c, n);
	c = r->cap_fail;
	grow(&r->f_error, &c, n);
	c = r->cap_fail;
	grow(&r->f_excerpt, &c, n);
	c = r->cap_fail;
	grow(&r->f_at, &c, n);
	c = r->cap_fail;
	grow(&r->f_retry, &c, n);
	grow_tid(&r->f_tid, r->cap_fail, c);
	r->cap_fail = c;
	r->f_tid[r->n_fail] = it->tid;
	r->f_id[r->n_fail] = Int64GetDatum(it->id);
	r->f_status[r->n_fail] = Int32GetDatum((int32) status);
	r->f_error[r->n_fail] = text_datum(error ? error : "");
	r->f_excerpt[r->n_fail] = text_datum(excerpt ? excerpt : "");
	r->f_at[r->n_fail] = TimestampTzGetDatum(at);
	r->f_retry[r->n_fail] = TimestampTzGetDatum(retry_at);
	r->n_fail = n;
	MemoryContextSwitchTo(old);
}

static void
add_release(DItem *it)
{
	Results    *r = &results;
	int			c = r->cap_rel;

	grow(&r->rel_id, &c, r->n_rel + 1);
	grow_tid(&r->rel_tid, r->cap_rel, c);
	r->cap_rel = c;
	r->rel_tid[r->n_rel] = it->tid;
	r->rel_id[r->n_rel++] = Int64GetDatum(it->id);
}

/* queued (claimed, not sent) items go back to the table */
static void
release_queued(Endpoint *ep)
{
	for (int l = 0; l < NLANES; l++)
	{
		DItem	   *it;

		while ((it = queue_pop(&ep->queue[l])) != NULL)
			item_end(it, END_HELD, 0, NULL, NULL, GetCurrentTimestamp(), 0);
	}
}

/* ------------------------------------------------------------------ */
/* events of chunks */

static AggEntry *
agg_enter(Endpoint *ep, const char *type, const char *id)
{
	char		key[AGG_KEYLEN];
	AggEntry   *e;
	bool		found;

	if (agg_table == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = AGG_KEYLEN;
		ctl.entrysize = sizeof(AggEntry);
		ctl.hcxt = DeliverContext;
		agg_table = hash_create("odoo_sync deliver aggregates", 1024, &ctl,
								HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	memset(key, 0, sizeof(key));
	snprintf(key, sizeof(key), "%d/%s/%s", ep->id, type, id);
	e = hash_search(agg_table, key, HASH_ENTER, &found);
	if (!found)
	{
		e->refs = 0;
		e->busy = false;
		e->poisoned = false;
		e->poison_chunk = 0;
		e->held_head = e->held_tail = NULL;
	}
	e->refs++;
	return e;
}

static void item_end(DItem *it, ItemEnd end, long status, const char *error,
					 const char *excerpt, TimestampTz at, TimestampTz retry_at);

/*
 * agg_after
 *		The busy event of an aggregate has ended: the next one waiting is
 *		queued (delivered or dead: its turn), or every one waiting is held
 *		(retried or given back: they go behind it as rows).
 */
static void
agg_after(AggEntry *a, ItemEnd end, int64 chunk_id)
{
	a->busy = false;
	if (end == END_RETRY || end == END_HELD)
	{
		a->poisoned = true;
		a->poison_chunk = Max(a->poison_chunk, chunk_id);
	}
	while (a->held_head != NULL)
	{
		DItem	   *next = a->held_head;
		Endpoint   *ep = next->chunk->ep;

		a->held_head = next->next_held;
		if (a->held_head == NULL)
			a->held_tail = NULL;
		next->next_held = NULL;
		ep->held_items[next->chunk->lane]--;
		if (a->poisoned || !ep->present || !ep->enabled || ep->circuit == CIRCUIT_OPEN)
		{
			a->poisoned = true;
			a->poison_chunk = Max(a->poison_chunk, next->chunk->id);
			item_end(next, END_HELD, 0, NULL, NULL, GetCurrentTimestamp(), 0);
			continue;
		}
		a->busy = true;
		next->agg_busy = true;
		queue_push(&ep->queue[next->chunk->lane], next);
		break;
	}
}

/*
 * item_end
 *		The end of an event's turn: for a delivery row, a result to record;
 *		for an event of a chunk, its result in the chunk (and the next event
 *		of its aggregate may go).  Frees the item.
 */
static void
item_end(DItem *it, ItemEnd end, long status, const char *error,
		 const char *excerpt, TimestampTz at, TimestampTz retry_at)
{
	Chunk	   *c = it->chunk;

	if (c == NULL)
	{
		if (end == END_OK)
			add_ok(it, status, at);
		else if (end == END_HELD)
			add_release(it);
		else
			add_fail(it, status, error, excerpt, at,
					 end == END_DEAD ? DT_NOEND : retry_at);
		free_item(it);
		return;
	}
	else
	{
		ChunkResult *r = &c->res[it->idx];
		MemoryContext old = MemoryContextSwitchTo(DeliverContext);

		Assert(r->end == END_NONE);
		r->end = end;
		r->status = (int32) status;
		r->at = at;
		r->retry_at = retry_at;
		r->error = error && error[0] ? pstrdup(error) : NULL;
		r->excerpt = excerpt && excerpt[0] ? pstrdup(excerpt) : NULL;
		MemoryContextSwitchTo(old);
		if (--c->open == 0)
			nchunks_complete++;
		/* the aggregate's queued or in-flight event: the next may go */
		if (it->agg != NULL && it->agg_busy)
			agg_after(it->agg, end, c->id);
		free_item(it);
	}
}

/*
 * record_results
 *		Records the results waiting, one statement per kind.  Rows are found
 *		by the ctid the claim gave them (a TID scan: no index descent, and no
 *		plan that walks the queue, whatever its statistics say), checked by
 *		id (a ctid may have been reused by another row).  A row whose ctid
 *		no longer matches (someone else updated it since the claim) is
 *		looked up again by id: the same statement keyed on id only, run only
 *		when the first one missed rows.
 */
static void
record_results(void)
{
	Results    *r = &results;

	/*
	 * A delivered or dead row may be the predecessor of a row of the other
	 * lane (one aggregate's events in both lanes): that worker is told
	 * after the commit, rather than finding out at its next sweep, a second
	 * later (rows are the rare path: retries, held events, replays).
	 */
	if (r->n_ok > 0 || r->n_fail > 0)
		wake_other_lane = true;

	if (r->n_ok > 0)
	{
		Oid			types[4] = {INT8ARRAYOID, INT4ARRAYOID, TIMESTAMPTZARRAYOID,
		TIDARRAYOID};
		Datum		values[4];

#define RECORD_OK(COND) \
				 "WITH d AS (DELETE FROM odoo_sync.delivery d" \
				 "   USING unnest($1, $2, $3, $4) AS u(id, status, at, tid) WHERE " COND \
				 "   RETURNING d.*, u.status AS st, u.at AS fin)" \
				 " INSERT INTO odoo_sync.delivery_done" \
				 " (id, endpoint_id, event_id, state, lane, attempts, status," \
				 "  event_at, created_at, finished_at, request_id)" \
				 " SELECT id, endpoint_id, event_id, 'delivered', lane, attempts, st," \
				 "  event_at, created_at, fin, request_id FROM d"
		values[0] = PointerGetDatum(make_array(r->ok_id, r->n_ok, INT8OID));
		values[1] = PointerGetDatum(make_array(r->ok_status, r->n_ok, INT4OID));
		values[2] = PointerGetDatum(make_array(r->ok_at, r->n_ok, TIMESTAMPTZOID));
		values[3] = PointerGetDatum(make_tid_array(r->ok_tid, r->n_ok));
		run_tid_plan(&plan_ok, RECORD_OK("d.ctid = u.tid AND d.id = u.id"),
				 4, types, values, SPI_OK_INSERT);
		if (SPI_processed < (uint64) r->n_ok)
			run_plan(&plan_ok_by_id, RECORD_OK("d.id = u.id AND u.tid IS NOT NULL"),
					 4, types, values, SPI_OK_INSERT);
#undef RECORD_OK
		r->n_ok = 0;
	}
	if (r->n_fail > 0)
	{
		Oid			types[7] = {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID,
		TEXTARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID, TIDARRAYOID};
		Datum		values[7];

		/*
		 * One statement ending in the number of attempts recorded, so that
		 * a miss by ctid is seen.
		 */
#define RECORD_FAIL(COND) \
				 "WITH u AS (SELECT id, nullif(status, 0) AS status," \
				 "    nullif(error, '') AS error, nullif(excerpt, '') AS excerpt, at," \
				 "    CASE WHEN retry_at = 'infinity' THEN NULL ELSE retry_at END AS retry_at" \
				 "    , tid FROM unnest($1, $2, $3, $4, $5, $6, $7)" \
				 "     AS u(id, status, error, excerpt, at, retry_at, tid))," \
				 " q AS (SELECT d.*, d.ctid AS row_tid, u.status AS st, u.error AS er," \
				 "   u.excerpt AS ex, u.at AS fin, u.retry_at" \
				 "   FROM u JOIN odoo_sync.delivery d ON " COND ")," \
				 " a AS (INSERT INTO odoo_sync.delivery_attempt" \
				 "   SELECT q.id, q.endpoint_id, q.event_id, q.attempts, q.st," \
				 "          q.er, q.fin, q.retry_at FROM q RETURNING 1)," \
				 " r AS (UPDATE odoo_sync.delivery d SET next_at = q.retry_at," \
				 "   leased_by = NULL, last_status = q.st, last_error = q.er" \
				 "   FROM q WHERE d.ctid = q.row_tid AND q.retry_at IS NOT NULL)," \
				 " x AS (DELETE FROM odoo_sync.delivery d USING q" \
				 "   WHERE d.ctid = q.row_tid AND q.retry_at IS NULL RETURNING q.*)," \
				 " y AS (INSERT INTO odoo_sync.delivery_done" \
				 " (id, endpoint_id, event_id, state, lane, attempts, status, error," \
				 "  response_excerpt, event_at, created_at, finished_at, request_id)" \
				 " SELECT id, endpoint_id, event_id, 'dead', lane, attempts, st, er, ex," \
				 "  event_at, created_at, fin, request_id FROM x)" \
				 " SELECT count(*) FROM a"
		values[0] = PointerGetDatum(make_array(r->f_id, r->n_fail, INT8OID));
		values[1] = PointerGetDatum(make_array(r->f_status, r->n_fail, INT4OID));
		values[2] = PointerGetDatum(make_array(r->f_error, r->n_fail, TEXTOID));
		values[3] = PointerGetDatum(make_array(r->f_excerpt, r->n_fail, TEXTOID));
		values[4] = PointerGetDatum(make_array(r->f_at, r->n_fail, TIMESTAMPTZOID));
		values[5] = PointerGetDatum(make_array(r->f_retry, r->n_fail, TIMESTAMPTZOID));
		values[6] = PointerGetDatum(make_tid_array(r->f_tid, r->n_fail));
		run_tid_plan(&plan_fail, RECORD_FAIL("d.ctid = u.tid AND d.id = u.id"),
				 7, types, values, SPI_OK_SELECT);
		if (SPI_processed != 1 ||
			DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
										1, &(bool){false})) < r->n_fail)
			run_plan(&plan_fail_by_id, RECORD_FAIL("d.id = u.id AND u.tid IS NOT NULL"),
					 7, types, values, SPI_OK_SELECT);
#undef RECORD_FAIL
		for (int i = 0; i < r->n_fail; i++)
		{
			pfree(DatumGetPointer(r->f_error[i]));
			pfree(DatumGetPointer(r->f_excerpt[i]));
		}
		r->n_fail = 0;
	}
	if (r->n_rel > 0)
	{
		Oid			types[2] = {INT8ARRAYOID, TIDARRAYOID};
		Datum		values[2];

		values[0] = PointerGetDatum(make_array(r->rel_id, r->n_rel, INT8OID));
		values[1] = PointerGetDatum(make_tid_array(r->rel_tid, r->n_rel));
		/* rare (breaker, disabled endpoint): by id */
		run_plan(&plan_release,
				 "UPDATE odoo_sync.delivery SET next_at = now(), leased_by = NULL,"
				 " attempts = greatest(attempts - 1, 0) WHERE id = ANY ($1)"
				 " AND $2 IS NOT NULL",
				 2, types, values, SPI_OK_UPDATE);
		r->n_rel = 0;
	}
}

static void
persist_states(void)
{
	for (int i = 0; i < nendpoints; i++)
	{
		Endpoint   *ep = endpoints[i];
		Oid			types[4] = {INT4OID, TEXTOID, INT4OID, TIMESTAMPTZOID};
		Datum		values[4];
		char		nulls[4] = {' ', ' ', ' ', ' '};

		if (!ep->state_dirty || !ep->present)
			continue;
		breaker_pull(ep);		/* the latest, whichever worker changed it */
		values[0] = Int32GetDatum(ep->id);
		values[1] = text_datum(circuit_names[ep->circuit]);
		values[2] = Int32GetDatum(ep->failures);
		values[3] = TimestampTzGetDatum(ep->opened_at);
		if (ep->circuit == CIRCUIT_CLOSED || ep->opened_at == 0)
			nulls[3] = 'n';
		if (plan_state == NULL)
		{
			plan_state = SPI_prepare("INSERT INTO odoo_sync.endpoint_state AS s"
									 " (endpoint_id, circuit, failures, opened_at, changed_at)"
									 " VALUES ($1, $2, $3, $4, clock_timestamp())"
									 " ON CONFLICT (endpoint_id) DO UPDATE SET"
									 " circuit = $2, failures = $3, opened_at = $4,"
									 " changed_at = clock_timestamp()",
									 4, types);
			if (plan_state == NULL)
				elog(ERROR, "SPI_prepare failed");
			SPI_keepplan(plan_state);
		}
		if (SPI_execute_plan(plan_state, values, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not record the circuit state");
		ep->state_dirty = false;
	}
}

/* ------------------------------------------------------------------ */
/* claiming */

#define DUE_MAX 4096

/* remembers a retry time; past DUE_MAX, the periodic sweep finds it */
static void
due_push(Endpoint *ep, int lane, TimestampTz t)
{
	if (ep->due[lane] == NULL)
		ep->due[lane] = MemoryContextAlloc(DeliverContext, sizeof(TimestampTz) * DUE_MAX);
	if (ep->ndue[lane] < DUE_MAX)
		ep->due[lane][ep->ndue[lane]++] = t;
	if (ep->next_due[lane] == 0 || t < ep->next_due[lane])
		ep->next_due[lane] = t;
}

/* forgets the retry times that have passed; next_due is the next one */
static void
due_pop(Endpoint *ep, int lane, TimestampTz now)
{
	int			k = 0;
	TimestampTz min = 0;

	for (int i = 0; i < ep->ndue[lane]; i++)
	{
		TimestampTz t = ep->due[lane][i];

		if (t <= now)
			continue;
		ep->due[lane][k++] = t;
		if (min == 0 || t < min)
			min = t;
	}
	ep->ndue[lane] = k;
	ep->next_due[lane] = min;
}

static int
lane_cap(Endpoint *ep, int lane)
{
	if (lane == LANE_CRITICAL || ep->concurrency == 1)
		return ep->concurrency;
	return ep->concurrency - Max(1, ep->concurrency / 4);
}

static bool
can_claim(Endpoint *ep, TimestampTz now)
{
	if (!ep->present || !ep->enabled)
		return false;
	breaker_pull(ep);
	if (ep->circuit == CIRCUIT_OPEN)
	{
		OdooSyncEndpointShare *sh;
		bool		changed = false;

		if (now < ep->opened_at + ep->breaker_cooldown_ms * 1000)
			return false;
		sh = share_lock(ep);
		if (sh->circuit == CIRCUIT_OPEN)
		{
			sh->circuit = CIRCUIT_HALF_OPEN;
			sh->probe_in_flight = false;
			sh->probe_by = 0;
			changed = true;
		}
		share_unlock(ep, sh);
		if (changed)
			ep->state_dirty = true;
		breaker_pull(ep);
	}
	return ep->circuit != CIRCUIT_OPEN;
}

static int	claim_room(Endpoint *ep, int lane);
static int	claim_target(Endpoint *ep, int lane);

/*
 * claim_worthwhile
 *		A claim for this lane would bring at least half its target, or fill
 *		a dry local queue: claims are then few and large, not one per
 *		finished request.
 */
static bool
claim_worthwhile(Endpoint *ep, int lane)
{
	int			room = claim_room(ep, lane);

	return room > 0 &&
		(room >= claim_target(ep, lane) / 2 || queue_len(&ep->queue[lane]) == 0);
}

/*
 * claim_target
 *		How many items of a lane to hold (queued and in flight): four rounds
 *		of requests; for an endpoint that answers fast, up to CLAIM_MIN, or
 *		what it answers in a second, so that the cost of a claim (one
 *		statement, one commit) is shared by many events while every item
 *		is still sent well within its lease; two seconds' worth under a
 *		rate limit.
 */
static int
claim_target(Endpoint *ep, int lane)
{
	int			round = ep->batch_size * lane_cap(ep, lane);
	int			target = round * 4;

	if (ep->request_us > 0)
		target = Max(target, (int) Min((int64) CLAIM_MIN,
									   (int64) round * (1000000 / ep->request_us)));

	if (ep->rate_limit > 0)
		target = Min(target, ep->batch_size * Max(2, (int) (ep->rate_limit * 2)));
	return Min(target, CLAIM_MAX);
}

/* how many items to claim for a lane now */
static int
claim_room(Endpoint *ep, int lane)
{
	if (ep->circuit == CIRCUIT_HALF_OPEN)
	{
		if (ep->probe_in_flight)
			return 0;
		for (int l = 0; l < NLANES; l++)
			if (queue_len(&ep->queue[l]) > 0)
				return 0;
		return 1;
	}
	return claim_target(ep, lane) - queue_len(&ep->queue[lane]) -
		ep->active_items[lane] - ep->held_items[lane];
}

/*
 * md5_hex
 *		The MD5 of s as 32 hex digits (out has room for 33), with the
 *		algorithm fetched once: pg_md5_hash() (a crypto hash object tracked
 *		by the resource owner, the algorithm looked up at every call) cost
 *		about a microsecond per call, twice per event.
 */
static void
md5_hex(const char *s, size_t len, char *out)
{
	static EVP_MD *md5_alg = NULL;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	static const char hex[] = "0123456789abcdef";

	if (md5_alg == NULL && (md5_alg = EVP_MD_fetch(NULL, "MD5", NULL)) == NULL)
		elog(ERROR, "could not compute an MD5 hash: MD5 is not available");
	if (!EVP_Digest(s, len, md, &mdlen, md5_alg, NULL) || mdlen != 16)
		elog(ERROR, "could not compute an MD5 hash");
	for (int i = 0; i < 16; i++)
	{
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[32] = '\0';
}

/* a text column of an SPI result as a C string (NULL for SQL NULL) */
static char *
col_cstring(HeapTuple tup, TupleDesc td, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, td, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/*
 * build_cloudevent
 *		Writes the CloudEvents 1.0 JSON of a claimed event into it->json and
 *		its traceparent into it->traceparent (DeliverContext).  Same content
 *		as the SQL function odoo_sync.cloudevent(), built here because the
 *		jsonb functions cost a quarter of the worker's time.  Columns: 8
 *		source, 9 type, 10 aggregate_type, 11 aggregate_id, 12 time,
 *		13 aggregate_seq, 14 correlation_id, 15 lane, 16 payload text.
 */
static void
build_cloudevent(DItem *it, HeapTuple tup, TupleDesc td)
{
	StringInfoData b;
	bool		isnull;
	char	   *corr = col_cstring(tup, td, 14);
	char		trace[33];
	char		parent[33];
	char		buf[128];
	struct pg_tm tm;
	fsec_t		fsec;
	TimestampTz t;
	int			n = 0;

	/* trace id: the correlation id if it is 32 hex digits (or a UUID) */
	if (corr)
	{
		for (const char *p = corr; *p && n <= 32; p++)
		{
			if (*p == '-')
				continue;
			if (!isxdigit((unsigned char) *p))
			{
				n = 99;
				break;
			}
			trace[n++] = pg_ascii_tolower((unsigned char) *p);
		}
	}
	trace[Min(n, 32)] = '\0';
	if (n != 32 || strspn(trace, "0") == 32)
	{
		const char *src = corr ? corr : it->event_id;

		md5_hex(src, strlen(src), trace);
	}
	md5_hex(it->event_id, strlen(it->event_id), parent);
	parent[16] = '\0';
	snprintf(buf, sizeof(buf), "00-%s-%s-01", trace, parent);
	it->traceparent = MemoryContextStrdup(DeliverContext, buf);

	initStringInfo(&b);
	appendStringInfoString(&b, "{\"specversion\":\"1.0\",\"id\":\"");
	appendStringInfoString(&b, it->event_id);
	appendStringInfoString(&b, "\",\"source\":");
	escape_json(&b, col_cstring(tup, td, 8));
	appendStringInfoString(&b, ",\"type\":");
	escape_json(&b, col_cstring(tup, td, 9));
	appendStringInfoString(&b, ",\"subject\":");
	{
		char	   *at = col_cstring(tup, td, 10);
		char	   *ai = col_cstring(tup, td, 11);
		char	   *subj = palloc(strlen(at) + strlen(ai) + 2);

		strcpy(subj, at);
		strcat(subj, "/");
		strcat(subj, ai);
		escape_json(&b, subj);
		pfree(subj);
	}
	t = DatumGetTimestampTz(SPI_getbinval(tup, td, 12, &isnull));
	if (!isnull && timestamp2tm(t, NULL, &tm, &fsec, NULL, NULL) == 0)
	{
		snprintf(buf, sizeof(buf),
				 ",\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%06dZ\"",
				 tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min,
				 tm.tm_sec, (int) fsec);
		appendStringInfoString(&b, buf);
	}
	appendStringInfoString(&b, ",\"datacontenttype\":\"application/json\",\"sequence\":\"");
	{
		int64		seq = DatumGetInt64(SPI_getbinval(tup, td, 13, &isnull));
		int			len = pg_lltoa(seq, buf);

		appendBinaryStringInfo(&b, buf, len);
	}
	appendStringInfoChar(&b, '"');
	if (corr)
	{
		appendStringInfoString(&b, ",\"correlationid\":");
		escape_json(&b, corr);
	}
	appendStringInfoString(&b, ",\"lane\":");
	escape_json(&b, col_cstring(tup, td, 15));
	appendStringInfoString(&b, ",\"traceparent\":\"");
	appendStringInfoString(&b, it->traceparent);
	appendStringInfoString(&b, "\",\"data\":");
	{
		/* the payload as text (payload::text): appended as is */
		Datum		d = SPI_getbinval(tup, td, 16, &isnull);

		if (isnull)
			appendStringInfoString(&b, "null");
		else
		{
			text	   *tx = DatumGetTextPP(d);

			appendBinaryStringInfo(&b, VARDATA_ANY(tx), VARSIZE_ANY_EXHDR(tx));
		}
	}
	appendStringInfoChar(&b, '}');
	it->json = MemoryContextAlloc(DeliverContext, b.len + 1);
	memcpy(it->json, b.data, b.len + 1);
	it->jsonlen = b.len;
	pfree(b.data);
}


/*
 * claim_many
 *		Claims work for every (endpoint, lane) listed, in one statement
 *		(critical lanes listed first), and appends it to the local queues.
 *		Sets got[i] to the number of rows claimed for entry i.
 */
/* qsort: claimed items by delivery id */
static int
ditem_id_cmp(const void *a, const void *b)
{
	int64		x = (*(DItem *const *) a)->id;
	int64		y = (*(DItem *const *) b)->id;

	return (x > y) - (x < y);
}

/* qsort: (id, ctid) pairs of the lease by id */
typedef struct LeasedRow
{
	int64		id;
	ItemPointerData tid;
} LeasedRow;

static int
leased_cmp(const void *a, const void *b)
{
	int64		x = ((const LeasedRow *) a)->id;
	int64		y = ((const LeasedRow *) b)->id;

	return (x > y) - (x < y);
}

static void
claim_many(int n, Endpoint **eps, int *lanes, int *limits, int *got)
{
	Oid			types[5] = {INT4ARRAYOID, TEXTARRAYOID, INT4ARRAYOID,
	INT8ARRAYOID, INT4OID};
	Datum		values[5];
	Datum	   *d_ep = palloc(sizeof(Datum) * n);
	Datum	   *d_lane = palloc(sizeof(Datum) * n);
	Datum	   *d_lim = palloc(sizeof(Datum) * n);
	Datum	   *d_lease = palloc(sizeof(Datum) * n);
	uint64		rows;
	DItem	  **claimed;
	Endpoint  **claimed_ep;
	int		   *claimed_lane;
	Datum	   *tids;
	LeasedRow  *leased;
	uint64		nleased;

	for (int i = 0; i < n; i++)
	{
		d_ep[i] = Int32GetDatum(eps[i]->id);
		d_lane[i] = text_datum(lane_names[lanes[i]]);
		d_lim[i] = Int32GetDatum(limits[i]);
		d_lease[i] = Int64GetDatum(eps[i]->timeout_ms + eps[i]->connect_ms +
								   deliver_lease_margin);
		got[i] = 0;
	}
	values[0] = PointerGetDatum(make_array(d_ep, n, INT4OID));
	values[1] = PointerGetDatum(make_array(d_lane, n, TEXTOID));
	values[2] = PointerGetDatum(make_array(d_lim, n, INT4OID));
	values[3] = PointerGetDatum(make_array(d_lease, n, INT8OID));
	values[4] = Int32GetDatum(MyProcPid);

	/*
	 * For each (endpoint, lane): the oldest due rows whose predecessors in
	 * their aggregate are all finished (ordered subscriptions), locked with
	 * SKIP LOCKED, with their events' content.
	 *
	 * Each lane has its own branch with the lane as a constant, matching
	 * that lane's partial index (delivery_claim_<lane>_idx).  With the lane
	 * as a parameter the planner could pick an id-ordered primary key scan
	 * filtering on lane, and every critical claim then walked the whole bulk
	 * backlog; this way the critical branch reads only critical entries.
	 * (id + 0) is the key of those indexes: no primary key scan can give
	 * that order, so the planner never walks the queue by id filtering on
	 * the endpoint.
	 *
	 * Two statements, each one generic plan kept (see run_plan): the lock
	 * (this one, returning the rows locked with their events, found by
	 * primary key), and the lease (an UPDATE by the ctids of those rows: a
	 * TID scan, planned with every other scan disabled, so that it never
	 * walks an index filtering on a list, as a plan made on an empty queue
	 * did: 180 ms per claim with 100k rows queued).  The rows stay locked by
	 * this transaction in between, so their ctids hold.  (The events were
	 * looked up by a third statement until 2026-11: its arrays in and out
	 * cost ~4 us per event of ~20.)
	 */
#define CLAIM_LANE(L) \
			 " SELECT q.* FROM x CROSS JOIN LATERAL (" \
			 "   SELECT q.ctid AS tid, q.endpoint_id, q.lane, q.id, q.attempts," \
			 "          q.created_at, q.event_id" \
			 "     FROM odoo_sync.delivery q" \
			 "    WHERE q.endpoint_id = x.ep AND q.lane = '" L "' AND q.next_at <= now()" \
			 "      AND (NOT q.ordered OR NOT EXISTS (" \
			 "        SELECT 1 FROM odoo_sync.delivery p" \
			 "         WHERE p.endpoint_id = q.endpoint_id" \
			 "           AND p.aggregate_type = q.aggregate_type" \
			 "           AND p.aggregate_id = q.aggregate_id" \
			 "           AND p.aggregate_seq < q.aggregate_seq)" \
			 "      AND NOT EXISTS (" \
			 "        SELECT 1 FROM odoo_sync.delivery_chunk c" \
			 "         WHERE c.endpoint_id = q.endpoint_id" \
			 "           AND c.agg_type = q.aggregate_type AND c.lane = 'critical'" \
			 "           AND c.first_seq < (SELECT e.seq FROM odoo_sync.event e" \
			 "                              WHERE e.id = q.event_id))" \
			 "      AND NOT EXISTS (" \
			 "        SELECT 1 FROM odoo_sync.delivery_chunk c" \
			 "         WHERE c.endpoint_id = q.endpoint_id" \
			 "           AND c.agg_type = q.aggregate_type AND c.lane = 'bulk'" \
			 "           AND c.first_seq < (SELECT e.seq FROM odoo_sync.event e" \
			 "                              WHERE e.id = q.event_id)))" \
			 "    ORDER BY (q.id + 0) LIMIT x.lim" \
			 "    FOR UPDATE OF q SKIP LOCKED) q" \
			 "  WHERE x.lane = '" L "'"
	StaticAssertStmt(NLANES == 2, "the claim has one branch per lane");
	run_plan_with(&plan_claim,
				  "WITH x AS (SELECT * FROM unnest($1, $2, $3, $4) AS x(ep, lane, lim, lease)),"
				  " s AS ("
				  CLAIM_LANE("critical")
				  " UNION ALL"
				  CLAIM_LANE("bulk")
				  " )"
				  " SELECT s.endpoint_id, s.lane, s.id, s.attempts + 1, s.created_at,"
				  "        s.event_id::text,"
				  "        e.id IS NOT NULL, e.source, e.type, e.aggregate_type, e.aggregate_id,"
				  "        coalesce(e.commit_time, e.captured_at), e.aggregate_seq,"
				  "        e.correlation_id, e.lane, e.payload::text, s.tid"
				  "   FROM s LEFT JOIN odoo_sync.event e ON e.id = s.event_id"
				  "  ORDER BY e.seq",
				  5, types, values, SPI_OK_SELECT, queue_plan_off, lengthof(queue_plan_off));
#undef CLAIM_LANE
	rows = SPI_processed;
	if (rows == 0)
		return;

	claimed = palloc(sizeof(DItem *) * rows);
	claimed_ep = palloc(sizeof(Endpoint *) * rows);
	claimed_lane = palloc(sizeof(int) * rows);
	tids = palloc(sizeof(Datum) * rows);
	for (uint64 r = 0; r < rows; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	td = SPI_tuptable->tupdesc;
		bool		isnull;
		int			epid = DatumGetInt32(SPI_getbinval(tup, td, 1, &isnull));
		char	   *lane_s = SPI_getvalue(tup, td, 2);
		int			lane = strcmp(lane_s, "bulk") == 0 ? LANE_BULK : LANE_CRITICAL;
		Endpoint   *ep = NULL;
		DItem	   *it;
		char	   *s;

		for (int i = 0; i < n; i++)
			if (eps[i]->id == epid && lanes[i] == lane)
			{
				ep = eps[i];
				got[i]++;
				break;
			}
		if (ep == NULL)
			elog(ERROR, "claimed a delivery for endpoint %d that was not asked for", epid);
		it = MemoryContextAllocZero(DeliverContext, sizeof(DItem));
		it->id = DatumGetInt64(SPI_getbinval(tup, td, 3, &isnull));
		it->attempts = DatumGetInt32(SPI_getbinval(tup, td, 4, &isnull));
		tids[r] = SPI_getbinval(tup, td, 17, &isnull);
		it->created_at = DatumGetTimestampTz(SPI_getbinval(tup, td, 5, &isnull));
		s = SPI_getvalue(tup, td, 6);
		strlcpy(it->event_id, s, sizeof(it->event_id));
		if (DatumGetBool(SPI_getbinval(tup, td, 7, &isnull)))
			build_cloudevent(it, tup, td);
		claimed[r] = it;
		claimed_ep[r] = ep;
		claimed_lane[r] = lane;
	}

	/* the lease, on exactly the rows locked above */
	{
		Oid			ltypes[6] = {INT4ARRAYOID, TEXTARRAYOID, INT4ARRAYOID,
		INT8ARRAYOID, TIDARRAYOID, INT4OID};
		Datum		lvalues[6];

		memcpy(lvalues, values, sizeof(Datum) * 4);
		lvalues[4] = PointerGetDatum(construct_array(tids, rows, TIDOID,
													 sizeof(ItemPointerData), false,
													 TYPALIGN_SHORT));
		lvalues[5] = Int32GetDatum(MyProcPid);
		run_plan_with(&plan_lease,
					  "WITH x AS (SELECT * FROM unnest($1, $2, $3, $4) AS x(ep, lane, lim, lease))"
					  " UPDATE odoo_sync.delivery d"
					  "    SET next_at = now() + x.lease * interval '1 millisecond',"
					  "        attempts = d.attempts + 1, leased_by = $6"
					  "   FROM x WHERE d.ctid = ANY ($5)"
					  "    AND x.ep = d.endpoint_id AND x.lane = d.lane"
					  "  RETURNING d.id, d.ctid",
					  6, ltypes, lvalues, SPI_OK_UPDATE_RETURNING,
					  tid_plan_off, lengthof(tid_plan_off));
	}
	nleased = SPI_processed;
	if (nleased != rows)
		elog(ERROR, "the lease updated " UINT64_FORMAT " of " UINT64_FORMAT " claimed rows",
			 nleased, rows);
	leased = palloc(sizeof(LeasedRow) * nleased);
	for (uint64 r = 0; r < nleased; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	td = SPI_tuptable->tupdesc;
		bool		isnull;

		leased[r].id = DatumGetInt64(SPI_getbinval(tup, td, 1, &isnull));
		ItemPointerCopy((ItemPointer) DatumGetPointer(SPI_getbinval(tup, td, 2, &isnull)),
						&leased[r].tid);
	}

	/*
	 * Each item records its result by the version the lease wrote; queue
	 * them in the claim's order (event order), matched to the lease by id.
	 */
	{
		DItem	  **by_id = palloc(sizeof(DItem *) * rows);

		memcpy(by_id, claimed, sizeof(DItem *) * rows);
		qsort(by_id, rows, sizeof(DItem *), ditem_id_cmp);
		qsort(leased, nleased, sizeof(LeasedRow), leased_cmp);
		for (uint64 r = 0; r < rows; r++)
		{
			if (leased[r].id != by_id[r]->id)
				elog(ERROR, "the lease and the claim disagree on delivery " INT64_FORMAT,
					 by_id[r]->id);
			ItemPointerCopy(&leased[r].tid, &by_id[r]->tid);
		}
	}
	for (uint64 r = 0; r < rows; r++)
		queue_push(&claimed_ep[r]->queue[claimed_lane[r]], claimed[r]);
}

/*
 * insert_done_direct
 *		Appends n delivered rows to odoo_sync.delivery_done as COPY does:
 *		table_multi_insert() in batches (one WAL record per page rather than
 *		per row), index entries through the executor's own routine.  The
 *		history insert was the largest database cost of a delivered event
 *		left (3.2 us of ~10).  Returns false, having written nothing, when
 *		the table is not the one this is written for (another column, a
 *		trigger, a rule): the caller then uses INSERT.
 */
static const char *const done_columns[] = {
	"id", "endpoint_id", "event_id", "state", "lane", "attempts", "status",
	"error", "response_excerpt", "event_at", "created_at", "finished_at",
	"request_id", "retried_by"
};
enum
{
	DC_ID, DC_ENDPOINT, DC_EVENT, DC_STATE, DC_LANE, DC_ATTEMPTS, DC_STATUS,
	DC_NCOLS_SET = DC_STATUS + 1,
	DC_EVENT_AT = 9, DC_CREATED_AT, DC_FINISHED_AT, DC_NCOLS = 14
};
#define DONE_INSERT_BATCH 64

static bool
insert_done_direct(int n, Datum *ids, Datum *eps, Datum *evs, Datum *lanes,
				   Datum *statuses, Datum *event_ats, Datum *created_ats,
				   Datum *finished_ats)
{
	Oid			nsp = get_namespace_oid(ODOO_SYNC_SCHEMA, false);
	Oid			relid = get_relname_relid("delivery_done", nsp);
	Relation	rel;
	TupleDesc	desc;
	AttrNumber	att[DC_NCOLS];
	int			live = 0;
	BulkInsert *bulk;
	Datum		delivered = CStringGetTextDatum("delivered");
	int			nslots = Min(n, DONE_INSERT_BATCH);

	if (!OidIsValid(relid))
		return false;
	rel = table_open(relid, RowExclusiveLock);
	desc = RelationGetDescr(rel);
	for (int i = 0; i < desc->natts; i++)
		if (!TupleDescAttr(desc, i)->attisdropped)
			live++;
	for (int c = 0; c < DC_NCOLS; c++)
	{
		att[c] = attnameAttNum(rel, done_columns[c], false);
		if (att[c] == InvalidAttrNumber)
			live = -1;
	}
	/* and the types this writes, no default on a column it leaves NULL */
	if (live == DC_NCOLS)
	{
		static const Oid types[DC_NCOLS] = {INT8OID, INT4OID, UUIDOID, TEXTOID,
			TEXTOID, INT4OID, INT4OID, TEXTOID, TEXTOID, TIMESTAMPTZOID,
		TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID, INT8OID};

		for (int c = 0; c < DC_NCOLS; c++)
		{
			Form_pg_attribute a = TupleDescAttr(desc, att[c] - 1);
			bool		written = c < DC_NCOLS_SET || c == DC_EVENT_AT ||
				c == DC_CREATED_AT || c == DC_FINISHED_AT;

			if (a->atttypid != types[c] || (!written && a->atthasdef))
				live = -1;
		}
	}
	if (live != DC_NCOLS || rel->rd_rel->relkind != RELKIND_RELATION ||
		rel->rd_rules != NULL || rel->trigdesc != NULL)
	{
		table_close(rel, NoLock);
		return false;
	}

	bulk = bulk_insert_begin(rel, nslots, false);
	for (int k = 0; k < n; k++)
	{
		TupleTableSlot *slot = bulk_insert_slot(bulk);
		Datum	   *v = slot->tts_values;
		bool	   *nl = slot->tts_isnull;

#define SET(col, val) (v[att[col] - 1] = (val), nl[att[col] - 1] = false)
		SET(DC_ID, ids[k]);
		SET(DC_ENDPOINT, eps[k]);
		SET(DC_EVENT, evs[k]);
		SET(DC_STATE, delivered);
		SET(DC_LANE, lanes[k]);
		SET(DC_ATTEMPTS, Int32GetDatum(1));
		SET(DC_STATUS, statuses[k]);
		SET(DC_EVENT_AT, event_ats[k]);
		SET(DC_CREATED_AT, created_ats[k]);
		SET(DC_FINISHED_AT, finished_ats[k]);
#undef SET
		ExecStoreVirtualTuple(slot);
	}
	bulk_insert_end(bulk);
	table_close(rel, NoLock);
	return true;
}

/*
 * record_chunks
 *		Records the chunks whose events have all ended their first turn:
 *		deletes them (only those still leased by this worker: a chunk that
 *		cancel_deliveries() took is not recorded), writes the history of the
 *		delivered ones, the dead letters, and a delivery row for each event
 *		to retry or held behind an earlier one (with its delivery id, so that
 *		it keeps one id from the fan-out to its end).
 */
static SPIPlanPtr plan_chunk_delete = NULL;
static SPIPlanPtr plan_chunk_ok = NULL;
static SPIPlanPtr plan_chunk_rest = NULL;

static SPIPlanPtr plan_chunk_waiters = NULL;

static void
record_chunks(void)
{
	Chunk	  **prev;
	Chunk	   *c;
	int			ndone = 0;
	Datum	   *done_ids;
	int64	   *kept;
	int			nkept = 0;
	int			n_ok = 0,
				n_rest = 0,
				cap = 0;
	Datum	   *ok_id, *ok_ep, *ok_ev, *ok_lane, *ok_st, *ok_eat, *ok_cat, *ok_fin;
	Datum	   *r_id, *r_ep, *r_ev, *r_lane, *r_kind, *r_att, *r_st, *r_er,
			   *r_ex, *r_at, *r_retry, *r_ord, *r_cat;
	Datum	   *probe_ep;
	Datum	   *probe_type;
	int			nprobe = 0;

	if (nchunks_complete == 0)
		return;
	probe_ep = palloc(sizeof(Datum) * nchunks_complete);
	probe_type = palloc(sizeof(Datum) * nchunks_complete);
	done_ids = palloc(sizeof(Datum) * nchunks_complete);
	for (c = chunks; c; c = c->next)
		if (c->open == 0)
		{
			done_ids[ndone++] = Int64GetDatum(c->id);
			cap += c->n;
		}
	Assert(ndone == nchunks_complete);
	{
		Oid			types[2] = {INT8ARRAYOID, INT4OID};
		Datum		values[2];

		values[0] = PointerGetDatum(make_array(done_ids, ndone, INT8OID));
		values[1] = Int32GetDatum(MyProcPid);
		run_plan(&plan_chunk_delete,
				 "DELETE FROM odoo_sync.delivery_chunk"
				 " WHERE id = ANY ($1) AND leased_by = $2 RETURNING id",
				 2, types, values, SPI_OK_DELETE_RETURNING);
		kept = palloc(sizeof(int64) * (SPI_processed + 1));
		for (uint64 r = 0; r < SPI_processed; r++)
			kept[nkept++] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
														SPI_tuptable->tupdesc, 1,
														&(bool){false}));
	}

#define ARR(x) x = palloc(sizeof(Datum) * Max(cap, 1))
	ARR(ok_id); ARR(ok_ep); ARR(ok_ev); ARR(ok_lane); ARR(ok_st); ARR(ok_eat);
	ARR(ok_cat); ARR(ok_fin);
	ARR(r_id); ARR(r_ep); ARR(r_ev); ARR(r_lane); ARR(r_kind); ARR(r_att);
	ARR(r_st); ARR(r_er); ARR(r_ex); ARR(r_at); ARR(r_retry); ARR(r_ord); ARR(r_cat);
#undef ARR

	prev = &chunks;
	while ((c = *prev) != NULL)
	{
		bool		mine = false;

		if (c->open > 0)
		{
			prev = &c->next;
			continue;
		}
		for (int k = 0; k < nkept; k++)
			if (kept[k] == c->id)
				mine = true;

		/*
		 * Events of the other lane may wait for this chunk (held rows of
		 * the same aggregate type): its worker is told once this is
		 * committed, not at its next sweep (a second later).
		 */
		if (c->other_lane)
			wake_other_lane = true;
		else if (c->ordered && nprobe < nchunks_complete)
		{
			probe_ep[nprobe] = Int32GetDatum(c->ep->id);
			probe_type[nprobe] = text_datum(c->agg_type);
			nprobe++;
		}
		for (int i = 0; i < c->n; i++)
		{
			ChunkResult *r = &c->res[i];

			if (c->aggs[i] != NULL)
			{
				AggEntry   *a = c->aggs[i];

				/*
				 * The rows that poisoned the aggregate are written now:
				 * from here on the claim's held check sees them, so newer
				 * events need not all go the row way.
				 */
				if (a->poisoned && a->poison_chunk <= c->id)
					a->poisoned = false;
				if (--a->refs == 0)
				{
					Assert(a->held_head == NULL);
					hash_search(agg_table, a->key, HASH_REMOVE, NULL);
				}
			}
			if (mine && r->end == END_OK)
			{
				ok_id[n_ok] = Int64GetDatum(c->ids[i]);
				ok_ep[n_ok] = Int32GetDatum(c->ep->id);
				ok_ev[n_ok] = text_datum(c->event_ids[i]);
				ok_lane[n_ok] = text_datum(lane_names[c->lane]);
				ok_st[n_ok] = Int32GetDatum(r->status);
				ok_eat[n_ok] = TimestampTzGetDatum(c->event_at[i]);
				ok_cat[n_ok] = TimestampTzGetDatum(c->created_at);
				ok_fin[n_ok] = TimestampTzGetDatum(r->at);
				n_ok++;
			}
			else if (mine)
			{
				r_id[n_rest] = Int64GetDatum(c->ids[i]);
				r_ep[n_rest] = Int32GetDatum(c->ep->id);
				r_ev[n_rest] = text_datum(c->event_ids[i]);
				r_lane[n_rest] = text_datum(lane_names[c->lane]);
				r_kind[n_rest] = text_datum(r->end == END_DEAD ? "dead" :
											r->end == END_RETRY ? "retry" : "held");
				r_att[n_rest] = Int32GetDatum(r->sent ? 1 : 0);
				r_st[n_rest] = Int32GetDatum(r->status);
				r_er[n_rest] = text_datum(r->error ? r->error : "");
				r_ex[n_rest] = text_datum(r->excerpt ? r->excerpt : "");
				r_at[n_rest] = TimestampTzGetDatum(r->at);
				r_retry[n_rest] = TimestampTzGetDatum(r->end == END_RETRY ? r->retry_at : r->at);
				r_ord[n_rest] = BoolGetDatum(c->ordered);
				r_cat[n_rest] = TimestampTzGetDatum(c->created_at);
				n_rest++;
				if (r->end == END_HELD || r->end == END_RETRY)
				{
					/* rows to claim: now, or when the retry is due */
					if (r->end == END_HELD)
						c->ep->want_claim[c->lane] = true;
				}
			}
			if (r->error)
				pfree(r->error);
			if (r->excerpt)
				pfree(r->excerpt);
		}
		*prev = c->next;
		pfree(c->ids);
		pfree(c->event_ids);
		pfree(c->event_at);
		pfree(c->aggs);
		pfree(c->res);
		pfree(c->agg_type);
		pfree(c);
	}
	nchunks_complete = 0;

	/*
	 * Rows of the other lane may wait for these chunks although no chunk
	 * of the other lane shared their aggregate type when they were claimed
	 * (other_lane): the other worker recorded such a chunk, with held
	 * rows, after this one was claimed.  Its worker is told after the
	 * commit, not at its next sweep.  (A row committed after this
	 * statement's snapshot and claimed before this commit still waits for
	 * the sweep.)
	 */
	if (nprobe > 0 && !wake_other_lane)
	{
		Oid			ptypes[2] = {INT4ARRAYOID, TEXTARRAYOID};
		Datum		pvalues[2];

		pvalues[0] = PointerGetDatum(make_array(probe_ep, nprobe, INT4OID));
		pvalues[1] = PointerGetDatum(make_array(probe_type, nprobe, TEXTOID));
		/* the other lane as a constant (a worker's lane never changes) */
		run_plan(&plan_chunk_waiters,
				 psprintf("SELECT 1 FROM unnest($1, $2) AS u(ep, t) WHERE EXISTS ("
						  " SELECT 1 FROM odoo_sync.delivery d WHERE d.endpoint_id = u.ep"
						  "    AND d.aggregate_type = u.t AND d.lane = '%s') LIMIT 1",
						  lane_names[1 - my_lane]),
				 2, ptypes, pvalues, SPI_OK_SELECT);
		if (SPI_processed > 0)
			wake_other_lane = true;
	}

	if (n_ok > 0)
	{
		Datum	   *uuids = palloc(sizeof(Datum) * n_ok);

		for (int k = 0; k < n_ok; k++)
			uuids[k] = DirectFunctionCall1(uuid_in,
										   CStringGetDatum(TextDatumGetCString(ok_ev[k])));
		if (insert_done_direct(n_ok, ok_id, ok_ep, uuids, ok_lane, ok_st, ok_eat,
							   ok_cat, ok_fin))
			n_ok = 0;
	}
	if (n_ok > 0)
	{
		Oid			types[8] = {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
		INT4ARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID};
		Datum		values[8];

		values[0] = PointerGetDatum(make_array(ok_id, n_ok, INT8OID));
		values[1] = PointerGetDatum(make_array(ok_ep, n_ok, INT4OID));
		values[2] = PointerGetDatum(make_array(ok_ev, n_ok, TEXTOID));
		values[3] = PointerGetDatum(make_array(ok_lane, n_ok, TEXTOID));
		values[4] = PointerGetDatum(make_array(ok_st, n_ok, INT4OID));
		values[5] = PointerGetDatum(make_array(ok_eat, n_ok, TIMESTAMPTZOID));
		values[6] = PointerGetDatum(make_array(ok_cat, n_ok, TIMESTAMPTZOID));
		values[7] = PointerGetDatum(make_array(ok_fin, n_ok, TIMESTAMPTZOID));
		run_plan(&plan_chunk_ok,
				 "INSERT INTO odoo_sync.delivery_done"
				 " (id, endpoint_id, event_id, state, lane, attempts, status,"
				 "  event_at, created_at, finished_at)"
				 " SELECT u.id, u.ep, u.ev::uuid, 'delivered', u.lane, 1, u.st,"
				 "        u.eat, u.cat, u.fin"
				 "   FROM unnest($1, $2, $3, $4, $5, $6, $7, $8)"
				 "        AS u(id, ep, ev, lane, st, eat, cat, fin)",
				 8, types, values, SPI_OK_INSERT);
	}
	if (n_rest > 0)
	{
		Oid			types[13] = {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
			TEXTARRAYOID, INT4ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
		TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID, BOOLARRAYOID, TIMESTAMPTZARRAYOID};
		Datum		values[13];

		values[0] = PointerGetDatum(make_array(r_id, n_rest, INT8OID));
		values[1] = PointerGetDatum(make_array(r_ep, n_rest, INT4OID));
		values[2] = PointerGetDatum(make_array(r_ev, n_rest, TEXTOID));
		values[3] = PointerGetDatum(make_array(r_lane, n_rest, TEXTOID));
		values[4] = PointerGetDatum(make_array(r_kind, n_rest, TEXTOID));
		values[5] = PointerGetDatum(make_array(r_att, n_rest, INT4OID));
		values[6] = PointerGetDatum(make_array(r_st, n_rest, INT4OID));
		values[7] = PointerGetDatum(make_array(r_er, n_rest, TEXTOID));
		values[8] = PointerGetDatum(make_array(r_ex, n_rest, TEXTOID));
		values[9] = PointerGetDatum(make_array(r_at, n_rest, TIMESTAMPTZOID));
		values[10] = PointerGetDatum(make_array(r_retry, n_rest, TIMESTAMPTZOID));
		values[11] = PointerGetDatum(make_array(r_ord, n_rest, BOOLOID));
		values[12] = PointerGetDatum(make_array(r_cat, n_rest, TIMESTAMPTZOID));

		/*
		 * A dead one: its dead letter and its attempt.  One to retry: its
		 * attempt and a delivery row due then.  A held one: a delivery row
		 * due now (its ordering is the row queue's from then on).
		 */
		run_plan(&plan_chunk_rest,
				 "WITH u AS (SELECT u.id, u.ep, u.ev::uuid AS ev, u.lane, u.kind, u.att,"
				 "     nullif(u.st, 0) AS st, nullif(u.er, '') AS er, nullif(u.ex, '') AS ex,"
				 "     u.at, u.retry, u.ord, u.cat"
				 "     FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
				 "       AS u(id, ep, ev, lane, kind, att, st, er, ex, at, retry, ord, cat)),"
				 " a AS (INSERT INTO odoo_sync.delivery_attempt"
				 "   SELECT u.id, u.ep, u.ev, u.att, u.st, u.er, u.at,"
				 "          CASE WHEN u.kind = 'retry' THEN u.retry END"
				 "     FROM u WHERE u.kind IN ('dead', 'retry')),"
				 /* dead, and a retry or held one whose event was purged since */
				 " d AS (INSERT INTO odoo_sync.delivery_done"
				 "   (id, endpoint_id, event_id, state, lane, attempts, status, error,"
				 "    response_excerpt, event_at, created_at, finished_at)"
				 "   SELECT u.id, u.ep, u.ev, 'dead', u.lane, u.att, u.st,"
				 "          CASE WHEN u.kind = 'dead' THEN u.er ELSE 'event no longer exists' END,"
				 "          u.ex, coalesce(e.commit_time, e.captured_at, u.cat), u.cat, u.at"
				 "     FROM u LEFT JOIN odoo_sync.event e ON e.id = u.ev"
				 "    WHERE u.kind = 'dead' OR e.id IS NULL)"
				 " INSERT INTO odoo_sync.delivery"
				 "   (id, endpoint_id, event_id, aggregate_type, aggregate_id, aggregate_seq,"
				 "    lane, ordered, event_at, created_at, next_at, attempts, last_status,"
				 "    last_error)"
				 " OVERRIDING SYSTEM VALUE"
				 " SELECT u.id, u.ep, u.ev, e.aggregate_type, e.aggregate_id, e.aggregate_seq,"
				 "        u.lane, u.ord, coalesce(e.commit_time, e.captured_at), u.cat,"
				 "        u.retry, u.att, u.st, u.er"
				 "   FROM u JOIN odoo_sync.event e ON e.id = u.ev"
				 "  WHERE u.kind IN ('retry', 'held')",
				 13, types, values, SPI_OK_INSERT);
	}
}

/*
 * claim_rows
 *		claim_many() for the pairs whose endpoint has rows in this worker's
 *		lane (due or not).  Rows are the rare path (retries, held events,
 *		replays, rate-limited endpoints), and the row claim is a large
 *		statement: ~0.1 ms for four endpoints on an empty queue, a quarter
 *		of the critical lane's turn from an event's commit to its request;
 *		this probe is one index lookup per endpoint.  A row committed after
 *		the probe wakes this worker (fan-out, _queue_again) or was written
 *		by it (a held or retried chunk event, this turn or an earlier one),
 *		so the next turn finds it.
 */
static SPIPlanPtr plan_rows_present = NULL;

static void
claim_rows(int n, Endpoint **eps, int *lanes, int *limits, int *got)
{
	Oid			types[1] = {INT4ARRAYOID};
	Datum		values[1];
	Datum	   *d_ep = palloc(sizeof(Datum) * n);
	Endpoint  **weps;
	int		   *wlanes;
	int		   *wlimits;
	int		   *wgot;
	int			m = 0;

	for (int i = 0; i < n; i++)
	{
		d_ep[i] = Int32GetDatum(eps[i]->id);
		got[i] = 0;
	}
	values[0] = PointerGetDatum(make_array(d_ep, n, INT4OID));
	/* every pair is of this worker's lane: a constant (it never changes) */
	run_plan(&plan_rows_present,
			 psprintf("SELECT x.ep FROM unnest($1) AS x(ep) WHERE EXISTS ("
					  " SELECT 1 FROM odoo_sync.delivery q"
					  "  WHERE q.endpoint_id = x.ep AND q.lane = '%s')",
					  lane_names[my_lane]),
			 1, types, values, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return;
	weps = palloc(sizeof(Endpoint *) * n);
	wlanes = palloc(sizeof(int) * n);
	wlimits = palloc(sizeof(int) * n);
	wgot = palloc0(sizeof(int) * n);
	for (int i = 0; i < n; i++)
	{
		Assert(lanes[i] == my_lane);
		for (uint64 r = 0; r < SPI_processed; r++)
			if (DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc,
											1, &(bool){false})) == eps[i]->id)
			{
				weps[m] = eps[i];
				wlanes[m] = lanes[i];
				wlimits[m] = limits[i];
				m++;
				break;
			}
	}
	if (m == 0)
		return;
	claim_many(m, weps, wlanes, wlimits, wgot);
	for (int j = 0; j < m; j++)
		for (int i = 0; i < n; i++)
			if (eps[i] == weps[j])
				got[i] = wgot[j];
}

/*
 * claim_chunks
 *		Claims chunks for (endpoint, lane) pairs, oldest first, as many as
 *		fit in each pair's limit (at least one), and queues their events:
 *		an ordered one behind an earlier event of its aggregate in memory,
 *		or held (written as a row when its chunk is recorded) when its
 *		aggregate has an earlier delivery row or is poisoned.  A chunk is
 *		not claimed while an older chunk of the other lane with events of
 *		the same aggregate type is not recorded (per aggregate order
 *		across lanes).  got[i] += events claimed; more[i]: chunks were left.
 */
static SPIPlanPtr plan_chunk_claim = NULL;
static SPIPlanPtr plan_chunk_lease = NULL;
static SPIPlanPtr plan_chunk_events = NULL;

static void
claim_chunks(int n, Endpoint **eps, int *lanes, int *limits, int *got, bool *more)
{
	Oid			types[4] = {INT4ARRAYOID, TEXTARRAYOID, INT4OID, INT4OID};
	Datum		values[4];
	Datum	   *d_ep = palloc(sizeof(Datum) * n);
	Datum	   *d_lane = palloc(sizeof(Datum) * n);
	Datum	   *chosen;
	Datum	   *leases;
	int			nchosen = 0;
	int		   *sum = palloc0(sizeof(int) * n);
	bool	   *stop;
	int		   *seen;
	uint64		rows;

	for (int i = 0; i < n; i++)
	{
		d_ep[i] = Int32GetDatum(eps[i]->id);
		d_lane[i] = text_datum(lane_names[lanes[i]]);
		more[i] = false;
	}
	values[0] = PointerGetDatum(make_array(d_ep, n, INT4OID));
	values[1] = PointerGetDatum(make_array(d_lane, n, TEXTOID));
	values[2] = Int32GetDatum(CHUNK_CLAIM);
	/* never a chunk this worker still has (its lease ran out meanwhile) */
	values[3] = Int32GetDatum(MyProcPid);
	run_plan(&plan_chunk_claim,
			 "WITH x AS (SELECT * FROM unnest($1, $2) AS x(ep, lane))"
			 " SELECT c.id, c.endpoint_id, c.lane, c.n FROM x CROSS JOIN LATERAL ("
			 "   SELECT c.id, c.endpoint_id, c.lane, c.n FROM odoo_sync.delivery_chunk c"
			 /* an unleased chunk is due whatever its next_at (the clock of
			  * the transaction that wrote it) */
			 "    WHERE c.endpoint_id = x.ep AND c.lane = x.lane"
			 "      AND (c.leased_by IS NULL OR c.next_at <= now())"
			 "      AND c.leased_by IS DISTINCT FROM $4"
			 "    ORDER BY c.id LIMIT $3"
			 "    FOR UPDATE OF c SKIP LOCKED) c"
			 " ORDER BY c.id",
			 4, types, values, SPI_OK_SELECT);
	rows = SPI_processed;
	if (rows == 0)
		return;
	chosen = palloc(sizeof(Datum) * rows);
	leases = palloc(sizeof(Datum) * rows);
	stop = palloc0(sizeof(bool) * n);
	seen = palloc0(sizeof(int) * n);
	for (uint64 r = 0; r < rows; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	td = SPI_tuptable->tupdesc;
		int			epid = DatumGetInt32(SPI_getbinval(tup, td, 2, &(bool){false}));
		int			lane = strcmp(SPI_getvalue(tup, td, 3), "bulk") == 0 ? LANE_BULK : LANE_CRITICAL;
		int			cn = DatumGetInt32(SPI_getbinval(tup, td, 4, &(bool){false}));

		for (int i = 0; i < n; i++)
			if (eps[i]->id == epid && lanes[i] == lane)
			{
				/*
				 * Whole chunks within the limit, at least one, oldest first
				 * and without a gap: a chunk left out leaves out every
				 * newer one of the pair (their events may follow its events
				 * in an aggregate).
				 */
				if (++seen[i] == CHUNK_CLAIM)
					more[i] = true;
				if (stop[i] || (sum[i] > 0 && sum[i] + cn > limits[i]))
				{
					stop[i] = true;
					more[i] = true;
					break;
				}
				sum[i] += cn;
				got[i] += cn;
				chosen[nchosen] = SPI_getbinval(tup, td, 1, &(bool){false});
				/* every event may take a whole request of the endpoint's */
				leases[nchosen] = Int64GetDatum(((int64) cn / Max(1, lane_cap(eps[i], lane)) + 1) *
												(eps[i]->timeout_ms + eps[i]->connect_ms) +
												deliver_lease_margin);
				nchosen++;
				break;
			}
	}
	if (nchosen == 0)
		return;
	{
		Oid			ltypes[3] = {INT8ARRAYOID, INT8ARRAYOID, INT4OID};
		Datum		lvalues[3];

		lvalues[0] = PointerGetDatum(make_array(chosen, nchosen, INT8OID));
		lvalues[1] = PointerGetDatum(make_array(leases, nchosen, INT8OID));
		lvalues[2] = Int32GetDatum(MyProcPid);
		run_plan(&plan_chunk_lease,
				 "UPDATE odoo_sync.delivery_chunk c"
				 "   SET leased_by = $3, next_at = now() + u.lease * interval '1 millisecond'"
				 "  FROM unnest($1, $2) AS u(id, lease) WHERE c.id = u.id",
				 3, ltypes, lvalues, SPI_OK_UPDATE);
		if (SPI_processed != (uint64) nchosen)
			elog(ERROR, "the chunk lease updated " UINT64_FORMAT " of %d chunks",
				 SPI_processed, nchosen);

		/*
		 * The events, in chunk and capture order, with the CloudEvent
		 * columns where build_cloudevent() reads them (8 to 16).
		 */
		run_plan(&plan_chunk_events,
				 "SELECT c.id, u.ord::int4, u.id, c.created_at,"
				 "       c.ordered AND e.id IS NOT NULL AND ("
				 "        (r.any_rows AND EXISTS ("
				 "         SELECT 1 FROM odoo_sync.delivery p"
				 "          WHERE p.endpoint_id = c.endpoint_id"
				 "            AND p.aggregate_type = e.aggregate_type"
				 "            AND p.aggregate_id = e.aggregate_id"
				 "            AND p.aggregate_seq < e.aggregate_seq))"
				 "        OR (r.other_lane AND EXISTS ("
				 "         SELECT 1 FROM odoo_sync.delivery_chunk o"
				 "          WHERE o.endpoint_id = c.endpoint_id"
				 "            AND o.agg_type = c.agg_type"
				 "            AND o.lane = CASE c.lane WHEN 'bulk' THEN 'critical' ELSE 'bulk' END"
				 "            AND o.first_seq < e.seq))),"
				 "       u.event_id::text,"
				 "       e.id IS NOT NULL, e.source, e.type, e.aggregate_type, e.aggregate_id,"
				 "       coalesce(e.commit_time, e.captured_at), e.aggregate_seq,"
				 "       e.correlation_id, e.lane, e.payload::text,"
				 "       c.n, c.ordered, c.endpoint_id, c.lane, r.other_lane, c.agg_type"
				 "  FROM odoo_sync.delivery_chunk c"
				 /* does the endpoint have rows at all (once per chunk) */
				 /*
				  * Once per chunk: does the endpoint have rows at all; has
				  * the other lane an unrecorded chunk with events of the
				  * same aggregate type (never, with the built-in catalog).
				  * An event with an earlier row of its aggregate, or that
				  * such a chunk may hold an earlier event of (it starts
				  * before this event), is held: written as a row, which
				  * waits for that chunk (see the row claim).
				  */
				 /* (OFFSET 0: computed per chunk, not pulled up into every event's row) */
				 " CROSS JOIN LATERAL (SELECT EXISTS (SELECT 1 FROM odoo_sync.delivery p"
				 "       WHERE p.endpoint_id = c.endpoint_id) AS any_rows,"
				 "     EXISTS (SELECT 1 FROM odoo_sync.delivery_chunk o"
				 "       WHERE o.endpoint_id = c.endpoint_id"
				 "         AND o.agg_type = c.agg_type"
				 "         AND o.lane = CASE c.lane WHEN 'bulk' THEN 'critical' ELSE 'bulk' END)"
				 "       AS other_lane OFFSET 0) r"
				 " CROSS JOIN LATERAL unnest(c.ids, c.event_ids) WITH ORDINALITY"
				 "       AS u(id, event_id, ord)"
				 "  LEFT JOIN odoo_sync.event e ON e.id = u.event_id"
				 " WHERE c.id = ANY ($1)",
				 1, ltypes, lvalues, SPI_OK_SELECT);
	}
	rows = SPI_processed;

	/*
	 * Pass 1: the events into their chunks, by position (the statement
	 * need not sort them).  Pass 2: queued in chunk and capture order, which
	 * the per-aggregate sequencing relies on.
	 */
	{
		Chunk	  **cs = palloc0(sizeof(Chunk *) * nchosen);
		DItem	 ***items = palloc0(sizeof(DItem **) * nchosen);
		bool	  **held = palloc0(sizeof(bool *) * nchosen);
		char	 ***atype = palloc0(sizeof(char **) * nchosen);
		char	 ***aid = palloc0(sizeof(char **) * nchosen);

		for (uint64 r = 0; r < rows; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			TupleDesc	td = SPI_tuptable->tupdesc;
			bool		isnull;
			int64		cid = DatumGetInt64(SPI_getbinval(tup, td, 1, &isnull));
			int			idx = DatumGetInt32(SPI_getbinval(tup, td, 2, &isnull)) - 1;
			bool		exists = DatumGetBool(SPI_getbinval(tup, td, 7, &isnull));
			int			k;
			Chunk	   *c;
			DItem	   *it;

			for (k = 0; k < nchosen; k++)
				if (DatumGetInt64(chosen[k]) == cid)
					break;
			if (k == nchosen)
				elog(ERROR, "read an event of chunk " INT64_FORMAT ", which was not claimed", cid);
			if (cs[k] == NULL)
			{
				int			cn = DatumGetInt32(SPI_getbinval(tup, td, 17, &isnull));
				int			epid = DatumGetInt32(SPI_getbinval(tup, td, 19, &isnull));
				MemoryContext old = MemoryContextSwitchTo(DeliverContext);

				c = palloc0(sizeof(Chunk));
				c->id = cid;
				c->ep = find_endpoint(epid);
				if (c->ep == NULL)
					elog(ERROR, "claimed a chunk of endpoint %d that is not loaded", epid);
				c->lane = strcmp(col_cstring(tup, td, 20), "bulk") == 0 ? LANE_BULK : LANE_CRITICAL;
				c->ordered = DatumGetBool(SPI_getbinval(tup, td, 18, &isnull));
				c->other_lane = DatumGetBool(SPI_getbinval(tup, td, 21, &isnull));
				c->agg_type = col_cstring(tup, td, 22);
				c->n = cn;
				c->open = cn;
				c->created_at = DatumGetTimestampTz(SPI_getbinval(tup, td, 4, &isnull));
				c->ids = palloc0(sizeof(int64) * cn);
				c->event_ids = palloc0(40 * cn);
				c->event_at = palloc0(sizeof(TimestampTz) * cn);
				c->aggs = palloc0(sizeof(AggEntry *) * cn);
				c->res = palloc0(sizeof(ChunkResult) * cn);
				c->next = chunks;
				chunks = c;
				MemoryContextSwitchTo(old);
				cs[k] = c;
				items[k] = palloc0(sizeof(DItem *) * cn);
				held[k] = palloc0(sizeof(bool) * cn);
				atype[k] = palloc0(sizeof(char *) * cn);
				aid[k] = palloc0(sizeof(char *) * cn);
			}
			c = cs[k];
			if (idx < 0 || idx >= c->n || items[k][idx] != NULL)
				elog(ERROR, "chunk " INT64_FORMAT " has no event %d, or twice", cid, idx + 1);
			c->ids[idx] = DatumGetInt64(SPI_getbinval(tup, td, 3, &isnull));
			{
				text	   *ev = DatumGetTextPP(SPI_getbinval(tup, td, 6, &isnull));

				text_to_cstring_buffer(ev, c->event_ids[idx], 40);
			}
			c->event_at[idx] = exists ?
				DatumGetTimestampTz(SPI_getbinval(tup, td, 12, &isnull)) : c->created_at;

			it = MemoryContextAllocZero(DeliverContext, sizeof(DItem));
			it->id = c->ids[idx];
			it->attempts = 1;
			it->created_at = c->created_at;
			strlcpy(it->event_id, c->event_ids[idx], sizeof(it->event_id));
			it->chunk = c;
			it->idx = idx;
			if (exists)
			{
				build_cloudevent(it, tup, td);
				if (c->ordered)
				{
					atype[k][idx] = col_cstring(tup, td, 10);
					aid[k][idx] = col_cstring(tup, td, 11);
				}
			}
			held[k][idx] = DatumGetBool(SPI_getbinval(tup, td, 5, &isnull));
			items[k][idx] = it;
		}

		for (int k = 0; k < nchosen; k++)
		{
			Chunk	   *c = cs[k];

			if (c == NULL)
				elog(ERROR, "claimed chunk " INT64_FORMAT " has no events",
					 DatumGetInt64(chosen[k]));
			for (int idx = 0; idx < c->n; idx++)
			{
				DItem	   *it = items[k][idx];

				if (it == NULL)
					elog(ERROR, "chunk " INT64_FORMAT " lacks its event %d", c->id, idx + 1);
				if (atype[k][idx] != NULL)
				{
					AggEntry   *a = agg_enter(c->ep, atype[k][idx], aid[k][idx]);

					c->aggs[idx] = a;
					it->agg = a;
					if (held[k][idx])
						a->poisoned = true;
					if (a->poisoned)
					{
						a->poison_chunk = Max(a->poison_chunk, c->id);
						item_end(it, END_HELD, 0, NULL, NULL, GetCurrentTimestamp(), 0);
					}
					else if (a->busy)
					{
						if (a->held_tail)
							a->held_tail->next_held = it;
						else
							a->held_head = it;
						a->held_tail = it;
						c->ep->held_items[c->lane]++;
					}
					else
					{
						a->busy = true;
						it->agg_busy = true;
						queue_push(&c->ep->queue[c->lane], it);
					}
				}
				else
					queue_push(&c->ep->queue[c->lane], it);
			}
		}
	}
}

/*
 * db_turn
 *		One short transaction: record results, persist breaker states, claim.
 *		Returns false when the extension is gone.
 */
static bool
db_turn(TimestampTz now, bool reload)
{
	bool		present;

	/*
	 * Before the snapshot: a change of endpoints committed later bumps the
	 * generation again, so the reload below never takes a generation it
	 * has not seen.
	 */
	turn_gen = odoo_sync_endpoints_gen();

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	present = odoo_sync_extension_present();
	if (!present)
	{
		CommitTransactionCommand();
		return false;
	}
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "recording results and claiming deliveries");

	if (reload)
		load_endpoints(endpoints_loaded_at == 0);
	record_chunks();
	record_results();
	/* successors of what was just recorded may be claimable now */
	for (int i = 0; i < nendpoints; i++)
		for (int l = 0; l < NLANES; l++)
			if (endpoints[i]->results_waiting[l])
			{
				endpoints[i]->results_waiting[l] = false;
				endpoints[i]->want_claim[l] = true;
			}
	persist_states();

	{
		int			max = nendpoints * NLANES + 1;
		int			n = 0;
		Endpoint  **eps = palloc(sizeof(Endpoint *) * max);
		int		   *lanes = palloc(sizeof(int) * max);
		int		   *limits = palloc(sizeof(int) * max);
		int		   *got = palloc(sizeof(int) * max);
		bool	   *more = palloc0(sizeof(bool) * max);

		for (int lane = my_lane; lane == my_lane; lane++)
			for (int i = 0; i < nendpoints; i++)
			{
				Endpoint   *ep = endpoints[i];
				int			room;

				if (!(claim_all || ep->want_claim[lane] ||
					  (ep->next_due[lane] != 0 && ep->next_due[lane] <= now)))
					continue;
				if (!can_claim(ep, now))
					continue;
				if (!claim_worthwhile(ep, lane))
					continue;
				room = claim_room(ep, lane);
				eps[n] = ep;
				lanes[n] = lane;
				limits[n] = room;
				n++;
			}
		if (n > 0)
		{
			int		   *left = palloc(sizeof(int) * n);
			Endpoint  **ceps = palloc(sizeof(Endpoint *) * n);
			int		   *clanes = palloc(sizeof(int) * n);
			int		   *cgot = palloc0(sizeof(int) * n);
			bool	   *cmore = palloc0(sizeof(bool) * n);
			int			m = 0;

			claim_rows(n, eps, lanes, limits, got);
			/* new deliveries (chunks) in the room the rows left */
			for (int i = 0; i < n; i++)
				if (limits[i] > got[i])
				{
					ceps[m] = eps[i];
					clanes[m] = lanes[i];
					left[m] = limits[i] - got[i];
					m++;
				}
			if (m > 0)
				claim_chunks(m, ceps, clanes, left, cgot, cmore);
			for (int j = 0; j < m; j++)
				for (int i = 0; i < n; i++)
					if (eps[i] == ceps[j] && lanes[i] == clanes[j])
					{
						got[i] += cgot[j];
						more[i] = cmore[j];
					}
		}
		for (int i = 0; i < n; i++)
		{
			Endpoint   *ep = eps[i];
			int			lane = lanes[i];

			/*
			 * A full claim may leave more behind.  Rows due later are only
			 * those this worker rescheduled (next_due tracks them) or those
			 * of a previous worker (the periodic sweep finds them).
			 */
			ep->want_claim[lane] = (got[i] >= limits[i]) || more[i];
			if (ep->next_due[lane] != 0 && ep->next_due[lane] <= now)
				due_pop(ep, lane, now);
		}
	}
	/* the state may have moved to half-open in can_claim() */
	persist_states();
	claim_all = false;

	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	if (wake_other_lane)
	{
		wake_other_lane = false;
		odoo_sync_wake(MyDatabaseId, other_kind);
	}
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return true;
}

/* ------------------------------------------------------------------ */
/* sending */

/* the endpoint's token bucket, shared by both lanes (mutex held) */
static bool
take_token(Endpoint *ep, OdooSyncEndpointShare *sh, TimestampTz now)
{
	if (ep->rate_limit <= 0)
		return true;
	if (sh->tokens_at == 0)
		sh->tokens_at = now;
	sh->tokens = Min(1.0, sh->tokens + (now - sh->tokens_at) / 1e6 * ep->rate_limit);
	sh->tokens_at = Max(now, sh->tokens_at);
	if (sh->tokens >= 1.0 - 1e-9)
	{
		sh->tokens -= 1.0;
		return true;
	}
	return false;
}

/* microseconds until the next token, 0 when one is there */
static int64
token_wait(Endpoint *ep, TimestampTz now)
{
	double		have;
	OdooSyncEndpointShare *sh;

	if (ep->rate_limit <= 0)
		return 0;
	sh = share_lock(ep);
	have = Min(1.0, sh->tokens + (now - sh->tokens_at) / 1e6 * ep->rate_limit);
	share_unlock(ep, sh);
	if (have >= 1.0 - 1e-9)
		return 0;
	return (int64) ((1.0 - have) / ep->rate_limit * 1e6) + 1;
}

/*
 * take_slot
 *		Reserves a request of this lane at the endpoint, if its circuit, its
 *		concurrency (both lanes' requests together; the bulk lane at most
 *		lane_cap), and its rate limit allow.  *probe: the request is the
 *		half-open circuit's probe.  When the other lane's requests are in
 *		the way, that worker wakes this one when one of them ends.
 */
static bool
take_slot(Endpoint *ep, int lane, TimestampTz now, bool *probe)
{
	OdooSyncEndpointShare *sh = share_lock(ep);
	bool		ok = false;

	*probe = false;
	if (sh->circuit == CIRCUIT_OPEN ||
		(sh->circuit == CIRCUIT_HALF_OPEN && sh->probe_in_flight))
		sh->waiting[lane] = true;
	else if (sh->active[lane] >= lane_cap(ep, lane))
		;						/* the end of one of ours wakes us */
	else if (sh->active[0] + sh->active[1] >= ep->concurrency)
		sh->waiting[lane] = true;
	else if (!take_token(ep, sh, now))
		ep->rate_blocked = true;
	else
	{
		sh->active[lane]++;
		if (sh->circuit == CIRCUIT_HALF_OPEN)
		{
			sh->probe_in_flight = true;
			sh->probe_by = lane + 1;
			*probe = true;
		}
		ok = true;
	}
	share_unlock(ep, sh);
	return ok;
}

static void
batch_id(DItem **items, int n, char *out)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen;

	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	for (int i = 0; i < n; i++)
		EVP_DigestUpdate(ctx, items[i]->event_id, strlen(items[i]->event_id));
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	strcpy(out, "batch_");
	for (int i = 0; i < 16; i++)
		sprintf(out + 6 + 2 * i, "%02x", md[i]);
}

/* gives back a place take_slot() gave, unused */
static void
slot_release(Endpoint *ep, int lane, bool probe)
{
	OdooSyncEndpointShare *sh = share_lock(ep);
	bool		wake_other;

	if (sh->active[lane] > 0)
		sh->active[lane]--;
	if (probe && sh->probe_by == lane + 1)
	{
		sh->probe_in_flight = false;
		sh->probe_by = 0;
	}
	wake_other = sh->waiting[1 - lane];
	sh->waiting[1 - lane] = false;
	share_unlock(ep, sh);
	if (probe)
		ep->probe_in_flight = false;
	if (wake_other)
		odoo_sync_wake(MyDatabaseId, other_kind);
}

static void
start_send(Endpoint *ep, int lane, TimestampTz now, bool probe)
{
	Send	   *s;
	StringInfoData body;
	char		idbuf[64];
	char		line[256];
	const char *msg_id;
	int64		ts;
	MemoryContext old = MemoryContextSwitchTo(DeliverContext);
	int			max = probe ? 1 : ep->batch_size;

	s = palloc0(sizeof(Send));
	s->ep = ep;
	s->lane = lane;
	s->items = palloc(sizeof(DItem *) * max);
	while (s->nitems < max)
	{
		DItem	   *it = queue_pop(&ep->queue[lane]);

		if (it == NULL)
			break;
		if (it->json == NULL)
		{
			/* the event was purged: nothing to send */
			item_end(it, END_DEAD, 0, "event no longer exists", NULL, now, DT_NOEND);
			continue;
		}
		if (now > it->created_at + ep->max_age_ms * 1000)
		{
			/* waited past max_age (behind an open circuit, a pause...) */
			char	   *why = psprintf("older than max_age (%s) when its turn came; not sent",
									   ep->max_age_text);

			item_end(it, END_DEAD, 0, why, NULL, now, DT_NOEND);
			pfree(why);
			continue;
		}
		s->items[s->nitems++] = it;
	}
	if (s->nitems == 0)
	{
		/* nothing left to send: give back the place take_slot() gave */
		slot_release(ep, lane, probe);
		pfree(s->items);
		pfree(s);
		MemoryContextSwitchTo(old);
		return;
	}

	initStringInfo(&body);
	if (ep->batch_size == 1)
	{
		appendBinaryStringInfo(&body, s->items[0]->json, s->items[0]->jsonlen);
		msg_id = s->items[0]->event_id;
	}
	else
	{
		appendStringInfoChar(&body, '[');
		for (int i = 0; i < s->nitems; i++)
		{
			if (i > 0)
				appendStringInfoChar(&body, ',');
			appendBinaryStringInfo(&body, s->items[i]->json, s->items[i]->jsonlen);
		}
		appendStringInfoChar(&body, ']');
		if (s->nitems == 1)
			msg_id = s->items[0]->event_id;
		else
		{
			batch_id(s->items, s->nitems, idbuf);
			msg_id = idbuf;
		}
	}
	s->body = body.data;
	ts = (int64) time(NULL);

	s->hdrs = curl_slist_append(NULL, ep->batch_size == 1 ?
								"Content-Type: application/cloudevents+json" :
								"Content-Type: application/cloudevents-batch+json");
	snprintf(line, sizeof(line), "webhook-id: %s", msg_id);
	s->hdrs = curl_slist_append(s->hdrs, line);
	snprintf(line, sizeof(line), "webhook-timestamp: " INT64_FORMAT, ts);
	s->hdrs = curl_slist_append(s->hdrs, line);
	if (ep->keylen >= 0)
	{
		char	   *sig = sign_webhook(ep->key, ep->keylen, msg_id, ts,
									   body.data, body.len);

		snprintf(line, sizeof(line), "webhook-signature: %s", sig);
		pfree(sig);
		s->hdrs = curl_slist_append(s->hdrs, line);
	}
	if (s->items[0]->traceparent)
	{
		snprintf(line, sizeof(line), "traceparent: %s", s->items[0]->traceparent);
		s->hdrs = curl_slist_append(s->hdrs, line);
	}
	s->hdrs = curl_slist_append(s->hdrs, "Expect:");
	for (int i = 0; i < ep->nheaders; i++)
		s->hdrs = curl_slist_append(s->hdrs, ep->headers[i]);

	s->req.url = ep->url;
	s->req.headers = s->hdrs;
	s->req.body = s->body;
	s->req.body_len = body.len;
	s->req.connect_timeout_ms = ep->connect_ms;
	s->req.timeout_ms = ep->timeout_ms;
	s->req.verify_tls = ep->verify_tls;
	s->req.owner = s;
	if (probe)
	{
		s->probe = true;
		ep->probe_in_flight = true;
	}
	ep->active[lane]++;
	ep->active_items[lane] += s->nitems;
	MemoryContextSwitchTo(old);
	http_start(&s->req);
}

/*
 * dispatch
 *		Starts requests from the local queues, critical first, within each
 *		endpoint's concurrency, lane caps, circuit and rate limit.
 */
static void
dispatch(TimestampTz now)
{
	int			lane = my_lane;

	for (int i = 0; i < nendpoints; i++)
	{
		Endpoint   *ep = endpoints[i];

		ep->rate_blocked = false;
		if (!ep->present || !ep->enabled || queue_len(&ep->queue[lane]) == 0)
			continue;
		breaker_pull(ep);
		if (ep->circuit == CIRCUIT_OPEN)
			continue;
		while (queue_len(&ep->queue[lane]) > 0)
		{
			bool		probe;

			if (!take_slot(ep, lane, now, &probe))
				break;
			start_send(ep, lane, now, probe);
		}
	}
}

static bool
retryable_status(long status)
{
	return status == 408 || status == 425 || status == 429 ||
		(status >= 500 && status <= 599);
}

static int64
backoff_us(Endpoint *ep, int attempts)
{
	double		cap = (double) ep->backoff_base_ms;

	for (int i = 1; i < attempts && cap < ep->backoff_max_ms; i++)
		cap *= 2;
	cap = Min(cap, (double) ep->backoff_max_ms);
	return (int64) (pg_prng_double(&pg_global_prng_state) * cap * 1000.0);
}

/*
 * breaker_record
 *		Ends a request at the endpoint's shared state: frees its place in
 *		the concurrency, counts a success or a failure in the circuit
 *		breaker (shared by both lanes' workers), and wakes the other worker
 *		if it waits for a place.
 */
static void
breaker_record(Endpoint *ep, Send *s, bool success, bool failure, TimestampTz now)
{
	OdooSyncEndpointShare *sh = share_lock(ep);
	OdooSyncEndpointShare copy;
	Circuit		was = (Circuit) sh->circuit;
	int32		failures_was = sh->failures;
	int			other = 1 - s->lane;
	bool		wake_other;

	if (sh->active[s->lane] > 0)
		sh->active[s->lane]--;
	if (s->probe)
	{
		sh->probe_in_flight = false;
		sh->probe_by = 0;
	}
	if (failure)
	{
		sh->failures++;
		if (sh->circuit == CIRCUIT_HALF_OPEN ||
			(sh->circuit == CIRCUIT_CLOSED && sh->failures >= ep->breaker_threshold))
		{
			sh->circuit = CIRCUIT_OPEN;
			sh->opened_at = now;
			sh->probe_in_flight = false;
			sh->probe_by = 0;
		}
	}
	else if (success)
	{
		if (sh->circuit == CIRCUIT_HALF_OPEN)
			sh->circuit = CIRCUIT_CLOSED;
		sh->failures = 0;
	}
	wake_other = sh->waiting[other];
	sh->waiting[other] = false;
	copy = *sh;
	share_unlock(ep, sh);

	if (wake_other)
		odoo_sync_wake(MyDatabaseId, other_kind);
	if (was != CIRCUIT_OPEN && copy.circuit == CIRCUIT_OPEN)
	{
		ereport(LOG,
				(errmsg("circuit of endpoint \"%s\" opens after %d consecutive failures",
						ep->name, copy.failures)));
		ep->state_dirty = true;
	}
	else if (was == CIRCUIT_HALF_OPEN && copy.circuit == CIRCUIT_CLOSED)
	{
		ereport(LOG,
				(errmsg("circuit of endpoint \"%s\" closes: the probe succeeded",
						ep->name)));
		ep->state_dirty = true;
	}
	else if (copy.failures != failures_was)
		ep->state_dirty = true; /* endpoint_status shows the count (one write a turn) */
	breaker_adopt(ep, &copy);
}

/* turns a finished request into results */
static void
finish_send(Send *s)
{
	Endpoint   *ep = s->ep;
	HttpRequest *req = &s->req;
	TimestampTz now = req->finished_at;
	bool		ok = req->result == CURLE_OK && req->status >= 200 && req->status < 300;
	bool		transport = req->result != CURLE_OK;
	bool		retry = transport || retryable_status(req->status);
	char		errbuf[CURL_ERROR_SIZE + 64];
	char	   *excerpt = NULL;

	ep->active[s->lane]--;
	ep->active_items[s->lane] -= s->nitems;
	{
		int64		took = Max(req->finished_at - req->started_at, 1);

		ep->request_us = ep->request_us == 0 ? took :
			(ep->request_us * 7 + took) / 8;
	}
	ep->results_waiting[s->lane] = true;
	if (s->probe)
		ep->probe_in_flight = false;

	/* a 4xx other than 408: the endpoint answers, not a sign of ill health */
	breaker_record(ep, s, !(transport || req->status == 408 || req->status >= 500),
				   !ok && (transport || req->status == 408 || req->status >= 500), now);

	if (!ok)
	{
		if (transport)
			snprintf(errbuf, sizeof(errbuf), "%s", req->error);
		else
			snprintf(errbuf, sizeof(errbuf), "HTTP %ld", req->status);
		if (req->excerpt_len > 0)
			excerpt = clean_excerpt(req->excerpt, req->excerpt_len);
	}

	for (int i = 0; i < s->nitems; i++)
	{
		DItem	   *it = s->items[i];

		if (it->chunk)
			it->chunk->res[it->idx].sent = true;
		if (ok)
			item_end(it, END_OK, req->status, NULL, NULL, now, 0);
		else
		{
			TimestampTz retry_at = DT_NOEND;

			if (retry && it->attempts < ep->max_attempts)
			{
				int64		delay = req->retry_after_s >= 0 ?
					Min(req->retry_after_s, 86400) * INT64CONST(1000000) :
					backoff_us(ep, it->attempts);

				retry_at = now + delay;
				if (retry_at > it->created_at + ep->max_age_ms * 1000)
					retry_at = DT_NOEND;
			}
			if (retry_at != DT_NOEND)
				due_push(ep, s->lane, retry_at);
			item_end(it, retry_at == DT_NOEND ? END_DEAD : END_RETRY,
					 req->status, errbuf, excerpt, now, retry_at);
		}
	}
	if (excerpt)
		pfree(excerpt);
	curl_slist_free_all(s->hdrs);
	pfree(s->body);
	pfree(s->items);
	pfree(s);
}

/* ------------------------------------------------------------------ */

static long
compute_timeout(TimestampTz now)
{
	int64		t = 1000 * 1000;	/* reload endpoints at least every second */

	if (reload_at != 0)
		t = Min(t, reload_at - now);
	if (have_results())
		t = Min(t, RESULT_DELAY_US);

	for (int i = 0; i < nendpoints; i++)
	{
		Endpoint   *ep = endpoints[i];

		if (!ep->present || !ep->enabled)
			continue;
		if (ep->circuit == CIRCUIT_OPEN)
		{
			t = Min(t, ep->opened_at + ep->breaker_cooldown_ms * 1000 - now);
			continue;
		}
		/*
		 * Queued work that dispatch() could not start waits for a token
		 * (timed here), for one of our requests to end (curl wakes us), or
		 * for one of the other lane's worker to end (it sets our latch).
		 */
		if (ep->next_due[my_lane] != 0)
			t = Min(t, ep->next_due[my_lane] - now);
		if (queue_len(&ep->queue[my_lane]) > 0 && ep->rate_blocked)
			t = Min(t, token_wait(ep, now));
	}
	t = Max(t, 0);
	return (long) ((t + 999) / 1000);
}

static bool
have_results(void)
{
	return results.n_ok > 0 || results.n_fail > 0 || results.n_rel > 0 ||
		nchunks_complete > 0;
}

static TimestampTz first_result_at = 0;

/*
 * results_due
 *		Whether the results waiting should be recorded now: many of them,
 *		old ones (a successor of the same aggregate waits for them), or
 *		nothing else running.
 */
static bool
results_due(TimestampTz now)
{
	if (!have_results())
		return false;
	if (first_result_at == 0)
		first_result_at = now;
	return results.n_ok + results.n_fail >= RESULT_BATCH ||
		results.n_rel > 0 || nchunks_complete > 0 ||
		now - first_result_at >= RESULT_DELAY_US ||
		http_running() == 0;
}

static bool
any_claim_wanted(TimestampTz now)
{
	if (claim_all)
		return true;
	for (int i = 0; i < nendpoints; i++)
	{
		Endpoint   *ep = endpoints[i];

		if (!ep->present || !ep->enabled)
			continue;
		if (ep->circuit == CIRCUIT_OPEN)
		{
			if (now >= ep->opened_at + ep->breaker_cooldown_ms * 1000)
				return true;
			continue;
		}
		if ((ep->want_claim[my_lane] ||
			 (ep->next_due[my_lane] != 0 && ep->next_due[my_lane] <= now)) &&
			claim_worthwhile(ep, my_lane))
			return true;
	}
	return false;
}

static void
release_leases_at_start(void)
{
	int			rc;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (!odoo_sync_extension_present())
	{
		/* dropped since the worker started: the next turn exits */
		CommitTransactionCommand();
		return;
	}
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	rc = SPI_execute(psprintf("UPDATE odoo_sync.delivery SET next_at = now(), leased_by = NULL"
							  " WHERE leased_by IS NOT NULL AND lane = '%s'",
							  lane_names[my_lane]), false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "could not release the leases of a previous deliver worker");
	if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("deliver worker takes back " UINT64_FORMAT " deliveries left in flight",
						SPI_processed),
				 errdetail("Lane %s.", lane_names[my_lane])));
	rc = SPI_execute(psprintf("UPDATE odoo_sync.delivery_chunk SET next_at = now(), leased_by = NULL"
							  " WHERE leased_by IS NOT NULL AND lane = '%s'",
							  lane_names[my_lane]), false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "could not release the chunks of a previous deliver worker");
	if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("deliver worker takes back " UINT64_FORMAT " chunks of deliveries left in flight",
						SPI_processed),
				 errdetail("Lane %s; their events are sent again (same webhook-id).",
						   lane_names[my_lane])));
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
}

/*
 * set_critical_slice
 *		Asks Linux for a short time slice for this process (the critical
 *		lane's worker): on a busy machine a woken task otherwise waits up to
 *		the running task's slice (bulk delivery, the receiver, Odoo) before
 *		it runs; a task with a shorter slice preempts it (EEVDF,
 *		PREEMPT_SHORT, Linux 6.12+).  This is no priority: the worker still
 *		gets its fair share of CPU, in shorter pieces.  Failures are ignored
 *		(other kernels and systems keep their default).
 */
static void
set_critical_slice(void)
{
#if defined(__linux__) && defined(SYS_sched_setattr)
	struct
	{
		uint32		size;
		uint32		sched_policy;
		uint64		sched_flags;
		int32		sched_nice;
		uint32		sched_priority;
		uint64		sched_runtime;
		uint64		sched_deadline;
		uint64		sched_period;
	}			attr;
	static int	applied = -1;

	if (deliver_critical_slice == applied)
		return;
	memset(&attr, 0, sizeof(attr));
	attr.size = sizeof(attr);
	attr.sched_policy = 0;		/* SCHED_OTHER */
	errno = 0;
	attr.sched_nice = getpriority(PRIO_PROCESS, 0);
	/* in ns; 0 = the kernel's default slice; the kernel clamps to 0.1-100 ms */
	attr.sched_runtime = (uint64) deliver_critical_slice * 1000;
	if (syscall(SYS_sched_setattr, 0, &attr, 0) != 0)
		elog(DEBUG1, "sched_setattr(slice %d us) failed: %m", deliver_critical_slice);
	applied = deliver_critical_slice;
#endif
}

/*
 * deliver_main
 *		The loop of a lane's deliver worker.
 */
static void
deliver_main(OdooSyncWorkerKind kind, int lane, Datum main_arg)
{
	bool		woken = true;

	if (!odoo_sync_worker_attach(kind, main_arg))
		proc_exit(0);
	my_lane = lane;
	other_kind = kind == OSW_DELIVER ? OSW_DELIVER_CRITICAL : OSW_DELIVER;
	SpinLockAcquire(&OdooSyncShmem->mutex);
	my_slot = odoo_sync_find_slot(MyDatabaseId, false);
	SpinLockRelease(&OdooSyncShmem->mutex);
	share_reset_lane();
	if (lane == LANE_CRITICAL)
		set_critical_slice();

	DeliverContext = AllocSetContextCreate(TopMemoryContext, "odoo_sync deliver",
										   ALLOCSET_DEFAULT_SIZES);
	TurnContext = AllocSetContextCreate(TopMemoryContext, "odoo_sync deliver turn",
										ALLOCSET_DEFAULT_SIZES);
	http_init(64);
	release_leases_at_start();

	for (;;)
	{
		TimestampTz now;
		bool		reload;
		int			rc;
		HttpRequest *req;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			bool		was_allowed = odoo_sync_allow_private_endpoints;

			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			if (was_allowed && !odoo_sync_allow_private_endpoints)
				http_drop_connections();
			if (my_lane == LANE_CRITICAL)
				set_critical_slice();
		}
		MemoryContextReset(TurnContext);
		MemoryContextSwitchTo(TurnContext);

		now = GetCurrentTimestamp();
		/*
		 * After a change of endpoints or secrets (its commit bumps the
		 * database's endpoint generation, then wakes us), reload at most
		 * every 100 ms (a change sooner than that schedules one); and every
		 * second anyway.  Other wake-ups (new events, as often as they
		 * commit) do not reload: each reload is a query, ~0.3 ms of the critical lane's
		 * worker, on the path of the event that woke it.
		 */
		if (woken && reload_at == 0 && odoo_sync_endpoints_gen() != endpoints_gen_loaded)
			reload_at = endpoints_loaded_at + 100 * 1000;
		reload = endpoints_loaded_at == 0 ||
			now - endpoints_loaded_at >= 1000 * 1000 ||
			(reload_at != 0 && now >= reload_at);
		if (reload)
			reload_at = 0;
		if (woken || now - last_sweep >= 1000 * 1000)
		{
			claim_all = true;
			last_sweep = now;
		}
		if (reload || results_due(now) || any_claim_wanted(now))
		{
			/*
			 * Start what is queued locally first, and hand it to the
			 * sockets: the receivers work while the database does.
			 */
			dispatch(now);
			http_kick();
			first_result_at = 0;
			if (!db_turn(now, reload))
			{
				share_forget(true);
				odoo_sync_worker_detach();
				proc_exit(0);
			}
			MemoryContextSwitchTo(TurnContext);
		}
		now = GetCurrentTimestamp();
		dispatch(now);

		/* requests may have finished while curl was kicked: no waiting then */
		if ((req = http_next_done()) != NULL)
		{
			do
				finish_send((Send *) req->owner);
			while ((req = http_next_done()) != NULL);
			woken = false;
			continue;
		}
		rc = http_wait(compute_timeout(GetCurrentTimestamp()));
		woken = (rc & WL_LATCH_SET) != 0;
		if (woken)
			ResetLatch(MyLatch);
		while ((req = http_next_done()) != NULL)
			finish_send((Send *) req->owner);
	}
}

/*
 * odoo_sync_deliver_main
 *		Entry point of the bulk lane's deliver worker (backend_type
 *		"odoo_sync deliver").
 */
void
odoo_sync_deliver_main(Datum main_arg)
{
	deliver_main(OSW_DELIVER, LANE_BULK, main_arg);
}

/*
 * odoo_sync_deliver_critical_main
 *		Entry point of the critical lane's deliver worker ("odoo_sync
 *		deliver critical"): critical events never wait behind bulk work for
 *		this process or its turns.
 */
void
odoo_sync_deliver_critical_main(Datum main_arg)
{
	deliver_main(OSW_DELIVER_CRITICAL, LANE_CRITICAL, main_arg);
}

/* ------------------------------------------------------------------ */
/* SQL-callable checks */

static bool
host_allowed(const char *host, char *why, size_t whylen)
{
	struct addrinfo hints;
	struct addrinfo *res;
	struct addrinfo *ai;
	bool		ok = true;
	char		h[256];
	size_t		len = strlen(host);

	if (odoo_sync_allow_private_endpoints)
		return true;
	if (len >= sizeof(h))
		return true;
	strcpy(h, host);
	if (h[0] == '[' && len > 2 && h[len - 1] == ']')
	{
		memmove(h, h + 1, len - 2);
		h[len - 2] = '\0';
	}
	if (pg_strcasecmp(h, "localhost") == 0 ||
		(strlen(h) > 10 && pg_strcasecmp(h + strlen(h) - 10, ".localhost") == 0))
	{
		snprintf(why, whylen, "Host \"%s\" is the loopback interface.", h);
		return false;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(h, NULL, &hints, &res) != 0)
		return true;			/* checked again when connecting */
	for (ai = res; ai; ai = ai->ai_next)
		if (!http_address_allowed(ai->ai_addr, false))
		{
			char		addr[INET6_ADDRSTRLEN] = "?";

			if (ai->ai_family == AF_INET)
				inet_ntop(AF_INET, &((struct sockaddr_in *) ai->ai_addr)->sin_addr,
						  addr, sizeof(addr));
			else if (ai->ai_family == AF_INET6)
				inet_ntop(AF_INET6, &((struct sockaddr_in6 *) ai->ai_addr)->sin6_addr,
						  addr, sizeof(addr));
			snprintf(why, whylen,
					 "Host \"%s\" has the private, loopback or link-local address %s.",
					 h, addr);
			ok = false;
			break;
		}
	freeaddrinfo(res);
	return ok;
}

/*
 * odoo_sync._check_url(url text): raises an error unless url can be an
 * endpoint.  Messages name the host, never the query string (which may
 * carry a token).
 */
Datum
odoo_sync_check_url(PG_FUNCTION_ARGS)
{
	char	   *url = text_to_cstring(PG_GETARG_TEXT_PP(0));
	CURLU	   *u = curl_url();
	CURLUcode	rc;
	char	   *scheme = NULL;
	char	   *host = NULL;
	char	   *user = NULL;
	char		why[512];

	rc = curl_url_set(u, CURLUPART_URL, url, 0);
	if (rc != CURLUE_OK)
	{
		curl_url_cleanup(u);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid endpoint URL"),
				 errdetail("libcurl: %s.", curl_url_strerror(rc)),
				 errhint("An endpoint URL looks like https://dispatch.example.com/hooks/odoo.")));
	}
	curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
	curl_url_get(u, CURLUPART_HOST, &host, 0);
	curl_url_get(u, CURLUPART_USER, &user, 0);
	if (scheme == NULL || (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0))
	{
		char	   *s = pstrdup(scheme ? scheme : "");

		curl_free(scheme);
		curl_free(host);
		curl_free(user);
		curl_url_cleanup(u);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("endpoint URL scheme \"%s\" is not supported", s),
				 errhint("Use http or https.")));
	}
	if (user != NULL)
	{
		curl_free(scheme);
		curl_free(host);
		curl_free(user);
		curl_url_cleanup(u);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("endpoint URL must not contain credentials"),
				 errhint("Put an Authorization header in the endpoint's headers instead.")));
	}
	if (host == NULL || host[0] == '\0' || !host_allowed(host, why, sizeof(why)))
	{
		bool		nohost = host == NULL || host[0] == '\0';

		curl_free(scheme);
		curl_free(host);
		curl_url_cleanup(u);
		if (nohost)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("endpoint URL has no host")));
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("endpoint URL refers to a private network address"),
				 errdetail("%s", why),
				 errhint("Set odoo_sync.allow_private_endpoints = on (postgresql.conf) to allow loopback, private and link-local receivers.")));
	}
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);
	PG_RETURN_VOID();
}

/*
 * odoo_sync._check_secret(secret text): raises an error unless the secret
 * can sign.  The statement (which holds the secret) is kept out of the log.
 */
Datum
odoo_sync_check_secret(PG_FUNCTION_ARGS)
{
	char	   *secret = text_to_cstring(PG_GETARG_TEXT_PP(0));
	unsigned char key[KEY_MAX];
	int			n;

	if (secret[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("endpoint secret must not be empty"),
				 errhidestmt(true)));
	n = sign_key_from_secret(secret, key, KEY_MAX);
	explicit_bzero(key, sizeof(key));
	explicit_bzero(secret, strlen(secret));
	if (n < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid endpoint secret"),
				 errdetail("A secret starting with \"whsec_\" must continue with base64 (Standard Webhooks); other secrets are used as raw bytes, at most %d.",
						   KEY_MAX),
				 errhidestmt(true)));
	PG_RETURN_VOID();
}

/*
 * odoo_sync._raise_hidden(sqlstate, message, detail, hint): raises an error
 * whose statement text is not logged.
 */
Datum
odoo_sync_raise_hidden(PG_FUNCTION_ARGS)
{
	char	   *state = PG_ARGISNULL(0) ? "XX000" : text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *msg = PG_ARGISNULL(1) ? "error" : text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *detail = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	char	   *hint = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	int			code = ERRCODE_INTERNAL_ERROR;

	if (strlen(state) == 5)
		code = MAKE_SQLSTATE(state[0], state[1], state[2], state[3], state[4]);
	ereport(ERROR,
			(errcode(code),
			 errmsg_internal("%s", msg),
			 detail ? errdetail_internal("%s", detail) : 0,
			 hint ? errhint("%s", hint) : 0,
			 errhidestmt(true)));
	PG_RETURN_VOID();
}
