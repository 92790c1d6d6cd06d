/*-------------------------------------------------------------------------
 *
 * ratelimit.h
 *	  Cluster-wide traffic control per provider endpoint (ratelimit.c):
 *	  requests and tokens per minute, the cooldown a provider asks for
 *	  with a 429 (or 503/529) and Retry-After, the pace its rate-limit
 *	  headers call for, and a route out of quota.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_RATELIMIT_H
#define PG_LLM_RATELIMIT_H

#include "postgres.h"

#include "fmgr.h"
#include "utils/timestamp.h"

#include "config.h"

struct HttpTransfer;

typedef enum LlmTurn
{
	LLM_TURN_GO,				/* send now: the call is counted */
	LLM_TURN_RESERVED,			/* send at *until: the turn is the caller's */
	LLM_TURN_WAIT,				/* over a limit: ask again at *until */
	LLM_TURN_TOO_LONG,			/* a turn later than the caller can wait */
	LLM_TURN_COOLDOWN,			/* the provider asked for quiet until *until */
	LLM_TURN_DISABLED,			/* out of quota until *until */
	LLM_TURN_AUTH,				/* the key was refused; rechecked at *until */
	LLM_TURN_DOWN				/* the host cannot be reached; probed at *until */
} LlmTurn;

extern LlmTurn RateLimitAsk(const LlmRoute *route, int64 tokens, bool reserve,
							long max_wait_ms, TimestampTz *until, char **why,
							int64 *charged);
extern void RateLimitAfter(const LlmRoute *route, const struct HttpTransfer *t, bool quota);
extern void RateLimitAfterInBand(const LlmRoute *route, long status, bool quota);
extern bool RateLimitCoolsDown(long status, double retry_after_s);
extern void RateLimitSettle(const LlmRoute *route, int64 charged, int64 used, bool unsent);
extern void RateLimitWaiting(const LlmRoute *route, int delta);
extern const char *RateLimitDetail(void);
extern bool RateLimitDown(const LlmRoute *route);

/* What llm.provider_status shows of an endpoint (RateLimitLook). */
typedef struct RateLimitView
{
	int64		requests;		/* in the last minute */
	int64		tokens;
	int64		limited;		/* 429s */
	bool		held;			/* something holds the senders back: */
	TimestampTz until;			/* until then, */
	char	   *why;			/* for this reason */
	int			waiting;		/* callers waiting for a turn */
	TimestampTz last_429;		/* 0: none */
} RateLimitView;

extern void RateLimitClear(const LlmProvider *p);
extern void RateLimitLook(const LlmProvider *p, RateLimitView *v);

extern int	llm_max_cooldown;
extern void RateLimitDefineSettings(void);

#endif							/* PG_LLM_RATELIMIT_H */
