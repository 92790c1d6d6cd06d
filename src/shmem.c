/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  Shared memory for pg_llm: requested at preload, initialised once by
 *	  the postmaster, inherited by every backend and worker.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "ratelimit.h"
#include "shmem.h"

LlmSharedState *LlmShared = NULL;
int			llm_usage_buffer = 8192;

/* The size of the shared state with its usage ring. */
static Size
shared_size(void)
{
	return add_size(offsetof(LlmSharedState, usage),
					mul_size(llm_usage_buffer, sizeof(LlmUsageRecord)));
}

static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
#ifdef LLM_HAS_SHMEM_REQUEST_HOOK
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif

/* Ask for our space and our lock (from 15 on, in the request hook). */
static void
llm_shmem_request(void)
{
#ifdef LLM_HAS_SHMEM_REQUEST_HOOK
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	RequestAddinShmemSpace(MAXALIGN(shared_size()) + RateLimitShmemSize());
	RequestNamedLWLockTranche("pg_llm", 3);
}

/* Create or attach the shared state. */
static void
llm_shmem_startup(void)
{
	bool		found;
	int			i;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	LlmShared = ShmemInitStruct("pg_llm", shared_size(), &found);
	if (!found)
	{
		memset(LlmShared, 0, shared_size());
		LlmShared->lock = &(GetNamedLWLockTranche("pg_llm"))[0].lock;
		LlmShared->usage_lock = &(GetNamedLWLockTranche("pg_llm"))[1].lock;
		LlmShared->usage_slots = llm_usage_buffer;
		/*
		 * Lease tokens start from the clock, so that those of workers from
		 * before a crash restart are never handed out again.
		 */
		pg_atomic_init_u64(&LlmShared->next_lease_holder,
						   (uint64) GetCurrentTimestamp() << 8);
		/* every usage slot starts on the free list */
		for (i = 0; i < llm_usage_buffer; i++)
			LlmShared->usage[i].next = (i + 1 < llm_usage_buffer) ? i + 1 : -1;
		LlmShared->usage_free = 0;
		LlmShared->usage_nfree = llm_usage_buffer;
		ConditionVariableInit(&LlmShared->usage_room);
		pg_atomic_init_u64(&LlmShared->usage_waits, 0);
		pg_atomic_init_u64(&LlmShared->usage_dropped, 0);
		pg_atomic_init_u32(&LlmShared->usage_elsewhere, 0);
		for (i = 0; i < LLM_MAX_WORKERS; i++)
		{
			pg_atomic_init_u64(&LlmShared->workers[i].completed, 0);
			pg_atomic_init_u64(&LlmShared->workers[i].failed, 0);
			pg_atomic_init_u64(&LlmShared->workers[i].retried, 0);
			pg_atomic_init_u32(&LlmShared->workers[i].batch_wake, 0);
		}
	}
	RateLimitShmemInit(found);
	LWLockRelease(AddinShmemInitLock);
}

/* Install the hooks; called from _PG_init while preloading. */
void
LlmShmemRegister(void)
{
#ifdef LLM_HAS_SHMEM_REQUEST_HOOK
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = llm_shmem_request;
#else
	llm_shmem_request();
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = llm_shmem_startup;
}
