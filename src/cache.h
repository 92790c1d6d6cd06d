/*-------------------------------------------------------------------------
 *
 * cache.h
 *	  The response cache and the coalescing of identical requests in
 *	  flight (cache.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_CACHE_H
#define PG_LLM_CACHE_H

#include "postgres.h"

#include "call.h"

/* What a call's reply is kept as: its text, or the whole response. */
typedef enum CacheKind
{
	CACHE_TEXT,
	CACHE_RESPONSE
} CacheKind;

/* What CacheCheck says of a call. */
typedef enum CacheResult
{
	CACHE_OFF,					/* not cached: send it */
	CACHE_MISS,					/* send it; its reply will be kept */
	CACHE_HIT,					/* the reply is in call->reply */
	CACHE_WAIT					/* an identical call is in flight: ask again */
} CacheResult;

extern void CacheDefineSettings(void);
extern CacheResult CacheCheck(LlmCall *call, CacheKind kind, bool stream);
extern void CacheKeep(LlmCall *call, const char *reply_text);
extern void CacheAbandon(LlmCall *call);
extern void CacheWaitLatch(long timeout_ms);

#endif							/* PG_LLM_CACHE_H */
