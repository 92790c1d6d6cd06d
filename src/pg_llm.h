/*-------------------------------------------------------------------------
 *
 * pg_llm.h
 *	  The module's own settings (the llm.* GUCs defined in pg_llm.c) and
 *	  its version.  Each other module has a header of its own.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_H
#define PG_LLM_H

#include "postgres.h"

#include "compat.h"

/* set once, by the Makefile, from pg_llm.control */
#ifndef PG_LLM_VERSION
#error "PG_LLM_VERSION must be defined by the build"
#endif

extern char *llm_default_model;
extern int	llm_connect_timeout_ms;
extern int	llm_timeout_ms;
extern int	llm_low_speed_time;
extern int	llm_low_speed_limit;
extern int	llm_stream_idle_timeout;
extern int	llm_max_retries;
extern int	llm_max_retry_after;
extern int	llm_max_cooldown;
extern int	llm_max_response_size_kb;
extern int	llm_max_request_size_kb;
extern int	llm_anthropic_max_tokens;
extern bool llm_track_usage;
extern int	llm_many_concurrency;
extern int	llm_validation_retries;

#endif							/* PG_LLM_H */
