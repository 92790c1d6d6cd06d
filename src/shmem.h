/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  pg_llm's shared memory: the queue workers' slots (latches for the
 *	  wake-up at enqueue commit, and what each worker reports about
 *	  itself).  Present only when pg_llm is in shared_preload_libraries;
 *	  LlmShared is NULL otherwise.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_SHMEM_H
#define PG_LLM_SHMEM_H

#include "postgres.h"

#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"

#define LLM_MAX_WORKERS 32
#define LLM_ERROR_LEN 256

typedef struct LlmWorkerSlot
{
	bool		in_use;
	int			pid;
	Oid			dboid;
	Latch	   *latch;
	TimestampTz started_at;
	int			in_flight;		/* requests on the wire */
	int			claimed;		/* leased items held, in flight or not */
	pg_atomic_uint64 completed; /* items done */
	pg_atomic_uint64 failed;	/* items failed for good */
	pg_atomic_uint64 retried;	/* attempts that will be tried again */
	double		rate;			/* items finished per second, smoothed */
	TimestampTz last_error_at;
	char		last_error[LLM_ERROR_LEN];
} LlmWorkerSlot;

typedef struct LlmSharedState
{
	LWLock	   *lock;
	LlmWorkerSlot workers[LLM_MAX_WORKERS];
} LlmSharedState;

extern LlmSharedState *LlmShared;

extern void ShmemRegister(void);
extern void LlmWakeWorkers(Oid dboid);

#endif							/* PG_LLM_SHMEM_H */
