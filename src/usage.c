/*-------------------------------------------------------------------------
 *
 * usage.c
 *	  Usage accounting and budgets.
 *
 *	  Every call leaves one compact record.  Records go to a ring in shared
 *	  memory, not to a table in the caller's transaction, so they survive
 *	  the caller's ROLLBACK: the provider charged either way.  Each
 *	  database's writer (its queue worker, or a short-lived usage writer
 *	  started on demand) moves them into llm.usage in its own
 *	  transactions.  A crash loses at most the records not yet written:
 *	  the writer runs at least every 200 ms while records wait, and the ring
 *	  holds llm.usage_buffer records.  When it is full (or a database holds
 *	  three quarters of it), a backend keeps its records and hands them
 *	  over later; a database whose queue worker is held up gets a usage
 *	  writer of its own, so calls never wait on a stalled worker.
 *
 *	  Budgets are checked before a call is sent, under one lock for the
 *	  whole cluster: the call reserves its estimated cost, and the record
 *	  replaces the estimate with the real cost, so concurrent sessions and
 *	  the workers cannot overspend together by more than their estimates'
 *	  error.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "utils/guc.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "pgtime.h"
#include "postmaster/bgworker.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/array.h"
#include "utils/datetime.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "call.h"
#include "citus_remote.h"
#include "config.h"
#include "ratelimit.h"
#include "runas.h"
#include "shmem.h"
#include "slots.h"
#include "tokens.h"
#include "usage.h"

/* One call's usage, waiting in shared memory for its database's writer. */
#define LLM_USAGE_NAME_LEN 64
#define LLM_USAGE_ERROR_LEN 128

typedef struct LlmUsageRecord
{
	int32		next;			/* the next record of its list (-1: none) */
	Oid			dboid;
	Oid			roleid;
	TimestampTz ts;
	uint8		mode;			/* LlmMode */
	uint8		outcome;		/* LlmOutcome */
	uint8		task;			/* LlmTask */
	bool		fallback;
	bool		has_tokens;
	bool		has_details;	/* cached, cache write, reasoning: the provider's */
	bool		estimated;		/* counted by pg_llm, not the provider */
	bool		has_cost;
	int16		http_status;
	int16		attempts;
	int32		input_tokens;
	int32		output_tokens;
	int32		cached_input_tokens;	/* of the input, read from the cache */
	int32		cache_write_tokens; /* of the input, written to the cache */
	int32		reasoning_tokens;	/* of the output */
	int32		latency_ms;
	int32		ttft_ms;		/* -1: not a stream */
	int32		inputs;			/* inputs of an embedding request; 0: chat */
	double		cost_usd;
	int64		job_id;			/* the job of a queue item; 0: none */
	char		tag[LLM_USAGE_TAG_LEN];	/* the option tag; "" none */
	char		provider[LLM_USAGE_NAME_LEN];
	char		model[LLM_USAGE_NAME_LEN];
	char		upstream[LLM_USAGE_NAME_LEN];
	char		error[LLM_USAGE_ERROR_LEN];	/* why it failed, or "" */
	char		finish_reason[32];	/* the provider's own word; "" none */
	char		service_tier[32];	/* "" when not reported */
} LlmUsageRecord;

/*
 * The usage records waiting for one database's writer, oldest first, as a
 * list through LlmUsageRecord.next.
 */
#define LLM_USAGE_DBS 64

typedef struct LlmUsageList
{
	Oid			dboid;			/* InvalidOid: unused */
	int32		head;
	int32		tail;
	int32		count;
	TimestampTz taken_at;		/* when a writer last took its records, or
								 * when it had records again */
} LlmUsageList;

/* A role's spending this month in one database, for budgets. */
#define LLM_MAX_BUDGETS 256

typedef struct LlmBudgetEntry
{
	bool		in_use;
	bool		loaded;			/* spent/calls read from llm.usage */
	Oid			dboid;
	Oid			roleid;
	int			month;			/* year * 12 + month - 1 */
	double		spent_usd;
	int64		calls;
	double		reserved_usd;	/* calls under way */
	int64		reserved_calls;
} LlmBudgetEntry;

/*
 * Usage in shared memory: the records written by every backend, kept per
 * database until that database's writer moves them into llm.usage (a
 * caller that finds no free slot waits on room), the writers asked for,
 * and each role's spending this month for budgets.
 */
typedef struct UsageShared
{
	LWLock	   *lock;			/* the records and their lists */
	LWLock	   *budgets_lock;	/* the budgets and the writers asked for */
	int			nslots;
	int32		free;			/* the free slots, as a list */
	int32		nfree;
	LlmUsageList lists[LLM_USAGE_DBS];
	ConditionVariable room;
	pg_atomic_uint64 waits;		/* records that waited for room */
	pg_atomic_uint64 dropped;	/* records that could not wait */

	/*
	 * records made but neither in a slot nor committed to llm.usage: kept
	 * by a caller until there is room, kept by a writer for its own next
	 * flush, or taken and being written in a transaction not yet committed
	 */
	pg_atomic_uint32 elsewhere;
	TimestampTz writer_requested_at[LLM_MAX_WORKERS];
	Oid			writer_requested_db[LLM_MAX_WORKERS];
	LlmBudgetEntry budgets[LLM_MAX_BUDGETS];
	LlmUsageRecord records[FLEXIBLE_ARRAY_MEMBER];
} UsageShared;

static UsageShared *Usage = NULL;

/* llm.usage_buffer: the records shared memory holds */
int			llm_usage_buffer = 8192;

bool		llm_track_usage = true;

static const char *const mode_names[] = {"sync", "stream", "many", "queue", "batch_api"};
static const char *const outcome_names[] = {"ok", "error", "cancelled", "retry", "invalid", "refused", "cache"};
static const char *const task_names[] = {"chat", "embed"};

/* The UTC calendar month of a timestamp, as year * 12 + month - 1. */
static int
month_of(TimestampTz ts)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
		return 0;
	return tm.tm_year * 12 + tm.tm_mon - 1;
}

/* Copy a name into a fixed field, cut at a character boundary. */
static void
copy_name(char *dst, const char *src)
{
	int			n;

	if (src == NULL)
	{
		dst[0] = '\0';
		return;
	}
	n = pg_mbcliplen(src, strlen(src), LLM_USAGE_NAME_LEN - 1);
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/*
 * Copy a provider's word (a finish reason, a service tier) into a fixed
 * field: letters, digits, - and _ only, anything else makes it "?".
 */
static void
copy_word(char *dst, const char *src, size_t size)
{
	size_t		n;

	dst[0] = '\0';
	if (src == NULL)
		return;
	for (n = 0; src[n] && n < size - 1; n++)
	{
		char		c = src[n];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '-' || c == '_'))
			break;
		dst[n] = src[n];
	}
	dst[n] = '\0';
	if (src[n] != '\0')
		strlcpy(dst, "?", size);
}

/*
 * The cost of tokens on a route, or -1 when the route has no prices for
 * them: input tokens alone (embeddings) need the input price only.
 */
static double
route_cost(const LlmRoute *route, int64 in, int64 out)
{
	if (route == NULL || !route->has_input_price || (out > 0 && !route->has_price))
		return -1;
	return (double) in * route->input_usd_per_mtok / 1e6 +
		(out > 0 ? (double) out * route->output_usd_per_mtok / 1e6 : 0);
}

/* Output tokens assumed for a reply whose request sets no max_tokens. */
#define DEFAULT_OUTPUT_ESTIMATE 256

/*
 * The most output a call may cost on a route: its max_tokens (or, on an
 * Anthropic route, the max_tokens pg_llm sends when the call gives none)
 * for each of the replies it asks for ("n"); none for an embedding.  A
 * request without max_tokens on an OpenAI route has no bound the provider
 * announces: a guess of DEFAULT_OUTPUT_ESTIMATE tokens a reply stands in,
 * and the record settles the difference.
 */
