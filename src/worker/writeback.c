/*-------------------------------------------------------------------------
 *
 * writeback.c
 *	  Writing the worker's finished items: the queue rows (done, failed,
 *	  or back to pending) in one statement per outcome over arrays, and
 *	  each reply into its target row.
 *
 *	  A queue row is updated only while the item's lease is still ours
 *	  (its attempt count unchanged), so an item reclaimed by someone else
 *	  is never written twice.  The reply is written in the same
 *	  transaction, in a subtransaction of its own, with the rights of the
 *	  role that enqueued it (a security-restricted operation, search_path
 *	  pinned, every setting its triggers make undone afterwards): nobody
 *	  writes through the worker into a table they could not update
 *	  themselves, and nothing one item's role plants reaches another's.
 *
 *	  The target is looked up again at write time, by the table's OID: a
 *	  table, column or key column that is gone, a temporary table, a reply
 *	  that does not fit the column's type (the type's input function with
 *	  the column's typmod, as an INSERT would: char(n), varchar(n),
 *	  numeric(p,s), domain checks, enums, arrays) fails that item with a
 *	  clear error; the reply stays in llm.queue.reply, since it was paid
 *	  for.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timeout.h"

#include "cache.h"
#include "call.h"
#include "citus.h"
#include "embed.h"
#include "schema.h"
#include "queue.h"
#include "runas.h"
#include "slots.h"
#include "target.h"
#include "usage.h"
#include "worker/item.h"

/*
 * A job's item whose row has a newer item of the same job (its input
 * changed while this one was being answered) is done, but its reply is
 * not written back: the newer one's will be, whatever the order in which
 * the two arrive.  The same job is the same id: another role's job of the
 * same name is another job.
 */
#define SUPERSEDED_SQL \
	"(q.job_id IS NOT NULL AND EXISTS (SELECT 1 FROM llm.queue n WHERE n.job_id = q.job_id " \
	"AND n.target_table = q.target_table AND n.target_key = q.target_key AND n.id > q.id " \
	"AND n.status <> 'failed'))"

/*
 * A pass of WritebackSet that only saves fresh replies for Citus tables
 * (save_first), in a transaction that writes nothing to Citus: the items
 * of the pass are those.
 */
static bool save_pass = false;

static bool fresh_citus(WorkItem *it);
static void write_chunk(ItemSet *set);

/* Finished items written back in one transaction, at most. */
#define WRITEBACK_CHUNK 1000

/* Is a finished item written by this pass? */
static bool
in_pass(WorkItem *it)
{
	return ItemFinished(it) && (!save_pass || fresh_citus(it));
}

/* llm.writeback_timeout: how long one write-back may take (ms) */
int			llm_writeback_timeout = 10000;

/* A write-back, ready to run as the item's role. */
typedef struct Writeback
{
	char	   *sql;
	char	   *group_sql;		/* the same for many rows, over arrays */
	TargetArgs	args;			/* $1 the reply, then the key columns */
	char	   *relname;
	char	   *colname;
	bool		citus;			/* a Citus table: planned for its values */
	int64		shard;			/* the Citus shard of the row, or 0 */
} Writeback;

static void prepare_new(WorkItem *it, const char *reply, Writeback *wb, Jsonb *key);

/* Items with the same write-back statement and role, written at once. */
typedef struct WritebackGroup
{
	Oid			role;
	const char *group_sql;		/* NULL: written one by one */
	int			n;
	int			cap;
	WorkItem  **items;
	Writeback **wbs;
} WritebackGroup;

/*
 * Reply text for a column: as it is for text and JSON types; for the
 * others (enums, numbers, booleans, dates) without surrounding white
 * space, which models like to add.
 */
static char *
reply_for_type(const char *reply, Oid typid)
{
	char		category;
	bool		preferred;
	Oid			base = getBaseType(typid);
	const char *s = reply;
	size_t		n;

	get_type_category_preferred(base, &category, &preferred);
	if (category == TYPCATEGORY_STRING || base == JSONOID || base == JSONBOID)
		return pstrdup(reply);
	while (*s && isspace((unsigned char) *s))
		s++;
	n = strlen(s);
	while (n > 0 && isspace((unsigned char) s[n - 1]))
		n--;
	return pnstrdup(s, n);
}

/*
 * A validated answer (an object) for a column: the whole object for a
 * json or jsonb column; for any other, the value of its only property (a
 * label into an enum, a yes or no into a boolean), else the object as
 * JSON text; each through the column type's input function.
 */
static char *
shaped_for_type(const char *reply, Oid typid, const char *relname)
{
	Oid			base = getBaseType(typid);
	bool		isnull;
	char	   *text = SchemaAnswerForColumn(reply, base == JSONOID || base == JSONBOID, &isnull);

	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the answer's value is null, which is not written into table %s", relname),
				 errhint("Write the answer into a json or jsonb column, or make its property non-null in the schema.")));
	return text;
}

/*
 * The UPDATE of an answer spread over columns: each member of the answer
 * into the column of the same name through its type's input function (a
 * json or jsonb column takes the member's JSON, a JSON null is SQL NULL);
 * a member with no column of that name is not written, a column with no
 * member is left as it is.
 */
static void
writeback_spread(WorkItem *it, const char *reply, Relation rel, Writeback *wb,
				 const char *only, Jsonb *key, StringInfo sql)
{
	List	   *members = SchemaAnswerMembers(reply);
	ListCell   *lc;
	StringInfoData cols;
	int			n = 0;

	initStringInfo(&cols);
	appendStringInfo(sql, "UPDATE %s%s AS t SET ", only, wb->relname);
	foreach(lc, members)
	{
		LlmAnswerMember *m = lfirst(lc);
		AttrNumber	att = get_attnum(it->target_table, m->name);
		Form_pg_attribute a;
		Oid			base;

		if (att <= 0)
			continue;
		a = TupleDescAttr(RelationGetDescr(rel), att - 1);
		if (a->attisdropped)
			continue;
		appendStringInfo(sql, "%s%s = ", n ? ", " : "", quote_identifier(m->name));
		appendStringInfo(&cols, "%s%s", n ? ", " : "", m->name);
		if (m->json == NULL)
			appendStringInfoString(sql, "NULL");
		else
		{
			base = getBaseType(a->atttypid);
			TargetAddArgument(&wb->args, a->atttypid, a->atttypmod,
							  (base == JSONOID || base == JSONBOID) ? m->json :
							  reply_for_type(m->text, a->atttypid));
			appendStringInfo(sql, "$%d", wb->args.nargs);
		}
		n++;
	}
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("no property of the answer names a column of table %s", wb->relname)));
	wb->colname = cols.data;
	appendStringInfoString(sql, " WHERE ");
	TargetKeyClause(rel, wb->relname, key, &wb->args, sql, NULL, "$");
}

