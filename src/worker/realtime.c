/*-------------------------------------------------------------------------
 *
 * realtime.c
 *	  The realtime transport: each claimed item is one request of its
 *	  own, sent concurrently on the process's curl multi handle, outside
 *	  any transaction.
 *
 *	  A pass fills the free slots (llm.worker_concurrency): with one role
 *	  the items go in claim order; with several, each free slot goes to
 *	  the role with the fewest requests in flight, so one role's slow
 *	  items do not hold every slot.  An item is sent when it is its
 *	  route's turn under the cluster's limits and cooldowns, else it
 *	  waits.  When a request ends, the call engine judges it (LlmCallStep,
 *	  as for every call): the item is done, tried again, failed, or goes
 *	  back to the queue for later.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "cache.h"
#include "call.h"
#include "http.h"
#include "queue.h"
#include "request.h"
#include "schema.h"
#include "slots.h"
#include "usage.h"
#include "worker/item.h"
#include "worker/transport.h"

/* how often an item whose identical request is in flight looks at it */
#define CACHE_POLL_MS 5

/*
 * How long an item whose provider refused its key stays in the queue
 * before it is looked at again (no request is sent while the key is
 * refused; a changed key lets it go).
 */
#define KEY_WAIT_MS 2000

/*
 * Providers whose key has not answered yet in this worker get one request
 * at a time: a wrong key costs one refused request, not a slot's worth
 * (the traffic control then stops every request with it).  A key is known
 * good from its first answer that is not a 401 or 403, or when that answer
 * takes longer than a refusal would.
 */
#define PROBED_MAX 64

typedef struct KeyProbe
{
	char		provider[NAMEDATALEN];
	bool		good;
	int			in_flight;
	TimestampTz sent_at;		/* the probe's request; one that takes
								 * longer than PROBE_WAIT_MS is no refusal */
} KeyProbe;

#define PROBE_WAIT_MS 2000

static KeyProbe probes[PROBED_MAX];
static int	nprobes = 0;

static KeyProbe *
key_probe(LlmCall *call)
{
	const char *name = LlmCallRoute(call)->provider->name;
	int			i;

	for (i = 0; i < nprobes; i++)
		if (strcmp(probes[i].provider, name) == 0)
			return &probes[i];
	if (nprobes == PROBED_MAX)
		return NULL;			/* too many to keep: no probing */
	strlcpy(probes[nprobes].provider, name, NAMEDATALEN);
	probes[nprobes].good = false;
	probes[nprobes].in_flight = 0;
	return &probes[nprobes++];
}

/* the earliest time an item waiting for its turn is due (0: none) */
static TimestampTz next_due = 0;

/*
 * Send an item's next attempt, when it is its route's turn under the
 * cluster's limits and cooldowns (else it waits, READY, until then).
 * Building the request can fail for this item alone (an option its
 * route's protocol refuses, a key's variable not set): the item fails,
 * the worker goes on.
 */
static void
item_send(ItemSet *set, WorkItem *it)
{
	MemoryContext old = MemoryContextSwitchTo(it->ctx);

	PG_TRY();
	{
		LlmFailure	f;
		TimestampTz not_before;
		CacheResult c = it->cache_wait ? CacheCheck(it->call, CACHE_TEXT, false) : CACHE_OFF;

		it->cache_wait = (c == CACHE_WAIT);
		if (c == CACHE_HIT)
		{
			/* the identical request in flight got its reply */
			ItemDone(set, it, it->call->reply.content);
			UsageRecord(it->call, LLM_OUTCOME_CACHE);
		}
		else if (c == CACHE_WAIT)
			it->not_before = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), CACHE_POLL_MS);
		else if (LlmCallTurn(it->call, &not_before, &f))
		{
			HttpTransfer *t = LlmSendAttempt(it->call, LlmCallRoute(it->call), false);
			KeyProbe   *kp = key_probe(it->call);

			if (kp)
			{
				if (kp->in_flight++ == 0)
					kp->sent_at = GetCurrentTimestamp();
				it->probe = kp - probes + 1;
			}
			t->user = it;
			t->user_kind = TRANSPORT_REALTIME;
			ItemSent(set, it, t);
		}
		else if (not_before && f.sqlstate == ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION)
		{
			/*
			 * The provider refused its key: nothing is sent while it does.
			 * The item goes back to the queue untried (its attempt given
			 * back, nothing recorded) and is set up anew when claimed
			 * again, with the key as it is then: once an administrator
			 * changes it, the item goes out by itself.
			 */
			UsageForget(it->call);
			it->untried = true;
			ItemRetryLater(set, it,
						   psprintf("%s; the item waits: fix the key with llm.alter_provider('%s', api_key => '...') and it is sent by itself",
									f.message, f.provider),
						   TimestampTzPlusMilliseconds(GetCurrentTimestamp(), KEY_WAIT_MS));
		}
		else if (not_before)
			it->not_before = not_before;
		else
		{
			ItemFail(set, it, LlmFailureText(&f));
			UsageRecord(it->call, LLM_OUTCOME_ERROR);
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(it->ctx);
		edata = CopyErrorData();
		FlushErrorState();
		ItemFail(set, it, LlmToUtf8(edata->message));
		UsageRecord(it->call, LLM_OUTCOME_ERROR);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
}

