/*-------------------------------------------------------------------------
 *
 * slots.c
 *	  pg_llm's background processes in shared memory: each queue worker
 *	  and usage writer takes a slot when it starts and gives it back when
 *	  it exits.  A slot holds the process's latch (an enqueue's commit
 *	  and a usage record set it), the token its queue leases carry, and
 *	  what it reports about itself for llm.worker_status.
 *
 *	  This process's slot is this file's alone; other files see it only
 *	  through the functions below.  Nothing here knows about items,
 *	  batches or usage records.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"
#include "utils/guc.h"

#include "shmem.h"
#include "slots.h"

PG_FUNCTION_INFO_V1(pg_llm_lease_alive);

#define LLM_ERROR_LEN 256

typedef struct LlmWorkerSlot
{
	bool		in_use;
	bool		usage_only;		/* a usage writer, not a queue worker */
	int			pid;
	int64		lease_holder;	/* the token its queue leases carry */
	Oid			dboid;
	Latch	   *latch;
	TimestampTz started_at;
	int			in_flight;		/* requests on the wire */
	int			claimed;		/* leased items held, in flight or not */
	pg_atomic_uint64 completed; /* items done */
	pg_atomic_uint64 failed;	/* items failed for good */
	pg_atomic_uint64 retried;	/* attempts that will be tried again */
	pg_atomic_uint32 batch_wake;	/* items for provider batches were enqueued */
	double		rate;			/* items finished per second, smoothed */
	TimestampTz last_error_at;
	char		last_error[LLM_ERROR_LEN];
} LlmWorkerSlot;

/* The slots, in shared memory. */
typedef struct SlotsShared
{
	LWLock	   *lock;
	pg_atomic_uint64 next_lease_holder; /* new at every start of the server */
	LlmWorkerSlot workers[LLM_MAX_WORKERS];
} SlotsShared;

static SlotsShared *Slots = NULL;

/* llm.database: the databases with a queue worker */
char	   *llm_worker_databases = NULL;

/* this process's slot (-1: none) and the token of its leases */
static int	my_slot = -1;
static int64 my_lease_holder = 0;

/* items finished since the rate was last computed, and since when */
static uint64 finished_since_rate = 0;
static TimestampTz rate_since = 0;

/* Give the slot back when the process exits. */
static void
slot_release(int code, Datum arg)
{
	if (Slots && my_slot >= 0)
	{
		LWLockAcquire(Slots->lock, LW_EXCLUSIVE);
		Slots->workers[my_slot].in_use = false;
		Slots->workers[my_slot].latch = NULL;
		Slots->workers[my_slot].lease_holder = 0;
		LWLockRelease(Slots->lock);
	}
}

/*
 * Start a background process of pg_llm for a database: a queue worker
 * (n, its slot) or a usage writer (n = -1).  Both run pg_llm_worker_main,
 * named by their kind ("pg_llm worker", "pg_llm usage writer") and the
 * database, never restarted by the postmaster; notify_pid (0: none) hears
 * of its start and end.  False when the postmaster has no room for it.
 */
bool
SlotStart(const char *kind, const char *dbname, int n, pid_t notify_pid,
		  struct BackgroundWorkerHandle **handle)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(bgw.bgw_library_name, "pg_llm", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "pg_llm_worker_main", BGW_MAXLEN);
	snprintf(bgw.bgw_name, BGW_MAXLEN, "%s for %s", kind, dbname);
	strlcpy(bgw.bgw_type, kind, BGW_MAXLEN);
	strlcpy(bgw.bgw_extra, dbname, BGW_EXTRALEN);
	bgw.bgw_main_arg = Int32GetDatum(n);
	bgw.bgw_notify_pid = notify_pid;
	return RegisterDynamicBackgroundWorker(&bgw, handle);
}

/*
 * Take slot n (n < 0: a usage writer, any free slot) and a lease token
 * no worker had before.  Without shared memory, or with no slot free,
 * the process runs without one.
 */