/*
 * A row of a Citus distributed table: the shard it lives in, so that a
 * group's rows are those of one shard, and a group's statement names its
 * distribution column's values (Citus routes it to that shard alone, as
 * it routes the one-row statement).  A user's open multi-shard UPDATE of
 * the table, which holds every shard, then holds up only the write-backs
 * of the rows it locks, and a group touches no shard but its own.
 */
static void
citus_prune(WorkItem *it, Relation rel, Jsonb *key, Writeback *wb, StringInfo group)
{
	char		kind = CitusTableKind(RelationGetRelid(rel));
	char	   *dist;
	JsonbIterator *jit;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			k = 0;

	if (kind == CITUS_NOT_CITUS)
		return;
	wb->citus = true;
	dist = kind == CITUS_DISTRIBUTED ? CitusDistributionColumn(RelationGetRelid(rel)) : NULL;
	if (dist == NULL)
		return;
	/* the distribution column among the key's columns ($2 on: the key) */
	jit = JsonbIteratorInit(&key->root);
	while ((tok = JsonbIteratorNext(&jit, &v, true)) != WJB_DONE)
	{
		if (tok != WJB_KEY)
			continue;
		k++;
		if (strlen(dist) == v.val.string.len && strncmp(dist, v.val.string.val, v.val.string.len) == 0)
			break;
	}
	if (tok == WJB_DONE || k >= wb->args.nargs)
		return;
	{
		Oid			input;
		Oid			ioparam;
		Datum		value;

		getTypeInputInfo(wb->args.types[k], &input, &ioparam);
		value = OidInputFunctionCall(input, wb->args.texts[k], ioparam, -1);
		wb->shard = CitusShardOf(RelationGetRelid(rel), wb->args.types[k], value);
	}
	if (group->len > 0)
		appendStringInfo(group, " AND t.%s %s ANY ($%d)", quote_identifier(dist),
						 TargetEqualityOperator(wb->args.types[k], dist), k + 1);
}

/*
 * The write-backs prepared in this pass, by table, role, column and key
 * columns: the items of a job (or of any one target) share everything
 * but their values, which are all a later item needs.  NULL outside a
 * pass.
 */
static HTAB *prepared = NULL;
static MemoryContext prepared_ctx = NULL;

typedef struct PreparedEntry
{
	char		key[NAMEDATALEN * 4];	/* table, role, column, key columns */
	Writeback  *wb;				/* as prepared for the first item */
} PreparedEntry;

/* The reply's text for the column, as the item's kind of answer wants it. */
static char *
reply_for_column(WorkItem *it, const char *reply, Oid typid, const char *relname)
{
	return it->embed ? EmbedTextForColumn(reply, typid) :
		it->shaped ? shaped_for_type(reply, typid, relname) :
		reply_for_type(reply, typid);
}

/*
 * The key of an item's write-back among those prepared in the pass, and
 * its key's values (texts, up to TARGET_MAX_ARGS - 1); false when it has
 * no place there (an answer spread over columns, a key too long).
 */
static bool
prepared_key(WorkItem *it, Jsonb *key, char *out, char **texts, int *ntexts)
{
	StringInfoData names;

	if (prepared == NULL || it->spread)
		return false;
	initStringInfo(&names);
	*ntexts = TargetKeyTexts(key, texts, TARGET_MAX_ARGS - 1, &names);
	if (*ntexts == 0 || *ntexts >= TARGET_MAX_ARGS)
		return false;
	if (snprintf(out, NAMEDATALEN * 4, "%u/%u/%s/%s", it->target_table, it->role,
				 it->target_column, names.data) >= NAMEDATALEN * 4)
		return false;
	return true;
}

/*
 * Prepare the write-back of a reply (already in the server encoding):
 * the target table, column and key columns as they are now.  The table is
 * locked until the end of the transaction, so it cannot change or go away
 * before the UPDATE runs.  A later item of the same table, role, column
 * and key columns in the pass takes the statements prepared for the
 * first, with its own values.
 */
static void
writeback_prepare(WorkItem *it, const char *reply, Writeback *wb)
{
	char		pkey[NAMEDATALEN * 4];
	char	   *texts[TARGET_MAX_ARGS];
	int			ntexts = 0;
	bool		keyed;
	PreparedEntry *e;
	bool		found;
	Jsonb	   *jkey = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(it->target_key)));

	keyed = prepared_key(it, jkey, pkey, texts, &ntexts);
	if (keyed && (e = hash_search(prepared, pkey, HASH_FIND, NULL)) != NULL &&
		e->wb->args.nargs == ntexts + 1)
	{
		int			k;

		*wb = *e->wb;
		wb->args.texts[0] = reply_for_column(it, reply, wb->args.types[0], wb->relname);
		for (k = 0; k < ntexts; k++)
			wb->args.texts[k + 1] = texts[k];
		return;
	}
	prepare_new(it, reply, wb, jkey);
	if (keyed && !wb->citus)
	{
		MemoryContext old = MemoryContextSwitchTo(prepared_ctx);

		e = hash_search(prepared, pkey, HASH_ENTER, &found);
		e->wb = palloc(sizeof(Writeback));
		*e->wb = *wb;
		MemoryContextSwitchTo(old);
	}
}

