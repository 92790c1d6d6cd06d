/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The queue worker: one background worker per database listed in
 *	  llm.database drains llm.queue.
 *
 *	  The loop keeps the pipe full.  It claims items with FOR UPDATE SKIP
 *	  LOCKED and a lease, commits, and sends them concurrently on the
 *	  process's curl multi handle, outside any transaction; when a request
 *	  finishes its slot takes the next item at once, and the next batch is
 *	  claimed before the current one runs dry.  Results are written in
 *	  short transactions, one per group of items finished together, each
 *	  item in its own subtransaction: the write-back (with the rights of
 *	  the role that enqueued the item) and the mark "done" commit together
 *	  or not at all, and one bad item never fails the others.  A result is
 *	  written only if the item's lease is still ours (its attempt count
 *	  unchanged), so an item reclaimed by someone else is never written
 *	  twice.  Waiting is on the latch and curl's sockets together: an
 *	  enqueue's commit wakes the worker; the nap is only a fallback.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/ilist.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "http.h"
#include "pg_llm.h"
#include "queue.h"
#include "shmem.h"

PGDLLEXPORT void pg_llm_worker_main(Datum arg);

/*
 * A job's item whose row has a newer item of the same job (its input
 * changed while this one was being answered) is done, but its reply is
 * not written back: the newer one's will be, whatever the order in which
 * the two arrive.
 */
#define SUPERSEDED_SQL \
	"(q.job IS NOT NULL AND EXISTS (SELECT 1 FROM llm.queue n WHERE n.job = q.job " \
	"AND n.target_table = q.target_table AND n.target_key = q.target_key AND n.id > q.id " \
	"AND n.status <> 'failed'))"


char	   *llm_worker_databases = NULL;
int			llm_batch_size = 50;
int			llm_worker_concurrency = 50;
int			llm_max_attempts = 5;
int			llm_lease_time = 600;
int			llm_worker_naptime = 10000;

typedef enum ItemState
{
	ITEM_READY,					/* claimed, waiting for a slot (or its time) */
	ITEM_IN_FLIGHT,
	ITEM_DONE,					/* reply in hand, to be written */
	ITEM_RETRY_LATER,			/* back to pending, next_attempt_at set */
	ITEM_FAILED					/* failed for good */
} ItemState;

/* One claimed queue item, with everything its calls need. */
typedef struct WorkItem
{
	dlist_node	node;
	int64		id;
	int			attempts;		/* as claimed: our lease's token */
	Oid			role;
	MemoryContext ctx;
	ItemState	state;
	LlmCall    *call;
	ListCell   *route;			/* the route being tried */
	int			route_no;
	int			tries;			/* tries on this route */
	TimestampTz not_before;
	HttpTransfer *xfer;
	char	   *reply;
	char	   *error;
	TimestampTz next_attempt_at;
	bool		written;		/* its queue row was ours and is updated */
	char	   *writeback_sql;	/* NULL when there is no target */
	char	   *target_key;		/* jsonb text */
} WorkItem;

static dlist_head items = DLIST_STATIC_INIT(items);
static int	nitems = 0;
static int	ninflight = 0;
static int	my_slot = -1;
static MemoryContext worker_ctx = NULL;
static HTAB *plan_cache = NULL;
static uint64 finished_since_rate = 0;

/* finished items are written in groups (see the loop) */
#define WRITE_GROUP 32
#define WRITE_DELAY_MS 10
static int	nfinished = 0;
static TimestampTz first_finished_at = 0;
static TimestampTz rate_since = 0;

typedef struct PlanEntry
{
	char		sql[1024];
	SPIPlanPtr	plan;
} PlanEntry;

static void item_write_back(WorkItem *it);

/*
 * In the PG_CATCH of an item's subtransaction: roll the subtransaction
 * back and return the error's message, copied into the item's memory.
 * The rollback leaves the transaction's context current, so the item's is
 * made current again.
 */
static char *
item_catch(WorkItem *it)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(it->ctx);
	edata = CopyErrorData();
	FlushErrorState();
	RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(it->ctx);
	return edata->message;
}

/* ---- settings ---- */

