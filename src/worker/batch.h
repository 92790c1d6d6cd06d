/*-------------------------------------------------------------------------
 *
 * batch.h
 *	  Provider batch APIs in the queue worker (batch.c, batch_json.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_BATCH_H
#define PG_LLM_BATCH_H

#include "postgres.h"

#include "config.h"

struct HttpTransfer;

extern int	llm_batch_poll_interval;

/* What pg_llm reads of a provider's answer about a batch or a file. */
typedef struct LlmBatchAnswer
{
	char	   *id;				/* the batch's or the file's id */
	char	   *status;			/* the provider's word for its state */
	bool		ended;			/* no result will come any more */
	bool		failed;			/* it ended without running (validation) */
	bool		cancelling;
	char	   *failure;		/* why it failed, in the provider's words */
	char	   *output_file_id;
	char	   *error_file_id;
	char	   *results_url;
	bool		has_results;	/* an inline answer with its results */
	char	   *results_path;	/* unused: inline results are in memory */
	int			succeeded;
	int			errored;
	int			expired;
} LlmBatchAnswer;

/* batch_json.c */
extern LlmBatchAnswer *BatchReadAnswer(const char *body, size_t len);
extern char *BatchCreateBody(const char *input_file_id, const char *endpoint, const char *token);
extern char *BatchFindToken(const char *body, size_t len, const char *token, char **after);
extern void BatchEachResult(const char *body, size_t len,
							void (*fn) (void *arg, const char *line, size_t len), void *arg);

#endif							/* PG_LLM_BATCH_H */
