/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  The queue worker's batch mode: items enqueued with via => 'batch_api'
 *	  go through their provider's batch API instead of one call each.
 *
 *	  Three kinds, by the provider option batch_api:
 *	  - inline: an OpenAI-compatible relay's synchronous POST /batches
 *		{"input_file_content": [...]}, up to llm.batch_size requests, the
 *		results in the answer.  A batch that times out (or gets 408, 413
 *		or 504) is split in half and each half sent again, down to single
 *		requests.
 *	  - openai: the JSONL file uploaded (POST /files), the batch created
 *		(POST /batches, with our token in its metadata), polled every
 *		llm.batch_poll_interval, its output and error files downloaded.
 *	  - anthropic: POST /messages/batches, polled, results_url downloaded.
 *
 *	  A batch is a row of llm._batch, and its items point to it, committed
 *	  before anything is sent; the provider's ids are recorded as soon as
 *	  it answers.  After a crash the worker resumes every batch that is not
 *	  finished: it polls those the provider has; an OpenAI batch whose
 *	  creation was not recorded is looked up by its token before it is
 *	  sent again.  Requests files are built and results read a line at a
 *	  time, through temporary files, so a batch of 100,000 requests holds
 *	  little memory.  Results are matched by custom_id ("q" and the item's
 *	  id), never by position, and written back exactly as realtime replies
 *	  are (writeback.c): the same rights, the same exactly-once guard.
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
#include "lib/ilist.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "port/pg_bswap.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "call.h"
#include "schema.h"
#include "config.h"
#include "http.h"
#include "pg_llm.h"
#include "provider.h"
#include "queue.h"
#include "ratelimit.h"
#include "redact.h"
#include "request.h"
#include "runas.h"
#include "slots.h"
#include "target.h"
#include "usage.h"
#include "worker/batch.h"
#include "worker/item.h"
#include "worker/transport.h"

int			llm_batch_poll_interval = 60;

#define OPENAI_BATCH_MAX 50000
#define OPENAI_BATCH_BYTES ((size_t) 200 * 1024 * 1024)
#define ANTHROPIC_BATCH_MAX 100000
#define ANTHROPIC_BATCH_BYTES ((size_t) 256 * 1024 * 1024)
#define BUILD_CHUNK 1000		/* items read and lines built at a time */
#define INGEST_CHUNK 1000		/* results written back at a time */
#define BATCH_TIMEOUT_DEFAULT_MS 300000
#define LOOKUP_PAGES 10			/* pages of GET /batches searched for a token */

typedef enum BatchPhase
{
	BP_SEND,					/* build the request and send it */
	BP_LOOKUP,					/* after a crash: does the provider have it? */
	BP_UPLOAD,					/* openai: the JSONL file on its way */
	BP_CREATE,					/* the batch being created */
	BP_WAIT,					/* submitted: the next poll is due later */
	BP_POLL,
	BP_DOWNLOAD,				/* results on their way to a file */
	BP_CANCEL,
	BP_DONE
} BatchPhase;

typedef struct BatchRun
{
	dlist_node	node;
	MemoryContext ctx;
	int64		id;
	char	   *token;
	char	   *kind;			/* inline, openai, anthropic */
	char	   *model;
	LlmRoute   *route;			/* the batch's provider and upstream model */
	BatchPhase	phase;
	HttpTransfer *xfer;
	TimestampTz next_poll;		/* nothing is sent before it */
	char	   *provider_batch_id;
	char	   *input_file_id;
	char	   *output_file_id;
	char	   *error_file_id;
	char	   *results_url;
	char	   *request_path;	/* temporary file of the request */
	char	   *download_path;	/* temporary file of results */
	int			download_step;	/* openai: 0 the output file, 1 the error file */
	int			lookup_page;
	char	   *lookup_after;
	char	   *failure;		/* the provider's reason it ended early */
	int			tries;			/* lookups that failed in a row */
	/* what happened to its requests: answered, failed, sent again, expired */
	int			answered[4];
	int			to_realtime;	/* of the expired, sent realtime (their last expiry) */
} BatchRun;

static dlist_head batches = DLIST_STATIC_INIT(batches);
static TimestampTz next_form = 0;
static TimestampTz last_form = 0;
static bool resumed = false;

/* batches are formed again at most this often when an enqueue wakes the worker */
#define FORM_WAKE_MS 1000

static void batch_send(BatchRun *b);
static void batch_finish(BatchRun *b, const char *status, const char *error, bool fail_items);
static void BatchStartCancel(BatchRun *b);

/* ---- helpers ---- */

/* A temporary file name for a batch, removed at the next server start. */
static char *
temp_path(BatchRun *b, const char *what)
{
	char		dir[MAXPGPATH];

	snprintf(dir, sizeof(dir), "base/%s", PG_TEMP_FILES_DIR);
	(void) MakePGDirectory(dir);
	return MemoryContextStrdup(b->ctx, psprintf("%s/%s_llm_batch_%lld_%s_%d", dir,
												PG_TEMP_FILE_PREFIX, (long long) b->id,
												what, MyProcPid));
}

/* The provider's URL for a path under its base_url. */
static char *
provider_url(const LlmProvider *p, const char *path)
{
	size_t		blen = strlen(p->base_url);

	while (blen > 0 && p->base_url[blen - 1] == '/')
		blen--;
	return psprintf("%.*s%s", (int) blen, p->base_url, path);
}

/* Key and protocol headers of a provider, and the content type. */
static List *
provider_headers(const LlmProvider *p, bool json)
{
	List	   *headers = NIL;
	ListCell   *lc;

	if (json)
		headers = lappend(headers, "Content-Type: application/json");
	p->ops->add_headers(p, ConfigProviderKey(p), &headers);
	foreach(lc, p->headers)
		headers = lappend(headers, lfirst(lc));
	return headers;
}

/* Start a request of a batch; its transfer carries the batch. */
static void
start_request(BatchRun *b, HttpRequestSpec *spec, long timeout_ms)
{
	const LlmProvider *p = b->route->provider;

	spec->connect_timeout_ms = p->connect_timeout_ms >= 0 ? p->connect_timeout_ms : llm_connect_timeout_ms;
	spec->timeout_ms = timeout_ms;
	spec->max_response = (size_t) llm_max_response_size_kb * 1024;
	spec->xact_bound = false;
	spec->transport = &p->transport;
	b->xfer = HttpStart(spec);
	b->xfer->user = b;
	b->xfer->user_kind = TRANSPORT_BATCH;
}

