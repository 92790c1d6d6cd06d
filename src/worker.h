/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  What the parts of the queue worker share: the claimed items, the
 *	  worker's short transactions and saved plans, and the entry points of
 *	  each part.
 *
 *	  worker.c	  the loop, settings, registration, reports
 *	  lease.c	  claiming items, renewing, reclaiming and handing back leases
 *	  writeback.c writing finished items: the queue row and the reply into
 *				  its target, as the role that enqueued it
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_WORKER_H
#define PG_LLM_WORKER_H

#include "postgres.h"

#include "lib/ilist.h"
#include "utils/timestamp.h"

#include "call.h"

typedef enum ItemState
{
	ITEM_READY,					/* claimed, waiting for a slot (or its time) */
	ITEM_IN_FLIGHT,
	ITEM_DONE,					/* reply in hand, to be written */
	ITEM_RETRY_LATER,			/* back to pending, next_attempt_at set */
	ITEM_FAILED					/* failed for good */
} ItemState;

/* One claimed queue item, with everything its calls need. */
typedef struct WorkItem
{
	dlist_node	node;
	int64		id;
	int			attempts;		/* as claimed: our lease's token */
	Oid			role;			/* who enqueued it, and is billed */
	MemoryContext ctx;
	ItemState	state;

	/* the row as claimed (server encoding) */
	char	   *prompt;
	char	   *model;
	char	   *system;
	char	   *options;
	Oid			target_table;	/* InvalidOid: no write-back */
	char	   *target_column;
	char	   *target_key;		/* jsonb text */

	LlmCall    *call;			/* NULL until set up */
	TimestampTz not_before;
	struct HttpTransfer *xfer;
	char	   *reply;			/* UTF-8 */
	char	   *error;			/* UTF-8 */
	char	   *db_text;		/* reply or error in the server encoding */
	TimestampTz next_attempt_at;
	bool		written;		/* its queue row was ours and is updated */
} WorkItem;

/* worker.c */
extern dlist_head WorkerItems;
extern int	WorkerNItems;
extern int	WorkerNInFlight;
extern int64 WorkerLeaseHolder;
extern int	WorkerSlot;
extern void WorkerXactBegin(const char *activity);
extern void WorkerXactEnd(void);
extern void WorkerReportError(const char *msg);
extern void WorkerItemFinished(WorkItem *it);
extern void WorkerItemFree(WorkItem *it);
extern char *WorkerCatchItemError(WorkItem *it);
extern const char *WorkerItemSubxact(void (*fn) (void *), void *arg, WorkItem *it);

/* lease.c */
extern int	LeaseClaim(int n);
extern void LeaseSetUp(void);
extern void LeaseRenew(void);
extern void LeaseReclaim(void);
extern void LeaseHandBack(void);

/* writeback.c */
extern void WritebackFinished(void);
extern void WritebackFinishedInXact(void);
extern bool WritebackItemFinished(const WorkItem *it);

#endif							/* PG_LLM_WORKER_H */