int64
UsageOutputTokens(const LlmCall *call, const LlmRoute *route)
{
	int64		per = call->max_tokens;
	int64		n = Max(call->choices, 1);

	if (call->task == LLM_TASK_EMBED)
		return 0;
	if (per <= 0 && route && route->provider->ops == &AnthropicProviderOps)
		per = route->provider->default_max_tokens > 0 ?
			route->provider->default_max_tokens : llm_anthropic_max_tokens;
	if (per <= 0)
		per = DEFAULT_OUTPUT_ESTIMATE;
	return per * n;
}

/* Input and most output of a call on a route, for the rate limits. */
int64
UsageEstimatedTokens(const LlmCall *call, const LlmRoute *route)
{
	return call->estimated_input_tokens + UsageOutputTokens(call, route);
}

/*
 * The output tokens of a reply's text as pg_llm counts them itself: the
 * one estimate (tokens.c), of the text a stream delivered (summed piece
 * by piece as they came) or of a whole reply.
 */
static int64
tokens_of_reply(const LlmCall *call)
{
	if (call->delivered_bytes > 0)
		return call->delivered_tokens;
	if (call->reply.content)
		return TokensEstimate(call->reply.content, strlen(call->reply.content));
	return 0;
}

/* What a call costs: through a batch API, the route's batch share. */
static double
call_cost(const LlmCall *call, const LlmRoute *route, int64 in, int64 out)
{
	double		c = route_cost(route, in, out);

	if (c > 0 && call->mode == LLM_MODE_BATCH_API)
		c *= route->batch_price_factor;
	return c;
}

/*
 * What a reply costs on its route, as the provider bills it: cached input
 * at the route's cached-input price, cache writes at their premium
 * (ProtoCost); through a batch API or at the flex tier (billed at batch
 * rates) the route's batch share, at the priority tier its priority
 * multiple.  -1 when the route has no prices for them (input tokens
 * alone, embeddings, need the input price only).
 */
double
UsageReplyCost(const LlmCall *call, const LlmRoute *route, const LlmReply *r)
{
	ProtoTokens t;
	ProtoPrices p;
	double		c;

	if (route == NULL || !route->has_input_price || (r->output_tokens > 0 && !route->has_price))
		return -1;
	t.input = r->input_tokens;
	t.output = r->output_tokens;
	t.cached_input = Min(r->cached_input_tokens, r->input_tokens);
	t.cache_write = Min(r->cache_write_tokens, r->input_tokens - t.cached_input);
	t.cache_write_1h = Min(r->cache_write_1h_tokens, t.cache_write);
	t.reasoning = r->reasoning_tokens;
	p.input = route->input_usd_per_mtok;
	p.output = route->output_usd_per_mtok;
	p.cached_input = route->cached_input_usd_per_mtok;
	c = ProtoCost(&t, &p);
	if (call->mode == LLM_MODE_BATCH_API || strcmp(r->service_tier, "flex") == 0)
		c *= route->batch_price_factor;
	else if (strcmp(r->service_tier, "priority") == 0)
		c *= route->priority_price_factor;
	return c;
}

static LlmUsageList *usage_list(Oid dboid, bool create);
static void usage_hand_over(bool wait);

/* ---- budgets ---- */

/* Find (or make) the shared entry of a role this month.  Lock held. */
static LlmBudgetEntry *
budget_entry(Oid roleid, int month, bool create)
{
	int			i;
	LlmBudgetEntry *free_entry = NULL;

	for (i = 0; i < LLM_MAX_BUDGETS; i++)
	{
		LlmBudgetEntry *b = &Usage->budgets[i];

		if (b->in_use && b->dboid == MyDatabaseId && b->roleid == roleid)
		{
			if (b->month != month)
			{
				/* a new month starts from nothing */
				b->month = month;
				b->spent_usd = 0;
				b->calls = 0;
				b->loaded = true;
			}
			return b;
		}
		if (!b->in_use && free_entry == NULL)
			free_entry = b;
		else if (b->in_use && b->month != month && b->reserved_calls == 0 && free_entry == NULL)
			free_entry = b;		/* last month's entry can be reused */
	}
	if (!create || free_entry == NULL)
		return NULL;
	memset(free_entry, 0, sizeof(LlmBudgetEntry));
	free_entry->in_use = true;
	free_entry->dboid = MyDatabaseId;
	free_entry->roleid = roleid;
	free_entry->month = month;
	return free_entry;
}

/* What budget_load reads, as the owner (RunAs). */
typedef struct SpentQuery
{
	Oid			roleid;
	double		spent;
	int64		calls;
} SpentQuery;

static void
spent_query(void *arg)
{
	SpentQuery *q = (SpentQuery *) arg;
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(q->roleid)};
	bool		isnull;

	/*
	 * An attempt sent again later (outcome retry) is paid, not a call; a
	 * reply from the response cache is neither
	 */
	if (RunSql("SELECT COALESCE(pg_catalog.sum(cost_usd), 0)::pg_catalog.float8, "
			   "pg_catalog.count(*) FILTER (WHERE outcome NOT IN ('retry', 'cache')) "
			   "FROM llm.usage WHERE role_oid = $1 "
			   "AND ts >= pg_catalog.date_trunc('month', pg_catalog.now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
			   1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read llm.usage");
	q->spent = DatumGetFloat8(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	q->calls = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
}

/*
 * What a role has spent this month: the rows in llm.usage plus the
 * records still in shared memory.  Read as the extension owner.
 */
static void
budget_load(Oid roleid, double *spent, int64 *calls)
{
	SpentQuery	q;

	q.roleid = roleid;
	RunAsOwner(spent_query, &q);
	*spent = q.spent;
	*calls = q.calls;
	/* a Citus coordinator: what the worker nodes' calls spent, in their llm.usage */
	CitusRemoteSpent(roleid, spent, calls);

	/* records not written yet count too */
	LWLockAcquire(Usage->lock, LW_SHARED);
	{
		LlmUsageList *l = usage_list(MyDatabaseId, false);
		int32		k = l ? l->head : -1;
		int			month = month_of(GetCurrentTimestamp());

		for (; k >= 0; k = Usage->records[k].next)
		{
			LlmUsageRecord *r = &Usage->records[k];

			if (r->roleid == roleid && month_of(r->ts) == month)
			{
				*spent += r->has_cost ? r->cost_usd : 0;
				if (r->outcome != LLM_OUTCOME_RETRY && r->outcome != LLM_OUTCOME_CACHE)
					(*calls)++;
			}
		}
	}
	LWLockRelease(Usage->lock);
}

/*
 * Release what a call reserved.  What its attempts that were followed by
 * another cost (UsageRecordAttempt) is spent with it.
 */
static void
budget_release(LlmCall *call, double actual_cost)
{
	if (call->attempts_cost > 0)
		actual_cost = Max(actual_cost, 0) + call->attempts_cost;
	call->attempts_cost = 0;
	if (call->budget_month == 0 || Usage == NULL)
		return;
	if (call->budget_remote)
		CitusRemoteRelease(call->roleid, call->budget_month, call->reserved_usd, actual_cost,
						   call->usage_counted);
	else
		UsageBudgetRelease(call->roleid, call->budget_month, call->reserved_usd, actual_cost,
						   call->usage_counted);
	call->budget_month = 0;
}

/*
 * Release a reservation of a role's budget (UsageBudgetReserve): the call
 * cost actual_cost (-1: unknown) and counts as a call (counted) or not.
 * Also what a Citus coordinator does for a call a worker node made.
 */
void
UsageBudgetRelease(Oid roleid, int month, double reserved_usd, double actual_cost, bool counted)
{
	LlmBudgetEntry *b;

	if (month == 0 || Usage == NULL)
		return;
	LWLockAcquire(Usage->budgets_lock, LW_EXCLUSIVE);
	b = budget_entry(roleid, month, false);
	if (b)
	{
		/* reservations from before a restart are gone: never below zero */
		b->reserved_usd = Max(0, b->reserved_usd - reserved_usd);
		b->reserved_calls = Max(0, b->reserved_calls - 1);
		if (actual_cost >= 0)
			b->spent_usd += actual_cost;
		if (counted)
			b->calls += 1;
	}
	LWLockRelease(Usage->budgets_lock);
}

/*
 * A refusal of the budget: raised at once, or with defer kept in the call
 * for UsageBudgetGate (a reply from the response cache needs no budget).
 */
static void
budget_refuse(LlmCall *call, bool defer, int sqlstate, char *message, char *detail, char *hint)
{
	if (!defer)
		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg("%s", message),
				 errdetail("%s", detail),
				 errhint("%s", hint)));
	call->budget_sqlstate = sqlstate;
	call->budget_message = message;
	call->budget_detail = detail;
	call->budget_hint = hint;
}

