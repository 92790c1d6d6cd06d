/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  The SQL side of the queue: llm.enqueue(), with every check of the
 *	  write-back target made at enqueue time, the wake-up of the workers at
 *	  commit, and llm.worker_status().
 *
 *	  Items are inserted with the extension owner's rights (callers have no
 *	  INSERT on llm.queue), recording the calling role: the worker writes
 *	  results back with that role's rights, so nobody can write through the
 *	  worker into a table they could not update themselves.  Everything a
 *	  target can be checked for before the paid call is checked here: the
 *	  table is a permanent table, the column exists and can hold a value,
 *	  the key's values fit their columns' types, and the row exists and is
 *	  visible to the caller.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_index.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "storage/proc.h"
#include "utils/syscache.h"
#include "utils/varlena.h"
#include "commands/dbcommands.h"

#include "call.h"
#include "chat.h"
#include "citus.h"
#include "config.h"
#include "embed.h"
#include "queue.h"
#include "request.h"
#include "schema.h"
#include "runas.h"
#include "shmem.h"
#include "slots.h"
#include "target.h"
#include "usage.h"

PG_FUNCTION_INFO_V1(pg_llm_enqueue);
PG_FUNCTION_INFO_V1(pg_llm_retry);
PG_FUNCTION_INFO_V1(pg_llm_enqueue_embedding);
PG_FUNCTION_INFO_V1(pg_llm_job_check_embedding);
PG_FUNCTION_INFO_V1(pg_llm_job_check_request);

static bool wake_at_commit = false;
static bool wake_batches_at_commit = false;
static bool xact_cb_registered = false;

/* At commit of a transaction that enqueued, wake this database's workers. */
static void
queue_xact_cb(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT && wake_batches_at_commit)
		SlotWake(MyDatabaseId, true);
	else if (event == XACT_EVENT_COMMIT && wake_at_commit)
		SlotWake(MyDatabaseId, false);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		wake_at_commit = wake_batches_at_commit = false;
}

/* Wake this database's workers when the transaction commits. */
static void
wake_workers_at_commit(const char *via)
{
	if (!xact_cb_registered)
	{
		RegisterXactCallback(queue_xact_cb, NULL);
		xact_cb_registered = true;
	}
	wake_at_commit = true;
	if (strcmp(via, "batch_api") == 0)
		wake_batches_at_commit = true;
}

/*
 * Can a column of this type take a reply?  Any type with an input
 * function: the reply is read by it, as a literal would be.  Pseudo-types
 * cannot be stored.
 */
static bool
storable_type(Oid typid)
{
	return get_typtype(getBaseType(typid)) != TYPTYPE_PSEUDO;
}

/*
 * Do the key columns contain all the columns of a unique index (without
 * expressions or a predicate)?  Then they identify at most one row.
 */
static bool
keys_identify_one_row(Relation rel, Bitmapset *keys)
{
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	bool		ok = false;

	foreach(lc, indexes)
	{
		HeapTuple	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(lfirst_oid(lc)));
		Form_pg_index idx;
		int			i;
		bool		covered = true;

		if (!HeapTupleIsValid(tup))
			continue;
		idx = (Form_pg_index) GETSTRUCT(tup);
		if (!idx->indisunique || !idx->indisvalid ||
			!heap_attisnull(tup, Anum_pg_index_indexprs, NULL) ||
			!heap_attisnull(tup, Anum_pg_index_indpred, NULL))
			covered = false;
		for (i = 0; covered && i < idx->indnkeyatts; i++)
			if (!bms_is_member(idx->indkey.values[i], keys))
				covered = false;
		ReleaseSysCache(tup);
		if (covered)
		{
			ok = true;
			break;
		}
	}
	list_free(indexes);
	return ok;
}

/* A row lookup, run as the caller with search_path pinned (RunAs). */
typedef struct RowProbe
{
	char	   *sql;
	TargetArgs *args;
	Datum	   *values;
	bool		lock;			/* FOR KEY SHARE: not read-only */
	bool		found;
} RowProbe;

static void
probe_row(void *arg)
{
	RowProbe   *p = (RowProbe *) arg;

	if (RunSql(p->sql, p->args->nargs, p->args->types, p->values, NULL, !p->lock, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look for the target row");
	p->found = SPI_processed > 0;
}

/*
 * The table-level checks of a write-back target, for a role: a permanent
 * table (not a view, not another session's temporary table) in a schema
 * the role may use, and a column that exists and can be written (not
 * generated, not an identity column GENERATED ALWAYS) with a type that
 * can hold a reply.  Returns the column's number.
 */
static AttrNumber
check_target_table(Relation rel, const char *relname, const char *column, Oid role)
{
	Oid			relid = RelationGetRelid(rel);
	Oid			nsp = RelationGetNamespace(rel);
	AttrNumber	attnum;
	Oid			atttype;
	Form_pg_attribute a;

	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("target %s is not a table", relname),
				 errhint("Replies are written into tables; give the table behind the view.")));
	if (rel->rd_rel->relpersistence == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("target %s is a temporary table", quote_identifier(RelationGetRelationName(rel))),
				 errdetail("The worker runs in a session of its own and cannot reach another session's temporary tables."),
				 errhint("Write replies into a permanent (or unlogged) table.")));
	if (LlmNamespaceAclCheck(nsp, role, ACL_USAGE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for schema %s", quote_identifier(get_namespace_name(nsp))),
				 errdetail("Role \"%s\" has no USAGE on the schema of target %s.",
						   GetUserNameFromId(role, false), relname),
				 errhint("The worker writes replies back with the rights of the role that enqueued them.")));

	attnum = get_attnum(relid, column);
	if (attnum == InvalidAttrNumber || attnum < 0)
	{
		char	   *hint = TargetColumnHint(rel, column, "target_column");

		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of table %s does not exist", column, relname),
				 hint ? errhint("%s", hint) :
				 errhint("target_column names the column the reply is written into.")));
	}
	atttype = get_atttype(relid, attnum);
	if (!storable_type(atttype))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of table %s cannot take a reply", column, relname),
				 errdetail("Its type is %s.", format_type_be(atttype))));
	a = TupleDescAttr(RelationGetDescr(rel), attnum - 1);
	if (a->attgenerated || a->attidentity == ATTRIBUTE_IDENTITY_ALWAYS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("column \"%s\" of table %s is generated", column, relname),
				 a->attidentity == ATTRIBUTE_IDENTITY_ALWAYS ?
				 errdetail("It is an identity column GENERATED ALWAYS, which UPDATE cannot set.") : 0,
				 errhint("Write replies into a column that can be updated.")));
	return attnum;
}

/*
 * The key-level checks: the role may read the key columns and update the
 * column, and the key columns identify one row.
 */
