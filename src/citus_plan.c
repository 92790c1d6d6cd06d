/*-------------------------------------------------------------------------
 *
 * citus_plan.c
 *	  The planner hook that keeps pg_llm's coordinator-only calls on a
 *	  Citus coordinator.
 *
 *	  Citus pushes a query over a distributed table down to the worker
 *	  nodes, select list included: SELECT llm.enqueue(...) FROM tickets
 *	  would run llm.enqueue on the workers, where there is no queue to put
 *	  items in and no coordinator to check target rows against.  This hook
 *	  runs before Citus's planner and rewrites each query level whose
 *	  select list, HAVING or WHERE calls such a function over Citus tables
 *	  into
 *
 *		SELECT <the calls, grouping, ordering, limits>
 *		FROM (SELECT <the columns they use> FROM <the FROM and the rest of
 *			  the WHERE> OFFSET 0) llm_rows
 *
 *	  with a junk column that draws from a sequence of pg_llm's (a
 *	  NextValueExpr, which needs no privilege): Citus evaluates sequences
 *	  on the coordinator, so it neither routes the whole query to one
 *	  worker (a single-key filter) nor pushes the calls into the workers'
 *	  partial aggregates.  The inner query, with the filters, is what
 *	  Citus distributes; the rows come back and the calls run here.
 *
 *	  Calls to providers (llm.chat and the others) are kept on the
 *	  coordinator in the same way unless the worker nodes are set up to
 *	  make them: llm.citus_calls, defined here, and with auto the state of
 *	  the worker nodes that llm.citus_sync() recorded (CitusWorkersCall).  An UPDATE or DELETE of a Citus
 *	  table that calls pg_llm is refused with the form that works (Citus
 *	  refuses volatile functions there).
 *
 *	  A query level the rewrite cannot take apart safely (set operations,
 *	  FOR UPDATE, grouping sets, subqueries in its select list) is left as
 *	  it is: a call that then reaches a worker raises CitusGuard's error.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "optimizer/planner.h"
#include "parser/parsetree.h"
#include "rewrite/rewriteManip.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"

#include "citus.h"
#include "compat.h"
#include "runas.h"

static planner_hook_type prev_planner_hook = NULL;

/* What a function of schema llm is, for the rewrite. */
typedef enum LlmFuncKind
{
	LLM_FUNC_OTHER,
	LLM_FUNC_CALL,				/* calls a provider */
	LLM_FUNC_ENQUEUE			/* queues an item */
} LlmFuncKind;

static const char *const call_functions[] = {
	"chat", "chat_completion", "chat_stream", "chat_many", "classify",
	"extract", "is_true", "embed", "embed_many"
};
static const char *const enqueue_functions[] = {"enqueue", "enqueue_embedding"};

typedef struct RewriteState
{
	Oid			llm_nsp;
	bool		calls_here;		/* calls too are kept on the coordinator */
	Oid			marker_seq;
} RewriteState;

/* What a function is to pg_llm. */
static LlmFuncKind
func_kind(RewriteState *ps, Oid funcid)
{
	char	   *name;
	int			i;
	LlmFuncKind kind = LLM_FUNC_OTHER;

	if (funcid < FirstNormalObjectId || get_func_namespace(funcid) != ps->llm_nsp)
		return LLM_FUNC_OTHER;
	name = get_func_name(funcid);
	if (name == NULL)
		return LLM_FUNC_OTHER;
	for (i = 0; i < lengthof(call_functions); i++)
		if (strcmp(name, call_functions[i]) == 0)
			kind = LLM_FUNC_CALL;
	for (i = 0; i < lengthof(enqueue_functions); i++)
		if (strcmp(name, enqueue_functions[i]) == 0)
			kind = LLM_FUNC_ENQUEUE;
	pfree(name);
	return kind;
}

/* The first pg_llm call in an expression (at its own level), or InvalidOid. */
typedef struct FindCall
{
	RewriteState  *ps;
	bool		coordinator_only;	/* only those that must stay here */
	bool		descend;		/* into subqueries too */
	Oid			found;
} FindCall;