/* The same, for the first item of its table, role, column and key columns. */
static void
prepare_new(WorkItem *it, const char *reply, Writeback *wb, Jsonb *key)
{
	Relation	rel;
	AttrNumber	att;
	Form_pg_attribute a;
	StringInfoData sql;
	StringInfoData group;
	int			k;
	const char *only;

	memset(wb, 0, sizeof(Writeback));
	TargetArgsInit(&wb->args);
	rel = try_relation_open(it->target_table, RowExclusiveLock);
	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the target table no longer exists")));
	wb->relname = TargetRelationName(rel);
	if (rel->rd_rel->relpersistence == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("the target table %s is a temporary table, which the worker cannot reach",
						wb->relname)));
	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("the target %s is no longer a table", wb->relname)));

	if (LlmNamespaceAclCheck(RelationGetNamespace(rel), it->role, ACL_USAGE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the role that enqueued the item has no USAGE on the schema of table %s",
						wb->relname)));

	/*
	 * Only the table's own row: a table that others inherit from may have
	 * rows of the same key in its children, which are not the target.
	 */
	only = rel->rd_rel->relkind == RELKIND_RELATION ? "ONLY " : "";
	initStringInfo(&sql);
	if (it->spread)
	{
		/* one row, many columns: written alone */
		writeback_spread(it, reply, rel, wb, only, key, &sql);
		relation_close(rel, NoLock);
		wb->sql = psprintf("/* %s */ %s", wb->args.signature.data, sql.data);
		wb->group_sql = NULL;
		return;
	}

	att = get_attnum(it->target_table, it->target_column);
	if (att <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of table %s no longer exists", it->target_column, wb->relname)));
	a = TupleDescAttr(RelationGetDescr(rel), att - 1);
	wb->colname = pstrdup(it->target_column);
	TargetAddArgument(&wb->args, a->atttypid, a->atttypmod,
					  reply_for_column(it, reply, a->atttypid, wb->relname));
	appendStringInfo(&sql, "UPDATE %s%s AS t SET %s = $1 WHERE ",
					 only, wb->relname, quote_identifier(it->target_column));
	TargetKeyClause(rel, wb->relname, key, &wb->args, &sql, NULL, "$");

	/*
	 * The same for many rows at once: the replies and keys as arrays, one
	 * row of unnest() each.  Types without an array type are written one
	 * by one.
	 */
	initStringInfo(&group);
	appendStringInfo(&group, "UPDATE %s%s AS t SET %s = v.a1 FROM unnest(",
					 only, wb->relname, quote_identifier(it->target_column));
	for (k = 0; k < wb->args.nargs; k++)
	{
		if (!OidIsValid(get_array_type(wb->args.types[k])))
			break;
		appendStringInfo(&group, "%s$%d", k ? ", " : "", k + 1);
	}
	if (k == wb->args.nargs)
	{
		TargetArgs	scratch;

		appendStringInfoString(&group, ") AS v(");
		for (k = 0; k < wb->args.nargs; k++)
			appendStringInfo(&group, "%sa%d", k ? ", " : "", k + 1);
		appendStringInfoString(&group, ") WHERE ");
		/* the key clause again, over v's columns (its arguments are dropped) */
		TargetArgsInit(&scratch);
		TargetAddArgument(&scratch, InvalidOid, -1, NULL);
		TargetKeyClause(rel, wb->relname, key, &scratch, &group, NULL, "v.a");
	}
	else
		resetStringInfo(&group);
	citus_prune(it, rel, key, wb, &group);
	relation_close(rel, NoLock);

	/* the argument types are part of the key of the saved plan */
	wb->sql = psprintf("/* %s */ %s", wb->args.signature.data, sql.data);
	wb->group_sql = group.len > 0 ? psprintf("/* %s */ %s", wb->args.signature.data, group.data) : NULL;
}

/* The write-back itself, run as the item's role (RunAs). */
static void
writeback_run(void *arg)
{
	Writeback  *wb = (Writeback *) arg;
	Datum		values[TARGET_MAX_ARGS];

	/*
	 * The reply through its column type's input function, with the
	 * column's typmod: a reply that does not fit fails here, before
	 * anything is written.  Domain checks run as the role.
	 */
	PG_TRY();
	{
		TargetValues(&wb->args, values, 0);
	}
	PG_CATCH();
	{
		ErrorData  *edata = CopyErrorData();

		FlushErrorState();
		ereport(ERROR,
				(errcode(edata->sqlerrcode),
				 errmsg("the reply does not fit column \"%s\" of table %s: %s",
						wb->colname, wb->relname, edata->message),
				 errhint("Write replies into a text column, or ask for an answer of the column's shape with the json_schema option.")));
	}
	PG_END_TRY();
	if ((wb->citus ?
		 SPI_execute_with_args(wb->sql, wb->args.nargs, wb->args.types, values, NULL, false, 0) :
		 RunSql(wb->sql, wb->args.nargs, wb->args.types, values, NULL, false, 0)) != SPI_OK_UPDATE)
		elog(ERROR, "could not write the reply back");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("the target row no longer exists, or the role that enqueued the item can no longer see it")));
	/* a key identifies one row; anything else is rolled back */
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_CARDINALITY_VIOLATION),
				 errmsg("the target key matched " UINT64_FORMAT " rows of table %s", (uint64) SPI_processed,
						wb->relname),
				 errdetail("A reply is written into one row; nothing was written.")));
}

/*
 * A group's write-back, run as its role: every reply through its column
 * type's input function, then one UPDATE over arrays.  It must update
 * one row per item; anything else (a reply that does not fit, a row gone,
 * a trigger's error) is an error, and the group is written again one
 * item at a time, which gives each item its own outcome.
 */
static void
writeback_group_run(void *arg)
{
	WritebackGroup *g = (WritebackGroup *) arg;
	TargetArgs *first = &g->wbs[0]->args;
	int			nargs = first->nargs;
	Datum		values[TARGET_MAX_ARGS];
	Oid			types[TARGET_MAX_ARGS];
	Datum	  **elems = palloc(sizeof(Datum *) * nargs);
	int			i,
				k;

	for (k = 0; k < nargs; k++)
		elems[k] = palloc(sizeof(Datum) * g->n);
	for (i = 0; i < g->n; i++)
	{
		Datum		one[TARGET_MAX_ARGS];

		TargetValues(&g->wbs[i]->args, one, 0);
		for (k = 0; k < nargs; k++)
			elems[k][i] = one[k];
	}
	for (k = 0; k < nargs; k++)
	{
		int16		typlen;
		bool		typbyval;
		char		typalign;

		get_typlenbyvalalign(first->types[k], &typlen, &typbyval, &typalign);
		values[k] = PointerGetDatum(construct_array(elems[k], g->n, first->types[k],
													typlen, typbyval, typalign));
		types[k] = get_array_type(first->types[k]);
	}
	/* a Citus table's statement is planned for its values (and so pruned) */
	if ((g->wbs[0]->citus ?
		 SPI_execute_with_args(g->group_sql, nargs, types, values, NULL, false, 0) :
		 RunSql(g->group_sql, nargs, types, values, NULL, false, 0)) != SPI_OK_UPDATE)
		elog(ERROR, "could not write the replies back");
	if (SPI_processed != (uint64) g->n)
		elog(ERROR, "the group updated " UINT64_FORMAT " rows of %d", (uint64) SPI_processed, g->n);
}