static void
check_target_keys(Relation rel, const char *relname, AttrNumber attnum, const char *column,
				  Bitmapset *keys, Oid role)
{
	Oid			relid = RelationGetRelid(rel);
	int			k = -1;

	while ((k = bms_next_member(keys, k)) >= 0)
	{
		if (pg_class_aclcheck(relid, role, ACL_SELECT) != ACLCHECK_OK &&
			pg_attribute_aclcheck(relid, k, role, ACL_SELECT) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to read column \"%s\" of table %s",
							get_attname(relid, k, false), relname),
					 errhint("The worker finds the row with the rights of the role that enqueued it.")));
	}
	if (!keys_identify_one_row(rel, keys))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("target_key does not identify one row of table %s", relname),
				 errdetail("No primary key or unique index of the table is made of the key's columns."),
				 errhint("Use the primary key's columns, such as '{\"id\": 17}'.")));
	if (pg_class_aclcheck(relid, role, ACL_UPDATE) != ACLCHECK_OK &&
		pg_attribute_aclcheck(relid, attnum, role, ACL_UPDATE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to update column \"%s\" of table %s", column, relname),
				 errhint("The worker writes replies back with the rights of the role that enqueued them.")));
}

/*
 * Check a write-back target for the calling role: the table and the
 * column, a key of columns that identify one row and whose values fit
 * their types, the rights to update the column and read the keys, and the
 * row itself, which the caller must see and may update (row-level
 * security: the row is looked for with FOR KEY SHARE, which applies the
 * UPDATE policies too).  A table that others inherit from is looked at
 * alone (ONLY), as the write-back writes it.
 */
static void
check_target(Oid relid, const char *column, Jsonb *key)
{
	Relation	rel;
	AttrNumber	attnum;
	Bitmapset  *keys = NULL;
	Oid			role = GetUserId();
	char	   *relname;
	TargetArgs	args;
	StringInfoData sql;
	Datum		values[TARGET_MAX_ARGS];
	RowProbe	probe;
	bool		policies;

	rel = relation_open(relid, AccessShareLock);
	relname = TargetRelationName(rel);
	attnum = check_target_table(rel, relname, column, role);

	/* the key: its columns, their values as their types, one row */
	TargetArgsInit(&args);
	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT 1 FROM %s%s AS t WHERE ",
					 rel->rd_rel->relkind == RELKIND_RELATION ? "ONLY " : "", relname);
	TargetKeyClause(rel, relname, key, &args, &sql, &keys, "$");
	check_target_keys(rel, relname, attnum, column, keys, role);

	/* the key's values must read as their columns' types */
	PG_TRY();
	{
		TargetValues(&args, values, 0);
	}
	PG_CATCH();
	{
		ErrorData  *edata = CopyErrorData();

		FlushErrorState();
		ereport(ERROR,
				(errcode(edata->sqlerrcode),
				 errmsg("target_key does not fit the key columns of table %s: %s", relname, edata->message),
				 errhint("Give each key column a value of its type, such as '{\"id\": 17}'.")));
	}
	PG_END_TRY();

	/* and the row must be there, for the caller, to read and to update */
	policies = check_enable_rls(relid, InvalidOid, true) == RLS_ENABLED;
	/* in a Citus table: looked up a chunk of keys at a time */
	if (!policies && CitusKeyDefer(rel, relname, key, &args, role))
	{
		relation_close(rel, AccessShareLock);
		return;
	}
	probe.sql = psprintf("/* %s */ %s LIMIT 1%s", args.signature.data, sql.data,
						 policies ? " FOR KEY SHARE" : "");
	probe.args = &args;
	probe.values = values;
	probe.lock = policies;
	probe.found = false;
	RunAs(role, true, probe_row, &probe);
	if (!probe.found)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("target row %s of table %s does not exist", JsonbToCString(NULL, &key->root, 0), relname),
				 policies ?
				 errdetail("Or row-level security hides it from role \"%s\", for reading or for updating.",
						   GetUserNameFromId(role, false)) :
				 errdetail("Or row-level security hides it from role \"%s\".", GetUserNameFromId(role, false)),
				 errhint("Insert the row first: the worker updates it with the reply.")));
	relation_close(rel, AccessShareLock);
}

/*
 * The cap on a role's queued items (llm.set_budget's max_queued), held at
 * the one place items enter the queue (llm.enqueue and every job).  For a
 * role with a cap, each transaction that queues locks the role's budget
 * row (so that two sessions cannot both fill the last places) and counts
 * the role's pending and running items once, then counts along.
 */
#define CAP_ROLES 8
static LocalTransactionId cap_xact = InvalidLocalTransactionId;
static int	cap_nroles = 0;
static Oid	cap_role[CAP_ROLES];
static int64 cap_queued[CAP_ROLES];

typedef struct QueuedCount
{
	Oid			role;
	bool		count;
	int64		n;
} QueuedCount;

