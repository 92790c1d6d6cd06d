/*-------------------------------------------------------------------------
 *
 * batch_store.c
 *	  The worker's provider batches in the database: llm._batch and the
 *	  items of each batch in llm.queue.
 *
 *	  A batch is formed by attaching ready items to a new row of
 *	  llm._batch, committed before anything is sent.  Its requests are
 *	  built from its items a chunk at a time, through the protocol's line
 *	  format (an item that cannot be sent fails alone; items past the
 *	  provider's size limit go back to the queue for the next batch).  What
 *	  the provider says is recorded in the row as it comes.  Results are
 *	  matched to items by custom_id ("q" and the item's id), never by
 *	  position, made into items (item.c) and written back exactly as
 *	  realtime replies are (writeback.c): the same rights, the same
 *	  exactly-once guard, their usage at the batch price in the same
 *	  transaction.  When a batch ends, its items still waiting expired
 *	  (sent again, without using an attempt) or go back to the queue.
 *
 *	  This file sends nothing: the transport (batch.c) does.
 *
 *	  Every statement here runs as the worker's own user (the bootstrap
 *	  superuser a background worker connects as), never as an item's role:
 *	  only the write-back of a result takes the role that enqueued the item
 *	  (writeback.c).  They run under the worker's pinned search_path and
 *	  name llm's tables and pg_catalog's functions in full all the same.
 *	  Their text is constant, every value a parameter: RunSql keeps one
 *	  saved plan for each statement it runs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/stat.h>
#include <unistd.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/string.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "call.h"
#include "config.h"
#include "embed.h"
#include "provider.h"
#include "queue.h"
#include "redact.h"
#include "request.h"
#include "runas.h"
#include "schema.h"
#include "target.h"
#include "usage.h"
#include "worker/batch.h"
#include "worker/item.h"

#define BUILD_CHUNK 1000		/* items read and lines built at a time */
#define INGEST_CHUNK 1000		/* results written back at a time */

/*
 * The delay, in milliseconds, before something of the batch transport is
 * tried for the n-th time (n below 1 counts as 1): an item whose result
 * asked for a retry (ingest_flush), a lookup of a batch (batch.c).  2^n
 * seconds, at most 5 minutes (from n = 9 on): the delay BatchReleaseItems
 * computes in SQL.
 */
int64
BatchBackoffMs(int n)
{
	return Min(1000L << Min(Max(n, 1), 10), 300000L);
}

/* ---- forming ---- */

/*
 * Attach up to n ready batch items of a model, enqueued for provider (or
 * NULL: for none), of one task (embed: embeddings; else chat), to a new
 * batch row, in the caller's transaction; returns the batch's id (0: no
 * item was ready, or with full_only fewer than n).  *token gets the
 * batch's name either way, in the current memory context.
 */
