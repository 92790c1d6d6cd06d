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

#include "nodes/pg_list.h"

extern int	llm_batch_size;
extern int	llm_worker_concurrency;
extern int	WorkerConcurrency;	/* llm.worker_concurrency, as far as descriptors allow */
extern int	WorkerSpare;		/* slots beyond it for roles with nothing in flight */
extern int	llm_max_attempts;
extern int	llm_batch_max_expiries;
extern int	llm_lease_time;
extern int	llm_worker_naptime;

/* A job, as its items are queued (QueueAddJobItems). */
typedef struct QueueJob
{
	int64		id;
	const char *name;
	Oid			owner;			/* the role the items are queued for */
	Oid			target;			/* the table written back, and its column */
	const char *column;			/* NULL when its answers are spread */
	List	   *spread_columns;	/* char *, the columns an answer is spread over */
	List	   *key_columns;	/* char *, the columns of the items' keys */
	const char *model;
	const char *system;			/* or NULL */
	const char *options;		/* JSON text, or NULL */
	const char *via;
	const char *provider;		/* where its items go, or NULL: the routes */
	bool		embed;			/* task embed: its items are embeddings */
} QueueJob;

extern List *QueueRoutesOn(const char *model, const char *provider);

extern int64 QueueAddJobItems(const QueueJob *job, Datum prompts, Datum keys, int n,
							  bool supersede, bool *target_checked, bool *full);
extern bool QueueJobInputCurrent(const QueueJob *job, const char *input, Datum key);

extern void WorkerRegister(void);
extern void WorkerDefineSettings(void);

#endif							/* PG_LLM_QUEUE_H */