static bool
find_call_walker(Node *node, FindCall *fc)
{
	if (node == NULL)
		return false;
	if (IsA(node, FuncExpr))
	{
		Oid			f = ((FuncExpr *) node)->funcid;
		LlmFuncKind k = func_kind(fc->ps, f);

		if (k == LLM_FUNC_ENQUEUE ||
			(k == LLM_FUNC_CALL && (!fc->coordinator_only || fc->ps->calls_here)))
		{
			fc->found = f;
			return true;
		}
	}
	if (IsA(node, Query))
	{
		if (!fc->descend)
			return false;
		return query_tree_walker((Query *) node, find_call_walker, fc, 0);
	}
	return expression_tree_walker(node, find_call_walker, fc);
}

static Oid
find_call(RewriteState *ps, Node *node, bool coordinator_only, bool descend)
{
	FindCall	fc = {ps, coordinator_only, descend, InvalidOid};

	if (node == NULL)
		return InvalidOid;
	if (IsA(node, Query))
		(void) query_tree_walker((Query *) node, find_call_walker, &fc, 0);
	else
		(void) find_call_walker(node, &fc);
	return fc.found;
}

/* Does a query read a Citus table anywhere below it? */
static bool
reads_citus_walker(Node *node, void *arg)
{
	if (node == NULL)
		return false;
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, reads_citus_walker, arg, QTW_EXAMINE_RTES_BEFORE);
	if (IsA(node, RangeTblEntry))
	{
		RangeTblEntry *rte = (RangeTblEntry *) node;

		if (rte->rtekind == RTE_RELATION && CitusTableKind(rte->relid) != CITUS_NOT_CITUS)
			return true;
		return false;
	}
	return expression_tree_walker(node, reads_citus_walker, arg);
}

/* ---- the rewrite of one query level ---- */

/* The columns the outer part uses, as the inner query's output. */
typedef struct VarMap
{
	List	   *vars;			/* Var *, distinct by varno and varattno */
} VarMap;

static bool
collect_vars_walker(Node *node, VarMap *vm)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var))
	{
		Var		   *v = (Var *) node;
		ListCell   *lc;

		if (v->varlevelsup != 0)
			return false;
		foreach(lc, vm->vars)
		{
			Var		   *w = lfirst(lc);

			if (w->varno == v->varno && w->varattno == v->varattno)
				return false;
		}
		vm->vars = lappend(vm->vars, copyObject(v));
		return false;
	}
	return expression_tree_walker(node, collect_vars_walker, vm);
}

/* Each Var of the outer part becomes the inner query's column. */
static Node *
map_vars_mutator(Node *node, VarMap *vm)
{
	if (node == NULL)
		return NULL;
	if (IsA(node, Var) && ((Var *) node)->varlevelsup == 0)
	{
		Var		   *v = (Var *) node;
		ListCell   *lc;
		int			k = 0;

		foreach(lc, vm->vars)
		{
			Var		   *w = lfirst(lc);

			k++;
			if (w->varno == v->varno && w->varattno == v->varattno)
				return (Node *) makeVar(1, k, v->vartype, v->vartypmod, v->varcollid, 0);
		}
		elog(ERROR, "pg_llm: a column of the query was not mapped");
	}
	return expression_tree_mutator(node, map_vars_mutator, vm);
}

/* Can this level be taken apart? */
static bool
rewritable(Query *q, List *outer_quals)
{
	if (q->setOperations != NULL || q->rowMarks != NIL || q->groupingSets != NIL ||
		q->utilityStmt != NULL || q->jointree == NULL || q->rtable == NIL)
		return false;
	/* subqueries in the parts kept outside could refer to what moves in */
	if (checkExprHasSubLink((Node *) q->targetList) ||
		checkExprHasSubLink(q->havingQual) ||
		checkExprHasSubLink((Node *) outer_quals))
		return false;
	return true;
}

/*
 * Rewrite one SELECT level that calls coordinator-only functions over
 * Citus tables, in place (the parent keeps pointing at it).
 */
