/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  The worker's second transport: items enqueued with via =>
 *	  'batch_api' go through their provider's batch API instead of one
 *	  call each.
 *
 *	  The kinds of batch API (the provider option batch_api) are the
 *	  protocols' own, behind LlmBatchOps in provider_openai.c (the OpenAI
 *	  Batch API, a relay's inline /batches) and provider_anthropic.c
 *	  (Message Batches): each builds the requests of a batch's steps and
 *	  reads their answers into events, and sends nothing.  This file is the
 *	  state machine and does the sending: a batch's requests are built
 *	  (batch_store.c), then each step is one request; when its answer
 *	  comes, the transfer is released once, the answer read into an event,
 *	  the event applied in one place (batch_apply), and the next step
 *	  asked for.  A step that follows an answer at once (the creation
 *	  after the upload, the results after the end) is sent at once; a poll,
 *	  a lookup and the first request of a batch wait for their time and for
 *	  the provider's turn under the cluster's limits and cooldowns.
 *
 *	  A batch is a row of llm._batch, and its items point to it, committed
 *	  before anything is sent; the provider's ids are recorded as soon as
 *	  it answers.  After a crash the worker resumes every batch that is not
 *	  finished: it polls those the provider has; one whose creation was not
 *	  recorded is looked up by its token when its kind can, or sent again.
 *	  Requests files are built and results read a line at a time, through
 *	  temporary files, so a batch of 100,000 requests holds little memory.
 *	  A batch whose creation answers with its results (inline) and that
 *	  times out or is refused as a whole is split in half, down to single
 *	  requests; so is any batch the provider finds too big (HTTP 413).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <unistd.h>

#include "access/xact.h"
#include "lib/ilist.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "call.h"
#include "config.h"
#include "http.h"
#include "provider.h"
#include "queue.h"
#include "ratelimit.h"
#include "redact.h"
#include "slots.h"
#include "worker/batch.h"
#include "worker/item.h"
#include "worker/transport.h"

int			llm_batch_poll_interval = 60;

#define BATCH_TIMEOUT_DEFAULT_MS 300000
#define TRANSFER_TIMEOUT_MIN_MS 600000
#define LOOKUP_PAGES 10			/* pages of the provider's batches searched */

/* batches are formed again at most this often when an enqueue wakes the worker */
#define FORM_WAKE_MS 1000

/* A batch the worker is taking through its provider's batch API. */
typedef struct BatchRun
{
	BatchRow	row;			/* as llm._batch holds it */
	dlist_node	node;
	MemoryContext ctx;
	bool		build;			/* its requests are to be built and sent */
	LlmBatchStep step;			/* the request on the wire, or the next */
	HttpTransfer *xfer;
	TimestampTz next_poll;		/* nothing is sent before it */
	StringInfoData requests;	/* in memory (inline kinds) */
	char	   *request_path;	/* or a temporary file */
	char	   *download_path;	/* temporary file of results */
	int			results_step;	/* the results file on its way */
	int			lookup_page;
	char	   *lookup_after;
	int			tries;			/* lookups that failed in a row */
} BatchRun;

/* What went wrong with a request of a batch, read before it is released. */
typedef struct BatchFailure
{
	char	   *why;
	long		status;
	bool		retry;			/* worth asking again: not the request's fault */
	bool		timed_out;
} BatchFailure;

static dlist_head batches = DLIST_STATIC_INIT(batches);
static TimestampTz next_form = 0;
static TimestampTz last_form = 0;
static bool resumed = false;

static void batch_send(BatchRun *b);
static void send_step(BatchRun *b, LlmBatchStep step);

/* ---- a batch in memory ---- */

/*
 * A new batch in memory for a row of llm._batch (the route: its model's);
 * embed: its requests are embeddings.
 */
