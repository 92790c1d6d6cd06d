/*-------------------------------------------------------------------------
 *
 * item.c
 *	  A queue item in the worker, from the row it was made from to the
 *	  moment it is written back and freed, and the worker's transactions.
 *
 *	  Every item is made by ItemFromRow, whether a claim took its row
 *	  (lease.c) or a batch's result names it (batch.c), and every change
 *	  of its state goes through the functions below, which keep the counts
 *	  of its set right.  A set is passed by pointer: the worker has one
 *	  for the items it claimed, a batch's results have theirs while they
 *	  are written; nothing here is global.
 *
 *	  An item's memory is its own context, freed with it.  Everything the
 *	  worker runs in SQL runs in a short transaction of its own
 *	  (ItemXactBegin/End), and whatever fails for one item alone runs in a
 *	  subtransaction (ItemSubxact) whose error becomes that item's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "call.h"
#include "http.h"
#include "schema.h"
#include "slots.h"
#include "usage.h"
#include "worker/item.h"

/* An empty set. */
void
ItemSetInit(ItemSet *set)
{
	memset(set, 0, sizeof(ItemSet));
	dlist_init(&set->items);
}

/*
 * Where the columns of an item are in a result, by name: id, attempts,
 * enqueued_by, and those of prompt, model, system, options,
 * target_table, target_column and target_key that the query returns
 * (-1 for the others).
 */
void
ItemColumnsFind(TupleDesc td, ItemColumns *cols)
{
	const char *const names[] = {"id", "attempts", "enqueued_by", "prompt", "model", "system",
	"options", "target_table", "target_column", "target_key", "reply", "error", "invalid_answers", "spread", "answered",
	"provider", "task", "job_id", "tag"};
	int		   *fields[] = {&cols->id, &cols->attempts, &cols->role, &cols->prompt, &cols->model,
	&cols->system, &cols->options, &cols->table, &cols->column, &cols->key, &cols->reply,
	&cols->error, &cols->invalid_answers, &cols->spread, &cols->answered, &cols->provider, &cols->task,
	&cols->job_id, &cols->tag};
	int			i;

	for (i = 0; i < lengthof(names); i++)
	{
		int			k = SPI_fnumber(td, names[i]);

		*fields[i] = k > 0 ? k : -1;
	}
	if (cols->id < 0 || cols->attempts < 0 || cols->role < 0)
		elog(ERROR, "an item's row lacks its id, attempts or enqueued_by");
}

/* Column k of the row as text in the current context, or NULL. */
static char *
column(HeapTuple tup, TupleDesc td, int k)
{
	return k > 0 ? SPI_getvalue(tup, td, k) : NULL;
}

/*
 * The one way an item is made: from a row of llm.queue (see
 * ItemColumnsFind), READY, at the end of the set.  Its memory outlives
 * the transaction that read the row.
 */
