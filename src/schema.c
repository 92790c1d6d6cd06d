/*-------------------------------------------------------------------------
 *
 * schema.c
 *	  Answers with a shape, the json-c side: the json_schema option of a
 *	  request checked (and compiled by jsonschema.c, with PostgreSQL's
 *	  regex engine for "pattern") before anything is sent; the request a
 *	  route is sent, in the provider's way of asking for structured
 *	  output; the answer read out of a reply and validated; the request
 *	  that asks again with the validation error.
 *
 *	  Structured output, per provider (option structured_output):
 *	  - "json_schema" (openai default): response_format {"type":
 *	    "json_schema", "json_schema": {"name", "schema", "strict"}}, strict
 *	    when the schema meets strict mode's rules;
 *	  - "tool" (anthropic default): one tool whose parameters are the
 *	    schema, and tool_choice forcing it (Anthropic: input_schema and
 *	    {"type": "tool", "name"}); the answer is the tool call's input;
 *	  - "prompt": the schema in the system prompt, for servers with
 *	    neither.
 *	  The answer is validated whichever way it was asked for.
 *
 *	  This file must not include utils/builtins.h (see llm_json.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_collation_d.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/guc.h"
#include "miscadmin.h"
#include "regex/regex.h"

#include "encoding.h"
#include "jsonschema.h"
#include "llm_json.h"
#include "request_int.h"
#include "schema.h"

int			llm_validation_retries = 1;

/* Largest json_schema accepted, as JSON text. */
#define LLM_SCHEMA_MAX_BYTES (256 * 1024)

/* The most of a bad answer repeated back to the model when asking again. */
#define LLM_SHAPE_ECHO_BYTES 4000

/* ----------------------------------------------------------------------
 * Patterns with PostgreSQL's regex engine
 * ---------------------------------------------------------------------- */

/* Text in UTF-8 as pg_wchar of the server encoding, in *wlen characters. */
static pg_wchar *
to_wchar(const char *utf8, size_t len, int *wlen)
{
	char	   *s = (char *) utf8;
	pg_wchar   *w;

	if (GetDatabaseEncoding() != PG_UTF8)
	{
		s = LlmToServerEncoding(utf8, len);
		len = strlen(s);
	}
	w = palloc((len + 1) * sizeof(pg_wchar));
	*wlen = pg_mb2wchar_with_len(s, w, (int) len);
	return w;
}

/*
 * Compile a pattern as an advanced regular expression (the flavour of
 * PostgreSQL's ~ operator).  A pattern that is not plain ASCII needs a
 * UTF8 database: a conversion error here could not be reported cleanly.
 */
static void *
pg_rx_compile(void *arg, const char *pattern, char *err, size_t errlen)
{
	regex_t    *re;
	pg_wchar   *w;
	int			wlen;
	int			rc;
	const char *p;

	if (GetDatabaseEncoding() != PG_UTF8)
		for (p = pattern; *p; p++)
			if ((unsigned char) *p >= 0x80)
			{
				snprintf(err, errlen, "a pattern with non-ASCII characters needs a database in UTF8");
				return NULL;
			}
	re = malloc(sizeof(regex_t));
	if (re == NULL)
	{
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	w = to_wchar(pattern, strlen(pattern), &wlen);
	rc = pg_regcomp(re, w, wlen, REG_ADVANCED | REG_NOSUB, DEFAULT_COLLATION_OID);
	pfree(w);
	if (rc != REG_OKAY)
	{
		pg_regerror(rc, re, err, errlen);
		free(re);
		return NULL;
	}
	return re;
}

static int
pg_rx_match(void *arg, void *handle, const char *text, size_t len, char *err, size_t errlen)
{
	pg_wchar   *w;
	int			wlen;
	int			rc;

	if (memchr(text, '\0', len) != NULL)
	{
		snprintf(err, errlen, "the string holds a NUL character");
		return -1;
	}
	w = to_wchar(text, len, &wlen);
	rc = pg_regexec((regex_t *) handle, w, wlen, 0, NULL, 0, NULL, 0);
	pfree(w);
	if (rc == REG_OKAY)
		return 1;
	if (rc == REG_NOMATCH)
		return 0;
	CHECK_FOR_INTERRUPTS();
	pg_regerror(rc, (regex_t *) handle, err, errlen);
	return -1;
}

static void
pg_rx_release(void *arg, void *handle)
{
	pg_regfree((regex_t *) handle);
	free(handle);
}

static const JsonSchemaRegex pg_rx = {pg_rx_compile, pg_rx_match, pg_rx_release, NULL};

/* ----------------------------------------------------------------------
 * The json_schema option
 * ---------------------------------------------------------------------- */

/* Free a compiled schema with the memory context it was made in. */
static void
schema_free_cb(void *arg)
{
	JsonSchema **s = (JsonSchema **) arg;

	JsonSchemaFree(*s);
	*s = NULL;
}

static void
bad_schema(const char *what, const char *detail, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid %s", what),
			 errdetail("%s", detail),
			 errhint("%s", hint)));
}