static BatchRun *
batch_new(int64 id, const char *token, const char *kind, const char *model,
		  const char *provider, const char *upstream, bool embed)
{
	MemoryContext ctx = AllocSetContextCreate(TopMemoryContext, "pg_llm batch", ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(ctx);
	BatchRun   *b = palloc0(sizeof(BatchRun));
	List	   *routes;
	ListCell   *lc;

	b->ctx = ctx;
	b->row.id = id;
	b->row.token = pstrdup(token);
	b->row.model = pstrdup(model);
	b->row.embed = embed;
	routes = ConfigRoutes(model);
	foreach(lc, routes)
	{
		LlmRoute   *r = lfirst(lc);

		if (strcmp(r->provider->name, provider) == 0 && strcmp(r->upstream_model, upstream) == 0)
			b->row.route = r;
	}
	if (b->row.route == NULL)
		b->row.route = linitial(routes);
	b->row.kind = ProviderBatchKind(b->row.route->provider->ops, kind);
	if (b->row.kind == NULL)
		elog(ERROR, "provider \"%s\" has no batch API \"%s\"", b->row.route->provider->name, kind);
	MemoryContextSwitchTo(old);
	dlist_push_tail(&batches, &b->node);
	return b;
}

/* Forget a batch: its transfer, its files, its memory. */
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

/* A temporary file name for a batch, removed at the next server start. */
static char *
temp_path(BatchRun *b, const char *what)
{
	char		dir[MAXPGPATH];

	snprintf(dir, sizeof(dir), "base/%s", PG_TEMP_FILES_DIR);
	(void) MakePGDirectory(dir);
	return MemoryContextStrdup(b->ctx, psprintf("%s/%s_llm_batch_%lld_%s_%d", dir,
												PG_TEMP_FILE_PREFIX, (long long) b->row.id,
												what, MyProcPid));
}

/*
 * The batch as its kind sees it when it builds a request (the strings
 * are the batch's own, borrowed).
 */
static LlmBatchState
state_of(BatchRun *b)
{
	LlmBatchState s;

	s.provider = b->row.route->provider;
	s.id = b->row.id;
	s.token = b->row.token;
	s.embed = b->row.embed;
	s.input_file_id = b->row.input_file_id;
	s.batch_id = b->row.provider_batch_id;
	s.output_file_id = b->row.output_file_id;
	s.error_file_id = b->row.error_file_id;
	s.results_url = b->row.results_url;
	s.lookup_after = b->lookup_after;
	s.results_step = b->results_step;
	return s;
}

/* The step a batch takes again after an error: the next that can be. */
static void
step_again_later(BatchRun *b)
{
	b->build = false;
	if (b->row.provider_batch_id)
		b->step = LLM_BATCH_POLL;
	else if (b->row.kind->can_lookup)
		b->step = LLM_BATCH_LOOKUP;	/* it may have been created: look first */
	else
		b->build = true;		/* no way to find it: sent again */
}

/*
 * An error caught in the batch work (of one batch, or of forming them):
 * flushed, its transaction rolled back, and reported as what went wrong
 * where (the worker's last error, the server log); the worker goes on.
 */
static void
batch_error(const char *where)
{
	ErrorData  *edata = CopyErrorData();

	FlushErrorState();
	if (IsTransactionState())
		AbortCurrentTransaction();
	SlotReportError(psprintf("%s: %s", where, edata->message));
	elog(LOG, "pg_llm worker: %s: %s", where, edata->message);
}

/* ---- requests ---- */

/* A setting overridden per provider (-1: not overridden). */
static long
pick(int provider_value, int setting)
{
	return provider_value >= 0 ? provider_value : setting;
}

/*
 * Start the request of a step as its kind describes it, with the
 * provider's key, headers and timeouts; its transfer carries the batch.
 * False when the kind has nothing to ask (no more results).
 */
static bool
start_request(BatchRun *b, LlmBatchStep step)
{
	const LlmProvider *p = b->row.route->provider;
	LlmBatchState s = state_of(b);
	LlmBatchRequest req;
	HttpRequestSpec spec;
	List	   *headers = NIL;
	ListCell   *lc;
	size_t		blen = strlen(p->base_url);
	long		call_ms = pick(p->timeout_ms, llm_timeout_ms);
	MemoryContext old = MemoryContextSwitchTo(b->ctx);

	if (!b->row.kind->request(step, &s, &req))
	{
		MemoryContextSwitchTo(old);
		return false;
	}
	memset(&spec, 0, sizeof(spec));
	while (blen > 0 && p->base_url[blen - 1] == '/')
		blen--;
	spec.url = req.url ? req.url : psprintf("%.*s%s", (int) blen, p->base_url, req.path);
	spec.get = req.get;
	if (req.body || req.send_file)
		headers = lappend(headers, "Content-Type: application/json");
	p->ops->add_headers(p, ConfigProviderKey(p), &headers);
	foreach(lc, p->headers)
		headers = lappend(headers, lfirst(lc));
	spec.headers = headers;
	if (req.body)
	{
		spec.body = req.body;
		spec.body_len = strlen(req.body);
	}
	else if (req.send_file && b->request_path == NULL)
	{
		/* the requests built in memory */
		spec.body = b->requests.data;
		spec.body_len = b->requests.len;
	}
	else if (req.send_file)
		spec.body_path = b->request_path;
	else if (req.upload_file)
	{
		/* a multipart/form-data upload of the requests file */
		spec.form_fields = list_make1("purpose=batch");
		spec.form_file_field = "file";
		spec.form_file_path = b->request_path;
		spec.form_file_name = req.upload_name;
	}
	if (req.to_file)
	{
		if (b->download_path == NULL)
			b->download_path = temp_path(b, "results");
		spec.response_path = b->download_path;
	}
	spec.connect_timeout_ms = pick(p->connect_timeout_ms, llm_connect_timeout_ms);
	spec.timeout_ms = req.timeout == LLM_BATCH_TIMEOUT_SYNC ?
		pick(p->batch_timeout_ms, BATCH_TIMEOUT_DEFAULT_MS) :
		req.timeout == LLM_BATCH_TIMEOUT_TRANSFER ? Max(call_ms, TRANSFER_TIMEOUT_MIN_MS) : call_ms;
	spec.max_response = (size_t) llm_max_response_size_kb * 1024;
	spec.xact_bound = false;
	spec.transport = &p->transport;
	b->xfer = HttpStart(&spec);
	b->xfer->user = b;
	b->xfer->user_kind = TRANSPORT_BATCH;
	b->step = step;
	MemoryContextSwitchTo(old);
	return true;
}

/* Finish a batch (see BatchStoreFinish) and forget it. */
static void
batch_finish(BatchRun *b, const char *status, const char *error, bool fail_items)
{
	b->row.failure = error ? MemoryContextStrdup(b->ctx, error) : NULL;
	BatchStoreFinish(&b->row, status, fail_items);
	batch_free(b);
}

/*
 * Send a step now; a step with nothing to ask (no results left) finishes
 * the batch.
 */
static void
send_step(BatchRun *b, LlmBatchStep step)
{
	if (!start_request(b, step))
		batch_finish(b, b->row.failure ? "failed" : "ended", b->row.failure, false);
}

/* The next step, later (a poll, a lookup): the tick sends it in its turn. */
static void
step_later(BatchRun *b, LlmBatchStep step, int64 delay_ms)
{
	b->build = false;
	b->step = step;
	b->next_poll = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay_ms);
}

