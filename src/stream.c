/*-------------------------------------------------------------------------
 *
 * stream.c
 *	  llm.chat_stream(): a value-per-call set-returning function that
 *	  returns the reply one chunk per row while the provider generates it.
 *
 *	  Rows leave as they are made: before each wait on the provider's
 *	  socket the output buffer is flushed (pq_flush_if_writable), so a
 *	  client fetching row by row sees the previous chunk at once.  This
 *	  only works in the select list; in FROM, PostgreSQL materializes the
 *	  whole set first.
 *
 *	  The transfer and the SSE parser are released on every way out: the
 *	  last row (SRF_RETURN_DONE), an early stop such as LIMIT (the
 *	  expression context's shutdown callback), and an error (the reset
 *	  callback of the SRF's memory context, which goes with the aborted
 *	  query).  Retries and fallback happen only before the first row; a
 *	  stream cut short after that raises an error after the rows already
 *	  returned, never a silently short reply.
 *
 *	  A NULL prompt gives one NULL row (a row of the query stays a row).
 *	  With on_error "null", a stream that fails gives a NULL row after the
 *	  rows already returned (none, if it failed before its first) and a
 *	  WARNING naming the error, and the query goes on.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "funcapi.h"
#include "libpq/libpq.h"
#include "libpq/libpq-be.h"
#include "miscadmin.h"
#include "tcop/dest.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "cache.h"
#include "call.h"
#include "chat.h"
#include "http.h"
#include "provider.h"
#include "redact.h"
#include "sse.h"
#include "tokens.h"
#include "usage.h"

PG_FUNCTION_INFO_V1(pg_llm_chat_stream);

typedef struct StreamState
{
	LlmCall    *call;
	SseParser	parser;
	bool		parser_live;
	LlmStreamDecoder dec;
	MemoryContext ctx;			/* the SRF's multi-call context */
	ExprContext *econtext;		/* where the shutdown callback is registered */
	MemoryContextCallback reset_cb;
	int64		rows;			/* rows returned so far */
	int			body_retries;	/* streams started again before any row */
	int			next_piece;		/* next of dec.pieces to return */
	bool		checked_type;	/* the Content-Type has been looked at */
	bool		whole_reply;	/* a JSON reply came instead: call->reply */
	bool		released;
	bool		null_row;		/* the next row is NULL, and the last */
	bool		done;			/* no row is left */
	LlmOutcome	outcome;		/* recorded when the stream is released */
	bool		hit;			/* served by the response cache: one row */
	StringInfoData text;		/* the reply so far, for the cache (UTF-8) */
} StreamState;

static void stream_delivered(StreamState *st, const char *piece);

/*
 * What the stream said so far, as the call's reply: its usage (the last
 * value of each count), how it ended, a refusal, tool calls.
 */
static void
stream_reply(StreamState *st)
{
	LlmReply   *r = &st->call->reply;

	if (st->whole_reply)
		return;
	ProviderReplySetUsage(r, &st->dec.usage);
	r->usage_invalid = st->dec.usage_invalid;
	r->finish_reason = st->dec.finish_reason;
	r->stop_reason = st->dec.stop_reason;
	r->refusal = st->dec.refusal;
	r->tool_calls = st->dec.tool_calls;
}

/*
 * Free the transfer and the parser.  Runs from the memory context reset
 * callback (errors), the expression context shutdown (LIMIT) and the end
 * of the stream, so it must be idempotent.
 */
static void
stream_release(StreamState *st)
{
	if (st->released)
		return;
	st->released = true;
	if (st->call && st->outcome != LLM_OUTCOME_OK && st->outcome != LLM_OUTCOME_CACHE)
		CacheAbandon(st->call);
	if (st->call && st->call->accounted && !st->call->usage_recorded)
	{
		ListCell   *lc;
		int			i = 0;

		stream_reply(st);
		st->call->cut_short = !st->dec.finished && !st->dec.saw_finish_reason;
		/* text received but not returned (LIMIT stopped it) was paid for too */
		foreach(lc, st->dec.pieces)
		{
			if (i++ >= st->next_piece)
				stream_delivered(st, (char *) lfirst(lc));
		}
		UsageRecord(st->call, st->outcome);
	}
	if (st->call && st->call->xfer)
		HttpRelease(st->call->xfer);
	if (st->parser_live)
		SseFree(&st->parser);
	st->parser_live = false;
	HttpWatchClient(PGINVALID_SOCKET, false);
}

