/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The queue worker's loop: one background worker per database listed
 *	  in llm.database drains llm.queue.
 *
 *	  The loop keeps the pipe full.  It claims items (lease.c), sends them
 *	  concurrently on the process's curl multi handle, outside any
 *	  transaction; when a request finishes its slot takes the next item at
 *	  once, and the next batch is claimed before the current one runs dry.
 *	  Free slots go to the role with the fewest requests in flight, so one
 *	  role's slow items do not hold every slot.  Finished items are written
 *	  in groups (writeback.c).  Waiting is on the latch and curl's sockets
 *	  together: an enqueue's commit wakes the worker; the nap is only a
 *	  fallback.  SIGTERM ends the loop after the finished items are written
 *	  and the unfinished ones handed back.
 *
 *	  Everything the worker runs in SQL runs under a pinned search_path
 *	  (set for the whole process, and again around every write-back), and
 *	  one item's error, whatever it is, fails that item alone.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
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
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "call.h"
#include "schema.h"
#include "http.h"
#include "pg_llm.h"
#include "queue.h"
#include "runas.h"
#include "shmem.h"
#include "slots.h"
#include "usage.h"
#include "worker/batch.h"
#include "worker/item.h"

PGDLLEXPORT void pg_llm_worker_main(Datum arg);

char	   *llm_worker_databases = NULL;
int			llm_batch_size = 50;
int			llm_worker_concurrency = 50;
int			llm_max_attempts = 5;
int			llm_batch_max_expiries = 3;
int			llm_lease_time = 600;
int			llm_worker_naptime = 10000;

/* the items this worker holds (claimed, in flight, finished) */
static ItemSet items;
int			WorkerConcurrency = 50; /* llm.worker_concurrency, as far as it fits */

/* finished items are written in groups (see the loop) */
#define WRITE_GROUP 32
#define WRITE_DELAY_MS 10

/* how often leases of dead workers are looked for, at most */
#define RECLAIM_INTERVAL_MS 5000

/* ---- settings ---- */

/*
 * Descriptors for llm.worker_concurrency requests in flight: the limit on
 * open files is raised as far as needed; when it cannot be, a warning
 * says what to raise and the worker keeps as many in flight as fit.
 */