/* Lock the role's budget row, and count its items if asked (as the owner). */
static void
lock_and_count(void *arg)
{
	QueuedCount *c = (QueuedCount *) arg;
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(c->role)};
	bool		isnull;

	if (RunSql("SELECT 1 FROM llm.budget WHERE role_oid = $1 FOR NO KEY UPDATE",
			   1, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not lock the budget of role %u", c->role);
	if (!c->count)
		return;

	/*
	 * Counted with the latest snapshot, taken after the lock: the items of
	 * a session that held the lock before and has committed are seen,
	 * whatever this transaction's isolation level.
	 */
	PushActiveSnapshot(GetLatestSnapshot());
	PG_TRY();
	{
		if (RunSql("SELECT pg_catalog.count(*) FROM llm.queue "
				   "WHERE enqueued_by = $1 AND status IN ('pending', 'running')",
				   1, types, values, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not count queued items");
	}
	PG_FINALLY();
	{
		PopActiveSnapshot();
	}
	PG_END_TRY();
	c->n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * A subtransaction rolled back may have taken the lock, and items, with
 * it: the roles are counted again, under the lock taken again.
 */
static void
cap_subxact_cb(SubXactEvent event, SubTransactionId mySubid, SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		cap_nroles = 0;
}

/* The slot of a role counted in this transaction, or -1. */
static int
cap_slot(Oid role)
{
	int			i;

	if (cap_xact != LlmMyLocalXid())
	{
		cap_xact = LlmMyLocalXid();
		cap_nroles = 0;
	}
	for (i = 0; i < cap_nroles; i++)
		if (cap_role[i] == role)
			return i;
	return -1;
}

/*
 * How many more items a role may queue now (-1: no cap); *max_queued is
 * its cap.
 */
static int64
queue_room(Oid role, int64 *max_queued)
{
	double		usd;
	int64		calls;
	QueuedCount c;
	int			i;

	static bool registered = false;

	if (!ConfigBudget(role, &usd, &calls, max_queued) || *max_queued < 0)
		return -1;
	if (!registered)
	{
		RegisterSubXactCallback(cap_subxact_cb, NULL);
		registered = true;
	}
	i = cap_slot(role);
	c.role = role;
	c.count = (i < 0);
	c.n = 0;
	RunAsOwner(lock_and_count, &c);
	if (i < 0)
	{
		if (cap_nroles == CAP_ROLES)
			cap_nroles--;		/* the last one is counted again when needed */
		i = cap_nroles++;
		cap_role[i] = role;
		cap_queued[i] = c.n;
	}
	return Max(*max_queued - cap_queued[i], 0);
}

/* Items of a role queued (n > 0) or removed (n < 0) in this transaction. */
static void
queue_counted(Oid role, int64 n)
{
	int			i = cap_slot(role);

	if (i >= 0)
		cap_queued[i] = Max(cap_queued[i] + n, 0);
}

/* llm.enqueue's item: refused when the role's queue is full. */
static void
check_queue_cap(Oid role)
{
	int64		max_queued;
	int64		room = queue_room(role, &max_queued);

	if (room == 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("role \"%s\" may have at most " INT64_FORMAT " items queued",
						GetUserNameFromId(role, false), max_queued),
				 errdetail("It has " INT64_FORMAT " pending or running.", cap_queued[cap_slot(role)]),
				 errhint("Wait for the queue to drain, or an administrator can raise the cap with llm.set_budget(role, ..., max_queued => ...).")));
	if (room > 0)
		queue_counted(role, 1);
}

/* Is an item sent through a batch API ("batch_api") or realtime?  Else refused. */
static bool
via_batch(const char *via)
{
	if (strcmp(via, "realtime") == 0)
		return false;
	if (strcmp(via, "batch_api") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("via must be \"realtime\" or \"batch_api\""),
				 errhint("batch_api sends the item through its provider's batch API, at the batch price.")));
	return true;
}

/*
 * How an item is sent: realtime, or through its provider's batch API,
 * which the first route of its model must have.
 */
static void
check_via(const char *via, const char *model)
{
	List	   *routes;
	const LlmRoute *first;

	/* the model must have a route (or pass through) now, not in the worker */
	routes = ConfigRoutes(model);
	if (!via_batch(via))
		return;
	first = linitial(routes);
	if (strcmp(first->provider->batch_api, "none") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("provider \"%s\" of model \"%s\" has no batch API", first->provider->name, model),
				 errhint("An administrator can set one with llm.alter_provider('%s', options => '{\"batch_api\": \"inline\"}') (or \"openai\", \"anthropic\"); or enqueue with via => 'realtime'.",
						 first->provider->name)));
}

/* Is this database in llm.database (a worker drains its queue)? */
static bool
database_listed(void)
{
	char	   *raw = pstrdup(llm_worker_databases ? llm_worker_databases : "");
	char	   *me = get_database_name(MyDatabaseId);
	List	   *names = NIL;
	ListCell   *lc;

	if (me == NULL || !SplitIdentifierString(raw, ',', &names))
		return true;			/* the worker's own complaint is in the log */
	foreach(lc, names)
		if (strcmp((char *) lfirst(lc), me) == 0)
			return true;
	return false;
}

/*
 * An item nobody will ever send is refused; one that waits for a worker
 * the configuration does not start is warned about (once a session),
 * naming the setting to change.
 */
static void
check_served(void)
{
	static bool warned = false;

	/* an enqueue that Citus pushed down to a worker node */
	CitusGuard(CITUS_USE_ENQUEUE, "llm.enqueue");
	if (!LlmShmemPresent())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no pg_llm worker can send queued items: pg_llm is not in shared_preload_libraries"),
				 errdetail("An item enqueued now would stay pending forever."),
				 errhint("Add pg_llm to shared_preload_libraries and this database to llm.database, then restart the server; or call llm.chat() directly.")));
	if (!warned && !database_listed())
	{
		warned = true;
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no pg_llm worker serves database \"%s\"", get_database_name(MyDatabaseId)),
				 errdetail("llm.database is \"%s\": the items enqueued here stay pending until a worker serves this database.",
						   llm_worker_databases ? llm_worker_databases : ""),
				 errhint("Add \"%s\" to llm.database and restart the server.", get_database_name(MyDatabaseId))));
	}
}

/* The INSERT of a queue item, run as the extension owner (RunAs). */
typedef struct EnqueueInsert
{
	Datum		values[12];
	char		nulls[12];
	int64		id;
	bool		found;			/* find_queued found the same request */
	int64		dropped;		/* drop_queued removed so many */
} EnqueueInsert;

/*
 * The types of EnqueueInsert's values, in the order of insert_item's
 * columns (prompt, model, system, options, target_table, target_column,
 * target_key, enqueued_by, via, spread, provider, task): find_queued
 * compares the same values.
 */
static Oid	enqueue_types[12] = {
	TEXTOID, TEXTOID, TEXTOID, JSONBOID, OIDOID, TEXTOID,
	JSONBOID, OIDOID, TEXTOID, BOOLOID, TEXTOID, TEXTOID
};

/*
 * The caller's item with the same target (table, column, key) and the same
 * request (prompt, model, system prompt, options, via) that is still
 * pending, running or submitted: its id in e->id, e->found.  Jobs' items
 * are the jobs' own (they supersede their rows' items themselves).
 */
