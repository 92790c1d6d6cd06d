/*-------------------------------------------------------------------------
 *
 * embedding.c
 *	  The embedding transport: the worker's embedding items (enqueued with
 *	  llm.enqueue_embedding, or by an embedding job, realtime) go to the
 *	  provider many to a request, as the embeddings API takes an array of
 *	  inputs.
 *
 *	  A pass packs the ready items that are in no pack yet: the items of
 *	  one role (who is billed), one model and the same options, up to
 *	  llm.embed_inputs_per_request of them, fewer when their estimated
 *	  tokens would pass llm.embed_tokens_per_request; no more packs than
 *	  there are free request slots.  A pack's call is made in a
 *	  transaction (its model's routes, its budget reserved), each in a
 *	  subtransaction: what fails there fails the pack's items alone.  A
 *	  pack is sent, outside any transaction, when it is its route's turn,
 *	  as one request of the worker's concurrency (llm.worker_concurrency).
 *
 *	  When the request ends the call engine judges it (LlmCallStep, as for
 *	  every call): each item gets its vector, or the error of its input
 *	  (no vector, a non-numeric element, other dimensions than asked for);
 *	  a request refused as a whole (HTTP 400, 413 or 422) of
 *	  EMBED_PROBE_MIN_INPUTS items or more sends one of them alone, the
 *	  probe (EmbedRefusedWhole): refused with the same words, every item
 *	  fails with them (an option the model does not take); otherwise, and
 *	  for a smaller request, the items are split in half and each half
 *	  sent again, down to the item at fault (an input over the model's
 *	  limit), which fails alone (a refused request costs nothing, so
 *	  nothing is paid twice); a request whose retries are spent sends its
 *	  items back to the queue for later, as the realtime transport does.
 *	  One usage row a request, with its inputs.
 *
 *	  An item's reply is its vector as text ("[v1,...]"); the write-back
 *	  gives it to the target column's input function in the syntax of the
 *	  column's type (EmbedTextForColumn).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/ilist.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "call.h"
#include "embed.h"
#include "http.h"
#include "queue.h"
#include "request.h"
#include "slots.h"
#include "tokens.h"
#include "usage.h"
#include "worker/item.h"
#include "worker/transport.h"

typedef enum PackState
{
	PACK_NEW,					/* formed; its call is made in a transaction */
	PACK_READY,					/* to be sent at not_before */
	PACK_IN_FLIGHT,
	PACK_HELD,					/* refused: waits for its probe's answer */
	PACK_SPLIT					/* refused: split at the next pass */
} PackState;

/* One request's worth of items. */
typedef struct EmbedPack
{
	dlist_node	node;
	PackState	state;
	MemoryContext ctx;			/* the pack's memory: its call and vectors */
	Oid			role;
	const char *model;			/* the items' (server encoding) */
	const char *options;		/* the items' (server encoding), or NULL */
	int			n;
	WorkItem  **items;
	int64		tokens;			/* the estimate of its inputs */
	LlmCall    *call;
	HttpTransfer *xfer;
	TimestampTz not_before;
	bool		probed;			/* made from a refused request: a refusal splits it */
	struct EmbedPack *held;		/* a probe: the rest of its request, HELD */
	char	   *refusal;		/* a probe: the words of that request's refusal */
} EmbedPack;

/* every pack there is, in the order formed */
static dlist_head packs = DLIST_STATIC_INIT(packs);

/* the earliest time a pack waiting for its turn is due (0: none) */
static TimestampTz next_due = 0;

/* how many open packs a pass keeps while packing (roles, models, options) */
#define OPEN_PACKS 16

/*
 * The estimated tokens of an input, for packing requests under the
 * provider's tokens per request: the one estimate of tokens.c (the pack's
 * budget is reserved by the same).  The text is read as it is stored;
 * outside UTF-8 a byte that is no character counts as one.
 */
