/*-------------------------------------------------------------------------
 *
 * shape.c
 *	  Answers with a shape, the SQL side: llm.classify, llm.extract and
 *	  llm.is_true, and the loop every synchronous call with a json_schema
 *	  goes through: send, validate the answer, and when it breaks the
 *	  schema, record that call as "invalid" (it was paid) and ask again
 *	  with the validation error, up to llm.validation_retries times, then
 *	  fail with an error naming the provider, the model, the path and the
 *	  rule.
 *
 *	  The json-c side (the schema, the requests, reading answers) is
 *	  schema.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "call.h"
#include "schema.h"
#include "shape.h"
#include "usage.h"

PG_FUNCTION_INFO_V1(pg_llm_classify);
PG_FUNCTION_INFO_V1(pg_llm_extract);
PG_FUNCTION_INFO_V1(pg_llm_is_true);

/* The schema of llm.is_true's answer. */
#define IS_TRUE_SCHEMA "{\"type\": \"object\", \"properties\": {\"answer\": {\"type\": \"boolean\"}}, " \
	"\"required\": [\"answer\"], \"additionalProperties\": false}"

/*
 * Run a call whose request has a schema until its answer is valid: the
 * call that served is returned, its answer in *res.  Every call sent is
 * recorded: "ok" for the one whose answer was valid, "invalid" for each
 * one asked again.  Failures of the calls themselves are raised as
 * usual.
 */
LlmCall *
ShapeRun(LlmCall *call, LlmShapeResult *res)
{
	int			asked = 0;
	LlmFailure	refused;

	for (;;)
	{
		LlmCallSend(call);
		asked++;
		if (LlmReplyRefused(call, &refused))
		{
			/* not asked again: the same prompt gets the same refusal */
			call->error = refused.message;
			UsageRecord(call, LLM_OUTCOME_REFUSED);
			LlmRaiseFailure(&refused, 1, 1);
		}
		if (ShapeJudge(call, res))
			return call;
		if (asked > llm_validation_retries)
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("answer of provider \"%s\" does not match the JSON schema",
							call->route->provider->name),
					 errdetail("%s", ShapeFailureDetail(call, asked, res)),
					 errhint("Describe the shape in the instructions, use a model that follows structured output (the provider option structured_output says how it is asked for), or raise llm.validation_retries.")));
		call = ShapeAskAgain(call, res);
	}
}

/*
 * Validate the answer of a call that was served, and record it: "ok"
 * (true) or "invalid" with what broke the schema (false).
 */
bool
ShapeJudge(LlmCall *call, LlmShapeResult *res)
{
	SchemaCheckReply(call->req, &call->reply, res);
	if (res->valid)
	{
		UsageRecord(call, LLM_OUTCOME_OK);
		return true;
	}
	call->error = psprintf("answer does not match the JSON schema at %s, rule \"%s\": %s",
						   res->path, res->rule, LlmToServerEncoding(res->message, strlen(res->message)));
	UsageRecord(call, LLM_OUTCOME_INVALID);
	return false;
}

/* Where and why the last answer broke the schema, for an errdetail. */
char *
ShapeFailureDetail(LlmCall *call, int asked, const LlmShapeResult *res)
{
	return psprintf("Model \"%s\" (\"%s\" upstream) was asked %d time%s; its last answer breaks the schema at %s, rule \"%s\": %s.",
					call->model, call->route->upstream_model, asked, asked > 1 ? "s" : "",
					res->path, res->rule, LlmToServerEncoding(res->message, strlen(res->message)));
}

/*
 * The call that asks again after an invalid answer: the conversation, the
 * answer, what was wrong; accounted like the first (its own usage row).
 */
LlmCall *
ShapeAskAgain(LlmCall *call, const LlmShapeResult *res)
{
	LlmRequest *req = SchemaRetryRequest(call->req, res);
	LlmCall    *next = LlmCallCreate(req, call->model, call->mode);

	next->want_response_json = call->want_response_json;
	next->request_bytes = call->request_bytes + strlen(res->said) + 200;
	UsageBegin(next, call->roleid, next->request_bytes, RequestMaxTokens(req));
	return next;
}

