/*-------------------------------------------------------------------------
 *
 * citus_remote.c
 *	  One set of limits and budgets for a whole Citus cluster.
 *
 *	  Each node keeps pg_llm's traffic control and budgets in its own
 *	  shared memory.  A worker node that calls providers (the calls Citus
 *	  pushes down to the shards it holds) takes every turn under a
 *	  provider's rpm_limit and tpm_limit, and every budget reservation,
 *	  from the coordinator's shared memory instead, over a connection to
 *	  the coordinator kept by each backend: the coordinator's own calls,
 *	  its queue worker's and every worker node's draw on one pool, and a
 *	  429 or a refused key seen by one node cools the provider down for
 *	  all.  The margins are those of one server: a limit's burst of one
 *	  second's worth, and a budget's estimates (a call reserves its
 *	  estimated cost before it is sent and the reservation becomes the
 *	  real cost when it ends).
 *
 *	  A worker node's backend whose connection to the coordinator ends
 *	  (it exited, it crashed, the network broke) leaves reservations the
 *	  coordinator gives back at once: the coordinator's session that
 *	  served it releases, as it exits, whatever it reserved and was not
 *	  settled.  A worker node that cannot reach the coordinator does not
 *	  call: its calls fail with the error (nothing is sent that the
 *	  cluster's limits and budgets did not allow).
 *
 *	  Usage is recorded where the call ran, in that node's llm.usage (its
 *	  usage writer needs pg_llm preloaded there); the coordinator's
 *	  llm.cluster_usage reads every node's, and a budget loaded on the
 *	  coordinator (after a restart, in a new month) counts what the worker
 *	  nodes spent.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "libpq-fe.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "citus.h"
#include "config.h"
#include "http.h"
#include "runas.h"
#include "shmem.h"
#include "usage.h"

PG_FUNCTION_INFO_V1(pg_llm_cluster_turn);
PG_FUNCTION_INFO_V1(pg_llm_cluster_after);
PG_FUNCTION_INFO_V1(pg_llm_cluster_settle);
PG_FUNCTION_INFO_V1(pg_llm_cluster_reserve);
PG_FUNCTION_INFO_V1(pg_llm_cluster_release);

/* ---- a worker node: the connection to the coordinator ---- */

static PGconn *coordinator = NULL;
static char *coordinator_name = NULL;

/*
 * Does this node take its turns and budgets from the coordinator?  A
 * Citus worker node that makes calls (CitusCallsOnWorkers).
 */
bool
CitusDelegates(void)
{
	return IsTransactionState() && LlmShmemPresent() && CitusPresent() &&
		CitusIsWorkerNode() && CitusCallsOnWorkers();
}

/* This backend's connection to the coordinator, made when first needed. */
static PGconn **
coordinator_conn(void)
{
	if (coordinator == NULL)
	{
		CitusNode  *c = CitusCoordinator();

		if (c == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("this Citus worker node does not know its coordinator"),
					 errdetail("A worker node takes the limits and budgets of its calls from the coordinator."),
					 errhint("Add the coordinator to the metadata: SELECT citus_set_coordinator_host('<host>', <port>) on the coordinator.")));
		coordinator = CitusConnect(c, GetUserNameFromId(RunAsOwnerOid(), false), "pg_llm limits", NULL);
		if (coordinator_name)
			pfree(coordinator_name);
		coordinator_name = MemoryContextStrdup(TopMemoryContext, c->name);
	}
	return &coordinator;
}

/*
 * Run a statement at the coordinator; on a connection that broke (the
 * coordinator restarted) once more on a new one.
 */
static PGresult *
at_coordinator(const char *sql, int nparams, const char *const *params)
{
	PGconn	  **conn = coordinator_conn();

	if (PQstatus(*conn) != CONNECTION_OK)
	{
		CitusFinish(*conn);
		coordinator = NULL;
		conn = coordinator_conn();
	}
	return CitusExec(conn, coordinator_name, sql, nparams, params);
}

static char *
i64(int64 v)
{
	return psprintf(INT64_FORMAT, v);
}

static char *
f8(double v)
{
	return psprintf("%.17g", v);
}

/* RateLimitAsk for a worker node: the coordinator's turn. */
LlmTurn
CitusRemoteTurn(const LlmRoute *route, int64 tokens, bool reserve, long max_wait_ms,
				TimestampTz *until, char **why, int64 *charged, char **detail)
{
	const char *params[4];
	PGresult   *r;
	LlmTurn		turn;
	char	   *v;

	params[0] = route->provider->name;
	params[1] = i64(tokens);
	params[2] = reserve ? "t" : "f";
	params[3] = i64(max_wait_ms);
	r = at_coordinator("SELECT turn, until_us, why, detail, charged FROM llm._cluster_turn($1, $2, $3, $4)",
					   4, params);
	turn = (LlmTurn) atoi(CitusValue(r, 0, 0));
	*until = (TimestampTz) strtoll(CitusValue(r, 0, 1), NULL, 10);
	*why = CitusValue(r, 0, 2);
	v = CitusValue(r, 0, 3);
	*detail = v ? MemoryContextStrdup(TopMemoryContext, v) : NULL;
	*charged = strtoll(CitusValue(r, 0, 4), NULL, 10);
	CitusClear(r);
	return turn;
}

