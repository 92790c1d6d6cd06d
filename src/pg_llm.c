/*-------------------------------------------------------------------------
 *
 * pg_llm.c
 *	  Module entry point: the module magic, and what must happen when the
 *	  library loads: each module defines its settings, and what needs
 *	  preloading (shared memory, the workers) is registered.
 *
 *	  The call functions work without preloading; what needs
 *	  shared_preload_libraries (the worker, shared memory) is registered
 *	  only when the library is being preloaded.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "cache.h"
#include "call.h"
#include "chat.h"
#include "citus.h"
#include "config.h"
#include "embed.h"
#include "http.h"
#include "names.h"
#include "pg_llm.h"
#include "provider.h"
#include "queue.h"
#include "ratelimit.h"
#include "request.h"
#include "schema.h"
#include "shmem.h"
#include "slots.h"
#include "usage.h"

PG_MODULE_MAGIC;


void		_PG_init(void);

void
_PG_init(void)
{
	/* each module's settings, its own */
	HttpDefineSettings();
	RequestDefineSettings();
	ProviderDefineSettings();
	ConfigDefineSettings();
	CallDefineSettings();
	RateLimitDefineSettings();
	UsageDefineSettings();
	SchemaDefineSettings();
	ManyDefineSettings();
	EmbedDefineSettings();
	CacheDefineSettings();
	WorkerDefineSettings();
	ConfigRegisterInvalidation();
	CitusDefineSettings();
	CitusPlanInit();
	CitusKeysInit();
	CitusDdlInit();
	NamesInstallHints();

	/*
	 * The worker and shared memory need preloading; calls do not.  Settings
	 * that only the postmaster reads can only be defined while preloading.
	 */
	if (process_shared_preload_libraries_in_progress)
	{
		SlotsDefineSettings();
		if (!IsBinaryUpgrade)
		{
			LlmShmemRegister();
			WorkerRegister();
		}
	}
	/* after every definition: placeholders still unknown are then refused */
	LlmReserveGucPrefix("llm");
}
