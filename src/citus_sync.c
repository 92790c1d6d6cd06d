/*-------------------------------------------------------------------------
 *
 * citus_sync.c
 *	  Every node of a Citus cluster with the coordinator's configuration:
 *	  providers, their keys and secret headers, models and prices, the
 *	  primary provider, budgets.
 *
 *	  Any change to the configuration on the coordinator (the admin
 *	  functions, or the tables written by hand) is sent to every active
 *	  worker node before the coordinator's transaction commits: each node
 *	  replaces its configuration with the coordinator's in an open
 *	  transaction, and all are committed once all have taken it; a node
 *	  that cannot take it fails the coordinator's statement, naming it,
 *	  and no node keeps it.  llm.citus_sync() sends it again (a node added
 *	  since, one that was down).
 *
 *	  The configuration travels as a parameter of the statement, never in
 *	  its text, on a connection whose startup options turn the statement
 *	  and error logging off: no key appears in a worker node's
 *	  pg_stat_activity, server log or pg_stat_statements, nor in any of
 *	  Citus's catalogs.  Budgets travel by role name (Citus creates roles
 *	  on every node, with OIDs of their own).
 *
 *	  A worker node that has the configuration and preloads pg_llm makes
 *	  the calls that Citus pushes down to it (CitusCallsOnWorkers); a
 *	  call or an enqueue that Citus pushed down to a worker node that may
 *	  not make it raises one clear error (CitusGuard).  The coordinator
 *	  records, per node, what the last sync found, and its planner hook
 *	  (citus_plan.c) pushes calls down only when every worker node is
 *	  ready (llm.citus_calls).
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
#include "storage/proc.h"
#include "utils/builtins.h"
#include "catalog/namespace.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "citus.h"
#include "compat.h"
#include "runas.h"
#include "shmem.h"

PG_FUNCTION_INFO_V1(pg_llm_citus_sync);
PG_FUNCTION_INFO_V1(pg_llm_preloaded);

static bool sync_at_commit = false;
static bool syncing = false;
static bool xact_cb_registered = false;

/*
 * The server-side settings of a connection that carries keys: nothing of
 * its statements reaches a log, whatever the node's configuration.
 */
#define QUIET_OPTIONS \
	"-c log_statement=none -c log_min_duration_statement=-1 " \
	"-c log_min_duration_sample=-1 -c log_parameter_max_length=0 " \
	"-c log_parameter_max_length_on_error=0 -c log_min_error_statement=panic " \
	"-c log_duration=off -c debug_print_parse=off -c debug_print_rewritten=off " \
	"-c debug_print_plan=off"