void
SlotClaim(int n, bool usage_only)
{
	LlmWorkerSlot *w;

	rate_since = GetCurrentTimestamp();
	if (Slots == NULL || n >= LLM_MAX_WORKERS)
		return;
	LWLockAcquire(Slots->lock, LW_EXCLUSIVE);
	if (n < 0)
	{
		/* a usage writer takes a free slot from the top */
		for (n = LLM_MAX_WORKERS - 1; n >= 0; n--)
			if (!Slots->workers[n].in_use)
				break;
		if (n < 0)
		{
			LWLockRelease(Slots->lock);
			return;
		}
	}
	my_slot = n;
	my_lease_holder = (int64) pg_atomic_fetch_add_u64(&Slots->next_lease_holder, 1);
	w = &Slots->workers[n];
	w->in_use = true;
	w->usage_only = usage_only;
	w->pid = MyProcPid;
	w->lease_holder = my_lease_holder;
	w->dboid = MyDatabaseId;
	w->latch = MyLatch;
	w->started_at = GetCurrentTimestamp();
	w->in_flight = 0;
	w->claimed = 0;
	w->rate = 0;
	w->last_error[0] = '\0';
	LWLockRelease(Slots->lock);
	on_shmem_exit(slot_release, (Datum) 0);
}

/* The token this process's queue leases carry (0: no slot). */
int64
SlotLeaseHolder(void)
{
	return my_lease_holder;
}

/* Note an error for llm.worker_status (the newest wins). */
void
SlotReportError(const char *msg)
{
	LlmWorkerSlot *w;

	if (Slots == NULL || my_slot < 0)
		return;
	w = &Slots->workers[my_slot];
	strlcpy(w->last_error, msg, LLM_ERROR_LEN);
	w->last_error_at = GetCurrentTimestamp();
}

/* Items that are done with (written, or someone else's), for the rate. */
void
SlotCountFinished(int n)
{
	finished_since_rate += n;
}

/*
 * Report the requests in flight and the items held, and, at most once a
 * second, the rate of finished items (smoothed).
 */
void
SlotReportCounts(int in_flight, int claimed)
{
	LlmWorkerSlot *w;
	TimestampTz now = GetCurrentTimestamp();
	long		ms;

	if (Slots == NULL || my_slot < 0)
		return;
	w = &Slots->workers[my_slot];
	w->in_flight = in_flight;
	w->claimed = claimed;
	ms = TimestampDifferenceMilliseconds(rate_since, now);
	if (ms >= 1000)
	{
		double		r = finished_since_rate * 1000.0 / ms;

		w->rate = (w->rate == 0) ? r : 0.5 * w->rate + 0.5 * r;
		finished_since_rate = 0;
		rate_since = now;
	}
}

/* An item written: done, or failed for good (neither: back to pending). */
void
SlotCountWritten(bool done, bool failed)
{
	if (Slots == NULL || my_slot < 0)
		return;
	if (done)
		pg_atomic_fetch_add_u64(&Slots->workers[my_slot].completed, 1);
	else if (failed)
		pg_atomic_fetch_add_u64(&Slots->workers[my_slot].failed, 1);
}

/* An attempt that will be tried again. */
void
SlotCountRetried(void)
{
	if (Slots && my_slot >= 0)
		pg_atomic_fetch_add_u64(&Slots->workers[my_slot].retried, 1);
}

/* Were items for provider batches enqueued since the last look? */
bool
SlotTakeBatchWake(void)
{
	return Slots && my_slot >= 0 &&
		pg_atomic_exchange_u32(&Slots->workers[my_slot].batch_wake, 0) != 0;
}

/*
 * Wake every process serving a database (after an enqueue commits, or
 * when usage records wait).  With for_batches, the items go through
 * provider batch APIs and the workers form batches at once (the other
 * wake-ups do not).
 */
void
SlotWake(Oid dboid, bool for_batches)
{
	int			i;

	if (Slots == NULL)
		return;
	LWLockAcquire(Slots->lock, LW_SHARED);
	for (i = 0; i < LLM_MAX_WORKERS; i++)
	{
		LlmWorkerSlot *w = &Slots->workers[i];

		if (w->in_use && w->dboid == dboid && w->latch)
		{
			if (for_batches)
				pg_atomic_write_u32(&w->batch_wake, 1);
			SetLatch(w->latch);
		}
	}
	LWLockRelease(Slots->lock);
}

/*
 * llm._lease_alive(holder bigint) returns boolean: does a running worker
 * hold leases under this token?  Read by the reclaim, per running row.
 */
