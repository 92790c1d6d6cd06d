/*-------------------------------------------------------------------------
 *
 * json.c
 *	  Chat requests in the OpenAI shape: building them from a prompt or
 *	  from a caller's JSON, checking every option a user can get wrong, and
 *	  the protocol-neutral parts of reading replies (error bodies, stream
 *	  dispatch).  The protocol specifics live in provider_openai.c and
 *	  provider_anthropic.c.
 *
 *	  Every json-c object is owned by a JsonGuard or an LlmRequest, both
 *	  freed by memory context callbacks, so an ERROR raised anywhere leaks
 *	  nothing.  This file must not include utils/builtins.h.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include <math.h>

#include "lib/stringinfo.h"
#include "utils/memutils.h"

#include "llm_json.h"

/* Put a guarded object when its memory context goes away. */
static void
json_guard_cb(void *arg)
{
	JsonGuard  *g = (JsonGuard *) arg;

	if (g->obj)
		json_object_put(g->obj);
	g->obj = NULL;
}

/* Tie a json-c object to the current memory context. */
JsonGuard *
JsonGuardNew(json_object *obj)
{
	JsonGuard  *g = palloc0(sizeof(JsonGuard));

	g->obj = obj;
	g->cb.func = json_guard_cb;
	g->cb.arg = g;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, &g->cb);
	return g;
}

/* Put the guarded object now. */
void
JsonGuardRelease(JsonGuard *g)
{
	json_guard_cb(g);
}

/*
 * Parse JSON text; NULL when it is not one complete JSON value.  Leading
 * and trailing white space is allowed (DeepSeek sends blank lines before
 * the body while it holds a connection open).
 */
json_object *
JsonParseOrNull(const char *text, size_t len)
{
	/* one tokener per process, reset before each parse */
	static json_tokener *tok = NULL;
	json_object *obj;
	size_t		off;

	if (len > INT_MAX)
		return NULL;
	if (tok == NULL)
		tok = json_tokener_new();
	if (tok == NULL)
		return NULL;
	json_tokener_reset(tok);
	obj = json_tokener_parse_ex(tok, text, (int) len);
	if (obj != NULL)
	{
		/* only white space may follow the value */
		for (off = json_tokener_get_parse_end(tok); off < len; off++)
			if (!isspace((unsigned char) text[off]))
			{
				json_object_put(obj);
				obj = NULL;
				break;
			}
	}
	/* an incomplete value leaves state behind: drop it now */
	json_tokener_reset(tok);
	return obj;
}

/* Serialize to palloc'd text. */
char *
JsonToPstr(json_object *obj)
{
	return pstrdup(json_object_to_json_string_ext(obj,
												  JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
}

static json_object *member_of_type(json_object *obj, const char *key, json_type type);

/* A string member, or NULL when missing, null or not a string. */
const char *
JsonGetString(json_object *obj, const char *key)
{
	json_object *v = member_of_type(obj, key, json_type_string);

	return v ? json_object_get_string(v) : NULL;
}

/* A member of one JSON type, or NULL. */
static json_object *
member_of_type(json_object *obj, const char *key, json_type type)
{
	json_object *v;

	if (obj == NULL || !json_object_is_type(obj, json_type_object) ||
		!json_object_object_get_ex(obj, key, &v) ||
		!json_object_is_type(v, type))
		return NULL;
	return v;
}

/* An object member, or NULL. */
json_object *
JsonGetObject(json_object *obj, const char *key)
{
	return member_of_type(obj, key, json_type_object);
}

/* An array member, or NULL. */
json_object *
JsonGetArray(json_object *obj, const char *key)
{
	return member_of_type(obj, key, json_type_array);
}

/* An integer member (a JSON number that is a whole number). */
bool
JsonGetInt64(json_object *obj, const char *key, int64 *val)
{
	json_object *v;

	if (obj == NULL || !json_object_is_type(obj, json_type_object) ||
		!json_object_object_get_ex(obj, key, &v))
		return false;
	if (json_object_is_type(v, json_type_int))
	{
		*val = json_object_get_int64(v);
		return true;
	}
	if (json_object_is_type(v, json_type_double))
	{
		double		d = json_object_get_double(v);

		if (isfinite(d) && d == floor(d))
		{
			*val = (int64) d;
			return true;
		}
	}
	return false;
}

/*
 * The text of a message content: a string, or the concatenated "text" of
 * an array of parts.  NULL for null or anything else.
 */
char *
JsonContentText(json_object *content)
{
	if (content == NULL)
		return NULL;
	if (json_object_is_type(content, json_type_string))
		return pstrdup(json_object_get_string(content));
	if (json_object_is_type(content, json_type_array))
	{
		StringInfoData buf;
		size_t		i,
					n = json_object_array_length(content);
		bool		any = false;

		initStringInfo(&buf);
		for (i = 0; i < n; i++)
		{
			const char *t = JsonGetString(json_object_array_get_idx(content, i), "text");

			if (t)
			{
				appendStringInfoString(&buf, t);
				any = true;
			}
		}
		return any ? buf.data : NULL;
	}
	return NULL;
}

/* ---- checking what callers send ---- */

static void
bad_option(const char *key, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid option \"%s\"", key),
			 errdetail("The option \"%s\" must be %s.", key, what),
			 errhint("Options use the OpenAI chat completion names; see the pg_llm README.")));
}