static void
find_queued(void *arg)
{
	EnqueueInsert *e = (EnqueueInsert *) arg;
	bool		isnull;

	if (RunSql("SELECT q.id FROM llm.queue q "
			   "WHERE q.target_table = $5 AND q.target_key = $7 AND q.job IS NULL "
			   "AND q.status IN ('pending', 'running', 'submitted') "
			   "AND q.target_column IS NOT DISTINCT FROM $6::pg_catalog.name AND q.enqueued_by = $8 "
			   "AND q.prompt = $1 AND q.model = $2 AND q.system IS NOT DISTINCT FROM $3 "
			   "AND q.options IS NOT DISTINCT FROM $4 AND q.via = $9 "
			   "AND q.provider IS NOT DISTINCT FROM $11 AND q.task = $12 "
			   "ORDER BY q.id LIMIT 1",
			   12, enqueue_types, e->values, e->nulls, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look for queued items");
	e->found = SPI_processed > 0;
	if (e->found)
		e->id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Remove the caller's pending items for the same target (whatever their
 * request): a newer one replaces them, as a job's trigger does for its
 * rows.  Items already sent (running, submitted) are not called back.
 */
static void
drop_queued(void *arg)
{
	EnqueueInsert *e = (EnqueueInsert *) arg;
	Oid			types[4] = {OIDOID, TEXTOID, JSONBOID, OIDOID};
	Datum		values[4] = {e->values[4], e->values[5], e->values[6], e->values[7]};
	char		nulls[4] = {e->nulls[4], e->nulls[5], e->nulls[6], e->nulls[7]};

	if (RunSql("DELETE FROM llm.queue q "
			   "WHERE q.target_table = $1 AND q.target_key = $3 AND q.job IS NULL "
			   "AND q.status = 'pending' AND q.target_column IS NOT DISTINCT FROM $2::pg_catalog.name "
			   "AND q.enqueued_by = $4",
			   4, types, values, nulls, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not replace queued items");
	e->dropped = (int64) SPI_processed;
}

static void
insert_item(void *arg)
{
	EnqueueInsert *e = (EnqueueInsert *) arg;
	bool		isnull;

	if (RunSql("INSERT INTO llm.queue (prompt, model, system, options, "
			   "target_table, target_column, target_key, enqueued_by, via, spread, provider, task) "
			   "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
			   12, enqueue_types, e->values, e->nulls, false, 1) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not insert into llm.queue");
	e->id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Queue an item of the caller's (within the caller's cap), the workers
 * woken at commit for how it is sent: its id.
 */
static int64
enqueue_insert(EnqueueInsert *e, Oid caller, const char *via)
{
	check_queue_cap(caller);
	RunAsOwner(insert_item, e);
	wake_workers_at_commit(via);
	return e->id;
}

/*
 * The request of a queued item (llm.enqueue's, or every item of a job),
 * checked when it is queued: its options, json_schema included (a bad
 * schema is refused now, not when the worker gets to it), and its size.
 * The prompt (of prompt_len bytes, not necessarily terminated), system
 * and options are UTF-8.
 */
static LlmRequest *
check_queued_request(const char *prompt, size_t prompt_len, const char *system,
					 const char *options)
{
	return RequestFromPromptText(prompt, prompt_len, system, system ? strlen(system) : 0, options);
}

/*
 * A write-back spread over columns: an answer with a shape, each property
 * of its schema a column of the target the caller may update, the row
 * there (each checked as a target of its own).
 */
static void
check_spread(LlmRequest *req, Oid relid, Jsonb *key)
{
	List	   *props;
	ListCell   *lc;

	props = SchemaPropertyNames(req);
	if (props == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an answer spread over columns needs a json_schema with properties"),
				 errhint("Name the columns to write as the properties of the schema, or give target_column.")));
	foreach(lc, props)
		check_target(relid, LlmToServerEncoding(lfirst(lc), strlen(lfirst(lc))), key);
}

/*
 * llm.enqueue(prompt, model, system, target_table, target_column,
 *			   target_key, options, via, if_queued) returns bigint
 */
Datum
pg_llm_enqueue(PG_FUNCTION_ARGS)
{
	char	   *prompt;
	size_t		prompt_len = 0;
	char	   *system;
	char	   *model = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	bool		has_table = !PG_ARGISNULL(3);
	bool		has_column = !PG_ARGISNULL(4);
	bool		has_key = !PG_ARGISNULL(5);
	const char *via = (PG_NARGS() > 7 && !PG_ARGISNULL(7)) ?
		text_to_cstring(PG_GETARG_TEXT_PP(7)) : "realtime";
	const char *provider = (PG_NARGS() > 9 && !PG_ARGISNULL(8)) ?
		text_to_cstring(PG_GETARG_TEXT_PP(8)) : NULL;
	const char *if_queued = (PG_NARGS() > 9 && !PG_ARGISNULL(9)) ?
		text_to_cstring(PG_GETARG_TEXT_PP(9)) : "skip";
	bool		spread;
	Oid			caller = GetUserId();
	LlmRequest *req;
	EnqueueInsert e;
	int			i;

	/* a NULL prompt queues nothing: NULL in, NULL out */
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	/* the prompt's own bytes, not a copy: a long one is refused or queued as it is */
	prompt = LlmTextToUtf8(PG_GETARG_TEXT_PP(0), &prompt_len);
	LlmCheckPrompt(LlmBlank(prompt, prompt_len) ? "" : "-");
	if (strcmp(if_queued, "skip") != 0 && strcmp(if_queued, "add") != 0 &&
		strcmp(if_queued, "replace") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("if_queued must be \"skip\", \"add\" or \"replace\""),
				 errhint("skip (the default) returns the id of the same request already waiting for the same target; add queues it again; replace removes the target's pending items first.")));
	check_served();
	model = (char *) LlmResolveModel(model, NULL);
	check_via(via, model);
	if (provider)
		(void) QueueRoutesOn(model, provider);

	/* options and size are checked now, not when the worker gets to them */
	system = PG_ARGISNULL(2) ? NULL : LlmToUtf8(text_to_cstring(PG_GETARG_TEXT_PP(2)));
	req = check_queued_request(prompt, prompt_len, system,
							   PG_ARGISNULL(6) ? NULL : LlmToUtf8(JsonbToCString(NULL, &PG_GETARG_JSONB_P(6)->root, 0)));

	/*
	 * An answer with a shape and no target_column is spread over the
	 * target's columns named by its properties.
	 */
	spread = has_table && has_key && !has_column && RequestHasSchema(req);
	if (spread)
		check_spread(req, PG_GETARG_OID(3), PG_GETARG_JSONB_P(5));
	else if (has_table || has_column || has_key)
	{
		if (!(has_table && has_column && has_key))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("target_table, target_column and target_key go together"),
					 errhint("Give all three to write the reply back into a row, or none (with a json_schema, target_column NULL spreads the answer's properties over the columns of the same names).")));
		check_target(PG_GETARG_OID(3), NameStr(*PG_GETARG_NAME(4)), PG_GETARG_JSONB_P(5));
	}

	memset(e.nulls, ' ', sizeof(e.nulls));
	e.values[0] = PG_GETARG_DATUM(0);
	e.values[1] = CStringGetTextDatum(model);
	e.values[2] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	e.values[3] = PG_ARGISNULL(6) ? (Datum) 0 : PG_GETARG_DATUM(6);
	e.values[4] = has_table ? PG_GETARG_DATUM(3) : (Datum) 0;
	e.values[5] = has_column ? CStringGetTextDatum(NameStr(*PG_GETARG_NAME(4))) : (Datum) 0;
	e.values[6] = has_key ? PG_GETARG_DATUM(5) : (Datum) 0;
	e.values[7] = ObjectIdGetDatum(caller);
	e.values[8] = CStringGetTextDatum(via);
	e.nulls[8] = ' ';
	e.values[9] = BoolGetDatum(spread);
	e.nulls[9] = ' ';
	e.values[10] = provider ? CStringGetTextDatum(provider) : (Datum) 0;
	e.nulls[10] = provider ? ' ' : 'n';
	e.values[11] = CStringGetTextDatum("chat");
	e.nulls[11] = ' ';
	for (i = 0; i < 7; i++)
		if ((i == 2 && PG_ARGISNULL(2)) || (i == 3 && PG_ARGISNULL(6)) ||
			(i == 4 && !has_table) || (i == 5 && !has_column) || (i == 6 && !has_key))
			e.nulls[i] = 'n';

	/*
	 * The same request already waiting for the same target is not paid
	 * for twice (an enqueue run again before the first has drained).
	 */
	if (has_table && strcmp(if_queued, "skip") == 0)
	{
		e.found = false;
		RunAsOwner(find_queued, &e);
		if (e.found)
			PG_RETURN_INT64(e.id);
	}
	else if (has_table && strcmp(if_queued, "replace") == 0)
	{
		e.dropped = 0;
		RunAsOwner(drop_queued, &e);
		queue_counted(caller, -e.dropped);
	}
	PG_RETURN_INT64(enqueue_insert(&e, caller, via));
}

/*
 * A statement kept for this process and planned again for its values at
 * each execution (a plan for the queue as it was when the statement was
 * first run would not do when it has grown since).
 */
static SPIPlanPtr
custom_plan(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	p = SPI_prepare_cursor(sql, nargs, types, CURSOR_OPT_CUSTOM_PLAN);

	if (p == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql, SPI_result_code_string(SPI_result));
	SPI_keepplan(p);
	return p;
}

/* A job's items, inserted as the extension owner (RunAs). */
typedef struct JobInsert
{
	const QueueJob *job;
	Datum		prompts;
	Datum		keys;
	bool		supersede;
	int64		room;			/* -1: no cap */
	int64		deleted;
	int64		candidates;		/* rows that would be queued without a cap */
	int64		inserted;
	int64		max_queued;
} JobInsert;

static void
job_delete_superseded(void *arg)
{
	JobInsert  *ji = (JobInsert *) arg;
	Oid			types[3] = {INT8OID, OIDOID, JSONBARRAYOID};
	Datum		values[3];
	static SPIPlanPtr plan = NULL;

	values[0] = Int64GetDatum(ji->job->id);
	values[1] = ObjectIdGetDatum(ji->job->target);
	values[2] = ji->keys;

	/* planned for its values at each call: see job_insert */
	if (plan == NULL)
		plan = custom_plan("DELETE FROM llm.queue q USING pg_catalog.unnest($3) AS k(key) "
						   "WHERE q.job_id = $1 AND q.status = 'pending' AND q.target_table = $2 "
						   "AND q.target_key OPERATOR(pg_catalog.=) k.key", 3, types);
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not replace the pending items of job %s", ji->job->name);
	ji->deleted = (int64) SPI_processed;
}

static void
job_insert(void *arg)
{
	JobInsert  *ji = (JobInsert *) arg;
	const QueueJob *job = ji->job;
	Oid			types[16] = {TEXTARRAYOID, JSONBARRAYOID, TEXTOID, TEXTOID, JSONBOID, OIDOID, TEXTOID,
		OIDOID, TEXTOID, INT8OID, TEXTOID, BOOLOID, INT8OID, TEXTOID, TEXTOID, BOOLOID};
	Datum		values[16];
	char		nulls[16];
	bool		isnull;
	static SPIPlanPtr uncapped = NULL;
	static SPIPlanPtr capped = NULL;

	memset(nulls, ' ', sizeof(nulls));
	values[0] = ji->prompts;
	values[1] = ji->keys;
	values[2] = CStringGetTextDatum(job->model);
	values[3] = job->system ? CStringGetTextDatum(job->system) : (Datum) 0;
	nulls[3] = job->system ? ' ' : 'n';
	values[4] = job->options ? DirectFunctionCall1(jsonb_in, CStringGetDatum(job->options)) : (Datum) 0;
	nulls[4] = job->options ? ' ' : 'n';
	values[5] = ObjectIdGetDatum(job->target);
	/* an answer spread over columns has no target column */
	values[6] = job->column ? CStringGetTextDatum(job->column) : (Datum) 0;
	nulls[6] = job->column ? ' ' : 'n';
	values[7] = ObjectIdGetDatum(job->owner);
	values[8] = CStringGetTextDatum(job->name);
	values[9] = Int64GetDatum(job->id);
	values[10] = CStringGetTextDatum(job->via);
	values[11] = BoolGetDatum(ji->supersede);
	values[12] = Int64GetDatum(ji->room);
	nulls[12] = ji->room < 0 ? 'n' : ' ';
	values[13] = job->provider ? CStringGetTextDatum(job->provider) : (Datum) 0;
	nulls[13] = job->provider ? ' ' : 'n';
	values[14] = CStringGetTextDatum(job->embed ? "embed" : "chat");
	values[15] = BoolGetDatum(job->spread_columns != NIL);

	/*
	 * Planned for its values at each call (parsed once): one plan kept
	 * from the first chunks of a run, or the first rows of a statement,
	 * when the queue held none of the job's items, would check each key of
	 * the later ones against all of them one by one.  A row with a
	 * pending, running or submitted item of the job is not queued again
	 * by run_job (the triggers replaced theirs already).
	 */
	if (ji->room < 0)
	{
		/* no cap: every row is queued */
		if (uncapped == NULL)
			uncapped = custom_plan("INSERT INTO llm.queue (prompt, model, system, options, target_table, "
								   "target_column, target_key, enqueued_by, job, job_id, via, provider, task, input_hash, "
								   "spread) "
								   "SELECT u.prompt, $3, $4, $5, $6, $7, u.key, $8, $9, $10, $11, $14, $15, "
								   "CASE WHEN $15 OPERATOR(pg_catalog.=) 'embed' "
								   "THEN pg_catalog.hashtextextended(u.prompt, 0) END, $16 "
								   "FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS u(prompt, key) "
								   "WHERE u.prompt OPERATOR(pg_catalog.~) E'[^ \\\\t\\\\n\\\\r\\\\v\\\\f]' AND u.key IS NOT NULL "
								   "AND ($12 OR NOT EXISTS (SELECT 1 FROM llm.queue q WHERE q.job_id = $10 "
								   "AND q.status IN ('pending', 'running', 'submitted') "
								   "AND q.target_key OPERATOR(pg_catalog.=) u.key))",
								   16, types);
		if (SPI_execute_plan(uncapped, values, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not queue the items of job %s", job->name);
		ji->candidates = ji->inserted = (int64) SPI_processed;
		return;
	}
	/* up to the cap, in the order of the rows; how many would have been */
	if (capped == NULL)
		capped = custom_plan("WITH c AS (SELECT u.prompt, u.key, u.o "
							 "FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) WITH ORDINALITY AS u(prompt, key, o) "
							 "WHERE u.prompt OPERATOR(pg_catalog.~) E'[^ \\\\t\\\\n\\\\r\\\\v\\\\f]' AND u.key IS NOT NULL "
							 "AND ($12 OR NOT EXISTS (SELECT 1 FROM llm.queue q WHERE q.job_id = $10 "
							 "AND q.status IN ('pending', 'running', 'submitted') "
							 "AND q.target_key OPERATOR(pg_catalog.=) u.key))), "
							 "i AS (INSERT INTO llm.queue (prompt, model, system, options, target_table, "
							 "target_column, target_key, enqueued_by, job, job_id, via, provider, task, input_hash, "
							 "spread) "
							 "SELECT c.prompt, $3, $4, $5, $6, $7, c.key, $8, $9, $10, $11, $14, $15, "
							 "CASE WHEN $15 OPERATOR(pg_catalog.=) 'embed' "
							 "THEN pg_catalog.hashtextextended(c.prompt, 0) END, $16 "
							 "FROM c ORDER BY c.o LIMIT $13 RETURNING 1) "
							 "SELECT (SELECT pg_catalog.count(*) FROM c), (SELECT pg_catalog.count(*) FROM i)",
							 16, types);
	if (SPI_execute_plan(capped, values, nulls, false, 0) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not queue the items of job %s", job->name);
	ji->candidates = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	ji->inserted = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
}

/*
 * Replace the pending items of the rows (the triggers), then queue the new
 * ones up to the owner's cap, as the extension owner (RunAs).
 */
static void
job_queue(void *arg)
{
	JobInsert  *ji = (JobInsert *) arg;

	if (ji->supersede)
	{
		job_delete_superseded(ji);
		queue_counted(ji->job->owner, -ji->deleted);
	}
	ji->room = queue_room(ji->job->owner, &ji->max_queued);
	job_insert(ji);
}

/*
 * Queue a job's items: the one way a job's rows enter the queue (its
 * triggers and llm.run_job, in src/jobs.c, after reading the rows as the
 * job's owner).  prompts (text[]) and keys (jsonb[]) are n rows of the
 * job's target; an empty or blank prompt is not queued.  With supersede (the
 * triggers), a pending item of the same row is replaced; otherwise
 * (run_job) a row with an item not yet answered is skipped.  The target is
 * checked for the job's owner as llm.enqueue checks it, and the owner's
 * cap on queued items holds: the rows past it are not queued, with a
 * warning, and *full is set.  Returns the number of items queued.
 */
int64
QueueAddJobItems(const QueueJob *job, Datum prompts, Datum keys, int n, bool supersede,
				 bool *target_checked, bool *full)
{
	JobInsert	ji;
	Relation	rel;
	char	   *relname;
	AttrNumber	attnum;
	Bitmapset  *keycols = NULL;
	ListCell   *lc;
	int64		max_queued = -1;

	*full = false;
	if (n == 0)
		return 0;

	/*
	 * The target, as llm.enqueue checks it, for the owner: once a statement
	 * (*target_checked: a job's row triggers come here for every row of a
	 * statement).
	 */
	if (*target_checked)
		goto checked;
	rel = relation_open(job->target, AccessShareLock);
	relname = TargetRelationName(rel);
	foreach(lc, job->key_columns)
	{
		AttrNumber	k = get_attnum(job->target, (char *) lfirst(lc));

		if (k <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("key column \"%s\" of table %s does not exist", (char *) lfirst(lc), relname),
					 errhint("Drop job \"%s\" and create it again.", job->name)));
		keycols = bms_add_member(keycols, k);
	}
	/* its column, or each column its answers are spread over */
	foreach(lc, job->spread_columns ? job->spread_columns : list_make1((char *) job->column))
	{
		const char *column = lfirst(lc);

		attnum = check_target_table(rel, relname, column, job->owner);
		check_target_keys(rel, relname, attnum, column, keycols, job->owner);
	}
	relation_close(rel, AccessShareLock);
	*target_checked = true;

checked:

	memset(&ji, 0, sizeof(ji));
	ji.job = job;
	ji.prompts = prompts;
	ji.keys = keys;
	ji.supersede = supersede;
	ji.max_queued = -1;
	RunAsOwner(job_queue, &ji);
	max_queued = ji.max_queued;
	if (ji.room >= 0)
	{
		queue_counted(job->owner, ji.inserted);
		if (ji.candidates > ji.inserted)
		{
			*full = true;
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("role \"%s\" may have at most " INT64_FORMAT " items queued: rows of job \"%s\" were left unqueued",
							GetUserNameFromId(job->owner, false), max_queued, job->name),
					 errhint("llm.run_job('%s') queues them once the queue has room, or an administrator can raise the cap with llm.set_budget(role, ..., max_queued => ...).",
							 job->name)));
		}
	}
	if (ji.inserted > 0)
		wake_workers_at_commit(job->via);
	return ji.inserted;
}

static void check_vector_column(Oid relid, const char *column, int dims);
static void check_embed_via(const char *via, const char *model);

/* The lookup of QueueJobInputCurrent, as the extension owner (RunAs). */
typedef struct InputCurrent
{
	const QueueJob *job;
	const char *input;
	Datum		key;
	bool		current;
} InputCurrent;

static void
input_current(void *arg)
{
	InputCurrent *c = (InputCurrent *) arg;
	Oid			types[4] = {INT8OID, JSONBOID, TEXTOID, OIDOID};
	Datum		values[4];
	bool		isnull;
	Datum		v;

	values[0] = Int64GetDatum(c->job->id);
	values[1] = c->key;
	values[2] = CStringGetTextDatum(c->input);
	values[3] = ObjectIdGetDatum(c->job->target);
	if (RunSql("SELECT q.status OPERATOR(pg_catalog.<>) 'failed' "
			   "AND q.input_hash OPERATOR(pg_catalog.=) pg_catalog.hashtextextended($3, 0) "
			   "FROM llm.queue q WHERE q.job_id = $1 AND q.target_key OPERATOR(pg_catalog.=) $2 "
			   "AND q.target_table = $4 ORDER BY q.id DESC LIMIT 1",
			   4, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the items of job %s", c->job->name);
	c->current = false;
	if (SPI_processed == 1)
	{
		v = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		c->current = !isnull && DatumGetBool(v);
	}
}

/*
 * Is a row's rendered input (UTF-8 or not: it is hashed as the queue keeps
 * it) the one the job's latest item for the row was queued with, and that
 * item not failed?  The hash kept with an embedding job's items tells.
 */
bool
QueueJobInputCurrent(const QueueJob *job, const char *input, Datum key)
{
	InputCurrent c;

	if (!job->embed || input[0] == '\0')
		return false;
	c.job = job;
	c.input = input;
	c.key = key;
	c.current = false;
	RunAsOwner(input_current, &c);
	return c.current;
}

/*
 * llm._job_check_embedding(model, options, via, target, result_column)
 * returns text: an embedding job's model (resolved;
 * llm.default_embedding_model if NULL), options, way of sending and
 * result column, checked as llm.enqueue_embedding checks an item's.
 */
Datum
pg_llm_job_check_embedding(PG_FUNCTION_ARGS)
{
	const char *model = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	const char *options = PG_ARGISNULL(1) ? NULL :
		LlmToUtf8(JsonbToCString(NULL, &PG_GETARG_JSONB_P(1)->root, 0));
	const char *via = PG_ARGISNULL(2) ? "realtime" : text_to_cstring(PG_GETARG_TEXT_PP(2));
	LlmRequest *req;

	model = EmbedResolveModel(model);
	req = RequestForEmbedding(NULL, 0, options);
	(void) EmbedRoutes(model);
	check_embed_via(via, model);
	if (!PG_ARGISNULL(3) && !PG_ARGISNULL(4))
		check_vector_column(PG_GETARG_OID(3), NameStr(*PG_GETARG_NAME(4)), RequestDimensions(req));
	PG_RETURN_TEXT_P(cstring_to_text(model));
}

/*
 * llm._job_check_request(model, system, options, via) returns text: a
 * job's model (resolved; llm.default_model if NULL), system prompt,
 * options and way of sending, checked as llm.enqueue checks an item's.
 */
Datum
pg_llm_job_check_request(PG_FUNCTION_ARGS)
{
	const char *model = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	const char *via = PG_ARGISNULL(3) ? "realtime" : text_to_cstring(PG_GETARG_TEXT_PP(3));

	model = LlmResolveModel(model, NULL);
	check_via(via, model);
	check_queued_request("pg_llm job check", strlen("pg_llm job check"),
						 PG_ARGISNULL(1) ? NULL : LlmToUtf8(text_to_cstring(PG_GETARG_TEXT_PP(1))),
						 PG_ARGISNULL(2) ? NULL : LlmToUtf8(JsonbToCString(NULL, &PG_GETARG_JSONB_P(2)->root, 0)));
	PG_RETURN_TEXT_P(cstring_to_text(model));
}

/*
 * An embedding's write-back target: a column whose type can take a vector
 * (arrays of numbers, pgvector's types, text and JSON), and, when the
 * options ask for dimensions and the column's type fixes them, the same
 * dimensions: a vector that cannot fit is not paid for.
 */
static void
check_vector_column(Oid relid, const char *column, int dims)
{
	AttrNumber	attnum = get_attnum(relid, column);
	Oid			typid;
	int32		typmod;
	Oid			collation;
	int			column_dims;
	char	   *relname = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
													 get_rel_name(relid));

	if (attnum <= 0)
		return;					/* check_target says so */
	get_atttypetypmodcoll(relid, attnum, &typid, &typmod, &collation);
	if (EmbedColumnKindOf(typid) == EMBED_COLUMN_NONE)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of table %s cannot take a vector", column, relname),
				 errdetail("Its type is %s.", format_type_with_typemod(typid, typmod)),
				 errhint("Embeddings are written into real[], float8[] or numeric[] columns, pgvector's vector, halfvec or sparsevec, or text and JSON.")));
	column_dims = EmbedColumnDimensions(typid, typmod);
	if (dims > 0 && column_dims > 0 && dims != column_dims)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of table %s holds vectors of %d dimensions, but the options ask for %d",
						column, relname, column_dims, dims),
				 errhint("Ask for {\"dimensions\": %d}, or write into a column of %d dimensions.",
						 column_dims, dims)));
}