/* Settings read only by the postmaster; defined only while preloading. */
void
WorkerDefinePostmasterSettings(void)
{
	DefineCustomStringVariable("llm.database",
							   "Databases whose llm.queue a worker drains (comma-separated).",
							   "Needs pg_llm in shared_preload_libraries; one worker per database.",
							   &llm_worker_databases, "postgres",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
}

void
WorkerDefineSettings(void)
{
	DefineCustomIntVariable("llm.batch_size",
							"Items one claim takes from llm.queue.",
							NULL, &llm_batch_size, 50, 1, 10000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.worker_concurrency",
							"Requests a queue worker keeps in flight at once.",
							NULL, &llm_worker_concurrency, 50, 1, 200,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.max_attempts",
							"Claims of a queue item before it fails for good.",
							NULL, &llm_max_attempts, 5, 1, 1000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.lease_time",
							"How long a claimed queue item is reserved for its worker.",
							"An item whose lease expires (its worker died) is claimed again.",
							&llm_lease_time, 600, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.worker_naptime",
							"Longest sleep of an idle queue worker; an enqueue's commit wakes it at once.",
							NULL, &llm_worker_naptime, 10000, 10, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
}

/* Register one worker per listed database; called while preloading. */
void
WorkerRegister(void)
{
	char	   *raw = pstrdup(llm_worker_databases ? llm_worker_databases : "");
	List	   *names = NIL;
	ListCell   *lc;
	int			n = 0;

	if (!SplitIdentifierString(raw, ',', &names))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid list syntax in \"llm.database\""),
				 errhint("List database names separated by commas, such as 'app, reports'.")));
	foreach(lc, names)
	{
		BackgroundWorker bgw;

		if (n >= LLM_MAX_WORKERS)
			break;
		memset(&bgw, 0, sizeof(bgw));
		bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
		bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
		bgw.bgw_restart_time = 5;
		strlcpy(bgw.bgw_library_name, "pg_llm", BGW_MAXLEN);
		strlcpy(bgw.bgw_function_name, "pg_llm_worker_main", BGW_MAXLEN);
		snprintf(bgw.bgw_name, BGW_MAXLEN, "pg_llm worker for %s", (char *) lfirst(lc));
		strlcpy(bgw.bgw_type, "pg_llm worker", BGW_MAXLEN);
		strlcpy(bgw.bgw_extra, (char *) lfirst(lc), BGW_EXTRALEN);
		bgw.bgw_main_arg = Int32GetDatum(n);
		RegisterBackgroundWorker(&bgw);
		n++;
	}
}

/* ---- shared memory reports ---- */

static void
slot_release(int code, Datum arg)
{
	if (LlmShared && my_slot >= 0)
	{
		LWLockAcquire(LlmShared->lock, LW_EXCLUSIVE);
		LlmShared->workers[my_slot].in_use = false;
		LlmShared->workers[my_slot].latch = NULL;
		LWLockRelease(LlmShared->lock);
	}
}

static void
slot_claim(int n)
{
	LlmWorkerSlot *w;

	if (LlmShared == NULL || n >= LLM_MAX_WORKERS)
		return;
	LWLockAcquire(LlmShared->lock, LW_EXCLUSIVE);
	if (n < 0)
	{
		/* a usage writer takes a free slot from the top */
		for (n = LLM_MAX_WORKERS - 1; n >= 0; n--)
			if (!LlmShared->workers[n].in_use)
				break;
		if (n < 0)
		{
			LWLockRelease(LlmShared->lock);
			return;
		}
	}
	my_slot = n;
	w = &LlmShared->workers[n];
	w->in_use = true;
	w->usage_only = (DatumGetInt32(MyBgworkerEntry->bgw_main_arg) < 0);
	w->pid = MyProcPid;
	w->dboid = MyDatabaseId;
	w->latch = MyLatch;
	w->started_at = GetCurrentTimestamp();
	w->in_flight = 0;
	w->claimed = 0;
	w->rate = 0;
	w->last_error[0] = '\0';
	LWLockRelease(LlmShared->lock);
	on_shmem_exit(slot_release, (Datum) 0);
}

/* Note an error for llm.worker_status (the newest wins). */
static void
report_error(const char *msg)
{
	LlmWorkerSlot *w;

	if (LlmShared == NULL || my_slot < 0)
		return;
	w = &LlmShared->workers[my_slot];
	strlcpy(w->last_error, msg, LLM_ERROR_LEN);
	w->last_error_at = GetCurrentTimestamp();
}

static void
report_counts(void)
{
	LlmWorkerSlot *w;
	TimestampTz now = GetCurrentTimestamp();
	long		ms;

	if (LlmShared == NULL || my_slot < 0)
		return;
	w = &LlmShared->workers[my_slot];
	w->in_flight = ninflight;
	w->claimed = nitems;
	ms = TimestampDifferenceMilliseconds(rate_since, now);
	if (ms >= 1000)
	{
		double		r = finished_since_rate * 1000.0 / ms;

		w->rate = (w->rate == 0) ? r : 0.5 * w->rate + 0.5 * r;
		finished_since_rate = 0;
		rate_since = now;
	}
}

/* Show what the worker is doing in pg_stat_activity, when it changes. */
static int	last_inflight = -1;
static int	last_items = -1;

static void
report_activity(void)
{
	char		buf[128];

	if (ninflight == last_inflight && nitems == last_items)
		return;
	last_inflight = ninflight;
	last_items = nitems;
	if (ninflight == 0 && nitems == 0)
	{
		pgstat_report_activity(STATE_IDLE, NULL);
		return;
	}
	snprintf(buf, sizeof(buf), "pg_llm: %d requests in flight, %d items claimed", ninflight, nitems);
	pgstat_report_activity(STATE_RUNNING, buf);
}

