/*-------------------------------------------------------------------------
 *
 * citus_serve.c
 *	  On a Citus coordinator, the functions a worker node's backend calls
 *	  to take its turns and budget reservations from the coordinator's
 *	  shared memory (citus_remote.c is the worker node's side, which the
 *	  call engine asks): llm._cluster_turn, _cluster_after and
 *	  _cluster_settle run RateLimitAsk, RateLimitAfter and RateLimitSettle
 *	  here; _cluster_reserve and _cluster_release run UsageBudgetReserve
 *	  and UsageBudgetRelease, and what a worker node's backend reserved
 *	  and did not settle is given back when its session here ends.
 *
 *	  SQL entry points above the call engine: they call ratelimit.c and
 *	  usage.c, which never call back.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "config.h"
#include "http.h"
#include "ratelimit.h"
#include "usage.h"

PG_FUNCTION_INFO_V1(pg_llm_cluster_turn);
PG_FUNCTION_INFO_V1(pg_llm_cluster_after);
PG_FUNCTION_INFO_V1(pg_llm_cluster_settle);
PG_FUNCTION_INFO_V1(pg_llm_cluster_reserve);
PG_FUNCTION_INFO_V1(pg_llm_cluster_release);

/* A route for a provider of this node's configuration, by name. */
static LlmRoute *
route_of(const char *provider)
{
	ListCell   *lc;

	foreach(lc, ConfigProviders())
	{
		LlmProvider *p = lfirst(lc);

		if (strcmp(p->name, provider) == 0)
		{
			LlmRoute   *r = palloc0(sizeof(LlmRoute));

			r->provider = p;
			return r;
		}
	}
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("the coordinator has no provider \"%s\"", provider),
			 errhint("The worker node's configuration is older than the coordinator's: run SELECT llm.citus_sync() on the coordinator.")));
	return NULL;
}

/*
 * llm._cluster_turn(provider, tokens, reserve, max_wait_ms) returns
 * (turn, until_us, why, detail, charged): RateLimitAsk here.
 */
Datum
pg_llm_cluster_turn(PG_FUNCTION_ARGS)
{
	LlmRoute   *route = route_of(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	TimestampTz until;
	char	   *why;
	int64		charged;
	LlmTurn		turn;
	TupleDesc	td;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	const char *detail;

	turn = RateLimitAsk(route, PG_GETARG_INT64(1), PG_GETARG_BOOL(2), (long) PG_GETARG_INT64(3),
						&until, &why, &charged);
	detail = RateLimitDetail();
	if (get_call_result_type(fcinfo, NULL, &td) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	values[0] = Int32GetDatum((int32) turn);
	values[1] = Int64GetDatum((int64) until);
	values[2] = why ? CStringGetTextDatum(why) : (Datum) 0;
	nulls[2] = why == NULL;
	values[3] = detail && detail[0] ? CStringGetTextDatum(detail) : (Datum) 0;
	nulls[3] = !(detail && detail[0]);
	values[4] = Int64GetDatum(charged);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(td, values, nulls)));
}

/*
 * llm._cluster_after(provider, status, outcome, unreachable, timed_out,
 * errbuf, retry_after, quota, rl_remaining_requests, rl_reset_requests,
 * rl_remaining_tokens, rl_reset_tokens): RateLimitAfter here, with what a
 * worker node's transfer said.
 */