/* The next poll of a submitted batch. */
static void
poll_later(BatchRun *b)
{
	step_later(b, LLM_BATCH_POLL, (int64) llm_batch_poll_interval * 1000);
}

/*
 * Build a batch's requests and send its first request (the upload of
 * the requests file, or the creation); a batch with nothing left to send
 * ends.
 */
static void
batch_send(BatchRun *b)
{
	MemoryContext old = MemoryContextSwitchTo(b->ctx);
	int			nlines;

	b->build = false;
	if (b->row.kind->inline_results)
	{
		/* the body outlives the transaction: it is made in the batch's memory */
		initStringInfo(&b->requests);
		nlines = BatchStoreBuild(&b->row, &b->requests, NULL);
	}
	else
	{
		b->request_path = temp_path(b, "request");
		nlines = BatchStoreBuild(&b->row, NULL, b->request_path);
	}
	MemoryContextSwitchTo(old);
	if (nlines == 0)
		batch_finish(b, "ended", NULL, false);
	else if (!start_request(b, LLM_BATCH_UPLOAD))
		send_step(b, LLM_BATCH_CREATE);
}

/* ---- answers ---- */

/*
 * Split a batch in half (an inline request timed out or was refused as a
 * whole, a request or file was too big): each half is sent again.  A
 * single request left goes back to the queue, or fails at once when the
 * relay refused it.
 */