/* The timeout of a provider's non-batch requests (uploads, polls). */
static long
call_timeout(const LlmProvider *p)
{
	return p->timeout_ms >= 0 ? p->timeout_ms : llm_timeout_ms;
}

/* A JSON answer of a finished transfer, NULL when it is not one. */
static LlmBatchAnswer *
answer_of(BatchRun *b)
{
	HttpTransfer *t = b->xfer;

	if (t->outcome != HTTP_COMPLETE || t->status < 200 || t->status >= 300)
		return NULL;
	return BatchReadAnswer(t->data ? t->data : "", t->len);
}

/* What went wrong with a finished transfer, in one line. */
static char *
transfer_problem(BatchRun *b)
{
	HttpTransfer *t = b->xfer;
	LlmErrorBody eb;

	if (t->outcome == HTTP_TRANSPORT_ERROR)
	{
		const char *cause = HttpCauseText(t);

		return psprintf("%s%s%s", cause ? cause : "", cause ? ": " : "",
						RedactProviderCString(t->errbuf, b->route->provider));
	}
	if (t->outcome == HTTP_TOO_BIG)
		return pstrdup("the answer exceeds llm.max_response_size");
	ProviderParseError(t->data, t->len, &eb);
	return psprintf("HTTP %ld%s%s%s%s%s", t->status, eb.message ? ": " : "",
					eb.message ? RedactProviderCString(eb.message, b->route->provider) : "",
					eb.code || eb.type ? " (" : "",
					eb.code || eb.type ? RedactProviderCString(eb.code ? eb.code : eb.type, b->route->provider) : "",
					eb.code || eb.type ? ")" : "");
}

/* Is a failed transfer worth trying again later (not the request's fault)? */
static bool
transfer_retryable(HttpTransfer *t)
{
	return t->outcome == HTTP_TRANSPORT_ERROR || t->status == 408 || t->status == 409 ||
		t->status == 429 || (t->status >= 500 && t->status <= 599);
}

/* ---- the batch row ---- */

