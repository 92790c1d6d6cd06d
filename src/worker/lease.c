/*-------------------------------------------------------------------------
 *
 * lease.c
 *	  The worker's hold on queue items: claiming them, setting them up,
 *	  renewing their leases, taking back the items of workers that are
 *	  gone, and handing its own back when it is told to stop.
 *
 *	  A claim is fair between the roles that enqueued: it takes up to n
 *	  ready items round robin over the roles that have some, starting
 *	  after the role the previous claim ended with, so one role's backlog
 *	  never holds the others' items back.  The claim commits on its own,
 *	  with each item's attempt counted, before anything about the item is
 *	  looked at: an item that breaks its worker in any way still runs out
 *	  of attempts and fails.  Items are then set up each in its own
 *	  subtransaction of a second transaction.
 *
 *	  Each claimed row records its holder, a token that identifies this
 *	  worker's incarnation in shared memory.  After a crash restart (shared
 *	  memory is new) or the exit of a worker, no live worker has the old
 *	  tokens, and the items are taken back at once; the lease time remains
 *	  the guard against a worker that is alive but stuck.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "cache.h"
#include "call.h"
#include "schema.h"
#include "queue.h"
#include "request.h"
#include "runas.h"
#include "slots.h"
#include "target.h"
#include "usage.h"
#include "worker/item.h"

/* The role the next claim starts after (round robin over roles), by task. */
static Oid	claim_after_role[2] = {InvalidOid, InvalidOid};

/*
 * Claim up to n ready items of a task (chat, or embed) of roles after
 * `after` (InvalidOid: all) and not in `except`, round robin over the
 * roles, and keep them as work items.  Returns the number claimed; *last
 * is the role of the last item taken.  Each task has its own index of
 * ready items, so that a backlog of one never slows the claims of the
 * other.
 */