/*
 * Check the role's budget before a call is sent, and reserve the call's
 * estimated cost.  When it would be exceeded, the budget error is raised
 * at once, or with defer when the call would be sent (UsageBudgetGate),
 * nothing reserved.
 */
static void
budget_check(LlmCall *call, double usd_limit, int64 calls_limit, bool defer)
{
	volatile double estimate = 0;	/* read after PG_CATCH */
	ListCell   *lc;

	if (Usage == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("role \"%s\" has a budget, but pg_llm is not preloaded to enforce it",
						GetUserNameFromId(call->roleid, true)),
				 errhint("Add pg_llm to shared_preload_libraries and restart the server.")));

	/*
	 * The estimate: the request's text as tokens, and the most output the
	 * request may cost (UsageOutputTokens: max_tokens times n), on the
	 * dearest route the call may take.  A budget in USD cannot be kept on a
	 * route without prices: such a call is refused.
	 */
	foreach(lc, call->routes)
	{
		const LlmRoute *r = lfirst(lc);
		double		cost = call_cost(call, r, call->estimated_input_tokens,
									 UsageOutputTokens(call, r));

		if (usd_limit >= 0 && cost < 0)
		{
			budget_refuse(call, defer, ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
						  psprintf("role \"%s\" has a budget in USD, but model \"%s\" has no price on provider \"%s\"",
								   GetUserNameFromId(call->roleid, true), call->model, r->provider->name),
						  pstrdup("A call on a route without prices could spend without limit; this call was not sent."),
						  psprintf("An administrator can price the route with llm.add_model('%s', '%s', '%s', input_usd_per_mtok => ..., output_usd_per_mtok => ...).",
								   r->model, r->provider->name, r->upstream_model));
			return;
		}
		estimate = Max(estimate, cost);
	}

	/* a Citus worker node reserves at the coordinator, which holds the budget */
	if (CitusDelegates())
	{
		MemoryContext ctx = CurrentMemoryContext;

		PG_TRY();
		{
			call->budget_month = CitusRemoteReserve(call->roleid, estimate, usd_limit, calls_limit);
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(ctx);
			edata = CopyErrorData();
			if (!defer || edata->sqlerrcode != ERRCODE_CONFIGURATION_LIMIT_EXCEEDED)
				PG_RE_THROW();
			/* the coordinator's refusal, kept for UsageBudgetGate */
			FlushErrorState();
			budget_refuse(call, defer, edata->sqlerrcode, edata->message,
						  edata->detail ? edata->detail : pstrdup(""),
						  edata->hint ? edata->hint : pstrdup(""));
			return;
		}
		PG_END_TRY();
		call->budget_remote = true;
		call->reserved_usd = estimate;
		return;
	}
	{
		char	   *detail = NULL;
		int			month = UsageBudgetReserve(call->roleid, estimate, usd_limit, calls_limit,
											   defer ? &detail : NULL);

		if (month == 0)
		{
			budget_refuse(call, defer, ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
						  psprintf("monthly budget of role \"%s\" is exhausted",
								   GetUserNameFromId(call->roleid, true)),
						  detail, pstrdup("An administrator can raise it with llm.set_budget()."));
			return;
		}
		call->budget_month = month;
		call->reserved_usd = estimate;
	}
}

/*
 * Reserve a call's estimated cost on a role's budget this month; returns
 * the month (for UsageBudgetRelease).  When it would be exceeded, the
 * budget error is raised, or with refusal its detail is set and 0
 * returned, nothing reserved.  Also what a Citus coordinator does for a
 * call a worker node makes.
 */
int
UsageBudgetReserve(Oid roleid, double estimate, double usd_limit, int64 calls_limit,
				   char **refusal)
{
	int			month = month_of(GetCurrentTimestamp());
	LlmBudgetEntry *b;
	double		spent = 0;
	int64		calls = 0;
	bool		loaded;

	if (Usage == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("role \"%s\" has a budget, but pg_llm is not preloaded to enforce it",
						GetUserNameFromId(roleid, true)),
				 errhint("Add pg_llm to shared_preload_libraries and restart the server.")));
	LWLockAcquire(Usage->budgets_lock, LW_SHARED);
	b = budget_entry(roleid, month, false);
	loaded = (b && b->loaded);
	LWLockRelease(Usage->budgets_lock);
	if (!loaded)
		budget_load(roleid, &spent, &calls);

	LWLockAcquire(Usage->budgets_lock, LW_EXCLUSIVE);
	b = budget_entry(roleid, month, true);
	if (b == NULL)
	{
		LWLockRelease(Usage->budgets_lock);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many roles with budgets are active at once"),
				 errdetail("pg_llm tracks up to %d.", LLM_MAX_BUDGETS),
				 errhint("Give budgets to group roles rather than to many single roles.")));
	}
	if (!b->loaded)
	{
		b->spent_usd = spent;
		b->calls = calls;
		b->loaded = true;
	}
	if ((usd_limit >= 0 && b->spent_usd + b->reserved_usd + estimate > usd_limit) ||
		(calls_limit >= 0 && b->calls + b->reserved_calls + 1 > calls_limit))
	{
		double		s = b->spent_usd;
		double		r = b->reserved_usd;
		int64		c = b->calls;
		char	   *detail;

		LWLockRelease(Usage->budgets_lock);
		detail = psprintf("Spent %.4f USD and made " INT64_FORMAT " calls this month (%.4f USD under way); the budget is %s USD and %s calls; this call was not sent.",
						  s, c, r,
						  usd_limit >= 0 ? psprintf("%.4f", usd_limit) : "unlimited",
						  calls_limit >= 0 ? psprintf(INT64_FORMAT, calls_limit) : "unlimited");
		if (refusal)
		{
			*refusal = detail;
			return 0;
		}
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("monthly budget of role \"%s\" is exhausted", GetUserNameFromId(roleid, true)),
				 errdetail("%s", detail),
				 errhint("An administrator can raise it with llm.set_budget().")));
	}
	b->reserved_usd += estimate;
	b->reserved_calls += 1;
	LWLockRelease(Usage->budgets_lock);
	return month;
}

/* ---- records ---- */

/*
 * Make sure a writer serves this database: start one if none runs.  With
 * stalled (the database's records have not been taken for a while: its
 * queue worker is held up), a usage writer is started even beside the
 * queue worker, so that calls never wait on a worker busy elsewhere.
 */