int64
BatchStoreForm(const char *model, const char *provider, bool embed, const LlmRoute *route,
			   const LlmBatchOps *kind, int n, bool full_only, char **token)
{
	Oid			types[7] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT4OID, TEXTOID};
	Datum		values[7];
	uint64		r;
	int64		id;
	int64		attached;
	bool		isnull;
	Datum		ids;

	/*
	 * The batch's own name (llm._batch.token, in its metadata where the
	 * provider keeps it): the database's OID and 64 random bits, so that no
	 * other batch on the provider account, from this database or another,
	 * has it; a lookup after a crash (batch.c) finds the batch by it.
	 * Without a strong random source the time and the process id stand in;
	 * the column is UNIQUE, so a clash in this database fails the forming
	 * instead of mixing two batches.
	 */
	if (!pg_strong_random(&r, sizeof(r)))
		r = (uint64) GetCurrentTimestamp() ^ (uint64) MyProcPid;
	*token = psprintf("pg_llm_%u_%016llx", MyDatabaseId, (unsigned long long) r);
	/*
	 * The items first (their ids, locked), then the batch row, then the
	 * items by id: each statement's plan holds whatever the queue's size.
	 */
	values[0] = CStringGetTextDatum(model);
	values[1] = Int32GetDatum(n);
	values[2] = provider ? CStringGetTextDatum(provider) : (Datum) 0;
	values[3] = CStringGetTextDatum(embed ? "embed" : "chat");
	{
		Oid			t[4] = {TEXTOID, INT4OID, TEXTOID, TEXTOID};
		char		nulls[4] = {' ', ' ', provider ? ' ' : 'n', ' '};

		/*
		 * The items waiting longest first.  SKIP LOCKED: an item another
		 * transaction holds (a session deleting or changing it) is left for
		 * the next forming instead of blocking the worker's loop.
		 */
		if (RunSql("SELECT pg_catalog.array_agg(s.id), pg_catalog.count(*) FROM ("
				   "  SELECT q.id FROM llm.queue q "
				   "  WHERE q.status = 'pending' AND q.via = 'batch_api' AND q.model = $1 "
				   "    AND q.provider IS NOT DISTINCT FROM $3 AND q.task = $4 "
				   "    AND q.next_attempt_at <= pg_catalog.now() "
				   "  ORDER BY q.next_attempt_at, q.id LIMIT $2 FOR UPDATE SKIP LOCKED) s",
				   4, t, values, nulls, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not form a batch");
	}
	attached = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	/*
	 * No batch: nothing is written, the items stay pending, and their row
	 * locks go with the caller's transaction.
	 */
	if (attached == 0 || (full_only && attached < n))
		return 0;
	ids = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

	values[0] = CStringGetTextDatum(*token);
	values[1] = CStringGetTextDatum(route->provider->name);
	values[2] = CStringGetTextDatum(kind->name);
	values[3] = CStringGetTextDatum(model);
	values[4] = CStringGetTextDatum(route->upstream_model);
	values[5] = Int32GetDatum((int32) attached);
	values[6] = CStringGetTextDatum(embed ? "embed" : "chat");

	/*
	 * The row, with the number of items formed (BatchStoreBuild sets the
	 * number of lines actually built).  The caller commits it with its items
	 * (form_batches) before anything is sent: after a crash the batch is
	 * found again (BatchStoreUnfinished), and no item is ever at a provider
	 * without a row that says where.
	 */
	if (RunSql("INSERT INTO llm._batch (token, provider, kind, model, upstream_model, requests, task) "
			   "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
			   7, types, values, NULL, false, 0) != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "could not form a batch");
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	{
		Oid			t[2] = {INT8ARRAYOID, INT8OID};
		Datum		v[2] = {ids, Int64GetDatum(id)};

		/*
		 * Submitted, pointing to the batch: out of every claim (claims take
		 * pending items) and of the next forming.  The submission uses an
		 * attempt, given back when the item turns out never to have run
		 * (BatchPutBack, BatchExpireItems).  No lease: the batch holds the
		 * item, and the reclaim of leases (lease.c) looks at running items
		 * only.
		 */
		if (RunSql("UPDATE llm.queue SET status = 'submitted', batch_id = $2, attempts = attempts + 1, "
				   "started_at = pg_catalog.now(), lease_until = NULL, leased_by = NULL "
				   "WHERE id = ANY ($1)", 2, t, v, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not form a batch");
	}
	return id;
}

/*
 * The models with batch items ready (up to 100 a pass), with the provider
 * the items were enqueued for (NULL: none) in *providers and whether they
 * are embeddings in *embeds, in the caller's transaction; *n is their
 * number.  Each row is one kind of batch: a batch holds a single model
 * and task.  The strings are in SPI's memory, valid until the caller's
 * transaction ends.  Nothing is locked here: BatchStoreForm locks the
 * items it takes.
 */
char **
BatchStoreReadyModels(int *n, char ***providers, bool **embeds)
{
	char	  **models;
	int			i;

	if (SPI_execute("SELECT DISTINCT model, provider, task = 'embed' FROM llm.queue "
					"WHERE status = 'pending' AND via = 'batch_api' AND next_attempt_at <= pg_catalog.now() "
					"LIMIT 100", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not look for batch items");
	*n = (int) SPI_processed;
	models = palloc(sizeof(char *) * Max(*n, 1));
	*providers = palloc(sizeof(char *) * Max(*n, 1));
	*embeds = palloc(sizeof(bool) * Max(*n, 1));
	for (i = 0; i < *n; i++)
	{
		models[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		(*providers)[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		(*embeds)[i] = strcmp(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3), "t") == 0;
	}
	return models;
}

/*
 * The batch items of a model (enqueued for provider, or NULL: for none)
 * of a task whose provider has no batch API for it go realtime, in the
 * caller's transaction.
 */
void
BatchStoreToRealtime(const char *model, const char *provider, bool embed)
{
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3];
	char		nulls[3] = {' ', provider ? ' ' : 'n', ' '};

	values[0] = CStringGetTextDatum(model);
	values[1] = provider ? CStringGetTextDatum(provider) : (Datum) 0;
	values[2] = CStringGetTextDatum(embed ? "embed" : "chat");

	/*
	 * Only pending items: those already in a batch stay with it.  The
	 * realtime transport then claims them as if they had been enqueued with
	 * via => 'realtime'.
	 */
	(void) RunSql("UPDATE llm.queue SET via = 'realtime' "
				  "WHERE status = 'pending' AND via = 'batch_api' AND model = $1 "
				  "AND provider IS NOT DISTINCT FROM $2 AND task = $3",
				  3, types, values, nulls, false, 0);
}

/*
 * The batches a previous worker left unfinished (after a crash), oldest
 * first, as rows of text (see BatchStoredColumn), in the caller's
 * transaction.  'preparing': formed, its creation at the provider not
 * recorded (it may have been sent); 'submitted': the provider has it.
 */
List *
BatchStoreUnfinished(void)
{
	List	   *rows = NIL;
	uint64		i;

	/* the columns in the order of enum BatchStoredColumn (batch.h) */
	if (SPI_execute("SELECT id, token, kind, model, provider, upstream_model, status, "
					"provider_batch_id, input_file_id, output_file_id, error_file_id, results_url, task "
					"FROM llm._batch WHERE status IN ('preparing', 'submitted') ORDER BY id",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read llm._batch");
	for (i = 0; i < SPI_processed; i++)
	{
		char	  **row = palloc(sizeof(char *) * BS_NCOLUMNS);
		int			k;

		for (k = 0; k < BS_NCOLUMNS; k++)
			row[k] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, k + 1);
		rows = lappend(rows, row);
	}
	return rows;
}

/* ---- a batch's requests ---- */

/*
 * One item's line of a batch request: its request (prompt, system prompt,
 * options) in the provider's batch format, its budget reserved.  What
 * makes the item impossible to send is returned in *error instead.  A
 * line longer than room bytes (with its separator) does not fit the batch
 * being built: *line is NULL and nothing is reserved, since the item waits
 * for the next batch, where its line is built and reserved again.  The
 * errors caught here come from pg_llm's own checks (options the protocol
 * refuses, a budget), which hold no resource when they are raised.
 */
static void
BatchBuildLine(const LlmBatchOps *kind, const LlmRoute *route, const char *model, bool embed,
			   const char *id, const char *prompt,
			   const char *system, const char *options, Oid role, size_t room,
			   char **line, char **error)
{
	MemoryContext old = CurrentMemoryContext;
	double		usd;
	int64		calls;
	int64		max_queued;

	*line = NULL;
	*error = NULL;

	/*
	 * A role dropped since it enqueued the item: the reply could not be
	 * written back as that role (writeback.c), nor its cost charged to it,
	 * so the item fails before anything is paid for.
	 */
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(role)))
	{
		*error = pstrdup("the role that enqueued it no longer exists");
		return;
	}
	PG_TRY();
	{
		LlmRequest *req;

		if (embed)
		{
			/* an embedding: one input a request */
			const char *input = LlmToUtf8(prompt);

			if (kind->embed_line == NULL)
				elog(ERROR, "batch API \"%s\" of provider \"%s\" takes no embedding requests",
					 kind->name, route->provider->name);
			req = RequestForEmbedding(&input, 1, options ? LlmToUtf8(options) : NULL);
		}
		else
			req = RequestFromPrompt(LlmToUtf8(prompt), system ? LlmToUtf8(system) : NULL,
									options ? LlmToUtf8(options) : NULL);

		/*
		 * custom_id: "q" and the item's id, by which BatchIngestLine finds
		 * the item again whatever order the results come in (PROTOCOLS.md
		 * 2.4, 3.7).  Past room (the kind's limit on the size of the
		 * requests, OpenAI's 200 MB file, Message Batches' 256 MB:
		 * PROTOCOLS.md 2.1, 3.7; 64 bytes kept for the requests' head and
		 * tail) the line is not taken and nothing is reserved.
		 */
		*line = embed ? ProviderBatchEmbedLine(kind, req, route, psprintf("q%s", id)) :
			ProviderBatchLine(kind, req, route, psprintf("q%s", id));
		if (strlen(*line) + 64 > room)
			*line = NULL;
		else if (ConfigBudget(role, &usd, &calls, &max_queued) && (usd >= 0 || calls >= 0))
		{
			LlmCall		call;

			/*
			 * A role with a budget in USD or in calls has the request's
			 * estimated cost reserved now, as a realtime call has before it is
			 * sent; the usage record of its result settles it (ingest_flush).
			 * The request's size in bytes is the sum ingest_flush computes in
			 * SQL (request_bytes): the two must agree for the reservation to be
			 * given back whole.  An exhausted budget raises here and fails this
			 * item alone.
			 */
			memset(&call, 0, sizeof(call));
			call.mode = LLM_MODE_BATCH_API;
			call.model = (char *) model;
			call.req = req;
			call.routes = list_make1((void *) route);
			if (embed)
			{
				call.task = LLM_TASK_EMBED;
				call.ninputs = 1;
			}
			UsageReserve(&call, role, strlen(prompt) + (system ? strlen(system) : 0) +
						 (options ? strlen(options) : 0), embed ? 0 : RequestMaxTokens(req));
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/*
		 * The copy is made in the caller's memory (the chunk's): the catch
		 * runs in ErrorContext, which FlushErrorState empties.
		 */
		MemoryContextSwitchTo(old);
		edata = CopyErrorData();
		FlushErrorState();
		*error = edata->message;
	}
	PG_END_TRY();
}

/*
 * Fail the items of a batch that could not be sent, with their errors (ids
 * and errors: parallel lists of strings).  Only items still submitted in
 * this batch change: a concurrent change (a cancelled job's items
 * deleted) wins.  The log names the first error; each item's row has its
 * own.
 */
static void
BatchFailItems(int64 batch_id, List *ids, List *errors)
{
	Datum	   *idv;
	Datum	   *errv;
	int			n = list_length(ids);
	int			i = 0;
	ListCell   *a,
			   *e;
	Oid			types[3] = {INT8ARRAYOID, TEXTARRAYOID, INT8OID};
	Datum		values[3];

	if (n == 0)
		return;
	idv = palloc(sizeof(Datum) * n);
	errv = palloc(sizeof(Datum) * n);
	forboth(a, ids, e, errors)
	{
		idv[i] = Int64GetDatum(strtoll(lfirst(a), NULL, 10));
		errv[i] = CStringGetTextDatum(lfirst(e));
		i++;
	}
	values[0] = LlmMakeArray(idv, NULL, n, INT8OID);
	values[1] = LlmMakeArray(errv, NULL, n, TEXTOID);
	values[2] = Int64GetDatum(batch_id);
	if (RunSql("UPDATE llm.queue q SET status = 'failed', error = u.e, finished_at = pg_catalog.now() "
			   "FROM unnest($1::int8[], $2::text[]) AS u(id, e) "
			   "WHERE q.id = u.id AND q.batch_id = $3 AND q.status = 'submitted'",
			   3, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update llm.queue");
	elog(LOG, "pg_llm worker: %d items of batch " INT64_FORMAT " cannot be sent (the first: %s)",
		 n, batch_id, (char *) linitial(errors));
}

/*
 * Items that did not fit in a batch: back to the queue, as they were.
 * Their attempt is given back and their next_attempt_at kept, so the next
 * forming, which takes the items waiting longest first, takes them first.
 */
static void
BatchPutBack(int64 batch_id, List *ids)
{
	Datum	   *idv;
	int			n = list_length(ids);
	int			i = 0;
	ListCell   *lc;
	Oid			types[2] = {INT8ARRAYOID, INT8OID};
	Datum		values[2];

	if (n == 0)
		return;
	idv = palloc(sizeof(Datum) * n);
	foreach(lc, ids)
		idv[i++] = Int64GetDatum(strtoll(lfirst(lc), NULL, 10));
	values[0] = LlmMakeArray(idv, NULL, n, INT8OID);
	values[1] = Int64GetDatum(batch_id);
	if (RunSql("UPDATE llm.queue SET status = 'pending', batch_id = NULL, attempts = attempts - 1, "
			   "started_at = NULL WHERE id = ANY ($1) AND batch_id = $2 AND status = 'submitted'",
			   2, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update llm.queue");
}

/*
 * Build a batch's request from its items, a chunk at a time: each line
 * through the provider's batch line format.  An item that cannot be sent
 * (its options refused by the protocol, its role gone, its budget spent)
 * fails alone; the others go.  Items past the provider's size limit for
 * a batch go back to the queue for the next one.  Returns the number of
 * lines.
 */
static int
build_lines(BatchRow *b, StringInfo inline_body, FILE *out)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1];
	Portal		portal;
	int			nlines = 0;
	MemoryContext lists_ctx = CurrentMemoryContext;
	MemoryContext chunk_ctx = AllocSetContextCreate(CurrentMemoryContext, "pg_llm batch chunk",
													ALLOCSET_DEFAULT_SIZES);
	List	   *failed_ids = NIL;
	List	   *failed_errors = NIL;
	List	   *later_ids = NIL;
	size_t		bytes = 0;

	/*
	 * Two lifetimes: lists_ctx (the caller's) holds the ids that fail or go
	 * back, written after the last chunk; chunk_ctx holds one chunk's
	 * values and lines and is reset before the next.  bytes: the size of
	 * the requests so far, which the kind's max_bytes bounds.
	 */
	values[0] = Int64GetDatum(b->id);
	portal = SPI_cursor_open_with_args(NULL,
									   "SELECT id, prompt, system, options::text, enqueued_by, "
									   "target_table::pg_catalog.oid, target_column "
									   "FROM llm.queue WHERE batch_id = $1 AND status = 'submitted' ORDER BY id",
									   1, types, values, NULL, true, 0);
	if (out)
		fputs(b->kind->requests_head, out);
	else
		appendStringInfoString(inline_body, b->kind->requests_head);
	for (;;)
	{
		uint64		i;
		MemoryContext old;

		SPI_cursor_fetch(portal, true, BUILD_CHUNK);
		if (SPI_processed == 0)
			break;
		MemoryContextReset(chunk_ctx);
		old = MemoryContextSwitchTo(chunk_ctx);
		for (i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	td = SPI_tuptable->tupdesc;
			char	   *id = SPI_getvalue(tup, td, 1);
			char	   *prompt = SPI_getvalue(tup, td, 2);
			char	   *system = SPI_getvalue(tup, td, 3);
			char	   *options = SPI_getvalue(tup, td, 4);
			Oid			role = atooid(SPI_getvalue(tup, td, 5));
			char	   *target = SPI_getvalue(tup, td, 6);
			char	   *line = NULL;
			char	   *error = NULL;

			/* a reply with nowhere to go is not paid for (TargetGone) */
			if (target)
				error = TargetGone(atooid(target), SPI_getvalue(tup, td, 7));
			if (error == NULL)
				BatchBuildLine(b->kind, b->route, b->model, b->embed, id, prompt, system, options, role,
							   b->kind->max_bytes - bytes, &line, &error);
			if (error)
			{
				MemoryContextSwitchTo(lists_ctx);
				failed_ids = lappend(failed_ids, pstrdup(id));
				failed_errors = lappend(failed_errors, pstrdup(error));
				MemoryContextSwitchTo(chunk_ctx);
				continue;
			}
			/*
			 * No line: past the kind's limit on the size of the requests,
			 * the item waits for the next batch; a later, shorter line may
			 * still fit.  Each line counts one more byte for its separator.
			 */
			if (line == NULL)
			{
				MemoryContextSwitchTo(lists_ctx);
				later_ids = lappend(later_ids, pstrdup(id));
				MemoryContextSwitchTo(chunk_ctx);
				continue;
			}
			bytes += strlen(line) + 1;
			if (out)
			{
				if (nlines > 0)
					fputs(b->kind->requests_separator, out);
				fputs(line, out);
			}
			else
			{
				if (nlines > 0)
					appendStringInfoString(inline_body, b->kind->requests_separator);
				appendStringInfoString(inline_body, line);
			}
			nlines++;
		}
		MemoryContextSwitchTo(old);
	}
	if (out)
		fputs(b->kind->requests_tail, out);
	else
		appendStringInfoString(inline_body, b->kind->requests_tail);
	SPI_cursor_close(portal);
	MemoryContextDelete(chunk_ctx);

	/*
	 * In the transaction that records the number of lines (BatchStoreBuild):
	 * the items that fail or go back leave the batch before it is sent.
	 */
	BatchFailItems(b->id, failed_ids, failed_errors);
	BatchPutBack(b->id, later_ids);
	return nlines;
}

/*
 * Build a batch's requests from its items, in a transaction of its own:
 * into body (kept in the caller's memory, which outlives the transaction)
 * or into the file at path.  The batch row gets the number of requests.
 * Returns the number of lines; 0: nothing is left to send.
 */
int
BatchStoreBuild(BatchRow *row, StringInfo body, const char *path)
{
	MemoryContext caller = CurrentMemoryContext;
	FILE	   *out = NULL;
	int			nlines;
	Oid			types[2] = {INT8OID, INT4OID};
	Datum		values[2];

	ItemXactBegin("pg_llm: building a batch");
	MemoryContextSwitchTo(caller);
	/*
	 * AllocateFile, not fopen: an error while building closes the file with
	 * the transaction's abort.  path is a temporary file (batch.c), removed
	 * at the next server start if the worker dies first.
	 */
	if (path)
	{
		out = AllocateFile(path, PG_BINARY_W);
		if (out == NULL)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not create file \"%s\": %m", path)));
	}
	nlines = build_lines(row, body, out);
	/* the last lines reach the file only when it is closed: a write error */
	if (out && FreeFile(out) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\": %m", path)));
	values[0] = Int64GetDatum(row->id);
	values[1] = Int32GetDatum(nlines);
	/* what llm.batches shows: the items failed or put back are not counted */
	if (RunSql("UPDATE llm._batch SET requests = $2 WHERE id = $1", 2, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update llm._batch");
	ItemXactEnd();
	return nlines;
}

/*
 * The items of a batch still waiting for their result, in a transaction
 * of its own.  A poll of a running batch asks: 0 means every item was
 * removed (their job cancelled), and batch.c cancels the batch at the
 * provider.
 */
int64
BatchStoreItemsLeft(int64 batch_id)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(batch_id)};
	bool		isnull;
	int64		n;

	ItemXactBegin("pg_llm: looking at a batch");
	if (RunSql("SELECT pg_catalog.count(*) FROM llm.queue WHERE batch_id = $1 AND status = 'submitted'",
			   1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not count batch items");
	n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	ItemXactEnd();
	return n;
}

/*
 * Split a batch's items into two new batches, in a transaction of its own:
 * an inline batch that timed out or was refused as a whole, or any batch
 * the provider found too big (HTTP 413).  False when it holds a single
 * item (nothing to split).  halves[] gets the new batches' ids, tokens[]
 * their names (in TopMemoryContext: the caller frees them); the caller
 * finishes the batch itself as "split".
 */
bool
BatchStoreSplit(int64 batch_id, int64 *halves, char **tokens)
{
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		values[2];
	bool		isnull;
	int64		n;
	int			k;

	ItemXactBegin("pg_llm: splitting a batch");
	values[0] = Int64GetDatum(batch_id);
	if (RunSql("SELECT pg_catalog.count(*) FROM llm.queue WHERE batch_id = $1 AND status = 'submitted'",
			   1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not count batch items");
	n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (n <= 1)
	{
		ItemXactEnd();
		return false;
	}
	for (k = 0; k < 2; k++)
	{
		uint64		r;

		/* as BatchStoreForm's names; + k keeps the two halves' apart */
		if (!pg_strong_random(&r, sizeof(r)))
			r = (uint64) GetCurrentTimestamp() + k;
		tokens[k] = MemoryContextStrdup(TopMemoryContext,
										psprintf("pg_llm_%u_%016llx", MyDatabaseId, (unsigned long long) r));
		values[1] = CStringGetTextDatum(tokens[k]);
		/* the batch's provider, kind and model; its requests once moved */
		if (RunSql("INSERT INTO llm._batch (token, provider, kind, model, upstream_model, requests, task) "
				   "SELECT $2, provider, kind, model, upstream_model, 0, task FROM llm._batch WHERE id = $1 "
				   "RETURNING id", 2, types, values, NULL, false, 0) != SPI_OK_INSERT_RETURNING ||
			SPI_processed != 1)
			elog(ERROR, "could not split a batch");
		halves[k] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		{
			Oid			t2[3] = {INT8OID, INT8OID, INT8OID};
			Datum		v2[3] = {Int64GetDatum(batch_id), Int64GetDatum(halves[k]),
			Int64GetDatum(k == 0 ? n / 2 : n)};
			int64		moved;

			/* the first half of the items by id, then the rest */
			if (RunSql("WITH items AS (SELECT q.id FROM llm.queue q WHERE q.batch_id = $1 AND q.status = 'submitted' "
					   "               ORDER BY q.id LIMIT $3) "
					   "UPDATE llm.queue q SET batch_id = $2 FROM items WHERE q.id = items.id",
					   3, t2, v2, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not split a batch");
			moved = (int64) SPI_processed;
			v2[0] = Int64GetDatum(halves[k]);
			v2[1] = Int64GetDatum(moved);
			if (RunSql("UPDATE llm._batch SET requests = $2::int4 WHERE id = $1",
					   2, t2, v2, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not split a batch");
		}
		/*
		 * The second half's statements must see the first's moves: the
		 * items moved no longer point to the batch, and the LIMIT of n takes
		 * the rest.
		 */
		CommandCounterIncrement();
	}
	ItemXactEnd();
	return true;
}

/* ---- what the provider said, and the end of a batch ---- */

/*
 * Items of a batch that expired or were cancelled before they ran (ids;
 * NIL: every item still waiting in it): not the request's fault, as a 429
 * is not, so no attempt is used (the one their submission took is given
 * back).  Each such expiry is counted in the item's batch_expiries; the
 * llm.batch_max_expiries-th sends it realtime on its model's chain
 * instead of in a batch again, which its row says (via, error).  Returns
 * how many expired; *to_realtime, how many of them go realtime.
 */
static int
BatchExpireItems(int64 batch_id, List *ids, const char *reason, int *to_realtime)
{
	Oid			types[4] = {INT8OID, TEXTOID, INT4OID, INT8ARRAYOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	uint64		i;
	int			n;

	*to_realtime = 0;
	values[0] = Int64GetDatum(batch_id);
	values[1] = CStringGetTextDatum(reason ? reason : "its batch ended before it ran");
	values[2] = Int32GetDatum(llm_batch_max_expiries);
	/* ids: pointers to int64 ids (into ingest_flush's chunk); NIL: $4 NULL */
	if (ids == NIL)
		nulls[3] = 'n';
	else
	{
		Datum	   *idv = palloc(sizeof(Datum) * list_length(ids));
		ListCell   *lc;
		int			k = 0;

		foreach(lc, ids)
			idv[k++] = Int64GetDatum(*(int64 *) lfirst(lc));
		values[3] = LlmMakeArray(idv, NULL, k, INT8OID);
	}
	/*
	 * Ready at once, without a backoff: an expiry says nothing about the
	 * request or the provider's health.  RETURNING says which went realtime.
	 */
	if (RunSql("UPDATE llm.queue q SET status = 'pending', batch_id = NULL, started_at = NULL, "
			   "lease_until = NULL, leased_by = NULL, next_attempt_at = pg_catalog.now(), "
			   "attempts = GREATEST(q.attempts - 1, 0), "
			   "batch_expiries = q.batch_expiries + 1, "
			   "via = CASE WHEN q.batch_expiries + 1 >= $3 THEN 'realtime' ELSE q.via END, "
			   "error = $2 || CASE WHEN q.batch_expiries + 1 >= $3 "
			   "  THEN ' (expired in ' || (q.batch_expiries + 1)::text || ' batches: sent realtime)' "
			   "  ELSE ' (expiry ' || (q.batch_expiries + 1)::text || ' of ' || $3::text || '; sent again in a batch)' END "
			   "WHERE q.batch_id = $1 AND q.status = 'submitted' AND ($4 IS NULL OR q.id = ANY ($4)) "
			   "RETURNING q.via = 'realtime'",
			   4, types, values, nulls, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not update llm.queue");
	n = (int) SPI_processed;
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull)))
			(*to_realtime)++;
	}
	if (n > 0)
		elog(LOG, "pg_llm worker: %d items of batch " INT64_FORMAT " expired before they ran (%d of them sent realtime): %s",
			 n, batch_id, *to_realtime, reason ? reason : "not answered");
	return n;
}

/*
 * A batch is over: its items still waiting (never answered) go back to
 * the queue, to be sent again after a backoff, or fail when they are out
 * of attempts.  With fail_now (the provider refused the request for what
 * it is) they fail at once.  reason says why.  Returns how many.
 */
static int
BatchReleaseItems(int64 batch_id, const char *reason, bool fail_now)
{
	Oid			types[4] = {INT8OID, TEXTOID, INT4OID, BOOLOID};
	Datum		values[4];

	values[0] = Int64GetDatum(batch_id);
	values[1] = CStringGetTextDatum(reason ? reason : "its batch ended without an answer for it");
	values[2] = Int32GetDatum(llm_max_attempts);
	values[3] = BoolGetDatum(fail_now);

	/*
	 * attempts already counts this one (BatchStoreForm took it), so at
	 * llm.max_attempts the item fails.  The backoff is BatchBackoffMs's, in
	 * seconds: 2^attempts (the exponent from 1 to 10), at most 300.  With
	 * fail_now the reason is the provider's refusal, without an attempt
	 * count.
	 */
	if (RunSql("UPDATE llm.queue SET "
			   "status = CASE WHEN $4 OR attempts >= $3 THEN 'failed' ELSE 'pending' END, "
			   "error = CASE WHEN $4 THEN $2 ELSE $2 || ' (attempt ' || attempts::text || ' of ' || $3::text || ')' END, "
			   "finished_at = CASE WHEN $4 OR attempts >= $3 THEN pg_catalog.now() END, "
			   "next_attempt_at = pg_catalog.now() + pg_catalog.make_interval(secs => "
			   "  LEAST(pg_catalog.power(2, LEAST(GREATEST(attempts, 1), 10)), 300)) "
			   "WHERE batch_id = $1 AND status = 'submitted'",
			   4, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not release batch items");
	if (SPI_processed > 0)
		elog(LOG, "pg_llm worker: " UINT64_FORMAT " items of batch " INT64_FORMAT " %s: %s",
			 (uint64) SPI_processed, batch_id,
			 fail_now ? "failed" : "went back to the queue", reason ? reason : "not answered");
	return (int) SPI_processed;
}

/* Record what the provider said of a batch, in the caller's transaction. */
static void
record_in_xact(BatchRow *b, const char *status)
{
	Oid			types[8] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[8];
	char		nulls[8];
	const char *texts[8] = {status, b->provider_batch_id, b->input_file_id, b->output_file_id,
	b->error_file_id, b->results_url, b->failure, NULL};
	int			i;

	/*
	 * texts[] are $2..$8.  A NULL keeps what the row holds (COALESCE): each
	 * call records what it learned, and nothing is cleared.  submitted_at
	 * is when the provider's batch id was first recorded; finished_at is
	 * set by the statuses that end a batch.
	 */
	values[0] = Int64GetDatum(b->id);
	nulls[0] = ' ';
	for (i = 0; i < 7; i++)
	{
		values[i + 1] = texts[i] ? CStringGetTextDatum(texts[i]) : (Datum) 0;
		nulls[i + 1] = texts[i] ? ' ' : 'n';
	}
	if (RunSql("UPDATE llm._batch SET status = COALESCE($2, status), provider_batch_id = COALESCE($3, provider_batch_id), "
			   "input_file_id = COALESCE($4, input_file_id), output_file_id = COALESCE($5, output_file_id), "
			   "error_file_id = COALESCE($6, error_file_id), results_url = COALESCE($7, results_url), "
			   "error = COALESCE($8, error), "
			   "submitted_at = CASE WHEN $3 IS NOT NULL THEN COALESCE(submitted_at, pg_catalog.now()) ELSE submitted_at END, "
			   "finished_at = CASE WHEN $2 IN ('ended', 'failed', 'cancelled', 'split') THEN pg_catalog.now() ELSE finished_at END "
			   "WHERE id = $1",
			   8, types, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update llm._batch");
}

/* The same, in a transaction of its own. */
void
BatchStoreRecord(BatchRow *b, const char *status)
{
	ItemXactBegin("pg_llm: recording a batch");
	record_in_xact(b, status);
	ItemXactEnd();
}

/*
 * Record the provider's status and counts of a polled batch, in a
 * transaction of its own.  The status is the provider's own word (OpenAI's
 * status, Message Batches' processing_status), redacted as any text from
 * a provider is.  The counts are the provider's (Message Batches keeps
 * them at 0 until the batch ends: PROTOCOLS.md 3.7); BatchStoreFinish
 * replaces them with pg_llm's own.
 */
void
BatchStoreRecordPoll(BatchRow *b, const LlmBatchEvent *a)
{
	Oid			types[5] = {INT8OID, TEXTOID, INT4OID, INT4OID, INT4OID};
	Datum		values[5];

	ItemXactBegin("pg_llm: recording a batch");
	values[0] = Int64GetDatum(b->id);
	values[1] = CStringGetTextDatum(a->status ? RedactProviderCString(a->status, b->route->provider) : "");
	values[2] = Int32GetDatum(a->succeeded);
	values[3] = Int32GetDatum(a->errored);
	values[4] = Int32GetDatum(a->expired);
	if (RunSql("UPDATE llm._batch SET provider_status = $2, succeeded = $3, errored = $4, expired = $5, "
			   "polled_at = pg_catalog.now() WHERE id = $1",
			   5, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update llm._batch");
	ItemXactEnd();
}

/*
 * A batch is over: its items still waiting (not in the results) expired
 * when it ended or was cancelled without failing (they are sent again), or
 * go back to the queue (or fail, with fail_items); the counts of what
 * happened to its requests and its final status are recorded; all in one
 * transaction.  b->failure says why it ended early, if it did.
 */
void
BatchStoreFinish(BatchRow *b, const char *status, bool fail_items)
{
	int			released;
	int			expired = 0;
	int			realtime = 0;

	ItemXactBegin("pg_llm: finishing a batch");
	if (b->failure == NULL && !fail_items &&
		(strcmp(status, "ended") == 0 || strcmp(status, "cancelled") == 0))
	{
		/* ended without an answer for them: expired (or cancelled) */
		expired = BatchExpireItems(b->id, NIL, psprintf("batch " INT64_FORMAT " ended before the request ran", b->id),
								   &realtime);
		released = 0;
	}
	else
		released = BatchReleaseItems(b->id, b->failure, fail_items);
	/* nothing counted (no result, no item left): the provider's counts stay */
	if (b->answered[0] + b->answered[1] + b->answered[2] + b->answered[3] + released + expired > 0)
	{
		/*
		 * What happened to its requests, which the provider's counts do
		 * not say: answered; errored (failed, sent again after an error,
		 * or with the batch the provider refused); expired or cancelled
		 * before they ran, and of those the ones sent realtime.
		 */
		Oid			types[5] = {INT8OID, INT4OID, INT4OID, INT4OID, INT4OID};
		Datum		values[5] = {Int64GetDatum(b->id), Int32GetDatum(b->answered[0]),
			Int32GetDatum(b->answered[1] + b->answered[2] + released),
			Int32GetDatum(b->answered[3] + expired),
		Int32GetDatum(b->to_realtime + realtime)};

		if (RunSql("UPDATE llm._batch SET succeeded = $2, errored = $3, expired = $4, to_realtime = $5 "
				   "WHERE id = $1", 5, types, values, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not update llm._batch");
	}
	/*
	 * The status that ends the batch (and takes it out of
	 * BatchStoreUnfinished) commits with what became of its items: a crash
	 * before this commit resumes the batch with its items still in it.
	 */
	record_in_xact(b, status);
	ItemXactEnd();
}

/* ---- results ---- */

/*
 * A count among an item's options (max_tokens, n) as SQL, whatever the
 * JSON holds there: NULL when it is not a number, else held to 0 .. 2^31-1
 * (a cast that fails here would fail the whole chunk's results).
 */
#define COUNT_OF(j) \
	"CASE WHEN pg_catalog.jsonb_typeof(" j ") = 'number' THEN " \
	"LEAST(GREATEST((" j ")::text::pg_catalog.numeric, 0), 2147483647)" \
	"::pg_catalog.int8 END"

/* One result, read, waiting to be written. */
typedef struct BatchResult
{
	int64		item_id;		/* from its custom_id, "q" and the id */
	ItemState	state;			/* DONE, FAILED or RETRY_LATER */
	char	   *content;		/* UTF-8; an embedding's: its vector as text */
	int			dim;			/* an embedding's vector's dimensions */
	char	   *tool_name;		/* the answer of a forced tool (json_schema) */
	char	   *tool_input;		/* its arguments, JSON text */
	char	   *finish_reason;
	char	   *error;			/* why it failed or is sent again, redacted */
	long		status;			/* its request's HTTP status; 0: none */
	bool		expired;		/* expired or cancelled before it ran */
	LlmReply	reply;			/* its usage, how it ended */
} BatchResult;

/*
 * The results of one batch being read and written back, a chunk at a
 * time: lines are read into results[] until it holds cap of them, then
 * ingest_flush writes them in one transaction and the chunk's memory is
 * reset, so a results file of any size is read in bounded memory.
 */
typedef struct BatchIngest
{
	int		   *answered;		/* the batch's counts of results read */
	int		   *to_realtime;	/* and of its items sent realtime */
	int64		batch_id;
	const LlmBatchOps *kind;
	const LlmRoute *route;
	const char *model;
	bool		embed;			/* a batch of embeddings */
	MemoryContext ctx;			/* reset after each chunk */
	BatchResult *results;		/* the chunk, in ctx */
	int			n;				/* results in it */
	int			cap;			/* its size: written when full */
	int64		total;			/* results written, over the chunks */
} BatchIngest;

/* Start reading a batch's results, chunk results written at a time. */
static BatchIngest *
BatchIngestStart(BatchRow *b, int chunk)
{
	BatchIngest *ing = palloc0(sizeof(BatchIngest));

	ing->answered = b->answered;
	ing->to_realtime = &b->to_realtime;
	ing->batch_id = b->id;
	ing->kind = b->kind;
	ing->route = b->route;
	ing->model = b->model;
	ing->embed = b->embed;
	ing->cap = chunk;
	ing->ctx = AllocSetContextCreate(CurrentMemoryContext, "pg_llm batch results", ALLOCSET_DEFAULT_SIZES);
	ing->results = MemoryContextAlloc(ing->ctx, sizeof(BatchResult) * chunk);
	return ing;
}

/*
 * Write a chunk of results: the items still waiting in this batch (an item
 * answered twice, or already written after a crash, is skipped), each
 * with its usage record, through the worker's write-back.
 */
static void
ingest_flush(BatchIngest *ing)
{
	Datum	   *ids;
	int			i;
	uint64		r;
	Oid			types[2] = {INT8ARRAYOID, INT8OID};
	Datum		values[2];
	HTAB	   *byid;
	HASHCTL		ctl;
	SPITupleTable *tt;
	uint64		nrows;
	ItemSet		set;
	ItemColumns cols;
	int			waiting_col = 0,
				bytes_col = 0,
				max_tokens_col = 0,
				choices_col = 0;
	List	   *expired = NIL;

	if (ing->n == 0)
		return;
	ItemSetInit(&set);
	ids = palloc(sizeof(Datum) * ing->n);

	/*
	 * An item's id to its result's index in the chunk, an int stored after
	 * the int64 key in the same entry.  An id twice in a chunk keeps the
	 * later result.
	 */
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(int64) + sizeof(int);
	ctl.hcxt = CurrentMemoryContext;
	byid = hash_create("pg_llm batch results", ing->n, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	for (i = 0; i < ing->n; i++)
	{
		int64	   *e = hash_search(byid, &ing->results[i].item_id, HASH_ENTER, NULL);

		*(int *) (e + 1) = i;
		ids[i] = Int64GetDatum(ing->results[i].item_id);
	}

	ItemXactBegin("pg_llm: reading batch results");
	values[0] = LlmMakeArray(ids, NULL, ing->n, INT8OID);
	values[1] = Int64GetDatum(ing->batch_id);

	/*
	 * The items' rows as ItemFromRow reads them, and what their usage
	 * records need: request_bytes is the sum BatchBuildLine reserved the
	 * budget with (prompt, system and options::text, in bytes), so that
	 * UsageResume estimates the same cost.
	 */
	if (RunSql("SELECT id, attempts, enqueued_by, target_table::pg_catalog.oid, target_column, target_key::text, "
			   "pg_catalog.octet_length(prompt) + COALESCE(pg_catalog.octet_length(system), 0) "
			   "  + COALESCE(pg_catalog.octet_length(options::text), 0) AS request_bytes, "
			   COUNT_OF("COALESCE(options->'max_tokens', options->'max_completion_tokens')") " AS max_tokens, "
			   "(batch_id = $2 AND status = 'submitted') AS waiting, "
			   COUNT_OF("options->'n'") " AS choices, "
			   "prompt, system, options::text AS options, invalid_answers, spread, job_id, "
			   "options->>'tag' AS tag, task "
			   "FROM llm.queue WHERE id = ANY ($1)",
			   2, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read batch items");
	tt = SPI_tuptable;
	nrows = SPI_processed;
	if (nrows > 0)
	{
		/* the columns are found once, not for each row */
		ItemColumnsFind(tt->tupdesc, &cols);
		waiting_col = SPI_fnumber(tt->tupdesc, "waiting");
		bytes_col = SPI_fnumber(tt->tupdesc, "request_bytes");
		max_tokens_col = SPI_fnumber(tt->tupdesc, "max_tokens");
		choices_col = SPI_fnumber(tt->tupdesc, "choices");
	}
	for (r = 0; r < nrows; r++)
	{
		HeapTuple	tup = tt->vals[r];
		TupleDesc	td = tt->tupdesc;
		int64		id = strtoll(SPI_getvalue(tup, td, cols.id), NULL, 10);
		int64	   *e = hash_search(byid, &id, HASH_FIND, NULL);
		BatchResult *res;
		WorkItem   *it;
		MemoryContext old;
		char	   *max_tokens;
		char	   *choices;
		LlmCall    *call;
		LlmFailure	f;
		LlmOutcome	outcome = LLM_OUTCOME_OK;

		/* an item answered twice, or no longer waiting in this batch */
		if (e == NULL || strcmp(SPI_getvalue(tup, td, waiting_col), "t") != 0)
			continue;
		res = &ing->results[*(int *) (e + 1)];
		it = ItemFromRow(&set, tup, td, &cols);
		old = MemoryContextSwitchTo(it->ctx);

		/* its usage, at the batch price, settling its budget reservation */
		call = palloc0(sizeof(LlmCall));
		call->mode = LLM_MODE_BATCH_API;
		call->model = pstrdup(ing->model);
		call->route = ing->route;
		call->routes = list_make1((void *) ing->route);
		call->attempts = 1;
		call->started = GetCurrentTimestamp();
		call->http_status = res->status;
		call->reply = res->reply;
		call->job_id = it->job_id;
		call->tag = it->tag ? LlmToUtf8(it->tag) : NULL;
		if (it->embed)
		{
			call->task = LLM_TASK_EMBED;
			call->ninputs = 1;
		}
		max_tokens = SPI_getvalue(tup, td, max_tokens_col);
		choices = SPI_getvalue(tup, td, choices_col);
		/*
		 * The request as its line was built: its input estimated as it was
		 * when the budget was reserved (tokens.c), so the reservation is
		 * given back whole and a result without usage is booked at it.
		 */
		call->req = RequestFromPrompt(LlmToUtf8(it->prompt), it->system ? LlmToUtf8(it->system) : NULL,
									  it->options ? LlmToUtf8(it->options) : NULL);
		UsageResume(call, it->role,
					(size_t) strtoll(SPI_getvalue(tup, td, bytes_col), NULL, 10),
					(max_tokens && !it->embed) ? strtoll(max_tokens, NULL, 10) : 0,
					(choices && !it->embed) ? strtoll(choices, NULL, 10) : 1);

		if (res->expired)
		{
			/* not sent back through the set: BatchExpireItems below */
			UsageRecord(call, LLM_OUTCOME_RETRY);
			MemoryContextSwitchTo(old);
			/* a pointer into the chunk: used before its memory is reset */
			expired = lappend(expired, &res->item_id);
			continue;
		}
		if (res->state == ITEM_DONE && it->embed && it->options && strstr(it->options, "dimensions"))
		{
			/* a vector of other dimensions than asked for is not written */
			int			want = RequestDimensions(RequestForEmbedding(NULL, 0, LlmToUtf8(it->options)));

			if (want > 0 && res->dim != want)
			{
				res->state = ITEM_FAILED;
				outcome = LLM_OUTCOME_ERROR;
				res->error = psprintf("provider \"%s\" returned no usable vector for this input: "
									  "The reply's vector has %d dimensions; %d were asked for.",
									  ing->route->provider->name, res->dim, want);
			}
		}
		if (res->state == ITEM_DONE && it->shaped && LlmReplyRefused(call, &f))
		{
			/* a refusal is no answer, and asking again gets the same */
			ItemFail(&set, it, LlmFailureText(&f));
			UsageRecord(call, LLM_OUTCOME_REFUSED);
			MemoryContextSwitchTo(old);
			continue;
		}
		if (res->state == ITEM_DONE && it->shaped)
		{
			/*
			 * An answer with a json_schema: validated; an invalid one goes
			 * back to the queue as a realtime item with the validation
			 * error (one of its retries), its usage "invalid".
			 */
			LlmReply	reply;

			memset(&reply, 0, sizeof(reply));
			reply.content = res->content;
			reply.tool_name = res->tool_name;
			reply.tool_input = res->tool_input;
			reply.finish_reason = res->finish_reason;
			call->req = RequestFromPrompt(LlmToUtf8(it->prompt),
										  it->system ? LlmToUtf8(it->system) : NULL,
										  LlmToUtf8(it->options));
			ItemJudgeAnswer(&set, it, call, &reply);
			MemoryContextSwitchTo(old);
			continue;
		}
		if (res->state == ITEM_DONE && !it->embed)
		{
			/* a refusal, a tool call, a paused turn, no text: failed */
			outcome = LlmJudgeText(call, res->content && res->content[0] != '\0', &f);
			if (outcome != LLM_OUTCOME_OK)
			{
				res->state = ITEM_FAILED;
				res->error = LlmFailureText(&f);
			}
		}
		if (res->state == ITEM_DONE)
			ItemDone(&set, it, pstrdup(res->content));
		else if (res->state == ITEM_FAILED ||
				 (res->state == ITEM_RETRY_LATER && it->attempts >= llm_max_attempts))
			ItemFail(&set, it, pstrdup(res->error));
		else
			ItemRetryLater(&set, it, pstrdup(res->error),
						   TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   BatchBackoffMs(it->attempts)));
		UsageRecord(call, res->state == ITEM_DONE ? LLM_OUTCOME_OK :
					res->state == ITEM_FAILED ? (outcome != LLM_OUTCOME_OK ? outcome : LLM_OUTCOME_ERROR) :
					LLM_OUTCOME_RETRY);
		MemoryContextSwitchTo(old);
	}
	hash_destroy(byid);
	/*
	 * Written back, their usage with them, in the same transaction: a crash
	 * keeps both or neither, and a result read again after it finds its
	 * item no longer waiting.
	 */
	WritebackSetInXact(&set);
	if (expired != NIL)
	{
		dlist_mutable_iter iter;
		int			realtime;

		(void) BatchExpireItems(ing->batch_id, expired,
								psprintf("in batch " INT64_FORMAT ": the provider's batch expired before the request ran",
										 ing->batch_id), &realtime);
		*ing->to_realtime += realtime;
		/* the expired items were not finished through the set */
		dlist_foreach_modify(iter, &set.items)
			ItemFree(&set, dlist_container(WorkItem, node, iter.cur));
	}
	ItemXactEnd();
	ing->total += ing->n;
	ing->n = 0;
	MemoryContextReset(ing->ctx);
	ing->results = MemoryContextAlloc(ing->ctx, sizeof(BatchResult) * ing->cap);
}

/* One line of results: read it into the chunk, writing the chunk when full. */
static void
BatchIngestLine(BatchIngest *ing, const char *line, size_t len)
{
	MemoryContext old = MemoryContextSwitchTo(ing->ctx);
	char	   *custom_id;
	long		status;
	bool		expired;
	LlmReply	reply;
	char	   *problem = NULL;
	char	   *embed_problem = NULL;
	int			dim = 0;
	bool		ok;
	BatchResult *res;

	if (ing->embed)
	{
		/* an embedding: its one vector, as text, or why it has none */
		LlmEmbedReply er;

		ok = ProviderBatchEmbedResult(ing->kind, ing->route, line, len, &custom_id, &status, &expired,
									  &er, &problem);
		memset(&reply, 0, sizeof(reply));
		reply.has_usage = er.has_usage;
		reply.usage_invalid = er.usage_invalid;
		reply.input_tokens = er.input_tokens;
		if (ok && er.vectors[0].error)
		{
			/* answered (and paid), but with nothing to write */
			ok = false;
			embed_problem = er.vectors[0].error;
		}
		else if (ok)
		{
			reply.content = EmbedVectorText(er.vectors[0].values, er.vectors[0].dim);
			dim = er.vectors[0].dim;
		}
	}
	else
		ok = ProviderBatchResult(ing->kind, ing->route, line, len, &custom_id, &status, &expired, &reply, &problem);
	/* a request's error is the provider's text: shown only redacted */
	if (problem)
		problem = RedactProviderCString(problem, ing->route->provider);
	/* not one of ours (pg_llm sends "q" and an item's id): nothing to write */
	if (custom_id == NULL || custom_id[0] != 'q')
	{
		MemoryContextSwitchTo(old);
		elog(LOG, "pg_llm worker: a result of batch " INT64_FORMAT " cannot be matched: %s",
			 ing->batch_id, problem ? problem : "no custom_id");
		return;
	}
	res = &ing->results[ing->n++];
	memset(res, 0, sizeof(BatchResult));
	res->item_id = strtoll(custom_id + 1, NULL, 10);
	res->status = status;
	res->reply = reply;
	res->dim = dim;
	if (embed_problem)
	{
		/* the provider's text: shown redacted, as a request's error is */
		res->state = ITEM_FAILED;
		res->error = psprintf("provider \"%s\" returned no usable vector for this input: %s",
							  ing->route->provider->name,
							  RedactProviderCString(embed_problem, ing->route->provider));
	}
	else if (ok)
	{
		/*
		 * An answer, judged when it is written (the item says whether it
		 * wants text or a shape): a refusal, a tool call on a text item,
		 * a paused turn or no text at all fails it then.
		 */
		res->state = ITEM_DONE;
		res->content = reply.content;
		res->tool_name = reply.tool_name;
		res->tool_input = reply.tool_input;
		res->finish_reason = reply.finish_reason;
	}
	else if (expired)
	{
		/* expired or cancelled before it ran: BatchExpireItems */
		res->state = ITEM_RETRY_LATER;
		res->expired = true;
	}
	else if (status == 0 || LlmRetryableStatus(status))
	{
		/* not the request's fault (never run, or no HTTP answer): sent again */
		res->state = ITEM_RETRY_LATER;
		res->error = psprintf("in batch " INT64_FORMAT ": %s", ing->batch_id, problem);
	}
	else
	{
		res->state = ITEM_FAILED;
		res->error = psprintf("provider \"%s\" answered the batch request with an error: %s",
							  ing->route->provider->name, problem);
	}
	/* answered, failed, sent again, expired (BatchRow.answered) */
	ing->answered[res->state == ITEM_DONE ? 0 : res->state == ITEM_FAILED ? 1 :
				  res->expired ? 3 : 2]++;
	MemoryContextSwitchTo(old);
	if (ing->n >= ing->cap)
		ingest_flush(ing);
}

/* BatchIngestLine for each result of an inline answer (ProviderBatchEachResult). */
static void
ingest_array_line(void *arg, const char *line, size_t len)
{
	BatchIngestLine((BatchIngest *) arg, line, len);
}

/* Write the last, partial chunk and free what the reading held. */
static void
BatchIngestEnd(BatchIngest *ing)
{
	ingest_flush(ing);
	MemoryContextDelete(ing->ctx);
}

/*
 * Read a results file a line at a time and write the results back.  The
 * file is read across the transactions that write the results, so it is
 * opened outside the transaction machinery (which would close it at the
 * first commit), and closed here on every path.
 */
void
BatchStoreIngestFile(BatchRow *b, const char *path)
{
	FILE	   *in = fopen(path, PG_BINARY_R);
	StringInfoData line;

	if (in == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\": %m", path)));
	initStringInfo(&line);
	PG_TRY();
	{
		BatchIngest *ing = BatchIngestStart(b, INGEST_CHUNK);

		while (pg_get_line_buf(in, &line))
		{
			pg_strip_crlf(line.data);
			if (line.data[0] == '\0')
				continue;
			BatchIngestLine(ing, line.data, strlen(line.data));
		}
		if (ferror(in))
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not read file \"%s\": %m", path)));
		BatchIngestEnd(ing);
	}
	PG_CATCH();
	{
		fclose(in);
		PG_RE_THROW();
	}
	PG_END_TRY();
	fclose(in);
	pfree(line.data);
}

/*
 * The results of an inline answer, written back.  body is the transfer's
 * answer, which batch.c releases only after this returns.
 */
void
BatchStoreIngestAnswer(BatchRow *b, const char *body, size_t len)
{
	BatchIngest *ing = BatchIngestStart(b, INGEST_CHUNK);

	ProviderBatchEachResult(b->kind, body, len, ingest_array_line, ing);
	BatchIngestEnd(ing);
}