/* Record what the provider said of a batch, in the caller's transaction. */
static void
record_in_xact(BatchRun *b, const char *status)
{
	Oid			types[9] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[9];
	char		nulls[9];
	const char *texts[8] = {status, b->provider_batch_id, b->input_file_id, b->output_file_id,
	b->error_file_id, b->results_url, b->failure, NULL};
	int			i;

	values[0] = Int64GetDatum(b->id);
	nulls[0] = ' ';
	for (i = 0; i < 7; i++)
	{
		values[i + 1] = texts[i] ? CStringGetTextDatum(texts[i]) : (Datum) 0;
		nulls[i + 1] = texts[i] ? ' ' : 'n';
	}
	values[8] = CStringGetTextDatum(b->xfer && b->xfer->outcome == HTTP_COMPLETE ? "polled" : "");
	nulls[8] = ' ';
	if (RunSql("UPDATE llm._batch SET status = COALESCE($2, status), provider_batch_id = COALESCE($3, provider_batch_id), "
			   "input_file_id = COALESCE($4, input_file_id), output_file_id = COALESCE($5, output_file_id), "
			   "error_file_id = COALESCE($6, error_file_id), results_url = COALESCE($7, results_url), "
			   "error = COALESCE($8, error), "
			   "submitted_at = CASE WHEN $3 IS NOT NULL THEN COALESCE(submitted_at, pg_catalog.now()) ELSE submitted_at END, "
			   "polled_at = CASE WHEN $9 = 'polled' THEN pg_catalog.now() ELSE polled_at END, "
			   "finished_at = CASE WHEN $2 IN ('ended', 'failed', 'cancelled', 'split') THEN pg_catalog.now() ELSE finished_at END "
			   "WHERE id = $1",
			   9, types, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update llm._batch");
}

/* The same, in a transaction of its own. */
static void
record(BatchRun *b, const char *status)
{
	ItemXactBegin("pg_llm: recording a batch");
	record_in_xact(b, status);
	ItemXactEnd();
}

/* Record the provider's status and counts of a polled batch. */
static void
record_poll(BatchRun *b, const LlmBatchAnswer *a)
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

/* A new batch in memory for a row of llm._batch. */
static BatchRun *
batch_new(int64 id, const char *token, const char *kind, const char *model,
		  const char *provider, const char *upstream)
{
	MemoryContext ctx = AllocSetContextCreate(TopMemoryContext, "pg_llm batch", ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(ctx);
	BatchRun   *b = palloc0(sizeof(BatchRun));
	List	   *routes;
	ListCell   *lc;

	b->ctx = ctx;
	b->id = id;
	b->token = pstrdup(token);
	b->kind = pstrdup(kind);
	b->model = pstrdup(model);
	routes = ConfigRoutes(model);
	foreach(lc, routes)
	{
		LlmRoute   *r = lfirst(lc);

		if (strcmp(r->provider->name, provider) == 0 && strcmp(r->upstream_model, upstream) == 0)
			b->route = r;
	}
	if (b->route == NULL)
		b->route = linitial(routes);
	MemoryContextSwitchTo(old);
	dlist_push_tail(&batches, &b->node);
	return b;
}

static void
batch_free(BatchRun *b)
{
	if (b->xfer)
		HttpRelease(b->xfer);
	if (b->request_path)
		unlink(b->request_path);
	if (b->download_path)
		unlink(b->download_path);
	/* a batch is done: more may be formed at once */
	next_form = 0;
	dlist_delete(&b->node);
	if (CurrentMemoryContext == b->ctx)
		MemoryContextSwitchTo(TopMemoryContext);
	MemoryContextDelete(b->ctx);
}

/* ---- forming batches ---- */

/* Inline batches in memory: each holds one of llm.worker_concurrency's slots. */
static int
inline_batches(void)
{
	dlist_iter	iter;
	int			n = 0;

	dlist_foreach(iter, &batches)
	{
		if (strcmp(dlist_container(BatchRun, node, iter.cur)->kind, "inline") == 0)
			n++;
	}
	return n;
}

/* When a batch's items go back to the queue for the n-th time. */
static int64
backoff_ms(int n)
{
	return Min(1000L << Min(Max(n, 1), 10), 300000L);
}

/*
 * Attach up to n ready batch items of a model to a new batch row, in the
 * caller's transaction; returns the batch's id (0: no item was ready, or
 * with full_only fewer than n).
 */
static int64
attach_items(const char *model, const LlmRoute *route, const char *kind, int n, bool full_only,
			 char **token)
{
	Oid			types[6] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT4OID};
	Datum		values[6];
	uint64		r;
	int64		id;
	int64		attached;
	bool		isnull;
	Datum		ids;

	if (!pg_strong_random(&r, sizeof(r)))
		r = (uint64) GetCurrentTimestamp() ^ (uint64) MyProcPid;
	*token = psprintf("pg_llm_%u_%016llx", MyDatabaseId, (unsigned long long) r);
	/*
	 * The items first (their ids, locked), then the batch row, then the
	 * items by id: each statement's plan holds whatever the queue's size.
	 */
	values[0] = CStringGetTextDatum(model);
	values[1] = Int32GetDatum(n);
	{
		Oid			t[2] = {TEXTOID, INT4OID};

		if (RunSql("SELECT pg_catalog.array_agg(s.id), pg_catalog.count(*) FROM ("
				   "  SELECT q.id FROM llm.queue q "
				   "  WHERE q.status = 'pending' AND q.via = 'batch_api' AND q.model = $1 "
				   "    AND q.next_attempt_at <= pg_catalog.now() "
				   "  ORDER BY q.next_attempt_at, q.id LIMIT $2 FOR UPDATE SKIP LOCKED) s",
				   2, t, values, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not form a batch");
	}
	attached = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (attached == 0 || (full_only && attached < n))
		return 0;
	ids = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

	values[0] = CStringGetTextDatum(*token);
	values[1] = CStringGetTextDatum(route->provider->name);
	values[2] = CStringGetTextDatum(kind);
	values[3] = CStringGetTextDatum(model);
	values[4] = CStringGetTextDatum(route->upstream_model);
	values[5] = Int32GetDatum((int32) attached);
	if (RunSql("INSERT INTO llm._batch (token, provider, kind, model, upstream_model, requests) "
			   "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
			   6, types, values, NULL, false, 0) != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "could not form a batch");
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	{
		Oid			t[2] = {INT8ARRAYOID, INT8OID};
		Datum		v[2] = {ids, Int64GetDatum(id)};

		if (RunSql("UPDATE llm.queue SET status = 'submitted', batch_id = $2, attempts = attempts + 1, "
				   "started_at = pg_catalog.now(), lease_until = NULL, leased_by = NULL "
				   "WHERE id = ANY ($1)", 2, t, v, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not form a batch");
	}
	return id;
}

/*
 * The models with batch items ready, and their batches: one for each
 * model (an inline batch for each llm.batch_size items, as many as may be
 * in flight).  An item whose model's first route has no batch API is
 * sent realtime instead.  With full_only, only batches that are full.
 */
static void
form_batches(bool full_only)
{
	int			i;
	int			nmodels;
	char	  **models;

	ItemXactBegin("pg_llm: forming batches");
	if (SPI_execute("SELECT DISTINCT model FROM llm.queue "
					"WHERE status = 'pending' AND via = 'batch_api' AND next_attempt_at <= pg_catalog.now() "
					"LIMIT 100", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not look for batch items");
	nmodels = (int) SPI_processed;
	models = palloc(sizeof(char *) * Max(nmodels, 1));
	for (i = 0; i < nmodels; i++)
		models[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

	for (i = 0; i < nmodels; i++)
	{
		List	   *routes;
		const LlmRoute *route;
		const char *kind;
		int			n;
		Oid			types[1] = {TEXTOID};
		Datum		values[1];

		routes = ConfigRoutes(models[i]);
		route = linitial(routes);
		kind = route->provider->batch_api;
		if (strcmp(kind, "none") == 0)
		{
			/* its provider has no batch API: it goes realtime */
			values[0] = CStringGetTextDatum(models[i]);
			(void) RunSql("UPDATE llm.queue SET via = 'realtime' "
						  "WHERE status = 'pending' AND via = 'batch_api' AND model = $1",
						  1, types, values, NULL, false, 0);
			continue;
		}
		n = strcmp(kind, "inline") == 0 ? llm_batch_size :
			strcmp(kind, "openai") == 0 ? OPENAI_BATCH_MAX : ANTHROPIC_BATCH_MAX;
		for (;;)
		{
			char	   *token;
			int64		id;
			BatchRun   *b;

			if (strcmp(kind, "inline") == 0 && inline_batches() >= WorkerConcurrency)
				break;
			id = attach_items(models[i], route, kind, n, full_only, &token);
			if (id == 0)
				break;
			b = batch_new(id, token, kind, models[i], route->provider->name, route->upstream_model);
			b->phase = BP_SEND;
		}
	}
	ItemXactEnd();
}

/* Form batches; an error is reported and the worker goes on. */
static void
form_guarded(bool full_only)
{
	PG_TRY();
	{
		form_batches(full_only);
	}
	PG_CATCH();
	{
		ErrorData  *edata = CopyErrorData();

		FlushErrorState();
		if (IsTransactionState())
			AbortCurrentTransaction();
		SlotReportError(psprintf("forming batches: %s", edata->message));
		elog(LOG, "pg_llm worker: forming batches: %s", edata->message);
	}
	PG_END_TRY();
}

/* Load the batches a previous worker left unfinished (after a crash). */
static void
resume_batches(void)
{
	uint64		i;

	ItemXactBegin("pg_llm: resuming batches");
	if (SPI_execute("SELECT id, token, kind, model, provider, upstream_model, status, "
					"provider_batch_id, input_file_id, output_file_id, error_file_id, results_url "
					"FROM llm._batch WHERE status IN ('preparing', 'submitted') ORDER BY id",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read llm._batch");
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		BatchRun   *b;
		MemoryContext old;
		char	   *status = SPI_getvalue(tup, td, 7);

		PG_TRY();
		{
			b = batch_new(strtoll(SPI_getvalue(tup, td, 1), NULL, 10), SPI_getvalue(tup, td, 2),
						  SPI_getvalue(tup, td, 3), SPI_getvalue(tup, td, 4),
						  SPI_getvalue(tup, td, 5), SPI_getvalue(tup, td, 6));
		}
		PG_CATCH();
		{
			/* its model has no route any more: leave it for an administrator */
			FlushErrorState();
			continue;
		}
		PG_END_TRY();
		old = MemoryContextSwitchTo(b->ctx);
		b->provider_batch_id = SPI_getvalue(tup, td, 8);
		b->input_file_id = SPI_getvalue(tup, td, 9);
		b->output_file_id = SPI_getvalue(tup, td, 10);
		b->error_file_id = SPI_getvalue(tup, td, 11);
		b->results_url = SPI_getvalue(tup, td, 12);
		MemoryContextSwitchTo(old);
		if (b->provider_batch_id)
			b->phase = BP_POLL;
		else if (strcmp(b->kind, "openai") == 0)
			b->phase = BP_LOOKUP;	/* it may have been created: look first */
		else
			b->phase = BP_SEND; /* no way to find it: sent again */
		if (strcmp(status, "submitted") == 0 && b->provider_batch_id == NULL)
			b->phase = BP_SEND;
		elog(LOG, "pg_llm worker: resuming %s batch " INT64_FORMAT " (%s)", b->kind, b->id,
			 b->provider_batch_id ? b->provider_batch_id : "not yet created at the provider");
	}
	ItemXactEnd();
}

/* ---- the items of a batch ---- */

/*
 * One item's line of a batch request: its request (prompt, system prompt,
 * options) in the provider's batch format, its budget reserved.  What
 * makes the item impossible to send is returned in *error instead.  The
 * errors caught here come from pg_llm's own checks (options the protocol
 * refuses, a budget), which hold no resource when they are raised.
 */
static void
BatchBuildLine(const LlmRoute *route, const char *model, const char *id, const char *prompt,
			   const char *system, const char *options, Oid role, char **line, char **error)
{
	MemoryContext old = CurrentMemoryContext;
	double		usd;
	int64		calls;
	int64		max_queued;

	*line = NULL;
	*error = NULL;
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(role)))
	{
		*error = pstrdup("the role that enqueued it no longer exists");
		return;
	}
	PG_TRY();
	{
		LlmRequest *req = RequestFromPrompt(LlmToUtf8(prompt), system ? LlmToUtf8(system) : NULL,
											options ? LlmToUtf8(options) : NULL);

		if (ConfigBudget(role, &usd, &calls, &max_queued) && (usd >= 0 || calls >= 0))
		{
			LlmCall		call;

			memset(&call, 0, sizeof(call));
			call.mode = LLM_MODE_BATCH_API;
			call.model = (char *) model;
			call.req = req;
			call.routes = list_make1((void *) route);
			UsageReserve(&call, role, strlen(prompt) + (system ? strlen(system) : 0) +
						 (options ? strlen(options) : 0), RequestMaxTokens(req));
		}
		*line = ProviderBatchLine(req, route, psprintf("q%s", id));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(old);
		edata = CopyErrorData();
		FlushErrorState();
		*error = edata->message;
	}
	PG_END_TRY();
}

/* Fail the items of a batch that could not be sent, with their errors. */
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

/* Items that did not fit in a batch: back to the queue, as they were. */
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

/* The items of a batch still waiting for their result. */
static int64
BatchItemsLeft(int64 batch_id)
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

/*
 * Split an inline batch's items into two new batches; false when it holds
 * a single item (nothing to split).
 */
static bool
BatchSplit(int64 batch_id, int64 *halves, char **tokens)
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

		if (!pg_strong_random(&r, sizeof(r)))
			r = (uint64) GetCurrentTimestamp() + k;
		tokens[k] = MemoryContextStrdup(TopMemoryContext,
										psprintf("pg_llm_%u_%016llx", MyDatabaseId, (unsigned long long) r));
		values[1] = CStringGetTextDatum(tokens[k]);
		if (RunSql("INSERT INTO llm._batch (token, provider, kind, model, upstream_model, requests) "
				   "SELECT $2, provider, kind, model, upstream_model, 0 FROM llm._batch WHERE id = $1 "
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
		CommandCounterIncrement();
	}
	ItemXactEnd();
	return true;
}

/* ---- reading results ---- */

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
	int64		item_id;
	ItemState	state;			/* DONE, FAILED or RETRY_LATER */
	char	   *content;		/* UTF-8 */
	char	   *tool_name;		/* the answer of a forced tool (json_schema) */
	char	   *tool_input;
	char	   *finish_reason;
	char	   *error;
	long		status;
	bool		expired;		/* expired or cancelled before it ran */
	LlmReply	reply;			/* its usage, how it ended */
} BatchResult;

typedef struct BatchIngest
{
	int		   *answered;		/* the batch's counts of results read */
	int		   *to_realtime;	/* and of its items sent realtime */
	int64		batch_id;
	const LlmRoute *route;
	const char *model;
	MemoryContext ctx;			/* reset after each chunk */
	BatchResult *results;
	int			n;
	int			cap;
	int64		total;
} BatchIngest;

static BatchIngest *
BatchIngestStart(BatchRun *b, int chunk)
{
	BatchIngest *ing = palloc0(sizeof(BatchIngest));

	ing->answered = b->answered;
	ing->to_realtime = &b->to_realtime;
	ing->batch_id = b->id;
	ing->route = b->route;
	ing->model = b->model;
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
	List	   *expired = NIL;

	if (ing->n == 0)
		return;
	ItemSetInit(&set);
	ids = palloc(sizeof(Datum) * ing->n);
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
	if (RunSql("SELECT id, attempts, enqueued_by, target_table::pg_catalog.oid, target_column, target_key::text, "
			   "pg_catalog.octet_length(prompt) + COALESCE(pg_catalog.octet_length(system), 0) "
			   "  + COALESCE(pg_catalog.octet_length(options::text), 0) AS request_bytes, "
			   COUNT_OF("COALESCE(options->'max_tokens', options->'max_completion_tokens')") " AS max_tokens, "
			   "(batch_id = $2 AND status = 'submitted') AS waiting, "
			   COUNT_OF("options->'n'") " AS choices, "
			   "prompt, system, options::text AS options, invalid_answers, spread "
			   "FROM llm.queue WHERE id = ANY ($1)",
			   2, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read batch items");
	tt = SPI_tuptable;
	nrows = SPI_processed;
	if (nrows > 0)
		ItemColumnsFind(tt->tupdesc, &cols);
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
		if (e == NULL || strcmp(SPI_getvalue(tup, td, SPI_fnumber(td, "waiting")), "t") != 0)
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
		max_tokens = SPI_getvalue(tup, td, SPI_fnumber(td, "max_tokens"));
		choices = SPI_getvalue(tup, td, SPI_fnumber(td, "choices"));
		UsageResume(call, it->role,
					(size_t) strtoll(SPI_getvalue(tup, td, SPI_fnumber(td, "request_bytes")), NULL, 10),
					max_tokens ? strtoll(max_tokens, NULL, 10) : 0,
					choices ? strtoll(choices, NULL, 10) : 1);

		if (res->expired)
		{
			/* not sent back through the set: BatchExpireItems below */
			UsageRecord(call, LLM_OUTCOME_RETRY);
			MemoryContextSwitchTo(old);
			expired = lappend(expired, &res->item_id);
			continue;
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
		if (res->state == ITEM_DONE)
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
													   backoff_ms(it->attempts)));
		UsageRecord(call, res->state == ITEM_DONE ? LLM_OUTCOME_OK :
					res->state == ITEM_FAILED ? (outcome != LLM_OUTCOME_OK ? outcome : LLM_OUTCOME_ERROR) :
					LLM_OUTCOME_RETRY);
		MemoryContextSwitchTo(old);
	}
	hash_destroy(byid);
	/* written back, their usage with them, in the same transaction */
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
	bool		ok;
	BatchResult *res;

	ok = ProviderBatchResult(ing->route, line, len, &custom_id, &status, &expired, &reply, &problem);
	/* a request's error is the provider's text: shown only redacted */
	if (problem)
		problem = RedactProviderCString(problem, ing->route->provider);
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
	if (ok)
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
	else if (status == 0 || status == 429 || status >= 500 || status == 408 || status == 409)
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
	ing->answered[res->state == ITEM_DONE ? 0 : res->state == ITEM_FAILED ? 1 :
				  res->expired ? 3 : 2]++;
	MemoryContextSwitchTo(old);
	if (ing->n >= ing->cap)
		ingest_flush(ing);
}

static void
ingest_array_line(void *arg, const char *line, size_t len)
{
	BatchIngestLine((BatchIngest *) arg, line, len);
}

/* The results array of an inline answer. */
static void
BatchIngestArray(BatchIngest *ing, const char *body, size_t len)
{
	BatchEachResult(body, len, ingest_array_line, ing);
}

static void
BatchIngestEnd(BatchIngest *ing)
{
	ingest_flush(ing);
	MemoryContextDelete(ing->ctx);
}

/* ---- building the request ---- */

/*
 * Build a batch's request from its items, a chunk at a time: each line
 * through the provider's batch line format.  An item that cannot be sent
 * (its options refused by the protocol, its role gone, its budget spent)
 * fails alone; the others go.  Items past the provider's size limit for
 * a batch go back to the queue for the next one.  Returns the number of
 * lines.
 */
static int
build_request(BatchRun *b, StringInfo inline_body, FILE *out)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1];
	Portal		portal;
	int			nlines = 0;
	MemoryContext chunk_ctx = AllocSetContextCreate(CurrentMemoryContext, "pg_llm batch chunk",
													ALLOCSET_DEFAULT_SIZES);
	List	   *failed_ids = NIL;
	List	   *failed_errors = NIL;
	List	   *later_ids = NIL;
	bool		anthropic = strcmp(b->kind, "anthropic") == 0;
	size_t		max_bytes = anthropic ? ANTHROPIC_BATCH_BYTES : OPENAI_BATCH_BYTES;
	size_t		bytes = 0;

	values[0] = Int64GetDatum(b->id);
	portal = SPI_cursor_open_with_args(NULL,
									   "SELECT id, prompt, system, options::text, enqueued_by, "
									   "target_table::pg_catalog.oid, target_column "
									   "FROM llm.queue WHERE batch_id = $1 AND status = 'submitted' ORDER BY id",
									   1, types, values, NULL, true, 0);
	if (anthropic)
		fputs("{\"requests\": [", out);
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

			if (target)
				error = TargetGone(atooid(target), SPI_getvalue(tup, td, 7));
			if (error == NULL)
				BatchBuildLine(b->route, b->model, id, prompt, system, options, role, &line, &error);
			if (error)
			{
				MemoryContextSwitchTo(b->ctx);
				failed_ids = lappend(failed_ids, pstrdup(id));
				failed_errors = lappend(failed_errors, pstrdup(error));
				MemoryContextSwitchTo(chunk_ctx);
				continue;
			}
			if (bytes + strlen(line) + 64 > max_bytes)
			{
				MemoryContextSwitchTo(b->ctx);
				later_ids = lappend(later_ids, pstrdup(id));
				MemoryContextSwitchTo(chunk_ctx);
				continue;
			}
			bytes += strlen(line) + 1;
			if (inline_body)
			{
				if (nlines > 0)
					appendStringInfoChar(inline_body, ',');
				appendStringInfoString(inline_body, line);
			}
			else
			{
				if (anthropic && nlines > 0)
					fputc(',', out);
				fputs(line, out);
				if (!anthropic)
					fputc('\n', out);
			}
			nlines++;
		}
		MemoryContextSwitchTo(old);
	}
	if (anthropic)
		fputs("]}", out);
	SPI_cursor_close(portal);
	MemoryContextDelete(chunk_ctx);
	BatchFailItems(b->id, failed_ids, failed_errors);
	BatchPutBack(b->id, later_ids);
	return nlines;
}

/* Build and send a batch (or, when nothing is left to send, end it). */
static void
batch_send(BatchRun *b)
{
	const LlmProvider *p = b->route->provider;
	HttpRequestSpec spec;
	StringInfoData body;
	FILE	   *out = NULL;
	int			nlines;
	MemoryContext old = MemoryContextSwitchTo(b->ctx);

	memset(&spec, 0, sizeof(spec));
	/* the body outlives the transaction: it is made in the batch's memory */
	if (strcmp(b->kind, "inline") == 0)
		initStringInfo(&body);
	ItemXactBegin("pg_llm: building a batch");
	if (strcmp(b->kind, "inline") == 0)
	{
		appendStringInfoString(&body, "{\"input_file_content\": [");
		nlines = build_request(b, &body, NULL);
		appendStringInfoString(&body, "]}");
	}
	else
	{
		b->request_path = temp_path(b, "request");
		out = AllocateFile(b->request_path, PG_BINARY_W);
		if (out == NULL)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not create file \"%s\": %m", b->request_path)));
		nlines = build_request(b, NULL, out);
		if (FreeFile(out) != 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not write file \"%s\": %m", b->request_path)));
	}
	{
		Oid			t2[2] = {INT8OID, INT4OID};
		Datum		v2[2] = {Int64GetDatum(b->id), Int32GetDatum(nlines)};

		if (RunSql("UPDATE llm._batch SET requests = $2 WHERE id = $1", 2, t2, v2, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not update llm._batch");
	}
	ItemXactEnd();
	if (nlines == 0)
	{
		MemoryContextSwitchTo(old);
		batch_finish(b, "ended", NULL, false);
		return;
	}

	spec.headers = provider_headers(p, true);
	if (strcmp(b->kind, "inline") == 0)
	{
		/* the relay's synchronous endpoint: the results come in the answer */
		spec.url = provider_url(p, "/batches");
		spec.body = body.data;
		spec.body_len = body.len;
		start_request(b, &spec, p->batch_timeout_ms >= 0 ? p->batch_timeout_ms : BATCH_TIMEOUT_DEFAULT_MS);
		b->phase = BP_CREATE;
	}
	else if (strcmp(b->kind, "openai") == 0)
	{
		/* first the file, as multipart/form-data */
		spec.headers = provider_headers(p, false);
		spec.url = provider_url(p, "/files");
		spec.form_fields = list_make1("purpose=batch");
		spec.form_file_field = "file";
		spec.form_file_path = b->request_path;
		spec.form_file_name = psprintf("%s.jsonl", b->token);
		start_request(b, &spec, Max(call_timeout(p), 600000));
		b->phase = BP_UPLOAD;
	}
	else
	{
		spec.url = provider_url(p, "/messages/batches");
		spec.body_path = b->request_path;
		start_request(b, &spec, Max(call_timeout(p), 600000));
		b->phase = BP_CREATE;
	}
	MemoryContextSwitchTo(old);
}

/* openai: the uploaded file is there: create the batch. */
static void
create_openai_batch(BatchRun *b)
{
	const LlmProvider *p = b->route->provider;
	HttpRequestSpec spec;

	memset(&spec, 0, sizeof(spec));
	spec.url = provider_url(p, "/batches");
	spec.headers = provider_headers(p, true);
	spec.body = BatchCreateBody(b->input_file_id, p->batch_url, b->token);
	spec.body_len = strlen(spec.body);
	start_request(b, &spec, call_timeout(p));
	b->phase = BP_CREATE;
}

/* ---- polling, downloading, reading results ---- */

/* A GET of the provider's batch API; the answer is read in phase. */
static void
start_get(BatchRun *b, const char *path, BatchPhase phase)
{
	const LlmProvider *p = b->route->provider;
	HttpRequestSpec spec;

	memset(&spec, 0, sizeof(spec));
	spec.get = true;
	spec.headers = provider_headers(p, false);
	spec.url = provider_url(p, path);
	start_request(b, &spec, call_timeout(p));
	b->phase = phase;
}

static void
start_poll(BatchRun *b)
{
	start_get(b, strcmp(b->kind, "anthropic") == 0 ?
			  psprintf("/messages/batches/%s", b->provider_batch_id) :
			  psprintf("/batches/%s", b->provider_batch_id),
			  BP_POLL);
}

/* openai: look for a batch carrying our token (after a crash). */
static void
start_lookup(BatchRun *b)
{
	start_get(b, b->lookup_after ?
			  psprintf("/batches?limit=100&after=%s", b->lookup_after) :
			  "/batches?limit=100",
			  BP_LOOKUP);
}

/* Download a results file (openai: output then error file; anthropic: results_url). */
static bool
start_download(BatchRun *b)
{
	const LlmProvider *p = b->route->provider;
	HttpRequestSpec spec;
	const char *url = NULL;

	memset(&spec, 0, sizeof(spec));
	if (strcmp(b->kind, "anthropic") == 0)
	{
		/*
		 * The key goes only to the provider's own origin: a results_url
		 * elsewhere is read from the documented endpoint instead.
		 */
		if (b->download_step == 0 && b->results_url)
		{
			if (HttpSameOrigin(b->results_url, p->base_url))
				url = b->results_url;
			else
			{
				elog(LOG, "pg_llm worker: batch " INT64_FORMAT ": results_url is not on provider \"%s\"'s origin; "
					 "reading the results from its base URL", b->id, p->name);
				url = provider_url(p, psprintf("/messages/batches/%s/results", b->provider_batch_id));
			}
		}
	}
	else
	{
		const char *file = b->download_step == 0 ? b->output_file_id :
			b->download_step == 1 ? b->error_file_id : NULL;

		if (b->download_step == 0 && file == NULL)
		{
			b->download_step = 1;
			file = b->error_file_id;
		}
		if (file)
			url = provider_url(p, psprintf("/files/%s/content", file));
	}
	if (url == NULL)
		return false;
	spec.get = true;
	spec.headers = provider_headers(p, false);
	spec.url = url;
	if (b->download_path == NULL)
		b->download_path = temp_path(b, "results");
	spec.response_path = b->download_path;
	start_request(b, &spec, Max(call_timeout(p), 600000));
	b->phase = BP_DOWNLOAD;
	return true;
}

/*
 * Read a results file a line at a time and write the results back.  The
 * file is read across the transactions that write the results, so it is
 * opened outside the transaction machinery (which would close it at the
 * first commit), and closed here on every path.
 */
static void
ingest_file(BatchRun *b, const char *path)
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

/* Start a batch's downloads, or finish it when all are read. */
static void
next_download(BatchRun *b)
{
	if (!start_download(b))
		batch_finish(b, b->failure ? "failed" : "ended", b->failure, false);
}

/*
 * An ended batch is finished: its items still waiting (not answered, not
 * in the results) go back to the queue to be sent again, the batch row
 * gets its final status, and its files are removed.
 */
static void
batch_finish(BatchRun *b, const char *status, const char *error, bool fail_items)
{
	int			released;
	int			expired = 0;
	int			realtime = 0;

	b->failure = error ? MemoryContextStrdup(b->ctx, error) : NULL;
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
	record_in_xact(b, status);
	ItemXactEnd();
	b->phase = BP_DONE;
	batch_free(b);
}

/*
 * Split a batch in half (an inline request timed out or was refused as a
 * whole, a request or file was too big): each half is sent again.  A single request
 * left goes back to the queue, or fails at once when the relay refused it.
 */
static void
split_batch(BatchRun *b, const char *why, bool refused)
{
	int64		halves[2];
	char	   *tokens[2];
	int			k;

	if (!BatchSplit(b->id, halves, tokens))
	{
		batch_finish(b, "failed", why, refused);
		return;
	}
	elog(LOG, "pg_llm worker: inline batch " INT64_FORMAT " split in two (%s)", b->id, why);
	for (k = 0; k < 2; k++)
	{
		BatchRun   *h = batch_new(halves[k], tokens[k], b->kind, b->model,
								  b->route->provider->name, b->route->upstream_model);

		h->phase = BP_SEND;
		pfree(tokens[k]);
	}
	batch_finish(b, "split", why, false);
}

/* Ask the provider again later (a poll, or a lookup). */
static void
again_later(BatchRun *b, BatchPhase phase, int64 delay_ms)
{
	b->phase = phase;
	b->next_poll = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay_ms);
}