static void
ensure_writer(bool stalled)
{
	static TimestampTz last_check = 0;
	int			i;
	int			free_req = -1;
	TimestampTz now = GetCurrentTimestamp();
	BackgroundWorkerHandle *handle;
	char	   *dbname;

	/* once a second is enough: a writer lives for a minute after its work */
	if (!TimestampDifferenceExceeds(last_check, now, 1000))
		return;
	last_check = now;
	if (SlotServing(MyDatabaseId, stalled))
		return;
	LWLockAcquire(Usage->budgets_lock, LW_EXCLUSIVE);
	for (i = 0; i < LLM_MAX_WORKERS; i++)
	{
		if (Usage->writer_requested_db[i] == MyDatabaseId &&
			!TimestampDifferenceExceeds(Usage->writer_requested_at[i], now, 10000))
		{
			LWLockRelease(Usage->budgets_lock);
			return;				/* asked for recently; it is starting */
		}
		if (free_req < 0 && (Usage->writer_requested_db[i] == InvalidOid ||
							 Usage->writer_requested_db[i] == MyDatabaseId ||
							 TimestampDifferenceExceeds(Usage->writer_requested_at[i], now, 10000)))
			free_req = i;
	}
	if (free_req >= 0)
	{
		Usage->writer_requested_db[free_req] = MyDatabaseId;
		Usage->writer_requested_at[free_req] = now;
	}
	LWLockRelease(Usage->budgets_lock);
	if (free_req < 0)
		return;

	dbname = get_database_name(MyDatabaseId);
	if (!SlotStart("pg_llm usage writer", dbname, -1, 0, &handle))
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start a pg_llm usage writer for database \"%s\"", dbname),
				 errhint("Raise max_worker_processes, or list the database in llm.database.")));
}

/*
 * Records of this process kept in local memory until its next flush: the
 * queue worker writes its own calls' usage in the transaction that writes
 * their results, without a trip through shared memory.
 */
static LlmUsageRecord *local_records = NULL;
static int	nlocal = 0;
static int	local_cap = 0;

/*
 * Records of this process counted in Usage->elsewhere: those it
 * keeps (a caller's, until there is room; a writer's own, until its next
 * flush), and those it took and wrote in its current transaction, which
 * leave the count when the transaction ends.  So llm.usage_buffer_status()
 * says pending = 0 only once every record made is in llm.usage (or
 * dropped), not while a writer holds records it has taken but not
 * committed.
 */
static uint32 written_in_xact = 0;

static void
elsewhere_add(uint32 n)
{
	if (n > 0)
		pg_atomic_fetch_add_u32(&Usage->elsewhere, n);
}

static void
elsewhere_sub(uint32 n)
{
	if (n > 0)
		pg_atomic_fetch_sub_u32(&Usage->elsewhere, n);
}

/* The transaction that wrote records ended: they are in llm.usage, or lost. */
static void
usage_xact_cb(XactEvent event, void *arg)
{
	if (written_in_xact == 0 || Usage == NULL)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		elsewhere_sub(written_in_xact);
		written_in_xact = 0;
	}
}

/* A writer's own records not flushed when it exits are lost. */
static void
writer_exit_cb(int code, Datum arg)
{
	if (Usage == NULL)
		return;
	elsewhere_sub(nlocal + written_in_xact);
	nlocal = 0;
	written_in_xact = 0;
}

/* Records written in this transaction; they leave the count at its end. */
static void
written(uint32 n)
{
	static bool registered = false;

	if (!registered)
	{
		RegisterXactCallback(usage_xact_cb, NULL);
		before_shmem_exit(writer_exit_cb, (Datum) 0);
		registered = true;
	}
	written_in_xact += n;
}

/* Does this process write its own records (it is its database's writer)? */
static bool
keeps_own_records(void)
{
	return LlmAmBackgroundWorker() && MyBgworkerEntry &&
		strcmp(MyBgworkerEntry->bgw_function_name, "pg_llm_worker_main") == 0;
}

static void
local_put(const LlmUsageRecord *rec)
{
	if (nlocal == local_cap)
	{
		int			cap = Max(local_cap * 2, 256);

		local_records = local_records ?
			repalloc(local_records, sizeof(LlmUsageRecord) * cap) :
			MemoryContextAlloc(TopMemoryContext, sizeof(LlmUsageRecord) * cap);
		local_cap = cap;
	}
	local_records[nlocal++] = *rec;
	elsewhere_add(1);
}

/* The list of a database's waiting records (lock held); NULL if none. */
static LlmUsageList *
usage_list(Oid dboid, bool create)
{
	int			i;
	LlmUsageList *free_list = NULL;

	for (i = 0; i < LLM_USAGE_DBS; i++)
	{
		LlmUsageList *l = &Usage->lists[i];

		if (l->dboid == dboid)
			return l;
		if (free_list == NULL && (l->dboid == InvalidOid || l->count == 0))
			free_list = l;
	}
	if (!create || free_list == NULL)
		return NULL;
	free_list->dboid = dboid;
	free_list->head = free_list->tail = -1;
	free_list->count = 0;
	return free_list;
}

/*
 * Put a record in shared memory for its database's writer.  Returns true
 * when the database had no record waiting before (the writer must be
 * woken), false otherwise; *full when there was no room for it: none
 * free, or its database holds three quarters of the slots already (a
 * database whose writer is held up never takes the others' room);
 * *stalled when its records have not been taken for a second.
 */
#define USAGE_STALLED_MS 1000

static bool
shared_put(const LlmUsageRecord *rec, bool *full, bool *stalled)
{
	LlmUsageList *l;
	int32		k;
	bool		first = false;
	TimestampTz now = GetCurrentTimestamp();

	*full = false;
	*stalled = false;
	LWLockAcquire(Usage->lock, LW_EXCLUSIVE);
	l = Usage->free >= 0 ? usage_list(rec->dboid, true) : NULL;
	if (l == NULL || l->count >= Usage->nslots - Usage->nslots / 4)
	{
		if (l == NULL)
			l = usage_list(rec->dboid, false);
		*stalled = l != NULL && l->count > 0 &&
			TimestampDifferenceExceeds(l->taken_at, now, USAGE_STALLED_MS);
		LWLockRelease(Usage->lock);
		*full = true;
		return false;
	}
	k = Usage->free;
	Usage->free = Usage->records[k].next;
	Usage->nfree--;
	Usage->records[k] = *rec;
	Usage->records[k].next = -1;
	if (l->tail >= 0)
		Usage->records[l->tail].next = k;
	else
		l->head = k;
	l->tail = k;
	first = (l->count++ == 0);
	if (first)
		l->taken_at = now;
	LWLockRelease(Usage->lock);
	return first;
}

/* Wake the writer of every database with usage records waiting. */
static void
wake_all_writers(void)
{
	Oid			dbs[LLM_USAGE_DBS];
	int			n = 0;
	int			i;

	LWLockAcquire(Usage->lock, LW_SHARED);
	for (i = 0; i < LLM_USAGE_DBS; i++)
		if (Usage->lists[i].count > 0)
			dbs[n++] = Usage->lists[i].dboid;
	LWLockRelease(Usage->lock);
	for (i = 0; i < n; i++)
		SlotWake(dbs[i], false);
}

/*
 * Records this backend could not hand over yet (shared memory had no room
 * for them), oldest first.  A caller waits for room while its database's
 * writer takes records (a writer held up elsewhere gets a usage writer
 * beside it); a cancel ends the wait at once, and a call cleaned up after
 * an error does not wait at all.  Either way the record is not lost: it
 * waits here, in the order it was made, and is handed over with the next
 * record, at the next call, or when the session ends.
 */
#define USAGE_EXIT_WAIT_MS 10000

static LlmUsageRecord *kept = NULL;
static int	nkept = 0;
static int	kept_start = 0;
static int	kept_cap = 0;
static bool kept_exit_registered = false;

static void
usage_exit_cb(int code, Datum arg)
{
	int			waited = 0;

	if (Usage == NULL || nkept == 0)
		return;
	for (;;)
	{
		usage_hand_over(false);
		if (nkept == 0 || waited >= USAGE_EXIT_WAIT_MS)
			break;
		wake_all_writers();
		pg_usleep(10000L);
		waited += 10;
	}
	if (nkept > 0)
	{
		pg_atomic_fetch_add_u64(&Usage->dropped, nkept);
		elsewhere_sub(nkept);
	}
	nkept = 0;
}