/*
 * Check and compile the schema of a request (req->obj's "json_schema"),
 * refusing what cannot work before anything is sent.  need_object: the
 * answer must be an object (always, in fact: both providers' structured
 * outputs and tools take an object schema at the root).
 */
static void
compile_schema(LlmRequest *req, json_object *v, const char *what)
{
	JsonSchemaError err;
	JsonSchema *s;
	JsonSchema **holder;
	MemoryContextCallback *cb;
	const char *text;
	json_object *x;

	if (!json_object_is_type(v, json_type_object))
		bad_schema(what, "A JSON schema must be a JSON object.",
				   "Pass a schema such as '{\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\"}}, \"required\": [\"name\"]}'.");
	text = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
	if (strlen(text) > LLM_SCHEMA_MAX_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("invalid %s", what),
				 errdetail("The schema is %zu bytes long; at most %d are accepted.",
						   strlen(text), LLM_SCHEMA_MAX_BYTES),
				 errhint("Ask for a smaller shape, and describe the rest in the prompt.")));
	if (json_object_object_get_ex(req->obj, "response_format", &x) ||
		json_object_object_get_ex(req->obj, "tools", &x) ||
		json_object_object_get_ex(req->obj, "tool_choice", &x))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"json_schema\" cannot be combined with response_format, tools or tool_choice"),
				 errdetail("pg_llm asks each provider for the shape in its own way (structured output, a forced tool or the prompt)."),
				 errhint("Remove response_format, tools and tool_choice, or remove json_schema.")));
	if (json_object_object_get_ex(req->obj, "n", &x) && json_object_is_type(x, json_type_int) &&
		json_object_get_int64(x) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"json_schema\" cannot be combined with n other than 1"),
				 errhint("Ask for one answer at a time.")));

	memset(&err, 0, sizeof(err));
	s = JsonSchemaCompile(v, &pg_rx, &err);
	if (s == NULL)
		ereport(ERROR,
				(errcode(err.rule[0] && strcmp(err.rule, "limit") == 0 ?
						 ERRCODE_PROGRAM_LIMIT_EXCEEDED : ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s", what),
				 errdetail("At %s, rule \"%s\": %s.", err.path, err.rule, err.message),
				 errhint("pg_llm validates answers against type, properties, required, additionalProperties, enum, const, items, minItems, maxItems, minimum, maximum, minLength, maxLength, pattern, anyOf, $defs and $ref; other keywords are refused rather than ignored.")));
	holder = palloc(sizeof(JsonSchema *));
	*holder = s;
	cb = palloc0(sizeof(MemoryContextCallback));
	cb->func = schema_free_cb;
	cb->arg = holder;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
	if (!JsonSchemaRootIsObject(s))
		bad_schema(what, "The root of the schema must have \"type\": \"object\": providers' structured outputs and tools answer with an object.",
				   "Wrap the value in an object, such as '{\"type\": \"object\", \"properties\": {\"value\": ...}, \"required\": [\"value\"]}'.");
	req->schema = s;
}

/*
 * Compile the json_schema option of a request, if it has one; a null
 * option is no option.
 */
void
RequestCompileSchema(LlmRequest *req)
{
	json_object *v;

	if (!json_object_object_get_ex(req->obj, "json_schema", &v))
		return;
	if (v == NULL)
	{
		json_object_object_del(req->obj, "json_schema");
		return;
	}
	compile_schema(req, v, "option \"json_schema\"");
}

/* Does the request ask for an answer with a shape? */
bool
RequestHasSchema(LlmRequest *req)
{
	return req->schema != NULL;
}