static void stream_fail(StreamState *st, int sqlstate, const char *what,
						const char *detail);
static void stream_raise(StreamState *st, const LlmFailure *f, LlmOutcome outcome);

/*
 * A piece of the reply received: its bytes, and its tokens as every
 * estimate counts them (tokens.c), for the usage of a stream without the
 * provider's count.
 */
static void
stream_delivered(StreamState *st, const char *piece)
{
	size_t		n = strlen(piece);

	st->call->delivered_bytes += n;
	st->call->delivered_tokens += TokensEstimate(piece, n);
}

static void
stream_reset_cb(void *arg)
{
	stream_release((StreamState *) arg);
}

static void
stream_shutdown_cb(Datum arg)
{
	stream_release((StreamState *) DatumGetPointer(arg));
}

/* One SSE event: hand it to the protocol's decoder. */
static int
stream_event_cb(void *arg, const SseEvent *ev)
{
	StreamState *st = (StreamState *) arg;

	ProviderStreamEvent(&st->dec, ev->type, ev->data, ev->data_len);
	/* stop parsing at an error or the end marker; nothing after counts */
	return (st->dec.error || st->dec.finished) ? 1 : 0;
}

/*
 * A stream that failed before it returned any row can be started again,
 * like any failed attempt: nothing was shown to the client yet.  The call
 * engine decides, with the route's retry limit and fallback chain.  After
 * the first row, never.  Returns true when a new stream is open.
 */
static bool
stream_retry(StreamState *st, LlmVerdict v, const LlmFailure *failure)
{
	LlmFailure	f;
	long		delay;

	if (st->rows > 0)
		return false;
	if (failure)
		f = *failure;
	else
	{
		HttpTransfer *t = st->call->xfer;

		/* what happened, for the attempt's usage row */
		memset(&f, 0, sizeof(f));
		f.retry_after_s = -1;
		f.message = psprintf("stream from provider \"%s\" %s", st->call->route->provider->name,
							 t && t->outcome == HTTP_TRANSPORT_ERROR ?
							 (t->timed_out ? "went quiet for longer than llm.stream_idle_timeout" : "was cut off") :
							 "ended before its end marker");
	}
	switch (LlmCallDecide(st->call, v, &f, &delay))
	{
		case LLM_NEXT_RETRY:
			LlmSleepMs(delay);
			break;
		case LLM_NEXT_ROUTE:
			break;
		case LLM_NEXT_GIVE_UP:
			return false;
	}
	HttpRelease(st->call->xfer);
	SseReset(&st->parser);
	list_free_deep(st->dec.pieces);
	st->next_piece = 0;
	LlmCallOpenStream(st->call);
	HttpSetOwnerRef(st->call->xfer, &st->call->xfer);
	ProviderDecoderInit(&st->dec, st->call->route->provider->ops);
	st->checked_type = false;
	st->whole_reply = false;
	return true;
}

/*
 * The provider answered the stream request with a 200 that is not SSE.
 * A whole JSON reply (a server that ignores "stream") is read as one and
 * returned as a single row; anything else is an error naming what came.
 */
static void
stream_not_sse(StreamState *st)
{
	HttpTransfer *t = st->call->xfer;
	LlmReply	reply;
	char	   *problem = NULL;

	HttpWaitDone(t);
	if (t->outcome == HTTP_COMPLETE &&
		pg_strncasecmp(t->content_type, "application/json", 16) == 0 &&
		ProviderParseReply(st->call->route, t->data + t->consumed, t->len - t->consumed,
						   false, &reply, &problem) &&
		reply.content != NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(st->ctx);

		elog(LOG, "pg_llm: provider \"%s\" answered a stream request with a whole JSON reply; returned as one row",
			 st->call->route->provider->name);
		/* the reply read again in the stream's memory: it outlives this row */
		(void) ProviderParseReply(st->call->route, t->data + t->consumed, t->len - t->consumed,
								  false, &st->call->reply, &problem);
		MemoryContextSwitchTo(old);
		st->whole_reply = true;
		if (reply.content[0] != '\0')
			st->dec.pieces = list_make1(MemoryContextStrdup(st->ctx, reply.content));
		st->dec.finished = true;
		HttpConsume(t, t->len - t->consumed);
		return;
	}
	if (stream_retry(st, LLM_VERDICT_RETRY, NULL))
		return;
	stream_fail(st, ERRCODE_INVALID_JSON_TEXT, "is not an event stream",
				psprintf("The provider answered with Content-Type \"%s\" instead of text/event-stream%s",
						 t->content_type[0] ? RedactProviderCString(t->content_type, st->call->route->provider) : "(none)",
						 problem ? psprintf(" (%s)", problem) : "."));
}