/*
 * How an embedding item is sent: realtime, or through the batch API of
 * the first route of its model that has embeddings, which must have one
 * that takes embedding requests.
 */
static void
check_embed_via(const char *via, const char *model)
{
	const LlmRoute *first;

	if (!via_batch(via))
		return;
	first = linitial(EmbedRoutes(model));
	if (first->provider->batch == NULL || first->provider->batch->embed_line == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("provider \"%s\" of model \"%s\" has no batch API for embeddings",
						first->provider->name, model),
				 errhint("An administrator can set one with llm.alter_provider('%s', options => '{\"batch_api\": \"openai\"}') (or \"inline\"); or enqueue with via => 'realtime'.",
						 first->provider->name)));
}

/*
 * llm.enqueue_embedding(input, model, target_table, target_column,
 *						 target_key, options, via) returns bigint: an
 * embedding item for the worker, which packs the pending items of a model
 * into requests of many inputs and writes each vector into its target
 * through the column type's input function.  A NULL input is not queued
 * (NULL is returned).
 */
Datum
pg_llm_enqueue_embedding(PG_FUNCTION_ARGS)
{
	char	   *input = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	const char *model;
	bool		has_table = !PG_ARGISNULL(2);
	bool		has_column = !PG_ARGISNULL(3);
	bool		has_key = !PG_ARGISNULL(4);
	char	   *options = PG_ARGISNULL(5) ? NULL :
		LlmToUtf8(JsonbToCString(NULL, &PG_GETARG_JSONB_P(5)->root, 0));
	const char *via = PG_ARGISNULL(6) ? "realtime" : text_to_cstring(PG_GETARG_TEXT_PP(6));
	Oid			caller = GetUserId();
	LlmRequest *req;
	EnqueueInsert e;

	if (input == NULL)
		PG_RETURN_NULL();
	EmbedCheckInput(input);
	check_served();
	model = EmbedResolveModel(PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1)));

	/* options, routes and the target are checked now, not by the worker */
	req = RequestForEmbedding(NULL, 0, options);
	(void) EmbedRoutes(model);
	check_embed_via(via, model);
	if (has_table || has_column || has_key)
	{
		if (!(has_table && has_column && has_key))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("target_table, target_column and target_key go together"),
					 errhint("Give all three to write the vector into a row, or none.")));
		check_target(PG_GETARG_OID(2), NameStr(*PG_GETARG_NAME(3)), PG_GETARG_JSONB_P(4));
		check_vector_column(PG_GETARG_OID(2), NameStr(*PG_GETARG_NAME(3)), RequestDimensions(req));
	}

	memset(e.nulls, 'n', sizeof(e.nulls));
	e.values[0] = CStringGetTextDatum(input);
	e.nulls[0] = ' ';
	e.values[1] = CStringGetTextDatum(model);
	e.nulls[1] = ' ';
	if (!PG_ARGISNULL(5))
	{
		e.values[3] = PG_GETARG_DATUM(5);
		e.nulls[3] = ' ';
	}
	if (has_table)
	{
		e.values[4] = PG_GETARG_DATUM(2);
		e.values[5] = CStringGetTextDatum(NameStr(*PG_GETARG_NAME(3)));
		e.values[6] = PG_GETARG_DATUM(4);
		e.nulls[4] = e.nulls[5] = e.nulls[6] = ' ';
	}
	e.values[7] = ObjectIdGetDatum(caller);
	e.values[8] = CStringGetTextDatum(via);
	e.values[9] = BoolGetDatum(false);
	e.values[11] = CStringGetTextDatum("embed");
	e.nulls[7] = e.nulls[8] = e.nulls[9] = e.nulls[11] = ' ';

	/* the same input already waiting for the same target is not paid twice */
	if (has_table)
	{
		e.found = false;
		RunAsOwner(find_queued, &e);
		if (e.found)
			PG_RETURN_INT64(e.id);
	}
	PG_RETURN_INT64(enqueue_insert(&e, caller, via));
}