static void
split_batch(BatchRun *b, const char *why, bool refused)
{
	int64		halves[2];
	char	   *tokens[2];
	int			k;

	if (!BatchStoreSplit(b->row.id, halves, tokens))
	{
		batch_finish(b, "failed", why, refused);
		return;
	}
	elog(LOG, "pg_llm worker: %s batch " INT64_FORMAT " split in two (%s)", b->row.kind->name, b->row.id, why);
	for (k = 0; k < 2; k++)
	{
		BatchRun   *h = batch_new(halves[k], tokens[k], b->row.kind->name, b->row.model,
								  b->row.route->provider->name, b->row.route->upstream_model,
								  b->row.embed);

		h->build = true;
		pfree(tokens[k]);
	}
	batch_finish(b, "split", why, false);
}

/*
 * A request of a batch failed (or its 2xx answer could not be read).
 * Once the provider has the batch, a failed poll or download is asked
 * again at the next poll (its items stay with it: sending them again
 * could bill them twice), unless the provider no longer knows the batch.
 * Before, it depends on what was sent: a lookup is tried again; a
 * creation that may have reached the provider is looked up (when the
 * kind can) before anything is sent again; otherwise the items go back to
 * the queue (or fail, when the provider refused them for what they are).
 */
static void
batch_failed(BatchRun *b, const BatchFailure *f)
{
	LlmBatchStep step = b->step;

	SlotReportError(psprintf("batch " INT64_FORMAT ": %s", b->row.id, f->why));
	elog(LOG, "pg_llm worker: %s batch " INT64_FORMAT ": %s", b->row.kind->name, b->row.id, f->why);

	if (b->row.provider_batch_id)
	{
		if (step == LLM_BATCH_POLL && (f->status == 404 || f->status == 410))
			batch_finish(b, "failed", psprintf("the provider no longer has the batch: %s", f->why), false);
		else
			poll_later(b);
		return;
	}
	if (f->status == 413 && (step == LLM_BATCH_UPLOAD || step == LLM_BATCH_CREATE))
	{
		/* too big for the provider: two halves */
		split_batch(b, f->why, false);
		return;
	}
	if (step == LLM_BATCH_LOOKUP)
	{
		if (f->retry && ++b->tries < llm_max_attempts)
			step_later(b, LLM_BATCH_LOOKUP, BatchBackoffMs(b->tries));
		else
		{
			/* cannot be looked up: sent */
			b->build = true;
			b->next_poll = GetCurrentTimestamp();
		}
		return;
	}
	if (step == LLM_BATCH_CREATE && b->row.kind->inline_results &&
		(f->timed_out || f->status == 408 || f->status == 413 || f->status == 504 ||
		 f->status == 400 || f->status == 422))
	{
		split_batch(b, f->why, f->status == 400 || f->status == 422);
		return;
	}
	if (step == LLM_BATCH_CREATE && b->row.kind->can_lookup && f->retry)
	{
		/* it may have been created: look for it first */
		b->tries = 0;
		step_later(b, LLM_BATCH_LOOKUP, BatchBackoffMs(1));
		return;
	}
	batch_finish(b, "failed", psprintf("the provider refused the batch: %s", f->why), !f->retry);
}

/* A copy of a string into the batch's memory, or NULL. */
static char *
keep(BatchRun *b, const char *s)
{
	return s ? MemoryContextStrdup(b->ctx, s) : NULL;
}

/*
 * Apply what an answer said, in one place: record it, and ask for the
 * next step.  t is the finished transfer (inline results are read from
 * it); the caller releases it.
 */
