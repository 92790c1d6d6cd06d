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
 *	  worker into a table they could not update themselves.
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
#include "utils/syscache.h"

#include "pg_llm.h"
#include "queue.h"
#include "shmem.h"

PG_FUNCTION_INFO_V1(pg_llm_enqueue);
PG_FUNCTION_INFO_V1(pg_llm_worker_status);
PG_FUNCTION_INFO_V1(pg_llm_usage_buffer_status);

/* llm.usage_buffer_status(): records waiting, and records dropped. */
Datum
pg_llm_usage_buffer_status(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	values[0] = Int32GetDatum((int32) UsagePending());
	values[1] = Int64GetDatum(LlmShared ? (int64) pg_atomic_read_u64(&LlmShared->usage_dropped) : 0);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

static bool wake_at_commit = false;
static bool xact_cb_registered = false;

/* At commit of a transaction that enqueued, wake this database's workers. */
static void
queue_xact_cb(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT && wake_at_commit)
		LlmWakeWorkers(MyDatabaseId);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		wake_at_commit = false;
}

/* Can values of this type be set from the reply text? */
static bool
text_like_type(Oid typid)
{
	char		category;
	bool		preferred;

	typid = getBaseType(typid);
	if (typid == JSONOID || typid == JSONBOID)
		return true;
	get_type_category_preferred(typid, &category, &preferred);
	return category == TYPCATEGORY_STRING;
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

/*
 * Check a write-back target for the calling role: the column exists and
 * can take text, the key names columns that identify one row, and the
 * role may update the column and read the keys.
 */
static void
check_target(Oid relid, const char *column, Jsonb *key)
{
	Relation	rel;
	AttrNumber	attnum;
	Oid			atttype;
	Bitmapset  *keys = NULL;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	Oid			role = GetUserId();
	char	   *relname = get_rel_name(relid);

	rel = relation_open(relid, AccessShareLock);
	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("target \"%s\" is not a table", relname),
				 errhint("Replies are written into tables; give the table behind the view.")));

	attnum = get_attnum(relid, column);
	if (attnum == InvalidAttrNumber || attnum < 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of table \"%s\" does not exist", column, relname),
				 errhint("target_column names the column the reply is written into.")));
	atttype = get_atttype(relid, attnum);
	if (!text_like_type(atttype))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of table \"%s\" cannot take a reply", column, relname),
				 errdetail("Its type is %s; replies are text.", format_type_be(atttype)),
				 errhint("Write replies into a text, varchar, json or jsonb column.")));
	if (TupleDescAttr(RelationGetDescr(rel), attnum - 1)->attgenerated)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("column \"%s\" of table \"%s\" is generated", column, relname),
				 errhint("Write replies into a column that can be updated.")));

	if (key == NULL || !JB_ROOT_IS_OBJECT(key) || JB_ROOT_COUNT(key) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("target_key must be a JSON object of the target row's key columns"),
				 errhint("For example '{\"id\": 17}'.")));
	it = JsonbIteratorInit(&key->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *name;
		AttrNumber	k;

		if (tok != WJB_KEY)
			continue;
		name = pnstrdup(v.val.string.val, v.val.string.len);
		k = get_attnum(relid, name);
		if (k == InvalidAttrNumber || k < 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("key column \"%s\" of table \"%s\" does not exist", name, relname),
					 errhint("target_key names the target row's key columns, such as '{\"id\": 17}'.")));
		if (pg_class_aclcheck(relid, role, ACL_SELECT) != ACLCHECK_OK &&
			pg_attribute_aclcheck(relid, k, role, ACL_SELECT) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to read column \"%s\" of table \"%s\"", name, relname),
					 errhint("The worker finds the row with the rights of the role that enqueued it.")));
		keys = bms_add_member(keys, k);
	}
	if (!keys_identify_one_row(rel, keys))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("target_key does not identify one row of table \"%s\"", relname),
				 errdetail("No primary key or unique index of the table is made of the key's columns."),
				 errhint("Use the primary key's columns, such as '{\"id\": 17}'.")));
	if (pg_class_aclcheck(relid, role, ACL_UPDATE) != ACLCHECK_OK &&
		pg_attribute_aclcheck(relid, attnum, role, ACL_UPDATE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to update column \"%s\" of table \"%s\"", column, relname),
				 errhint("The worker writes replies back with the rights of the role that enqueued them.")));
	relation_close(rel, AccessShareLock);
}

/*
 * llm.enqueue(prompt, model, system, target_table, target_column,
 *			   target_key, options) returns bigint
 */