/* ---- llm.retry ---- */

typedef struct RetryArgs
{
	Oid			role;
	Datum		ids;			/* int8[] or (Datum) 0 */
	int64		job_id;			/* 0: any */
	char	   *error_like;		/* NULL: any */
	bool		count_only;
	int64		n;
	int64		batch;			/* of them, items through a provider batch */
} RetryArgs;

/*
 * Count, or put back, a role's failed items (as the owner).  An item
 * whose reply was paid for (answered: it failed at its write-back) keeps
 * its reply, and the worker writes it back without a new call; the others
 * start again from their first attempt.
 */
static void
retry_run(void *arg)
{
	RetryArgs  *r = (RetryArgs *) arg;
	Oid			types[4] = {OIDOID, INT8ARRAYOID, INT8OID, TEXTOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	bool		isnull;

#define RETRY_WHERE \
	"q.status = 'failed' AND q.enqueued_by = $1 AND ($2 IS NULL OR q.id = ANY ($2)) " \
	"AND ($3 IS NULL OR q.job_id = $3) AND ($4 IS NULL OR q.error LIKE $4)"

	values[0] = ObjectIdGetDatum(r->role);
	values[1] = r->ids;
	nulls[1] = r->ids ? ' ' : 'n';
	values[2] = Int64GetDatum(r->job_id);
	nulls[2] = r->job_id ? ' ' : 'n';
	values[3] = r->error_like ? CStringGetTextDatum(r->error_like) : (Datum) 0;
	nulls[3] = r->error_like ? ' ' : 'n';
	if (r->count_only)
	{
		if (RunSql("SELECT pg_catalog.count(*) FROM llm.queue q WHERE " RETRY_WHERE,
				   4, types, values, nulls, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not count failed items");
		r->n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		return;
	}
	if (RunSql("UPDATE llm.queue q SET status = 'pending', attempts = 0, next_attempt_at = pg_catalog.now(), "
			   "lease_until = NULL, leased_by = NULL, started_at = NULL, finished_at = NULL, error = NULL, "
			   "reply = CASE WHEN q.answered THEN q.reply END, invalid_answers = 0, batch_expiries = 0, "
			   "batch_id = NULL, via = CASE WHEN q.answered THEN 'realtime' ELSE q.via END "
			   "WHERE " RETRY_WHERE " RETURNING q.via = 'batch_api'",
			   4, types, values, nulls, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not put failed items back");
	r->n = SPI_processed;
	r->batch = 0;
	for (uint64 i = 0; i < SPI_processed; i++)
		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull)))
			r->batch++;
}

/* The id of the caller's job of that name (as the owner). */
static void
retry_find_job(void *arg)
{
	RetryArgs  *r = (RetryArgs *) arg;
	Oid			types[2] = {TEXTOID, OIDOID};
	Datum		values[2] = {CStringGetTextDatum(r->error_like), ObjectIdGetDatum(r->role)};
	bool		isnull;

	if (RunSql("SELECT id FROM llm.job WHERE name = $1 AND owner::pg_catalog.oid = $2",
			   2, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read llm.job");
	r->job_id = SPI_processed == 1 ?
		DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) : 0;
}

/*
 * llm.retry(ids, job, error_like): the caller's failed items (all, or
 * those with the ids, of the job, whose error is like the pattern) back
 * to pending.  A reply that was paid for and failed at its write-back (a
 * trigger's unqualified name, a column too short) is written back from
 * the kept reply once the cause is fixed, without calling the provider
 * again; the others are sent again (they enter the queue as an enqueue's
 * items do: the role's cap on queued items holds).  Returns the number
 * of items put back.
 */
Datum
pg_llm_retry(PG_FUNCTION_ARGS)
{
	RetryArgs	r;
	int64		max_queued;
	int64		room;

	memset(&r, 0, sizeof(r));
	r.role = GetUserId();
	r.ids = PG_ARGISNULL(0) ? (Datum) 0 : PG_GETARG_DATUM(0);
	if (!PG_ARGISNULL(1))
	{
		char	   *job = text_to_cstring(PG_GETARG_TEXT_PP(1));

		r.error_like = job;
		RunAsOwner(retry_find_job, &r);
		if (r.job_id == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("job \"%s\" does not exist", job),
					 errdetail("Only the jobs of role \"%s\" are looked at.", GetUserNameFromId(r.role, false)),
					 errhint("llm.job_status lists your jobs; the items of a dropped job are retried by their ids.")));
	}
	r.error_like = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));

	/* the items put back enter the queue: the role's cap holds */
	room = queue_room(r.role, &max_queued);
	if (room >= 0)
	{
		r.count_only = true;
		RunAsOwner(retry_run, &r);
		if (r.n > room)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("role \"%s\" may have at most " INT64_FORMAT " items queued",
							GetUserNameFromId(r.role, false), max_queued),
					 errdetail(INT64_FORMAT " failed items would be put back; there is room for " INT64_FORMAT ".",
							   r.n, room),
					 errhint("Retry fewer items (by ids, job or error_like), or wait for the queue to drain.")));
		r.count_only = false;
	}
	RunAsOwner(retry_run, &r);
	if (room >= 0)
		queue_counted(r.role, r.n);
	if (r.n > r.batch)
		wake_workers_at_commit("realtime");
	if (r.batch > 0)
		wake_workers_at_commit("batch_api");
	PG_RETURN_INT64(r.n);
}

/*
 * The routes of a model on one provider (provider => of llm.enqueue and
 * llm.create_job, and the worker for the items that name one); an error
 * when the model has none there.
 */
List *
QueueRoutesOn(const char *model, const char *provider)
{
	List	   *routes = NIL;
	ListCell   *lc;

	foreach(lc, ConfigRoutes(model))
	{
		LlmRoute   *r = lfirst(lc);

		if (strcmp(r->provider->name, provider) == 0)
			routes = lappend(routes, r);
	}
	if (routes == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" has no route on provider \"%s\"", model, provider),
				 errdetail("provider => sends the items through one of the model's routes in llm.model."),
				 errhint("An administrator can add one with llm.add_model('%s', '%s', upstream_model => '...'), or leave provider out to use the model's routes in order.",
						 model, provider)));
	return routes;
}