/* ---- plans ---- */

/* A saved plan for a statement, prepared once per worker. */
static SPIPlanPtr
cached_plan(const char *sql, int nargs, Oid *types)
{
	PlanEntry  *e;
	bool		found;
	char		key[1024];

	if (plan_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(key);
		ctl.entrysize = sizeof(PlanEntry);
		plan_cache = hash_create("pg_llm worker plans", 64, &ctl, HASH_ELEM | HASH_STRINGS);
	}
	if (strlen(sql) >= sizeof(key))
		return NULL;
	memset(key, 0, sizeof(key));
	strlcpy(key, sql, sizeof(key));
	e = hash_search(plan_cache, key, HASH_ENTER, &found);
	if (!found || e->plan == NULL)
	{
		SPIPlanPtr	p;

		e->plan = NULL;
		/* one generic plan: these statements run thousands of times */
		p = SPI_prepare_cursor(sql, nargs, types, CURSOR_OPT_GENERIC_PLAN);
		if (p == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql, SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		e->plan = p;
	}
	return e->plan;
}

/* Run a statement with a cached plan (or a one-off one if it is long). */
static int
run_sql(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls, bool ro, long count)
{
	SPIPlanPtr	p = cached_plan(sql, nargs, types);

	if (p)
		return SPI_execute_plan(p, values, nulls, ro, count);
	return SPI_execute_with_args(sql, nargs, types, values, nulls, ro, count);
}

/* ---- transactions ---- */

static void
xact_begin(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

static void
xact_end(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	last_inflight = -1;			/* show the loop's own state again */
}

/* ---- claiming ---- */

/*
 * The UPDATE that writes a reply into the target row, as the enqueuing
 * role: the key columns come typed from jsonb_populate_record.
 */
static char *
writeback_sql(Oid relid, const char *column, const char *key_json)
{
	char	   *qrel = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
												  get_rel_name(relid));
	AttrNumber	att = get_attnum(relid, column);
	StringInfoData sql;
	Jsonb	   *key;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	bool		first = true;

	if (att == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of the target table no longer exists", column),
				 errhint("Enqueue the item again with the column's new name.")));
	initStringInfo(&sql);
	appendStringInfo(&sql, "UPDATE %s AS t SET %s = CAST($1 AS %s) FROM jsonb_populate_record(NULL::%s, $2) AS k WHERE ",
					 qrel, quote_identifier(column),
					 format_type_be_qualified(get_atttype(relid, att)), qrel);
	key = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(key_json)));
	it = JsonbIteratorInit(&key->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *name;

		if (tok != WJB_KEY)
			continue;
		name = pnstrdup(v.val.string.val, v.val.string.len);
		appendStringInfo(&sql, "%st.%s = k.%s", first ? "" : " AND ",
						 quote_identifier(name), quote_identifier(name));
		first = false;
	}
	return sql.data;
}

/* Make a claimed row into a work item; errors are the item's own. */
static void
item_setup(WorkItem *it, HeapTuple tup, TupleDesc td)
{
	MemoryContext old = MemoryContextSwitchTo(it->ctx);
	char	   *prompt = SPI_getvalue(tup, td, 3);
	char	   *model = SPI_getvalue(tup, td, 4);
	char	   *system = SPI_getvalue(tup, td, 5);
	char	   *options = SPI_getvalue(tup, td, 6);
	char	   *relid = SPI_getvalue(tup, td, 7);
	char	   *column = SPI_getvalue(tup, td, 8);
	char	   *key = SPI_getvalue(tup, td, 9);
	LlmRequest *req;

	req = LlmRequestFromPrompt(LlmToUtf8(prompt), system ? LlmToUtf8(system) : NULL,
							   options ? LlmToUtf8(options) : NULL);
	it->call = LlmCallCreate(req, model, LLM_MODE_QUEUE);
	UsageBegin(it->call, it->role,
			   strlen(prompt) + (system ? strlen(system) : 0) + (options ? strlen(options) : 0),
			   LlmRequestMaxTokens(req));
	it->route = list_head(it->call->routes);
	it->route_no = 1;
	if (relid && column && key)
	{
		it->writeback_sql = writeback_sql(atooid(relid), column, key);
		it->target_key = pstrdup(key);
	}
	MemoryContextSwitchTo(old);
}

/*
 * Claim up to n ready items: pending ones whose time has come, oldest
 * first.  The attempt count goes up at the claim, so an item that crashes
 * its worker every time still runs out of attempts.
 */