/*
 * Give a request a schema (llm.classify, extract, is_true): schema_json
 * is UTF-8 JSON text; what names it in errors.
 */
void
RequestSetSchema(LlmRequest *req, const char *schema_json, bool need_object, const char *what)
{
	const char *why;
	json_object *v = JsonParse(schema_json, strlen(schema_json), &why);

	if (v == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s", what),
				 errdetail("It cannot be read: %s.", why)));
	json_object_object_add(req->obj, "json_schema", v);
	compile_schema(req, v, what);
}

/* The way a provider is asked for structured output. */
const char *
SchemaStructuredOutput(const LlmProvider *p)
{
	if (p->structured_output)
		return p->structured_output;
	return p->ops == &AnthropicProviderOps ? "tool" : "json_schema";
}

/* The instruction of the constrained prompt, ending with the schema. */
static char *
prompt_instruction(json_object *schema)
{
	return psprintf("Answer with only a JSON object that matches this JSON Schema, and nothing else: no prose, no code fence.\n%s",
					json_object_to_json_string_ext(schema, JSON_C_TO_STRING_PLAIN));
}

/* Add text to the system prompt of an OpenAI-shaped request. */
static void
append_system(json_object *obj, const char *text)
{
	json_object *msgs = JsonGetArray(obj, "messages");
	json_object *first = msgs && json_object_array_length(msgs) > 0 ?
		json_object_array_get_idx(msgs, 0) : NULL;
	const char *role = JsonGetString(first, "role");
	json_object *content = NULL;
	json_object *out;
	json_object *m;
	size_t		i,
				n;

	if (role && (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) &&
		json_object_object_get_ex(first, "content", &content) &&
		json_object_is_type(content, json_type_string))
	{
		json_object_object_add(first, "content",
							   json_object_new_string(psprintf("%s\n\n%s", json_object_get_string(content), text)));
		return;
	}
	/* a new first message: rebuild the array */
	out = json_object_new_array();
	m = json_object_new_object();
	json_object_object_add(m, "role", json_object_new_string("system"));
	json_object_object_add(m, "content", json_object_new_string(text));
	json_object_array_add(out, m);
	n = msgs ? json_object_array_length(msgs) : 0;
	for (i = 0; i < n; i++)
		json_object_array_add(out, json_object_get(json_object_array_get_idx(msgs, i)));
	json_object_object_add(obj, "messages", out);
}

/* Free a route's request object with its memory context. */
static void
route_request_free_cb(void *arg)
{
	LlmRequest *r = (LlmRequest *) arg;

	if (r->obj)
		json_object_put(r->obj);
	r->obj = NULL;
}

/*
 * The request to send on a route: the caller's own when it has no schema;
 * otherwise a copy without "json_schema" that asks for the shape the way
 * the route's provider takes it.  The copy lives in the current memory
 * context.
 */
