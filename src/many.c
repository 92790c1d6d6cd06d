/*-------------------------------------------------------------------------
 *
 * many.c
 *	  llm.chat_many(prompts text[], model, system, options): many calls
 *	  from one statement, run concurrently on the process's curl multi
 *	  handle, one row per prompt as it completes.
 *
 *	  Up to llm.many_concurrency calls are in flight; each is set up (its
 *	  request, its budget reservation, its usage record) when its turn to
 *	  be sent comes, and freed when its row has been returned, so ten
 *	  thousand prompts hold memory for the calls in flight only.  Each
 *	  call has the synchronous path's retries and fallback chain and waits
 *	  its turn under the cluster's limits and cooldowns without holding
 *	  up the others.  A prompt that fails for good gives a row with its
 *	  error; an empty prompt gives a row with an error too, and a NULL
 *	  prompt a row with neither reply nor error (nothing is sent).  A
 *	  cancel, statement_timeout, an exhausted budget or a bad argument end
 *	  the statement: the transfers in flight are closed at once.
 *
 *	  Called in the select list, rows leave as they complete (the output is
 *	  flushed before each wait on the providers, as for chat_stream); in
 *	  FROM, PostgreSQL collects them first.  Their order is the order of
 *	  completion; "ord" is the prompt's place in the array.
 *
 *	  llm.embed_many (embed.c) runs its requests the same way: the tie of
 *	  open transfers to the statement's ways out (ManyHoldStart) and the
 *	  wait on the providers between rows (ManyWait) are this file's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "catalog/pg_type.h"
#include "utils/guc.h"
#include "funcapi.h"
#include "libpq/libpq.h"
#include "miscadmin.h"
#include "tcop/dest.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "cache.h"
#include "call.h"
#include "chat.h"
#include "config.h"
#include "http.h"
#include "request.h"
#include "usage.h"

PG_FUNCTION_INFO_V1(pg_llm_chat_many);

int			llm_many_concurrency = 50;

typedef enum ManyState
{
	MANY_NEW,					/* not started */
	MANY_READY,					/* set up, to be sent at not_before */
	MANY_IN_FLIGHT,
	MANY_FINISHED,				/* its row waits to be returned */
	MANY_RETURNED
} ManyState;

typedef struct ManyItem
{
	int			ord;			/* 1-based place in the array */
	ManyState	state;
	char	   *prompt;			/* UTF-8, not terminated; NULL for a NULL element */
	size_t		prompt_len;
	MemoryContext ctx;			/* the call's memory until its row is out */
	LlmCall    *call;
	HttpTransfer *xfer;
	TimestampTz not_before;
	char	   *content;		/* UTF-8 */
	char	   *error;			/* server encoding */
	int			asked;			/* answers judged against json_schema */
	bool		cache_wait;		/* an identical call is in flight */
	int			next_finished;	/* the queue of finished items */
} ManyItem;

typedef struct ManyRun
{
	ManyItem   *items;
	int			n;
	int			next_new;		/* the first item not started */
	bool		any_waiting;	/* a started item may wait to be sent again */
	int			in_flight;
	int			concurrency;
	int			finished_head;	/* rows to return, in completion order */
	int			finished_tail;
	int			returned;
	char	   *model;
	char	   *system;			/* UTF-8 */
	char	   *options;		/* UTF-8 */
	MemoryContext ctx;			/* the SRF's multi-call context */
	ManyHold	hold;
	bool		released;
} ManyRun;

/* Close every transfer still open; from every way out (idempotent). */
static void
many_release(void *arg)
{
	ManyRun    *run = (ManyRun *) arg;
	int			i;

	if (run->released)
		return;
	run->released = true;
	for (i = 0; i < run->n; i++)
		if (run->items[i].xfer)
		{
			HttpRelease(run->items[i].xfer);
			run->items[i].xfer = NULL;
		}
	HttpWatchClient(PGINVALID_SOCKET, false);
}

