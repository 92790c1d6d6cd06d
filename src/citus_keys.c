/*-------------------------------------------------------------------------
 *
 * citus_keys.c
 *	  llm.enqueue's check that a target row exists, set-based for Citus
 *	  tables.
 *
 *	  On a local table the row is looked up at once, a cheap index probe.
 *	  On a distributed table each lookup is a query routed to a worker
 *	  node: SELECT count(llm.enqueue(...)) FROM tickets would make one
 *	  round trip a row.  There the keys are collected instead, per target
 *	  table, role and key columns, and checked a chunk at a time with one
 *	  query (SELECT the keys FROM ONLY the table WHERE each key column =
 *	  ANY of the chunk's values), which Citus prunes to the shards the
 *	  chunk touches and runs on them in parallel.  A chunk is checked when
 *	  it is full (CHUNK keys), when the statement that queued it finishes,
 *	  and before its transaction commits: a key with no row is the same
 *	  error as before, raised a little later, and the statement (with
 *	  every item it queued) is rolled back as before.  The checks of a
 *	  subtransaction that rolls back are dropped with its items.
 *
 *	  The lookup runs as the role that enqueued, with search_path pinned,
 *	  as the row-at-a-time lookup does; tables with row-level security
 *	  are looked up row by row (FOR KEY SHARE) as before.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "common/hashfn.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "citus.h"
#include "compat.h"
#include "runas.h"
#include "target.h"

#define CHUNK 1000

/* One key waiting to be checked. */
typedef struct KeyEntry
{
	char	   *keytext;		/* the target_key, for the error */
	char	  **canon;			/* each key column's value, as its type prints it */
	SubTransactionId subid;
	int			level;			/* the executor depth of the statement that queued it */
} KeyEntry;

/* The keys of one table, role and set of key columns. */
typedef struct KeyGroup
{
	Oid			relid;
	Oid			role;
	char	   *relname;
	char	   *signature;		/* the key columns and their types */
	char	   *sql;			/* the lookup, without its arrays */
	int			ncols;
	int		   *holes;			/* where in sql each key column's array goes */
	Oid		   *types;			/* each key column's (base) type */
	List	   *entries;		/* KeyEntry * */
} KeyGroup;

static List *groups = NIL;		/* KeyGroup *, in TopTransactionContext */
static bool flushing = false;
static int	exec_depth = 0;

static ExecutorRun_hook_type prev_run = NULL;
static ExecutorFinish_hook_type prev_finish = NULL;

static void flush_group(KeyGroup *g);

/* The names of a key's members, in their order. */
static List *
key_names(Jsonb *key)
{
	JsonbIterator *it = JsonbIteratorInit(&key->root);
	JsonbValue	v;
	JsonbIteratorToken tok;
	List	   *names = NIL;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		if (tok == WJB_KEY)
			names = lappend(names, pnstrdup(v.val.string.val, v.val.string.len));
	return names;
}

/*
 * Defer the lookup of a key's row in a distributed or reference table:
 * true when deferred, false when the caller must look it up now.  args
 * holds the key columns' values (as text, of their base types) in the
 * order of the key's members, which the key clause of the caller used.
 */