/* Raise the error for a stream that failed after it started. */
static void
stream_fail(StreamState *st, int sqlstate, const char *what, const char *detail)
{
	LlmFailure	f;

	memset(&f, 0, sizeof(f));
	f.sqlstate = sqlstate;
	f.message = psprintf("stream from provider \"%s\" %s", st->call->route->provider->name, what);
	f.detail = detail ? pstrdup(detail) : NULL;
	stream_raise(st, &f, LLM_OUTCOME_ERROR);
}

/*
 * Raise a failure of the stream, after the rows already returned: the
 * detail says how many; the hint is the failure's own, or else that the
 * rows are an incomplete reply.  The usage row records the outcome.
 */
static void
stream_raise(StreamState *st, const LlmFailure *f, LlmOutcome outcome)
{
	int64		rows = st->rows;
	const char *hint = f->hint;
	char	   *message = pstrdup(f->message);
	char	   *detail = f->detail ? pstrdup(f->detail) : NULL;
	int			sqlstate = f->sqlstate;

	hint = pstrdup(hint ? hint :
				   "The rows already returned are an incomplete reply; call again to get a whole one.");
	st->outcome = outcome;
	st->call->error = message;
	stream_release(st);
	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg("%s", message),
			 errdetail("%s%s" INT64_FORMAT " chunk%s had been returned.",
					   detail ? detail : "", detail ? " " : "", rows, rows == 1 ? "" : "s"),
			 errhint("%s", hint)));
}

/*
 * The stream ended as the protocol says it should: is what it said a
 * reply (LlmJudgeText, as for every path)?  A refusal, a tool call, a
 * paused turn or no text at all is raised after the rows already
 * returned, and recorded as what it is.
 */
static void
stream_ended(StreamState *st)
{
	LlmFailure	f;
	LlmOutcome	outcome;

	stream_reply(st);
	outcome = LlmJudgeText(st->call, st->rows > 0, &f);
	if (outcome != LLM_OUTCOME_OK)
		stream_raise(st, &f, outcome);
	st->outcome = LLM_OUTCOME_OK;
	/* a whole reply asked to be cached is kept (not one cut short) */
	if (st->call->cache && st->text.data)
		CacheKeep(st->call, st->text.data);
	/* the last row should not wait for the end of the query */
	if (st->rows > 0 && whereToSendOutput == DestRemote)
		pq_flush_if_writable();
}

/*
 * Feed the bytes received so far to the parser.  Runs outside any curl
 * callback, so the decoder may palloc and the parser's errors may be
 * raised here.
 */
static void
stream_feed(StreamState *st)
{
	HttpTransfer *t = st->call->xfer;
	size_t		n = t->len - t->consumed;
	int			rc;
	MemoryContext old;

	if (n == 0)
		return;
	old = MemoryContextSwitchTo(st->ctx);
	rc = SseFeed(&st->parser, t->data + t->consumed, n);
	MemoryContextSwitchTo(old);
	HttpConsume(t, n);
	if (rc == SSE_ERR_TOO_BIG)
		stream_fail(st, ERRCODE_PROGRAM_LIMIT_EXCEEDED, "sent an event over llm.max_response_size", NULL);
	if (rc == SSE_ERR_NOMEM)
		stream_fail(st, ERRCODE_OUT_OF_MEMORY, "could not be parsed: out of memory", NULL);
}

/*
 * The next chunk of text, or NULL at the end of the stream.  Blocks on the
 * provider only when no decoded chunk is waiting; before blocking it
 * flushes the rows already produced to the client.
 */
