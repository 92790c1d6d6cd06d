/*-------------------------------------------------------------------------
 *
 * count.h
 *	  Exact input token counts from providers that count them (count.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_COUNT_H
#define PG_LLM_COUNT_H

#include "postgres.h"

#include "config.h"
#include "request.h"

extern bool CountTokensSupported(const LlmRoute *route);
extern int64 CountTokensExact(LlmRequest *req, const LlmRoute *route);

#endif							/* PG_LLM_COUNT_H */
