/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The registrar of pg_llm's shared memory: while the library is
 *	  preloaded it asks for the space and a lock tranche of every module's
 *	  part, and at startup creates (postmaster) or attaches (each backend
 *	  and worker) each part.  What is in a part is its module's alone.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"

#include "compat.h"
#include "shmem.h"

/* Every part, in the order they are attached. */
static const LlmShmemPart *const parts[] = {
	&SlotsShmemPart,
	&UsageShmemPart,
	&RateLimitShmemPart,
	&CacheShmemPart,
};

static bool attached = false;

static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
#ifdef LLM_HAS_SHMEM_REQUEST_HOOK
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif

/* Ask for the space of every part and a tranche each (from 15 on, in the request hook). */
static void
llm_shmem_request(void)
{
	Size		size = 0;
	int			i;

#ifdef LLM_HAS_SHMEM_REQUEST_HOOK
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	for (i = 0; i < lengthof(parts); i++)
	{
		size = add_size(size, MAXALIGN(parts[i]->size()));
		RequestNamedLWLockTranche(parts[i]->name, parts[i]->nlocks);
	}
	RequestAddinShmemSpace(size);
}

/* Create or attach every part. */
static void
llm_shmem_startup(void)
{
	int			i;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	for (i = 0; i < lengthof(parts); i++)
	{
		bool		found;
		Size		size = parts[i]->size();
		void	   *mem = ShmemInitStruct(parts[i]->name, size, &found);

		if (!found)
			memset(mem, 0, size);
		parts[i]->attach(mem, found, GetNamedLWLockTranche(parts[i]->name));
	}
	attached = true;
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

/* Is pg_llm's shared memory there (the library preloaded)? */
bool
LlmShmemPresent(void)
{
	return attached;
}