LlmRequest *
SchemaRouteRequest(LlmRequest *req, const LlmRoute *route)
{
	LlmRequest *r;
	MemoryContextCallback *cb;
	json_object *copy;
	json_object *schema;
	const char *how;

	if (req->schema == NULL)
		return req;

	/*
	 * A new object sharing the members of the caller's (the provider
	 * adapter copies what it sends): only the prompt strategy changes one,
	 * the messages, and copies them first.
	 */
	copy = json_object_new_object();
	{
		json_object_object_foreach(req->obj, key, val)
		{
			if (strcmp(key, "json_schema") != 0)
				json_object_object_add(copy, key, json_object_get(val));
		}
	}
	r = palloc0(sizeof(LlmRequest));
	r->obj = copy;
	cb = palloc0(sizeof(MemoryContextCallback));
	cb->func = route_request_free_cb;
	cb->arg = r;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);

	schema = JsonGetObject(req->obj, "json_schema");
	how = SchemaStructuredOutput(route->provider);
	if (strcmp(how, "json_schema") == 0)
	{
		json_object *rf = json_object_new_object();
		json_object *js = json_object_new_object();

		json_object_object_add(js, "name", json_object_new_string(LLM_SHAPE_NAME));
		json_object_object_add(js, "strict", json_object_new_boolean(JsonSchemaStrictable(req->schema)));
		json_object_object_add(js, "schema", json_object_get(schema));
		json_object_object_add(rf, "type", json_object_new_string("json_schema"));
		json_object_object_add(rf, "json_schema", js);
		json_object_object_add(copy, "response_format", rf);
	}
	else if (strcmp(how, "tool") == 0)
	{
		json_object *tools = json_object_new_array();
		json_object *tool = json_object_new_object();
		json_object *fn = json_object_new_object();
		json_object *choice = json_object_new_object();
		json_object *cfn = json_object_new_object();

		json_object_object_add(fn, "name", json_object_new_string(LLM_SHAPE_NAME));
		json_object_object_add(fn, "description", json_object_new_string("Give the answer in this shape."));
		json_object_object_add(fn, "parameters", json_object_get(schema));
		json_object_object_add(tool, "type", json_object_new_string("function"));
		json_object_object_add(tool, "function", fn);
		json_object_array_add(tools, tool);
		json_object_object_add(copy, "tools", tools);
		json_object_object_add(cfn, "name", json_object_new_string(LLM_SHAPE_NAME));
		json_object_object_add(choice, "type", json_object_new_string("function"));
		json_object_object_add(choice, "function", cfn);
		json_object_object_add(copy, "tool_choice", choice);
	}
	else
	{
		json_object *msgs = NULL;

		if (json_object_deep_copy(JsonGetArray(req->obj, "messages"), &msgs, NULL) != 0 || msgs == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory")));
		json_object_object_add(copy, "messages", msgs);
		append_system(copy, prompt_instruction(schema));
	}
	return r;
}

/* ----------------------------------------------------------------------
 * Reading and validating an answer
 * ---------------------------------------------------------------------- */

/*
 * The answer in a reply: the arguments of a call of our tool, else the
 * text of the first choice.
 */
static char *
answer_text(const LlmReply *reply)
{
	if (reply->tool_name && strcmp(reply->tool_name, LLM_SHAPE_NAME) == 0 && reply->tool_input)
		return pstrdup(reply->tool_input);
	return reply->content ? pstrdup(reply->content) : NULL;
}

/*
 * Strip white space and one Markdown code fence (```json ... ```) around
 * an answer: models asked in the prompt often fence their JSON.
 */
static char *
unfence(char *s)
{
	char	   *end;

	while (*s && isspace((unsigned char) *s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char) end[-1]))
		*--end = '\0';
	if (strncmp(s, "```", 3) == 0 && end - s >= 6 && strcmp(end - 3, "```") == 0)
	{
		char	   *nl = strchr(s, '\n');

		if (nl && nl < end - 3)
		{
			end[-3] = '\0';
			return unfence(nl + 1);
		}
	}
	return s;
}

/*
 * An answer that breaks the schema.  The path and the message quote the
 * answer (a property name, a value the model wrote): their control
 * characters are escaped as every provider text's is (redact.c), so that
 * an answer cannot start a line of its own in an error, the server log or
 * a row.
 */
static void
shape_invalid(LlmShapeResult *res, const char *path, const char *rule, const char *message)
{
	res->valid = false;
	res->path = LlmEscapeControls(path);
	res->rule = pstrdup(rule);
	res->message = LlmEscapeControls(message);
}

/*
 * Read the answer out of a reply and validate it against the request's
 * schema.
 */
void
SchemaCheckReply(LlmRequest *req, const LlmReply *reply, LlmShapeResult *res)
{
	json_object *answer;
	JsonGuard  *ga;
	char	   *text;
	const char *why;
	JsonSchemaError err;
	int			r;

	memset(res, 0, sizeof(LlmShapeResult));
	text = answer_text(reply);
	if (text == NULL)
	{
		res->said = pstrdup("");
		shape_invalid(res, "$", "json",
					  reply->finish_reason && strcmp(reply->finish_reason, "content_filter") == 0 ?
					  "the model refused to answer" : "the reply has no answer");
		return;
	}
	res->said = text;
	text = unfence(pstrdup(text));
	answer = JsonParse(text, strlen(text), &why);
	if (answer == NULL)
	{
		shape_invalid(res, "$", "json",
					  psprintf("%s%s",
							   strcmp(why, "it is not valid JSON") == 0 ? "the answer is not JSON" :
							   psprintf("the answer cannot be read: %s", why),
							   reply->finish_reason && strcmp(reply->finish_reason, "length") == 0 ?
							   " (it was cut off at max_tokens)" : ""));
		return;
	}
	ga = JsonGuardNew(answer);
	memset(&err, 0, sizeof(err));
	r = JsonSchemaValidate(req->schema, answer, &err);
	if (r == JSON_SCHEMA_VALID)
	{
		res->valid = true;
		res->json = text;
	}
	else
		shape_invalid(res, err.path, err.rule, err.message);
	JsonGuardRelease(ga);
}