Datum
pg_llm_lease_alive(PG_FUNCTION_ARGS)
{
	int64		holder;
	int			i;
	bool		alive = false;

	if (PG_ARGISNULL(0) || Slots == NULL)
		PG_RETURN_BOOL(false);
	holder = PG_GETARG_INT64(0);
	LWLockAcquire(Slots->lock, LW_SHARED);
	for (i = 0; i < LLM_MAX_WORKERS && !alive; i++)
		alive = Slots->workers[i].in_use &&
			Slots->workers[i].lease_holder == holder;
	LWLockRelease(Slots->lock);
	PG_RETURN_BOOL(alive);
}

/*
 * llm.database, read only by the postmaster (which registers a worker for
 * each database it lists) and by the checks of llm.enqueue; defined only
 * while preloading.
 */
void
SlotsDefineSettings(void)
{
	DefineCustomStringVariable("llm.database",
							   "Databases whose llm.queue a worker drains (comma-separated).",
							   "Needs pg_llm in shared_preload_libraries; one worker per database.",
							   &llm_worker_databases, "postgres",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
}

/*
 * The slots in use, copied for llm.worker_status; returns how many (at
 * most LLM_MAX_WORKERS) were put into out.
 */
int
SlotsLook(SlotView *out)
{
	int			i;
	int			n = 0;

	if (Slots == NULL)
		return 0;
	LWLockAcquire(Slots->lock, LW_SHARED);
	for (i = 0; i < LLM_MAX_WORKERS; i++)
	{
		LlmWorkerSlot *w = &Slots->workers[i];
		SlotView   *v = &out[n];

		if (!w->in_use)
			continue;
		v->pid = w->pid;
		v->dboid = w->dboid;
		v->started_at = w->started_at;
		v->in_flight = w->in_flight;
		v->claimed = w->claimed;
		v->completed = (int64) pg_atomic_read_u64(&w->completed);
		v->failed = (int64) pg_atomic_read_u64(&w->failed);
		v->rate = w->rate;
		strlcpy(v->last_error, w->last_error, sizeof(v->last_error));
		v->last_error_at = w->last_error_at;
		v->usage_only = w->usage_only;
		n++;
	}
	LWLockRelease(Slots->lock);
	return n;
}

/* ---- shared memory ---- */

static Size
slots_size(void)
{
	return sizeof(SlotsShared);
}

/* Attach the slots (and set them up the first time). */
static void
slots_attach(void *mem, bool found, LWLockPadded *locks)
{
	int			i;

	Slots = (SlotsShared *) mem;
	if (found)
		return;
	Slots->lock = &locks[0].lock;

	/*
	 * Lease tokens start from the clock, so that those of workers from
	 * before a crash restart are never handed out again.
	 */
	pg_atomic_init_u64(&Slots->next_lease_holder, (uint64) GetCurrentTimestamp() << 8);
	for (i = 0; i < LLM_MAX_WORKERS; i++)
	{
		pg_atomic_init_u64(&Slots->workers[i].completed, 0);
		pg_atomic_init_u64(&Slots->workers[i].failed, 0);
		pg_atomic_init_u64(&Slots->workers[i].retried, 0);
		pg_atomic_init_u32(&Slots->workers[i].batch_wake, 0);
	}
}

const LlmShmemPart SlotsShmemPart = {
	.name = "pg_llm slots",
	.size = slots_size,
	.nlocks = 1,
	.attach = slots_attach,
};

/*
 * Does a process serve a database: a queue worker or a usage writer (with
 * writer_only, a usage writer)?
 */
bool
SlotServing(Oid dboid, bool writer_only)
{
	int			i;
	bool		serving = false;

	if (Slots == NULL)
		return false;
	LWLockAcquire(Slots->lock, LW_SHARED);
	for (i = 0; i < LLM_MAX_WORKERS && !serving; i++)
		serving = Slots->workers[i].in_use && Slots->workers[i].dboid == dboid &&
			(!writer_only || Slots->workers[i].usage_only);
	LWLockRelease(Slots->lock);
	return serving;
}

/* Is slot n held by a live queue worker (one a previous launcher started)? */
bool
SlotAlive(int n)
{
	bool		alive;

	if (Slots == NULL || n < 0 || n >= LLM_MAX_WORKERS)
		return false;
	LWLockAcquire(Slots->lock, LW_SHARED);
	alive = Slots->workers[n].in_use && !Slots->workers[n].usage_only &&
		kill(Slots->workers[n].pid, 0) == 0;
	LWLockRelease(Slots->lock);
	return alive;
}
