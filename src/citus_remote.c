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
 *	  This file is the side the call engine asks (ratelimit.c and usage.c
 *	  hand their work to it on a worker node that delegates, and ask it
 *	  what the worker nodes spent): it calls nothing of theirs.  The side
 *	  that serves a worker node's requests on the coordinator, the
 *	  llm._cluster_* functions that take the turn or the reservation with
 *	  RateLimit* and UsageBudget*, is citus_serve.c, above both.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "libpq-fe.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "citus.h"
#include "citus_remote.h"
#include "config.h"
#include "http.h"
#include "runas.h"
#include "shmem.h"

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
							  "FROM llm.usage u JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) u.role_oid "
							  "WHERE r.rolname OPERATOR(pg_catalog.=) %L AND u.ts OPERATOR(pg_catalog.>=) pg_catalog.date_trunc(''month'', pg_catalog.now() "
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