/*
 * The request that asks again: the same conversation, the answer the
 * model gave, and what was wrong with it.
 */
LlmRequest *
SchemaRetryRequest(LlmRequest *req, const LlmShapeResult *res)
{
	return SchemaRetryRequestFor(req, res->said,
								 psprintf("at %s, rule \"%s\": %s", res->path, res->rule, res->message));
}

/* The same, from an answer and its problem (UTF-8) kept in the queue. */
LlmRequest *
SchemaRetryRequestFor(LlmRequest *req, const char *said, const char *problem)
{
	LlmRequest *r = palloc0(sizeof(LlmRequest));
	MemoryContextCallback *cb;
	json_object *copy = NULL;
	json_object *msgs;
	json_object *m;

	if (json_object_deep_copy(req->obj, &copy, NULL) != 0 || copy == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	r->obj = copy;
	r->schema = req->schema;
	r->on_error_null = req->on_error_null;
	r->cache = req->cache;
	r->tag = req->tag;
	cb = palloc0(sizeof(MemoryContextCallback));
	cb->func = route_request_free_cb;
	cb->arg = r;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);

	if (said == NULL || said[0] == '\0')
		said = "(no answer)";
	if (strlen(said) > LLM_SHAPE_ECHO_BYTES)
	{
		int			cut = LLM_SHAPE_ECHO_BYTES;

		while (cut > 0 && ((unsigned char) said[cut] & 0xC0) == 0x80)
			cut--;
		said = psprintf("%.*s...", cut, said);
	}
	msgs = JsonGetArray(copy, "messages");
	m = json_object_new_object();
	json_object_object_add(m, "role", json_object_new_string("assistant"));
	json_object_object_add(m, "content", json_object_new_string(said));
	json_object_array_add(msgs, m);
	m = json_object_new_object();
	json_object_object_add(m, "role", json_object_new_string("user"));
	json_object_object_add(m, "content", json_object_new_string(
																 psprintf("That answer does not match the JSON schema: %s. Answer again with only a JSON object that matches the schema.",
																		  problem)));
	json_object_array_add(msgs, m);
	return r;
}

/* Do options (JSON text, UTF-8) carry a json_schema? */
bool
SchemaOptionsHaveSchema(const char *options_json)
{
	json_object *o = JsonParse(options_json, strlen(options_json), NULL);
	json_object *v = NULL;
	bool		has;

	if (o == NULL)
		return false;
	has = json_object_is_type(o, json_type_object) &&
		json_object_object_get_ex(o, "json_schema", &v) && v != NULL;
	json_object_put(o);
	return has;
}

/*
 * A normalized response whose first choice carries the validated answer
 * as its content (whichever way it was asked for), without the call of
 * our tool.
 */
char *
SchemaNormalizedResponse(const char *response_json, const char *answer_json)
{
	json_object *resp = JsonParse(response_json, strlen(response_json), NULL);
	json_object *choices;
	json_object *choice;
	json_object *msg;
	JsonGuard  *g;
	char	   *out;

	if (resp == NULL)
		return pstrdup(response_json);
	g = JsonGuardNew(resp);
	choices = JsonGetArray(resp, "choices");
	choice = choices && json_object_array_length(choices) > 0 ?
		json_object_array_get_idx(choices, 0) : NULL;
	msg = JsonGetObject(choice, "message");
	if (msg)
	{
		json_object_object_add(msg, "content", json_object_new_string(answer_json));
		json_object_object_del(msg, "tool_calls");
		json_object_object_add(choice, "finish_reason", json_object_new_string("stop"));
	}
	out = JsonToPstr(resp);
	JsonGuardRelease(g);
	return out;
}

/*
 * A member of a JSON object (text) as text: a string as it is, true or
 * false, other values as JSON; NULL when missing.
 */
