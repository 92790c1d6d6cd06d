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
#include "storage/condition_variable.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"

#include "request.h"

#define LLM_MAX_WORKERS 32
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

/* One call's usage, waiting in shared memory for its database's writer. */
#define LLM_USAGE_NAME_LEN 64
#define LLM_USAGE_ERROR_LEN 128

typedef struct LlmUsageRecord
{
	int32		next;			/* the next record of its list (-1: none) */
	Oid			dboid;
	Oid			roleid;
	TimestampTz ts;
	uint8		mode;			/* LlmMode */
	uint8		outcome;		/* LlmOutcome */
	uint8		task;			/* LlmTask */
	bool		fallback;
	bool		has_tokens;
	bool		has_details;	/* cached, cache write, reasoning: the provider's */
	bool		estimated;		/* counted by pg_llm, not the provider */
	bool		has_cost;
	int16		http_status;
	int16		attempts;
	int32		input_tokens;
	int32		output_tokens;
	int32		cached_input_tokens;	/* of the input, read from the cache */
	int32		cache_write_tokens; /* of the input, written to the cache */
	int32		reasoning_tokens;	/* of the output */
	int32		latency_ms;
	int32		ttft_ms;		/* -1: not a stream */
	int32		inputs;			/* inputs of an embedding request; 0: chat */
	double		cost_usd;
	int64		job_id;			/* the job of a queue item; 0: none */
	char		tag[LLM_USAGE_TAG_LEN];	/* the option tag; "" none */
	char		provider[LLM_USAGE_NAME_LEN];
	char		model[LLM_USAGE_NAME_LEN];
	char		upstream[LLM_USAGE_NAME_LEN];
	char		error[LLM_USAGE_ERROR_LEN];	/* why it failed, or "" */
	char		finish_reason[32];	/* the provider's own word; "" none */
	char		service_tier[32];	/* "" when not reported */
} LlmUsageRecord;

/*
 * The usage records waiting for one database's writer, oldest first, as a
 * list through LlmUsageRecord.next.
 */
#define LLM_USAGE_DBS 64

typedef struct LlmUsageList
{
	Oid			dboid;			/* InvalidOid: unused */
	int32		head;
	int32		tail;
	int32		count;
	TimestampTz taken_at;		/* when a writer last took its records, or
								 * when it had records again */
} LlmUsageList;

/* A role's spending this month in one database, for budgets. */
#define LLM_MAX_BUDGETS 256

typedef struct LlmBudgetEntry
{
	bool		in_use;
	bool		loaded;			/* spent/calls read from llm.usage */
	Oid			dboid;
	Oid			roleid;
	int			month;			/* year * 12 + month - 1 */
	double		spent_usd;
	int64		calls;
	double		reserved_usd;	/* calls under way */
	int64		reserved_calls;
} LlmBudgetEntry;

typedef struct LlmSharedState
{
	LWLock	   *lock;
	pg_atomic_uint64 next_lease_holder; /* new at every start of the server */
	LlmWorkerSlot workers[LLM_MAX_WORKERS];
	/*
	 * usage records: slots written by every backend, kept per database
	 * until that database's writer moves them into llm.usage; a caller
	 * that finds no free slot waits on usage_room
	 */
	LWLock	   *usage_lock;
	int			usage_slots;
	int32		usage_free;		/* the free slots, as a list */
	int32		usage_nfree;
	LlmUsageList usage_lists[LLM_USAGE_DBS];
	ConditionVariable usage_room;
	pg_atomic_uint64 usage_waits;	/* records that waited for room */
	pg_atomic_uint64 usage_dropped; /* records that could not wait */
	/*
	 * records made but neither in a slot nor committed to llm.usage: kept
	 * by a caller until there is room, kept by a writer for its own next
	 * flush, or taken and being written in a transaction not yet committed
	 */
	pg_atomic_uint32 usage_elsewhere;
	TimestampTz writer_requested_at[LLM_MAX_WORKERS];
	Oid			writer_requested_db[LLM_MAX_WORKERS];
	LlmBudgetEntry budgets[LLM_MAX_BUDGETS];
	LlmUsageRecord usage[FLEXIBLE_ARRAY_MEMBER];
} LlmSharedState;

extern int	llm_usage_buffer;

extern LlmSharedState *LlmShared;

extern void LlmShmemRegister(void);

#endif							/* PG_LLM_SHMEM_H */