static void
hold_reset_cb(void *arg)
{
	ManyHold   *hold = (ManyHold *) arg;

	hold->release(hold->arg);
}

static void
hold_shutdown_cb(Datum arg)
{
	ManyHold   *hold = (ManyHold *) DatumGetPointer(arg);

	hold->release(hold->arg);
}

/*
 * Tie release(arg) to every way out of a set-returning function that
 * keeps transfers open between its rows (chat_many, embed_many): an error
 * (the reset of ctx, its multi-call context), a stop before the last row
 * (LIMIT: the shutdown of its expression context) and the last row
 * (ManyHoldEnd).  release must be idempotent.
 */
void
ManyHoldStart(ManyHold *hold, FunctionCallInfo fcinfo, MemoryContext ctx,
			  void (*release) (void *arg), void *arg)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	hold->release = release;
	hold->arg = arg;
	hold->econtext = NULL;
	hold->reset_cb.func = hold_reset_cb;
	hold->reset_cb.arg = hold;
	MemoryContextRegisterResetCallback(ctx, &hold->reset_cb);
	if (rsinfo && IsA(rsinfo, ReturnSetInfo) && rsinfo->econtext)
	{
		hold->econtext = rsinfo->econtext;
		RegisterExprContextCallback(rsinfo->econtext, hold_shutdown_cb, PointerGetDatum(hold));
	}
}

/* The last row is out: release now, the expression context has no more to do. */
void
ManyHoldEnd(ManyHold *hold)
{
	hold->release(hold->arg);
	if (hold->econtext)
		UnregisterExprContextCallback(hold->econtext, hold_shutdown_cb, PointerGetDatum(hold));
}

/*
 * One wait on the providers of a statement that runs many calls at once
 * (chat_many, embed_many), when no row is ready: the rows returned so far
 * (rows_out) leave first, a cancel or a client gone ends the statement,
 * then the wait lasts until a transfer ends, a second passes or next_due
 * (0: none) comes; with nothing in flight and nothing due it only looks.
 */
void
ManyWait(bool rows_out, int in_flight, TimestampTz next_due)
{
	long		timeout = 1000;

	/* what the client has not seen yet goes now; a client gone ends it */
	if (rows_out && whereToSendOutput == DestRemote)
		pq_flush_if_writable();
	CHECK_FOR_INTERRUPTS();
	if (next_due)
		timeout = Min(timeout, Max(TimestampDifferenceMilliseconds(GetCurrentTimestamp(), next_due), 1));
	HttpWatchClient(HttpClientSocket(), false);
	(void) HttpPoll(in_flight > 0 || next_due ? timeout : 0);
}

/* An item is finished: queue its row. */
static void
many_finish(ManyRun *run, ManyItem *it)
{
	it->state = MANY_FINISHED;
	it->next_finished = -1;
	if (run->finished_tail >= 0)
		run->items[run->finished_tail].next_finished = it->ord - 1;
	else
		run->finished_head = it->ord - 1;
	run->finished_tail = it->ord - 1;
}

/* An item fails for good, with a message (in the server encoding). */
static void
many_fail(ManyRun *run, ManyItem *it, const char *error, LlmOutcome outcome)
{
	MemoryContext old = MemoryContextSwitchTo(it->ctx ? it->ctx : run->ctx);

	it->error = pstrdup(error);
	if (it->call)
	{
		it->call->error = it->error;
		CacheAbandon(it->call);
		UsageRecord(it->call, outcome);
	}
	MemoryContextSwitchTo(old);
	many_finish(run, it);
}

/*
 * Serve a READY item from the response cache, or from an identical call
 * in flight (in this statement or another session): its row is then
 * finished.  While that call is with its provider the item waits
 * (cache_wait), looked at again every CACHE_POLL_MS (the other call's
 * end sets our latch, which ends the wait on the providers early).
 */
#define CACHE_POLL_MS 5