static void
keep(const LlmUsageRecord *rec)
{
	if (kept_start + nkept == kept_cap)
	{
		if (kept_start > 0)
		{
			memmove(kept, kept + kept_start, sizeof(LlmUsageRecord) * nkept);
			kept_start = 0;
		}
		if (nkept == kept_cap)
		{
			int			cap = Max(kept_cap * 2, 64);

			kept = kept ? repalloc(kept, sizeof(LlmUsageRecord) * cap) :
				MemoryContextAlloc(TopMemoryContext, sizeof(LlmUsageRecord) * cap);
			kept_cap = cap;
		}
	}
	kept[kept_start + nkept++] = *rec;
	elsewhere_add(1);
	if (!kept_exit_registered)
	{
		before_shmem_exit(usage_exit_cb, (Datum) 0);
		kept_exit_registered = true;
	}
}

/*
 * Hand the kept records over to shared memory, oldest first, as far as
 * there is room; with wait, wait for room when it can be interrupted (a
 * cancel ends the wait; the records stay kept).  A database whose records
 * are not taken gets a usage writer of its own.
 */
static void
usage_hand_over(bool wait)
{
	bool		waited = false;
	bool		woken = false;

	while (nkept > 0)
	{
		bool		full = false;
		bool		stalled = false;

		while (nkept > 0)
		{
			const LlmUsageRecord *rec = &kept[kept_start];

			if (shared_put(rec, &full, &stalled) && !woken)
			{
				SlotWake(rec->dboid, false);
				woken = true;
			}
			if (full)
				break;
			kept_start++;
			nkept--;
			elsewhere_sub(1);
		}
		if (nkept == 0)
		{
			kept_start = 0;
			break;
		}
		if (stalled && !LlmAmBackgroundWorker())
			ensure_writer(true);
		if (!wait || !INTERRUPTS_CAN_BE_PROCESSED())
			break;
		if (!waited)
		{
			waited = true;
			pg_atomic_fetch_add_u64(&Usage->waits, 1);
			ConditionVariablePrepareToSleep(&Usage->room);
		}
		/* the writers of every database with records may be asleep */
		wake_all_writers();
		/* a cancel or timeout ends the wait here, within 100 ms */
		(void) ConditionVariableTimedSleep(&Usage->room, 100, PG_WAIT_EXTENSION);
		CHECK_FOR_INTERRUPTS();
	}
	if (waited)
		ConditionVariableCancelSleep();
}

/* Put a record where its writer finds it (see usage_hand_over). */
static void
usage_put(const LlmUsageRecord *rec)
{
	if (keeps_own_records() && rec->dboid == MyDatabaseId)
	{
		local_put(rec);
		return;
	}
	keep(rec);
	usage_hand_over(true);
}

/*
 * The tokens a call is billed for.  The provider's usage when it sent
 * numbers fit to bill by; otherwise, when a 2xx answer began (a reply
 * without usage, a stream cut short by LIMIT, a cancel, a dead client or a
 * timeout), what is known: the input pg_llm estimated when it reserved,
 * and the output received, counted from its text (*estimated).  A call
 * that got no 2xx answer used nothing the provider bills: no tokens.
 * Provider numbers that cannot be billed by are named in the server log.
 */
static bool
billed_tokens(LlmCall *call, int64 *in, int64 *out, bool *estimated, bool quiet)
{
	LlmReply   *r = &call->reply;
	/* a 2xx began, or the whole request went out and no status came back */
	bool		answered = (call->http_status >= 200 && call->http_status < 300) ||
		call->sent_unanswered;

	*in = *out = 0;
	*estimated = false;
	if (r->has_usage && !r->usage_invalid &&
		r->input_tokens >= 0 && r->input_tokens <= LLM_MAX_USAGE_TOKENS &&
		r->output_tokens >= 0 && r->output_tokens <= LLM_MAX_USAGE_TOKENS)
	{
		*in = r->input_tokens;
		*out = r->output_tokens;
		return true;
	}
	if ((r->has_usage || r->usage_invalid) && !quiet)
		ereport(LOG,
				(errmsg("pg_llm: provider \"%s\" reported usage numbers pg_llm does not bill by",
						call->route ? call->route->provider->name : "?"),
				 errdetail("A usage number was negative, not whole, above %lld, or given twice; the call is counted from its text and its row marked estimated.",
						   (long long) LLM_MAX_USAGE_TOKENS)));
	if (!answered)
		return false;
	*in = call->estimated_input_tokens;
	*out = tokens_of_reply(call);
	*estimated = true;
	return true;
}

/* The tokens a finished attempt used, as billed_tokens() counts them. */
int64
UsageTokensUsed(LlmCall *call)
{
	int64		in;
	int64		out;
	bool		estimated;

	if (!billed_tokens(call, &in, &out, &estimated, true))
		return 0;
	return in + out;
}

/* ---- the turn a call holds under its route's limits ---- */

/* A call took a turn on a route (RateLimitAsk): it holds it until settled. */
void
UsageHoldTurn(LlmCall *call, const LlmRoute *route, int64 charged)
{
	UsageSettleTurn(call, 0);
	call->rl_route = route;
	call->rl_charged = charged;
	call->rl_unsent = true;
}

/*
 * Settle the turn a call holds, if any, with the tokens it used: what it
 * did not use goes back to the route's limits, and so does a turn never
 * used to send.  Raises no error (it runs when a cancelled call's memory
 * goes away).
 */
void
UsageSettleTurn(LlmCall *call, int64 used)
{
	if (call->rl_route == NULL)
		return;
	RateLimitSettle(call->rl_route, call->rl_charged, used, call->rl_unsent);
	call->rl_route = NULL;
	call->rl_charged = 0;
	call->rl_unsent = false;
}


/*
 * Make the record of a call (attempt false: once, settling its budget
 * reservation and its rate-limit turn), or of one of its attempts that is
 * followed by another (attempt true: outcome retry, the call going on
 * with its reservation; its turn was settled by LlmCallAfterAttempt).
 * error: what happened to the attempt.
 */
static void
record(LlmCall *call, LlmOutcome outcome, bool attempt, const char *error)
{
	LlmUsageRecord rec;
	TimestampTz now;
	TimestampTz from;
	long		secs;
	int			usecs;
	double		cost;
	int64		in;
	int64		out;
	bool		estimated;
	bool		has_tokens;
	const LlmRoute *route = call->route;

	has_tokens = billed_tokens(call, &in, &out, &estimated, false);
	if (has_tokens && !estimated && call->cut_short &&
		call->delivered_tokens > out)
	{
		/* cut before the provider's last count (Anthropic's first says 1) */
		out = call->delivered_tokens;
		estimated = true;
	}
	/* the provider's own numbers priced as it bills them; pg_llm's count plainly */
	cost = has_tokens && !estimated ? UsageReplyCost(call, route, &call->reply) :
		call_cost(call, route, in, out);
	/* a reply from the response cache costs nothing */
	if (outcome == LLM_OUTCOME_CACHE)
		cost = 0;
	if (cost >= 0 && !isfinite(cost))
		cost = -1;				/* prices that make no number */
	if (attempt)
	{
		/* spent with the call's own cost when its reservation is released */
		if (cost > 0)
			call->attempts_cost += cost;
	}
	else
	{
		UsageSettleTurn(call, has_tokens && outcome != LLM_OUTCOME_CACHE ? in + out : 0);
		budget_release(call, cost);
	}
	if (!llm_track_usage || Usage == NULL)
		return;