WorkItem *
ItemFromRow(ItemSet *set, HeapTuple tup, TupleDesc td, const ItemColumns *cols)
{
	WorkItem   *it = MemoryContextAllocZero(TopMemoryContext, sizeof(WorkItem));
	MemoryContext old;
	char	   *relid;

	it->ctx = AllocSetContextCreate(TopMemoryContext, "pg_llm queue item", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(it->ctx);
	it->id = strtoll(SPI_getvalue(tup, td, cols->id), NULL, 10);
	it->attempts = atoi(SPI_getvalue(tup, td, cols->attempts));
	it->role = atooid(SPI_getvalue(tup, td, cols->role));
	it->prompt = column(tup, td, cols->prompt);
	it->model = column(tup, td, cols->model);
	it->system = column(tup, td, cols->system);
	it->options = column(tup, td, cols->options);
	if (cols->job_id > 0)
	{
		char	   *job = column(tup, td, cols->job_id);

		it->job_id = job ? strtoll(job, NULL, 10) : 0;
	}
	it->tag = column(tup, td, cols->tag);
	relid = column(tup, td, cols->table);
	it->target_table = relid ? atooid(relid) : InvalidOid;
	it->target_column = column(tup, td, cols->column);
	it->target_key = column(tup, td, cols->key);
	/* (a claimed item's is known for sure once its request is set up) */
	it->shaped = it->options && strstr(it->options, "\"json_schema\"") != NULL &&
		SchemaOptionsHaveSchema(LlmToUtf8(it->options));
	if (cols->spread > 0)
		it->spread = strcmp(SPI_getvalue(tup, td, cols->spread), "t") == 0;
	if (cols->task > 0)
		it->embed = strcmp(SPI_getvalue(tup, td, cols->task), "embed") == 0;
	if (cols->invalid_answers > 0)
		it->invalid_answers = atoi(SPI_getvalue(tup, td, cols->invalid_answers));
	/*
	 * A pending item with a reply: its paid answer whose write-back is
	 * left (answered), or else the answer that broke its schema.
	 */
	it->kept_answer = column(tup, td, cols->reply);
	if (cols->answered > 0 && it->kept_answer)
	{
		char	   *a = column(tup, td, cols->answered);

		it->answered = a && a[0] == 't';
	}
	it->kept_problem = it->kept_answer ? column(tup, td, cols->error) : NULL;
	it->provider = column(tup, td, cols->provider);
	MemoryContextSwitchTo(old);
	it->state = ITEM_READY;
	dlist_push_tail(&set->items, &it->node);
	set->n++;
	return it;
}

/* An item's request is on the wire; the transfer points back to it. */
void
ItemSent(ItemSet *set, WorkItem *it, HttpTransfer *t)
{
	it->xfer = t;
	it->state = ITEM_IN_FLIGHT;
	set->in_flight++;
}

/*
 * A transfer of the worker ended: its call's step (LlmCallStep), with an
 * error raised while judging it (a reply that cannot be read, memory that
 * could not be had) made the call's failure, *f with its message and no
 * Retry-After, instead of the worker's.  The error's copy is made in the
 * caller's memory context, which is current again on return.
 */
LlmStep
ItemCallStep(LlmCall *call, struct HttpTransfer *t, LlmFailure *f, TimestampTz *not_before)
{
	MemoryContext ctx = CurrentMemoryContext;
	volatile LlmStep step = LLM_STEP_FAILED;

	memset(f, 0, sizeof(LlmFailure));
	PG_TRY();
	{
		step = LlmCallStep(call, t, true, f, not_before);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(ctx);
		edata = CopyErrorData();
		FlushErrorState();
		memset(f, 0, sizeof(LlmFailure));
		f->message = edata->message;
		f->retry_after_s = -1;
		step = LLM_STEP_FAILED;
	}
	PG_END_TRY();
	return step;
}

/* An item's request is over: its transfer is released. */
void
ItemAnswered(ItemSet *set, WorkItem *it)
{
	if (it->xfer == NULL)
		return;
	HttpRelease(it->xfer);
	it->xfer = NULL;
	set->in_flight--;
}

/* An item waits (READY) until not_before; error says why, if anything. */
void
ItemWait(WorkItem *it, TimestampTz not_before, char *error)
{
	it->state = ITEM_READY;
	it->not_before = not_before;
	if (error)
		it->error = error;
}

/*
 * An item is finished: it waits to be written with the next group.  A
 * finished item that fails after all (its write-back) is not counted
 * again.
 */
static void
finished(ItemSet *set, WorkItem *it, ItemState state)
{
	bool		was_finished = ItemFinished(it);

	it->state = state;
	if (state == ITEM_FAILED && it->error)
		SlotReportError(it->error);
	if (!was_finished && set->nfinished++ == 0)
		set->first_finished_at = GetCurrentTimestamp();
}

/* An item's reply (UTF-8) is in hand. */
void
ItemDone(ItemSet *set, WorkItem *it, char *reply)
{
	it->reply = reply;
	finished(set, it, ITEM_DONE);
}

/* An item fails for good, with its error (UTF-8). */
void
ItemFail(ItemSet *set, WorkItem *it, char *error)
{
	it->error = error;
	finished(set, it, ITEM_FAILED);
}

/* An item goes back to the queue, to be claimed again from when. */
void
ItemRetryLater(ItemSet *set, WorkItem *it, char *error, TimestampTz when)
{
	it->error = error;
	it->next_attempt_at = when;
	finished(set, it, ITEM_RETRY_LATER);
}

/*
 * An item's answer broke its json_schema and it is asked again: back to
 * the queue at once, as a realtime item, with the answer and what was
 * wrong with it, which its next request shows the model.
 */
void
ItemAskAgain(ItemSet *set, WorkItem *it, char *said, char *problem)
{
	it->said = said;
	it->error = problem;
	it->next_attempt_at = GetCurrentTimestamp();
	finished(set, it, ITEM_RETRY_LATER);
}

/*
 * A served item with a json_schema: its answer validated (the call's
 * usage recorded, "ok" or "invalid"), then done with the valid answer,
 * asked again, or failed when llm.validation_retries answers broke it.
 */
void
ItemJudgeAnswer(ItemSet *set, WorkItem *it, LlmCall *call, const LlmReply *reply)
{
	LlmShapeResult res;
	const char *provider = call->route ? call->route->provider->name : "?";

	SchemaCheckReply(call->req, reply, &res);
	if (res.valid)
	{
		UsageRecord(call, LLM_OUTCOME_OK);
		ItemDone(set, it, res.json);
		return;
	}
	call->error = psprintf("answer does not match the JSON schema at %s, rule \"%s\": %s",
						   res.path, res.rule, res.message);
	UsageRecord(call, LLM_OUTCOME_INVALID);
	if (++it->invalid_answers > llm_validation_retries)
		ItemFail(set, it, psprintf("answer of provider \"%s\" does not match the JSON schema: model \"%s\" was asked %d time%s; its last answer breaks the schema at %s, rule \"%s\": %s",
								   provider, call->model, it->invalid_answers,
								   it->invalid_answers > 1 ? "s" : "", res.path, res.rule, res.message));
	else
		ItemAskAgain(set, it, res.said,
					 psprintf("at %s, rule \"%s\": %s", res.path, res.rule, res.message));
}

/* Is the item finished, waiting to be written? */
bool
ItemFinished(const WorkItem *it)
{
	return it->state == ITEM_DONE || it->state == ITEM_FAILED || it->state == ITEM_RETRY_LATER;
}

/* Forget an item (written, or handed back). */
void
ItemFree(ItemSet *set, WorkItem *it)
{
	ItemAnswered(set, it);
	dlist_delete(&it->node);
	set->n--;
	SlotCountFinished(1);
	MemoryContextDelete(it->ctx);
	pfree(it);
}

/* ---- the worker's transactions ---- */

/* the error code of the last subtransaction that failed */
static int	subxact_code = 0;

/* the memory context current before the transaction, current again after it */
static MemoryContext xact_caller_ctx = NULL;

/* transactions ended so far */
static uint64 xact_count = 0;

/*
 * Start a transaction with SPI connected and a snapshot, shown in
 * pg_stat_activity as activity.
 */
void
ItemXactBegin(const char *activity)
{
	xact_caller_ctx = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

/*
 * Commit, and report the transaction's table statistics (autovacuum); the
 * caller's memory context is current again.
 */
void
ItemXactEnd(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	if (xact_caller_ctx)
		MemoryContextSwitchTo(xact_caller_ctx);
	xact_caller_ctx = NULL;
	(void) pgstat_report_stat(false);
	xact_count++;
}

/*
 * The transactions ended so far: each showed its own activity, so the
 * loop shows its state again when the count moved.
 */
uint64
ItemXactCount(void)
{
	return xact_count;
}

/*
 * Run fn(arg) in a subtransaction, so that an error in it fails only what
 * it was doing.  fn runs in the caller's memory context, not in the
 * subtransaction's: what it allocates lives as long as what the caller
 * allocates (a pass's write-backs of thousands of items prepared each in a
 * subtransaction kept thousands of subtransaction contexts until the
 * pass's commit, 20 kB each).  Returns NULL when it went through, else the
 * error's message: with an item, copied into the item's memory (UTF-8);
 * without one, the error is dropped and an empty message returned.  The
 * caller's memory context and resource owner are current again either way.
 */
const char *
ItemSubxact(void (*fn) (void *), void *arg, WorkItem *it)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	const char *volatile msg = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/*
		 * The error is copied into the item's memory; the rollback leaves
		 * the transaction's context current, so the item's is made current
		 * again before its text is converted.
		 */
		MemoryContextSwitchTo(it ? it->ctx : oldcxt);
		subxact_code = geterrcode();
		edata = it ? CopyErrorData() : NULL;
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		if (it)
		{
			MemoryContextSwitchTo(it->ctx);
			msg = LlmToUtf8(edata->message);
		}
		else
			msg = "";
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;
	return msg;
}

/* The SQLSTATE of the error the last failed ItemSubxact caught. */
int
ItemSubxactCode(void)
{
	return subxact_code;
}