/* Text with every byte outside ASCII replaced, which any encoding holds. */
static char *
ascii_only(const char *s)
{
	char	   *out = pstrdup(s);
	char	   *p;

	for (p = out; *p; p++)
		if ((unsigned char) *p >= 0x80)
			*p = '?';
	return out;
}

/* An item whose reply could not be written: it fails, the reply kept. */
static void
writeback_failed(ItemSet *set, WorkItem *it, const char *msg, Datum *failed_ids,
				 Datum *failed_errors, int *nfailed)
{
	ItemFail(set, it, psprintf("the reply could not be written back: %s", msg));
	failed_ids[*nfailed] = Int64GetDatum(it->id);
	failed_errors[*nfailed] = CStringGetTextDatum(ascii_only(it->error));
	(*nfailed)++;
}

/*
 * Is an item written on its own: back for its write-back alone after the
 * last one was held up or failed (llm.retry), which its error says?  An
 * item back only because its reply was saved first (a Citus target) is
 * grouped as a fresh one is.
 */
static bool
alone(const WorkItem *it)
{
	return it->answered && it->kept_problem != NULL;
}

/*
 * Add an item to the group of its statement, role and (Citus) shard (a
 * new one if none).
 */
static List *
group_add(List *groups, WorkItem *it, Writeback *wb)
{
	ListCell   *lc;
	WritebackGroup *g = NULL;

	/*
	 * An item back for its write-back alone (the last one was held up, or
	 * llm.retry) is written on its own: a group held up by one of its rows
	 * does not hold the others up again.
	 */
	foreach(lc, alone(it) ? NIL : groups)
	{
		WritebackGroup *c = lfirst(lc);

		if (c->role == it->role && !alone(c->items[0]) && c->wbs[0]->shard == wb->shard &&
			strcmp(c->wbs[0]->sql, wb->sql) == 0)
		{
			g = c;
			break;
		}
	}
	if (g == NULL)
	{
		g = palloc0(sizeof(WritebackGroup));
		g->role = it->role;
		g->group_sql = wb->group_sql;
		g->cap = 16;
		g->items = palloc(sizeof(WorkItem *) * g->cap);
		g->wbs = palloc(sizeof(Writeback *) * g->cap);
		groups = lappend(groups, g);
	}
	if (g->n == g->cap)
	{
		g->cap *= 2;
		g->items = repalloc(g->items, sizeof(WorkItem *) * g->cap);
		g->wbs = repalloc(g->wbs, sizeof(Writeback *) * g->cap);
	}
	g->items[g->n] = it;
	g->wbs[g->n] = wb;
	g->n++;
	return groups;
}

/* An item and its write-back, for the steps run by guarded(). */
typedef struct ItemStep
{
	WorkItem   *it;
	Writeback  *wb;
} ItemStep;

static void
prepare_step(void *arg)
{
	ItemStep   *s = (ItemStep *) arg;

	writeback_prepare(s->it, s->it->db_text, s->wb);
}

static void
write_step(void *arg)
{
	ItemStep   *s = (ItemStep *) arg;

	RunAs(s->it->role, true, writeback_run, s->wb);
}

static void
group_step(void *arg)
{
	WritebackGroup *g = (WritebackGroup *) arg;

	RunAs(g->role, true, writeback_group_run, g);
}

/*
 * Everything a write-back runs that a role can hold up (a lock on its
 * table or row, taken in an idle transaction; a trigger that sleeps) runs
 * under llm.writeback_timeout: a timer of the worker's own, which nothing
 * the role's code SETs can turn off, and whose cancel is an error of the
 * step alone.  A cancel the timer raised just as the step ended is
 * dropped, so that it never reaches the worker's own work.
 */
typedef struct TimedStep
{
	void		(*fn) (void *);
	void	   *arg;
} TimedStep;

static void
timer_off(void)
{
	if (get_timeout_active(STATEMENT_TIMEOUT))
		disable_timeout(STATEMENT_TIMEOUT, false);
	if (get_timeout_indicator(STATEMENT_TIMEOUT, true))
		QueryCancelPending = false;
}

static void
timed_step(void *arg)
{
	TimedStep  *t = (TimedStep *) arg;

	if (llm_writeback_timeout > 0)
		enable_timeout_after(STATEMENT_TIMEOUT, llm_writeback_timeout);
	PG_TRY();
	{
		t->fn(t->arg);
	}
	PG_FINALLY();
	{
		timer_off();
	}
	PG_END_TRY();
}

/* Run fn(arg) in a subtransaction under the timeout (see ItemSubxact). */
static const char *
timed_subxact(void (*fn) (void *), void *arg, WorkItem *it)
{
	TimedStep	t = {fn, arg};

	return ItemSubxact(timed_step, &t, it);
}

/* Was the last failed step held up (timeout, lock wait, deadlock)? */
static bool
held_up(void)
{
	int			code = ItemSubxactCode();

	return code == ERRCODE_QUERY_CANCELED || code == ERRCODE_LOCK_NOT_AVAILABLE ||
		code == ERRCODE_T_R_DEADLOCK_DETECTED;
}

/*
 * What one pass of write-backs decided besides done and failed: the
 * items whose write-back is put off (back to pending with their reply,
 * only their write-back left), and the roles one of whose write-backs was
 * held up (their other items in this pass are put off untried, so that
 * one role's stall costs the others at most one timeout a pass).
 */
typedef struct PassState
{
	Datum	   *failed_ids;
	Datum	   *failed_errors;
	int			nfailed;
	Datum	   *put_off_ids;
	Datum	   *put_off_errors;
	Datum	   *put_off_when;
	Datum	   *put_off_untried;
	int			nput_off;
	Oid		   *stalled_roles;
	int			nstalled;
	Datum	   *kept_ids;		/* embeddings whose vector must be kept */
	Datum	   *kept_replies;
	int			nkept;
} PassState;

static bool
role_stalled(PassState *ps, Oid role)
{
	int			i;

	for (i = 0; i < ps->nstalled; i++)
		if (ps->stalled_roles[i] == role)
			return true;
	return false;
}

/*
 * An item whose write-back was held up (tried) or not tried because its
 * role's was: back to pending with its reply, its write-back alone left;
 * one tried and held up llm.max_attempts times fails, its reply kept.
 */
