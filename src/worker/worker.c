/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The queue worker's loop: one background worker per database listed
 *	  in llm.database drains llm.queue.
 *
 *	  The loop keeps the pipe full.  Each pass claims items before those it
 *	  holds run dry (lease.c), lets each transport send what is due (the
 *	  realtime one, realtime.c: one request an item, outside any
 *	  transaction; the provider batch APIs, batch.c), writes finished
 *	  items in groups (writeback.c), and waits on the latch and curl's
 *	  sockets together, at most until the earliest work the transports
 *	  have due: an enqueue's commit wakes the worker, the nap is only a
 *	  fallback.  Each finished transfer goes back to the transport that
 *	  started it.  SIGTERM ends the loop after the finished items are
 *	  written and the unfinished ones handed back.
 *
 *	  Everything the worker runs in SQL runs under a pinned search_path
 *	  (set for the whole process, and again around every write-back), and
 *	  one item's error, whatever it is, fails that item alone.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "lib/ilist.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "call.h"
#include "http.h"
#include "embed.h"
#include "queue.h"
#include "runas.h"
#include "shmem.h"
#include "slots.h"
#include "usage.h"
#include "worker/batch.h"
#include "worker/item.h"
#include "worker/transport.h"

PGDLLEXPORT void pg_llm_worker_main(Datum arg);

int			llm_batch_size = 50;
int			llm_worker_concurrency = 50;
int			llm_max_attempts = 5;
int			llm_batch_max_expiries = 3;
int			llm_lease_time = 600;
int			llm_worker_naptime = 10000;

/* the items this worker holds (claimed, in flight, finished) */
static ItemSet items;
int			WorkerConcurrency = 50; /* llm.worker_concurrency, as far as it fits */
int			WorkerSpare = 0;	/* beyond it, for roles with nothing in flight */

/* the transports, by the id their transfers carry */
static const WorkTransport *const transports[TRANSPORTS] = {
	[TRANSPORT_REALTIME] = &RealtimeTransport,
	[TRANSPORT_BATCH] = &BatchTransport,
	[TRANSPORT_EMBEDDING] = &EmbeddingTransport,
};

/* the last claim found fewer items than it asked for */
static bool drained = false;

/* other roles' items are to be looked for (a wake-up, or a second passed) */
static bool others_due = false;

/* the same for embedding items, and whether a claim of them is wanted */
static bool embed_drained = false;
static bool embed_wanted = false;

/* embedding items claimed at once, at most */
#define EMBED_CLAIM_MAX 10000

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
	int			spare = Min(16, Max(1, llm_worker_concurrency / 10));

	WorkerConcurrency = HttpReserve(llm_worker_concurrency, "llm.worker_concurrency", WARNING);
	/* a few more, as far as they fit, for roles starved of slots */
	WorkerSpare = Max(0, HttpReserve(WorkerConcurrency + spare, "llm.worker_concurrency", DEBUG1) -
					  WorkerConcurrency);
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
	DefineCustomIntVariable("llm.writeback_timeout",
							"Longest time a queue worker waits for one reply's write-back (locks, triggers, checks).",
							"A write-back held up longer (a lock on the target row or table held in an idle transaction, a slow trigger) is put off and tried again later without a new call, then failed with its reply kept; the role's other write-backs wait meanwhile, other roles' do not. 0 waits without limit.",
							&llm_writeback_timeout, 10000, 0, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.batch_poll_interval",
							"How often a queue worker asks providers about its submitted batches, and forms new ones.",
							"Items enqueued with via => 'batch_api' also form a batch when their enqueue wakes the worker.",
							&llm_batch_poll_interval, 60, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
}