	now = GetCurrentTimestamp();
	from = attempt && call->attempt_started ? call->attempt_started : call->started;
	memset(&rec, 0, sizeof(rec));
	rec.next = -1;
	rec.dboid = MyDatabaseId;
	rec.roleid = call->roleid;
	rec.ts = from;
	rec.mode = (uint8) call->mode;
	rec.outcome = (uint8) outcome;
	rec.task = (uint8) call->task;
	rec.inputs = call->task == LLM_TASK_EMBED ? call->ninputs : 0;
	rec.fallback = call->fallback;
	rec.http_status = (int16) Max(Min(call->http_status, PG_INT16_MAX), 0);
	rec.attempts = (int16) Min(call->attempts, PG_INT16_MAX);
	rec.has_tokens = has_tokens;
	rec.estimated = estimated;
	rec.input_tokens = (int32) Min(in, PG_INT32_MAX);
	rec.output_tokens = (int32) Min(out, PG_INT32_MAX);
	if (has_tokens && !estimated)
	{
		rec.has_details = true;
		rec.cached_input_tokens = (int32) Min(call->reply.cached_input_tokens, PG_INT32_MAX);
		rec.cache_write_tokens = (int32) Min(call->reply.cache_write_tokens, PG_INT32_MAX);
		rec.reasoning_tokens = (int32) Min(call->reply.reasoning_tokens, PG_INT32_MAX);
	}
	TimestampDifference(from, now, &secs, &usecs);
	rec.latency_ms = (int32) Min(secs * 1000 + usecs / 1000, PG_INT32_MAX);
	rec.ttft_ms = -1;
	if (!attempt && call->mode == LLM_MODE_STREAM && call->first_byte)
	{
		TimestampDifference(call->started, call->first_byte, &secs, &usecs);
		rec.ttft_ms = (int32) Min(secs * 1000 + usecs / 1000, PG_INT32_MAX);
	}
	rec.has_cost = cost >= 0;
	rec.cost_usd = cost >= 0 ? cost : 0;
	copy_name(rec.provider, route ? route->provider->name : NULL);
	copy_name(rec.model, call->model);
	copy_name(rec.upstream, route ? route->upstream_model : NULL);
	if (!attempt && outcome != LLM_OUTCOME_OK)
		error = call->error;
	if (error)
	{
		int			n = pg_mbcliplen(error, strlen(error), LLM_USAGE_ERROR_LEN - 1);

		memcpy(rec.error, error, n);
		rec.error[n] = '\0';
	}
	if (!attempt)
	{
		copy_word(rec.finish_reason, call->reply.stop_reason, sizeof(rec.finish_reason));
		copy_word(rec.service_tier, call->reply.service_tier, sizeof(rec.service_tier));
	}
	rec.job_id = call->job_id;
	if (call->tag)
		strlcpy(rec.tag, call->tag, sizeof(rec.tag));
	usage_put(&rec);
}

/*
 * Record a call's usage (once) and settle its budget reservation.  Safe to
 * call from a memory context callback during abort: it raises no error.
 * On a priced route the cost is never unknown: what billed_tokens() finds,
 * or zero when the provider answered with no 2xx.
 */
void
UsageRecord(LlmCall *call, LlmOutcome outcome)
{
	if (call->usage_recorded)
		return;
	call->usage_recorded = true;
	/* a call of the budget: not an attempt sent again, nor a cache hit */
	call->usage_counted = (outcome != LLM_OUTCOME_RETRY && outcome != LLM_OUTCOME_CACHE);
	record(call, outcome, false, NULL);
}

/*
 * Record an attempt of a call that failed and is followed by another (a
 * retry, the next route of its chain): every request sent is in
 * llm.usage.  Its own row, outcome retry (paid, not a call), error saying
 * what happened; its tokens as billed_tokens() counts them: estimated
 * where the provider may have charged (a 2xx cut or unreadable, an error
 * inside a stream, a request sent that timed out or was cut before any
 * status), none where it cannot have (an error status, a host not
 * reached).  Its cost counts against the role's budget with the call's.
 */
void
UsageRecordAttempt(LlmCall *call, const char *error)
{
	if (call->usage_recorded || !call->accounted || call->attempts == 0)
		return;
	record(call, LLM_OUTCOME_RETRY, true, error);
}

/*
 * A call that sent nothing and is given up (a queue item handed back
 * before its request): its budget reservation is released, and there is
 * no usage to record.
 */
void
UsageForget(LlmCall *call)
{
	if (call->usage_recorded)
		return;
	call->usage_recorded = true;
	call->usage_counted = false;
	budget_release(call, -1);
}

/* A call's memory going away unrecorded: it was cut short. */
static void
usage_reset_cb(void *arg)
{
	LlmCall    *call = (LlmCall *) arg;

	if (!call->usage_recorded)
		UsageRecord(call, LLM_OUTCOME_CANCELLED);
}

/*
 * The input tokens a call is expected to use, before it is sent: its
 * request's estimated without a tokenizer (RequestEstimateTokens), or a
 * quarter of its bytes when the request is not at hand.  The one estimate
 * behind budget and rate-limit reservations and llm.estimate().
 */
int64
UsageInputTokens(const LlmCall *call, size_t request_bytes)
{
	return call->req ? RequestEstimateTokens(call->req) : (int64) (request_bytes / 4 + 1);
}

/*
 * Before a call's request is sent (its first rate-limit turn): the
 * budget's refusal found when it was accounted, if any, is raised now,
 * the call forgotten (nothing was sent: no usage row).  Until here the
 * response cache could answer it for free.
 */
void
UsageBudgetGate(LlmCall *call)
{
	if (call->budget_sqlstate == 0)
		return;
	UsageSettleTurn(call, 0);
	UsageForget(call);
	ereport(ERROR,
			(errcode(call->budget_sqlstate),
			 errmsg("%s", call->budget_message),
			 errdetail("%s", call->budget_detail),
			 errhint("%s", call->budget_hint)));
}

static void reserve(LlmCall *call, Oid roleid, size_t request_bytes, int64 max_tokens, bool defer);

/*
 * Check and reserve the budget of the role a call runs for (its estimated
 * cost), without tying its record to memory: a request of a provider
 * batch, whose record is made when its result arrives.  An exhausted
 * budget raises its error at once.
 */
void
UsageReserve(LlmCall *call, Oid roleid, size_t request_bytes, int64 max_tokens)
{
	reserve(call, roleid, request_bytes, max_tokens, false);
}

static void
reserve(LlmCall *call, Oid roleid, size_t request_bytes, int64 max_tokens, bool defer)
{
	double		usd_limit;
	int64		calls_limit;
	int64		max_queued;

	call->roleid = roleid;
	call->max_tokens = max_tokens;
	call->choices = call->req ? RequestChoices(call->req) : 1;
	call->estimated_input_tokens = UsageInputTokens(call, request_bytes);
	call->estimated_output_tokens = UsageOutputTokens(call, NULL);
	if (ConfigBudget(roleid, &usd_limit, &calls_limit, &max_queued) &&
		(usd_limit >= 0 || calls_limit >= 0))
		budget_check(call, usd_limit, calls_limit, defer);
}

/*
 * The reservation a call made with UsageReserve, taken up again in
 * another process or transaction (a batch's results), so that its record
 * settles it.  Reservations lost with a restart settle at zero.
 */
void
UsageResume(LlmCall *call, Oid roleid, size_t request_bytes, int64 max_tokens, int64 choices)
{
	const LlmRoute *route = call->routes ? linitial(call->routes) : call->route;
	double		cost;

	call->roleid = roleid;
	call->max_tokens = max_tokens;
	call->choices = Max(choices, 1);
	call->estimated_input_tokens = UsageInputTokens(call, request_bytes);
	call->estimated_output_tokens = UsageOutputTokens(call, route);
	cost = route ? call_cost(call, route, call->estimated_input_tokens,
							 call->estimated_output_tokens) : -1;
	call->budget_month = month_of(GetCurrentTimestamp());
	call->reserved_usd = Max(cost, 0);
}

/*
 * Start a call's accounting: check and reserve the budget of the role it
 * runs for, and make sure its record is written however the call ends.
 * A budget that would be exceeded is said when the call would be sent
 * (UsageBudgetGate): the response cache may still answer it, for free.
 */