/*
 * Serve the items of this worker that wait for an identical request now
 * answered, at once: their flight is freed when the reply's row is
 * written, which this worker may do before it looks at them again.
 */
static void
serve_waiters(ItemSet *set)
{
	dlist_iter	iter;

	dlist_foreach(iter, &set->items)
	{
		WorkItem   *w = dlist_container(WorkItem, node, iter.cur);

		if (w->state == ITEM_READY && w->cache_wait)
			item_send(set, w);
	}
}

/*
 * Decide what happens to an item after an attempt: done, another try
 * (after the delay the provider asked for, or backoff), the next route of
 * the chain, back to the queue for later, or failed.  The decision is the
 * call engine's (LlmCallStep), as for every call; only "back to the
 * queue" is the worker's own.  A 429 is the provider's pace, waited out
 * with the item kept, never a failed try.  Runs outside a transaction:
 * texts stay UTF-8 until they are written, and an error here fails the
 * item alone.
 */
static void
item_judge(ItemSet *set, WorkItem *it)
{
	MemoryContext old = MemoryContextSwitchTo(it->ctx);
	LlmFailure	f;
	TimestampTz not_before = 0;
	LlmStep		step = ItemCallStep(it->call, it->xfer, &f, &not_before);
	volatile LlmOutcome outcome = LLM_OUTCOME_ERROR;

	ItemAnswered(set, it);
	if (it->probe > 0)
	{
		KeyProbe   *kp = &probes[it->probe - 1];

		kp->in_flight--;
		kp->good = !(it->call->http_status == 401 || it->call->http_status == 403);
		it->probe = 0;
	}

	switch (step)
	{
		case LLM_STEP_DONE:
			if (RequestHasSchema(it->call->req))
			{
				/* a refusal is no answer, and asking again gets the same */
				if (LlmReplyRefused(it->call, &f))
				{
					outcome = LLM_OUTCOME_REFUSED;
					ItemFail(set, it, LlmFailureText(&f));
				}
				else
					ItemJudgeAnswer(set, it, it->call, &it->call->reply);
			}
			else
			{
				const char *content = it->call->reply.content;

				/* a refusal, a tool call, a paused turn, no text: failed */
				outcome = LlmJudgeText(it->call, content && content[0] != '\0', &f);
				if (outcome != LLM_OUTCOME_OK)
					ItemFail(set, it, LlmFailureText(&f));
				else
				{
					ItemDone(set, it, it->call->reply.content);
					/* its waiters have it now; the row comes with the write-back */
					CacheKeep(it->call, it->call->reply.content);
					serve_waiters(set);
				}
			}
			break;
		case LLM_STEP_AGAIN:
			ItemWait(it, not_before, LlmFailureText(&f));
			SlotCountRetried();
			break;
		case LLM_STEP_FAILED:

			/*
			 * A key refused (401) or not allowed (403): the key's fault
			 * more than the item's.  The item waits in the queue for the
			 * key to change (the traffic control stops sending with a key
			 * refused twice), up to its attempts.
			 */
			if ((f.status == 401 || f.status == 403) && it->attempts < llm_max_attempts)
				ItemRetryLater(set, it,
							   psprintf("%s; the item waits: fix the key with llm.alter_provider('%s', api_key => '...') and it is sent again by itself",
										LlmFailureText(&f), f.provider ? f.provider : "?"),
							   TimestampTzPlusMilliseconds(GetCurrentTimestamp(), KEY_WAIT_MS));
			else
				ItemFail(set, it, LlmFailureText(&f));
			break;
		case LLM_STEP_SPENT:
			if (it->attempts >= llm_max_attempts)
				ItemFail(set, it, LlmFailureText(&f));
			else
			{
				/*
				 * Back to the queue; a later claim starts the chain again,
				 * no sooner than the provider asked (even when that is
				 * more than a call waits for).
				 */
				TimestampTz backoff = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
																  Min(1000L << Min(it->attempts, 10), 300000L));

				ItemRetryLater(set, it, LlmFailureText(&f), Max(backoff, not_before));
			}
			break;
	}
	if (it->state != ITEM_DONE && it->state != ITEM_READY)
		CacheAbandon(it->call);
	if (it->state == ITEM_DONE)
		UsageRecord(it->call, LLM_OUTCOME_OK);
	else if (it->state == ITEM_FAILED)
		UsageRecord(it->call, outcome);
	else if (it->state == ITEM_RETRY_LATER)
		UsageRecord(it->call, LLM_OUTCOME_RETRY);
	MemoryContextSwitchTo(old);
}

/* ---- sharing the slots between roles ---- */

#define MAX_ROLES_TRACKED 64