/* A text argument in UTF-8, or NULL. */
static char *
arg_utf8(FunctionCallInfo fcinfo, int n)
{
	if (PG_ARGISNULL(n))
		return NULL;
	return LlmToUtf8(text_to_cstring(PG_GETARG_TEXT_PP(n)));
}

static void
check_input(const char *input)
{
	if (LlmBlank(input, strlen(input)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("input must not be empty"),
				 errhint("Filter empty rows out, or pass NULL: a NULL input gives NULL.")));
}

/*
 * The call of a shaped function: input as the user message, the system
 * prompt, the caller's options (without a json_schema of their own), and
 * the function's schema.  A bad argument or option raises here, whatever
 * on_error says.
 */
static LlmCall *
shaped_call(const char *fname, const char *input, const char *system, const char *model,
			const char *options, const char *schema_json, const char *schema_what)
{
	LlmRequest *req = RequestFromPrompt(input, system, options);
	LlmCall    *call;

	if (RequestHasSchema(req))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"json_schema\" is not accepted by %s", fname),
				 errhint("%s makes the schema of its answer itself; use llm.chat() with json_schema for a shape of your own.", fname)));
	RequestSetSchema(req, schema_json, true, schema_what);
	call = LlmCallCreate(req, LlmResolveModel(model, NULL), LLM_MODE_SYNC);
	call->request_bytes = strlen(input) + strlen(system) + (options ? strlen(options) : 0) +
		strlen(schema_json);
	return call;
}

/* A shaped call run, possibly inside LlmTry (on_error "null"). */
typedef struct ShapedRun
{
	LlmCall    *first;
	LlmCall    *call;			/* the call that served */
	LlmShapeResult res;
} ShapedRun;

static void
shaped_run(void *arg)
{
	ShapedRun  *run = (ShapedRun *) arg;

	LlmCallBegin(run->first);
	run->call = ShapeRun(run->first, &run->res);
}

/*
 * Run a shaped call to its valid answer (in run->res); false when it
 * failed and on_error "null" turned the failure into a WARNING.
 */
static bool
run_shaped(ShapedRun *run, LlmCall *call)
{
	ErrorData  *edata;

	memset(run, 0, sizeof(ShapedRun));
	run->first = call;
	if (!RequestOnErrorNull(call->req))
	{
		shaped_run(run);
		return true;
	}
	if ((edata = LlmTry(shaped_run, run)) != NULL)
	{
		LlmCallFailed(call, edata);
		return false;
	}
	return true;
}

/*
 * llm.classify(input, labels, model, instructions, options) returns text:
 * always one of labels.
 */
