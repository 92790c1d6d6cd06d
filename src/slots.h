/*-------------------------------------------------------------------------
 *
 * slots.h
 *	  pg_llm's background processes in shared memory (slots.c): a slot
 *	  each for the queue workers and the usage writers, with the latch
 *	  that wakes them, the lease token of a queue worker, and what each
 *	  reports for llm.worker_status.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_SLOTS_H
#define PG_LLM_SLOTS_H

#include "postgres.h"

#include "utils/timestamp.h"

/* the most queue workers and usage writers at once */
#define LLM_MAX_WORKERS 32

/* this process's slot */
extern void SlotClaim(int n, bool usage_only);
extern int64 SlotLeaseHolder(void);
extern void SlotReportError(const char *msg);
extern void SlotReportCounts(int in_flight, int claimed);
extern void SlotCountFinished(int n);
extern void SlotCountWritten(bool done, bool failed);
extern void SlotCountRetried(void);
extern bool SlotTakeBatchWake(void);

/* llm.database, defined while preloading */
extern char *llm_worker_databases;
extern void SlotsDefineSettings(void);

/* What llm.worker_status shows of a slot in use (SlotsLook). */
typedef struct SlotView
{
	int			pid;
	Oid			dboid;
	TimestampTz started_at;
	int			in_flight;
	int			claimed;
	int64		completed;
	int64		failed;
	double		rate;
	char		last_error[256];
	TimestampTz last_error_at;
	bool		usage_only;
} SlotView;



/* any process */
struct BackgroundWorkerHandle;
extern bool SlotStart(const char *kind, const char *dbname, int n, pid_t notify_pid,
					  struct BackgroundWorkerHandle **handle);
extern void SlotWake(Oid dboid, bool for_batches);
extern int	SlotsLook(SlotView *out);
extern bool SlotServing(Oid dboid, bool writer_only);
extern bool SlotAlive(int n);

#endif							/* PG_LLM_SLOTS_H */