Datum
pg_llm_enqueue(PG_FUNCTION_ARGS)
{
	char	   *prompt = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *model = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	bool		has_table = !PG_ARGISNULL(3);
	bool		has_column = !PG_ARGISNULL(4);
	bool		has_key = !PG_ARGISNULL(5);
	Oid			caller = GetUserId();
	Oid			owner;
	Oid			save_user;
	int			save_sec;
	Datum		values[8];
	char		nulls[8];
	Oid			types[8] = {TEXTOID, TEXTOID, TEXTOID, JSONBOID, OIDOID, TEXTOID, JSONBOID, OIDOID};
	int64		id = 0;
	bool		isnull;
	int			i;

	LlmCheckPrompt(prompt);
	model = (char *) LlmResolveModel(model, NULL);

	/* options are checked now, not when the worker gets to them */
	(void) LlmRequestFromPrompt(LlmToUtf8(prompt),
								PG_ARGISNULL(2) ? NULL : LlmToUtf8(text_to_cstring(PG_GETARG_TEXT_PP(2))),
								PG_ARGISNULL(6) ? NULL : LlmToUtf8(JsonbToCString(NULL, &PG_GETARG_JSONB_P(6)->root, 0)));

	if (has_table || has_column || has_key)
	{
		if (!(has_table && has_column && has_key))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("target_table, target_column and target_key go together"),
					 errhint("Give all three to write the reply back into a row, or none.")));
		check_target(PG_GETARG_OID(3), NameStr(*PG_GETARG_NAME(4)), PG_GETARG_JSONB_P(5));
	}

	memset(nulls, ' ', sizeof(nulls));
	values[0] = CStringGetTextDatum(prompt);
	values[1] = CStringGetTextDatum(model);
	values[2] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	values[3] = PG_ARGISNULL(6) ? (Datum) 0 : PG_GETARG_DATUM(6);
	values[4] = has_table ? PG_GETARG_DATUM(3) : (Datum) 0;
	values[5] = has_column ? CStringGetTextDatum(NameStr(*PG_GETARG_NAME(4))) : (Datum) 0;
	values[6] = has_key ? PG_GETARG_DATUM(5) : (Datum) 0;
	values[7] = ObjectIdGetDatum(caller);
	for (i = 0; i < 7; i++)
		if ((i == 2 && PG_ARGISNULL(2)) || (i == 3 && PG_ARGISNULL(6)) ||
			(i == 4 && !has_table) || (i == 5 && !has_column) || (i == 6 && !has_key))
			nulls[i] = 'n';

	owner = ConfigOwner();
	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute_with_args("INSERT INTO llm.queue (prompt, model, system, options, "
								  "target_table, target_column, target_key, enqueued_by) "
								  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
								  8, types, values, nulls, false, 1) != SPI_OK_INSERT_RETURNING)
			elog(ERROR, "could not insert into llm.queue");
		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		SPI_finish();
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_user, save_sec);
	}
	PG_END_TRY();

	if (!xact_cb_registered)
	{
		RegisterXactCallback(queue_xact_cb, NULL);
		xact_cb_registered = true;
	}
	wake_at_commit = true;
	PG_RETURN_INT64(id);
}

/*
 * llm.worker_status(): one row per running queue worker, from shared
 * memory.
 */
Datum
pg_llm_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	if (LlmShared == NULL)
		PG_RETURN_VOID();

	LWLockAcquire(LlmShared->lock, LW_SHARED);
	for (i = 0; i < LLM_MAX_WORKERS; i++)
	{
		LlmWorkerSlot *w = &LlmShared->workers[i];
		Datum		values[11];
		bool		nulls[11];

		if (!w->in_use)
			continue;
		memset(nulls, 0, sizeof(nulls));
		values[0] = Int32GetDatum(w->pid);
		values[1] = ObjectIdGetDatum(w->dboid);
		values[2] = TimestampTzGetDatum(w->started_at);
		values[3] = Int32GetDatum(w->in_flight);
		values[4] = Int32GetDatum(w->claimed);
		values[5] = Int64GetDatum((int64) pg_atomic_read_u64(&w->completed));
		values[6] = Int64GetDatum((int64) pg_atomic_read_u64(&w->failed));
		values[7] = Float8GetDatum(w->rate);
		if (w->last_error[0])
		{
			values[8] = CStringGetTextDatum(w->last_error);
			values[9] = TimestampTzGetDatum(w->last_error_at);
		}
		else
			nulls[8] = nulls[9] = true;
		values[10] = CStringGetTextDatum(w->usage_only ? "usage writer" : "queue worker");
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(LlmShared->lock);
	PG_RETURN_VOID();
}