static int
claim_from(ItemSet *set, int n, Oid after, Oid *last, Datum except, bool embed)
{
	const char *task = embed ? "'embed'" : "'chat'";
	Datum		values[5];
	Oid			types[5] = {INT4OID, INT4OID, INT8OID, OIDOID, OIDARRAYOID};
	uint64		i;
	uint64		nclaimed;
	SPITupleTable *tuptable;
	ItemColumns cols;

	values[0] = Int32GetDatum(n);
	values[1] = Int32GetDatum(llm_lease_time);
	values[2] = Int64GetDatum(SlotLeaseHolder());
	values[3] = ObjectIdGetDatum(after);
	values[4] = except;

	/*
	 * The roles with ready items, found by skipping through the ready
	 * index; for each, its oldest ready items (locked, skipping what
	 * another worker holds); then the first of every role, the second of
	 * every role, and so on, up to n.
	 */
	/*
	 * (The task is written into the statement, not passed: each task's
	 * ready items have an index of their own, which only a constant can
	 * match.)
	 */
	if (RunSql(psprintf("WITH RECURSIVE roles(r, k) AS ("
						"  (SELECT q.enqueued_by, 1 FROM llm.queue q"
						"    WHERE q.status = 'pending' AND q.via = 'realtime' AND q.task = %s"
						"      AND q.next_attempt_at <= pg_catalog.now()"
						"      AND q.enqueued_by > $4 ORDER BY q.enqueued_by LIMIT 1)"
						"  UNION ALL"
						"  SELECT (SELECT q.enqueued_by FROM llm.queue q"
						"           WHERE q.status = 'pending' AND q.via = 'realtime' AND q.task = %s"
						"             AND q.next_attempt_at <= pg_catalog.now()"
						"             AND q.enqueued_by > roles.r ORDER BY q.enqueued_by LIMIT 1), roles.k + 1"
						"  FROM roles WHERE roles.r IS NOT NULL AND roles.k < $1),"
						" picked AS ("
						"  SELECT c.id FROM roles CROSS JOIN LATERAL ("
						"    SELECT x.id, pg_catalog.row_number() OVER (ORDER BY x.next_attempt_at, x.id) AS rn"
						"    FROM (SELECT q.id, q.next_attempt_at FROM llm.queue q"
						"          WHERE q.enqueued_by = roles.r AND q.status = 'pending' AND q.via = 'realtime'"
						"            AND q.task = %s AND q.next_attempt_at <= pg_catalog.now()"
						"          ORDER BY q.next_attempt_at, q.id LIMIT $1 FOR UPDATE SKIP LOCKED) x) c"
						"  WHERE roles.r IS NOT NULL AND roles.r <> ALL ($5) ORDER BY c.rn, roles.r LIMIT $1)"
						"UPDATE llm.queue q SET status = 'running', attempts = q.attempts + 1,"
						" leased_by = $3, lease_until = pg_catalog.now() + pg_catalog.make_interval(secs => $2),"
						" started_at = pg_catalog.now() "
						"FROM picked WHERE q.id = picked.id "
						"RETURNING q.id, q.attempts, q.prompt, q.model, q.system, q.options::text,"
						" q.target_table::pg_catalog.oid, q.target_column, q.target_key::text, q.enqueued_by,"
						" q.reply, q.error, q.invalid_answers, q.spread, q.answered, q.provider, q.task, q.job_id",
						task, task, task),
			   5, types, values, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not claim queue items");

	tuptable = SPI_tuptable;
	nclaimed = SPI_processed;
	if (nclaimed > 0)
		ItemColumnsFind(tuptable->tupdesc, &cols);
	for (i = 0; i < nclaimed; i++)
	{
		WorkItem   *it = ItemFromRow(set, tuptable->vals[i], tuptable->tupdesc, &cols);

		if (it->role > *last)
			*last = it->role;
	}
	return (int) nclaimed;
}

/* A claim of one task's items, in a transaction of its own. */
static int
claim_task(ItemSet *set, int n, bool embed)
{
	Oid			last = InvalidOid;
	Oid		   *after = &claim_after_role[embed ? 1 : 0];
	Datum		none = PointerGetDatum(construct_empty_array(OIDOID));
	int			got;

	ItemXactBegin(embed ? "pg_llm: claiming embedding items" : "pg_llm: claiming queue items");
	got = claim_from(set, n, *after, &last, none, embed);
	if (got < n && OidIsValid(*after))
		got += claim_from(set, n - got, InvalidOid, &last, none, embed);
	ItemXactEnd();
	/* the next claim starts after the role this one ended with */
	*after = (got >= n) ? last : InvalidOid;
	return got;
}

/*
 * Claim up to n ready items, fairly between roles, in a transaction of
 * its own that commits the attempts before any item is looked at.
 * Returns the number claimed.
 */
int
LeaseClaim(ItemSet *set, int n)
{
	return claim_task(set, n, false);
}

/*
 * Claim up to n ready embedding items (realtime), fairly between roles as
 * LeaseClaim does; the embedding transport packs them into requests.
 */
int
LeaseClaimEmbeddings(ItemSet *set, int n)
{
	return claim_task(set, n, true);
}

/* the set whose items are being set up */
static ItemSet *setup_set = NULL;

/*
 * Claim up to n ready items of the roles that have none waiting among the
 * items held: a role whose items arrive while another's backlog fills the
 * worker gets its items in hand at once, and the next free slot (which
 * goes to the role with the fewest requests in flight).  Returns the
 * number claimed.
 */
int
LeaseClaimOthers(ItemSet *set, int n)
{
	dlist_iter	iter;
	Datum	   *roles = palloc(sizeof(Datum) * Max(set->n, 1));
	int			nroles = 0;
	Oid			last = InvalidOid;
	int			got;
	int			i;

	dlist_foreach(iter, &set->items)
	{
		WorkItem   *it = dlist_container(WorkItem, node, iter.cur);

		if (it->state != ITEM_READY || it->embed)
			continue;
		for (i = 0; i < nroles && DatumGetObjectId(roles[i]) != it->role; i++)
			;
		if (i == nroles)
			roles[nroles++] = ObjectIdGetDatum(it->role);
	}
	if (nroles == 0)
		return 0;
	ItemXactBegin("pg_llm: claiming queue items of other roles");
	got = claim_from(set, n, InvalidOid, &last,
					 PointerGetDatum(construct_array(roles, nroles, OIDOID, sizeof(Oid), true, TYPALIGN_INT)),
					 false);
	ItemXactEnd();
	return got;
}

/* Make a claimed row into a call; errors are the item's own. */
static void
item_setup(void *arg)
{
	WorkItem   *it = (WorkItem *) arg;
	MemoryContext old = MemoryContextSwitchTo(it->ctx);
	LlmRequest *req;

	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(it->role)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the role that enqueued it no longer exists")));
	if (OidIsValid(it->target_table))
	{
		char	   *gone = TargetGone(it->target_table, it->target_column);

		if (gone)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("%s", gone)));
	}
	/*
	 * A paid reply whose write-back was put off or failed (llm.retry): it
	 * is written back as it is, and the provider is not asked again.
	 */
	if (it->answered)
	{
		ItemDone(setup_set, it, LlmToUtf8(it->kept_answer));
		MemoryContextSwitchTo(old);
		return;
	}
	/* an embedding is sent with others: its request is its pack's */
	if (it->embed)
	{
		MemoryContextSwitchTo(old);
		return;
	}
	req = RequestFromPrompt(LlmToUtf8(it->prompt),
							it->system ? LlmToUtf8(it->system) : NULL,
							it->options ? LlmToUtf8(it->options) : NULL);
	it->shaped = RequestHasSchema(req);
	/* asked again after an answer that broke its json_schema */
	if (it->kept_answer && it->shaped)
		req = SchemaRetryRequestFor(req, LlmToUtf8(it->kept_answer),
									LlmToUtf8(it->kept_problem ? it->kept_problem : "it broke the schema"));
	it->call = LlmCallCreate(req, it->model, LLM_MODE_QUEUE);
	it->call->job_id = it->job_id;
	/* enqueued for one provider: its routes of the model only */
	if (it->provider)
	{
		it->call->routes = QueueRoutesOn(it->model, it->provider);
		it->call->route_cell = list_head(it->call->routes);
	}
	UsageBegin(it->call, it->role,
			   strlen(it->prompt) + (it->system ? strlen(it->system) : 0) +
			   (it->options ? strlen(it->options) : 0),
			   RequestMaxTokens(req));
	/* the response cache, or an identical request in flight, may answer it */
	switch (CacheCheck(it->call, CACHE_TEXT, false))
	{
		case CACHE_HIT:
			ItemDone(setup_set, it, it->call->reply.content);
			UsageRecord(it->call, LLM_OUTCOME_CACHE);
			break;
		case CACHE_WAIT:
			it->cache_wait = true;
			break;
		default:
			break;
	}
	MemoryContextSwitchTo(old);
}

