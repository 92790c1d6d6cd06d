/*-------------------------------------------------------------------------
 *
 * redact.h
 *	  What pg_llm shows of a provider's words (redact.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_REDACT_H
#define PG_LLM_REDACT_H

#include "postgres.h"

#include "config.h"

/* The most bytes of a provider's text an error, a log line or a row holds. */
#define LLM_PROVIDER_TEXT_MAX 2000

extern char *RedactProviderText(const char *text, size_t len, const LlmProvider *p);
extern char *RedactProviderTextMax(const char *text, size_t len, const LlmProvider *p,
								   size_t max);
extern char *RedactProviderCString(const char *text, const LlmProvider *p);

#endif							/* PG_LLM_REDACT_H */