void
UsageBegin(LlmCall *call, Oid roleid, size_t request_bytes, int64 max_tokens)
{
	MemoryContextCallback *cb;

	reserve(call, roleid, request_bytes, max_tokens, true);
	call->accounted = true;
	if (Usage == NULL && llm_track_usage && !LlmAmBackgroundWorker())
	{
		static bool warned = false;

		if (!warned)
		{
			warned = true;
			ereport(WARNING,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("calls of this session are not recorded in llm.usage: pg_llm is not in shared_preload_libraries"),
					 errdetail("The provider charges for them all the same; cost reports and budgets cannot count them."),
					 errhint("Add pg_llm to shared_preload_libraries and restart the server.")));
		}
	}
	cb = palloc0(sizeof(MemoryContextCallback));
	cb->func = usage_reset_cb;
	cb->arg = call;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
	if (llm_track_usage && Usage != NULL && !LlmAmBackgroundWorker())
	{
		usage_hand_over(false);
		ensure_writer(false);
	}
}

/* A one-dimensional array of n values of a type. */
Datum
LlmMakeArray(Datum *values, bool *nulls, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs, elemtype,
											  typlen, typbyval, typalign));
}

#define USAGE_COLUMNS 26
#define USAGE_FLUSH_CHUNK 5000

/* Take up to cap of this database's records out of shared memory. */
static int
shared_take(LlmUsageRecord *out, int cap)
{
	LlmUsageList *l;
	int			n = 0;

	LWLockAcquire(Usage->lock, LW_EXCLUSIVE);
	l = usage_list(MyDatabaseId, false);
	if (l)
		l->taken_at = GetCurrentTimestamp();
	while (l && l->head >= 0 && n < cap)
	{
		int32		k = l->head;

		out[n++] = Usage->records[k];
		l->head = Usage->records[k].next;
		if (l->head < 0)
			l->tail = -1;
		l->count--;
		Usage->records[k].next = Usage->free;
		Usage->free = k;
		Usage->nfree++;
	}
	/* out of their slots, into this transaction: still pending */
	elsewhere_add(n);
	LWLockRelease(Usage->lock);
	written(n);
	if (n > 0)
		ConditionVariableBroadcast(&Usage->room);
	return n;
}

/* Insert records into llm.usage with one saved INSERT over arrays. */
static void
insert_records(const LlmUsageRecord *batch, int n)
{
	static SPIPlanPtr plan = NULL;
	static const Oid elemtypes[USAGE_COLUMNS] = {
		TIMESTAMPTZOID, OIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
		INT2OID, INT2OID, BOOLOID, INT4OID, INT4OID, INT4OID, INT4OID, FLOAT8OID,
		TEXTOID, INT4OID, TEXTOID, INT4OID, INT4OID, INT4OID, TEXTOID, TEXTOID, BOOLOID,
		INT8OID, TEXTOID
	};
	Datum		args[USAGE_COLUMNS];
	Datum	   *cols[USAGE_COLUMNS];
	bool	   *nulls[USAGE_COLUMNS];
	int			i;
	int			c;

	if (plan == NULL)
	{
		Oid			argtypes[USAGE_COLUMNS];
		SPIPlanPtr	p;

		for (c = 0; c < USAGE_COLUMNS; c++)
			argtypes[c] = get_array_type(elemtypes[c]);
		p = SPI_prepare("INSERT INTO llm.usage (ts, role_oid, mode, outcome, provider, model, "
						"upstream_model, http_status, attempts, fallback, input_tokens, "
						"output_tokens, latency_ms, ttft_ms, cost_usd, task, inputs, error, cached_input_tokens, "
						"cache_write_tokens, reasoning_tokens, finish_reason, service_tier, estimated, job_id, job, tag) "
						"SELECT u.ts, u.r, u.mo, u.oc, u.p, u.m, u.um, u.hs, u.at, u.fb, u.it, "
						"u.ot, u.lat, u.ttft, pg_catalog.round(u.cost::pg_catalog.numeric, 8), u.task, u.inputs, u.err, "
						"u.ct, u.cw, u.rt, u.fr, u.st, u.est, u.job, "
						"(SELECT j.name FROM llm.job j WHERE j.id = u.job), u.tag "
						"FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, "
						"$16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26) "
						"AS u(ts, r, mo, oc, p, m, um, hs, at, fb, it, ot, lat, ttft, cost, task, inputs, err, "
						"ct, cw, rt, fr, st, est, job, tag)",
						USAGE_COLUMNS, argtypes);
		if (p == NULL)
			elog(ERROR, "could not prepare the usage insert: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		plan = p;
	}

	for (c = 0; c < USAGE_COLUMNS; c++)
	{
		cols[c] = palloc(sizeof(Datum) * n);
		nulls[c] = palloc0(sizeof(bool) * n);
	}
	for (i = 0; i < n; i++)
	{
		const LlmUsageRecord *r = &batch[i];

		cols[0][i] = TimestampTzGetDatum(r->ts);
		cols[1][i] = ObjectIdGetDatum(r->roleid);
		cols[2][i] = CStringGetTextDatum(mode_names[r->mode]);
		cols[3][i] = CStringGetTextDatum(outcome_names[r->outcome]);
		cols[4][i] = CStringGetTextDatum(r->provider);
		nulls[4][i] = (r->provider[0] == '\0');
		cols[5][i] = CStringGetTextDatum(r->model);
		cols[6][i] = CStringGetTextDatum(r->upstream);
		nulls[6][i] = (r->upstream[0] == '\0');
		cols[7][i] = Int16GetDatum(r->http_status);
		nulls[7][i] = (r->http_status == 0);
		cols[8][i] = Int16GetDatum(r->attempts);
		cols[9][i] = BoolGetDatum(r->fallback);
		cols[10][i] = Int32GetDatum(r->input_tokens);
		cols[11][i] = Int32GetDatum(r->output_tokens);
		nulls[10][i] = nulls[11][i] = !r->has_tokens;
		cols[12][i] = Int32GetDatum(r->latency_ms);
		cols[13][i] = Int32GetDatum(r->ttft_ms);
		nulls[13][i] = (r->ttft_ms < 0);
		cols[14][i] = Float8GetDatum(r->cost_usd);
		nulls[14][i] = !r->has_cost;
		cols[15][i] = CStringGetTextDatum(task_names[r->task]);
		cols[16][i] = Int32GetDatum(r->inputs);
		nulls[16][i] = (r->task != LLM_TASK_EMBED);
		cols[17][i] = CStringGetTextDatum(r->error);
		nulls[17][i] = (r->error[0] == '\0');
		cols[18][i] = Int32GetDatum(r->cached_input_tokens);
		cols[19][i] = Int32GetDatum(r->cache_write_tokens);
		cols[20][i] = Int32GetDatum(r->reasoning_tokens);
		nulls[18][i] = nulls[19][i] = nulls[20][i] = !r->has_details;
		cols[21][i] = CStringGetTextDatum(r->finish_reason);
		nulls[21][i] = (r->finish_reason[0] == '\0');
		cols[22][i] = CStringGetTextDatum(r->service_tier);
		nulls[22][i] = (r->service_tier[0] == '\0');
		cols[23][i] = BoolGetDatum(r->estimated);
		cols[24][i] = Int64GetDatum(r->job_id);
		nulls[24][i] = (r->job_id == 0);
		/* the tag is UTF-8, checked at the call to convert */
		cols[25][i] = CStringGetTextDatum(pg_any_to_server(r->tag, strlen(r->tag), PG_UTF8));
		nulls[25][i] = (r->tag[0] == '\0');
	}
	for (c = 0; c < USAGE_COLUMNS; c++)
		args[c] = LlmMakeArray(cols[c], nulls[c], n, elemtypes[c]);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not write to llm.usage");
	for (c = 0; c < USAGE_COLUMNS; c++)
	{
		pfree(cols[c]);
		pfree(nulls[c]);
	}
}

/*
 * Insert records in a subtransaction of their own, so that no record can
 * fail the others nor the caller's transaction (the worker writes its
 * items' results in it): a statement that fails is split in halves, and a
 * record that fails alone is written again without its numbers (tokens
 * and cost NULL, marked estimated); one that fails even so is dropped,
 * counted in llm.usage_buffer_status and named in the server log.
 */
static void
insert_guarded(LlmUsageRecord *batch, int n)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		insert_records(batch, n);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;
	if (edata == NULL)
		return;
	if (n > 1)
	{
		insert_guarded(batch, n / 2);
		insert_guarded(batch + n / 2, n - n / 2);
	}
	else if (batch->tag[0] != '\0')
	{
		ereport(LOG,
				(errmsg("pg_llm: a usage record could not be written: %s", edata->message),
				 errdetail("It is written without its tag.")));
		batch->tag[0] = '\0';
		insert_guarded(batch, 1);
	}
	else if (batch->has_tokens || batch->has_cost)
	{
		ereport(LOG,
				(errmsg("pg_llm: a usage record could not be written: %s", edata->message),
				 errdetail("It is written without its tokens and cost.")));
		batch->has_tokens = batch->has_cost = false;
		batch->estimated = true;
		insert_guarded(batch, 1);
	}
	else
	{
		ereport(LOG,
				(errmsg("pg_llm: a usage record could not be written: %s", edata->message),
				 errdetail("It is dropped and counted in llm.usage_buffer_status().")));
		pg_atomic_fetch_add_u64(&Usage->dropped, 1);
	}
	FreeErrorData(edata);
}