/*
 * Set up the items claimed but not yet set up, each in a subtransaction:
 * a bad item (options, model, budget, a role that is gone) fails alone.
 */
void
LeaseSetUp(ItemSet *set)
{
	dlist_iter	iter;
	bool		any = false;

	dlist_foreach(iter, &set->items)
	{
		WorkItem   *it = dlist_container(WorkItem, node, iter.cur);

		if (!it->set_up && it->state == ITEM_READY)
			any = true;
	}
	if (!any)
		return;

	ItemXactBegin("pg_llm: setting up queue items");
	setup_set = set;
	dlist_foreach(iter, &set->items)
	{
		WorkItem   *it = dlist_container(WorkItem, node, iter.cur);
		const char *error;

		if (it->set_up || it->state != ITEM_READY)
			continue;
		it->set_up = true;
		error = ItemSubxact(item_setup, it, it);
		if (error)
		{
			ItemFail(set, it, (char *) error);
			elog(LOG, "pg_llm worker: queue item " INT64_FORMAT " cannot be sent: %s",
				 it->id, it->error);
		}
	}
	ItemXactEnd();
}

/* The ids and lease tokens of the items held, as two arrays. */
static int
held_items(ItemSet *set, Datum *ids, Datum *atts, bool unfinished_only)
{
	dlist_iter	iter;
	int			n = 0;

	dlist_foreach(iter, &set->items)
	{
		WorkItem   *it = dlist_container(WorkItem, node, iter.cur);

		if (unfinished_only && ItemFinished(it))
			continue;
		ids[n] = Int64GetDatum(it->id);
		atts[n] = Int32GetDatum(it->attempts);
		n++;
	}
	return n;
}

