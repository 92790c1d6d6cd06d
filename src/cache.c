/*-------------------------------------------------------------------------
 *
 * cache.c
 *	  The response cache: replies kept in the logged table llm.cache, keyed
 *	  by a SHA-256 of the route (provider and upstream model), the kind of
 *	  reply (a text, or a whole response), the role that asked (unless an
 *	  administrator shares the cache: llm.cache_scope) and the request as
 *	  the provider would read it (messages, system prompt, every option
 *	  that can change the reply, keys sorted).  A hit is served without a
 *	  request and is a usage row with the outcome "cache" and no cost.
 *
 *	  What is cached: llm.cache (off; deterministic, the default: requests
 *	  with temperature 0; on: every request), overridden per call by the
 *	  option cache (true or false); streams only when the option asks.
 *	  Errors, refusals, tool calls and replies cut at max_tokens are never
 *	  kept.  A reply lives llm.cache_ttl (or its model's llm.model.cache_ttl);
 *	  the table holds about llm.cache_max_rows, the oldest going first.
 *
 *	  Identical requests in flight at once are sent once: the first claims
 *	  a flight in shared memory (keyed like the table) and the others wait
 *	  on it, in every session, chat_many and the worker.  When the reply
 *	  comes, the first keeps it in the table and, when it fits, in the
 *	  flight, where the others read it at once, before the table row is
 *	  committed; the flight is freed when the transaction that kept the
 *	  row ends.  A flight whose call fails is freed at once, and one of its
 *	  waiters sends the request itself.  Only the first call of a flight
 *	  ever waits on nothing but a provider, so waits cannot form a cycle.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "cache.h"
#include "compat.h"
#include "protocol.h"
#include "request.h"
#include "runas.h"
#include "schema.h"
#include "shmem.h"
#include "usage.h"

/* llm.cache */
typedef enum CacheMode
{
	CACHE_MODE_OFF,
	CACHE_MODE_DETERMINISTIC,
	CACHE_MODE_ON
} CacheMode;

static const struct config_enum_entry cache_modes[] = {
	{"off", CACHE_MODE_OFF, false},
	{"deterministic", CACHE_MODE_DETERMINISTIC, false},
	{"on", CACHE_MODE_ON, false},
	{NULL, 0, false}
};

/* llm.cache_scope */
typedef enum CacheScope
{
	CACHE_SCOPE_ROLE,
	CACHE_SCOPE_SHARED
} CacheScope;

static const struct config_enum_entry cache_scopes[] = {
	{"role", CACHE_SCOPE_ROLE, false},
	{"shared", CACHE_SCOPE_SHARED, false},
	{NULL, 0, false}
};

static int	llm_cache_mode = CACHE_MODE_DETERMINISTIC;
static int	llm_cache_scope = CACHE_SCOPE_ROLE;
static int	llm_cache_ttl = 86400;
static int	llm_cache_max_rows = 100000;

#define KEY_LEN PG_SHA256_DIGEST_LENGTH

/* ---- flights in shared memory ---- */

#define CACHE_FLIGHTS 256
#define CACHE_WAITERS 16
#define CACHE_FLIGHT_REPLY 8000

typedef enum FlightState
{
	FLIGHT_FREE,
	FLIGHT_CALLING,				/* its first call is with the provider */
	FLIGHT_DONE					/* the reply is in it */
} FlightState;

typedef struct CacheFlight
{
	uint8		state;
	bool		xact_bound;		/* freed when its leader's transaction ends */
	uint8		key[KEY_LEN];
	Oid			dboid;
	int			leader_pid;
	uint64		generation;		/* of the claim: a leader frees its own only */
	TimestampTz since;
	int			nwaiters;
	Latch	   *waiters[CACHE_WAITERS];
	/* the reply of a DONE flight */
	int			route_no;		/* the index of the key that served it */
	int32		reply_len;
	int32		input_tokens;
	int32		output_tokens;
	int32		cached_input_tokens;
	int32		reasoning_tokens;
	char		finish[32];
	char		reply[CACHE_FLIGHT_REPLY];
} CacheFlight;

