/*-------------------------------------------------------------------------
 *
 * pg_llm.c
 *	  Module entry point: the module magic, the llm.* settings and the
 *	  registrations that must happen when the library loads.
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
#include "citus.h"
#include "config.h"
#include "embed.h"
#include "http.h"
#include "names.h"
#include "pg_llm.h"
#include "usage.h"
#include "queue.h"
#include "shmem.h"

PG_MODULE_MAGIC;

char	   *llm_default_model = NULL;
int			llm_connect_timeout_ms = 10000;
int			llm_timeout_ms = 300000;
int			llm_low_speed_time = 0;
int			llm_low_speed_limit = 1;
int			llm_stream_idle_timeout = 60;
int			llm_max_retries = 2;
int			llm_max_retry_after = 60;
int			llm_max_cooldown = 600;
int			llm_max_response_size_kb = 16384;
int			llm_max_request_size_kb = 32768;
int			llm_anthropic_max_tokens = 4096;
int			llm_validation_retries = 1;

void		_PG_init(void);

/*
 * llm.max_response_size: a role that is not a superuser may lower it, not
 * raise it above the value its session started with (postgresql.conf,
 * ALTER SYSTEM, ALTER DATABASE or ROLE ... SET): a response is held in a
 * backend's memory, and a plain role must not choose how much.
 */
static bool
check_max_response_size(int *newval, void **extra, GucSource source)
{
	const char *reset;
	int			ceiling;

	if (source < PGC_S_CLIENT || source == PGC_S_TEST || !IsTransactionState())
		return true;
	reset = GetConfigOptionResetString("llm.max_response_size");
	ceiling = reset ? atoi(reset) : 16384;
	if (*newval <= ceiling || superuser())
		return true;
	GUC_check_errcode(ERRCODE_INSUFFICIENT_PRIVILEGE);
	GUC_check_errmsg("permission denied to raise llm.max_response_size above %d kB", ceiling);
	GUC_check_errhint("Only a superuser can raise it above the server's setting; any role can lower it.");
	return false;
}

/* Define the settings every session has, preloaded or not. */
static void
define_settings(void)
{
	DefineCustomStringVariable("llm.default_model",
							   "Model used when a call names none.",
							   NULL, &llm_default_model, "",
							   PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("llm.pass_through",
							 "Send model names that have no row in llm.model unchanged to the primary provider.",
							 "Off: such a name is an error naming the nearest aliases, and nothing is sent.",
							 &llm_pass_through, false,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.connect_timeout",
							"Time allowed to connect to a provider.",
							"Providers can override it with the connect_timeout_ms option.",
							&llm_connect_timeout_ms, 10000, 1, INT_MAX,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.timeout",
							"Total time allowed for one non-streaming request to a provider.",
							"0 means no limit. Providers can override it with the timeout_ms option.",
							&llm_timeout_ms, 300000, 0, INT_MAX,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.low_speed_time",
							"A non-streaming request slower than llm.low_speed_limit for this long is aborted.",
							"0 turns the check off.",
							&llm_low_speed_time, 0, 0, INT_MAX,
							PGC_USERSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.low_speed_limit",
							"Bytes per second below which a transfer counts as stalled.",
							NULL, &llm_low_speed_limit, 1, 1, INT_MAX,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.stream_idle_timeout",
							"A stream that sends nothing (not even a keep-alive) for this long is aborted.",
							NULL, &llm_stream_idle_timeout, 60, 1, INT_MAX,
							PGC_USERSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.max_retries",
							"Retries of a retryable failure on one provider before the next route is tried.",
							"Providers can override it with the max_retries option.",
							&llm_max_retries, 2, 0, 100,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.max_retry_after",
							"Longest Retry-After a call waits for; a provider asking for more is given up at once.",
							NULL, &llm_max_retry_after, 60, 0, 3600,
							PGC_USERSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.max_cooldown",
							"Longest a provider's Retry-After or rate-limit reset stops every sender.",
							"A provider asking for more is left alone this long, then tried again.",
							&llm_max_cooldown, 600, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.max_response_size",
							"Largest response body accepted from a provider.",
							"A role that is not a superuser may only lower it.",
							&llm_max_response_size_kb, 16384, 1, INT_MAX / 1024,
							PGC_USERSET, GUC_UNIT_KB, check_max_response_size, NULL, NULL);
	DefineCustomIntVariable("llm.max_request_size",
							"Largest request sent to a provider: the prompt, the system prompt and the options as JSON.",
							"A larger call or enqueue is refused before anything is sent or queued.",
							&llm_max_request_size_kb, 32768, 1, INT_MAX / 1024,
							PGC_SUSET, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomBoolVariable("llm.track_usage",
							 "Record every call in llm.usage.",
							 "Budgets are enforced either way.",
							 &llm_track_usage, true,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.validation_retries",
							"Times an answer that breaks its json_schema is asked for again, with the validation error.",
							"Each time is a call of its own, paid and recorded in llm.usage with the outcome invalid.",
							&llm_validation_retries, 1, 0, 10,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.many_concurrency",
							"Calls llm.chat_many keeps in flight at once.",
							"SET LOCAL it for one statement.",
							&llm_many_concurrency, 50, 1, 1000,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("llm.default_embedding_model",
							   "Model used when an embedding call names none.",
							   NULL, &llm_default_embedding_model, "",
							   PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.embed_inputs_per_request",
							"Inputs packed into one embedding request.",
							"Fewer when their estimated tokens would pass llm.embed_tokens_per_request.",
							&llm_embed_inputs_per_request, 100, 1, 2048,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.embed_tokens_per_request",
							"Estimated input tokens packed into one embedding request at most.",
							"An input larger than this goes alone.",
							&llm_embed_tokens_per_request, 300000, 1, INT_MAX,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.anthropic_max_tokens",
							"max_tokens sent to anthropic providers when a call gives none.",
							"The Messages API requires it; providers can override it with the default_max_tokens option.",
							&llm_anthropic_max_tokens, 4096, 1, INT_MAX,
							PGC_USERSET, 0, NULL, NULL, NULL);
}

void
_PG_init(void)
{
	define_settings();
	CacheDefineSettings();
	WorkerDefineSettings();
	ConfigRegisterInvalidation();
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
		DefineCustomIntVariable("llm.usage_buffer",
								"Usage records shared memory holds until they are written to llm.usage.",
								NULL, &llm_usage_buffer, 8192, 64, 1000000,
								PGC_POSTMASTER, 0, NULL, NULL, NULL);
		WorkerDefinePostmasterSettings();
		if (!IsBinaryUpgrade)
		{
			LlmShmemRegister();
			CacheShmemRegister();
			WorkerRegister();
		}
	}
	/* after every definition: placeholders still unknown are then refused */
	LlmReserveGucPrefix("llm");
}