static int64
input_tokens(const WorkItem *it)
{
	return (int64) TokensEstimate(it->prompt, strlen(it->prompt));
}

/* A new pack (NEW) of room for up to cap items. */
static EmbedPack *
pack_new(const WorkItem *first, int cap)
{
	EmbedPack  *p = MemoryContextAllocZero(TopMemoryContext, sizeof(EmbedPack));

	p->ctx = AllocSetContextCreate(TopMemoryContext, "pg_llm embedding request", ALLOCSET_DEFAULT_SIZES);
	p->role = first->role;
	p->model = MemoryContextStrdup(p->ctx, first->model);
	p->options = first->options ? MemoryContextStrdup(p->ctx, first->options) : NULL;
	p->items = MemoryContextAlloc(p->ctx, sizeof(WorkItem *) * cap);
	p->state = PACK_NEW;
	dlist_push_tail(&packs, &p->node);
	return p;
}

/*
 * Forget a pack (its items live on in the set).  A probe's held rest is
 * split at the next pass: the probe was not refused with its request's
 * words.
 */
static void
pack_free(EmbedPack *p)
{
	if (p->held)
		p->held->state = PACK_SPLIT;
	dlist_delete(&p->node);
	MemoryContextDelete(p->ctx);
	pfree(p);
}

/* Do an item and a pack go together: role, model and options? */
static bool
pack_takes(const EmbedPack *p, const WorkItem *it)
{
	if (p->role != it->role || strcmp(p->model, it->model) != 0)
		return false;
	/* a request's usage row names one job (llm.usage.job_id) */
	if (p->n > 0 && p->items[0]->job_id != it->job_id)
		return false;
	if ((p->options == NULL) != (it->options == NULL))
		return false;
	return p->options == NULL || strcmp(p->options, it->options) == 0;
}

/* Add an item to a pack, with its estimated tokens (input_tokens). */
static void
pack_add(EmbedPack *p, WorkItem *it, int64 tokens)
{
	p->items[p->n++] = it;
	p->tokens += tokens;
	it->packed = true;
}

/*
 * Pack the ready embedding items that are in no pack, in claim order, into
 * at most max_packs new packs.  Returns the number made.
 */
static int
form_packs(ItemSet *set, int max_packs)
{
	EmbedPack  *open[OPEN_PACKS];
	int			nopen = 0;
	int			made = 0;
	int			per_request = llm_embed_inputs_per_request;
	dlist_iter	iter;

	if (max_packs <= 0)
		return 0;
	dlist_foreach(iter, &set->items)
	{
		WorkItem   *it = dlist_container(WorkItem, node, iter.cur);
		EmbedPack  *p = NULL;
		int64		t;
		int			k;

		if (!it->embed || it->packed || !it->set_up || it->state != ITEM_READY)
			continue;
		for (k = 0; k < nopen; k++)
			if (pack_takes(open[k], it))
				break;
		if (k == nopen && (made >= max_packs || nopen >= OPEN_PACKS))
		{
			/* no pack for it this pass: nor for any, once none is open */
			if (nopen == 0)
				break;
			continue;
		}
		/* its input is read for the estimate once, and only here */
		t = input_tokens(it);
		if (k < nopen &&
			(open[k]->n >= per_request ||
			 open[k]->tokens + t > llm_embed_tokens_per_request))
		{
			/* that pack is full: it stays as it is, a new one is begun */
			open[k] = open[--nopen];
			k = nopen;
		}
		if (k < nopen)
			p = open[k];
		else
		{
			if (made >= max_packs)
				continue;
			p = pack_new(it, per_request);
			open[nopen++] = p;
			made++;
		}
		pack_add(p, it, t);
	}
	return made;
}