/* The next poll of a submitted batch. */
static void
poll_later(BatchRun *b)
{
	again_later(b, BP_WAIT, (int64) llm_batch_poll_interval * 1000);
}

/*
 * A request of a batch failed.  Once the provider has the batch, a
 * failed poll or download is asked again at the next poll (its items stay
 * with it: sending them again could bill them twice), unless the provider
 * no longer knows the batch.  Before, it depends on what was sent: a
 * lookup is tried again; a creation that may have reached an OpenAI
 * provider is looked up before anything is sent again; otherwise the
 * items go back to the queue (or fail, when the provider refused them
 * for what they are).
 */
static void
batch_failed(BatchRun *b)
{
	HttpTransfer *t = b->xfer;
	char	   *why = transfer_problem(b);
	bool		answered = t->outcome == HTTP_COMPLETE;
	bool		readable_error = answered && (t->status < 200 || t->status >= 300);
	bool		retry = !readable_error || transfer_retryable(t);
	bool		timed_out = t->outcome == HTTP_TRANSPORT_ERROR && t->timed_out;
	long		status = t->status;
	BatchPhase	phase = b->phase;

	if (answered && !readable_error)
		why = psprintf("HTTP %ld with an answer pg_llm cannot read", status);
	HttpRelease(t);
	b->xfer = NULL;
	SlotReportError(psprintf("batch " INT64_FORMAT ": %s", b->id, why));
	elog(LOG, "pg_llm worker: %s batch " INT64_FORMAT ": %s", b->kind, b->id, why);

	if (b->provider_batch_id)
	{
		if (phase == BP_POLL && (status == 404 || status == 410))
			batch_finish(b, "failed", psprintf("the provider no longer has the batch: %s", why), false);
		else
			poll_later(b);
		return;
	}
	if (status == 413 && (phase == BP_UPLOAD || phase == BP_CREATE))
	{
		/* too big for the provider: two halves */
		split_batch(b, why, false);
		return;
	}
	switch (phase)
	{
		case BP_LOOKUP:
			if (retry && ++b->tries < llm_max_attempts)
				again_later(b, BP_LOOKUP, backoff_ms(b->tries));
			else
				again_later(b, BP_SEND, 0); /* cannot be looked up: sent */
			return;
		case BP_CREATE:
			if (strcmp(b->kind, "inline") == 0 &&
				(timed_out ||
				 status == 408 || status == 413 || status == 504 || status == 400 || status == 422))
			{
				split_batch(b, why, status == 400 || status == 422);
				return;
			}
			if (strcmp(b->kind, "openai") == 0 && retry)
			{
				/* it may have been created: look for it first */
				b->tries = 0;
				again_later(b, BP_LOOKUP, backoff_ms(1));
				return;
			}
			break;
		default:
			break;
	}
	batch_finish(b, "failed", psprintf("the provider refused the batch: %s", why), !retry);
}