static void
batch_apply(BatchRun *b, const LlmBatchEvent *ev, HttpTransfer *t)
{
	switch (ev->kind)
	{
		case LLM_BATCH_UPLOADED:
			b->row.input_file_id = keep(b, ev->id);
			BatchStoreRecord(&b->row, NULL);
			send_step(b, LLM_BATCH_CREATE);
			break;
		case LLM_BATCH_CREATED:
			b->row.provider_batch_id = keep(b, ev->id);
			BatchStoreRecord(&b->row, "submitted");
			if (b->request_path)
			{
				unlink(b->request_path);
				b->request_path = NULL;
			}
			poll_later(b);
			break;
		case LLM_BATCH_ANSWERED:
			BatchStoreIngestAnswer(&b->row, t->data, t->len);
			batch_finish(b, "ended", NULL, false);
			break;
		case LLM_BATCH_RUNNING:
		case LLM_BATCH_ENDED:
			BatchStoreRecordPoll(&b->row, ev);
			if (ev->output_file_id)
				b->row.output_file_id = keep(b, ev->output_file_id);
			if (ev->error_file_id)
				b->row.error_file_id = keep(b, ev->error_file_id);
			if (ev->results_url)
				b->row.results_url = keep(b, ev->results_url);
			if (ev->kind == LLM_BATCH_ENDED)
			{
				b->row.failure = ev->failure ?
					keep(b, RedactProviderCString(ev->failure, b->row.route->provider)) : NULL;
				BatchStoreRecord(&b->row, NULL);
				b->results_step = 0;
				send_step(b, LLM_BATCH_RESULTS);
			}
			else if (!ev->cancelling && BatchStoreItemsLeft(b->row.id) == 0)
				send_step(b, LLM_BATCH_CANCEL); /* every item of it was removed */
			else
				poll_later(b);
			break;
		case LLM_BATCH_FOUND:
			b->row.provider_batch_id = keep(b, ev->id);
			BatchStoreRecord(&b->row, "submitted");
			send_step(b, LLM_BATCH_POLL);
			break;
		case LLM_BATCH_NOT_FOUND:
			b->lookup_after = keep(b, ev->lookup_after);
			if (b->lookup_after && ++b->lookup_page < LOOKUP_PAGES)
				send_step(b, LLM_BATCH_LOOKUP);
			else
				batch_send(b);
			break;
		case LLM_BATCH_RESULTS_IN:
			BatchStoreIngestFile(&b->row, b->download_path);
			unlink(b->download_path);
			b->results_step++;
			send_step(b, LLM_BATCH_RESULTS);
			break;
		case LLM_BATCH_CANCELLED:
			batch_finish(b, "cancelled", "every item of the batch was removed", false);
			break;
		case LLM_BATCH_UNREADABLE:
			elog(ERROR, "an unreadable batch answer was applied");
	}
}

/*
 * A batch's transfer finished: what it says, as an event (or what went
 * wrong, in *f: false).  A cancellation's answer, whatever it is, means
 * the batch is cancelled; a download's 2xx means its file is in.
 */
static bool
read_answer(BatchRun *b, HttpTransfer *t, LlmBatchEvent *ev, BatchFailure *f)
{
	bool		answered = t->outcome == HTTP_COMPLETE;
	bool		ok = answered && t->status >= 200 && t->status < 300;
	LlmErrorBody eb;

	memset(ev, 0, sizeof(LlmBatchEvent));
	memset(f, 0, sizeof(BatchFailure));
	if (b->step == LLM_BATCH_CANCEL)
	{
		ev->kind = LLM_BATCH_CANCELLED;
		return true;
	}
	if (ok && b->step == LLM_BATCH_RESULTS)
	{
		ev->kind = LLM_BATCH_RESULTS_IN;
		return true;
	}
	if (ok)
	{
		LlmBatchState s = state_of(b);

		ProviderBatchAnswer(b->row.kind, b->step, &s, t->data, t->len, ev);
		if (ev->kind != LLM_BATCH_UNREADABLE)
			return true;
	}

	/* what went wrong, in one line */
	f->status = t->status;
	f->timed_out = t->outcome == HTTP_TRANSPORT_ERROR && t->timed_out;
	f->retry = !(answered && !ok) || LlmRetryableStatus(t->status);
	if (ok)
		f->why = psprintf("HTTP %ld with an answer pg_llm cannot read", t->status);
	else if (t->outcome == HTTP_TRANSPORT_ERROR)
	{
		const char *cause = HttpCauseText(t);

		f->why = psprintf("%s%s%s", cause ? cause : "", cause ? ": " : "",
						  RedactProviderCString(t->errbuf, b->row.route->provider));
	}
	else if (t->outcome == HTTP_TOO_BIG)
		f->why = pstrdup("the answer exceeds llm.max_response_size");
	else
	{
		const LlmProvider *p = b->row.route->provider;

		ProviderParseError(t->data, t->len, &eb);
		f->why = psprintf("HTTP %ld%s%s%s%s%s", t->status, eb.message ? ": " : "",
						  eb.message ? RedactProviderCString(eb.message, p) : "",
						  eb.code || eb.type ? " (" : "",
						  eb.code || eb.type ? RedactProviderCString(eb.code ? eb.code : eb.type, p) : "",
						  eb.code || eb.type ? ")" : "");
	}
	return false;
}

