/*-------------------------------------------------------------------------
 *
 * citus_ddl.c
 *	  pg_llm's own DDL on a Citus cluster: CREATE EXTENSION and ALTER
 *	  EXTENSION UPDATE on the coordinator, which Citus sends to every
 *	  worker node, and citus_add_node, which creates the extension on the
 *	  node it adds.
 *
 *	  Each needs the package (pg_llm.control, the scripts and the library,
 *	  at the version the statement makes) on every node.  A node without
 *	  it made the statement fail on that node with "could not open
 *	  extension control file", after the coordinator had done its part.
 *	  Here the nodes are asked first, and a node without the package is an
 *	  error that names it and says what to do.  DROP EXTENSION needs
 *	  nothing of the nodes and is left to Citus.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"

#include "citus.h"

static ProcessUtility_hook_type prev_utility = NULL;

/* The version a statement makes: its own, else the default available one. */
static char *
target_version(List *options)
{
	ListCell   *lc;
	char	   *v = NULL;

	foreach(lc, options)
	{
		DefElem    *d = lfirst(lc);

		if (strcmp(d->defname, "new_version") == 0 || strcmp(d->defname, "version") == 0)
			v = defGetString(d);
	}
	if (v)
		return v;
	if (SPI_execute("SELECT default_version FROM pg_catalog.pg_available_extensions WHERE name = 'pg_llm'",
					true, 1) == SPI_OK_SELECT && SPI_processed == 1)
		v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	return v ? v : PG_LLM_VERSION;
}

/* Does Citus send this statement's DDL to the worker nodes? */
static bool
propagates(void)
{
	const char *p = GetConfigOption("citus.enable_ddl_propagation", true, false);

	return p == NULL || strcmp(p, "on") == 0;
}

/*
 * The nodes (host:port, comma-separated) that lack pg_llm at a version:
 * the worker nodes, or one node given by host and port.  NULL when all
 * have it.  SPI connected.
 */
static char *
nodes_without(const char *version, const char *host, int port)
{
	StringInfoData q;
	StringInfoData missing;
	char	   *probe;
	uint64		i;

	probe = psprintf("SELECT pg_catalog.count(*) FROM pg_catalog.pg_available_extension_versions "
					 "WHERE name OPERATOR(pg_catalog.=) 'pg_llm' AND version OPERATOR(pg_catalog.=) %s", quote_literal_cstr(version));
	initStringInfo(&q);
	if (host)
		appendStringInfo(&q, "SELECT node_name, node_port, success, result FROM pg_catalog.master_run_on_worker("
						 "ARRAY[%s], ARRAY[%d], ARRAY[%s], false)",
						 quote_literal_cstr(host), port, quote_literal_cstr(probe));
	else
		appendStringInfo(&q, "SELECT nodename, nodeport, success, result FROM pg_catalog.run_command_on_workers(%s)",
						 quote_literal_cstr(probe));
	if (SPI_execute(q.data, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not ask the Citus nodes about pg_llm");
	initStringInfo(&missing);
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		char	   *ok = SPI_getvalue(t, td, 3);
		char	   *result = SPI_getvalue(t, td, 4);

		if (ok && ok[0] == 't' && result && strcmp(result, "0") != 0)
			continue;
		appendStringInfo(&missing, "%s%s:%s", missing.len ? ", " : "",
						 SPI_getvalue(t, td, 1), SPI_getvalue(t, td, 2));
		/* a node that could not be asked says why */
		if (!(ok && ok[0] == 't') && result)
			appendStringInfo(&missing, " (%s)", result);
	}
	return missing.len ? missing.data : NULL;
}

/* Check the worker nodes (or one node) before a statement that needs pg_llm there. */
static void
check_nodes(const char *what, List *options, const char *host, int port)
{
	char	   *version;
	char	   *missing;
	MemoryContext caller = CurrentMemoryContext;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	version = target_version(options);
	missing = nodes_without(version, host, port);
	/* what SPI made goes with SPI_finish */
	version = MemoryContextStrdup(caller, version);
	if (missing)
		missing = MemoryContextStrdup(caller, missing);
	SPI_finish();
	if (missing == NULL)
		return;
	if (host)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("Citus node %s does not have pg_llm %s installed", missing, version),
				 errdetail("Citus creates every extension of this database on the node it adds, pg_llm included."),
				 errhint("Install pg_llm %s on that node (and add it to its shared_preload_libraries), then add the node again.",
						 version)));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("%s needs pg_llm %s on every Citus worker node: %s %s not have it",
					what, version, missing, strchr(missing, ',') ? "do" : "does"),
			 errdetail("Citus runs the statement on every worker node after the coordinator."),
			 errhint("Install pg_llm %s on every node (and add it to their shared_preload_libraries), then run the statement again; "
					 "or keep pg_llm on the coordinator alone, where the calls then run: SET citus.enable_ddl_propagation = off before the statement.",
					 version)));
}

