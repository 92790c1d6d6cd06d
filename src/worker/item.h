/*-------------------------------------------------------------------------
 *
 * item.h
 *	  The queue worker's items and the files that hold, claim and write
 *	  them (src/worker/):
 *
 *	  item.c	  an item and its states, the set of items passed by
 *				  pointer, the one constructor (claims, batch results);
 *				  the worker's transactions and the per-item
 *				  subtransaction
 *	  lease.c	  claiming items into a set, renewing, reclaiming and
 *				  handing back leases
 *	  writeback.c writing a set's finished items: the queue row and the
 *				  reply into its target, as the role that enqueued it
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_WORKER_ITEM_H
#define PG_LLM_WORKER_ITEM_H

#include "postgres.h"

#include "access/htup.h"
#include "access/tupdesc.h"
#include "lib/ilist.h"
#include "utils/timestamp.h"

#include "call.h"

struct HttpTransfer;

typedef enum ItemState
{
	ITEM_READY,					/* claimed, waiting for a slot (or its time) */
	ITEM_IN_FLIGHT,
	ITEM_DONE,					/* reply in hand, to be written */
	ITEM_RETRY_LATER,			/* back to pending, next_attempt_at set */
	ITEM_FAILED					/* failed for good */
} ItemState;

/* One queue item, with everything its calls need. */
typedef struct WorkItem
{
	dlist_node	node;
	int64		id;
	int			attempts;		/* as claimed: our lease's token */
	Oid			role;			/* who enqueued it, and is billed */
	int64		job_id;			/* the job that queued it; 0: none */
	char	   *tag;			/* its option tag (server encoding), or NULL */
	MemoryContext ctx;
	ItemState	state;

	/* the row as claimed (server encoding); NULL when not read */
	char	   *prompt;
	char	   *model;
	char	   *system;
	char	   *options;
	Oid			target_table;	/* InvalidOid: no write-back */
	char	   *target_column;
	char	   *target_key;		/* jsonb text */
	bool		shaped;			/* its options have a json_schema */
	bool		spread;			/* its answer goes into the columns of its names */
	int			invalid_answers;	/* answers that broke it, so far */
	char	   *kept_answer;	/* the last of them (server encoding), */
	char	   *kept_problem;	/* and what was wrong with it */
	bool		answered;		/* kept_answer is its paid reply: only its
								 * write-back is left (no call is made) */
	bool		stalled;		/* its write-back was put off (a lock or
								 * trigger outlasted llm.writeback_timeout) */
	bool		cache_wait;		/* an identical request is in flight: its
								 * reply is awaited (cache.c) */
	char	   *provider;		/* the provider it was enqueued for, or NULL:
								 * the model's routes */
	int			probe;			/* 1 + its provider's slot in the key probes
								 * while its request is in flight, else 0 */
	bool		untried;		/* put off without being tried (another of
								 * its role's write-backs stalled) */
	bool		embed;			/* an embedding: its reply is a vector, sent
								 * packed with others (embedding.c) */
	bool		set_up;			/* LeaseSetUp has seen it */
	bool		packed;			/* an embedding in a request's pack */

	LlmCall    *call;			/* NULL until set up */
	TimestampTz not_before;
	struct HttpTransfer *xfer;
	char	   *reply;			/* UTF-8 */
	char	   *error;			/* UTF-8 */
	char	   *db_text;		/* reply or error in the server encoding */
	char	   *said;			/* an answer that broke the json_schema, asked
								 * again (UTF-8), and in the server encoding: */
	char	   *said_db;
	TimestampTz next_attempt_at;
	bool		written;		/* its queue row was ours and is updated */
	bool		saved_first;	/* a Citus target's reply, saved for a
								 * write-back of its own (writeback.c) */
} WorkItem;

/*
 * Items held together: the worker's claimed items, or a chunk of a
 * batch's results on their way to being written.
 */
typedef struct ItemSet
{
	dlist_head	items;
	int			n;				/* items held */
	int			in_flight;		/* of them, requests on the wire */
	int			nfinished;		/* finished since the last write-back */
	TimestampTz first_finished_at;
} ItemSet;

/* Where an item's columns are in a query's result (-1: not there). */
typedef struct ItemColumns
{
	int			id;
	int			attempts;
	int			role;
	int			prompt;
	int			model;
	int			system;
	int			options;
	int			table;
	int			column;
	int			key;
	int			reply;
	int			error;
	int			invalid_answers;
	int			spread;
	int			answered;
	int			provider;
	int			task;
	int			job_id;
	int			tag;
} ItemColumns;

/* item.c */
extern void ItemSetInit(ItemSet *set);
extern void ItemColumnsFind(TupleDesc td, ItemColumns *cols);
extern WorkItem *ItemFromRow(ItemSet *set, HeapTuple tup, TupleDesc td, const ItemColumns *cols);
extern void ItemSent(ItemSet *set, WorkItem *it, struct HttpTransfer *t);
extern LlmStep ItemCallStep(LlmCall *call, struct HttpTransfer *t, LlmFailure *f,
							TimestampTz *not_before);
extern void ItemAnswered(ItemSet *set, WorkItem *it);
extern void ItemWait(WorkItem *it, TimestampTz not_before, char *error);
extern void ItemDone(ItemSet *set, WorkItem *it, char *reply);
extern void ItemFail(ItemSet *set, WorkItem *it, char *error);
extern void ItemRetryLater(ItemSet *set, WorkItem *it, char *error, TimestampTz when);
extern void ItemAskAgain(ItemSet *set, WorkItem *it, char *said, char *problem);
extern void ItemJudgeAnswer(ItemSet *set, WorkItem *it, LlmCall *call, const LlmReply *reply);
extern bool ItemFinished(const WorkItem *it);
extern void ItemFree(ItemSet *set, WorkItem *it);
extern void ItemXactBegin(const char *activity);
extern void ItemXactEnd(void);
extern uint64 ItemXactCount(void);
extern const char *ItemSubxact(void (*fn) (void *), void *arg, WorkItem *it);
extern int	ItemSubxactCode(void);

/* lease.c */
extern int	LeaseClaim(ItemSet *set, int n);
extern int	LeaseClaimOthers(ItemSet *set, int n);
extern int	LeaseClaimEmbeddings(ItemSet *set, int n);
extern void LeaseSetUp(ItemSet *set);
extern void LeaseRenew(ItemSet *set);
extern void LeaseReclaim(void);
extern void LeaseHandBack(ItemSet *set);

/* writeback.c */
extern int	llm_writeback_timeout;
extern void WritebackSet(ItemSet *set);
extern void WritebackSetInXact(ItemSet *set);

#endif							/* PG_LLM_WORKER_ITEM_H */