/*
 * A batch's transfer finished: read the answer and move the batch on.
 * Errors here are the batch's own; the worker goes on.
 */
static void
batch_advance(BatchRun *b)
{
	HttpTransfer *t = b->xfer;
	LlmBatchAnswer *a = answer_of(b);
	MemoryContext old = MemoryContextSwitchTo(b->ctx);

	switch (b->phase)
	{
		case BP_UPLOAD:
			if (a && a->id)
			{
				b->input_file_id = pstrdup(a->id);
				HttpRelease(t);
				b->xfer = NULL;
				record(b, NULL);
				create_openai_batch(b);
				break;
			}
			batch_failed(b);
			break;
		case BP_CREATE:
			if (strcmp(b->kind, "inline") == 0 && a && a->has_results)
			{
				/* the results are in the answer */
				BatchIngest *ing = BatchIngestStart(b, INGEST_CHUNK);

				BatchIngestArray(ing, t->data, t->len);
				BatchIngestEnd(ing);
				HttpRelease(t);
				b->xfer = NULL;
				batch_finish(b, "ended", NULL, false);
				break;
			}
			if (strcmp(b->kind, "inline") != 0 && a && a->id)
			{
				b->provider_batch_id = pstrdup(a->id);
				HttpRelease(t);
				b->xfer = NULL;
				record(b, "submitted");
				if (b->request_path)
				{
					unlink(b->request_path);
					b->request_path = NULL;
				}
				poll_later(b);
				break;
			}
			batch_failed(b);
			break;
		case BP_LOOKUP:
			if (a)
			{
				char	   *found = BatchFindToken(t->data, t->len, b->token, &b->lookup_after);

				HttpRelease(t);
				b->xfer = NULL;
				if (found)
				{
					b->provider_batch_id = pstrdup(found);
					record(b, "submitted");
					start_poll(b);
				}
				else if (b->lookup_after && ++b->lookup_page < LOOKUP_PAGES)
					start_lookup(b);
				else
					batch_send(b);
				break;
			}
			batch_failed(b);
			break;
		case BP_POLL:
			if (a)
			{
				HttpRelease(t);
				b->xfer = NULL;
				record_poll(b, a);
				if (a->output_file_id)
					b->output_file_id = pstrdup(a->output_file_id);
				if (a->error_file_id)
					b->error_file_id = pstrdup(a->error_file_id);
				if (a->results_url)
					b->results_url = pstrdup(a->results_url);
				if (a->ended)
				{
					b->failure = a->failure ? RedactProviderCString(a->failure, b->route->provider) : NULL;
					record(b, NULL);
					b->download_step = 0;
					next_download(b);
				}
				else if (!a->cancelling && BatchItemsLeft(b->id) == 0)
				{
					/* every item of it was removed: cancel it at the provider */
					BatchStartCancel(b);
				}
				else
					poll_later(b);
				break;
			}
			batch_failed(b);
			break;
		case BP_DOWNLOAD:
			if (t->outcome == HTTP_COMPLETE && t->status >= 200 && t->status < 300)
			{
				HttpRelease(t);
				b->xfer = NULL;
				ingest_file(b, b->download_path);
				unlink(b->download_path);
				b->download_step++;
				next_download(b);
				break;
			}
			batch_failed(b);
			break;
		case BP_CANCEL:
			/* whatever the answer, its items are gone */
			HttpRelease(t);
			b->xfer = NULL;
			batch_finish(b, "cancelled", "every item of the batch was removed", false);
			break;
		default:
			elog(ERROR, "batch transfer in phase %d", (int) b->phase);
	}
	MemoryContextSwitchTo(old);
}