static bool
is_number(json_object *v)
{
	return json_object_is_type(v, json_type_int) ||
		json_object_is_type(v, json_type_double);
}

/* A number within [lo, hi], or null (null and missing are the same). */
static void
check_number(const char *key, json_object *v, double lo, double hi, const char *what)
{
	double		d;

	if (v == NULL)
		return;
	if (!is_number(v))
		bad_option(key, what);
	d = json_object_get_double(v);
	if (!isfinite(d) || d < lo || d > hi)
		bad_option(key, what);
}

/* A whole number >= lo, or null. */
static void
check_int(const char *key, json_object *v, int64 lo, const char *what)
{
	double		d;

	if (v == NULL)
		return;
	if (!is_number(v))
		bad_option(key, what);
	d = json_object_get_double(v);
	if (!isfinite(d) || d != floor(d) || d < (double) lo)
		bad_option(key, what);
}

/* Check response_format: text, json_object or json_schema with a name. */
static void
check_response_format(json_object *v)
{
	const char *type;

	if (v == NULL)
		return;
	type = JsonGetString(v, "type");
	if (type == NULL)
		bad_option("response_format", "an object with a \"type\" of \"text\", \"json_object\" or \"json_schema\"");
	if (strcmp(type, "json_schema") == 0)
	{
		json_object *js = JsonGetObject(v, "json_schema");

		if (js == NULL || JsonGetString(js, "name") == NULL)
			bad_option("response_format", "{\"type\": \"json_schema\", \"json_schema\": {\"name\": ..., \"schema\": {...}}} for type json_schema");
	}
	else if (strcmp(type, "text") != 0 && strcmp(type, "json_object") != 0)
		bad_option("response_format", "an object with a \"type\" of \"text\", \"json_object\" or \"json_schema\"");
}

/* Check the messages array of a chat_completion request. */
static void
check_messages(json_object *msgs)
{
	size_t		i,
				n;

	if (msgs == NULL || !json_object_is_type(msgs, json_type_array) ||
		json_object_array_length(msgs) == 0)
		bad_option("messages", "a non-empty array of {\"role\": ..., \"content\": ...} objects");
	n = json_object_array_length(msgs);
	for (i = 0; i < n; i++)
	{
		json_object *m = json_object_array_get_idx(msgs, i);
		const char *role = JsonGetString(m, "role");
		json_object *content = NULL;

		if (role == NULL ||
			(strcmp(role, "system") != 0 && strcmp(role, "developer") != 0 &&
			 strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0 &&
			 strcmp(role, "tool") != 0))
			bad_option("messages", "an array of objects whose \"role\" is system, developer, user, assistant or tool");
		json_object_object_get_ex(m, "content", &content);
		if (content != NULL && !json_object_is_type(content, json_type_string) &&
			!json_object_is_type(content, json_type_array))
			bad_option("messages", "an array of objects whose \"content\" is a string or an array of parts");
		if (content == NULL && strcmp(role, "assistant") != 0)
			bad_option("messages", "an array of objects with a \"content\" (only assistant messages with tool calls may omit it)");
	}
}

/*
 * Check every option pg_llm knows the meaning of.  Unknown keys pass
 * through to the provider unchanged (vLLM's top_k, say); the provider
 * rejects what it does not know with its own message.
 */
static void
check_options(json_object *o, bool allow_messages)
{
	json_object *v;

	if (!json_object_is_type(o, json_type_object))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("options must be a JSON object"),
				 errhint("Pass options such as '{\"temperature\": 0, \"max_tokens\": 100}'.")));