static void
many_cached(ManyRun *run, ManyItem *it)
{
	MemoryContext old = MemoryContextSwitchTo(it->ctx);

	switch (CacheCheck(it->call, CACHE_TEXT, false))
	{
		case CACHE_HIT:
			it->cache_wait = false;
			it->content = it->call->reply.content;
			UsageRecord(it->call, LLM_OUTCOME_CACHE);
			many_finish(run, it);
			break;
		case CACHE_WAIT:
			it->cache_wait = true;
			it->not_before = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), CACHE_POLL_MS);
			run->any_waiting = true;
			break;
		default:
			it->cache_wait = false;
			break;
	}
	MemoryContextSwitchTo(old);
}

/*
 * Set an item up: its request and call, with its budget reserved.  A
 * NULL or empty prompt is the item's own error; an exhausted budget ends
 * the statement.
 */
static void
many_setup(ManyRun *run, ManyItem *it)
{
	MemoryContext old;
	LlmRequest *req;

	if (it->prompt == NULL)
	{
		/* NULL in, NULL out: a row with neither reply nor error */
		many_finish(run, it);
		return;
	}
	if (LlmBlank(it->prompt, it->prompt_len))
	{
		many_fail(run, it, "prompt must not be empty", LLM_OUTCOME_ERROR);
		return;
	}
	it->ctx = AllocSetContextCreate(run->ctx, "pg_llm chat_many call", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(it->ctx);
	req = RequestFromPromptText(it->prompt, it->prompt_len, run->system,
								run->system ? strlen(run->system) : 0, run->options);
	it->call = LlmCallCreate(req, run->model, LLM_MODE_MANY);
	UsageBegin(it->call, GetUserId(),
			   it->prompt_len + (run->system ? strlen(run->system) : 0) +
			   (run->options ? strlen(run->options) : 0),
			   RequestMaxTokens(req));
	MemoryContextSwitchTo(old);
	it->state = MANY_READY;
	many_cached(run, it);
}

/* Send an item when it is its route's turn; else it waits, READY. */
static void
many_send(ManyRun *run, ManyItem *it)
{
	MemoryContext old;
	LlmFailure	f;
	TimestampTz not_before;

	if (it->cache_wait && (many_cached(run, it), it->state != MANY_READY || it->cache_wait))
		return;
	old = MemoryContextSwitchTo(it->ctx);
	if (LlmCallTurn(it->call, &not_before, &f))
	{
		it->xfer = LlmSendAttempt(it->call, LlmCallRoute(it->call), false);
		it->xfer->user = it;
		it->state = MANY_IN_FLIGHT;
		run->in_flight++;
	}
	else if (not_before)
		it->not_before = not_before;
	else
		many_fail(run, it, LlmFailureText(&f), LLM_OUTCOME_ERROR);
	MemoryContextSwitchTo(old);
}

/*
 * A reply to a request with json_schema: the validated answer is the
 * item's content; an invalid one is asked for again (a new call, sent as
 * soon as the item's turn comes), up to llm.validation_retries times,
 * then the item fails with where and why.
 */
static void
many_shaped(ManyRun *run, ManyItem *it)
{
	LlmShapeResult res;
	LlmFailure	f;

	it->asked++;
	if (LlmReplyRefused(it->call, &f))
	{
		/* not asked again: the same prompt gets the same refusal */
		many_fail(run, it, LlmFailureText(&f), LLM_OUTCOME_REFUSED);
		return;
	}
	if (ShapeJudge(it->call, &res))
	{
		it->content = res.json;
		many_finish(run, it);
		return;
	}
	if (it->asked > llm_validation_retries)
	{
		many_fail(run, it, psprintf("answer of provider \"%s\" does not match the JSON schema: %s",
									it->call->route->provider->name,
									ShapeFailureDetail(it->call, it->asked, &res)),
				  LLM_OUTCOME_INVALID);
		return;
	}
	it->call = ShapeAskAgain(it->call, &res);
	it->state = MANY_READY;
	it->not_before = 0;
	run->any_waiting = true;
}

/* A transfer of an item finished: done, again later, or failed. */
static void
many_judge(ManyRun *run, ManyItem *it)
{
	MemoryContext old = MemoryContextSwitchTo(it->ctx);
	LlmFailure	f;
	TimestampTz not_before;
	LlmStep		step = LlmCallStep(it->call, it->xfer, false, &f, &not_before);

	HttpRelease(it->xfer);
	it->xfer = NULL;
	run->in_flight--;
	switch (step)
	{
		case LLM_STEP_DONE:
			if (RequestHasSchema(it->call->req))
				many_shaped(run, it);
			else
			{
				const char *content = it->call->reply.content;
				LlmOutcome	outcome = LlmJudgeText(it->call, content && content[0] != '\0', &f);

				if (outcome != LLM_OUTCOME_OK)
					many_fail(run, it, LlmFailureText(&f), outcome);
				else
				{
					it->content = it->call->reply.content;
					CacheKeep(it->call, it->content);
					UsageRecord(it->call, LLM_OUTCOME_OK);
					many_finish(run, it);
				}
			}
			break;
		case LLM_STEP_AGAIN:
			it->state = MANY_READY;
			it->not_before = not_before;
			run->any_waiting = true;
			break;
		case LLM_STEP_FAILED:
		case LLM_STEP_SPENT:
			many_fail(run, it, LlmFailureText(&f), LLM_OUTCOME_ERROR);
			break;
	}
	MemoryContextSwitchTo(old);
}

/*
 * Start and send what may go now; returns the time the next waiting item
 * is due (0: none).
 */
static TimestampTz
many_fill(ManyRun *run)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz next_due = 0;
	int			i;

	/*
	 * Retries and turns that came due first (looked for only when a
	 * started item was left waiting, so that a run stays linear in its
	 * prompts), then new prompts.
	 */
	if (run->any_waiting)
	{
		run->any_waiting = false;
		for (i = 0; i < run->next_new; i++)
		{
			ManyItem   *it = &run->items[i];

			if (it->state != MANY_READY)
				continue;
			run->any_waiting = true;
			if (run->in_flight >= run->concurrency)
				break;
			if (it->not_before > now)
			{
				if (next_due == 0 || it->not_before < next_due)
					next_due = it->not_before;
				continue;
			}
			many_send(run, it);
			if (it->state == MANY_READY && it->not_before > now &&
				(next_due == 0 || it->not_before < next_due))
				next_due = it->not_before;
		}
	}
	while (run->next_new < run->n && run->in_flight < run->concurrency)
	{
		ManyItem   *it = &run->items[run->next_new++];

		many_setup(run, it);
		if (it->state == MANY_READY)
		{
			if (!it->cache_wait)
				many_send(run, it);
			if (it->state == MANY_READY)
			{
				run->any_waiting = true;
				if (next_due == 0 || it->not_before < next_due)
					next_due = it->not_before;
			}
		}
	}
	return next_due;
}