/* RateLimitAfter for a worker node: what the provider said, to the coordinator. */
void
CitusRemoteAfter(const LlmRoute *route, const HttpTransfer *t, bool quota)
{
	const char *params[12];

	params[0] = route->provider->name;
	params[1] = t ? i64(t->status) : "0";
	params[2] = t ? i64((int64) t->outcome) : "-1";
	params[3] = t && t->unreachable ? "t" : "f";
	params[4] = t && t->timed_out ? "t" : "f";
	params[5] = t ? t->errbuf : "";
	params[6] = t ? f8(t->retry_after_s) : "-1";
	params[7] = quota ? "t" : "f";
	params[8] = t ? i64(t->rl_remaining_requests) : "-1";
	params[9] = t ? f8(t->rl_reset_requests_s) : "-1";
	params[10] = t ? i64(t->rl_remaining_tokens) : "-1";
	params[11] = t ? f8(t->rl_reset_tokens_s) : "-1";
	CitusClear(at_coordinator("SELECT llm._cluster_after($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
							  12, params));
}

/* RateLimitSettle for a worker node. */
void
CitusRemoteSettle(const LlmRoute *route, int64 charged, int64 used, bool unsent)
{
	const char *params[4];

	params[0] = route->provider->name;
	params[1] = i64(charged);
	params[2] = i64(used);
	params[3] = unsent ? "t" : "f";
	CitusClear(at_coordinator("SELECT llm._cluster_settle($1, $2, $3, $4)", 4, params));
}

/* A budget reservation for a worker node's call, at the coordinator. */
int
CitusRemoteReserve(Oid roleid, double estimate, double usd_limit, int64 calls_limit)
{
	const char *params[2];
	PGresult   *r;
	int			month;

	params[0] = GetUserNameFromId(roleid, false);
	params[1] = f8(estimate);
	r = at_coordinator("SELECT llm._cluster_reserve($1, $2)", 2, params);
	month = atoi(CitusValue(r, 0, 0));
	CitusClear(r);
	return month;
}

/*
 * Settle a worker node's reservation at the coordinator.  Called while a
 * call's memory goes away, also during an abort: it raises nothing (a
 * reservation that could not be settled is given back by the coordinator
 * when this backend's connection ends).
 */
void
CitusRemoteRelease(Oid roleid, int month, double reserved_usd, double actual_cost, bool counted)
{
	MemoryContext ctx = CurrentMemoryContext;
	char	   *role;
	const char *params[5];
	PGresult   *r;

	if (coordinator == NULL || PQstatus(coordinator) != CONNECTION_OK)
		return;
	role = GetUserNameFromId(roleid, true);
	if (role == NULL)
		return;
	params[0] = role;
	params[1] = i64(month);
	params[2] = f8(reserved_usd);
	params[3] = f8(actual_cost);
	params[4] = counted ? "t" : "f";
	/* plain libpq, no error raised: a failure leaves it to the session's end */
	r = PQexecParams(coordinator, "SELECT llm._cluster_release($1, $2, $3, $4, $5)",
					 5, NULL, params, NULL, NULL, 0);
	if (r)
		PQclear(r);
	MemoryContextSwitchTo(ctx);
}

/* ---- the coordinator: the functions a worker node's backend calls ---- */

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

/* ---- the coordinator: what the worker nodes spent ---- */

typedef struct SpentArgs
{
	const char *role;
	double		spent;
	int64		calls;
} SpentArgs;

static void
spent_query(void *arg)
{
	SpentArgs  *a = (SpentArgs *) arg;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	uint64		i;

	values[0] = CStringGetTextDatum(a->role);
	if (SPI_execute_with_args("SELECT w.success, w.result FROM pg_catalog.run_command_on_workers("
							  "pg_catalog.format('SELECT COALESCE(pg_catalog.sum(u.cost_usd), 0)::pg_catalog.text "
							  "OPERATOR(pg_catalog.||) '','' OPERATOR(pg_catalog.||) pg_catalog.count(*) "
							  "FILTER (WHERE u.outcome OPERATOR(pg_catalog.<>) ''retry'') "
							  "FROM llm.usage u JOIN pg_catalog.pg_roles r ON r.oid = u.role_oid "
							  "WHERE r.rolname = %L AND u.ts >= pg_catalog.date_trunc(''month'', pg_catalog.now() "
							  "AT TIME ZONE ''UTC'') AT TIME ZONE ''UTC''', $1)) w",
							  1, types, values, NULL, true, 0) != SPI_OK_SELECT)
		return;
	for (i = 0; i < SPI_processed; i++)
	{
		char	   *ok = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		char	   *res = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		char	   *comma;

		if (!ok || ok[0] != 't' || !res || (comma = strchr(res, ',')) == NULL)
			continue;
		a->spent += strtod(res, NULL);
		a->calls += strtoll(comma + 1, NULL, 10);
	}
}

/*
 * Add what a role's calls on the worker nodes spent this month to what
 * the coordinator counted (when its budget is loaded): the worker nodes
 * keep their calls' usage.  A node that cannot be asked counts nothing
 * here (its calls are still held by their reservations while under way).
 */
void
CitusRemoteSpent(Oid roleid, double *spent, int64 *calls)
{
	SpentArgs	a;

	if (!CitusPresent() || CitusGroupId() != 0 || !CitusWorkersSynced())
		return;
	a.role = GetUserNameFromId(roleid, true);
	if (a.role == NULL)
		return;
	a.spent = 0;
	a.calls = 0;
	RunAsOwner(spent_query, &a);
	*spent += a.spent;
	*calls += a.calls;
}