/*
 * Extend the leases of every item this worker holds, so that a request
 * that runs longer than the lease (retries, slow providers) is not taken
 * back from under it.  Allocates in the caller's (per-pass) context.
 */
void
LeaseRenew(ItemSet *set)
{
	Datum	   *ids;
	Datum	   *atts;
	int			n;
	Oid			types[3] = {INT8ARRAYOID, INT4ARRAYOID, INT4OID};
	Datum		values[3];

	if (set->n == 0)
		return;
	ids = palloc(sizeof(Datum) * set->n);
	atts = palloc(sizeof(Datum) * set->n);
	n = held_items(set, ids, atts, false);
	ItemXactBegin("pg_llm: renewing leases");
	values[0] = LlmMakeArray(ids, NULL, n, INT8OID);
	values[1] = LlmMakeArray(atts, NULL, n, INT4OID);
	values[2] = Int32GetDatum(llm_lease_time);
	if (RunSql("UPDATE llm.queue q SET lease_until = pg_catalog.now() + pg_catalog.make_interval(secs => $3) "
					 "FROM unnest($1, $2) AS u(id, a) "
					 "WHERE q.id = u.id AND q.attempts = u.a AND q.status = 'running'",
					 3, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not renew leases");
	ItemXactEnd();
}

/*
 * Items whose holder is gone (no live worker has its token: it exited or
 * the server restarted after a crash) or whose lease ran out (a worker
 * alive but stuck) become pending again; those out of attempts fail.
 */
void
LeaseReclaim(void)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1];

	ItemXactBegin("pg_llm: reclaiming leases");
	values[0] = Int32GetDatum(llm_max_attempts);

	/*
	 * An item whose worker died every time it held it runs out of attempts
	 * like any other: it fails instead of going back to the queue.
	 */
	if (RunSql("UPDATE llm.queue SET lease_until = NULL, leased_by = NULL, "
					 "status = CASE WHEN attempts >= $1 THEN 'failed' ELSE 'pending' END, "
					 "finished_at = CASE WHEN attempts >= $1 THEN pg_catalog.now() END, "
					 "error = CASE WHEN attempts >= $1 THEN "
					 "  'its worker stopped before finishing it, ' || attempts::text || ' times' ELSE error END "
					 "WHERE status = 'running' "
					 "AND (lease_until < pg_catalog.now() OR NOT llm._lease_alive(leased_by))",
					 1, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not reclaim queue items");
	if (SPI_processed > 0)
		elog(LOG, "pg_llm worker: " UINT64_FORMAT " queue items whose worker is gone or whose lease expired were taken back",
			 (uint64) SPI_processed);
	ItemXactEnd();
}

/*
 * Give back the items this worker holds and has not finished (it is
 * stopping): they become pending at once, and the attempt they were
 * claimed for is not counted.
 */
void
LeaseHandBack(ItemSet *set)
{
	Datum	   *ids;
	Datum	   *atts;
	int			n;
	Oid			types[2] = {INT8ARRAYOID, INT4ARRAYOID};
	Datum		values[2];

	if (set->n == 0)
		return;
	ids = palloc(sizeof(Datum) * set->n);
	atts = palloc(sizeof(Datum) * set->n);
	n = held_items(set, ids, atts, true);
	if (n == 0)
		return;
	ItemXactBegin("pg_llm: handing back leases");
	values[0] = LlmMakeArray(ids, NULL, n, INT8OID);
	values[1] = LlmMakeArray(atts, NULL, n, INT4OID);
	if (RunSql("UPDATE llm.queue q SET status = 'pending', attempts = q.attempts - 1, "
					 "lease_until = NULL, leased_by = NULL "
					 "FROM unnest($1, $2) AS u(id, a) "
					 "WHERE q.id = u.id AND q.attempts = u.a AND q.status = 'running'",
					 2, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not hand back queue items");
	elog(LOG, "pg_llm worker: %d queue items handed back before stopping", (int) SPI_processed);
	ItemXactEnd();
}