static int
claim(int n)
{
	Datum		values[2];
	Oid			types[2] = {INT4OID, INT4OID};
	uint64		i;
	uint64		nclaimed;
	SPITupleTable *tuptable;

	xact_begin("pg_llm: claiming queue items");
	values[0] = Int32GetDatum(n);
	values[1] = Int32GetDatum(llm_lease_time);
	if (run_sql("UPDATE llm.queue q SET status = 'running', attempts = q.attempts + 1, "
				"lease_until = now() + make_interval(secs => $2), started_at = now() "
				"FROM (SELECT id FROM llm.queue WHERE status = 'pending' AND next_attempt_at <= now() "
				"      ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) c "
				"WHERE q.id = c.id "
				"RETURNING q.id, q.attempts, q.prompt, q.model, q.system, q.options::text, "
				"q.target_table::oid, q.target_column, q.target_key::text, q.enqueued_by",
				2, types, values, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not claim queue items");

	tuptable = SPI_tuptable;
	nclaimed = SPI_processed;
	for (i = 0; i < nclaimed; i++)
	{
		HeapTuple	tup = tuptable->vals[i];
		TupleDesc	td = tuptable->tupdesc;
		WorkItem   *it = MemoryContextAllocZero(worker_ctx, sizeof(WorkItem));
		MemoryContext oldcxt = CurrentMemoryContext;
		ResourceOwner oldowner = CurrentResourceOwner;

		it->ctx = AllocSetContextCreate(worker_ctx, "pg_llm queue item", ALLOCSET_SMALL_SIZES);
		it->id = strtoll(SPI_getvalue(tup, td, 1), NULL, 10);
		it->attempts = atoi(SPI_getvalue(tup, td, 2));
		it->role = atooid(SPI_getvalue(tup, td, 10));
		it->state = ITEM_READY;
		it->not_before = 0;
		dlist_push_tail(&items, &it->node);
		nitems++;

		/* a bad item (options, model, vanished target) fails alone */
		BeginInternalSubTransaction(NULL);
		PG_TRY();
		{
			item_setup(it, tup, td);
			ReleaseCurrentSubTransaction();
		}
		PG_CATCH();
		{
			it->error = item_catch(it);
			it->state = ITEM_FAILED;
			if (nfinished++ == 0)
				first_finished_at = GetCurrentTimestamp();
			elog(LOG, "pg_llm worker: queue item " INT64_FORMAT " cannot be sent: %s", it->id, it->error);
		}
		PG_END_TRY();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	xact_end();
	return (int) nclaimed;
}

/* Items whose lease ran out (their worker died) become pending again. */
static void
reclaim_expired(void)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1];

	xact_begin("pg_llm: reclaiming expired leases");
	values[0] = Int32GetDatum(llm_max_attempts);

	/*
	 * An item whose worker died every time it held it runs out of attempts
	 * like any other: it fails instead of going back to the queue.
	 */
	if (run_sql("UPDATE llm.queue SET lease_until = NULL, "
				"status = CASE WHEN attempts >= $1 THEN 'failed' ELSE 'pending' END, "
				"finished_at = CASE WHEN attempts >= $1 THEN now() END, "
				"error = CASE WHEN attempts >= $1 THEN "
				"  'its worker stopped before finishing it, ' || attempts || ' times' ELSE error END "
				"WHERE status = 'running' AND lease_until < now()",
				1, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not reclaim expired queue items");
	if (SPI_processed > 0)
		elog(LOG, "pg_llm worker: " UINT64_FORMAT " queue items with an expired lease were taken back",
			 (uint64) SPI_processed);
	xact_end();
}

/*
 * Extend the leases of every item this worker holds, so that a request
 * that runs longer than the lease (retries, slow providers) is not taken
 * back from under it.  Runs every third of the lease.
 */
static void
renew_leases(void)
{
	dlist_iter	iter;
	Datum	   *ids;
	Datum	   *atts;
	int			n = 0;
	Oid			types[3] = {INT8ARRAYOID, INT4ARRAYOID, INT4OID};
	Datum		values[3];

	if (nitems == 0)
		return;
	ids = palloc(sizeof(Datum) * nitems);
	atts = palloc(sizeof(Datum) * nitems);
	dlist_foreach(iter, &items)
	{
		WorkItem   *it = dlist_container(WorkItem, node, iter.cur);

		ids[n] = Int64GetDatum(it->id);
		atts[n] = Int32GetDatum(it->attempts);
		n++;
	}
	xact_begin("pg_llm: renewing leases");
	values[0] = LlmMakeArray(ids, NULL, n, INT8OID);
	values[1] = LlmMakeArray(atts, NULL, n, INT4OID);
	values[2] = Int32GetDatum(llm_lease_time);
	if (run_sql("UPDATE llm.queue q SET lease_until = now() + make_interval(secs => $3) "
				"FROM unnest($1, $2) AS u(id, a) "
				"WHERE q.id = u.id AND q.attempts = u.a AND q.status = 'running'",
				3, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not renew leases");
	xact_end();
}

/* ---- sending and judging ---- */

/*
 * Send an item's next attempt.  Building the request can fail for this
 * item alone (an option its route's protocol refuses, a key's variable not
 * set): the item fails, the worker goes on.
 */
static void
item_send(WorkItem *it)
{
	MemoryContext old = MemoryContextSwitchTo(it->ctx);

	PG_TRY();
	{
		it->xfer = LlmSendAttempt(it->call, lfirst(it->route), false);
		it->xfer->user = it;
		it->state = ITEM_IN_FLIGHT;
		ninflight++;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(it->ctx);
		edata = CopyErrorData();
		FlushErrorState();
		it->error = pstrdup(edata->message);
		it->state = ITEM_FAILED;
		report_error(it->error);
		UsageRecord(it->call, LLM_OUTCOME_ERROR);
		if (nfinished++ == 0)
			first_finished_at = GetCurrentTimestamp();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
}

/*
 * Decide what happens to an item after an attempt: done, another try
 * (after the delay the provider asked for, or backoff), the next route of
 * the chain, back to the queue for later, or failed.
 */
static void
item_judge(WorkItem *it)
{
	MemoryContext old = MemoryContextSwitchTo(it->ctx);
	LlmFailure	f;
	LlmVerdict	v;
	const LlmRoute *route = lfirst(it->route);
	int			max_retries = route->provider->max_retries >= 0 ?
		route->provider->max_retries : llm_max_retries;
	TimestampTz now = GetCurrentTimestamp();

	memset(&f, 0, sizeof(f));
	v = LlmJudgeComplete(it->call, it->xfer, &f);
	HttpRelease(it->xfer);
	it->xfer = NULL;
	ninflight--;

	if (v == LLM_VERDICT_OK)
	{
		if (it->call->reply.content == NULL)
		{
			it->state = ITEM_FAILED;
			it->error = psprintf("provider \"%s\" returned no text", route->provider->name);
		}
		else
		{
			it->state = ITEM_DONE;
			it->reply = it->call->reply.content;
		}
	}
	else if (v == LLM_VERDICT_FAIL)
	{
		it->state = ITEM_FAILED;
		it->error = LlmFailureText(&f);
	}
	else
	{
		long		delay = LlmRetryDelayMs(f.retry_after_s, it->tries);

		it->error = LlmFailureText(&f);
		if (my_slot >= 0)
			pg_atomic_fetch_add_u64(&LlmShared->workers[my_slot].retried, 1);
		if (it->tries < max_retries && delay >= 0)
		{
			it->tries++;
			it->state = ITEM_READY;
			it->not_before = TimestampTzPlusMilliseconds(now, delay);
		}
		else if (lnext(it->call->routes, it->route) != NULL)
		{
			it->route = lnext(it->call->routes, it->route);
			it->route_no++;
			it->tries = 0;
			it->state = ITEM_READY;
			it->not_before = 0;
		}
		else if (it->attempts >= llm_max_attempts)
			it->state = ITEM_FAILED;
		else
		{
			/* back to the queue; later claims start the chain again */
			long		backoff = Min(1000L << Min(it->attempts, 10), 300000L);

			it->state = ITEM_RETRY_LATER;
			it->next_attempt_at = TimestampTzPlusMilliseconds(now, Max(backoff, delay));
		}
	}
	if (it->state == ITEM_FAILED && it->error)
		report_error(it->error);
	if (it->state == ITEM_DONE)
		UsageRecord(it->call, LLM_OUTCOME_OK);
	else if (it->state == ITEM_FAILED)
		UsageRecord(it->call, LLM_OUTCOME_ERROR);
	else if (it->state == ITEM_RETRY_LATER)
		UsageRecord(it->call, LLM_OUTCOME_RETRY);
	MemoryContextSwitchTo(old);
}

/* ---- writing results ---- */

/*
 * Write one finished item.  The queue row is updated first, guarded by our
 * lease token; only if it is still ours does the write-back run, as the
 * enqueuing role.  Both are in the caller's subtransaction.
 */
static void
item_write(WorkItem *it)
{
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	Oid			types[4] = {INT8OID, INT4OID, TEXTOID, TIMESTAMPTZOID};

	values[0] = Int64GetDatum(it->id);
	values[1] = Int32GetDatum(it->attempts);
	if (it->state == ITEM_DONE)
	{
		char	   *reply = LlmToServerEncoding(it->reply, strlen(it->reply));

		values[2] = CStringGetTextDatum(reply);
		if (run_sql("UPDATE llm.queue q SET status = 'done', reply = $3, error = NULL, "
					"lease_until = NULL, finished_at = now() "
					"WHERE id = $1 AND attempts = $2 AND status = 'running' RETURNING "
					SUPERSEDED_SQL,
					3, types, values, nulls, false, 0) != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "could not update llm.queue");
		it->written = (SPI_processed > 0);
		if (!it->written || it->writeback_sql == NULL)
			return;
		{
			bool		isnull;

			if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
				return;
		}

		item_write_back(it);
	}
	else if (it->state == ITEM_FAILED)
	{
		values[2] = CStringGetTextDatum(it->error ? it->error : "failed");
		if (run_sql("UPDATE llm.queue SET status = 'failed', error = $3, "
					"lease_until = NULL, finished_at = now() "
					"WHERE id = $1 AND attempts = $2 AND status = 'running'",
					3, types, values, nulls, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not update llm.queue");
		it->written = (SPI_processed > 0);
	}
	else
	{
		values[2] = CStringGetTextDatum(it->error ? it->error : "");
		values[3] = TimestampTzGetDatum(it->next_attempt_at);
		if (run_sql("UPDATE llm.queue SET status = 'pending', error = $3, "
					"next_attempt_at = $4, lease_until = NULL "
					"WHERE id = $1 AND attempts = $2 AND status = 'running'",
					4, types, values, nulls, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not update llm.queue");
		it->written = (SPI_processed > 0);
	}
}

/*
 * Write a reply into its target row, as the role that enqueued it; a row
 * that is gone is an error.
 */
static void
item_write_back(WorkItem *it)
{
	Oid			save_user;
	int			save_sec;
	Oid			wtypes[2] = {TEXTOID, JSONBOID};
	Datum		wvalues[2];

	wvalues[0] = CStringGetTextDatum(LlmToServerEncoding(it->reply, strlen(it->reply)));
	wvalues[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(it->target_key));
	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(it->role, save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	PG_TRY();
	{
		if (run_sql(it->writeback_sql, 2, wtypes, wvalues, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not write the reply back");
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("the target row no longer exists"),
					 errhint("The row was deleted, or its key changed, after the item was enqueued.")));
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_user, save_sec);
	}
	PG_END_TRY();
}

/* Forget an item. */
static void
item_free(WorkItem *it)
{
	dlist_delete(&it->node);
	nitems--;
	MemoryContextDelete(it->ctx);
	pfree(it);
}

/* Is the item finished, waiting to be written? */
static bool
item_finished(const WorkItem *it)
{
	return it->state == ITEM_DONE || it->state == ITEM_FAILED || it->state == ITEM_RETRY_LATER;
}

/*
 * Write a group of finished items at once: one UPDATE of llm.queue per
 * outcome over arrays, guarded by each item's lease token, then the
 * write-back of each reply that is still ours, as its role.  Any error
 * aborts the whole group; the caller then writes item by item.
 */
static void
write_group(void)
{
	dlist_iter	iter;
	int			n[3] = {0, 0, 0};
	Datum	   *ids[3];
	Datum	   *atts[3];
	Datum	   *texts[3];
	Datum	   *whens;
	int			cap = nitems;
	int			k;
	static const char *const sql[3] = {
		"UPDATE llm.queue q SET status = 'done', reply = u.t, error = NULL, lease_until = NULL, "
		"finished_at = now() FROM unnest($1::int8[], $2::int4[], $3::text[]) AS u(id, a, t) "
		"WHERE q.id = u.id AND q.attempts = u.a AND q.status = 'running' RETURNING q.id, "
		SUPERSEDED_SQL,
		"UPDATE llm.queue q SET status = 'failed', error = u.t, lease_until = NULL, "
		"finished_at = now() FROM unnest($1::int8[], $2::int4[], $3::text[]) AS u(id, a, t) "
		"WHERE q.id = u.id AND q.attempts = u.a AND q.status = 'running' RETURNING q.id",
		"UPDATE llm.queue q SET status = 'pending', error = u.t, lease_until = NULL, "
		"next_attempt_at = u.w FROM unnest($1::int8[], $2::int4[], $3::text[], $4::timestamptz[]) "
		"AS u(id, a, t, w) WHERE q.id = u.id AND q.attempts = u.a AND q.status = 'running' RETURNING q.id"
	};
	Oid			types[4] = {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID};

	for (k = 0; k < 3; k++)
	{
		ids[k] = palloc(sizeof(Datum) * cap);
		atts[k] = palloc(sizeof(Datum) * cap);
		texts[k] = palloc(sizeof(Datum) * cap);
	}
	whens = palloc(sizeof(Datum) * cap);
	dlist_foreach(iter, &items)
	{
		WorkItem   *it = dlist_container(WorkItem, node, iter.cur);

		if (!item_finished(it))
			continue;
		k = it->state == ITEM_DONE ? 0 : it->state == ITEM_FAILED ? 1 : 2;
		ids[k][n[k]] = Int64GetDatum(it->id);
		atts[k][n[k]] = Int32GetDatum(it->attempts);
		texts[k][n[k]] = CStringGetTextDatum(k == 0 ? LlmToServerEncoding(it->reply, strlen(it->reply)) :
											 (it->error ? it->error : "failed"));
		if (k == 2)
			whens[n[k]] = TimestampTzGetDatum(it->next_attempt_at);
		n[k]++;
	}
	for (k = 0; k < 3; k++)
	{
		Datum		args[4];

		if (n[k] == 0)
			continue;
		args[0] = LlmMakeArray(ids[k], NULL, n[k], INT8OID);
		args[1] = LlmMakeArray(atts[k], NULL, n[k], INT4OID);
		args[2] = LlmMakeArray(texts[k], NULL, n[k], TEXTOID);
		if (k == 2)
			args[3] = LlmMakeArray(whens, NULL, n[k], TIMESTAMPTZOID);
		if (run_sql(sql[k], k == 2 ? 4 : 3, types, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "could not update llm.queue");
		{
			/* note which items were still ours; write back their replies */
			uint64		i;
			SPITupleTable *tt = SPI_tuptable;
			uint64		nrows = SPI_processed;
			HTAB	   *ours;
			HASHCTL		ctl;
			int			want = k == 0 ? ITEM_DONE : k == 1 ? ITEM_FAILED : ITEM_RETRY_LATER;

			/* entries: the id, then whether its reply is superseded */
			ctl.keysize = sizeof(int64);
			ctl.entrysize = sizeof(int64) + sizeof(bool);
			ctl.hcxt = CurrentMemoryContext;
			ours = hash_create("pg_llm written ids", Max(nrows, 16), &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
			for (i = 0; i < nrows; i++)
			{
				bool		isnull;
				int64		id = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
				bool	   *e = hash_search(ours, &id, HASH_ENTER, NULL);

				e[sizeof(int64)] = (k == 0) &&
					DatumGetBool(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
			}
			dlist_foreach(iter, &items)
			{
				WorkItem   *it = dlist_container(WorkItem, node, iter.cur);
				bool	   *superseded;

				if ((int) it->state != want ||
					(superseded = hash_search(ours, &it->id, HASH_FIND, NULL)) == NULL)
					continue;
				it->written = true;
				if (it->state == ITEM_DONE && it->writeback_sql && !superseded[sizeof(int64)])
					item_write_back(it);
			}
		}
	}
}

/*
 * Write every finished item in one transaction: as a group when that
 * works, else each in a subtransaction, so that a failing write-back
 * marks only its own item failed.
 */
static void
write_finished(void)
{
	dlist_mutable_iter iter;
	int			n = 0;
	volatile bool grouped = false;
	MemoryContext oldcxt;
	ResourceOwner oldowner;

	dlist_foreach_modify(iter, &items)
	{
		if (item_finished(dlist_container(WorkItem, node, iter.cur)))
			n++;
	}
	if (n == 0)
		return;

	xact_begin("pg_llm: writing results");
	oldcxt = CurrentMemoryContext;
	oldowner = CurrentResourceOwner;
	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		write_group();
		ReleaseCurrentSubTransaction();
		grouped = true;
	}
	PG_CATCH();
	{
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;

	dlist_foreach_modify(iter, &items)
	{
		WorkItem   *it = dlist_container(WorkItem, node, iter.cur);

		if (!item_finished(it))
			continue;
		if (!grouped)
		{
			BeginInternalSubTransaction(NULL);
			PG_TRY();
			{
				item_write(it);
				ReleaseCurrentSubTransaction();
			}
			PG_CATCH();
			{
				char	   *msg = item_catch(it);

				CurrentResourceOwner = oldowner;

				/* the reply could not be written back: the item fails */
				it->state = ITEM_FAILED;
				it->error = psprintf("the reply could not be written back: %s", msg);
				MemoryContextSwitchTo(oldcxt);
				report_error(it->error);
				BeginInternalSubTransaction(NULL);
				item_write(it);
				ReleaseCurrentSubTransaction();
			}
			PG_END_TRY();
			MemoryContextSwitchTo(oldcxt);
			CurrentResourceOwner = oldowner;
		}
		/* an item whose lease was lost was someone else's to finish */
		if (my_slot >= 0 && it->written && it->state == ITEM_DONE)
			pg_atomic_fetch_add_u64(&LlmShared->workers[my_slot].completed, 1);
		else if (my_slot >= 0 && it->written && it->state == ITEM_FAILED)
			pg_atomic_fetch_add_u64(&LlmShared->workers[my_slot].failed, 1);
		finished_since_rate++;
		item_free(it);
	}
	/* the usage of these items rides in the same transaction */
	if (UsagePending() > 0)
		(void) UsageFlush();
	xact_end();
}

/* ---- the loop ---- */

/* Does the queue exist in this database yet? */
static bool
queue_exists(void)
{
	bool		ok;

	xact_begin("pg_llm: looking for llm.queue");
	ok = OidIsValid(get_namespace_oid("llm", true)) &&
		OidIsValid(get_relname_relid("queue", get_namespace_oid("llm", true)));
	xact_end();
	return ok;
}

/* Write waiting usage records of this database, at most every 200 ms. */
static void
flush_usage(bool force)
{
	static TimestampTz last = 0;
	TimestampTz now = GetCurrentTimestamp();

	if (UsagePending() == 0)
		return;
	if (!force && !TimestampDifferenceExceeds(last, now, 200) && UsagePending() < 500)
		return;
	last = now;
	xact_begin("pg_llm: writing usage");
	(void) UsageFlush();
	xact_end();
}

/*
 * A usage writer started on demand for a database without a queue
 * worker: write records while they come, and leave after a quiet minute.
 */
static void
usage_writer_loop(void)
{
	TimestampTz last_work = GetCurrentTimestamp();

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (UsagePending() > 0)
		{
			xact_begin("pg_llm: writing usage");
			if (UsageFlush() > 0)
				last_work = GetCurrentTimestamp();
			xact_end();
		}
		if (TimestampDifferenceExceeds(last_work, GetCurrentTimestamp(), 60000))
			proc_exit(0);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 200, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

void
pg_llm_worker_main(Datum arg)
{
	TimestampTz last_reclaim = 0;
	bool		drained = false;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(MyBgworkerEntry->bgw_extra, NULL, 0);
	pgstat_report_appname(DatumGetInt32(arg) < 0 ? "pg_llm usage writer" : "pg_llm worker");
	slot_claim(DatumGetInt32(arg));
	worker_ctx = AllocSetContextCreate(TopMemoryContext, "pg_llm worker", ALLOCSET_DEFAULT_SIZES);
	rate_since = GetCurrentTimestamp();
	elog(LOG, "pg_llm worker started for database \"%s\"", MyBgworkerEntry->bgw_extra);

	if (DatumGetInt32(arg) < 0)
	{
		if (queue_exists())
			usage_writer_loop();
		proc_exit(0);
	}

	/* wait for CREATE EXTENSION */
	while (!queue_exists())
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 llm_worker_naptime, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}

	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();
		TimestampTz next_due = 0;
		dlist_iter iter;
		long		timeout;
		int			ready = 0;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		if (TimestampDifferenceExceeds(last_reclaim, now, Min(llm_lease_time * 333, 10000)))
		{
			renew_leases();
			reclaim_expired();
			last_reclaim = now;
			drained = false;
		}

		/* claim the next batch before this one runs dry */
		dlist_foreach(iter, &items)
		{
			WorkItem   *it = dlist_container(WorkItem, node, iter.cur);

			if (it->state == ITEM_READY)
				ready++;
		}
		if (!drained && (ready < llm_batch_size / 2 + 1 ||
						 ready + ninflight < llm_worker_concurrency))
			drained = (claim(llm_batch_size) < llm_batch_size);

		/* fill the free slots */
		dlist_foreach(iter, &items)
		{
			WorkItem   *it = dlist_container(WorkItem, node, iter.cur);

			if (ninflight >= llm_worker_concurrency)
				break;
			if (it->state != ITEM_READY)
				continue;
			if (it->not_before > now)
			{
				if (next_due == 0 || it->not_before < next_due)
					next_due = it->not_before;
				continue;
			}
			item_send(it);
		}
		report_counts();

		/*
		 * Write finished items in groups: when a group is big enough, when
		 * the oldest has waited WRITE_DELAY_MS, or when nothing else runs.
		 */
		if (nfinished > 0 &&
			(nfinished >= WRITE_GROUP || ninflight == 0 ||
			 TimestampDifferenceExceeds(first_finished_at, now, WRITE_DELAY_MS)))
		{
			write_finished();
			nfinished = 0;
		}

		/*
		 * Wait for replies, a wake-up, the next due retry or write; do not
		 * wait at all while there are free slots and the queue may hold more.
		 */
		if (!drained && ninflight < llm_worker_concurrency)
			timeout = 0;
		else
			timeout = ninflight > 0 ? 1000 : llm_worker_naptime;
		if (next_due)
			timeout = Min(timeout, Max(TimestampDifferenceMilliseconds(now, next_due), 1));
		if (nfinished > 0)
			timeout = Min(timeout, WRITE_DELAY_MS);
		if (UsagePending() > 0)
			timeout = Min(timeout, 200);
		report_activity();
		if (HttpPoll(timeout))
			drained = false;	/* an enqueue committed, or a signal */

		{
			HttpTransfer *t;

			while ((t = HttpNextDone()) != NULL)
			{
				WorkItem   *it = (WorkItem *) t->user;

				if (it)
				{
					item_judge(it);
					if (nfinished++ == 0)
						first_finished_at = GetCurrentTimestamp();
				}
				else
					HttpRelease(t);
			}
		}
		flush_usage(false);
	}
}