static void
writeback_put_off(ItemSet *set, WorkItem *it, bool tried, PassState *ps)
{
	TimestampTz when;

	if (tried && !role_stalled(ps, it->role))
		ps->stalled_roles[ps->nstalled++] = it->role;
	if (tried && it->attempts >= llm_max_attempts)
	{
		ItemFail(set, it, psprintf("the reply could not be written back: it was held up longer than llm.writeback_timeout (%d ms) %d times, by a lock on the target row or table or by a slow trigger; the reply is kept, and llm.retry writes it back",
								   llm_writeback_timeout, it->attempts));
		ps->failed_ids[ps->nfailed] = Int64GetDatum(it->id);
		ps->failed_errors[ps->nfailed] = CStringGetTextDatum(ascii_only(it->error));
		ps->nfailed++;
		return;
	}
	it->stalled = true;
	it->untried = !tried;
	when = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
									   tried ? Min(1000L << Min(it->attempts, 10), 300000L) : 1000L);
	ps->put_off_ids[ps->nput_off] = Int64GetDatum(it->id);
	ps->put_off_errors[ps->nput_off] =
		CStringGetTextDatum(psprintf(tried ?
									 "the reply's write-back was held up longer than llm.writeback_timeout (%d ms), by a lock on the target row or table or by a slow trigger; it is tried again, without a new call" :
									 "the reply's write-back waits: another write-back of the same role was held up longer than llm.writeback_timeout (%d ms); it is tried again, without a new call",
									 llm_writeback_timeout));
	ps->put_off_when[ps->nput_off] = TimestampTzGetDatum(when);
	ps->put_off_untried[ps->nput_off] = Int32GetDatum(tried ? 0 : 1);
	ps->nput_off++;
}

/*
 * An embedding whose vector was not written into its target: the queue
 * row keeps the vector after all (it was paid for).  A written one is not
 * kept: the queue row of a done embedding with a target has no reply
 * (update_queue_rows), which spares each row a compressed copy of its
 * vector.
 */
static void
keep_vector(WorkItem *it, PassState *ps)
{
	if (!it->embed || !OidIsValid(it->target_table) || it->db_text == NULL)
		return;
	ps->kept_ids[ps->nkept] = Int64GetDatum(it->id);
	ps->kept_replies[ps->nkept] = CStringGetTextDatum(it->db_text);
	ps->nkept++;
}