typedef struct CacheShared
{
	LWLock	   *lock;
	uint64		next_generation;
	pg_atomic_uint64 coalesced; /* calls served by a flight */
	CacheFlight flights[CACHE_FLIGHTS];
} CacheShared;

static CacheShared *Cache = NULL;

/* The flights this process leads. */
typedef struct HeldFlight
{
	int			index;
	uint64		generation;
	bool		kept;			/* its reply's row is written */
} HeldFlight;

static HeldFlight held[CACHE_FLIGHTS];
static int	nheld = 0;
static bool callbacks_registered = false;

/* A call's cache state (LlmCall.cache). */
typedef struct CacheCall
{
	CacheKind	kind;
	int			nkeys;			/* one a route, in chain order */
	uint8	  (*keys)[KEY_LEN];
	const LlmRoute **routes;
	int			flight;			/* the flight it leads, or -1 */
	uint64		generation;
	bool		waiting;		/* on a flight another call leads */
	bool		kept;			/* its reply is kept */
} CacheCall;

/* ---- settings and shared memory ---- */

void
CacheDefineSettings(void)
{
	DefineCustomEnumVariable("llm.cache",
							 "Which replies the response cache serves and keeps.",
							 "off: none; deterministic: requests with temperature 0; on: every request. The call option cache (true or false) overrides it; streams are cached only when that option asks.",
							 &llm_cache_mode, CACHE_MODE_DETERMINISTIC, cache_modes,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomEnumVariable("llm.cache_scope",
							 "Whose cached replies a call may be served: its own role's (role), or every role's (shared).",
							 NULL, &llm_cache_scope, CACHE_SCOPE_ROLE, cache_scopes,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.cache_ttl",
							"How long a cached reply is served.",
							"0: until it is pruned for room. A model's llm.model.cache_ttl overrides it.",
							&llm_cache_ttl, 86400, 0, INT_MAX,
							PGC_USERSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.cache_max_rows",
							"About how many replies llm.cache keeps; the oldest are pruned first.",
							NULL, &llm_cache_max_rows, 100000, 1, INT_MAX,
							PGC_SUSET, 0, NULL, NULL, NULL);
}

static Size
cache_shmem_size(void)
{
	return sizeof(CacheShared);
}

/* Attach the flights (zeroed the first time: none). */
static void
cache_shmem_attach(void *mem, bool found, LWLockPadded *locks)
{
	Cache = (CacheShared *) mem;
	if (found)
		return;
	Cache->lock = &locks[0].lock;
	pg_atomic_init_u64(&Cache->coalesced, 0);
}

const LlmShmemPart CacheShmemPart = {
	.name = "pg_llm_cache",
	.size = cache_shmem_size,
	.nlocks = 1,
	.attach = cache_shmem_attach,
};

/* ---- flights ---- */

/* Wake a flight's waiters and forget them.  Lock held. */
static void
wake_waiters(CacheFlight *f)
{
	int			i;

	for (i = 0; i < f->nwaiters; i++)
		SetLatch(f->waiters[i]);
	f->nwaiters = 0;
}

/* Forget that this process leads a flight. */
static void
unhold(int index, uint64 generation)
{
	int			i;

	for (i = 0; i < nheld; i++)
		if (held[i].index == index && held[i].generation == generation)
		{
			held[i] = held[--nheld];
			return;
		}
}

/* Free a flight this process leads, if it still does. */
static void
flight_free(int index, uint64 generation)
{
	CacheFlight *f = &Cache->flights[index];

	LWLockAcquire(Cache->lock, LW_EXCLUSIVE);
	if (f->generation == generation && f->state != FLIGHT_FREE)
	{
		f->state = FLIGHT_FREE;
		wake_waiters(f);
	}
	LWLockRelease(Cache->lock);
	unhold(index, generation);
}

/*
 * Free the flights this process leads: at the end of a transaction, those
 * whose reply's row it wrote (committed now, or gone with a rollback) and
 * those whose call belongs to the transaction (a session's; the worker's
 * calls run between its transactions); at exit, all.
 */
static void
free_held(bool all)
{
	int			i;

	if (Cache == NULL || nheld == 0)
		return;
	LWLockAcquire(Cache->lock, LW_EXCLUSIVE);
	for (i = nheld - 1; i >= 0; i--)
	{
		CacheFlight *f = &Cache->flights[held[i].index];

		if (f->generation != held[i].generation || f->state == FLIGHT_FREE)
		{
			held[i] = held[--nheld];
			continue;
		}
		if (all || (f->state == FLIGHT_DONE && (held[i].kept || f->xact_bound)) ||
			(f->state == FLIGHT_CALLING && f->xact_bound))
		{
			f->state = FLIGHT_FREE;
			wake_waiters(f);
			held[i] = held[--nheld];
		}
	}
	LWLockRelease(Cache->lock);
}

static void
cache_xact_cb(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		free_held(false);
}

static void
cache_exit_cb(int code, Datum arg)
{
	free_held(true);
}

/*
 * The flight of a key: its index, or -1.  Lock held.
 */
static int
flight_find(const uint8 *key)
{
	int			i;

	for (i = 0; i < CACHE_FLIGHTS; i++)
	{
		CacheFlight *f = &Cache->flights[i];

		if (f->state != FLIGHT_FREE && f->dboid == MyDatabaseId &&
			memcmp(f->key, key, KEY_LEN) == 0)
			return i;
	}
	return -1;
}

/*
 * A flight for a key this process will lead: a free one, else the oldest
 * whose reply is in (its waiters have read it, or find the table row
 * once it is committed).  -1 when every flight is calling.  Lock held.
 */
static int
flight_claim(const uint8 *key, bool xact_bound)
{
	int			i;
	int			pick = -1;
	CacheFlight *f;

	for (i = 0; i < CACHE_FLIGHTS; i++)
	{
		f = &Cache->flights[i];
		if (f->state == FLIGHT_FREE)
		{
			pick = i;
			break;
		}
		if (f->state == FLIGHT_DONE &&
			(pick < 0 || f->since < Cache->flights[pick].since))
			pick = i;
	}
	if (pick < 0)
		return -1;
	f = &Cache->flights[pick];
	wake_waiters(f);
	f->state = FLIGHT_CALLING;
	f->xact_bound = xact_bound;
	memcpy(f->key, key, KEY_LEN);
	f->dboid = MyDatabaseId;
	f->leader_pid = MyProcPid;
	f->generation = ++Cache->next_generation;
	f->since = GetCurrentTimestamp();
	f->nwaiters = 0;
	f->reply_len = -1;
	return pick;
}

/* ---- keys ---- */

/* SHA-256 of a text into out. */
static void
sha256(const char *data, size_t len, uint8 *out)
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);

	if (ctx == NULL || pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) data, len) < 0 ||
		LlmCryptohashFinal(ctx, out, KEY_LEN) < 0)
	{
		pg_cryptohash_free(ctx);
		elog(ERROR, "could not compute a SHA-256 digest");
	}
	pg_cryptohash_free(ctx);
}