/* The databases llm.database lists (at most LLM_MAX_WORKERS). */
static List *
listed_databases(int elevel)
{
	char	   *raw = pstrdup(llm_worker_databases ? llm_worker_databases : "");
	List	   *names = NIL;

	if (!SplitIdentifierString(raw, ',', &names))
	{
		ereport(elevel,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid list syntax in \"llm.database\""),
				 errhint("List database names separated by commas, such as 'app, reports'.")));
		return NIL;
	}
	if (list_length(names) > LLM_MAX_WORKERS)
		names = list_truncate(names, LLM_MAX_WORKERS);
	return names;
}

/*
 * Register the launcher, which starts one worker per listed database as
 * soon as the database exists (and again after a worker ends); called
 * while preloading.
 */
void
WorkerRegister(void)
{
	BackgroundWorker bgw;

	if (listed_databases(ERROR) == NIL)
		return;
	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	strlcpy(bgw.bgw_library_name, "pg_llm", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "pg_llm_launcher_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, "pg_llm launcher", BGW_MAXLEN);
	strlcpy(bgw.bgw_type, "pg_llm launcher", BGW_MAXLEN);
	RegisterBackgroundWorker(&bgw);
}

/* ---- the launcher ---- */

/* how long a database's worker that ended waits to be started again */
#define WORKER_RESTART_MS 5000

typedef struct LaunchedDb
{
	char	   *name;
	BackgroundWorkerHandle *handle;
	TimestampTz not_before;
	bool		said_missing;
} LaunchedDb;

/*
 * Does a database of that name exist?  The launcher has no database, so
 * it reads pg_database as the postmaster's children do before they have
 * one: through its index only once the shared catalogs' cache entries are
 * built (get_database_oid would open the index and read pg_class, which
 * a process without a database cannot: the launcher's first look at a
 * cluster just started failed with FATAL, and its workers started 5 s
 * late).
 */
static bool
database_exists(const char *name)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	bool		found;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_database_datname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum(name));
	scan = systable_beginscan(rel, DatabaseNameIndexId, criticalSharedRelcachesBuilt,
							  NULL, 1, &key);
	found = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return found;
}

/* Start the worker of database n (slot n). */
static void
launch(LaunchedDb *db, int n)
{
	if (!SlotStart("pg_llm worker", db->name, n, MyProcPid, &db->handle))
	{
		db->handle = NULL;
		db->not_before = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), WORKER_RESTART_MS);
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start the pg_llm worker for database \"%s\"", db->name),
				 errhint("Raise max_worker_processes.")));
	}
}

/*
 * The launcher: one worker per database of llm.database, started when the
 * database exists.  A database that does not exist (yet) is said once in
 * the log and looked for again every few seconds: its worker starts once
 * it is created, with no restart loop in between.  A worker that ends (a
 * terminate, an error) is started again after WORKER_RESTART_MS; at
 * shutdown nothing is.
 */
PGDLLEXPORT void pg_llm_launcher_main(Datum arg);