/* Write the vectors of the embeddings that keep them (keep_vector). */
static void
keep_vectors_written(PassState *ps)
{
	Oid			types[2] = {INT8ARRAYOID, TEXTARRAYOID};
	Datum		args[2];

	if (ps->nkept == 0)
		return;
	args[0] = LlmMakeArray(ps->kept_ids, NULL, ps->nkept, INT8OID);
	args[1] = LlmMakeArray(ps->kept_replies, NULL, ps->nkept, TEXTOID);
	if (RunSql("UPDATE llm.queue q SET reply = u.r "
			   "FROM unnest($1::int8[], $2::text[]) AS u(id, r) "
			   "WHERE q.id = u.id AND q.reply IS NULL",
			   2, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update llm.queue");
}

/*
 * Run a step of one item's write-back in a subtransaction under the
 * timeout: an error fails that item alone, a hold-up puts it off.
 * Returns whether the step succeeded.
 */
static bool
guarded(ItemSet *set, WorkItem *it, void (*step) (void *), Writeback *wb, PassState *ps)
{
	ItemStep	s = {it, wb};
	const char *msg;

	if (role_stalled(ps, it->role))
	{
		writeback_put_off(set, it, false, ps);
		keep_vector(it, ps);
		return false;
	}
	msg = timed_subxact(step, &s, it);
	if (msg == NULL)
		return true;
	if (held_up())
		writeback_put_off(set, it, true, ps);
	else
	{
		int			code = ItemSubxactCode();

		/*
		 * A name the role's code (a trigger, a default, a check) did not
		 * find: most often an unqualified one, which the pinned path does
		 * not reach.
		 */
		if (step == write_step &&
			(code == ERRCODE_UNDEFINED_TABLE || code == ERRCODE_UNDEFINED_FUNCTION ||
			 code == ERRCODE_UNDEFINED_OBJECT || code == ERRCODE_UNDEFINED_SCHEMA))
			msg = psprintf("%s (write-backs run with search_path = pg_catalog, pg_temp: qualify the names in the target table's triggers, defaults and checks with their schema, then llm.retry writes the kept reply back)", msg);
		writeback_failed(set, it, msg, ps->failed_ids, ps->failed_errors, &ps->nfailed);
	}
	keep_vector(it, ps);
	return false;
}

/*
 * Write a group at once, in a subtransaction under the timeout; false
 * (nothing written) when any of it fails, and the items are then written
 * one by one; *held when it was held up.
 */
static bool
write_group(WritebackGroup *g, bool *held)
{
	*held = false;
	if (timed_subxact(group_step, g, NULL) == NULL)
		return true;
	*held = held_up();
	return false;
}

/* Do the items of a group name distinct rows (their keys differ)? */
static bool
group_keys_distinct(WritebackGroup *g)
{
	HASHCTL		ctl;
	HTAB	   *seen;
	int			i;
	bool		distinct = true;

	ctl.keysize = NAMEDATALEN * 4;
	ctl.entrysize = NAMEDATALEN * 4;
	ctl.hcxt = CurrentMemoryContext;
	seen = hash_create("pg_llm write-back keys", g->n, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	for (i = 0; i < g->n && distinct; i++)
	{
		StringInfoData key;
		bool		found;
		int			k;

		initStringInfo(&key);
		for (k = 1; k < g->wbs[i]->args.nargs; k++)
			appendStringInfo(&key, "%zu:%s", strlen(g->wbs[i]->args.texts[k]), g->wbs[i]->args.texts[k]);
		/* keys too long for the table are compared no further: one by one */
		if (key.len >= NAMEDATALEN * 4)
			distinct = false;
		else
		{
			(void) hash_search(seen, key.data, HASH_ENTER, &found);
			distinct = !found;
		}
	}
	hash_destroy(seen);
	return distinct;
}

/*
 * Put each finished item's text (its reply, or its error) in the server
 * encoding.  In a database that is not UTF-8 a reply can hold characters
 * the encoding cannot: that item fails (with its reply kept as far as it
 * can be), the others are written.  Conversions that can fail run in a
 * subtransaction each.
 */
static void
convert_step(void *arg)
{
	WorkItem   *it = (WorkItem *) arg;
	const char *text = it->state == ITEM_DONE ? it->reply : (it->error ? it->error : "failed");

	/* a vector's text is ASCII, the same in every server encoding */
	if (it->embed && it->state == ITEM_DONE)
	{
		it->db_text = it->reply;
		return;
	}
	it->db_text = LlmToServerEncoding(text, strlen(text));
	if (it->said && it->state == ITEM_RETRY_LATER)
		it->said_db = LlmToServerEncoding(it->said, strlen(it->said));
}

static void
convert_texts(ItemSet *set)
{
	bool		utf8 = (GetDatabaseEncoding() == PG_UTF8);
	dlist_iter	iter;

	dlist_foreach(iter, &set->items)
	{
		WorkItem   *it = dlist_container(WorkItem, node, iter.cur);
		const char *msg;

		if (!in_pass(it))
			continue;
		if (utf8)
		{
			convert_step(it);
			continue;
		}
		msg = ItemSubxact(convert_step, it, it);
		if (msg)
		{
			if (it->state == ITEM_DONE)
				ItemFail(set, it, psprintf("the reply cannot be stored in the database's encoding %s: %s",
										   GetDatabaseEncodingName(), msg));
			it->db_text = ascii_only(it->error);
			if (it->said && it->said_db == NULL)
				it->said_db = pstrdup("");
		}
	}
}

/*
 * Update the queue rows of the finished items: one UPDATE per outcome
 * over arrays, guarded by each item's lease token.  Marks the items that
 * were still ours (written) and returns, in *superseded, a hash of the
 * done items whose reply must not be written back.
 */
static void
update_queue_rows(ItemSet *set, HTAB *superseded)
{
	dlist_iter	iter;
	int			n[3] = {0, 0, 0};
	Datum	   *ids[3];
	Datum	   *atts[3];
	Datum	   *texts[3];
	Datum	   *whens;
	int			cap = set->n;
	int			k;
	static const char *const sql[3] = {
		"UPDATE llm.queue q SET status = 'done', error = NULL, answered = true, lease_until = NULL, "
		"reply = CASE WHEN q.task = 'embed' AND q.target_table IS NOT NULL THEN NULL ELSE u.t END, "
		"leased_by = NULL, finished_at = pg_catalog.now() "
		"FROM unnest($1::int8[], $2::int4[], $3::text[]) AS u(id, a, t) "
		"WHERE q.id = u.id AND q.attempts = u.a AND q.status IN ('running', 'submitted') RETURNING q.id, "
		SUPERSEDED_SQL,
		"UPDATE llm.queue q SET status = 'failed', error = u.t, lease_until = NULL, "
		"leased_by = NULL, finished_at = pg_catalog.now(), "
		"invalid_answers = GREATEST(q.invalid_answers, u.n) "
		"FROM unnest($1::int8[], $2::int4[], $3::text[], $4::int4[]) AS u(id, a, t, n) "
		"WHERE q.id = u.id AND q.attempts = u.a AND q.status IN ('running', 'submitted') RETURNING q.id",
		"UPDATE llm.queue q SET status = 'pending', error = u.t, lease_until = NULL, "
		"leased_by = NULL, next_attempt_at = u.w, reply = u.s, attempts = q.attempts - u.n, "
		"invalid_answers = q.invalid_answers + (u.s IS NOT NULL)::int, "
		"via = CASE WHEN u.s IS NULL THEN q.via ELSE 'realtime' END "
		"FROM unnest($1::int8[], $2::int4[], $3::text[], $4::timestamptz[], $5::text[], $6::int4[]) "
		"AS u(id, a, t, w, s, n) WHERE q.id = u.id AND q.attempts = u.a AND q.status IN ('running', 'submitted') RETURNING q.id"
	};
	Oid			types[6] = {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID,
	INT4ARRAYOID};
	Datum	   *saids;
	bool	   *said_nulls;
	Datum	   *invs;
	Oid			failed_types[4] = {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, INT4ARRAYOID};
	Datum	   *untried;
	bool	   *done_nulls;

	for (k = 0; k < 3; k++)
	{
		ids[k] = palloc(sizeof(Datum) * cap);
		atts[k] = palloc(sizeof(Datum) * cap);
		texts[k] = palloc(sizeof(Datum) * cap);
	}
	whens = palloc(sizeof(Datum) * cap);
	saids = palloc(sizeof(Datum) * cap);
	invs = palloc(sizeof(Datum) * cap);
	said_nulls = palloc(sizeof(bool) * cap);
	untried = palloc(sizeof(Datum) * cap);
	done_nulls = palloc(sizeof(bool) * cap);
	dlist_foreach(iter, &set->items)
	{
		WorkItem   *it = dlist_container(WorkItem, node, iter.cur);

		if (!in_pass(it))
			continue;
		k = it->state == ITEM_DONE ? 0 : it->state == ITEM_FAILED ? 1 : 2;
		ids[k][n[k]] = Int64GetDatum(it->id);
		atts[k][n[k]] = Int32GetDatum(it->attempts);
		if (k == 0)
		{
			/*
			 * A vector written into its row is not kept in the queue too
			 * (the statement says so): not copied here either, a pass's
			 * vectors being most of its memory.
			 */
			done_nulls[n[k]] = it->embed && OidIsValid(it->target_table);
			texts[k][n[k]] = done_nulls[n[k]] ? (Datum) 0 : CStringGetTextDatum(it->db_text);
		}
		else
			texts[k][n[k]] = CStringGetTextDatum(it->db_text);
		if (k == 1)
			invs[n[k]] = Int32GetDatum(it->invalid_answers);
		if (k == 2)
		{
			whens[n[k]] = TimestampTzGetDatum(it->next_attempt_at);
			said_nulls[n[k]] = (it->said_db == NULL);
			saids[n[k]] = it->said_db ? CStringGetTextDatum(it->said_db) : (Datum) 0;
			/* an item handed back unsent gets its attempt back */
			untried[n[k]] = Int32GetDatum(it->untried ? 1 : 0);
		}
		n[k]++;
	}
	for (k = 0; k < 3; k++)
	{
		Datum		args[6];
		uint64		i;
		SPITupleTable *tt;
		uint64		nrows;
		HTAB	   *ours;
		HASHCTL		ctl;
		ItemState	want = k == 0 ? ITEM_DONE : k == 1 ? ITEM_FAILED : ITEM_RETRY_LATER;

		if (n[k] == 0)
			continue;
		args[0] = LlmMakeArray(ids[k], NULL, n[k], INT8OID);
		args[1] = LlmMakeArray(atts[k], NULL, n[k], INT4OID);
		args[2] = LlmMakeArray(texts[k], k == 0 ? done_nulls : NULL, n[k], TEXTOID);
		if (k == 1)
			args[3] = LlmMakeArray(invs, NULL, n[k], INT4OID);
		if (k == 2)
		{
			args[3] = LlmMakeArray(whens, NULL, n[k], TIMESTAMPTZOID);
			args[4] = LlmMakeArray(saids, said_nulls, n[k], TEXTOID);
			args[5] = LlmMakeArray(untried, NULL, n[k], INT4OID);
		}
		if (RunSql(sql[k], k == 0 ? 3 : k == 1 ? 4 : 6, k == 1 ? failed_types : types, args, NULL,
				   false, 0) != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "could not update llm.queue");

		/* note which items were still ours, and which replies are superseded */
		tt = SPI_tuptable;
		nrows = SPI_processed;
		ctl.keysize = sizeof(int64);
		ctl.entrysize = sizeof(int64);
		ctl.hcxt = CurrentMemoryContext;
		ours = hash_create("pg_llm written ids", Max(nrows, 16), &ctl,
						   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		for (i = 0; i < nrows; i++)
		{
			bool		isnull;
			int64		id = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));

			(void) hash_search(ours, &id, HASH_ENTER, NULL);
			if (k == 0 && DatumGetBool(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull)))
				(void) hash_search(superseded, &id, HASH_ENTER, NULL);
		}
		dlist_foreach(iter, &set->items)
		{
			WorkItem   *it = dlist_container(WorkItem, node, iter.cur);

			if (it->state == want && hash_search(ours, &it->id, HASH_FIND, NULL) != NULL)
				it->written = true;
		}
	}
}

/*
 * Mark done items whose write-back failed as failed, with the error; the
 * reply stays in the row.
 */
static void
fail_written_back(Datum *ids, Datum *errors, int n)
{
	Oid			types[2] = {INT8ARRAYOID, TEXTARRAYOID};
	Datum		args[2];

	if (n == 0)
		return;
	args[0] = LlmMakeArray(ids, NULL, n, INT8OID);
	args[1] = LlmMakeArray(errors, NULL, n, TEXTOID);
	if (RunSql("UPDATE llm.queue q SET status = 'failed', error = u.t "
					 "FROM unnest($1::int8[], $2::text[]) AS u(id, t) "
					 "WHERE q.id = u.id AND q.status = 'done'",
					 2, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update llm.queue");
}

/*
 * Put off the write-backs that were held up: back to pending with their
 * reply and answered, so that the next claim writes them back without a
 * call; an item put off untried gets its attempt back.
 */
static void
put_off_written_back(PassState *ps)
{
	Oid			types[4] = {INT8ARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID, INT4ARRAYOID};
	Datum		args[4];

	if (ps->nput_off == 0)
		return;
	args[0] = LlmMakeArray(ps->put_off_ids, NULL, ps->nput_off, INT8OID);
	args[1] = LlmMakeArray(ps->put_off_errors, NULL, ps->nput_off, TEXTOID);
	args[2] = LlmMakeArray(ps->put_off_when, NULL, ps->nput_off, TIMESTAMPTZOID);
	args[3] = LlmMakeArray(ps->put_off_untried, NULL, ps->nput_off, INT4OID);
	if (RunSql("UPDATE llm.queue q SET status = 'pending', error = u.t, next_attempt_at = u.w, "
			   "finished_at = NULL, via = 'realtime', attempts = q.attempts - u.n "
			   "FROM unnest($1::int8[], $2::text[], $3::timestamptz[], $4::int4[]) AS u(id, t, w, n) "
			   "WHERE q.id = u.id AND q.status = 'done' AND q.answered",
			   4, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update llm.queue");
	elog(LOG, "pg_llm worker: %d write-backs put off: held up longer than llm.writeback_timeout (%d ms)",
		 ps->nput_off, llm_writeback_timeout);
}

/*
 * A fresh reply for a Citus distributed or reference table is saved
 * before it is written back.  Its write-back runs on worker nodes, which
 * Citus commits before this node's transaction (one worker node: one
 * phase): a crash between the two would leave the row written and the
 * item unanswered, sent to the provider again.  So the reply is kept
 * first, in this transaction, with the item pending and answered at the
 * front of the queue; the next claim writes it back without a new call,
 * in a transaction of its own, and a crash at any point can at most write
 * the same reply again.
 */
static bool
fresh_citus(WorkItem *it)
{
	char		kind;

	if (it->state != ITEM_DONE || it->answered || !OidIsValid(it->target_table))
		return false;			/* back for its write-back: written now */
	kind = CitusTableKind(it->target_table);
	return kind == CITUS_DISTRIBUTED || kind == CITUS_REFERENCE;
}

static bool
save_first(WorkItem *it)
{
	if (!fresh_citus(it))
		return false;
	it->saved_first = true;
	return true;
}

static void
saved_for_writeback(Datum *ids, int n)
{
	Oid			types[1] = {INT8ARRAYOID};
	Datum		args[1];

	if (n == 0)
		return;
	args[0] = LlmMakeArray(ids, NULL, n, INT8OID);
	/* the attempt the call used is not counted again by the write-back's claim */
	if (RunSql("UPDATE llm.queue q SET status = 'pending', next_attempt_at = q.created_at, "
			   "finished_at = NULL, via = 'realtime', attempts = q.attempts - 1 "
			   "FROM unnest($1::int8[]) AS u(id) "
			   "WHERE q.id = u.id AND q.status = 'done' AND q.answered",
			   1, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update llm.queue");
	SlotWake(MyDatabaseId, false);
}

/*
 * Write every finished item in one transaction: the queue rows, then each
 * reply into its target, each in a subtransaction, so that a failing
 * write-back fails only its own item.
 */
static int
count_finished(ItemSet *set)
{
	dlist_iter	iter;
	int			n = 0;

	dlist_foreach(iter, &set->items)
	{
		if (in_pass(dlist_container(WorkItem, node, iter.cur)))
			n++;
	}
	return n;
}

/* Keep an item's reply in llm.cache (ItemSubxact). */
static void
cache_keep_step(void *arg)
{
	WorkItem   *it = (WorkItem *) arg;

	CacheKeep(it->call, it->reply);
}

/*
 * Write the finished items of a set, WRITEBACK_CHUNK at most in a
 * transaction: a pass's memory (each write-back prepared, the replies
 * copied into arrays) is that of a chunk, however many items finished
 * together (thousands of embeddings when fifty requests of a hundred
 * inputs answer at once).
 */
void
WritebackSet(ItemSet *set)
{
	for (;;)
	{
		dlist_head	later;
		dlist_mutable_iter iter;
		int			n = 0;
		bool		more;

		/* the finished items past the chunk wait out of the set's list */
		dlist_init(&later);
		dlist_foreach_modify(iter, &set->items)
		{
			WorkItem   *it = dlist_container(WorkItem, node, iter.cur);

			if (ItemFinished(it) && ++n > WRITEBACK_CHUNK)
			{
				dlist_delete(&it->node);
				dlist_push_tail(&later, &it->node);
			}
		}
		write_chunk(set);
		more = !dlist_is_empty(&later);
		while (!dlist_is_empty(&later))
			dlist_push_tail(&set->items, dlist_pop_head_node(&later));
		if (!more)
			break;
	}
}

/* A chunk of WritebackSet, in transactions of its own. */
static void
write_chunk(ItemSet *set)
{
	if (count_finished(set) == 0)
	{
		set->nfinished = 0;
		return;
	}
	ItemXactBegin("pg_llm: writing results");

	/*
	 * Fresh replies for Citus tables are saved first, in a transaction of
	 * their own: one that also wrote to Citus (the write-back of replies
	 * saved before) could wait on a row there, holding them unsaved.
	 */
	if (CitusPresent())
	{
		dlist_iter	iter;
		bool		any = false;

		dlist_foreach(iter, &set->items)
		{
			WorkItem   *it = dlist_container(WorkItem, node, iter.cur);

			if (ItemFinished(it) && fresh_citus(it))
				any = true;
		}
		if (any)
		{
			save_pass = true;
			PG_TRY();
			{
				WritebackSetInXact(set);
			}
			PG_FINALLY();
			{
				save_pass = false;
			}
			PG_END_TRY();
			ItemXactEnd();
			ItemXactBegin("pg_llm: writing results");
		}
	}
	WritebackSetInXact(set);
	ItemXactEnd();
}

/* The same, in the caller's transaction (SPI connected). */
void
WritebackSetInXact(ItemSet *set)
{
	dlist_mutable_iter iter;
	int			n = count_finished(set);
	HTAB	   *superseded;
	HASHCTL		ctl;
	PassState	ps;
	List	   *groups = NIL;
	ListCell   *lc;
	Datum	   *saved_ids;
	int			nsaved = 0;

	if (n == 0)
	{
		set->nfinished = 0;
		return;
	}
	saved_ids = palloc(sizeof(Datum) * n);

	/* the write-backs prepared in this pass (see writeback_prepare) */
	ctl.keysize = NAMEDATALEN * 4;
	ctl.entrysize = sizeof(PreparedEntry);
	ctl.hcxt = prepared_ctx = CurrentMemoryContext;
	prepared = hash_create("pg_llm prepared write-backs", 16, &ctl,
						   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(int64);
	ctl.hcxt = CurrentMemoryContext;
	superseded = hash_create("pg_llm superseded ids", 16, &ctl,
							 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	convert_texts(set);
	update_queue_rows(set, superseded);
	memset(&ps, 0, sizeof(ps));
	ps.failed_ids = palloc(sizeof(Datum) * n);
	ps.failed_errors = palloc(sizeof(Datum) * n);
	ps.put_off_ids = palloc(sizeof(Datum) * n);
	ps.put_off_errors = palloc(sizeof(Datum) * n);
	ps.put_off_when = palloc(sizeof(Datum) * n);
	ps.put_off_untried = palloc(sizeof(Datum) * n);
	ps.stalled_roles = palloc(sizeof(Oid) * n);
	ps.kept_ids = palloc(sizeof(Datum) * n);
	ps.kept_replies = palloc(sizeof(Datum) * n);

	/*
	 * Prepare each reply's write-back (an item whose target is gone fails
	 * here), and group the items whose statement and role are the same.
	 */
	dlist_foreach_modify(iter, &set->items)
	{
		WorkItem   *it = dlist_container(WorkItem, node, iter.cur);
		Writeback  *wb;

		if (!in_pass(it) || !it->written || it->state != ITEM_DONE ||
			!OidIsValid(it->target_table) ||
			hash_search(superseded, &it->id, HASH_FIND, NULL) != NULL)
			continue;
		if (save_first(it))
		{
			saved_ids[nsaved++] = Int64GetDatum(it->id);
			continue;
		}
		wb = palloc(sizeof(Writeback));
		if (guarded(set, it, prepare_step, wb, &ps))
			groups = group_add(groups, it, wb);
	}
	prepared = NULL;

	/*
	 * Each group at once, or (when that fails) one item at a time.  A group
	 * held up is put off whole, untried: its items come back each on its
	 * own, and the one held up again is found.
	 */
	foreach(lc, groups)
	{
		WritebackGroup *g = lfirst(lc);
		int			i;
		bool		held = false;

		if (!role_stalled(&ps, g->role) && g->n >= 2 && g->group_sql &&
			group_keys_distinct(g))
		{
			if (write_group(g, &held))
				continue;
			if (held)
				ps.stalled_roles[ps.nstalled++] = g->role;
		}
		for (i = 0; i < g->n; i++)
			(void) guarded(set, g->items[i], write_step, g->wbs[i], &ps);
	}
	fail_written_back(ps.failed_ids, ps.failed_errors, ps.nfailed);
	put_off_written_back(&ps);
	keep_vectors_written(&ps);
	saved_for_writeback(saved_ids, nsaved);

	dlist_foreach_modify(iter, &set->items)
	{
		WorkItem   *it = dlist_container(WorkItem, node, iter.cur);

		if (!in_pass(it))
			continue;
		/* a reply for the response cache: its row, in this transaction */
		if (it->state == ITEM_DONE && it->call && it->call->cache)
		{
			const char *error = ItemSubxact(cache_keep_step, it, it);

			if (error)
				elog(LOG, "pg_llm worker: the reply of queue item " INT64_FORMAT " was not cached: %s",
					 it->id, error);
		}
		/* an item whose lease was lost was someone else's to finish */
		if (it->written && !it->stalled && !it->saved_first)
			SlotCountWritten(it->state == ITEM_DONE, it->state == ITEM_FAILED);
		ItemFree(set, it);
	}
	set->nfinished = 0;
	/* the usage of these items rides in the same transaction */
	if (UsagePending() > 0)
		(void) UsageFlush();
}