/* Is a call's reply to be served from and kept in the cache? */
static bool
wanted(LlmCall *call, bool stream)
{
	int			opt;

	if (call->task != LLM_TASK_CHAT || call->req == NULL || RequestHasSchema(call->req))
		return false;
	opt = RequestCacheOption(call->req);
	if (opt >= 0)
		return opt == 1;
	if (stream)
		return false;
	switch (llm_cache_mode)
	{
		case CACHE_MODE_ON:
			return true;
		case CACHE_MODE_DETERMINISTIC:
			return RequestDeterministic(call->req);
		default:
			return false;
	}
}

/* The keys of a call, one a route of its chain. */
static CacheCall *
cache_call(LlmCall *call, CacheKind kind)
{
	CacheCall  *cc = palloc0(sizeof(CacheCall));
	char	   *text = RequestCacheText(call->req);
	Oid			scope = llm_cache_scope == CACHE_SCOPE_SHARED ? InvalidOid : call->roleid;
	ListCell   *lc;
	int			i = 0;

	cc->kind = kind;
	cc->flight = -1;
	cc->nkeys = list_length(call->routes);
	cc->keys = palloc(sizeof(*cc->keys) * Max(cc->nkeys, 1));
	cc->routes = palloc(sizeof(LlmRoute *) * Max(cc->nkeys, 1));
	foreach(lc, call->routes)
	{
		const LlmRoute *r = lfirst(lc);
		char	   *k = psprintf("pg_llm cache 1\n%s\n%u\n%s\n%s\n%s",
								 kind == CACHE_TEXT ? "text" : "response", scope,
								 r->provider->name, r->upstream_model, text);

		sha256(k, strlen(k), cc->keys[i]);
		cc->routes[i] = r;
		pfree(k);
		i++;
	}
	pfree(text);
	return cc;
}