#define GET(k) (json_object_object_get_ex(o, (k), &v) && !json_object_is_type(v, json_type_null) ? v : NULL)
	check_number("temperature", GET("temperature"), 0, 2, "a number from 0 to 2");
	check_number("top_p", GET("top_p"), 0, 1, "a number from 0 to 1");
	check_number("presence_penalty", GET("presence_penalty"), -2, 2, "a number from -2 to 2");
	check_number("frequency_penalty", GET("frequency_penalty"), -2, 2, "a number from -2 to 2");
	check_int("max_tokens", GET("max_tokens"), 1, "a positive whole number");
	check_int("max_completion_tokens", GET("max_completion_tokens"), 1, "a positive whole number");
	check_int("n", GET("n"), 1, "a positive whole number");
	check_int("seed", GET("seed"), PG_INT64_MIN, "a whole number");
	if ((v = GET("stop")) != NULL)
	{
		bool		ok = json_object_is_type(v, json_type_string);

		if (json_object_is_type(v, json_type_array))
		{
			size_t		i,
						n = json_object_array_length(v);

			ok = n <= 4;
			for (i = 0; i < n; i++)
				if (!json_object_is_type(json_object_array_get_idx(v, i), json_type_string))
					ok = false;
		}
		if (!ok)
			bad_option("stop", "a string or an array of at most 4 strings");
	}
	check_response_format(GET("response_format"));
	if ((v = GET("tools")) != NULL)
	{
		size_t		i,
					n;

		if (!json_object_is_type(v, json_type_array))
			bad_option("tools", "an array of {\"type\": \"function\", \"function\": {\"name\": ...}} objects");
		n = json_object_array_length(v);
		for (i = 0; i < n; i++)
			if (JsonGetString(JsonGetObject(json_object_array_get_idx(v, i), "function"), "name") == NULL)
				bad_option("tools", "an array of {\"type\": \"function\", \"function\": {\"name\": ...}} objects");
	}
	if ((v = GET("tool_choice")) != NULL &&
		!json_object_is_type(v, json_type_string) &&
		!json_object_is_type(v, json_type_object))
		bad_option("tool_choice", "\"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}");
	if (GET("stream") != NULL || GET("stream_options") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"stream\" is not accepted here"),
				 errhint("Use llm.chat_stream() to receive a reply as it is generated.")));
	if (allow_messages)
		check_messages(GET("messages"));
	else if (GET("messages") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"messages\" is not accepted by llm.chat"),
				 errhint("Use llm.chat_completion() to send a whole conversation.")));
#undef GET
}

/* Put the request's json-c object when its memory context goes away. */
static void
request_free_cb(void *arg)
{
	LlmRequest *req = (LlmRequest *) arg;

	if (req->obj)
		json_object_put(req->obj);
	req->obj = NULL;
}

/* A new request object, freed with the current memory context. */
static LlmRequest *
request_new(json_object *obj)
{
	LlmRequest *req = palloc0(sizeof(LlmRequest));
	MemoryContextCallback *cb = palloc0(sizeof(MemoryContextCallback));

	req->obj = obj;
	cb->func = request_free_cb;
	cb->arg = req;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
	return req;
}

/* Parse caller JSON (already UTF-8) into a guarded request object. */
static LlmRequest *
request_from_text(const char *text, const char *what)
{
	json_object *obj = JsonParseOrNull(text, strlen(text));

	if (obj == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is not valid JSON", what),
				 errhint("Pass a JSON object, such as '{\"temperature\": 0}'.")));
	return request_new(obj);
}

/* Add a {role, content} message. */
static void
add_message(json_object *msgs, const char *role, const char *content)
{
	json_object *m = json_object_new_object();

	json_object_object_add(m, "role", json_object_new_string(role));
	json_object_object_add(m, "content", json_object_new_string(content));
	json_object_array_add(msgs, m);
}

/*
 * The request of llm.chat: options, then the system prompt and the user
 * prompt as messages.  All text is UTF-8 already.
 */
LlmRequest *
LlmRequestFromPrompt(const char *prompt, const char *system, const char *options_json)
{
	LlmRequest *req;
	json_object *msgs;

	if (options_json)
	{
		req = request_from_text(options_json, "options");
		check_options(req->obj, false);
		json_object_object_del(req->obj, "model");
	}
	else
		req = request_new(json_object_new_object());

	msgs = json_object_new_array();
	json_object_object_add(req->obj, "messages", msgs);
	if (system)
		add_message(msgs, "system", system);
	add_message(msgs, "user", prompt);
	return req;
}

/* The request of llm.chat_completion: a whole OpenAI-style request. */
LlmRequest *
LlmRequestFromJson(const char *request_json)
{
	LlmRequest *req = request_from_text(request_json, "request");

	check_options(req->obj, true);
	return req;
}

/* The "model" a request names itself, if any. */
const char *
LlmRequestModel(LlmRequest *req)
{
	return JsonGetString(req->obj, "model");
}

