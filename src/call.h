/*-------------------------------------------------------------------------
 *
 * call.h
 *	  The call engine shared by every call mode (call.c): a call's state,
 *	  one attempt on a route, the judgement of its outcome, the decision
 *	  of what comes next (retry, next route, give up), and the error; and
 *	  what every SQL call does around it: the prompt rule, the start (the
 *	  budget) and, with on_error "null", the failure turned into a WARNING.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_CALL_H
#define PG_LLM_CALL_H

#include "postgres.h"

#include "nodes/pg_list.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "config.h"
#include "encoding.h"
#include "provider.h"
#include "request.h"

typedef enum LlmMode
{
	LLM_MODE_SYNC,
	LLM_MODE_STREAM,
	LLM_MODE_MANY,
	LLM_MODE_QUEUE,
	LLM_MODE_BATCH_API
} LlmMode;

/* What a call asks of a model: a chat reply, or embeddings. */
typedef enum LlmTask
{
	LLM_TASK_CHAT,
	LLM_TASK_EMBED
} LlmTask;

struct HttpTransfer;

typedef enum LlmVerdict
{
	LLM_VERDICT_OK,
	LLM_VERDICT_RETRY,
	LLM_VERDICT_FAIL
} LlmVerdict;

/* What went wrong with an attempt, copied out of the transfer. */
typedef struct LlmFailure
{
	int			sqlstate;
	char	   *provider;
	long		status;			/* 0 for transport errors */
	char	   *message;		/* errmsg */
	char	   *detail;			/* errdetail; the provider's words, redacted */
	char	   *hint;
	double		retry_after_s;	/* -1 when not given */
	bool		quota;			/* the account is out of credit */
	bool		route_unusable; /* the route cannot serve as configured (TLS, proxy) */
} LlmFailure;

typedef struct LlmCall
{
	LlmRequest *req;
	char	   *model;
	LlmMode		mode;
	LlmTask		task;			/* set before UsageBegin */
	int			ninputs;		/* inputs of an embedding call */
	List	   *routes;
	const LlmRoute *route;		/* the route that served (or last tried) */
	int			attempts;		/* HTTP requests sent, all routes */
	bool		fallback;		/* served by a route after the first */
	long		http_status;
	struct HttpTransfer *xfer;	/* live transfer (streams) */
	bool		want_response_json; /* build reply.response_json */
	TimestampTz started;
	TimestampTz first_byte;
	LlmReply	reply;			/* of an embedding call: its usage only */
	LlmEmbedReply embed;		/* the vectors of an embedding call */
	const char *prompt;			/* UTF-8, for the prompt check; or NULL */
	size_t		request_bytes;	/* the request's text, for the estimates */
	char	   *error;			/* why it failed, for its usage row */
	const char *tag;			/* the option tag, for its usage row; or NULL */
	int64		job_id;			/* the job of its queue item; 0: none */

	/* where the call is in its chain (CallDecide) */
	ListCell   *route_cell;
	int			route_no;		/* 1-based */
	int			tries;			/* retries taken on this route */

	/* accounting (usage.c) */
	Oid			roleid;			/* the role the call runs and is billed for */
	bool		accounted;		/* UsageBegin ran: a record is due */
	bool		usage_recorded;
	bool		usage_counted;
	int			budget_month;	/* non-zero while a reservation is held */
	bool		budget_remote;	/* held at the Citus coordinator (citus_remote.c) */
	double		reserved_usd;
	/*
	 * The budget's refusal, found when the call was accounted and raised
	 * only when it would be sent (UsageBudgetGate): a reply from the
	 * response cache is free, and served with the budget spent.
	 */
	int			budget_sqlstate;	/* 0: none */
	char	   *budget_message;
	char	   *budget_detail;
	char	   *budget_hint;
	int64		estimated_input_tokens;
	int64		estimated_output_tokens;	/* on a route without a default */
	int64		max_tokens;		/* the request's, or 0 */
	int64		choices;		/* replies asked for ("n") */
	int64		delivered_bytes;	/* reply text received (streams) */
	int64		delivered_tokens;	/* its tokens as tokens.c estimates them */
	bool		sent_unanswered;	/* the attempt's request went out, no status came */
	double		attempts_cost;	/* of the attempts recorded before the last */
	TimestampTz attempt_started;	/* when the last attempt was sent */
	bool		cut_short;		/* a stream that ended before its last event */

	/* the turn held under the route's rate limits (ratelimit.c) */
	const LlmRoute *rl_route;	/* NULL: none held */
	int64		rl_charged;		/* tokens it was charged */
	bool		rl_unsent;		/* taken, not yet used to send */

	/* the response cache (cache.c), or NULL */
	struct CacheCall *cache;
} LlmCall;