/* ---- the table ---- */

typedef struct LookupQuery
{
	CacheCall  *cc;
	int			route_no;		/* out: -1 on a miss */
	char	   *reply;
	char	   *finish;
	int64		input_tokens;
	int64		output_tokens;
	int64		cached_input_tokens;
	int64		reasoning_tokens;
} LookupQuery;

static Datum
keys_array(CacheCall *cc)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(cc->nkeys, 1));
	int			i;

	for (i = 0; i < cc->nkeys; i++)
	{
		bytea	   *b = palloc(VARHDRSZ + KEY_LEN);

		SET_VARSIZE(b, VARHDRSZ + KEY_LEN);
		memcpy(VARDATA(b), cc->keys[i], KEY_LEN);
		d[i] = PointerGetDatum(b);
	}
	return LlmMakeArray(d, NULL, cc->nkeys, BYTEAOID);
}

static int64
col_int64(HeapTuple tup, TupleDesc td, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, td, col, &isnull);

	return isnull ? 0 : DatumGetInt32(d);
}

static void
lookup_query(void *arg)
{
	LookupQuery *q = (LookupQuery *) arg;
	Oid			types[1] = {BYTEAARRAYOID};
	Datum		values[1];
	uint64		i;
	int			best = -1;

	values[0] = keys_array(q->cc);
	q->route_no = -1;
	/* not read-only: a new snapshot sees replies other sessions committed since */
	if (RunSql("SELECT c.key, c.reply, c.finish_reason, c.input_tokens, c.output_tokens, "
			   "c.cached_input_tokens, c.reasoning_tokens FROM llm.cache c "
			   "WHERE c.key OPERATOR(pg_catalog.=) ANY ($1) "
			   "AND (c.expires_at IS NULL OR c.expires_at OPERATOR(pg_catalog.>) pg_catalog.statement_timestamp())",
			   1, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read llm.cache");
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		bool		isnull;
		bytea	   *k = DatumGetByteaPP(SPI_getbinval(tup, td, 1, &isnull));
		int			r;

		for (r = 0; r < q->cc->nkeys; r++)
			if (VARSIZE_ANY_EXHDR(k) == KEY_LEN &&
				memcmp(VARDATA_ANY(k), q->cc->keys[r], KEY_LEN) == 0)
				break;
		if (r >= q->cc->nkeys || (best >= 0 && r >= q->route_no))
			continue;
		best = (int) i;
		q->route_no = r;
	}
	if (best >= 0)
	{
		HeapTuple	tup = SPI_tuptable->vals[best];
		TupleDesc	td = SPI_tuptable->tupdesc;
		MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

		q->reply = LlmToUtf8(SPI_getvalue(tup, td, 2));
		q->finish = SPI_getvalue(tup, td, 3);
		MemoryContextSwitchTo(old);
		q->input_tokens = col_int64(tup, td, 4);
		q->output_tokens = col_int64(tup, td, 5);
		q->cached_input_tokens = col_int64(tup, td, 6);
		q->reasoning_tokens = col_int64(tup, td, 7);
	}
}

/* A hit: the call's reply is the cached one, from a route of its chain. */
static void
serve(LlmCall *call, CacheCall *cc, int route_no, const char *reply, size_t len,
	  const char *finish, int64 in, int64 out, int64 cached, int64 reasoning)
{
	LlmReply   *r = &call->reply;
	char	   *text = pnstrdup(reply, len);

	memset(r, 0, sizeof(LlmReply));
	if (cc->kind == CACHE_TEXT)
		r->content = text;
	else
		r->response_json = text;
	r->nchoices = 1;
	r->finish_reason = finish ? pstrdup(finish) : NULL;
	r->stop_reason = finish ? pstrdup(finish) : NULL;
	r->has_usage = true;
	r->input_tokens = in;
	r->output_tokens = out;
	r->cached_input_tokens = cached;
	r->reasoning_tokens = reasoning;
	call->route = cc->routes[route_no];
	call->fallback = route_no > 0;
	call->http_status = 0;
	cc->kept = true;			/* nothing new to keep */
}

/*
 * Look the call up in llm.cache (as the extension's owner); true with
 * the reply in call->reply on a hit.  Needs a transaction.
 */
static bool
table_lookup(LlmCall *call, CacheCall *cc)
{
	LookupQuery q;

	if (!IsTransactionState() || cc->nkeys == 0)
		return false;
	memset(&q, 0, sizeof(q));
	q.cc = cc;
	RunAsOwner(lookup_query, &q);
	if (q.route_no < 0 || q.reply == NULL)
		return false;
	serve(call, cc, q.route_no, q.reply, strlen(q.reply), q.finish, q.input_tokens,
		  q.output_tokens, q.cached_input_tokens, q.reasoning_tokens);
	return true;
}

/*
 * The table looked up in a transaction of its own: for a call of the
 * worker (which runs its calls between transactions) whose identical
 * request in flight ended, and whose reply may now be committed.
 */
static bool
lookup_in_own_xact(LlmCall *call, CacheCall *cc)
{
	MemoryContext old = CurrentMemoryContext;
	bool		hit = false;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	MemoryContextSwitchTo(old);
	PG_TRY();
	{
		hit = table_lookup(call, cc);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		AbortCurrentTransaction();
		MemoryContextSwitchTo(old);
		PG_RE_THROW();
	}
	PG_END_TRY();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(old);
	return hit;
}

/*
 * Before a call is sent: serve it from the cache (CACHE_HIT, the reply in
 * call->reply, its usage still to record), or from an identical call in
 * flight that has its reply; CACHE_WAIT while such a call is with its
 * provider (ask again when the latch is set, or soon); else CACHE_MISS
 * (send it: its reply will be kept, and this call leads the others that
 * come meanwhile) or CACHE_OFF (send it, nothing is kept).
 */
CacheResult
CacheCheck(LlmCall *call, CacheKind kind, bool stream)
{
	CacheCall  *cc = call->cache;
	int			i;
	CacheFlight *f;

	if (cc == NULL)
	{
		if (!wanted(call, stream))
			return CACHE_OFF;
		cc = call->cache = cache_call(call, kind);
	}
	if (cc->flight >= 0 || cc->nkeys == 0)
		return CACHE_MISS;
	/* a call already waiting looks at its flight first: no query */
	if (!cc->waiting && table_lookup(call, cc))
		return CACHE_HIT;
	if (Cache == NULL)
		return CACHE_MISS;

	LWLockAcquire(Cache->lock, LW_EXCLUSIVE);
	i = flight_find(cc->keys[0]);
	if (i < 0 && cc->waiting)
	{
		/* its flight ended: the reply is in the table, or nowhere */
		LWLockRelease(Cache->lock);
		cc->waiting = false;
		if (!IsTransactionState() && lookup_in_own_xact(call, cc))
			return CACHE_HIT;
		return CacheCheck(call, kind, stream);
	}
	if (i >= 0)
	{
		f = &Cache->flights[i];
		if (f->state == FLIGHT_DONE && f->reply_len >= 0)
		{
			char	   *reply = palloc(f->reply_len + 1);
			char		finish[32];
			int64		in = f->input_tokens,
						out = f->output_tokens,
						cached = f->cached_input_tokens,
						reasoning = f->reasoning_tokens;
			int			route_no = Min(f->route_no, cc->nkeys - 1);

			memcpy(reply, f->reply, f->reply_len);
			reply[f->reply_len] = '\0';
			memcpy(finish, f->finish, sizeof(finish));
			LWLockRelease(Cache->lock);
			cc->waiting = false;
			pg_atomic_fetch_add_u64(&Cache->coalesced, 1);
			serve(call, cc, route_no, reply, strlen(reply), finish[0] ? finish : NULL,
				  in, out, cached, reasoning);
			return CACHE_HIT;
		}
		if (f->state == FLIGHT_CALLING)
		{
			/* the leader wakes us; a full list is polled */
			if (f->nwaiters < CACHE_WAITERS && f->leader_pid != MyProcPid)
			{
				int			w;

				for (w = 0; w < f->nwaiters; w++)
					if (f->waiters[w] == MyLatch)
						break;
				if (w == f->nwaiters)
					f->waiters[f->nwaiters++] = MyLatch;
			}
			LWLockRelease(Cache->lock);
			cc->waiting = true;
			return CACHE_WAIT;
		}
		/* a reply too long for the flight: its row comes with the commit */
		LWLockRelease(Cache->lock);
		cc->waiting = false;
		return CACHE_MISS;
	}
	if (nheld == CACHE_FLIGHTS)
	{
		/* forget the flights others took over since */
		int			h;

		for (h = nheld - 1; h >= 0; h--)
			if (Cache->flights[held[h].index].generation != held[h].generation ||
				Cache->flights[held[h].index].state == FLIGHT_FREE)
				held[h] = held[--nheld];
	}
	i = nheld < CACHE_FLIGHTS ?
		flight_claim(cc->keys[0], IsTransactionState() && !LlmAmBackgroundWorker()) : -1;
	if (i >= 0)
	{
		cc->flight = i;
		cc->generation = Cache->flights[i].generation;
		held[nheld].index = i;
		held[nheld].generation = cc->generation;
		held[nheld].kept = false;
		nheld++;
	}
	LWLockRelease(Cache->lock);
	if (!callbacks_registered)
	{
		RegisterXactCallback(cache_xact_cb, NULL);
		before_shmem_exit(cache_exit_cb, (Datum) 0);
		callbacks_registered = true;
	}

	/* a call that ended between the lookup and the claim left its row */
	if (cc->flight >= 0 && table_lookup(call, cc))
	{
		CacheAbandon(call);
		return CACHE_HIT;
	}
	return CACHE_MISS;
}

/* Wait for a flight's news (or a short while), interruptibly. */
void
CacheWaitLatch(long timeout_ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 timeout_ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/* The call's reply is not kept: free its flight for the waiters. */
void
CacheAbandon(LlmCall *call)
{
	CacheCall  *cc = call->cache;

	if (cc == NULL || cc->flight < 0 || Cache == NULL)
		return;
	flight_free(cc->flight, cc->generation);
	cc->flight = -1;
}

typedef struct StoreQuery
{
	LlmCall    *call;
	CacheCall  *cc;
	int			route_no;
	const char *reply;
} StoreQuery;

static void
store_query(void *arg)
{
	StoreQuery *q = (StoreQuery *) arg;
	LlmCall    *call = q->call;
	const LlmRoute *route = q->cc->routes[q->route_no];
	const LlmReply *r = &call->reply;
	Oid			types[15] = {BYTEAOID, OIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
	TEXTOID, INT4OID, INT4OID, INT4OID, INT4OID, FLOAT8OID, INT4OID};
	Datum		values[15];
	char		nulls[15];
	bytea	   *k = palloc(VARHDRSZ + KEY_LEN);
	const char *finish = r->stop_reason ? r->stop_reason : r->finish_reason;
	/* what the call paid for the reply, as llm.usage books it */
	double		cost = r->has_usage ? UsageReplyCost(call, route, r) : -1;
	static int	stores = 0;
	int			every = Max(1, llm_cache_max_rows / 100);

	memset(nulls, ' ', sizeof(nulls));
	SET_VARSIZE(k, VARHDRSZ + KEY_LEN);
	memcpy(VARDATA(k), q->cc->keys[q->route_no], KEY_LEN);
	values[0] = PointerGetDatum(k);
	values[1] = ObjectIdGetDatum(call->roleid);
	values[2] = CStringGetTextDatum(llm_cache_scope == CACHE_SCOPE_SHARED ? "shared" : "role");
	values[3] = CStringGetTextDatum(call->model);
	values[4] = CStringGetTextDatum(route->provider->name);
	values[5] = CStringGetTextDatum(route->upstream_model);
	values[6] = CStringGetTextDatum(q->cc->kind == CACHE_TEXT ? "text" : "response");
	values[7] = CStringGetTextDatum(LlmToServerEncoding(q->reply, strlen(q->reply)));
	values[8] = finish ? CStringGetTextDatum(finish) : (Datum) 0;
	nulls[8] = finish ? ' ' : 'n';
	values[9] = Int32GetDatum((int32) Min(r->input_tokens, PG_INT32_MAX));
	values[10] = Int32GetDatum((int32) Min(r->output_tokens, PG_INT32_MAX));
	values[11] = Int32GetDatum((int32) Min(r->cached_input_tokens, PG_INT32_MAX));
	values[12] = Int32GetDatum((int32) Min(r->reasoning_tokens, PG_INT32_MAX));
	nulls[9] = nulls[10] = nulls[11] = nulls[12] = r->has_usage ? ' ' : 'n';
	values[13] = Float8GetDatum(cost);
	/* numeric(14, 8): a cost it cannot hold is not kept */
	nulls[13] = cost >= 0 && cost < 1e6 ? ' ' : 'n';
	values[14] = Int32GetDatum(llm_cache_ttl);
	if (RunSql("INSERT INTO llm.cache AS c (key, role_oid, scope, model, provider, upstream_model, kind, "
			   "reply, finish_reason, input_tokens, output_tokens, cached_input_tokens, reasoning_tokens, "
			   "cost_usd, expires_at) "
			   "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::pg_catalog.numeric, "
			   "CASE WHEN t.ttl OPERATOR(pg_catalog.=) '0'::pg_catalog.interval THEN NULL "
			   "ELSE pg_catalog.statement_timestamp() OPERATOR(pg_catalog.+) t.ttl END "
			   "FROM (SELECT COALESCE((SELECT m.cache_ttl FROM llm.model m "
			   "WHERE m.name OPERATOR(pg_catalog.=) $4 AND m.provider OPERATOR(pg_catalog.=) $5), "
			   "pg_catalog.make_interval(secs => $15)) AS ttl) AS t "
			   "ON CONFLICT (key) DO UPDATE SET reply = EXCLUDED.reply, finish_reason = EXCLUDED.finish_reason, "
			   "input_tokens = EXCLUDED.input_tokens, output_tokens = EXCLUDED.output_tokens, "
			   "cached_input_tokens = EXCLUDED.cached_input_tokens, reasoning_tokens = EXCLUDED.reasoning_tokens, "
			   "cost_usd = EXCLUDED.cost_usd, created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at",
			   15, types, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not write llm.cache");
	/* the size bound, kept within about 1 % a process */
	if (++stores % every == 0)
	{
		Oid			t[1] = {INT8OID};
		Datum		v[1] = {Int64GetDatum(llm_cache_max_rows)};

		if (RunSql("SELECT llm.prune_cache($1)", 1, t, v, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not prune llm.cache");
	}
}

/*
 * A call's reply arrived and is good: keep it (reply_text is the text of
 * a CACHE_TEXT call, the response JSON of a CACHE_RESPONSE one, UTF-8)
 * in the flight the call leads, which wakes its waiters, and in
 * llm.cache.  A reply cut at max_tokens is not kept.  Outside a
 * transaction (the worker between its transactions) only the flight gets
 * it: the worker calls again in the transaction that writes the item's
 * result, which writes the row.  In a read-only transaction, or on a
 * standby, no row is written.
 */
void
CacheKeep(LlmCall *call, const char *reply_text)
{
	CacheCall  *cc = call->cache;
	const LlmReply *r = &call->reply;
	const char *finish = r->stop_reason ? r->stop_reason : r->finish_reason;
	int			route_no;
	size_t		len;

	if (cc == NULL || cc->kept)
		return;
	if (reply_text == NULL || ProtoEndingOf(finish) == PROTO_END_LENGTH)
	{
		CacheAbandon(call);
		return;
	}
	for (route_no = 0; route_no < cc->nkeys; route_no++)
		if (cc->routes[route_no] == call->route)
			break;
	if (route_no >= cc->nkeys)
	{
		CacheAbandon(call);
		return;
	}
	if (cc->flight >= 0 && Cache != NULL)
	{
		len = strlen(reply_text);
		LWLockAcquire(Cache->lock, LW_EXCLUSIVE);
		{
			CacheFlight *f = &Cache->flights[cc->flight];

			if (f->generation == cc->generation && f->state == FLIGHT_CALLING)
			{
				if (len < CACHE_FLIGHT_REPLY)
				{
					memcpy(f->reply, reply_text, len);
					f->reply_len = (int32) len;
					f->route_no = route_no;
					f->input_tokens = (int32) Min(r->input_tokens, PG_INT32_MAX);
					f->output_tokens = (int32) Min(r->output_tokens, PG_INT32_MAX);
					f->cached_input_tokens = (int32) Min(r->cached_input_tokens, PG_INT32_MAX);
					f->reasoning_tokens = (int32) Min(r->reasoning_tokens, PG_INT32_MAX);
					strlcpy(f->finish, finish ? finish : "", sizeof(f->finish));
					f->state = FLIGHT_DONE;
					f->since = GetCurrentTimestamp();
				}
				else
					f->state = FLIGHT_FREE;
				wake_waiters(f);
			}
		}
		LWLockRelease(Cache->lock);
	}
	if (IsTransactionState() && !XactReadOnly && !RecoveryInProgress())
	{
		StoreQuery	q;
		int			h;

		q.call = call;
		q.cc = cc;
		q.route_no = route_no;
		q.reply = reply_text;
		PG_TRY();
		{
			RunAsOwner(store_query, &q);
		}
		PG_CATCH();
		{
			CacheAbandon(call);
			PG_RE_THROW();
		}
		PG_END_TRY();
		cc->kept = true;
		/* the flight goes with this transaction's end (free_held) */
		for (h = 0; h < nheld; h++)
			if (cc->flight >= 0 && held[h].index == cc->flight &&
				held[h].generation == cc->generation)
				held[h].kept = true;
		cc->flight = -1;
	}
}

PG_FUNCTION_INFO_V1(pg_llm_cache_status);

/*
 * llm.cache_status(): the flights in shared memory (identical requests in
 * flight: calling, and answered but not yet in the table) and the calls
 * a flight has served since the server started; NULLs without preloading.
 */
Datum
pg_llm_cache_status(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	int			calling = 0;
	int			done = 0;
	int			i;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (Cache == NULL)
		nulls[0] = nulls[1] = nulls[2] = true;
	else
	{
		LWLockAcquire(Cache->lock, LW_SHARED);
		for (i = 0; i < CACHE_FLIGHTS; i++)
		{
			if (Cache->flights[i].state == FLIGHT_CALLING)
				calling++;
			else if (Cache->flights[i].state == FLIGHT_DONE)
				done++;
		}
		LWLockRelease(Cache->lock);
		values[0] = Int32GetDatum(calling);
		values[1] = Int32GetDatum(done);
		values[2] = Int64GetDatum((int64) pg_atomic_read_u64(&Cache->coalesced));
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