static void
reserve_descriptors(void)
{
	WorkerConcurrency = HttpReserve(llm_worker_concurrency, "llm.worker_concurrency", WARNING);
}

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
							"Each takes a file descriptor; the worker raises its limit on open files as far as the hard limit allows, and keeps fewer in flight when even that is too low.",
							&llm_worker_concurrency, 50, 1, 1000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.max_attempts",
							"Claims of a queue item before it fails for good.",
							NULL, &llm_max_attempts, 5, 1, 1000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.batch_max_expiries",
							"Times a queue item's provider batch may expire before it ran, before the item is sent realtime.",
							"An expiry (or cancellation) is not the request's fault and uses none of llm.max_attempts.",
							&llm_batch_max_expiries, 3, 1, 1000,
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
	DefineCustomIntVariable("llm.batch_poll_interval",
							"How often a queue worker asks providers about its submitted batches, and forms new ones.",
							"Items enqueued with via => 'batch_api' also form a batch when their enqueue wakes the worker.",
							&llm_batch_poll_interval, 60, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
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

/* ---- reports ---- */

/* Show what the worker is doing in pg_stat_activity, when it changes. */
static void
report_activity(void)
{
	static int	last_inflight = -1;
	static int	last_items = -1;
	static uint64 last_xacts = 0;
	char		buf[128];

	/* a transaction showed its own activity: show the loop's state again */
	if (ItemXactCount() != last_xacts)
	{
		last_xacts = ItemXactCount();
		last_inflight = -1;
	}
	if (items.in_flight == last_inflight && items.n == last_items)
		return;
	last_inflight = items.in_flight;
	last_items = items.n;
	if (items.in_flight == 0 && items.n == 0)
	{
		pgstat_report_activity(STATE_IDLE, NULL);
		return;
	}
	snprintf(buf, sizeof(buf), "pg_llm: %d requests in flight, %d items claimed",
			 items.in_flight, items.n);
	pgstat_report_activity(STATE_RUNNING, buf);
}

/* ---- sending and judging ---- */

/*
 * Send an item's next attempt, when it is its route's turn under the
 * cluster's limits and cooldowns (else it waits, READY, until then).
 * Building the request can fail for this item alone (an option its
 * route's protocol refuses, a key's variable not set): the item fails,
 * the worker goes on.
 */
static void
item_send(ItemSet *set, WorkItem *it)
{
	MemoryContext old = MemoryContextSwitchTo(it->ctx);

	PG_TRY();
	{
		LlmFailure	f;
		TimestampTz not_before;

		if (LlmCallTurn(it->call, &not_before, &f))
		{
			HttpTransfer *t = LlmSendAttempt(it->call, LlmCallRoute(it->call), false);

			t->user = it;
			t->user_kind = WORK_ITEM;
			ItemSent(set, it, t);
		}
		else if (not_before)
			it->not_before = not_before;
		else
		{
			ItemFail(set, it, LlmFailureText(&f));
			UsageRecord(it->call, LLM_OUTCOME_ERROR);
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(it->ctx);
		edata = CopyErrorData();
		FlushErrorState();
		ItemFail(set, it, LlmToUtf8(edata->message));
		UsageRecord(it->call, LLM_OUTCOME_ERROR);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
}

/*
 * Decide what happens to an item after an attempt: done, another try
 * (after the delay the provider asked for, or backoff), the next route of
 * the chain, back to the queue for later, or failed.  The decision is the
 * call engine's (LlmCallStep), as for every call; only "back to the
 * queue" is the worker's own.  A 429 is the provider's pace, waited out
 * with the item kept, never a failed try.  Runs outside a transaction:
 * texts stay UTF-8 until they are written, and an error here fails the
 * item alone.
 */
static void
item_judge(ItemSet *set, WorkItem *it)
{
	MemoryContext old = MemoryContextSwitchTo(it->ctx);
	LlmFailure	f;
	volatile LlmStep step = LLM_STEP_FAILED;
	TimestampTz not_before = 0;
	volatile LlmOutcome outcome = LLM_OUTCOME_ERROR;

	memset(&f, 0, sizeof(f));
	PG_TRY();
	{
		step = LlmCallStep(it->call, it->xfer, true, &f, &not_before);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(it->ctx);
		edata = CopyErrorData();
		FlushErrorState();
		memset(&f, 0, sizeof(f));
		f.message = edata->message;
		f.retry_after_s = -1;
		step = LLM_STEP_FAILED;
	}
	PG_END_TRY();
	ItemAnswered(set, it);

	switch (step)
	{
		case LLM_STEP_DONE:
			if (RequestHasSchema(it->call->req))
			{
				/* a refusal is no answer, and asking again gets the same */
				if (LlmReplyRefused(it->call, &f))
				{
					outcome = LLM_OUTCOME_REFUSED;
					ItemFail(set, it, LlmFailureText(&f));
				}
				else
					ItemJudgeAnswer(set, it, it->call, &it->call->reply);
			}
			else
			{
				const char *content = it->call->reply.content;

				/* a refusal, a tool call, a paused turn, no text: failed */
				outcome = LlmJudgeText(it->call, content && content[0] != '\0', &f);
				if (outcome != LLM_OUTCOME_OK)
					ItemFail(set, it, LlmFailureText(&f));
				else
					ItemDone(set, it, it->call->reply.content);
			}
			break;
		case LLM_STEP_AGAIN:
			ItemWait(it, not_before, LlmFailureText(&f));
			SlotCountRetried();
			break;
		case LLM_STEP_FAILED:
			ItemFail(set, it, LlmFailureText(&f));
			break;
		case LLM_STEP_SPENT:
			if (it->attempts >= llm_max_attempts)
				ItemFail(set, it, LlmFailureText(&f));
			else
			{
				/*
				 * Back to the queue; a later claim starts the chain again,
				 * no sooner than the provider asked (even when that is
				 * more than a call waits for).
				 */
				TimestampTz backoff = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
																  Min(1000L << Min(it->attempts, 10), 300000L));

				ItemRetryLater(set, it, LlmFailureText(&f), Max(backoff, not_before));
			}
			break;
	}
	if (it->state == ITEM_DONE)
		UsageRecord(it->call, LLM_OUTCOME_OK);
	else if (it->state == ITEM_FAILED)
		UsageRecord(it->call, outcome);
	else if (it->state == ITEM_RETRY_LATER)
		UsageRecord(it->call, LLM_OUTCOME_RETRY);
	MemoryContextSwitchTo(old);
}

/* ---- sharing the slots between roles ---- */

#define MAX_ROLES_TRACKED 64

typedef struct RoleLoad
{
	Oid			role;
	int			in_flight;
} RoleLoad;

/* Is an item set up, ready and due? */
static inline bool
item_sendable(const WorkItem *it, TimestampTz now, TimestampTz *next_due)
{
	if (it->state != ITEM_READY || it->call == NULL)
		return false;
	if (it->not_before > now)
	{
		if (*next_due == 0 || it->not_before < *next_due)
			*next_due = it->not_before;
		return false;
	}
	return true;
}

/*
 * Fill the free slots.  With one role (the common case) items go in
 * claim order; with several, each free slot goes to the role with the
 * fewest requests in flight that has an item ready.  Returns the time
 * the next retry is due (0: none).
 */
static TimestampTz
fill_slots(ItemSet *set, TimestampTz now)
{
	RoleLoad	roles[MAX_ROLES_TRACKED];
	int			nroles = 0;
	bool		many = false;
	dlist_iter	iter;
	TimestampTz next_due = 0;

	dlist_foreach(iter, &set->items)
	{
		WorkItem   *it = dlist_container(WorkItem, node, iter.cur);
		int			r;

		for (r = 0; r < nroles && roles[r].role != it->role; r++)
			;
		if (r == nroles && nroles < MAX_ROLES_TRACKED)
		{
			roles[nroles].role = it->role;
			roles[nroles].in_flight = 0;
			nroles++;
		}
		if (r < nroles && it->state == ITEM_IN_FLIGHT)
			roles[r].in_flight++;
	}
	many = nroles > 1;

	while (set->in_flight < WorkerConcurrency)
	{
		WorkItem   *best = NULL;
		int			best_load = INT_MAX;
		int			best_r = -1;

		dlist_foreach(iter, &set->items)
		{
			WorkItem   *it = dlist_container(WorkItem, node, iter.cur);
			int			r;

			if (!item_sendable(it, now, &next_due))
				continue;
			if (!many)
			{
				best = it;
				break;
			}
			for (r = 0; r < nroles && roles[r].role != it->role; r++)
				;
			if (r < nroles && roles[r].in_flight < best_load)
			{
				best = it;
				best_load = roles[r].in_flight;
				best_r = r;
				if (best_load == 0)
					break;
			}
			else if (r == nroles && best == NULL)
				best = it;
		}
		if (best == NULL)
			break;
		item_send(set, best);
		if (best_r >= 0 && best->state == ITEM_IN_FLIGHT)
			roles[best_r].in_flight++;
	}
	return next_due;
}

/* ---- the loop ---- */

/*
 * Is pg_llm installed in this database, at the library's version?  The
 * worker waits (and says so once) while the extension is missing or its
 * install script is older than the library.
 */
static bool
queue_exists(void)
{
	static bool said = false;
	char	   *version = NULL;
	bool		ok;

	ItemXactBegin("pg_llm: looking for llm.queue");
	if (SPI_execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_llm'",
					true, 1) == SPI_OK_SELECT && SPI_processed == 1)
		version = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (version && strcmp(version, PG_LLM_VERSION) != 0 && !said)
	{
		elog(LOG, "pg_llm worker: pg_llm %s is installed in database \"%s\" but the server runs pg_llm %s; waiting for ALTER EXTENSION pg_llm UPDATE",
			 version, MyBgworkerEntry->bgw_extra, PG_LLM_VERSION);
		said = true;
	}
	ok = version != NULL && strcmp(version, PG_LLM_VERSION) == 0;
	ItemXactEnd();
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
	ItemXactBegin("pg_llm: writing usage");
	(void) UsageFlush();
	ItemXactEnd();
}

/* SIGHUP and the end of the loop on SIGTERM. */
static void
handle_signals(void)
{
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
		reserve_descriptors();
	}
}