static char *
stream_next(StreamState *st)
{
	for (;;)
	{
		HttpTransfer *t = st->call->xfer;

		if (st->dec.pieces != NIL)
		{
			/* hand out in order; drop the list when all are out (no O(n) shifts) */
			char	   *piece = list_nth(st->dec.pieces, st->next_piece++);

			if (st->next_piece >= list_length(st->dec.pieces))
			{
				list_free(st->dec.pieces);
				st->dec.pieces = NIL;
				st->next_piece = 0;
			}
			return piece;
		}
		if (st->dec.error)
		{
			LlmFailure	f;
			LlmVerdict	v = LlmJudgeStreamError(st->call, &st->dec.error_body,
												st->dec.error, &f);

			LlmCallAfterStreamError(st->call, &f);
			if (stream_retry(st, v, &f))
				continue;
			if (st->rows > 0)
				f.hint = NULL;
			stream_raise(st, &f, LLM_OUTCOME_ERROR);
		}
		if (st->dec.finished)
		{
			stream_ended(st);
			return NULL;
		}
		if (t == NULL)
			elog(ERROR, "stream transfer released while in use");

		if (t->outcome != HTTP_RUNNING && t->len == t->consumed)
		{
			/* the connection ended without the protocol's end marker */
			SseFinish(&st->parser);
			if (t->outcome == HTTP_COMPLETE && st->dec.saw_finish_reason)
			{
				/* some llama.cpp forks end this way after a finish_reason */
				elog(LOG, "pg_llm: stream from provider \"%s\" ended without its end marker after a finish reason; accepted as complete",
					 st->call->route->provider->name);
				stream_ended(st);
				return NULL;
			}
			if (t->outcome == HTTP_TOO_BIG)
				stream_fail(st, ERRCODE_PROGRAM_LIMIT_EXCEEDED, "exceeded llm.max_response_size", NULL);
			if (stream_retry(st, LLM_VERDICT_RETRY, NULL))
				continue;
			if (t->outcome == HTTP_TRANSPORT_ERROR)
				stream_fail(st, ERRCODE_CONNECTION_FAILURE,
							t->timed_out ? "went quiet for longer than llm.stream_idle_timeout" : "was cut off",
							psprintf("%s.", RedactProviderCString(t->errbuf, st->call->route->provider)));
			if (st->rows == 0 && pg_strncasecmp(t->content_type, "text/event-stream", 17) != 0)
				stream_fail(st, ERRCODE_INVALID_JSON_TEXT, "is not an event stream",
							psprintf("The provider answered with Content-Type \"%s\" instead of text/event-stream.",
									 t->content_type[0] ? RedactProviderCString(t->content_type, st->call->route->provider) : "(none)"));
			stream_fail(st, ERRCODE_CONNECTION_FAILURE, "ended before its end marker",
						"The connection closed cleanly but the reply was not finished.");
		}

		if (t->len == t->consumed)
		{
			/*
			 * Send what the client has not seen yet, then wait.  What a
			 * slow client cannot take now leaves when its socket becomes
			 * writable, not with the next chunk.  A client that went away
			 * (the flush failed, or its socket hung up while we wait) ends
			 * the stream now: nobody reads the rest, and the provider
			 * bills for it.
			 */
			pgsocket	client = HttpClientSocket();

			if (st->rows > 0 && whereToSendOutput == DestRemote)
			{
				pq_flush_if_writable();
				while (pq_is_send_pending() && t->outcome == HTTP_RUNNING &&
					   t->len == t->consumed)
				{
					HttpWatchClient(client, true);
					HttpPoll(-1);
					pq_flush_if_writable();
				}
			}
			CHECK_FOR_INTERRUPTS();
			HttpWatchClient(client, false);
			HttpWaitData(t);
			HttpWatchClient(PGINVALID_SOCKET, false);
		}
		if (!st->checked_type && t->len > t->consumed)
		{
			st->checked_type = true;
			if (pg_strncasecmp(t->content_type, "text/event-stream", 17) != 0 &&
				pg_strncasecmp(t->content_type, "application/json", 16) == 0)
			{
				stream_not_sse(st);
				continue;
			}
		}
		stream_feed(st);
	}
}

/* Open the stream (its prompt and budget checked first). */
static void
stream_open(void *arg)
{
	StreamState *st = (StreamState *) arg;

	LlmCallBegin(st->call);
	/* streams are cached only when the call asks (option cache) */
	for (;;)
	{
		CacheResult c = CacheCheck(st->call, CACHE_TEXT, true);

		if (c == CACHE_HIT)
		{
			/* the whole reply as one row; the stream says nothing more */
			st->hit = true;
			st->whole_reply = true;
			st->dec.finished = true;
			st->outcome = LLM_OUTCOME_CACHE;
			return;
		}
		if (c != CACHE_WAIT)
		{
			if (c == CACHE_MISS)
				initStringInfo(&st->text);
			break;
		}
		CacheWaitLatch(100);
	}
	LlmCallOpenStream(st->call);
	HttpSetOwnerRef(st->call->xfer, &st->call->xfer);
	ProviderDecoderInit(&st->dec, st->call->route->provider->ops);
}