static void
rewrite_level(RewriteState *ps, Query *q)
{
	List	   *conjuncts;
	List	   *outer_quals = NIL;
	List	   *inner_quals = NIL;
	ListCell   *lc;
	VarMap		vm = {NIL};
	Query	   *inner;
	Query	   *outer;
	RangeTblEntry *rte;
	RangeTblRef *rtr;
	List	   *colnames = NIL;
	int			k;
	NextValueExpr *marker;
	TargetEntry *junk;

	if (q->commandType != CMD_SELECT)
		return;
	/* a call in the select list, HAVING, or a top-level condition */
	conjuncts = make_ands_implicit((Expr *) q->jointree->quals);
	foreach(lc, conjuncts)
	{
		Node	   *c = lfirst(lc);

		if (OidIsValid(find_call(ps, c, true, false)))
			outer_quals = lappend(outer_quals, c);
		else
			inner_quals = lappend(inner_quals, c);
	}
	if (!OidIsValid(find_call(ps, (Node *) q->targetList, true, false)) &&
		!OidIsValid(find_call(ps, q->havingQual, true, false)) &&
		outer_quals == NIL)
		return;
	if (!reads_citus_walker((Node *) q, NULL) || !rewritable(q, outer_quals))
		return;

	/* the columns the outer part needs */
	(void) collect_vars_walker((Node *) q->targetList, &vm);
	(void) collect_vars_walker(q->havingQual, &vm);
	(void) collect_vars_walker((Node *) outer_quals, &vm);

	/* the inner query: the FROM, the other conditions, the columns */
	inner = copyObject(q);
	inner->targetList = NIL;
	k = 0;
	foreach(lc, vm.vars)
	{
		char	   *name = psprintf("c%d", ++k);

		inner->targetList = lappend(inner->targetList,
									makeTargetEntry((Expr *) copyObject(lfirst(lc)), k, name, false));
		colnames = lappend(colnames, makeString(name));
	}
	if (vm.vars == NIL)
	{
		/* no column is used: one constant per row keeps the row count */
		inner->targetList = list_make1(makeTargetEntry((Expr *) makeConst(INT4OID, -1, InvalidOid, 4,
																		  Int32GetDatum(1), false, true),
													   1, "c1", false));
		colnames = list_make1(makeString("c1"));
	}
	inner->jointree->quals = (Node *) make_ands_explicit(inner_quals);
	inner->groupClause = NIL;
	inner->groupDistinct = false;
	inner->havingQual = NULL;
	inner->sortClause = NIL;
	inner->distinctClause = NIL;
	inner->windowClause = NIL;
	inner->limitCount = NULL;
	inner->limitOption = LLM_LIMIT_OPTION_NONE;
	inner->limitOffset = (Node *) makeConst(INT8OID, -1, InvalidOid, 8, Int64GetDatum(0), false,
											FLOAT8PASSBYVAL);
	inner->hasAggs = false;
	inner->hasWindowFuncs = false;
	inner->hasTargetSRFs = false;
	inner->hasDistinctOn = false;
	inner->canSetTag = true;
	inner->hasSubLinks = checkExprHasSubLink((Node *) inner);
	/* the inner query is a level deeper than the one it replaces */
	IncrementVarSublevelsUp((Node *) inner, 1, 1);

	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_SUBQUERY;
	rte->subquery = inner;
	rte->alias = makeAlias("llm_rows", NIL);
	rte->eref = makeAlias("llm_rows", colnames);
	rte->inFromCl = true;
	rtr = makeNode(RangeTblRef);
	rtr->rtindex = 1;

	/* the outer query: the calls and what comes after the rows */
	outer = makeNode(Query);
	outer->commandType = CMD_SELECT;
	outer->querySource = q->querySource;
	outer->queryId = q->queryId;
	outer->canSetTag = q->canSetTag;
	outer->rtable = list_make1(rte);
	outer->jointree = makeFromExpr(list_make1(rtr),
								   (Node *) make_ands_explicit((List *) map_vars_mutator((Node *) outer_quals, &vm)));
	outer->targetList = (List *) map_vars_mutator((Node *) q->targetList, &vm);
	outer->havingQual = map_vars_mutator(q->havingQual, &vm);
	outer->groupClause = q->groupClause;
	outer->groupDistinct = q->groupDistinct;
	outer->sortClause = q->sortClause;
	outer->distinctClause = q->distinctClause;
	outer->windowClause = q->windowClause;
	outer->limitOffset = q->limitOffset;
	outer->limitCount = q->limitCount;
	outer->limitOption = q->limitOption;
	outer->hasAggs = q->hasAggs;
	outer->hasWindowFuncs = q->hasWindowFuncs;
	outer->hasTargetSRFs = q->hasTargetSRFs;
	outer->hasDistinctOn = q->hasDistinctOn;
	outer->constraintDeps = q->constraintDeps;
	outer->stmt_location = q->stmt_location;
	outer->stmt_len = q->stmt_len;

	/* drawn from pg_llm's sequence: Citus evaluates it on the coordinator */
	marker = makeNode(NextValueExpr);
	marker->seqid = ps->marker_seq;
	marker->typeId = INT8OID;
	junk = makeTargetEntry((Expr *) marker, list_length(outer->targetList) + 1, NULL, true);
	outer->targetList = lappend(outer->targetList, junk);

	memcpy(q, outer, sizeof(Query));
}