void
pg_llm_launcher_main(Datum arg)
{
	List	   *names;
	LaunchedDb *dbs;
	int			ndbs;
	int			i;
	ListCell   *lc;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("pg_llm launcher");

	names = listed_databases(LOG);
	ndbs = list_length(names);
	dbs = palloc0(sizeof(LaunchedDb) * Max(ndbs, 1));
	i = 0;
	foreach(lc, names)
		dbs[i++].name = pstrdup((char *) lfirst(lc));

	while (!ShutdownRequestPending)
	{
		TimestampTz now = GetCurrentTimestamp();

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		for (i = 0; i < ndbs; i++)
		{
			LaunchedDb *db = &dbs[i];
			pid_t		pid;

			if (db->handle)
			{
				if (GetBackgroundWorkerPid(db->handle, &pid) != BGWH_STOPPED)
					continue;
				pfree(db->handle);
				db->handle = NULL;
				db->not_before = TimestampTzPlusMilliseconds(now, WORKER_RESTART_MS);
				continue;
			}
			if (now < db->not_before || SlotAlive(i))
				continue;
			if (!database_exists(db->name))
			{
				if (!db->said_missing)
					ereport(LOG,
							(errmsg("pg_llm launcher: database \"%s\" named in llm.database does not exist; its worker starts when it is created",
									db->name),
							 errhint("Create the database, or remove it from llm.database.")));
				db->said_missing = true;
				db->not_before = TimestampTzPlusMilliseconds(now, WORKER_RESTART_MS);
				continue;
			}
			if (db->said_missing)
				elog(LOG, "pg_llm launcher: database \"%s\" exists now; starting its worker", db->name);
			db->said_missing = false;
			launch(db, i);
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	/* 1: one terminated is started again (at shutdown nothing is) */
	proc_exit(1);
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
 * Is this process's database being dropped (or renamed, or moved)?  Those
 * take its lock in AccessExclusiveLock mode and then wait a few seconds
 * for every other process of the database to leave; a lock taken and
 * given back at once, without waiting, tells.
 */
static bool
database_wanted_away(void)
{
	LOCKTAG		tag;

	SET_LOCKTAG_OBJECT(tag, InvalidOid, DatabaseRelationId, MyDatabaseId, 0);
	if (LockAcquire(&tag, RowExclusiveLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
		return true;
	LockRelease(&tag, RowExclusiveLock, true);
	return false;
}

/*
 * A usage writer started on demand for a database without a queue
 * worker: write records while they come, and leave after a quiet minute,
 * or at once (its records written) when its database is being dropped,
 * which would otherwise wait for it and fail.
 */
static void
usage_writer_loop(void)
{
	TimestampTz last_work = GetCurrentTimestamp();

	while (!ShutdownRequestPending)
	{
		CHECK_FOR_INTERRUPTS();
		handle_signals();
		if (database_wanted_away())
		{
			elog(DEBUG1, "pg_llm usage writer: database \"%s\" is being dropped; leaving",
				 MyBgworkerEntry->bgw_extra);
			break;
		}
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
	int			k;

	for (k = 0; k < TRANSPORTS; k++)
		transports[k]->stop(&items);
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

/* Leases: renew every third of the lease, take back dead holders'. */
static void
keep_leases(TimestampTz now)
{
	static TimestampTz last_renew = 0;
	static TimestampTz last_reclaim = 0;
	static TimestampTz last_others = 0;

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
		embed_drained = false;
	}
	if (TimestampDifferenceExceeds(last_others, now, 1000))
	{
		others_due = true;
		last_others = now;
	}
}

/* Claim the next items before those held run dry, and set them up. */
static void
claim(void)
{
	dlist_iter	iter;
	int			ready = 0;
	int			held_embed = 0;
	int			slots = WorkerConcurrency - items.in_flight;
	int			want;

	dlist_foreach(iter, &items.items)
	{
		WorkItem   *it = dlist_container(WorkItem, node, iter.cur);

		if (it->embed && (it->state == ITEM_READY || it->state == ITEM_IN_FLIGHT))
			held_embed++;
		else if (it->state == ITEM_READY)
			ready++;
	}
	if (!drained && (ready < llm_batch_size / 2 + 1 ||
					 ready + items.in_flight < WorkerConcurrency))
	{
		drained = (LeaseClaim(&items, llm_batch_size) < llm_batch_size);
		LeaseSetUp(&items);
		others_due = false;
	}
	else if (others_due && ready > 0)
	{
		/*
		 * Enough items held, but perhaps all of a few roles: the others'
		 * ready items are claimed too (after a wake-up, and each second),
		 * so that they get the next free slot, not the one after the
		 * backlog.
		 */
		if (LeaseClaimOthers(&items, llm_batch_size) > 0)
			LeaseSetUp(&items);
		others_due = false;
	}

	/*
	 * Embeddings: enough items to fill every request slot, many inputs a
	 * request, in one claim, when a slot is free; no more than that are
	 * held unfinished (the memory a worker needs does not grow with the
	 * queue).
	 */
	want = Min(WorkerConcurrency * llm_embed_inputs_per_request - held_embed, EMBED_CLAIM_MAX);
	embed_wanted = !embed_drained && slots > 0 && want > 0;
	if (embed_wanted)
	{
		embed_drained = (LeaseClaimEmbeddings(&items, want) < want);
		embed_wanted = !embed_drained;
		LeaseSetUp(&items);
	}
}

/*
 * How long to wait: not at all while there are free slots and the queue
 * may hold more; else until a reply, a wake-up, or the earliest of the
 * transports' next work, the next write of finished items, the usage and
 * the reclaim.
 */
static long
wait_time(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		timeout;
	int			k;

	if ((!drained || embed_wanted) && items.in_flight < WorkerConcurrency)
		return 0;
	timeout = items.in_flight > 0 ? 1000 : llm_worker_naptime;
	for (k = 0; k < TRANSPORTS; k++)
	{
		TimestampTz due = transports[k]->next_due(&items);

		if (due)
			timeout = Min(timeout, due <= now ? 0 : Max(TimestampDifferenceMilliseconds(now, due), 1));
	}
	if (items.nfinished > 0)
		timeout = Min(timeout, WRITE_DELAY_MS);
	if (UsagePending() > 0)
		timeout = Min(timeout, 200);
	return Min(timeout, RECLAIM_INTERVAL_MS);
}

/*
 * The loop: claim, each transport's pass, write what is finished, wait
 * for replies or a wake-up, hand each finished transfer to its transport,
 * write the usage.
 */
static void
worker_loop(void)
{
	MemoryContext loop_ctx = AllocSetContextCreate(TopMemoryContext, "pg_llm worker loop",
												   ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		TimestampTz now;
		HttpTransfer *t;
		int			k;

		/* everything a pass allocates outside an item goes with the pass */
		MemoryContextReset(loop_ctx);
		MemoryContextSwitchTo(loop_ctx);
		now = GetCurrentTimestamp();

		CHECK_FOR_INTERRUPTS();
		handle_signals();
		if (ShutdownRequestPending)
			worker_stop();

		keep_leases(now);
		claim();
		for (k = 0; k < TRANSPORTS; k++)
			transports[k]->tick(&items, now);

		/*
		 * Write finished items in groups: when a group is big enough, when
		 * the oldest has waited WRITE_DELAY_MS, or when nothing else runs.
		 */
		if (items.nfinished > 0 &&
			(items.nfinished >= WRITE_GROUP || items.in_flight == 0 ||
			 TimestampDifferenceExceeds(items.first_finished_at, now, WRITE_DELAY_MS)))
			WritebackSet(&items);

		/* what llm.workers shows, as it is before the wait (not as it was) */
		SlotReportCounts(items.in_flight, items.n);
		report_activity();
		if (HttpPoll(wait_time()))
		{
			drained = false;	/* an enqueue committed, or a signal */
			others_due = true;
			embed_drained = false;
		}
		while ((t = HttpNextDone()) != NULL)
		{
			if (t->user && t->user_kind >= 0 && t->user_kind < TRANSPORTS)
				transports[t->user_kind]->done(&items, t);
			else
				HttpRelease(t);
		}
		flush_usage(false);
	}
}

void
pg_llm_worker_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(MyBgworkerEntry->bgw_extra, NULL, 0);
	pgstat_report_appname(DatumGetInt32(arg) < 0 ? "pg_llm usage writer" : "pg_llm worker");

	/* no name in the worker's SQL may resolve through a path others write */
	SetConfigOption("search_path", LLM_SAFE_SEARCH_PATH, PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * Every commit of the worker is on disk before it goes on, whatever
	 * the server's synchronous_commit: a reply marked done (or saved
	 * before its write-back) must not be lost in a crash that keeps what
	 * the provider charged for, or what another node (a Citus worker
	 * node) already committed, and have the item sent again.
	 */
	SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_OVERRIDE);

	SlotClaim(DatumGetInt32(arg), DatumGetInt32(arg) < 0);
	ItemSetInit(&items);
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
	worker_loop();
}
