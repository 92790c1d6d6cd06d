/*-------------------------------------------------------------------------
 *
 * usage.h
 *	  Usage accounting and budgets (usage.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_USAGE_H
#define PG_LLM_USAGE_H

#include "postgres.h"

#include "call.h"

extern void UsageBegin(LlmCall *call, Oid roleid, size_t request_bytes, int64 max_tokens);
extern void UsageReserve(LlmCall *call, Oid roleid, size_t request_bytes, int64 max_tokens);
extern void UsageResume(LlmCall *call, Oid roleid, size_t request_bytes, int64 max_tokens,
						int64 choices);
extern int64 UsageInputTokens(const LlmCall *call, size_t request_bytes);
extern double UsageRouteCost(const LlmRoute *route, int64 in, int64 cached_in, int64 out);
extern double UsageReplyCost(const LlmCall *call, const LlmRoute *route, const LlmReply *r);
extern bool UsageBudgetLeft(Oid roleid, double *usd_left, int64 *calls_left);
extern void UsageRecord(LlmCall *call, LlmOutcome outcome);
extern int	UsageBudgetReserve(Oid roleid, double estimate, double usd_limit, int64 calls_limit,
							   char **refusal);
extern void UsageBudgetRelease(Oid roleid, int month, double reserved_usd, double actual_cost,
							   bool counted);
extern void UsageRecordAttempt(LlmCall *call, const char *error);
extern int64 UsageOutputTokens(const LlmCall *call, const LlmRoute *route);
extern int64 UsageEstimatedTokens(const LlmCall *call, const LlmRoute *route);
extern int64 UsageTokensUsed(LlmCall *call);
extern void UsageForget(LlmCall *call);
extern void UsageBudgetGate(LlmCall *call);
extern void UsageHoldTurn(LlmCall *call, const LlmRoute *route, int64 charged);
extern void UsageSettleTurn(LlmCall *call, int64 used);
extern int	UsageFlush(void);
extern uint32 UsagePending(void);
extern uint32 UsagePendingAll(void);
extern void UsageBufferLook(uint32 *pending, int64 *dropped, int64 *waited);
extern Datum LlmMakeArray(Datum *values, bool *nulls, int n, Oid elemtype);

extern bool llm_track_usage;
extern void UsageDefineSettings(void);

#endif							/* PG_LLM_USAGE_H */
