/*-------------------------------------------------------------------------
 *
 * citus_remote.h
 *	  A worker node of a Citus cluster takes its turns under a provider's
 *	  limits and its budget reservations from the coordinator; the
 *	  coordinator counts what the worker nodes spent (citus_remote.c).
 *	  What ratelimit.c and usage.c ask of the cluster.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_CITUS_REMOTE_H
#define PG_LLM_CITUS_REMOTE_H

#include "postgres.h"

#include "utils/timestamp.h"

#include "config.h"
#include "ratelimit.h"

struct HttpTransfer;

extern bool CitusDelegates(void);
extern LlmTurn CitusRemoteTurn(const LlmRoute *route, int64 tokens, bool reserve, long max_wait_ms,
							   TimestampTz *until, char **why, int64 *charged, char **detail);
extern void CitusRemoteAfter(const LlmRoute *route, const struct HttpTransfer *t, bool quota);
extern void CitusRemoteSettle(const LlmRoute *route, int64 charged, int64 used, bool unsent);
extern int	CitusRemoteReserve(Oid roleid, double estimate, double usd_limit, int64 calls_limit);
extern void CitusRemoteRelease(Oid roleid, int month, double reserved_usd, double actual_cost,
							   bool counted);
extern void CitusRemoteSpent(Oid roleid, double *spent, int64 *calls);

#endif							/* PG_LLM_CITUS_REMOTE_H */
