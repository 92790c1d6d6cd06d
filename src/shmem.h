/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  pg_llm's shared memory (shmem.c): a registrar only.  Each module that
 *	  keeps state for the whole cluster (slots.c, usage.c, ratelimit.c,
 *	  cache.c) owns its part, its struct and its lock tranche, and hands
 *	  the registrar an LlmShmemPart; the registrar sums their sizes, asks
 *	  for one tranche each, and attaches each part at startup.  Present
 *	  only when pg_llm is in shared_preload_libraries.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_SHMEM_H
#define PG_LLM_SHMEM_H

#include "postgres.h"

#include "storage/lwlock.h"

/* A module's part of shared memory. */
typedef struct LlmShmemPart
{
	const char *name;			/* of its struct, and of its lock tranche */
	Size		(*size) (void);
	int			nlocks;			/* the locks of its tranche */

	/*
	 * Attach: mem is its struct (zeroed and to be initialised when not
	 * found), locks its tranche's.  Runs under AddinShmemInitLock.
	 */
	void		(*attach) (void *mem, bool found, LWLockPadded *locks);
} LlmShmemPart;

extern const LlmShmemPart SlotsShmemPart;
extern const LlmShmemPart UsageShmemPart;
extern const LlmShmemPart RateLimitShmemPart;
extern const LlmShmemPart CacheShmemPart;

extern void LlmShmemRegister(void);
extern bool LlmShmemPresent(void);

#endif							/* PG_LLM_SHMEM_H */