bool
CitusKeyDefer(Relation rel, const char *relname, Jsonb *key, TargetArgs *args, Oid role)
{
	char		kind = CitusTableKind(RelationGetRelid(rel));
	StringInfoData sig;
	StringInfoData sql;
	List	   *names;
	ListCell   *lc;
	KeyGroup   *g = NULL;
	KeyEntry   *e;
	MemoryContext old;
	int			k;

	if (kind != CITUS_DISTRIBUTED && kind != CITUS_REFERENCE)
		return false;

	/* the group: table, role, key columns and their types */
	initStringInfo(&sig);
	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT ");
	names = key_names(key);
	foreach(lc, names)
	{
		const char *name = lfirst(lc);

		k = foreach_current_index(lc);
		appendStringInfo(&sig, "%s%zu:%s:%u", k ? "," : "", strlen(name), name, args->types[k]);
		appendStringInfo(&sql, "%st.%s", k ? ", " : "", quote_identifier(name));
	}
	k = list_length(names);
	foreach(lc, groups)
	{
		KeyGroup   *c = lfirst(lc);

		if (c->relid == RelationGetRelid(rel) && c->role == role && strcmp(c->signature, sig.data) == 0)
		{
			g = c;
			break;
		}
	}
	old = MemoryContextSwitchTo(TopTransactionContext);
	if (g == NULL)
	{
		g = palloc0(sizeof(KeyGroup));
		g->relid = RelationGetRelid(rel);
		g->role = role;
		g->relname = pstrdup(relname);
		g->signature = pstrdup(sig.data);
		g->ncols = k;
		g->types = palloc(sizeof(Oid) * k);
		g->holes = palloc(sizeof(int) * k);
		appendStringInfo(&sql, " FROM %s%s AS t WHERE ",
						 rel->rd_rel->relkind == RELKIND_RELATION ? "ONLY " : "", relname);
		foreach(lc, names)
		{
			const char *name = lfirst(lc);
			int			j = foreach_current_index(lc);

			g->types[j] = args->types[j];
			appendStringInfo(&sql, "%st.%s %s ANY (", j ? " AND " : "", quote_identifier(name),
							 TargetEqualityOperator(args->types[j], name));
			/* by its offset: a name may hold any character but NUL */
			g->holes[j] = sql.len;
			appendStringInfoChar(&sql, ')');
		}
		g->sql = pstrdup(sql.data);
		groups = lappend(groups, g);
	}

	/* the entry: the key's values as their types print them */
	e = palloc(sizeof(KeyEntry));
	e->keytext = JsonbToCString(NULL, &key->root, 0);
	e->canon = palloc(sizeof(char *) * g->ncols);
	e->subid = GetCurrentSubTransactionId();
	e->level = exec_depth;
	MemoryContextSwitchTo(old);
	for (k = 0; k < g->ncols; k++)
	{
		Oid			input;
		Oid			ioparam;
		Oid			output;
		bool		varlena;
		Datum		d;

		getTypeInputInfo(args->types[k], &input, &ioparam);
		d = OidInputFunctionCall(input, args->texts[k], ioparam, -1);
		getTypeOutputInfo(args->types[k], &output, &varlena);
		e->canon[k] = MemoryContextStrdup(TopTransactionContext, OidOutputFunctionCall(output, d));
	}
	old = MemoryContextSwitchTo(TopTransactionContext);
	g->entries = lappend(g->entries, e);
	MemoryContextSwitchTo(old);
	if (list_length(g->entries) >= CHUNK)
		flush_group(g);
	return true;
}

/*
 * A key's values as one number, for comparing keys (two keys that differ
 * but share it would let a missing row pass here, to fail its item at
 * write-back instead: 2^-64).
 */
static uint64
key_hash(char **canon, int n)
{
	StringInfoData s;
	int			k;
	uint64		h;

	initStringInfo(&s);
	for (k = 0; k < n; k++)
		appendStringInfo(&s, "%zu:%s", strlen(canon[k]), canon[k]);
	h = hash_bytes_extended((const unsigned char *) s.data, s.len, 0x6b657973);
	pfree(s.data);
	return h;
}

/* The lookup of a group's chunk, run as its role (RunAs). */
typedef struct Lookup
{
	KeyGroup   *g;
	List	   *entries;
	MemoryContext ctx;			/* the caller's: SPI's goes with SPI_finish */
	HTAB	   *found;
} Lookup;

static void
lookup_run(void *arg)
{
	Lookup	   *l = (Lookup *) arg;
	KeyGroup   *g = l->g;
	StringInfoData sql;
	int			k;
	int			at = 0;
	uint64		i;
	HASHCTL		ctl;

	/*
	 * The chunk's values as array constants, which Citus prunes to the
	 * shards they hash to (it does not prune over a parameter here).
	 */
	initStringInfo(&sql);
	for (k = 0; k < g->ncols; k++)
	{
		StringInfoData arr;
		ListCell   *lc;
		bool		first = true;

		appendBinaryStringInfo(&sql, g->sql + at, g->holes[k] - at);
		at = g->holes[k];
		initStringInfo(&arr);
		appendStringInfoChar(&arr, '{');
		foreach(lc, l->entries)
		{
			KeyEntry   *e = lfirst(lc);
			const char *c;

			appendStringInfoString(&arr, first ? "\"" : ",\"");
			for (c = e->canon[k]; *c; c++)
			{
				if (*c == '"' || *c == '\\')
					appendStringInfoChar(&arr, '\\');
				appendStringInfoChar(&arr, *c);
			}
			appendStringInfoChar(&arr, '"');
			first = false;
		}
		appendStringInfoChar(&arr, '}');
		appendStringInfo(&sql, "%s::%s", quote_literal_cstr(arr.data),
						 format_type_be_qualified(get_array_type(g->types[k])));
	}
	appendStringInfoString(&sql, g->sql + at);
	if (RunSql(sql.data, 0, NULL, NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not look for the target rows");

	ctl.keysize = sizeof(uint64);
	ctl.entrysize = sizeof(uint64);
	ctl.hcxt = l->ctx;
	l->found = hash_create("pg_llm target keys", Max(SPI_processed, 16), &ctl,
						   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	for (i = 0; i < SPI_processed; i++)
	{
		char	  **canon = palloc(sizeof(char *) * g->ncols);
		uint64		h;

		for (k = 0; k < g->ncols; k++)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, k + 1, &isnull);
			Oid			output;
			bool		varlena;

			getTypeOutputInfo(g->types[k], &output, &varlena);
			canon[k] = isnull ? "" : OidOutputFunctionCall(output, d);
		}
		h = key_hash(canon, g->ncols);
		(void) hash_search(l->found, &h, HASH_ENTER, NULL);
	}
}

/* Check a group's keys now; a key without its row is the error. */
static void
flush_group(KeyGroup *g)
{
	Lookup		l;
	ListCell   *lc;
	bool		pushed;

	if (g->entries == NIL)
		return;
	l.g = g;
	l.entries = g->entries;
	l.ctx = CurrentMemoryContext;
	g->entries = NIL;			/* checked once, whatever happens */
	flushing = true;
	/* a portal's end, or the commit, has no snapshot of its own */
	pushed = !ActiveSnapshotSet();
	if (pushed)
		PushActiveSnapshot(GetTransactionSnapshot());
	PG_TRY();
	{
		RunAs(g->role, true, lookup_run, &l);
	}
	PG_CATCH();
	{
		/* the abort unwinds the snapshot with the rest */
		flushing = false;
		PG_RE_THROW();
	}
	PG_END_TRY();
	flushing = false;
	if (pushed)
		PopActiveSnapshot();
	foreach(lc, l.entries)
	{
		KeyEntry   *e = lfirst(lc);
		uint64		h = key_hash(e->canon, g->ncols);

		if (hash_search(l.found, &h, HASH_FIND, NULL) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("target row %s of table %s does not exist", e->keytext, g->relname),
					 errdetail("Or row-level security hides it from role \"%s\".",
							   GetUserNameFromId(g->role, false)),
					 errhint("Insert the row first: the worker updates it with the reply.")));
	}
}