/*
 * The next finished item, waiting on the providers for one if need be;
 * NULL when every row has been returned.
 */
static ManyItem *
many_next(ManyRun *run)
{
	for (;;)
	{
		TimestampTz next_due;
		HttpTransfer *t;

		if (run->finished_head >= 0)
		{
			ManyItem   *it = &run->items[run->finished_head];

			run->finished_head = it->next_finished;
			if (run->finished_head < 0)
				run->finished_tail = -1;
			return it;
		}
		if (run->returned >= run->n)
			return NULL;
		next_due = many_fill(run);
		if (run->finished_head >= 0)
			continue;
		ManyWait(run->returned > 0, run->in_flight, next_due);
		while ((t = HttpNextDone()) != NULL)
		{
			ManyItem   *it = (ManyItem *) t->user;

			if (it && it >= run->items && it < run->items + run->n && it->xfer == t)
				many_judge(run, it);
		}
	}
}

/* The tuple of an item's row; frees the item's call. */
static Datum
many_row(FuncCallContext *funcctx, ManyRun *run, ManyItem *it)
{
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	HeapTuple	tuple;

	values[0] = Int32GetDatum(it->ord);
	if (it->content)
		values[1] = CStringGetTextDatum(LlmToServerEncoding(it->content, strlen(it->content)));
	else
		nulls[1] = true;
	if (it->error)
		values[2] = CStringGetTextDatum(it->error);
	else
		nulls[2] = true;
	tuple = heap_form_tuple(funcctx->tuple_desc, values, nulls);
	it->state = MANY_RETURNED;
	it->content = NULL;
	it->error = NULL;
	if (it->ctx)
	{
		MemoryContextDelete(it->ctx);
		it->ctx = NULL;
		it->call = NULL;
	}
	run->returned++;
	return HeapTupleGetDatum(tuple);
}