/*
 * A batch's transfer finished: read the answer, release the transfer
 * (here, once), apply the event or the failure.  Errors are the batch's
 * own; the worker goes on, and the batch takes its next step again after
 * the poll interval.
 */
static void
batch_done(ItemSet *set, HttpTransfer *t)
{
	BatchRun   *b = (BatchRun *) t->user;
	HttpTransfer *volatile answer = t;

	RateLimitAfter(b->row.route, t, false);
	b->xfer = NULL;
	PG_TRY();
	{
		MemoryContext old = MemoryContextSwitchTo(b->ctx);
		LlmBatchEvent ev;
		BatchFailure f;
		bool		ok = read_answer(b, t, &ev, &f);

		/* inline results are read from the answer itself */
		if (!(ok && ev.kind == LLM_BATCH_ANSWERED))
		{
			HttpRelease(t);
			answer = NULL;
		}
		MemoryContextSwitchTo(old);
		if (ok)
			batch_apply(b, &ev, t);
		else
			batch_failed(b, &f);
	}
	PG_CATCH();
	{
		batch_error(psprintf("batch " INT64_FORMAT, b->row.id));
		if (b->xfer)
		{
			HttpRelease(b->xfer);
			b->xfer = NULL;
		}
		/* after the next poll interval, from a step that can be taken again */
		step_again_later(b);
		b->next_poll = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												   (int64) llm_batch_poll_interval * 1000);
	}
	PG_END_TRY();
	if (answer)
		HttpRelease(answer);
}

/* ---- forming ---- */

/* Inline batches in memory: each holds one of llm.worker_concurrency's slots. */
static int
inline_batches(void)
{
	dlist_iter	iter;
	int			n = 0;

	dlist_foreach(iter, &batches)
	{
		if (dlist_container(BatchRun, node, iter.cur)->row.kind->inline_results)
			n++;
	}
	return n;
}

/*
 * The models with batch items ready, and their batches: one for each
 * model and task (an inline batch for each llm.batch_size items, as many
 * as may be in flight).  An item whose model's first route (for an
 * embedding: the first with embeddings) has no batch API, or none that
 * takes embeddings, is sent realtime instead.  With full_only, only
 * batches that are full.
 */