/* Check every waiting key (of statements at depth `level` or deeper). */
static void
flush_all(int level)
{
	ListCell   *lc;

	if (flushing)
		return;
	foreach(lc, groups)
	{
		KeyGroup   *g = lfirst(lc);
		ListCell   *ec;
		bool		due = false;

		foreach(ec, g->entries)
			if (((KeyEntry *) lfirst(ec))->level >= level)
				due = true;
		if (due)
			flush_group(g);
	}
}

/* ---- when: a chunk full (above), the statement's end, the commit ---- */

static void
keys_run(LLM_EXECUTOR_RUN_PARAMS)
{
	exec_depth++;
	PG_TRY();
	{
		if (prev_run)
			prev_run(LLM_EXECUTOR_RUN_ARGS);
		else
			standard_ExecutorRun(LLM_EXECUTOR_RUN_ARGS);
	}
	PG_FINALLY();
	{
		exec_depth--;
	}
	PG_END_TRY();
}

static void
keys_finish(QueryDesc *qd)
{
	exec_depth++;
	PG_TRY();
	{
		if (prev_finish)
			prev_finish(qd);
		else
			standard_ExecutorFinish(qd);
	}
	PG_FINALLY();
	{
		exec_depth--;
	}
	PG_END_TRY();
	/* the statement is over: what it (or what it ran) queued is checked */
	if (groups != NIL)
		flush_all(exec_depth + 1);
}

static void
keys_xact_cb(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_PRE_COMMIT || event == XACT_EVENT_PRE_PREPARE)
		flush_all(0);
	else if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
			 event == XACT_EVENT_PREPARE || event == XACT_EVENT_PARALLEL_ABORT ||
			 event == XACT_EVENT_PARALLEL_COMMIT)
	{
		groups = NIL;			/* in TopTransactionContext, gone with it */
		flushing = false;
	}
}

static void
keys_subxact_cb(SubXactEvent event, SubTransactionId mySubid, SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;
	MemoryContext old;

	if (event != SUBXACT_EVENT_ABORT_SUB || groups == NIL)
		return;
	flushing = false;
	old = MemoryContextSwitchTo(TopTransactionContext);
	/* the items of a rolled-back subtransaction are gone: so are their checks */
	foreach(lc, groups)
	{
		KeyGroup   *g = lfirst(lc);
		List	   *keep = NIL;
		ListCell   *ec;

		foreach(ec, g->entries)
		{
			KeyEntry   *e = lfirst(ec);

			if (e->subid < mySubid)
				keep = lappend(keep, e);
		}
		g->entries = keep;
	}
	MemoryContextSwitchTo(old);
}

/* Install the hooks and callbacks (from _PG_init). */
void
CitusKeysInit(void)
{
	prev_run = ExecutorRun_hook;
	ExecutorRun_hook = keys_run;
	prev_finish = ExecutorFinish_hook;
	ExecutorFinish_hook = keys_finish;
	RegisterXactCallback(keys_xact_cb, NULL);
	RegisterSubXactCallback(keys_subxact_cb, NULL);
}