/* Cancel a batch at the provider. */
static void
BatchStartCancel(BatchRun *b)
{
	const LlmProvider *p = b->route->provider;
	HttpRequestSpec spec;

	memset(&spec, 0, sizeof(spec));
	spec.headers = provider_headers(p, true);
	spec.url = strcmp(b->kind, "anthropic") == 0 ?
		provider_url(p, psprintf("/messages/batches/%s/cancel", b->provider_batch_id)) :
		provider_url(p, psprintf("/batches/%s/cancel", b->provider_batch_id));
	spec.body = "{}";
	spec.body_len = 2;
	start_request(b, &spec, call_timeout(p));
	b->phase = BP_CANCEL;
}

/* ---- the worker's entry points ---- */

/* A batch's next request, when it is due; its errors are its own. */
static void
batch_step(BatchRun *b)
{
	PG_TRY();
	{
		if (b->phase == BP_SEND)
			batch_send(b);
		else if (b->phase == BP_LOOKUP)
			start_lookup(b);
		else if (b->phase == BP_POLL || b->phase == BP_WAIT)
			start_poll(b);
	}
	PG_CATCH();
	{
		ErrorData  *edata = CopyErrorData();

		FlushErrorState();
		if (IsTransactionState())
			AbortCurrentTransaction();
		SlotReportError(psprintf("batch " INT64_FORMAT ": %s", b->id, edata->message));
		elog(LOG, "pg_llm worker: batch " INT64_FORMAT ": %s", b->id, edata->message);
		b->next_poll = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												   (int64) llm_batch_poll_interval * 1000);
	}
	PG_END_TRY();
}