/* The arguments, checked once for the whole statement. */
static ManyRun *
many_start(FunctionCallInfo fcinfo, MemoryContext ctx)
{
	ManyRun    *run = palloc0(sizeof(ManyRun));
	Datum	   *elems;
	bool	   *elem_nulls;
	int			n;
	int			i;
	char	   *model = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));

	n = LlmArgTextArray(fcinfo, 0, "prompts", "Pass an array of prompts, such as array_agg(body).",
						&elems, &elem_nulls);
	if (llm_many_concurrency < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("llm.many_concurrency must be at least 1")));

	run->ctx = ctx;
	run->n = n;
	run->items = palloc0(sizeof(ManyItem) * Max(n, 1));
	run->finished_head = run->finished_tail = -1;
	/* room for that many sockets, or a clear error now */
	run->concurrency = HttpReserve(llm_many_concurrency, "llm.many_concurrency", ERROR);
	run->system = PG_ARGISNULL(2) ? NULL : LlmToUtf8(text_to_cstring(PG_GETARG_TEXT_PP(2)));
	run->options = LlmArgJsonb(fcinfo, 3);
	run->model = pstrdup(LlmResolveModel(model, NULL));

	/* a bad option or model fails the statement before anything is sent */
	(void) RequestFromPrompt("x", run->system, run->options);
	(void) ConfigRoutes(run->model);

	for (i = 0; i < n; i++)
	{
		run->items[i].ord = i + 1;
		run->items[i].state = MANY_NEW;
		if (elem_nulls[i])
			continue;
		/* the array's own text, not a copy (in UTF-8 already, unless converted) */
		run->items[i].prompt = LlmTextToUtf8(DatumGetTextPP(elems[i]), &run->items[i].prompt_len);
	}
	return run;
}

/*
 * llm.chat_many(prompts text[], model text, system text, options jsonb)
 * returns table (ord int, content text, error text).
 */
Datum
pg_llm_chat_many(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	ManyRun    *run;
	ManyItem   *it;

	if (SRF_IS_FIRSTCALL())
	{
		MemoryContext old;
		TupleDesc	tupdesc;

		funcctx = SRF_FIRSTCALL_INIT();
		old = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		funcctx->tuple_desc = BlessTupleDesc(tupdesc);
		run = many_start(fcinfo, funcctx->multi_call_memory_ctx);
		ManyHoldStart(&run->hold, fcinfo, funcctx->multi_call_memory_ctx, many_release, run);
		funcctx->user_fctx = run;
		MemoryContextSwitchTo(old);
	}

	funcctx = SRF_PERCALL_SETUP();
	run = (ManyRun *) funcctx->user_fctx;
	it = many_next(run);
	if (it == NULL)
	{
		ManyHoldEnd(&run->hold);
		SRF_RETURN_DONE(funcctx);
	}
	SRF_RETURN_NEXT(funcctx, many_row(funcctx, run, it));
}

/* The setting of llm.chat_many: its calls in flight. */
void
ManyDefineSettings(void)
{
	DefineCustomIntVariable("llm.many_concurrency",
							"Calls llm.chat_many keeps in flight at once.",
							"SET LOCAL it for one statement.",
							&llm_many_concurrency, 50, 1, 1000,
							PGC_USERSET, 0, NULL, NULL, NULL);
}
