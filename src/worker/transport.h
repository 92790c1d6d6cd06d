/*-------------------------------------------------------------------------
 *
 * transport.h
 *	  How the queue worker's items reach a provider: each way is a
 *	  transport, a small table of callbacks that the loop (worker.c)
 *	  drives in turn, in the manner of PostgreSQL's access methods.
 *
 *	  realtime.c  one request an item, as many in flight as
 *				  llm.worker_concurrency allows, fairly between roles
 *	  batch.c	  items enqueued with via => 'batch_api', through their
 *				  provider's batch API
 *	  embedding.c embedding items (realtime), many packed into each
 *				  request
 *
 *	  A transport starts its transfers on the process's curl multi handle
 *	  with its id in the transfer's user_kind; the loop hands each
 *	  finished transfer back to the transport that started it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_WORKER_TRANSPORT_H
#define PG_LLM_WORKER_TRANSPORT_H

#include "postgres.h"

#include "utils/timestamp.h"

#include "worker/item.h"

struct HttpTransfer;

/* The transports, by the id their transfers carry in user_kind. */
#define TRANSPORT_REALTIME 0
#define TRANSPORT_BATCH 1
#define TRANSPORT_EMBEDDING 2
#define TRANSPORTS 3

typedef struct WorkTransport
{
	const char *name;

	/* one pass of the loop: send what is due (items from set, or its own) */
	void		(*tick) (ItemSet *set, TimestampTz now);

	/* a transfer it started has finished (the loop found it done) */
	void		(*done) (ItemSet *set, struct HttpTransfer *t);

	/* when it has something to do next; 0: nothing until woken */
	TimestampTz (*next_due) (ItemSet *set);

	/* the worker stops: close its transfers (its state is in tables) */
	void		(*stop) (ItemSet *set);
} WorkTransport;

/* realtime.c */
extern const WorkTransport RealtimeTransport;

/* batch.c */
extern const WorkTransport BatchTransport;

/* embedding.c */
extern const WorkTransport EmbeddingTransport;

#endif							/* PG_LLM_WORKER_TRANSPORT_H */