/*
 * One pass of batch work: resume after a start, form new batches (every
 * llm.batch_poll_interval, at most every second when an enqueue woke the
 * worker, at once when an inline batch is done), send what is built,
 * poll what is due, each request in its turn under the provider's limits
 * and cooldowns.  Each batch's errors are its own.
 */
static void
batch_tick(ItemSet *set, TimestampTz pass_start)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		woken = SlotTakeBatchWake();
	dlist_mutable_iter iter;
	bool		built_file = false;
	bool		full_only;

	if (!resumed)
	{
		resume_batches();
		resumed = true;
	}
	/*
	 * A wake-up soon after the last forming makes the full batches at once
	 * (a large enqueue is sent without delay) and leaves the rest a little
	 * later, so that items committed one by one gather into batches.
	 */
	full_only = false;
	if (woken)
	{
		TimestampTz rest = TimestampTzPlusMilliseconds(last_form, FORM_WAKE_MS);

		if (now < rest && now < next_form)
			full_only = true;
		next_form = Min(next_form, rest);
	}
	if (now >= next_form || full_only)
	{
		if (!full_only)
		{
			last_form = now;
			next_form = TimestampTzPlusMilliseconds(now, (int64) llm_batch_poll_interval * 1000);
		}
		form_guarded(full_only);
	}
	dlist_foreach_modify(iter, &batches)
	{
		BatchRun   *b = dlist_container(BatchRun, node, iter.cur);
		TimestampTz until = 0;
		char	   *why = NULL;
		int64		charged;

		if (b->xfer || b->next_poll > now)
			continue;
		/* one requests file is built a pass: the loop has other work */
		if (b->phase == BP_SEND && strcmp(b->kind, "inline") != 0)
		{
			if (built_file)
				continue;
			built_file = true;
		}
		if (RateLimitAsk(b->route, 0, false, 0, &until, &why, &charged) != LLM_TURN_GO)
		{
			/* the provider's pace, or its cooldown: its turn comes later */
			b->next_poll = until > now ? until : TimestampTzPlusMilliseconds(now, 1000);
			continue;
		}
		batch_step(b);
	}
}