char *
SchemaMemberText(const char *json, const char *key)
{
	json_object *obj = JsonParse(json, strlen(json), NULL);
	json_object *v;
	JsonGuard  *g;
	char	   *out = NULL;

	if (obj == NULL)
		return NULL;
	g = JsonGuardNew(obj);
	if (json_object_is_type(obj, json_type_object) && json_object_object_get_ex(obj, key, &v))
		out = json_object_is_type(v, json_type_string) ? pstrdup(json_object_get_string(v)) :
			pstrdup(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
	JsonGuardRelease(g);
	return out;
}

/*
 * The schema of llm.classify for labels given as a JSON array of
 * strings: {"label": one of them}.
 */
char *
SchemaLabelsSchema(const char *labels_json)
{
	return psprintf("{\"type\": \"object\", \"properties\": {\"label\": {\"type\": \"string\", \"enum\": %s}}, "
					"\"required\": [\"label\"], \"additionalProperties\": false}", labels_json);
}

/* ----------------------------------------------------------------------
 * Answers written into columns
 * ---------------------------------------------------------------------- */

/* A JSON value as a column's input text: a string unquoted, others JSON. */
static char *
value_text(json_object *v)
{
	if (json_object_is_type(v, json_type_string))
		return pnstrdup(json_object_get_string(v), json_object_get_string_len(v));
	return pstrdup(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
}

/*
 * A validated answer (an object, JSON text) as the text of one column:
 * the whole object for a json or jsonb column; for any other column, the
 * value of an object's only property (a label into an enum or text
 * column, a yes or no into a boolean, an amount into a numeric), else the
 * whole object as JSON text.  *isnull for a JSON null written as SQL NULL.
 */
char *
SchemaAnswerForColumn(const char *json, bool json_column, bool *isnull)
{
	json_object *obj;
	JsonGuard  *g;
	char	   *out;

	*isnull = false;
	if (json_column || (obj = JsonParse(json, strlen(json), NULL)) == NULL)
		return pstrdup(json);
	g = JsonGuardNew(obj);
	out = NULL;
	if (json_object_is_type(obj, json_type_object) && json_object_object_length(obj) == 1)
	{
		json_object_object_foreach(obj, key, val)
		{
			(void) key;
			if (val == NULL)
				*isnull = true;
			else
				out = value_text(val);
		}
	}
	else
		out = pstrdup(json);
	JsonGuardRelease(g);
	return out;
}

/*
 * The members of a validated answer, for a write-back spread over the
 * columns of the same names: each with its value as JSON text (for json
 * and jsonb columns) and as input text (strings unquoted); a JSON null
 * has both NULL.
 */
List *
SchemaAnswerMembers(const char *json)
{
	json_object *obj = JsonParse(json, strlen(json), NULL);
	JsonGuard  *g;
	List	   *out = NIL;

	if (obj == NULL)
		return NIL;
	g = JsonGuardNew(obj);
	if (json_object_is_type(obj, json_type_object))
	{
		json_object_object_foreach(obj, key, val)
		{
			LlmAnswerMember *m = palloc0(sizeof(LlmAnswerMember));

			m->name = pstrdup(key);
			if (val != NULL)
			{
				m->json = pstrdup(json_object_to_json_string_ext(val, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
				m->text = value_text(val);
			}
			out = lappend(out, m);
		}
	}
	JsonGuardRelease(g);
	return out;
}

/* The names of the properties of a request's schema (the root object's). */
List *
SchemaPropertyNames(LlmRequest *req)
{
	json_object *props = JsonGetObject(JsonGetObject(req->obj, "json_schema"), "properties");
	List	   *out = NIL;

	if (props == NULL)
		return NIL;
	{
		json_object_object_foreach(props, key, val)
		{
			(void) val;
			out = lappend(out, pstrdup(key));
		}
	}
	return out;
}

/* The setting of answers with a shape: how often an invalid one is asked for again. */
void
SchemaDefineSettings(void)
{
	DefineCustomIntVariable("llm.validation_retries",
							"Times an answer that breaks its json_schema is asked for again, with the validation error.",
							"Each time is a call of its own, paid and recorded in llm.usage with the outcome invalid.",
							&llm_validation_retries, 1, 0, 10,
							PGC_USERSET, 0, NULL, NULL, NULL);
}