/* Fail every item of a pack with one error (UTF-8), and forget the pack. */
static void
pack_fail(ItemSet *set, EmbedPack *p, const char *error)
{
	int			i;

	for (i = 0; i < p->n; i++)
	{
		WorkItem   *it = p->items[i];

		it->packed = false;
		ItemFail(set, it, MemoryContextStrdup(it->ctx, error));
	}
	if (p->call && p->call->accounted && !p->call->usage_recorded)
	{
		p->call->error = MemoryContextStrdup(p->ctx, error);
		UsageRecord(p->call, LLM_OUTCOME_ERROR);
	}
	pack_free(p);
}

/* Make a pack's call (in a subtransaction of the pass's transaction). */
static void
pack_setup(void *arg)
{
	EmbedPack  *p = (EmbedPack *) arg;
	MemoryContext old = MemoryContextSwitchTo(p->ctx);
	const char **texts = palloc(sizeof(char *) * p->n);
	size_t		bytes = p->options ? strlen(p->options) : 0;
	LlmRequest *req;
	int			i;

	for (i = 0; i < p->n; i++)
	{
		texts[i] = LlmToUtf8(p->items[i]->prompt);
		bytes += strlen(texts[i]);
	}
	req = RequestForEmbedding(texts, p->n, p->options ? LlmToUtf8(p->options) : NULL);
	p->call = EmbedCallCreate(req, p->model, p->n, LLM_MODE_QUEUE);
	p->call->job_id = p->items[0]->job_id;
	UsageBegin(p->call, p->role, bytes, 0);
	MemoryContextSwitchTo(old);
}

/*
 * Make the calls of the new packs, in one transaction: a bad pack (its
 * options, a model without embeddings, an exhausted budget) fails its
 * items alone.
 */
static void
setup_packs(ItemSet *set)
{
	dlist_mutable_iter iter;
	bool		any = false;

	dlist_foreach_modify(iter, &packs)
	{
		if (dlist_container(EmbedPack, node, iter.cur)->state == PACK_NEW)
			any = true;
	}
	if (!any)
		return;
	ItemXactBegin("pg_llm: setting up embedding requests");
	dlist_foreach_modify(iter, &packs)
	{
		EmbedPack  *p = dlist_container(EmbedPack, node, iter.cur);
		const char *error;

		if (p->state != PACK_NEW)
			continue;
		error = ItemSubxact(pack_setup, p, p->items[0]);
		if (error)
		{
			elog(LOG, "pg_llm worker: an embedding request of %d queue items cannot be sent: %s",
				 p->n, error);
			pack_fail(set, p, error);
		}
		else
			p->state = PACK_READY;
	}
	ItemXactEnd();
}

/* The items of a pack take a state (READY or IN_FLIGHT). */
static void
pack_items_state(EmbedPack *p, ItemState state)
{
	int			i;

	for (i = 0; i < p->n; i++)
		p->items[i]->state = state;
}

/*
 * Send a pack when it is its route's turn under the cluster's limits and
 * cooldowns (else it waits, READY, until then).  Building the request can
 * fail for this pack alone (a key's variable not set): its items fail.
 */
