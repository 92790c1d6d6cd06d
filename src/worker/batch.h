/*-------------------------------------------------------------------------
 *
 * batch.h
 *	  What the two halves of the worker's batch transport share:
 *
 *	  batch.c		the transport: a batch's requests to its provider, one
 *					step at a time, each answer an event applied in one
 *					place (the protocol's half of it behind LlmBatchOps)
 *	  batch_store.c llm._batch and the items of a batch: forming one,
 *					building its requests, recording what the provider
 *					said, reading its results into the items, splitting,
 *					putting back, failing
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_WORKER_BATCH_H
#define PG_LLM_WORKER_BATCH_H

#include "postgres.h"

#include "lib/stringinfo.h"
#include "nodes/pg_list.h"

#include "config.h"
#include "provider.h"

extern int	llm_batch_poll_interval;

/*
 * A batch as its row of llm._batch holds it, with the counts of what
 * happened to its requests, which the provider's counts do not say.
 */
typedef struct BatchRow
{
	int64		id;
	char	   *token;			/* ours, in the provider's metadata */
	const LlmBatchOps *kind;	/* its provider's batch API */
	char	   *model;
	bool		embed;			/* its requests are embeddings, one input each */
	const LlmRoute *route;		/* its provider and upstream model */
	char	   *status;			/* as read back (resumed batches) */
	char	   *provider_batch_id;
	char	   *input_file_id;
	char	   *output_file_id;
	char	   *error_file_id;
	char	   *results_url;
	char	   *failure;		/* why it ended early */
	int			answered[4];	/* answered, failed, sent again, expired */
	int			to_realtime;	/* of the expired, sent realtime */
} BatchRow;

/* The columns of a batch BatchStoreUnfinished returns, as text. */
enum BatchStoredColumn
{
	BS_ID, BS_TOKEN, BS_KIND, BS_MODEL, BS_PROVIDER, BS_UPSTREAM, BS_STATUS, BS_BATCH_ID,
	BS_INPUT_FILE, BS_OUTPUT_FILE, BS_ERROR_FILE, BS_RESULTS_URL, BS_TASK, BS_NCOLUMNS
};

/* batch_store.c: forming */
extern int64 BatchBackoffMs(int n);
extern char **BatchStoreReadyModels(int *n, char ***providers, bool **embeds);
extern void BatchStoreToRealtime(const char *model, const char *provider, bool embed);
extern int64 BatchStoreForm(const char *model, const char *provider, bool embed,
							const LlmRoute *route, const LlmBatchOps *kind,
							int n, bool full_only, char **token);
extern List *BatchStoreUnfinished(void);

/* batch_store.c: a batch's requests and items */
extern int	BatchStoreBuild(BatchRow *row, StringInfo body, const char *path);
extern int64 BatchStoreItemsLeft(int64 id);
extern bool BatchStoreSplit(int64 id, int64 *halves, char **tokens);

/* batch_store.c: what the provider said */
extern void BatchStoreRecord(BatchRow *row, const char *status);
extern void BatchStoreRecordPoll(BatchRow *row, const LlmBatchEvent *ev);
extern void BatchStoreFinish(BatchRow *row, const char *status, bool fail_items);

/* batch_store.c: results */
extern void BatchStoreIngestFile(BatchRow *row, const char *path);
extern void BatchStoreIngestAnswer(BatchRow *row, const char *body, size_t len);

#endif							/* PG_LLM_WORKER_BATCH_H */