/* A batch's transfer finished. */
static void
BatchTransferDone(ItemSet *set, HttpTransfer *t)
{
	BatchRun   *b = (BatchRun *) t->user;

	RateLimitAfter(b->route, t, NULL);
	PG_TRY();
	{
		batch_advance(b);
	}
	PG_CATCH();
	{
		ErrorData  *edata = CopyErrorData();

		FlushErrorState();
		if (IsTransactionState())
			AbortCurrentTransaction();
		SlotReportError(psprintf("batch " INT64_FORMAT ": %s", b->id, edata->message));
		elog(LOG, "pg_llm worker: batch " INT64_FORMAT ": %s", b->id, edata->message);
		if (b->xfer)
		{
			HttpRelease(b->xfer);
			b->xfer = NULL;
		}
		/* after the next poll interval, from a step that can be taken again */
		if (b->provider_batch_id)
			b->phase = BP_WAIT;
		else if (strcmp(b->kind, "openai") == 0)
			b->phase = BP_LOOKUP;
		else
			b->phase = BP_SEND;
		b->next_poll = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												   (int64) llm_batch_poll_interval * 1000);
	}
	PG_END_TRY();
}

/*
 * When batch work is due next: forming, or a batch's next request (a
 * time of 0, "at once", is returned as the earliest time there is).
 */
static TimestampTz
batch_next_due(ItemSet *set)
{
	TimestampTz next = Max(next_form, 1);
	dlist_iter	iter;

	dlist_foreach(iter, &batches)
	{
		BatchRun   *b = dlist_container(BatchRun, node, iter.cur);

		if (!b->xfer && Max(b->next_poll, 1) < next)
			next = Max(b->next_poll, 1);
	}
	return next;
}

/* The worker stops: close the transfers; the batches are in llm._batch. */
static void
batch_stop(ItemSet *set)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &batches)
	{
		BatchRun   *b = dlist_container(BatchRun, node, iter.cur);

		if (b->xfer)
		{
			HttpRelease(b->xfer);
			b->xfer = NULL;
		}
	}
}

const WorkTransport BatchTransport = {
	.name = "batch",
	.tick = batch_tick,
	.done = BatchTransferDone,
	.next_due = batch_next_due,
	.stop = batch_stop,
};