/* max_tokens (or max_completion_tokens) of a request, or 0. */
int64
LlmRequestMaxTokens(LlmRequest *req)
{
	int64		v = 0;

	if (JsonGetInt64(req->obj, "max_tokens", &v) ||
		JsonGetInt64(req->obj, "max_completion_tokens", &v))
		return v;
	return 0;
}

/* The body to send on a route, as palloc'd text. */
char *
ProviderRequestBody(LlmRequest *req, const LlmRoute *route, bool stream)
{
	json_object *body;
	JsonGuard  *g;
	char	   *text;

	if (route->provider->protocol == LLM_ANTHROPIC)
		body = AnthropicBuildBody(req, route, stream);
	else
		body = OpenAIBuildBody(req, route, stream);
	g = JsonGuardNew(body);
	text = JsonToPstr(body);
	JsonGuardRelease(g);
	return text;
}

/*
 * Read a 2xx reply.  false, with *problem set, when the body is not JSON
 * or not shaped like a reply.
 */
bool
ProviderParseReply(const LlmRoute *route, const char *body, size_t len,
				   bool want_json, LlmReply *reply, char **problem)
{
	json_object *root = JsonParseOrNull(body, len);
	JsonGuard  *g;
	bool		ok;

	memset(reply, 0, sizeof(LlmReply));
	if (root == NULL || !json_object_is_type(root, json_type_object))
	{
		if (root)
			json_object_put(root);
		*problem = pstrdup("The response body is not a JSON object.");
		return false;
	}
	g = JsonGuardNew(root);
	if (route->provider->protocol == LLM_ANTHROPIC)
		ok = AnthropicParseReply(root, route, want_json, reply, problem);
	else
		ok = OpenAIParseReply(root, route, want_json, reply, problem);
	JsonGuardRelease(g);
	return ok;
}

/* A member as text whatever its JSON type (codes are strings or numbers). */
static char *
member_text(json_object *obj, const char *key)
{
	json_object *v;

	if (obj == NULL || !json_object_object_get_ex(obj, key, &v) ||
		json_object_is_type(v, json_type_null))
		return NULL;
	if (json_object_is_type(v, json_type_string))
		return pstrdup(json_object_get_string(v));
	return pstrdup(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
}

/*
 * Read an error body of any of the shapes in the wild: OpenAI's nested
 * {"error": {...}}, Anthropic's {"type": "error", "error": {...}}, vLLM's
 * flat {"object": "error", "message": ...}, or a bare {"error": "text"}.
 * Anything else (HTML from a proxy, nothing at all) leaves the fields NULL.
 */
void
ProviderParseError(const char *body, size_t len, LlmErrorBody *err)
{
	json_object *root;
	json_object *e;
	JsonGuard  *g;

	memset(err, 0, sizeof(LlmErrorBody));
	root = body ? JsonParseOrNull(body, len) : NULL;
	if (root == NULL)
		return;
	g = JsonGuardNew(root);
	e = JsonGetObject(root, "error");
	if (e)
	{
		err->message = member_text(e, "message");
		err->type = member_text(e, "type");
		err->code = member_text(e, "code");
	}
	else if (JsonGetString(root, "error"))
		err->message = member_text(root, "error");
	else
	{
		err->message = member_text(root, "message");
		err->type = member_text(root, "type");
		err->code = member_text(root, "code");
	}
	JsonGuardRelease(g);
}

/*
 * One SSE event of a stream.  OpenAI's "[DONE]" is not JSON; everything
 * else is parsed and handed to the protocol's decoder.  Data that is not
 * JSON ends the stream with an error rather than being skipped, so a
 * reply is never silently shortened.
 */
void
ProviderStreamEvent(LlmStreamDecoder *dec, const char *type, const char *data, size_t len)
{
	json_object *volatile root;

	if (dec->protocol == LLM_OPENAI && len >= 6 && strncmp(data, "[DONE]", 6) == 0)
	{
		dec->finished = true;
		return;
	}
	if (len == 0 && dec->protocol == LLM_ANTHROPIC && type && strcmp(type, "ping") == 0)
		return;
	root = JsonParseOrNull(data, len);
	if (root == NULL)
	{
		dec->error = psprintf("a stream event is not JSON: %.80s", data);
		return;
	}

	/*
	 * Once per chunk: a PG_TRY rather than a JsonGuard, whose callback would
	 * stay registered in the stream's context until the stream ends.
	 */
	PG_TRY();
	{
		if (dec->protocol == LLM_ANTHROPIC)
			AnthropicStreamEvent(dec, type, root);
		else
			OpenAIStreamEvent(dec, root);
	}
	PG_CATCH();
	{
		json_object_put(root);
		PG_RE_THROW();
	}
	PG_END_TRY();
	json_object_put(root);
}