static void
llm_utility(PlannedStmt *pstmt, const char *query_string, bool read_only_tree,
			ProcessUtilityContext context, ParamListInfo params, QueryEnvironment *env,
			DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;
	int			nestlevel = -1;

	if (IsTransactionState() && (IsA(stmt, CreateExtensionStmt) || IsA(stmt, AlterExtensionStmt)))
	{
		const char *name = IsA(stmt, CreateExtensionStmt) ?
			((CreateExtensionStmt *) stmt)->extname : ((AlterExtensionStmt *) stmt)->extname;

		if (strcmp(name, "pg_llm") == 0 && CitusPresent() && CitusGroupId() == 0 && propagates())
		{
			if (IsA(stmt, CreateExtensionStmt))
			{
				CreateExtensionStmt *c = (CreateExtensionStmt *) stmt;

				if (!(c->if_not_exists && OidIsValid(get_extension_oid("pg_llm", true))))
					check_nodes("CREATE EXTENSION pg_llm", c->options, NULL, 0);
			}
			else if (CitusExtensionDistributed())
				check_nodes("ALTER EXTENSION pg_llm UPDATE", ((AlterExtensionStmt *) stmt)->options, NULL, 0);
			else
			{
				/*
				 * pg_llm kept on the coordinator alone: Citus would send
				 * the update to nodes that do not have the extension.
				 */
				nestlevel = NewGUCNestLevel();
				(void) set_config_option("citus.enable_ddl_propagation", "off", PGC_USERSET,
										 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
			}
		}
	}
	if (prev_utility)
		prev_utility(pstmt, query_string, read_only_tree, context, params, env, dest, qc);
	else
		standard_ProcessUtility(pstmt, query_string, read_only_tree, context, params, env, dest, qc);
	if (nestlevel >= 0)
		AtEOXact_GUC(true, nestlevel);
}

/*
 * From the planner hook: a call of citus_add_node (or its kin) with a
 * constant host and port adds a node that must have pg_llm, which this
 * database has and Citus creates there.
 */
static bool
add_node_walker(Node *node, void *arg)
{
	if (node == NULL)
		return false;
	if (IsA(node, FuncExpr))
	{
		FuncExpr   *f = (FuncExpr *) node;
		char	   *name;

		if (f->funcid >= FirstNormalObjectId && list_length(f->args) >= 2 &&
			get_func_namespace(f->funcid) == PG_CATALOG_NAMESPACE &&
			(name = get_func_name(f->funcid)) != NULL &&
			(strcmp(name, "citus_add_node") == 0 || strcmp(name, "master_add_node") == 0 ||
			 strcmp(name, "citus_add_inactive_node") == 0 || strcmp(name, "master_add_inactive_node") == 0))
		{
			Node	   *h = linitial(f->args);
			Node	   *p = lsecond(f->args);

			if (IsA(h, Const) && IsA(p, Const) && !((Const *) h)->constisnull &&
				!((Const *) p)->constisnull && ((Const *) p)->consttype == INT4OID &&
				CitusExtensionDistributed())
				check_nodes("citus_add_node", NIL, TextDatumGetCString(((Const *) h)->constvalue),
							DatumGetInt32(((Const *) p)->constvalue));
		}
	}
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, add_node_walker, arg, 0);
	return expression_tree_walker(node, add_node_walker, arg);
}

void
CitusCheckAddNode(Query *parse)
{
	/* SELECT citus_add_node(...) reads no table */
	if (parse->commandType != CMD_SELECT || parse->rtable != NIL)
		return;
	if (CitusGroupId() != 0)
		return;
	(void) query_tree_walker(parse, add_node_walker, NULL, 0);
}

/* Install the utility hook (from _PG_init). */
void
CitusDdlInit(void)
{
	prev_utility = ProcessUtility_hook;
	ProcessUtility_hook = llm_utility;
}
