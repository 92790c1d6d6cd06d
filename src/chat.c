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
#include "pg_llm.h"
#include "usage.h"

PG_FUNCTION_INFO_V1(pg_llm_chat);
PG_FUNCTION_INFO_V1(pg_llm_chat_completion);

/* A text argument as a C string in UTF-8, or NULL. */
static char *
arg_utf8(FunctionCallInfo fcinfo, int n)
{
	if (PG_ARGISNULL(n))
		return NULL;
	return LlmToUtf8(text_to_cstring(PG_GETARG_TEXT_PP(n)));
}

/* A jsonb argument as JSON text in UTF-8, or NULL. */
static char *
arg_jsonb_utf8(FunctionCallInfo fcinfo, int n)
{
	Jsonb	   *j;

	if (PG_ARGISNULL(n))
		return NULL;
	j = PG_GETARG_JSONB_P(n);
	return LlmToUtf8(JsonbToCString(NULL, &j->root, VARSIZE(j)));
}

/*
 * A prompt must be there and not empty: the same rule for every call and
 * for the queue.
 */
void
ChatCheckPrompt(const char *prompt)
{
	if (prompt == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("prompt must not be null"),
				 errhint("Filter NULL rows out, or use coalesce() to give them a prompt.")));
	if (prompt[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("prompt must not be empty"),
				 errhint("Filter empty rows out; a model has nothing to answer.")));
}

/*
 * The request of llm.chat and llm.chat_stream, from (prompt, model,
 * system, options).  Shared with stream.c.
 */
LlmCall *
ChatCallFromArgs(FunctionCallInfo fcinfo, LlmMode mode)
{
	char	   *prompt = arg_utf8(fcinfo, 0);
	char	   *model = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *system = arg_utf8(fcinfo, 2);
	char	   *options = arg_jsonb_utf8(fcinfo, 3);
	LlmRequest *req;
	LlmCall    *call;

	ChatCheckPrompt(prompt);
	req = RequestFromPrompt(prompt, system, options);
	call = LlmCallCreate(req, LlmResolveModel(model, NULL), mode);
	UsageBegin(call, GetUserId(),
			   strlen(prompt) + (system ? strlen(system) : 0) + (options ? strlen(options) : 0),
			   RequestMaxTokens(req));
	return call;
}

/*
 * llm.chat(prompt, model, system, options) returns text: the reply.
 * A reply without text (tool calls, a refusal, no choices) is an error
 * here; llm.chat_completion() shows those.
 */
Datum
pg_llm_chat(PG_FUNCTION_ARGS)
{
	LlmCall    *call = ChatCallFromArgs(fcinfo, LLM_MODE_SYNC);

	LlmCallRun(call);
	if (call->reply.nchoices == 0)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("provider \"%s\" returned no choices", call->route->provider->name),
				 errhint("Look at the whole response with llm.chat_completion().")));
	if (call->reply.content == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("provider \"%s\" returned no text", call->route->provider->name),
				 errdetail("The finish reason is \"%s\".",
						   call->reply.finish_reason ? call->reply.finish_reason : "unknown"),
				 errhint("Tool calls and refusals carry no text; look at the whole response with llm.chat_completion().")));
	PG_RETURN_TEXT_P(cstring_to_text(LlmToServerEncoding(call->reply.content,
														 strlen(call->reply.content))));
}

/*
 * llm.chat_completion(request jsonb, model text) returns jsonb: the
 * normalized response, in the OpenAI shape whichever protocol served it,
 * with "provider" added.
 */
Datum
pg_llm_chat_completion(PG_FUNCTION_ARGS)
{
	char	   *request = arg_jsonb_utf8(fcinfo, 0);
	char	   *model = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	LlmRequest *req;
	LlmCall    *call;
	char	   *json;

	if (request == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("request must not be null"),
				 errhint("Pass a request such as '{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}'.")));
	req = RequestFromJson(request);
	call = LlmCallCreate(req, LlmResolveModel(model, req), LLM_MODE_SYNC);
	call->want_response_json = true;
	UsageBegin(call, GetUserId(), strlen(request), RequestMaxTokens(req));
	LlmCallRun(call);
	json = LlmToServerEncoding(call->reply.response_json, strlen(call->reply.response_json));
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}