static void
form_batches(bool full_only)
{
	int			i;
	int			nmodels;
	char	  **models;
	char	  **providers;		/* named at enqueue, or NULL */
	bool	   *embeds;			/* embeddings, or chat */

	ItemXactBegin("pg_llm: forming batches");
	models = BatchStoreReadyModels(&nmodels, &providers, &embeds);
	for (i = 0; i < nmodels; i++)
	{
		const LlmRoute *route = NULL;
		const LlmBatchOps *kind;
		int			n;
		ListCell   *lc;

		/*
		 * The batch goes to the provider its items were enqueued for, else
		 * to the model's first route.
		 */
		foreach(lc, ConfigRoutes(models[i]))
		{
			LlmRoute   *r = lfirst(lc);

			if (embeds[i] && r->provider->ops->embed_path == NULL)
				continue;		/* no embeddings there */
			if (providers[i] == NULL || strcmp(r->provider->name, providers[i]) == 0)
			{
				route = r;
				break;
			}
		}
		kind = route ? route->provider->batch : NULL;
		if (kind && embeds[i] && kind->embed_line == NULL)
			kind = NULL;
		if (kind == NULL)
		{
			/*
			 * Its provider has no batch API for the task (or the model no
			 * longer has a route there, which the realtime path says): it
			 * goes realtime.
			 */
			BatchStoreToRealtime(models[i], providers[i], embeds[i]);
			continue;
		}
		n = kind->max_requests > 0 ? kind->max_requests : llm_batch_size;
		for (;;)
		{
			char	   *token;
			int64		id;

			if (kind->inline_results && inline_batches() >= WorkerConcurrency)
				break;
			id = BatchStoreForm(models[i], providers[i], embeds[i], route, kind, n, full_only, &token);
			if (id == 0)
				break;
			batch_new(id, token, kind->name, models[i], route->provider->name,
					  route->upstream_model, embeds[i])->build = true;
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
		batch_error("forming batches");
	}
	PG_END_TRY();
}

/* Take up the batches a previous worker left unfinished (after a crash). */
static void
resume_batches(void)
{
	ListCell   *lc;

	ItemXactBegin("pg_llm: resuming batches");
	foreach(lc, BatchStoreUnfinished())
	{
		char	  **r = lfirst(lc);
		BatchRun   *volatile b = NULL;
		MemoryContext old;

		PG_TRY();
		{
			b = batch_new(strtoll(r[BS_ID], NULL, 10), r[BS_TOKEN], r[BS_KIND],
						  r[BS_MODEL], r[BS_PROVIDER], r[BS_UPSTREAM],
						  strcmp(r[BS_TASK], "embed") == 0);
		}
		PG_CATCH();
		{
			/* its model has no route any more: leave it for an administrator */
			FlushErrorState();
			continue;
		}
		PG_END_TRY();
		old = MemoryContextSwitchTo(b->ctx);
		b->row.provider_batch_id = r[BS_BATCH_ID] ? pstrdup(r[BS_BATCH_ID]) : NULL;
		b->row.input_file_id = r[BS_INPUT_FILE] ? pstrdup(r[BS_INPUT_FILE]) : NULL;
		b->row.output_file_id = r[BS_OUTPUT_FILE] ? pstrdup(r[BS_OUTPUT_FILE]) : NULL;
		b->row.error_file_id = r[BS_ERROR_FILE] ? pstrdup(r[BS_ERROR_FILE]) : NULL;
		b->row.results_url = r[BS_RESULTS_URL] ? pstrdup(r[BS_RESULTS_URL]) : NULL;
		MemoryContextSwitchTo(old);
		step_again_later(b);
		if (strcmp(r[BS_STATUS], "submitted") == 0 && b->row.provider_batch_id == NULL)
			b->build = true;
		elog(LOG, "pg_llm worker: resuming %s batch " INT64_FORMAT " (%s)", b->row.kind->name, b->row.id,
			 b->row.provider_batch_id ? b->row.provider_batch_id : "not yet created at the provider");
	}
	ItemXactEnd();
}

/* ---- the transport's callbacks ---- */

/* A batch's next request, when it is due; its errors are its own. */
static void
batch_step(BatchRun *b)
{
	PG_TRY();
	{
		if (b->build)
			batch_send(b);
		else
			send_step(b, b->step);
	}
	PG_CATCH();
	{
		batch_error(psprintf("batch " INT64_FORMAT, b->row.id));
		b->next_poll = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												   (int64) llm_batch_poll_interval * 1000);
	}
	PG_END_TRY();
}

/*
 * One pass of batch work: resume after a start, form new batches (every
 * llm.batch_poll_interval, at most every second when an enqueue woke the
 * worker, at once when a batch is done), send what is built, poll what is
 * due, each request in its turn under the provider's limits and
 * cooldowns.  Each batch's errors are its own.
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
		if (b->build && !b->row.kind->inline_results)
		{
			if (built_file)
				continue;
			built_file = true;
		}
		if (RateLimitAsk(b->row.route, 0, false, 0, &until, &why, &charged) != LLM_TURN_GO)
		{
			/* the provider's pace, or its cooldown: its turn comes later */
			b->next_poll = until > now ? until : TimestampTzPlusMilliseconds(now, 1000);
			continue;
		}
		batch_step(b);
	}
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
	.done = batch_done,
	.next_due = batch_next_due,
	.stop = batch_stop,
};