/* The error for an UPDATE or DELETE of a Citus table that calls pg_llm. */
static void
refuse_modify(RewriteState *ps, Query *q)
{
	RangeTblEntry *target;
	char		kind;
	Oid			f;

	if (q->resultRelation <= 0 ||
		(q->commandType != CMD_UPDATE && q->commandType != CMD_DELETE))
		return;
	target = rt_fetch(q->resultRelation, q->rtable);
	if (target->rtekind != RTE_RELATION)
		return;
	kind = CitusTableKind(target->relid);
	if (kind == CITUS_NOT_CITUS || kind == CITUS_LOCAL)
		return;
	/* at the statement's own level: what it reads below is taken apart */
	f = find_call(ps, (Node *) q->targetList, false, false);
	if (!OidIsValid(f))
		f = find_call(ps, q->jointree ? q->jointree->quals : NULL, false, false);
	if (!OidIsValid(f))
		f = find_call(ps, (Node *) q->returningList, false, false);
	if (!OidIsValid(f))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("llm.%s cannot be called in an %s of %s %s", get_func_name(f),
					q->commandType == CMD_UPDATE ? "UPDATE" : "DELETE",
					CitusTableKindName(kind), get_rel_name(target->relid)),
			 errdetail("Citus runs the statement on the worker nodes, shard by shard, and refuses volatile functions there."),
			 errhint("Compute the replies first and update from them: WITH r AS MATERIALIZED (SELECT id, llm.chat(...) AS reply FROM %s) UPDATE %s t SET ... = r.reply FROM r WHERE t.id = r.id; or queue them: SELECT count(llm.enqueue(...)) FROM %s.",
					 get_rel_name(target->relid), get_rel_name(target->relid),
					 get_rel_name(target->relid))));
}

/* Every query level below q first, then q itself. */
static bool rewrite_walker(Node *node, RewriteState *ps);

static void
rewrite_query(RewriteState *ps, Query *q)
{
	refuse_modify(ps, q);
	(void) query_tree_walker(q, rewrite_walker, ps, 0);
	rewrite_level(ps, q);
}

/* ---- where the calls run: llm.citus_calls ---- */

/* llm.citus_calls: where calls over Citus tables run */
int			llm_citus_calls = CITUS_CALLS_AUTO;

/* Per transaction: every worker node ready (1) or not (0); -1 not asked. */
static LocalTransactionId ready_xact = InvalidLocalTransactionId;
static int	ready_all = -1;

