/*-------------------------------------------------------------------------
 *
 * queue.h
 *	  The queue and its background worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_QUEUE_H
#define PG_LLM_QUEUE_H

#include "postgres.h"

extern char *llm_worker_databases;
extern int	llm_batch_size;
extern int	llm_worker_concurrency;
extern int	llm_max_attempts;
extern int	llm_lease_time;
extern int	llm_worker_naptime;

extern void WorkerRegister(void);
extern void WorkerDefineSettings(void);
extern void WorkerDefinePostmasterSettings(void);

#endif							/* PG_LLM_QUEUE_H */