typedef struct RoleLoad
{
	Oid			role;
	int			in_flight;
} RoleLoad;

/* Is an item set up, ready and due? */
static inline bool
item_sendable(const WorkItem *it, TimestampTz now, TimestampTz *next_due)
{
	if (it->state != ITEM_READY || it->call == NULL)
		return false;
	/* a key not known good: one request at a time */
	{
		KeyProbe   *kp = key_probe(it->call);

		if (kp && !kp->good && kp->in_flight > 0 &&
			!TimestampDifferenceExceeds(kp->sent_at, now, PROBE_WAIT_MS))
		{
			TimestampTz due = TimestampTzPlusMilliseconds(kp->sent_at, PROBE_WAIT_MS);

			if (*next_due == 0 || due < *next_due)
				*next_due = due;
			return false;
		}
	}
	if (it->not_before > now)
	{
		if (*next_due == 0 || it->not_before < *next_due)
			*next_due = it->not_before;
		return false;
	}
	return true;
}

/*
 * Fill the free slots.  With one role (the common case) items go in
 * claim order; with several, each free slot goes to the role with the
 * fewest requests in flight that has an item ready.  Returns the time
 * the next retry is due (0: none).
 */
static TimestampTz
fill_slots(ItemSet *set, TimestampTz now)
{
	RoleLoad	roles[MAX_ROLES_TRACKED];
	int			nroles = 0;
	bool		many = false;
	dlist_iter	iter;
	TimestampTz due = 0;

	dlist_foreach(iter, &set->items)
	{
		WorkItem   *it = dlist_container(WorkItem, node, iter.cur);
		int			r;

		for (r = 0; r < nroles && roles[r].role != it->role; r++)
			;
		if (r == nroles && nroles < MAX_ROLES_TRACKED)
		{
			roles[nroles].role = it->role;
			roles[nroles].in_flight = 0;
			nroles++;
		}
		if (r < nroles && it->state == ITEM_IN_FLIGHT)
			roles[r].in_flight++;
	}
	many = nroles > 1;

	while (set->in_flight < WorkerConcurrency)
	{
		WorkItem   *best = NULL;
		int			best_load = INT_MAX;
		int			best_r = -1;

		dlist_foreach(iter, &set->items)
		{
			WorkItem   *it = dlist_container(WorkItem, node, iter.cur);
			int			r;

			if (!item_sendable(it, now, &due))
				continue;
			if (!many)
			{
				best = it;
				break;
			}
			for (r = 0; r < nroles && roles[r].role != it->role; r++)
				;
			if (r < nroles && roles[r].in_flight < best_load)
			{
				best = it;
				best_load = roles[r].in_flight;
				best_r = r;
				if (best_load == 0)
					break;
			}
			else if (r == nroles && best == NULL)
				best = it;
		}
		if (best == NULL)
			break;
		item_send(set, best);
		if (best_r >= 0 && best->state == ITEM_IN_FLIGHT)
			roles[best_r].in_flight++;
	}

	/*
	 * Every slot taken, by another role's slow requests perhaps: a role with
	 * an item ready and nothing in flight does not wait for them to end.  It
	 * gets one of a few spare slots (a tenth of llm.worker_concurrency, at
	 * most 16), one request at a time, so that it is served within one of
	 * its own calls' time however many requests the others have in flight.
	 */
	while (many && set->in_flight >= WorkerConcurrency &&
		   set->in_flight < WorkerConcurrency + WorkerSpare)
	{
		WorkItem   *starved = NULL;
		int			starved_r = -1;

		dlist_foreach(iter, &set->items)
		{
			WorkItem   *it = dlist_container(WorkItem, node, iter.cur);
			int			r;

			if (!item_sendable(it, now, &due))
				continue;
			for (r = 0; r < nroles && roles[r].role != it->role; r++)
				;
			if (r < nroles && roles[r].in_flight == 0)
			{
				starved = it;
				starved_r = r;
				break;
			}
		}
		if (starved == NULL)
			break;
		item_send(set, starved);
		if (starved->state == ITEM_IN_FLIGHT)
			roles[starved_r].in_flight++;
	}
	return due;
}

/* One pass: fill the free slots. */
static void
realtime_tick(ItemSet *set, TimestampTz now)
{
	next_due = fill_slots(set, now);
}

/* A request ended: judge it. */
static void
realtime_done(ItemSet *set, HttpTransfer *t)
{
	item_judge(set, (WorkItem *) t->user);
}

/* When the first item waiting for its turn is due. */
static TimestampTz
realtime_next_due(ItemSet *set)
{
	return next_due;
}

/* The worker stops: the requests in flight are dropped (handed back). */
static void
realtime_stop(ItemSet *set)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &set->items)
		ItemAnswered(set, dlist_container(WorkItem, node, iter.cur));
}

const WorkTransport RealtimeTransport = {
	.name = "realtime",
	.tick = realtime_tick,
	.done = realtime_done,
	.next_due = realtime_next_due,
	.stop = realtime_stop,
};