static void
all_query(void *arg)
{
	/* every active worker node took the last sync, preloads pg_llm, and runs this version */
	*(bool *) arg = SPI_execute("SELECT pg_catalog.count(*) > 0 AND pg_catalog.bool_and(c.node IS NOT NULL AND c.preloaded "
								"AND c.version = (SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_llm')) "
								"FROM pg_catalog.pg_dist_node n LEFT JOIN llm._citus_node c "
								"ON c.node = n.nodename OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) n.nodeport "
								"WHERE n.groupid > 0 AND n.isactive AND n.noderole = 'primary'",
								true, 1) == SPI_OK_SELECT && SPI_processed == 1 &&
		SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1) != NULL &&
		SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)[0] == 't';
}

/*
 * On the coordinator: do the worker nodes make the calls Citus pushes
 * down to them (llm.citus_calls, and with auto: every active worker node
 * took the last sync and preloads pg_llm, as citus_sync.c recorded in
 * llm._citus_node)?  The hook's question, asked once a transaction.
 */
bool
CitusWorkersCall(void)
{
	bool		all = false;

	if (llm_citus_calls == CITUS_CALLS_COORDINATOR)
		return false;
	if (llm_citus_calls == CITUS_CALLS_WORKERS)
		return true;
	if (!IsTransactionState())
		return false;
	if (ready_xact != LlmMyLocalXid())
	{
		ready_xact = LlmMyLocalXid();
		ready_all = -1;
	}
	if (ready_all < 0)
	{
		if (!OidIsValid(get_relname_relid("_citus_node", get_namespace_oid("llm", true))))
			return false;
		ready_all = 0;			/* the query below is planned too */
		RunAsOwner(all_query, &all);
		ready_all = all ? 1 : 0;
	}
	return ready_all == 1;
}

static const struct config_enum_entry citus_calls_options[] = {
	{"auto", CITUS_CALLS_AUTO, false},
	{"coordinator", CITUS_CALLS_COORDINATOR, false},
	{"workers", CITUS_CALLS_WORKERS, false},
	{NULL, 0, false}
};

/* The setting of where the calls run (from _PG_init). */
void
CitusDefineSettings(void)
{
	DefineCustomEnumVariable("llm.citus_calls",
							 "Where calls over Citus tables run: auto, coordinator or workers.",
							 "auto: on the worker nodes that hold the rows when every worker node has the coordinator's configuration (llm.citus_sync) and preloads pg_llm, else on the coordinator.",
							 &llm_citus_calls, CITUS_CALLS_AUTO, citus_calls_options,
							 PGC_USERSET, 0, NULL, NULL, NULL);
}


static bool
rewrite_walker(Node *node, RewriteState *ps)
{
	if (node == NULL)
		return false;
	if (IsA(node, Query))
	{
		rewrite_query(ps, (Query *) node);
		return false;
	}
	return expression_tree_walker(node, rewrite_walker, ps);
}

static PlannedStmt *
llm_planner(Query *parse, const char *query_string, int cursor_options, ParamListInfo params)
{
	if (parse->commandType != CMD_UTILITY && IsTransactionState() && CitusPresent())
	{
		RewriteState	ps;

		ps.llm_nsp = get_namespace_oid("llm", true);
		ps.marker_seq = OidIsValid(ps.llm_nsp) ?
			get_relname_relid("_coordinator_marker", ps.llm_nsp) : InvalidOid;
		ps.calls_here = true;
		if (OidIsValid(ps.marker_seq) && !CitusIsWorkerNode() &&
			OidIsValid(find_call(&ps, (Node *) parse, false, true)))
		{
			/* where calls run: asked only of queries that make some */
			ps.calls_here = !CitusWorkersCall();
			rewrite_query(&ps, parse);
		}
		/* a node added must have pg_llm, which Citus creates there */
		if (OidIsValid(ps.llm_nsp))
			CitusCheckAddNode(parse);
	}
	if (prev_planner_hook)
		return prev_planner_hook(parse, query_string, cursor_options, params);
	return standard_planner(parse, query_string, cursor_options, params);
}

/* Install the planner hook (from _PG_init). */
void
CitusPlanInit(void)
{
	prev_planner_hook = planner_hook;
	planner_hook = llm_planner;
}