/*
 * A usage writer started on demand for a database without a queue
 * worker: write records while they come, and leave after a quiet minute.
 */
static void
usage_writer_loop(void)
{
	TimestampTz last_work = GetCurrentTimestamp();

	while (!ShutdownRequestPending)
	{
		CHECK_FOR_INTERRUPTS();
		handle_signals();
		if (UsagePending() > 0)
		{
			ItemXactBegin("pg_llm: writing usage");
			if (UsageFlush() > 0)
				last_work = GetCurrentTimestamp();
			ItemXactEnd();
		}
		if (TimestampDifferenceExceeds(last_work, GetCurrentTimestamp(), 60000))
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 200, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	flush_usage(true);
}

/*
 * The worker was told to stop: write what is finished, hand back what is
 * not, write the usage, and leave.
 */
static void
worker_stop(void)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &items.items)
		ItemAnswered(&items, dlist_container(WorkItem, node, iter.cur));
	BatchStop();
	WritebackSet(&items);
	LeaseHandBack(&items);
	flush_usage(true);

	/*
	 * Exit code 1: the postmaster starts a new worker after its restart
	 * interval, so that one ended by pg_terminate_backend comes back (at
	 * shutdown nothing is started again).
	 */
	proc_exit(1);
}

void
pg_llm_worker_main(Datum arg)
{
	TimestampTz last_reclaim = 0;
	TimestampTz last_renew = 0;
	bool		drained = false;
	MemoryContext loop_ctx;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(MyBgworkerEntry->bgw_extra, NULL, 0);
	pgstat_report_appname(DatumGetInt32(arg) < 0 ? "pg_llm usage writer" : "pg_llm worker");

	/* no name in the worker's SQL may resolve through a path others write */
	SetConfigOption("search_path", LLM_SAFE_SEARCH_PATH, PGC_SUSET, PGC_S_OVERRIDE);

	SlotClaim(DatumGetInt32(arg), DatumGetInt32(arg) < 0);
	ItemSetInit(&items);
	loop_ctx = AllocSetContextCreate(TopMemoryContext, "pg_llm worker loop", ALLOCSET_DEFAULT_SIZES);
	elog(LOG, "pg_llm worker started for database \"%s\"", MyBgworkerEntry->bgw_extra);

	if (DatumGetInt32(arg) < 0)
	{
		if (queue_exists())
			usage_writer_loop();
		proc_exit(0);
	}

	reserve_descriptors();

	/* wait for CREATE EXTENSION (or ALTER EXTENSION UPDATE) */
	while (!queue_exists())
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 llm_worker_naptime, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		handle_signals();
		if (ShutdownRequestPending)
			proc_exit(1);
	}

	for (;;)
	{
		TimestampTz now;
		TimestampTz next_due;
		dlist_iter	iter;
		long		timeout;
		int			ready = 0;

		/* everything a pass allocates outside an item goes with the pass */
		MemoryContextReset(loop_ctx);
		MemoryContextSwitchTo(loop_ctx);
		now = GetCurrentTimestamp();

		CHECK_FOR_INTERRUPTS();
		handle_signals();
		if (ShutdownRequestPending)
			worker_stop();

		/* leases: renew every third of the lease, take back dead holders' */
		if (TimestampDifferenceExceeds(last_renew, now, llm_lease_time * 333))
		{
			LeaseRenew(&items);
			last_renew = now;
		}
		if (TimestampDifferenceExceeds(last_reclaim, now,
									   Min(llm_lease_time * 333, RECLAIM_INTERVAL_MS)))
		{
			LeaseReclaim();
			last_reclaim = now;
			drained = false;
		}

		/* claim the next batch before this one runs dry */
		dlist_foreach(iter, &items.items)
		{
			WorkItem   *it = dlist_container(WorkItem, node, iter.cur);

			if (it->state == ITEM_READY)
				ready++;
		}
		if (!drained && (ready < llm_batch_size / 2 + 1 ||
						 ready + items.in_flight < WorkerConcurrency))
		{
			drained = (LeaseClaim(&items, llm_batch_size) < llm_batch_size);
			LeaseSetUp(&items);
		}

		next_due = fill_slots(&items, now);

		/* provider batches: form, send, poll what is due */
		BatchTick(SlotTakeBatchWake());
		SlotReportCounts(items.in_flight, items.n);

		/*
		 * Write finished items in groups: when a group is big enough, when
		 * the oldest has waited WRITE_DELAY_MS, or when nothing else runs.
		 */
		if (items.nfinished > 0 &&
			(items.nfinished >= WRITE_GROUP || items.in_flight == 0 ||
			 TimestampDifferenceExceeds(items.first_finished_at, now, WRITE_DELAY_MS)))
			WritebackSet(&items);

		/*
		 * Wait for replies, a wake-up, the next due retry or write; do not
		 * wait at all while there are free slots and the queue may hold more.
		 */
		if (!drained && items.in_flight < WorkerConcurrency)
			timeout = 0;
		else
			timeout = items.in_flight > 0 ? 1000 : llm_worker_naptime;
		if (next_due)
			timeout = Min(timeout, Max(TimestampDifferenceMilliseconds(now, next_due), 1));
		if (items.nfinished > 0)
			timeout = Min(timeout, WRITE_DELAY_MS);
		if (UsagePending() > 0)
			timeout = Min(timeout, 200);
		timeout = Min(timeout, RECLAIM_INTERVAL_MS);
		{
			long		bt = BatchTimeout();

			if (bt >= 0)
				timeout = Min(timeout, bt);
		}
		report_activity();
		if (HttpPoll(timeout))
			drained = false;	/* an enqueue committed, or a signal */

		{
			HttpTransfer *t;

			while ((t = HttpNextDone()) != NULL)
			{
				if (t->user && t->user_kind == WORK_BATCH)
					BatchTransferDone(t);
				else if (t->user)
					item_judge(&items, (WorkItem *) t->user);
				else
					HttpRelease(t);
			}
		}
		flush_usage(false);
	}
}