static void
pack_send(ItemSet *set, EmbedPack *p)
{
	MemoryContext old = MemoryContextSwitchTo(p->ctx);

	PG_TRY();
	{
		LlmFailure	f;
		TimestampTz not_before;

		if (LlmCallTurn(p->call, &not_before, &f))
		{
			HttpTransfer *t = LlmSendAttempt(p->call, LlmCallRoute(p->call), false);

			t->user = p;
			t->user_kind = TRANSPORT_EMBEDDING;
			p->xfer = t;
			p->state = PACK_IN_FLIGHT;
			pack_items_state(p, ITEM_IN_FLIGHT);
			set->in_flight++;
		}
		else if (not_before)
			p->not_before = not_before;
		else
			pack_fail(set, p, LlmFailureText(&f));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(p->ctx);
		edata = CopyErrorData();
		FlushErrorState();
		pack_fail(set, p, LlmToUtf8(edata->message));
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
}

/*
 * A pack refused as a whole is split in half: two new packs of the same
 * items, made and sent like any.
 */
static void
pack_split(EmbedPack *p)
{
	int			half = p->n / 2;
	EmbedPack  *a = pack_new(p->items[0], half);
	EmbedPack  *b = pack_new(p->items[half], p->n - half);
	int			i;

	for (i = 0; i < p->n; i++)
		pack_add(i < half ? a : b, p->items[i], input_tokens(p->items[i]));
	a->probed = b->probed = true;
	pack_items_state(p, ITEM_READY);
	pack_free(p);
}

/*
 * A pack refused as a whole: its probe, one item sent alone, and the rest
 * held until the probe's answer (EmbedRefusedWhole).  A pack made from a
 * refused one, or of fewer than EMBED_PROBE_MIN_INPUTS items, is split in
 * half at once.
 */
static void
pack_refused(EmbedPack *p, const char *error)
{
	int64	   *tokens;
	EmbedPack  *probe;
	EmbedPack  *rest;
	int			k;
	int			i;

	if (p->probed || p->n < EMBED_PROBE_MIN_INPUTS)
	{
		pack_split(p);
		return;
	}
	tokens = palloc(sizeof(int64) * p->n);
	for (i = 0; i < p->n; i++)
		tokens[i] = input_tokens(p->items[i]);
	k = EmbedProbeInput(tokens, p->n);
	probe = pack_new(p->items[k], 1);
	rest = pack_new(p->items[k == 0 ? 1 : 0], p->n - 1);
	for (i = 0; i < p->n; i++)
		pack_add(i == k ? probe : rest, p->items[i], tokens[i]);
	probe->probed = rest->probed = true;
	probe->held = rest;
	probe->refusal = MemoryContextStrdup(probe->ctx, error);
	rest->state = PACK_HELD;
	pack_items_state(p, ITEM_READY);
	pfree(tokens);
	pack_free(p);
}

/* The items of a pack whose request answered get their vectors. */
static void
pack_done(ItemSet *set, EmbedPack *p)
{
	LlmCall    *call = p->call;
	int			i;

	for (i = 0; i < p->n; i++)
	{
		WorkItem   *it = p->items[i];
		LlmVector  *v = &call->embed.vectors[i];
		MemoryContext old = MemoryContextSwitchTo(it->ctx);

		it->packed = false;
		if (v->error)
			ItemFail(set, it, psprintf("provider \"%s\" returned no usable vector for this input: %s",
									   call->route->provider->name, v->error));
		else
			ItemDone(set, it, EmbedVectorText(v->values, v->dim));
		MemoryContextSwitchTo(old);
	}
	UsageRecord(call, LLM_OUTCOME_OK);
	pack_free(p);
}

/*
 * The items of a pack whose retries and routes are spent go back to the
 * queue for later (or fail, out of attempts), as realtime items do.
 */
static void
pack_spent(ItemSet *set, EmbedPack *p, const LlmFailure *f, TimestampTz not_before)
{
	char	   *error = LlmFailureText(f);
	int			i;

	for (i = 0; i < p->n; i++)
	{
		WorkItem   *it = p->items[i];

		it->packed = false;
		if (it->attempts >= llm_max_attempts)
			ItemFail(set, it, MemoryContextStrdup(it->ctx, error));
		else
		{
			TimestampTz backoff = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
															  Min(1000L << Min(it->attempts, 10), 300000L));

			ItemRetryLater(set, it, MemoryContextStrdup(it->ctx, error), Max(backoff, not_before));
		}
	}
	p->call->error = error;
	UsageRecord(p->call, LLM_OUTCOME_RETRY);
	pack_free(p);
}