Datum
pg_llm_cluster_after(PG_FUNCTION_ARGS)
{
	LlmRoute   *route = route_of(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	HttpTransfer *t = NULL;

	if (PG_GETARG_INT64(2) >= 0)
	{
		t = palloc0(sizeof(HttpTransfer));
		t->status = (long) PG_GETARG_INT64(1);
		t->outcome = (HttpOutcome) PG_GETARG_INT64(2);
		t->unreachable = PG_GETARG_BOOL(3);
		t->timed_out = PG_GETARG_BOOL(4);
		strlcpy(t->errbuf, text_to_cstring(PG_GETARG_TEXT_PP(5)), sizeof(t->errbuf));
		t->retry_after_s = PG_GETARG_FLOAT8(6);
		t->rl_remaining_requests = PG_GETARG_INT64(8);
		t->rl_reset_requests_s = PG_GETARG_FLOAT8(9);
		t->rl_remaining_tokens = PG_GETARG_INT64(10);
		t->rl_reset_tokens_s = PG_GETARG_FLOAT8(11);
	}
	RateLimitAfter(route, t, PG_GETARG_BOOL(7));
	PG_RETURN_VOID();
}

/* llm._cluster_settle(provider, charged, used, unsent): RateLimitSettle here. */
Datum
pg_llm_cluster_settle(PG_FUNCTION_ARGS)
{
	RateLimitSettle(route_of(text_to_cstring(PG_GETARG_TEXT_PP(0))),
					PG_GETARG_INT64(1), PG_GETARG_INT64(2), PG_GETARG_BOOL(3));
	PG_RETURN_VOID();
}

/*
 * The reservations this session made for a worker node's backend and
 * that were not settled: given back when the session ends (the worker
 * node's backend is gone).
 */
typedef struct Held
{
	Oid			roleid;
	int			month;
	double		reserved;
	int			n;
} Held;

static List *held = NIL;
static bool held_cb = false;

static void
release_held(int code, Datum arg)
{
	ListCell   *lc;

	foreach(lc, held)
	{
		Held	   *h = lfirst(lc);

		while (h->n-- > 0)
			UsageBudgetRelease(h->roleid, h->month, h->reserved, -1, false);
	}
	held = NIL;
}

static void
hold(Oid roleid, int month, double reserved, int delta)
{
	ListCell   *lc;
	Held	   *h;
	MemoryContext old;

	foreach(lc, held)
	{
		h = lfirst(lc);
		if (h->roleid == roleid && h->month == month && h->reserved == reserved)
		{
			h->n += delta;
			return;
		}
	}
	if (delta < 0)
		return;
	old = MemoryContextSwitchTo(TopMemoryContext);
	h = palloc0(sizeof(Held));
	h->roleid = roleid;
	h->month = month;
	h->reserved = reserved;
	h->n = delta;
	held = lappend(held, h);
	MemoryContextSwitchTo(old);
	if (!held_cb)
	{
		before_shmem_exit(release_held, (Datum) 0);
		held_cb = true;
	}
}

/*
 * llm._cluster_reserve(role, estimate) returns the month: a worker
 * node's call reserves its estimate on the role's budget here, or the
 * budget error is raised (and reaches the worker node as it is).
 */
Datum
pg_llm_cluster_reserve(PG_FUNCTION_ARGS)
{
	Oid			roleid = get_role_oid(text_to_cstring(PG_GETARG_TEXT_PP(0)), false);
	double		estimate = PG_GETARG_FLOAT8(1);
	double		usd;
	int64		calls;
	int64		max_queued;
	int			month;

	if (!ConfigBudget(roleid, &usd, &calls, &max_queued))
		usd = calls = -1;
	month = UsageBudgetReserve(roleid, estimate, usd, calls, NULL);
	hold(roleid, month, estimate, 1);
	PG_RETURN_INT32(month);
}

/* llm._cluster_release(role, month, reserved, actual, counted) */
Datum
pg_llm_cluster_release(PG_FUNCTION_ARGS)
{
	Oid			roleid = get_role_oid(text_to_cstring(PG_GETARG_TEXT_PP(0)), false);
	int			month = (int) PG_GETARG_INT64(1);
	double		reserved = PG_GETARG_FLOAT8(2);

	UsageBudgetRelease(roleid, month, reserved, PG_GETARG_FLOAT8(3), PG_GETARG_BOOL(4));
	hold(roleid, month, reserved, -1);
	PG_RETURN_VOID();
}
