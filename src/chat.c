/*-------------------------------------------------------------------------
 *
 * chat.c
 *	  The synchronous calls: llm.chat() and llm.chat_completion().
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "call.h"
#include "chat.h"
#include "redact.h"
#include "usage.h"

PG_FUNCTION_INFO_V1(pg_llm_chat);
PG_FUNCTION_INFO_V1(pg_llm_chat_completion);

/*
 * A text argument in UTF-8 with its length, without a copy when the
 * server encoding is UTF-8 (see LlmTextToUtf8), or NULL.
 */
static char *
arg_text_utf8(FunctionCallInfo fcinfo, int n, size_t *len)
{
	*len = 0;
	if (PG_ARGISNULL(n))
		return NULL;
	return LlmTextToUtf8(PG_GETARG_TEXT_PP(n), len);
}

/*
 * The call of llm.chat and llm.chat_stream, from (prompt, model, system,
 * options), with its route chain: a bad option or a model with no route
 * raises here, whatever on_error says (every row would fail alike, and
 * nothing has been sent).  The prompt is checked and the budget reserved
 * by LlmCallBegin.  Shared with stream.c.  The prompt must not be NULL
 * (a NULL prompt gives NULL without a call).
 */
LlmCall *
ChatCallFromArgs(FunctionCallInfo fcinfo, LlmMode mode)
{
	size_t		prompt_len;
	size_t		system_len;
	char	   *prompt = arg_text_utf8(fcinfo, 0, &prompt_len);
	char	   *model = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *system = arg_text_utf8(fcinfo, 2, &system_len);
	char	   *options = LlmArgJsonb(fcinfo, 3);
	LlmRequest *req;
	LlmCall    *call;

	Assert(prompt != NULL);
	req = RequestFromPromptText(prompt, prompt_len, system, system_len, options);
	if (mode == LLM_MODE_STREAM && RequestHasSchema(req))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"json_schema\" is not accepted by llm.chat_stream"),
				 errdetail("An answer is validated whole, and a stream hands it out before it is."),
				 errhint("Use llm.chat() with json_schema.")));
	call = LlmCallCreate(req, LlmResolveModel(model, NULL), mode);
	/* checked by its first byte: a blank prompt is an empty one */
	call->prompt = LlmBlank(prompt, prompt_len) ? "" : prompt;
	call->request_bytes = prompt_len + system_len + (options ? strlen(options) : 0);
	return call;
}

/* The reply of llm.chat, run inside LlmTry when on_error is "null". */
typedef struct ChatRun
{
	LlmCall    *call;
	text	   *result;
} ChatRun;

static void
chat_run(void *arg)
{
	ChatRun    *run = (ChatRun *) arg;
	LlmCall    *call = run->call;

	LlmCallBegin(call);
	if (RequestHasSchema(call->req))
	{
		LlmShapeResult res;

		/* the validated answer, as JSON text */
		(void) ShapeRun(call, &res);
		run->result = cstring_to_text(LlmToServerEncoding(res.json, strlen(res.json)));
		return;
	}
	/* a reply that is not text (a refusal, a tool call, ...) raises */
	LlmCallRun(call, true);
	run->result = cstring_to_text(LlmToServerEncoding(call->reply.content,
													  strlen(call->reply.content)));
}

/*
 * llm.chat(prompt, model, system, options) returns text: the reply.
 * A reply without text (tool calls, a refusal, a paused turn, no choices)
 * is an error here (LlmJudgeText); llm.chat_completion() shows those.  A
 * NULL prompt gives NULL.
 * With json_schema, the reply is the validated answer as JSON text.
 */
Datum
pg_llm_chat(PG_FUNCTION_ARGS)
{
	ChatRun		run;
	ErrorData  *edata;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	run.call = ChatCallFromArgs(fcinfo, LLM_MODE_SYNC);
	run.result = NULL;
	if (!RequestOnErrorNull(run.call->req))
		chat_run(&run);
	else if ((edata = LlmTry(chat_run, &run)) != NULL)
	{
		LlmCallFailed(run.call, edata);
		PG_RETURN_NULL();
	}
	PG_RETURN_TEXT_P(run.result);
}

/* The response of llm.chat_completion, run like chat_run. */
typedef struct CompletionRun
{
	LlmCall    *call;
	Datum		result;
} CompletionRun;

static void
completion_run(void *arg)
{
	CompletionRun *run = (CompletionRun *) arg;
	LlmCall    *call = run->call;
	char	   *json;

	LlmCallBegin(call);
	if (RequestHasSchema(call->req))
	{
		LlmShapeResult res;

		/* the answer as the first choice's content, however it was asked for */
		call = ShapeRun(call, &res);
		json = SchemaNormalizedResponse(call->reply.response_json, res.json);
		json = LlmToServerEncoding(json, strlen(json));
		run->result = DirectFunctionCall1(jsonb_in, CStringGetDatum(json));
		return;
	}
	LlmCallRun(call, false);
	json = LlmToServerEncoding(call->reply.response_json, strlen(call->reply.response_json));
	run->result = DirectFunctionCall1(jsonb_in, CStringGetDatum(json));
}

/*
 * llm.chat_completion(request jsonb, model text) returns jsonb: the
 * normalized response, in the OpenAI shape whichever protocol served it,
 * with "provider" added.  A NULL request gives NULL.
 */
Datum
pg_llm_chat_completion(PG_FUNCTION_ARGS)
{
	char	   *request = LlmArgJsonb(fcinfo, 0);
	char	   *model = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	LlmRequest *req;
	CompletionRun run;
	ErrorData  *edata;

	if (request == NULL)
		PG_RETURN_NULL();
	req = RequestFromJson(request);
	run.call = LlmCallCreate(req, LlmResolveModel(model, req), LLM_MODE_SYNC);
	run.call->want_response_json = true;
	run.call->request_bytes = strlen(request);
	run.result = (Datum) 0;
	if (!RequestOnErrorNull(req))
		completion_run(&run);
	else if ((edata = LlmTry(completion_run, &run)) != NULL)
	{
		LlmCallFailed(run.call, edata);
		PG_RETURN_NULL();
	}
	PG_RETURN_DATUM(run.result);
}