/*
 * Move this database's waiting records (this process's own, and those in
 * shared memory) into llm.usage, inside the caller's transaction (a
 * worker's own), in statements of up to USAGE_FLUSH_CHUNK rows, until
 * none waits.  Returns the number written.  A record that cannot be
 * written never fails the others or the caller (insert_guarded).
 */
int
UsageFlush(void)
{
	LlmUsageRecord *batch;
	int			total = 0;
	int			n;

	if (Usage == NULL)
		return 0;
	if (nlocal > 0)
	{
		int			i;

		for (i = 0; i < nlocal; i += USAGE_FLUSH_CHUNK)
			insert_guarded(local_records + i, Min(USAGE_FLUSH_CHUNK, nlocal - i));
		total += nlocal;
		written(nlocal);
		nlocal = 0;
	}
	if (UsagePending() == 0)
		return total;
	batch = palloc(sizeof(LlmUsageRecord) * USAGE_FLUSH_CHUNK);
	while ((n = shared_take(batch, USAGE_FLUSH_CHUNK)) > 0)
	{
		insert_guarded(batch, n);
		total += n;
	}
	pfree(batch);
	return total;
}

/* Records waiting to be written for this database (shared and own). */
uint32
UsagePending(void)
{
	LlmUsageList *l;
	uint32		n;

	if (Usage == NULL)
		return 0;
	LWLockAcquire(Usage->lock, LW_SHARED);
	l = usage_list(MyDatabaseId, false);
	n = l ? l->count : 0;
	LWLockRelease(Usage->lock);
	return n + nlocal;
}

/*
 * Records of every database not yet in llm.usage: waiting in shared
 * memory, kept by the process that made them, or being written.
 */
uint32
UsagePendingAll(void)
{
	uint32		n;

	if (Usage == NULL)
		return 0;
	LWLockAcquire(Usage->lock, LW_SHARED);
	n = Usage->nslots - Usage->nfree +
		pg_atomic_read_u32(&Usage->elsewhere);
	LWLockRelease(Usage->lock);
	return n;
}

/* What tokens cost on a route (-1: it has no prices for them). */
double
UsageRouteCost(const LlmRoute *route, int64 in, int64 cached_in, int64 out)
{
	double		c = route_cost(route, in - cached_in, out);

	if (c >= 0 && cached_in > 0)
		c += cached_in * (route->cached_input_usd_per_mtok >= 0 ?
						  route->cached_input_usd_per_mtok : route->input_usd_per_mtok) / 1e6;
	return c;
}

/*
 * What a role may still spend this month: *usd_left (-1: no limit in
 * USD) and *calls_left (-1: no limit on calls), after what it spent and
 * what its calls under way reserved.  False when it has no budget.
 */
bool
UsageBudgetLeft(Oid roleid, double *usd_left, int64 *calls_left)
{
	double		usd_limit;
	int64		calls_limit;
	int64		max_queued;
	double		spent = 0;
	int64		calls = 0;
	double		reserved_usd = 0;
	int64		reserved_calls = 0;
	bool		loaded = false;

	if (!ConfigBudget(roleid, &usd_limit, &calls_limit, &max_queued) ||
		(usd_limit < 0 && calls_limit < 0))
		return false;
	if (Usage != NULL)
	{
		int			month = month_of(GetCurrentTimestamp());
		LlmBudgetEntry *b;

		LWLockAcquire(Usage->budgets_lock, LW_SHARED);
		b = budget_entry(roleid, month, false);
		if (b && b->loaded && b->month == month)
		{
			loaded = true;
			spent = b->spent_usd;
			calls = b->calls;
			reserved_usd = b->reserved_usd;
			reserved_calls = b->reserved_calls;
		}
		LWLockRelease(Usage->budgets_lock);
		if (!loaded)
			budget_load(roleid, &spent, &calls);
	}
	else
	{
		SpentQuery	q;

		q.roleid = roleid;
		RunAsOwner(spent_query, &q);
		spent = q.spent;
		calls = q.calls;
	}
	*usd_left = usd_limit >= 0 ? Max(usd_limit - spent - reserved_usd, 0) : -1;
	*calls_left = calls_limit >= 0 ? Max(calls_limit - calls - reserved_calls, 0) : -1;
	return true;
}

/* The settings of usage accounting; llm.usage_buffer only while preloading. */
void
UsageDefineSettings(void)
{
	DefineCustomBoolVariable("llm.track_usage",
							 "Record every call in llm.usage.",
							 "Budgets are enforced either way.",
							 &llm_track_usage, true,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	/* read only by the postmaster: defined only while preloading */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("llm.usage_buffer",
								"Usage records shared memory holds until they are written to llm.usage.",
								NULL, &llm_usage_buffer, 8192, 64, 1000000,
								PGC_POSTMASTER, 0, NULL, NULL, NULL);
}

/*
 * The usage buffer for llm.usage_buffer_status: records not yet written
 * (UsagePendingAll), records dropped, records that waited for room.
 */
void
UsageBufferLook(uint32 *pending, int64 *dropped, int64 *waited)
{
	*pending = UsagePendingAll();
	*dropped = Usage ? (int64) pg_atomic_read_u64(&Usage->dropped) : 0;
	*waited = Usage ? (int64) pg_atomic_read_u64(&Usage->waits) : 0;
}

/* ---- shared memory ---- */

/* The size of the shared part with its ring of llm.usage_buffer records. */
static Size
usage_size(void)
{
	return add_size(offsetof(UsageShared, records),
					mul_size(llm_usage_buffer, sizeof(LlmUsageRecord)));
}

/* Attach the usage buffer (and set it up the first time). */
static void
usage_attach(void *mem, bool found, LWLockPadded *locks)
{
	int			i;

	Usage = (UsageShared *) mem;
	if (found)
		return;
	Usage->lock = &locks[0].lock;
	Usage->budgets_lock = &locks[1].lock;
	Usage->nslots = llm_usage_buffer;
	/* every slot starts on the free list */
	for (i = 0; i < llm_usage_buffer; i++)
		Usage->records[i].next = (i + 1 < llm_usage_buffer) ? i + 1 : -1;
	Usage->free = 0;
	Usage->nfree = llm_usage_buffer;
	ConditionVariableInit(&Usage->room);
	pg_atomic_init_u64(&Usage->waits, 0);
	pg_atomic_init_u64(&Usage->dropped, 0);
	pg_atomic_init_u32(&Usage->elsewhere, 0);
}

const LlmShmemPart UsageShmemPart = {
	.name = "pg_llm usage",
	.size = usage_size,
	.nlocks = 2,
	.attach = usage_attach,
};