typedef enum LlmOutcome
{
	LLM_OUTCOME_OK,
	LLM_OUTCOME_ERROR,
	LLM_OUTCOME_CANCELLED,
	LLM_OUTCOME_RETRY,
	LLM_OUTCOME_INVALID,		/* paid, but the answer broke its schema */
	LLM_OUTCOME_REFUSED,		/* the provider refused or filtered the reply */
	LLM_OUTCOME_CACHE			/* served from the response cache, unpaid */
} LlmOutcome;

/* What LlmCallStep says of an attempt of a call run alongside others. */
typedef enum LlmStep
{
	LLM_STEP_DONE,
	LLM_STEP_AGAIN,
	LLM_STEP_FAILED,
	LLM_STEP_SPENT
} LlmStep;

/* What CallDecide says comes after a failed attempt. */
typedef enum LlmNext
{
	LLM_NEXT_RETRY,				/* same route, after *delay_ms */
	LLM_NEXT_ROUTE,				/* the next route of the chain, now */
	LLM_NEXT_GIVE_UP			/* nothing left: the failure stands */
} LlmNext;

extern LlmCall *LlmCallCreate(LlmRequest *req, const char *model, LlmMode mode);
extern void LlmCallRun(LlmCall *call, bool text);
extern void LlmCallSend(LlmCall *call);
extern void LlmCallOpenStream(LlmCall *call);
extern const LlmRoute *LlmCallRoute(LlmCall *call);
extern struct HttpTransfer *LlmSendAttempt(LlmCall *call, const LlmRoute *route, bool stream);
extern LlmVerdict LlmJudgeComplete(LlmCall *call, struct HttpTransfer *t, LlmFailure *f);
extern LlmVerdict LlmJudgeStreamError(LlmCall *call, const LlmErrorBody *eb, const char *text,
									  LlmFailure *f);
extern LlmOutcome LlmJudgeText(const LlmCall *call, bool have_text, LlmFailure *f);
extern bool LlmReplyRefused(const LlmCall *call, LlmFailure *f);
extern char *LlmSentence(const char *text);
extern LlmNext LlmCallDecide(LlmCall *call, LlmVerdict v, const LlmFailure *f, long *delay_ms);
extern bool LlmCallTurn(LlmCall *call, TimestampTz *not_before, LlmFailure *f);
extern LlmStep LlmCallStep(LlmCall *call, struct HttpTransfer *t, bool patient,
						   LlmFailure *f, TimestampTz *not_before);
extern void LlmCallAfterAttempt(LlmCall *call, struct HttpTransfer *t, LlmVerdict v,
								const LlmFailure *f);
extern void LlmCallAfterStreamError(LlmCall *call, const LlmFailure *f);
extern bool LlmRetryableStatus(long status);
extern long LlmRetryDelayMs(double retry_after_s, int n);
extern void LlmSleepMs(long ms);
extern LlmNoReturn void LlmRaiseFailure(const LlmFailure *f, int attempts, int routes);
extern char *LlmFailureText(const LlmFailure *f);
extern ErrorData *LlmTry(void (*fn) (void *arg), void *arg);
extern void LlmCheckPrompt(const char *prompt);
extern void LlmCallBegin(LlmCall *call);
extern void LlmCallFailed(LlmCall *call, ErrorData *edata);
extern const char *LlmResolveModel(const char *model, LlmRequest *req);

extern char *llm_default_model;
extern int	llm_max_retries;
extern int	llm_max_retry_after;
extern void CallDefineSettings(void);

#endif							/* PG_LLM_CALL_H */