/* The configuration, as one JSON text, read as the owner. */
static void
snapshot_query(void *arg)
{
	char	  **out = (char **) ((void **) arg)[0];
	MemoryContext caller = (MemoryContext) ((void **) arg)[1];

	if (SPI_execute("SELECT pg_catalog.jsonb_build_object("
					"'providers', COALESCE((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(p)) FROM llm.provider p), '[]'), "
					"'secrets', COALESCE((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(s)) FROM llm._provider_secret s), '[]'), "
					"'models', COALESCE((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(m)) FROM llm.model m), '[]'), "
					"'settings', COALESCE((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(x)) FROM llm._setting x "
					"  WHERE x.key OPERATOR(pg_catalog.!~~) 'citus\\_%'), '[]'), "
					"'budgets', COALESCE((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(b) OPERATOR(pg_catalog.||) "
					"  pg_catalog.jsonb_build_object('role_name', r.rolname)) "
					"  FROM llm.budget b JOIN pg_catalog.pg_roles r ON r.oid = b.role_oid), '[]'), "
					"'grants', COALESCE((SELECT pg_catalog.jsonb_agg(g) FROM llm._grants() g), '[]'))::pg_catalog.text",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the configuration");
	*out = MemoryContextStrdup(caller, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
}

/* What a node said when it took the configuration. */
typedef struct NodeState
{
	CitusNode  *node;
	PGconn	   *conn;
	bool		preloaded;
	char	   *version;
	char	   *missing_roles;
} NodeState;

/* Record, on the coordinator, what each node said (as the owner). */
static void
record_nodes(void *arg)
{
	List	   *states = (List *) arg;
	ListCell   *lc;

	if (SPI_execute("DELETE FROM llm._citus_node", false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not update llm._citus_node");
	foreach(lc, states)
	{
		NodeState  *s = lfirst(lc);
		Oid			types[3] = {TEXTOID, BOOLOID, TEXTOID};
		Datum		values[3];

		values[0] = CStringGetTextDatum(s->node->name);
		values[1] = BoolGetDatum(s->preloaded);
		values[2] = CStringGetTextDatum(s->version ? s->version : "");
		if (SPI_execute_with_args("INSERT INTO llm._citus_node (node, preloaded, version, synced_at) "
								  "VALUES ($1, $2, $3, pg_catalog.now())",
								  3, types, values, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not update llm._citus_node");
	}
}

/*
 * Send the configuration to every worker node and commit it there once
 * every node has taken it.  Returns what each node said.
 */
static List *
push_config(void)
{
	char	   *config = NULL;
	void	   *args[2];
	List	   *workers;
	List	   *states = NIL;
	ListCell   *lc;
	CitusNode  *self;
	const char *role = GetUserNameFromId(GetUserId(), false);

	workers = CitusWorkerNodes();
	if (workers == NIL)
		return NIL;
	args[0] = &config;
	args[1] = CurrentMemoryContext;
	RunAsOwner(snapshot_query, args);
	self = CitusCoordinator();

	PG_TRY();
	{
		foreach(lc, workers)
		{
			NodeState  *s = palloc0(sizeof(NodeState));
			const char *params[2];
			PGresult   *r;

			s->node = lfirst(lc);
			states = lappend(states, s);
			s->conn = CitusConnect(s->node, role, "pg_llm configuration", QUIET_OPTIONS);
			CitusCommand(&s->conn, s->node->name, "BEGIN");
			params[0] = config;
			params[1] = self ? self->name : "";
			r = CitusExec(&s->conn, s->node->name,
						  "SELECT preloaded, version, missing_roles FROM llm._cluster_apply($1::jsonb, $2)",
						  2, params);
			s->preloaded = CitusValue(r, 0, 0) && CitusValue(r, 0, 0)[0] == 't';
			s->version = CitusValue(r, 0, 1);
			s->missing_roles = CitusValue(r, 0, 2);
			CitusClear(r);
		}
		/* every node has it: now it counts on every node */
		foreach(lc, states)
		{
			NodeState  *s = lfirst(lc);

			CitusCommand(&s->conn, s->node->name, "COMMIT");
		}
	}
	PG_CATCH();
	{
		/*
		 * Closing a connection ends the node's open transaction, rolled
		 * back: no ROLLBACK is sent, which would wait, uninterruptibly,
		 * on the node that did not answer.
		 */
		foreach(lc, states)
		{
			NodeState  *s = lfirst(lc);

			CitusFinish(s->conn);
			s->conn = NULL;
		}
		PG_RE_THROW();
	}
	PG_END_TRY();
	foreach(lc, states)
	{
		NodeState  *s = lfirst(lc);

		CitusFinish(s->conn);
		s->conn = NULL;
		if (s->missing_roles && s->missing_roles[0])
			ereport(WARNING,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("Citus node %s has no role %s: its budget and rights on pg_llm were not sent there",
							s->node->name, s->missing_roles),
					 errhint("Create the role on the coordinator with Citus's DDL propagation on (the default), which creates it on every node, then run llm.citus_sync().")));
	}
	memset(config, 0, strlen(config));
	RunAsOwner(record_nodes, states);
	return states;
}

/* Before the coordinator commits a change of the configuration: send it. */
static void
sync_xact_cb(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_PRE_COMMIT && sync_at_commit)
	{
		bool		pushed = !ActiveSnapshotSet();

		sync_at_commit = false;
		syncing = true;
		/* the commit has no snapshot of its own */
		if (pushed)
			PushActiveSnapshot(GetTransactionSnapshot());
		PG_TRY();
		{
			(void) push_config();
		}
		PG_CATCH();
		{
			syncing = false;
			PG_RE_THROW();
		}
		PG_END_TRY();
		syncing = false;
		if (pushed)
			PopActiveSnapshot();
	}
	else if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
			 event == XACT_EVENT_PREPARE || event == XACT_EVENT_PARALLEL_ABORT)
		sync_at_commit = false;
}

/*
 * From the configuration tables' trigger: on a Citus coordinator with
 * worker nodes, send the configuration to them before this transaction
 * commits.
 */
void
CitusConfigChanged(void)
{
	if (syncing || sync_at_commit || !CitusPresent() || CitusGroupId() != 0 ||
		!CitusExtensionDistributed())
		return;
	if (!xact_cb_registered)
	{
		RegisterXactCallback(sync_xact_cb, NULL);
		xact_cb_registered = true;
	}
	sync_at_commit = true;
}

/*
 * llm.citus_sync() returns table(node text, preloaded boolean, version
 * text): send the configuration to every worker node now.
 */
Datum
pg_llm_citus_sync(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	List	   *states;
	ListCell   *lc;

	if (CitusPresent() && CitusGroupId() == 0 && !CitusExtensionDistributed())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_llm is kept on the coordinator alone"),
				 errdetail("It was created with citus.enable_ddl_propagation off: the worker nodes do not have it."),
				 errhint("Calls over Citus tables run on the coordinator.")));
	if (!CitusPresent() || CitusGroupId() != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("llm.citus_sync() runs on a Citus coordinator"),
				 errhint("Run it on the coordinator of the cluster; it sends the configuration to every worker node.")));
	InitMaterializedSRF(fcinfo, 0);
	syncing = true;
	PG_TRY();
	{
		states = push_config();
	}
	PG_FINALLY();
	{
		syncing = false;
	}
	PG_END_TRY();
	foreach(lc, states)
	{
		NodeState  *s = lfirst(lc);
		Datum		values[3];
		bool		nulls[3] = {false, false, s->version == NULL};

		values[0] = CStringGetTextDatum(s->node->name);
		values[1] = BoolGetDatum(s->preloaded);
		values[2] = s->version ? CStringGetTextDatum(s->version) : (Datum) 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}

/* llm._preloaded(): is pg_llm in this server's shared_preload_libraries? */
Datum
pg_llm_preloaded(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(LlmShmemPresent());
}

/* ---- readiness ---- */

static LocalTransactionId ready_xact = InvalidLocalTransactionId;
static int	ready_self = -1;		/* this worker node: synced (1) or not (0) */

static void
self_query(void *arg)
{
	*(bool *) arg = SPI_execute("SELECT 1 FROM llm._setting WHERE key = 'citus_coordinator'", true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1;
}

/*
 * May this worker node call providers from queries on shards?  When it
 * has the coordinator's configuration (a sync) and preloads pg_llm (its
 * usage is recorded, its turns and budgets come from the coordinator).
 */
bool
CitusCallsOnWorkers(void)
{
	bool		synced = false;

	if (!LlmShmemPresent() || !IsTransactionState())
		return false;
	if (ready_xact != LlmMyLocalXid())
	{
		ready_xact = LlmMyLocalXid();
		ready_self = -1;
	}
	if (ready_self < 0)
	{
		ready_self = 0;
		RunAsOwner(self_query, &synced);
		ready_self = synced ? 1 : 0;
	}
	return ready_self == 1;
}

/*
 * Called first by every call (when it looks up its model's routes) and
 * every enqueue: in a query on a shard that a Citus coordinator sent to
 * this worker node, say what happened and what works, once, instead of
 * the error the worker's own state would give.  function names the
 * enqueue function.
 */
void
CitusGuard(CitusUse use, const char *function)
{
	if (!CitusInShardQuery() || !IsTransactionState() || !CitusIsWorkerNode())
		return;
	if (use == CITUS_USE_ENQUEUE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s cannot run on a Citus worker node", function),
				 errdetail("Citus sent it to this worker node with a query on a shard; queue items are kept, sent and written back by the coordinator."),
				 errhint("Run the statement on the coordinator with pg_llm in its shared_preload_libraries, which keeps %s there; or read the rows into a temporary table first and enqueue from it.",
						 function)));
	if (!CitusCallsOnWorkers())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("pg_llm cannot call providers from this Citus worker node"),
				 errdetail("Citus sent the call to this worker node with a query on a shard, and this node does not have the coordinator's providers, models, keys and budgets, or does not preload pg_llm."),
				 errhint("Run SELECT llm.citus_sync() on the coordinator to give every worker node the configuration (each preloading pg_llm); or keep the calls on the coordinator: SET llm.citus_calls = coordinator, with pg_llm in the coordinator's shared_preload_libraries.")));
}

static void
synced_query(void *arg)
{
	*(bool *) arg = SPI_execute("SELECT 1 FROM llm._citus_node", true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1;
}

/* Has any worker node taken the coordinator's configuration? */
bool
CitusWorkersSynced(void)
{
	bool		synced = false;

	if (!OidIsValid(get_relname_relid("_citus_node", get_namespace_oid("llm", true))))
		return false;
	RunAsOwner(synced_query, &synced);
	return synced;
}