/* A pack's request ended: judge it (LlmCallStep, as for every call). */
static void
embedding_done(ItemSet *set, HttpTransfer *t)
{
	EmbedPack  *p = (EmbedPack *) t->user;
	MemoryContext old = MemoryContextSwitchTo(p->ctx);
	LlmFailure	f;
	TimestampTz not_before = 0;
	LlmStep		step = ItemCallStep(p->call, t, &f, &not_before);

	HttpRelease(t);
	p->xfer = NULL;
	set->in_flight--;

	switch (step)
	{
		case LLM_STEP_DONE:
			pack_done(set, p);
			break;
		case LLM_STEP_AGAIN:
			p->state = PACK_READY;
			p->not_before = not_before;
			pack_items_state(p, ITEM_READY);
			SlotCountRetried();
			break;
		case LLM_STEP_FAILED:
			{
				char	   *error = LlmFailureText(&f);

				if (p->held && EmbedRefusedWhole(f.status) && strcmp(error, p->refusal) == 0)
				{
					/* the request's fault: every item of it fails */
					EmbedPack  *rest = p->held;

					p->held = NULL;
					pack_fail(set, rest, error);
					pack_fail(set, p, error);
				}
				else if (p->n > 1 && EmbedRefusedWhole(f.status))
				{
					p->call->error = error;
					UsageRecord(p->call, LLM_OUTCOME_ERROR);
					pack_refused(p, error);
				}
				else
					pack_fail(set, p, error);
			}
			break;
		case LLM_STEP_SPENT:
			pack_spent(set, p, &f, not_before);
			break;
	}
	MemoryContextSwitchTo(old);
}

/*
 * One pass: pack the ready items into as many requests as there are free
 * slots, make their calls, and send the packs that are due.
 */
static void
embedding_tick(ItemSet *set, TimestampTz now)
{
	dlist_mutable_iter iter;
	int			waiting = 0;

	next_due = 0;
	dlist_foreach_modify(iter, &packs)
	{
		EmbedPack  *p = dlist_container(EmbedPack, node, iter.cur);

		/* its two halves come at the end of the list, counted there */
		if (p->state == PACK_SPLIT)
			pack_split(p);
		else if (p->state != PACK_IN_FLIGHT)
			waiting++;
	}
	(void) form_packs(set, WorkerConcurrency - set->in_flight - waiting);
	setup_packs(set);
	dlist_foreach_modify(iter, &packs)
	{
		EmbedPack  *p = dlist_container(EmbedPack, node, iter.cur);

		if (p->state != PACK_READY)
			continue;
		if (p->not_before > now)
		{
			if (next_due == 0 || p->not_before < next_due)
				next_due = p->not_before;
			continue;
		}
		if (set->in_flight >= WorkerConcurrency)
			break;
		pack_send(set, p);
		if (p->state == PACK_READY && p->not_before > now &&
			(next_due == 0 || p->not_before < next_due))
			next_due = p->not_before;
	}
}

/* When the first pack waiting for its turn is due. */
static TimestampTz
embedding_next_due(ItemSet *set)
{
	return next_due;
}

/*
 * The worker stops: the requests in flight are dropped (their items are
 * handed back), and what they may have cost is recorded.
 */
static void
embedding_stop(ItemSet *set)
{
	dlist_mutable_iter iter;

	/* every pack goes: none is split */
	dlist_foreach_modify(iter, &packs)
		dlist_container(EmbedPack, node, iter.cur)->held = NULL;
	dlist_foreach_modify(iter, &packs)
	{
		EmbedPack  *p = dlist_container(EmbedPack, node, iter.cur);

		if (p->xfer)
		{
			HttpRelease(p->xfer);
			p->xfer = NULL;
			set->in_flight--;
		}
		if (p->call && p->call->accounted && !p->call->usage_recorded)
			UsageRecord(p->call, LLM_OUTCOME_CANCELLED);
		pack_free(p);
	}
}

const WorkTransport EmbeddingTransport = {
	.name = "embedding",
	.tick = embedding_tick,
	.done = embedding_done,
	.next_due = embedding_next_due,
	.stop = embedding_stop,
};