Datum
pg_llm_classify(PG_FUNCTION_ARGS)
{
	char	   *input = arg_utf8(fcinfo, 0);
	char	   *model = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	char	   *instructions = arg_utf8(fcinfo, 3);
	char	   *options = LlmArgJsonb(fcinfo, 4);
	Datum	   *elems;
	bool	   *nulls;
	int			n,
				i,
				j;
	StringInfoData list;
	StringInfoData names;
	StringInfoData system;
	ShapedRun	run;
	LlmCall    *call;
	char	   *label;

	n = LlmArgTextArray(fcinfo, 1, "labels",
						"Pass the labels to choose from, such as ARRAY['positive', 'neutral', 'negative'].",
						&elems, &nulls);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("labels must not be empty"),
				 errhint("Pass at least one label, such as ARRAY['yes', 'no'].")));
	initStringInfo(&list);
	initStringInfo(&names);
	appendStringInfoChar(&list, '[');
	for (i = 0; i < n; i++)
	{
		char	   *l;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("labels must not contain NULL"),
					 errdetail("Label %d is NULL.", i + 1)));
		l = TextDatumGetCString(elems[i]);
		if (l[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("labels must not be empty strings"),
					 errdetail("Label %d is empty.", i + 1)));
		for (j = 0; j < i; j++)
			if (strcmp(l, TextDatumGetCString(elems[j])) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("labels must not repeat"),
						 errdetail("Label \"%s\" is given twice (labels %d and %d).", l, j + 1, i + 1),
						 errhint("Give each label once.")));
		if (i > 0)
		{
			appendStringInfoString(&list, ", ");
			appendStringInfoString(&names, ", ");
		}
		escape_json(&list, LlmToUtf8(l));
		escape_json(&names, LlmToUtf8(l));
	}
	appendStringInfoChar(&list, ']');

	/* a NULL input gives NULL, once the labels are known to be right */
	if (input == NULL)
		PG_RETURN_NULL();
	check_input(input);

	initStringInfo(&system);
	appendStringInfo(&system, "Classify the input. Answer with exactly one of these labels: %s.", names.data);
	if (instructions)
		appendStringInfo(&system, "\n\n%s", instructions);
	call = shaped_call("llm.classify", input, system.data, model, options,
					   SchemaLabelsSchema(list.data), "labels");
	if (!run_shaped(&run, call))
		PG_RETURN_NULL();
	label = SchemaMemberText(run.res.json, "label");
	PG_RETURN_TEXT_P(cstring_to_text(LlmToServerEncoding(label, strlen(label))));
}

/*
 * llm.extract(input, schema, model, instructions, options) returns jsonb:
 * an object valid against schema.
 */
Datum
pg_llm_extract(PG_FUNCTION_ARGS)
{
	char	   *input = arg_utf8(fcinfo, 0);
	char	   *schema = LlmArgJsonb(fcinfo, 1);
	char	   *model = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	char	   *instructions = arg_utf8(fcinfo, 3);
	char	   *options = LlmArgJsonb(fcinfo, 4);
	char	   *system;
	ShapedRun	run;
	LlmCall    *call;
	char	   *json;

	if (schema == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("schema must not be null"),
				 errhint("Pass the JSON schema of the object to extract, such as '{\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\"}}, \"required\": [\"name\"]}'.")));
	if (input == NULL)
		PG_RETURN_NULL();
	check_input(input);
	system = instructions ?
		psprintf("Extract the information the JSON schema asks for from the input.\n\n%s", instructions) :
		pstrdup("Extract the information the JSON schema asks for from the input.");
	call = shaped_call("llm.extract", input, system, model, options, schema, "schema");
	if (!run_shaped(&run, call))
		PG_RETURN_NULL();
	json = LlmToServerEncoding(run.res.json, strlen(run.res.json));
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}

/* llm.is_true(input, question, model, options) returns boolean. */
Datum
pg_llm_is_true(PG_FUNCTION_ARGS)
{
	char	   *input = arg_utf8(fcinfo, 0);
	char	   *question = arg_utf8(fcinfo, 1);
	char	   *model = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	char	   *options = LlmArgJsonb(fcinfo, 3);
	ShapedRun	run;
	LlmCall    *call;
	char	   *answer;

	if (question == NULL || question[0] == '\0')
		ereport(ERROR,
				(errcode(question ? ERRCODE_INVALID_PARAMETER_VALUE : ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("question must not be %s", question ? "empty" : "null"),
				 errhint("Pass the question to answer about each input, such as 'Is this ticket urgent?'.")));
	if (input == NULL)
		PG_RETURN_NULL();
	check_input(input);
	call = shaped_call("llm.is_true", input,
					   psprintf("Answer the question about the input with true or false.\n\nQuestion: %s", question),
					   model, options, IS_TRUE_SCHEMA, "schema");
	if (!run_shaped(&run, call))
		PG_RETURN_NULL();
	answer = SchemaMemberText(run.res.json, "answer");
	PG_RETURN_BOOL(answer != NULL && strcmp(answer, "true") == 0);
}
