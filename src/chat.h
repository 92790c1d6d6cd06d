/*-------------------------------------------------------------------------
 *
 * chat.h
 *	  What the SQL call functions share (chat.c): the arguments of
 *	  llm.chat / llm.chat_stream as a call.  The prompt rule and what a
 *	  call with on_error "null" does when it fails are the call engine's
 *	  (call.h), below every SQL entry point.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_CHAT_H
#define PG_LLM_CHAT_H

#include "postgres.h"

#include "fmgr.h"

#include "call.h"
#include "shape.h"

extern LlmCall *ChatCallFromArgs(FunctionCallInfo fcinfo, LlmMode mode);

/* many.c */
extern int	llm_many_concurrency;

/* what ties a set-returning function's open transfers to its ways out */
typedef struct ManyHold
{
	void		(*release) (void *arg);
	void	   *arg;
	struct ExprContext *econtext;	/* NULL: not called in a select list */
	MemoryContextCallback reset_cb;
} ManyHold;

extern void ManyHoldStart(ManyHold *hold, FunctionCallInfo fcinfo, MemoryContext ctx,
						  void (*release) (void *arg), void *arg);
extern void ManyHoldEnd(ManyHold *hold);
extern void ManyWait(bool rows_out, int in_flight, TimestampTz next_due);
extern void ManyDefineSettings(void);

#endif							/* PG_LLM_CHAT_H */