/* The next chunk, run inside LlmTry when on_error is "null". */
typedef struct StreamNext
{
	StreamState *st;
	char	   *piece;
} StreamNext;

static void
stream_next_try(void *arg)
{
	StreamNext *n = (StreamNext *) arg;

	n->piece = stream_next(n->st);
}

/*
 * A stream with on_error "null" failed: release it, record why, warn, and
 * end it with a NULL row.
 */
static void
stream_failed(StreamState *st, ErrorData *edata)
{
	if (st->call->accounted && !st->call->usage_recorded)
	{
		if (st->call->error == NULL)
			st->call->error = edata->message;
		st->outcome = LLM_OUTCOME_ERROR;
	}
	stream_release(st);
	LlmCallFailed(st->call, edata);
	st->null_row = true;
}

/*
 * llm.chat_stream(prompt, model, system, options) returns setof text.
 */
Datum
pg_llm_chat_stream(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	StreamState *st;
	char	   *piece;

	if (SRF_IS_FIRSTCALL())
	{
		ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
		MemoryContext old;

		funcctx = SRF_FIRSTCALL_INIT();
		old = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		st = palloc0(sizeof(StreamState));
		st->ctx = funcctx->multi_call_memory_ctx;
		st->outcome = LLM_OUTCOME_CANCELLED;
		funcctx->user_fctx = st;
		if (PG_ARGISNULL(0))
		{
			/* a NULL prompt: one NULL row, and nothing sent */
			st->null_row = true;
			st->released = true;
			MemoryContextSwitchTo(old);
		}
		else
		{
			ErrorData  *edata;

			st->call = ChatCallFromArgs(fcinfo, LLM_MODE_STREAM);

			/* registered after the call's own, so it runs first on errors */
			st->reset_cb.func = stream_reset_cb;
			st->reset_cb.arg = st;
			MemoryContextRegisterResetCallback(st->ctx, &st->reset_cb);
			if (rsinfo && IsA(rsinfo, ReturnSetInfo) && rsinfo->econtext)
			{
				st->econtext = rsinfo->econtext;
				RegisterExprContextCallback(rsinfo->econtext, stream_shutdown_cb,
											PointerGetDatum(st));
			}

			SseInit(&st->parser, (size_t) llm_max_response_size_kb * 1024,
					stream_event_cb, st);
			st->parser_live = true;
			if (!RequestOnErrorNull(st->call->req))
				stream_open(st);
			else if ((edata = LlmTry(stream_open, st)) != NULL)
				stream_failed(st, edata);
			MemoryContextSwitchTo(old);
		}
	}

	funcctx = SRF_PERCALL_SETUP();
	st = (StreamState *) funcctx->user_fctx;
	if (st->null_row)
	{
		st->null_row = false;
		st->done = true;
		SRF_RETURN_NEXT_NULL(funcctx);
	}
	if (st->done)
		piece = NULL;
	else if (st->hit)
	{
		piece = st->rows == 0 ? pstrdup(st->call->reply.content) : NULL;
		if (piece == NULL)
			st->done = true;
	}
	else if (!RequestOnErrorNull(st->call->req))
		piece = stream_next(st);
	else
	{
		StreamNext	n;
		ErrorData  *edata;

		n.st = st;
		n.piece = NULL;
		if ((edata = LlmTry(stream_next_try, &n)) != NULL)
		{
			stream_failed(st, edata);
			st->null_row = false;
			st->done = true;
			SRF_RETURN_NEXT_NULL(funcctx);
		}
		piece = n.piece;
	}
	if (piece == NULL)
	{
		stream_release(st);
		/* st goes with the multi-call context: the callback must not outlive it */
		if (st->econtext)
			UnregisterExprContextCallback(st->econtext, stream_shutdown_cb,
										  PointerGetDatum(st));
		SRF_RETURN_DONE(funcctx);
	}
	if (st->rows == 0)
		st->call->first_byte = GetCurrentTimestamp();
	st->rows++;
	stream_delivered(st, piece);
	if (st->text.data)
	{
		MemoryContext old = MemoryContextSwitchTo(st->ctx);

		appendStringInfoString(&st->text, piece);
		MemoryContextSwitchTo(old);
	}
	{
		text	   *row = cstring_to_text(LlmToServerEncoding(piece, strlen(piece)));

		pfree(piece);			/* the stream's context outlives every row */
		SRF_RETURN_NEXT(funcctx, PointerGetDatum(row));
	}
}
