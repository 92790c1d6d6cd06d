/*-------------------------------------------------------------------------
 *
 * request.c
 *	  Chat requests in the OpenAI shape: built from a prompt and options
 *	  (llm.chat, llm.chat_stream, the queue) or from a caller's whole
 *	  request (llm.chat_completion), with every option whose meaning
 *	  pg_llm knows checked before anything is sent.  A key one typo away
 *	  from a known one is refused ("temprature"); keys far from every
 *	  known name pass through to the provider unchanged (a server's own
 *	  extras), and so do the keys of "extra_body".  pg_llm's own options
 *	  (on_error) are taken out of the request.
 *
 *	  Every json-c object is owned by an LlmRequest, freed by a memory
 *	  context callback.  This file must not include utils/builtins.h (see
 *	  llm_json.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include <math.h>

#include "access/xact.h"
#include "common/pg_prng.h"
#include "mb/pg_wchar.h"
#include "lib/stringinfo.h"
#include "utils/memutils.h"
#include "utils/guc.h"

#include "llm_json.h"
#include "names.h"
#include "request_int.h"
#include "schema.h"
#include "tokens.h"

/*
 * Every key a request may carry that pg_llm knows: the OpenAI chat
 * completion names, pg_llm's own options, and the extras of
 * OpenAI-compatible servers (vLLM, OpenRouter, Ollama, Mistral, DeepSeek)
 * that are near one of those (top_k is one step from top_p).  A key
 * within a typo of one of these, but not one of them, is refused.  The
 * README lists them; keep the two in step.
 */
static const char *const known_keys[] = {
	/* OpenAI chat completions */
	"model", "messages", "temperature", "top_p", "n", "stream", "stream_options",
	"stop", "max_tokens", "max_completion_tokens", "presence_penalty",
	"frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "user", "seed",
	"response_format", "tools", "tool_choice", "parallel_tool_calls", "functions",
	"function_call", "service_tier", "store", "metadata", "reasoning_effort",
	"modalities", "audio", "prediction", "web_search_options", "verbosity",
	"prompt_cache_key", "safety_identifier",
	/* pg_llm's own */
	"on_error", "extra_body", "json_schema", "cache", "tag",
	/* extras of compatible servers */
	"top_k", "top_a", "min_p", "min_tokens", "best_of", "repetition_penalty",
	"length_penalty", "stop_token_ids", "ignore_eos", "thinking", "reasoning",
	"include_reasoning", "guided_json", "guided_regex", "guided_choice",
	"guided_grammar", "chat_template_kwargs", "safe_prompt", "random_seed",
	"keep_alive", "provider", "models", "route", "transforms"
};

/*
 * Every key an embedding request may carry that pg_llm knows: OpenAI's
 * embeddings names, pg_llm's own options, and the extras of compatible
 * servers near them (vLLM's truncate_prompt_tokens, Ollama's keep_alive).
 */
static const char *const embed_known_keys[] = {
	"model", "input", "dimensions", "encoding_format", "user",
	"on_error", "extra_body", "tag",
	"truncate_prompt_tokens", "keep_alive", "normalize", "input_type", "truncate"
};

/*
 * Refuse a key that is a typo of a known one; any other key passes.
 */
static void
check_key_of(const char *key, const char *const *known, int nknown)
{
	char	   *near = NamesSuggest(key, known, nknown);

	if (near)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown option \"%s\"", key),
				 errdetail("It is one typo away from a known option, so it was not sent: a provider would reject it, or ignore it."),
				 errhint("Did you mean %s? A provider's own key that pg_llm should not check goes into \"extra_body\": {\"extra_body\": {\"%s\": ...}}.",
						 near, key)));
}

static void
check_key(const char *key)
{
	check_key_of(key, known_keys, lengthof(known_keys));
}

int			llm_max_request_size_kb = 32768;

/* Texts at least this long are held outside json-c (see llm_json.h). */
#define PART_MIN_BYTES (64 * 1024)

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

/* A whole number within [lo, hi], or null. */
static void
check_int(const char *key, json_object *v, int64 lo, int64 hi, const char *what)
{
	int64		i;

	if (v == NULL)
		return;
	if (!is_number(v) || !JsonWholeNumber(v, &i) || i < lo || i > hi)
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
check_options(json_object *o, bool whole_request)
{
	json_object *v;

	if (!json_object_is_type(o, json_type_object))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", whole_request ? "request" : "options"),
				 whole_request ?
				 errhint("Pass a request such as '{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}'.") :
				 errhint("Pass options such as '{\"temperature\": 0, \"max_tokens\": 100}'.")));

	{
		json_object_object_foreach(o, key, val)
		{
			(void) val;
			check_key(key);
		}
	}

#define GET(k) (json_object_object_get_ex(o, (k), &v) && !json_object_is_type(v, json_type_null) ? v : NULL)
	check_number("temperature", GET("temperature"), 0, 2, "a number from 0 to 2");
	check_number("top_p", GET("top_p"), 0, 1, "a number from 0 to 1");
	check_number("presence_penalty", GET("presence_penalty"), -2, 2, "a number from -2 to 2");
	check_number("frequency_penalty", GET("frequency_penalty"), -2, 2, "a number from -2 to 2");
	check_int("max_tokens", GET("max_tokens"), 1, PG_INT32_MAX,
			  "a whole number from 1 to 2147483647");
	check_int("max_completion_tokens", GET("max_completion_tokens"), 1, PG_INT32_MAX,
			  "a whole number from 1 to 2147483647");
	check_int("n", GET("n"), 1, 128, "a whole number from 1 to 128");
	check_int("seed", GET("seed"), PG_INT64_MIN + 1, PG_INT64_MAX - 1,
			  "a whole number within the 64-bit integer range");
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
	if ((v = GET("parallel_tool_calls")) != NULL && !json_object_is_type(v, json_type_boolean))
		bad_option("parallel_tool_calls", "true or false");
	if ((v = GET("tool_choice")) != NULL &&
		!json_object_is_type(v, json_type_string) &&
		!json_object_is_type(v, json_type_object))
		bad_option("tool_choice", "\"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}");
	if (GET("stream") != NULL || GET("stream_options") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"stream\" is not accepted here"),
				 errhint("Use llm.chat_stream() to receive a reply as it is generated.")));
	/* a call that returns one text would pay for the other choices and drop them */
	if (!whole_request && (v = GET("n")) != NULL && json_object_get_int64(v) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"n\" above 1 is not accepted here"),
				 errdetail("This call returns one reply: the provider would bill the other choices, and they would be dropped."),
				 errhint("Use llm.chat_completion() to receive several choices.")));
	if (whole_request)
		check_messages(GET("messages"));
	else if (GET("messages") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"messages\" is not accepted by llm.chat"),
				 errhint("Use llm.chat_completion() to send a whole conversation.")));
#undef GET
}

/*
 * Take pg_llm's own options out of a checked request (they are not the
 * provider's), and merge the keys of "extra_body" into it unchecked.
 */
static void
take_own_options(LlmRequest *req)
{
	json_object *o = req->obj;
	json_object *v;

	if (json_object_object_get_ex(o, "on_error", &v))
	{
		const char *mode = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;

		if (mode == NULL || (strcmp(mode, "raise") != 0 && strcmp(mode, "null") != 0))
			bad_option("on_error", "\"raise\" (the default: a failed call raises its error) or \"null\" (it returns NULL with a WARNING)");
		req->on_error_null = (strcmp(mode, "null") == 0);
		json_object_object_del(o, "on_error");
	}
	if (json_object_object_get_ex(o, "tag", &v))
	{
		req->tag = RequestCheckTag(v);
		json_object_object_del(o, "tag");
	}
	if (json_object_object_get_ex(o, "cache", &v))
	{
		if (!json_object_is_type(v, json_type_boolean))
			bad_option("cache", "true (serve the reply from the response cache, and keep it there) or false (neither), overriding llm.cache");
		req->cache = json_object_get_boolean(v) ? 1 : 0;
		json_object_object_del(o, "cache");
	}
	if (json_object_object_get_ex(o, "extra_body", &v))
	{
		json_object *extra = json_object_get(v);

		json_object_object_del(o, "extra_body");
		if (!json_object_is_type(extra, json_type_object))
		{
			json_object_put(extra);
			bad_option("extra_body", "an object of keys sent to the provider as they are");
		}
		{
			json_object_object_foreach(extra, key, val)
			{
				if (strcmp(key, "messages") == 0 || strcmp(key, "model") == 0 ||
					strcmp(key, "stream") == 0 || strcmp(key, "stream_options") == 0 ||
					json_object_object_get_ex(o, key, NULL))
				{
					char	   *k = pstrdup(key);

					json_object_put(extra);
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("option \"%s\" cannot be given in extra_body", k),
							 errhint("extra_body is for a provider's own keys; give pg_llm's options, messages and model where they belong, once.")));
				}
				json_object_object_add(o, key, json_object_get(val));
			}
		}
		json_object_put(extra);
	}
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
	req->nonce = pg_prng_uint64(&pg_global_prng_state);
	req->cache = -1;
	cb->func = request_free_cb;
	cb->arg = req;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
	return req;
}

/* The placeholder of part number i, as a C string. */
static char *
placeholder(LlmRequest *req, int i)
{
	return psprintf("\001pg_llm:%016llx:%d\001", (unsigned long long) req->nonce, i);
}

/*
 * A JSON string of a text of the request: short ones in json-c, long ones
 * a placeholder for a part that points at the caller's text (which must
 * outlive the request; every caller's does: its arguments, its item).
 */
static json_object *
text_value(LlmRequest *req, const char *s, size_t len)
{
	RequestPart *part;

	if (len < PART_MIN_BYTES)
		return json_object_new_string_len(s, (int) len);
	part = palloc(sizeof(RequestPart));
	part->data = s;
	part->len = len;
	part->wire_len = JsonEscapedLength(s, len);
	req->parts = lappend(req->parts, part);
	return json_object_new_string(placeholder(req, list_length(req->parts) - 1));
}

/*
 * Serialized JSON with the request's parts spliced in for their
 * placeholders (json-c writes \001 as \u0001): with out NULL, only the
 * length is counted.
 */
static size_t
splice_parts(LlmRequest *req, const char *skel, size_t skel_len, char *out)
{
	char	   *prefix = psprintf("\\u0001pg_llm:%016llx:", (unsigned long long) req->nonce);
	size_t		plen = strlen(prefix);
	const char *p = skel;
	const char *end = skel + skel_len;
	size_t		total = 0;

	for (;;)
	{
		const char *hit = req->parts ? strstr(p, prefix) : NULL;
		char	   *num_end;
		long		i;
		const char *tok_end;

		if (hit == NULL)
		{
			if (out)
				memcpy(out + total, p, end - p);
			total += end - p;
			break;
		}
		i = strtol(hit + plen, &num_end, 10);
		if (i < 0 || i >= list_length(req->parts) || strncmp(num_end, "\\u0001", 6) != 0)
		{
			/* not ours after all: copied as it is */
			if (out)
				memcpy(out + total, p, hit + 1 - p);
			total += hit + 1 - p;
			p = hit + 1;
			continue;
		}
		tok_end = num_end + 6;
		if (out)
			memcpy(out + total, p, hit - p);
		total += hit - p;
		{
			RequestPart *part = list_nth(req->parts, (int) i);

			if (out)
				(void) JsonEscapeInto(out + total, part->data, part->len);
			total += part->wire_len;
		}
		p = tok_end;
	}
	pfree(prefix);
	return total;
}

/*
 * A JSON object of a request (the request itself, or a body built from
 * it) as text, with the request's long texts spliced in: one buffer of
 * the exact size, palloc'd, or malloc'd with use_malloc (for a transfer
 * that takes it over; NULL when malloc fails).  *len is its length.
 */
char *
RequestSerialize(LlmRequest *req, json_object *obj, bool use_malloc, size_t *len)
{
	size_t		skel_len;
	const char *skel = json_object_to_json_string_length(obj,
														 JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE,
														 &skel_len);
	size_t		n = splice_parts(req, skel, skel_len, NULL);
	char	   *out = use_malloc ? malloc(n + 1) : palloc(n + 1);

	if (out == NULL)
		return NULL;
	(void) splice_parts(req, skel, skel_len, out);
	out[n] = '\0';
	*len = n;
	return out;
}

/* The size of a request as JSON, its long texts included. */
size_t
RequestWireSize(LlmRequest *req)
{
	size_t		skel_len;
	const char *skel = json_object_to_json_string_length(req->obj,
														 JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE,
														 &skel_len);

	return splice_parts(req, skel, skel_len, NULL);
}

/*
 * Refuse a request larger than llm.max_request_size, before anything is
 * sent or queued (a call, an enqueue, a queue item the worker sets up, a
 * batch line).
 */
void
RequestCheckSize(size_t bytes)
{
	if (bytes > (size_t) llm_max_request_size_kb * 1024)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("request of %zu bytes exceeds llm.max_request_size", bytes),
				 errdetail("The limit is %d kB (the prompt, the system prompt and the options as JSON); nothing was sent.",
						   llm_max_request_size_kb),
				 errhint("Send a shorter prompt, or ask an administrator to raise llm.max_request_size.")));
}

/* Parse caller JSON (already UTF-8) into a guarded request object. */
static LlmRequest *
request_from_text(const char *text, const char *what)
{
	const char *why;
	json_object *obj = JsonParse(text, strlen(text), &why);

	if (obj == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s cannot be read: %s", what, why),
				 strstr(why, "deep") ?
				 errdetail("pg_llm reads JSON nested up to %d levels deep.", LLM_JSON_MAX_DEPTH) : 0,
				 errhint("Pass a JSON object, such as '{\"temperature\": 0}'.")));
	return request_new(obj);
}

/* Add a {role, content} message. */
static void
add_message(LlmRequest *req, json_object *msgs, const char *role, const char *content, size_t len)
{
	json_object *m = json_object_new_object();

	json_object_object_add(m, "role", json_object_new_string(role));
	json_object_object_add(m, "content", text_value(req, content, len));
	json_object_array_add(msgs, m);
}

/*
 * The request of llm.chat: options, then the system prompt and the user
 * prompt as messages.  All text is UTF-8 already; the prompt and system
 * are given with their lengths (they need not be terminated) and must
 * outlive the request.  A request larger than llm.max_request_size is
 * refused here, on every path.
 */
LlmRequest *
RequestFromPromptText(const char *prompt, size_t prompt_len, const char *system,
					  size_t system_len, const char *options_json)
{
	LlmRequest *req;
	json_object *msgs;

	/* the texts alone already too large: refused before any work */
	RequestCheckSize(prompt_len + (system ? system_len : 0) +
					 (options_json ? strlen(options_json) : 0));
	if (options_json)
	{
		req = request_from_text(options_json, "options");
		check_options(req->obj, false);
		RequestCompileSchema(req);
		take_own_options(req);
		json_object_object_del(req->obj, "model");
	}
	else
		req = request_new(json_object_new_object());

	msgs = json_object_new_array();
	json_object_object_add(req->obj, "messages", msgs);
	if (system)
		add_message(req, msgs, "system", system, system_len);
	add_message(req, msgs, "user", prompt, prompt_len);
	RequestCheckSize(RequestWireSize(req));
	return req;
}

/* RequestFromPromptText of terminated strings. */
LlmRequest *
RequestFromPrompt(const char *prompt, const char *system, const char *options_json)
{
	return RequestFromPromptText(prompt, strlen(prompt), system,
								 system ? strlen(system) : 0, options_json);
}

/* The request of llm.chat_completion: a whole OpenAI-style request. */
LlmRequest *
RequestFromJson(const char *request_json)
{
	LlmRequest *req;

	RequestCheckSize(strlen(request_json));
	req = request_from_text(request_json, "request");
	check_options(req->obj, true);
	RequestCompileSchema(req);
	take_own_options(req);
	return req;
}

/* An embedding option that is not what it must be. */
static void
bad_embed_option(const char *key, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid option \"%s\"", key),
			 errdetail("The option \"%s\" must be %s.", key, what),
			 errhint("Embedding options use the OpenAI embeddings names (dimensions, user); see the pg_llm README.")));
}

/*
 * Check the options of an embedding call: the ones whose meaning pg_llm
 * knows (dimensions, user, encoding_format, which must stay "float": the
 * vectors are read as numbers); "input" comes from the call's arguments.
 * Unknown keys pass through to the provider, as for chat.
 */
static void
check_embed_options(json_object *o)
{
	json_object *v;

	if (!json_object_is_type(o, json_type_object))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("options must be a JSON object"),
				 errhint("Pass options such as '{\"dimensions\": 256}'.")));
	{
		json_object_object_foreach(o, key, val)
		{
			(void) val;
			check_key_of(key, embed_known_keys, lengthof(embed_known_keys));
		}
	}
#define GET(k) (json_object_object_get_ex(o, (k), &v) && !json_object_is_type(v, json_type_null) ? v : NULL)
	if ((v = GET("dimensions")) != NULL)
	{
		int64		d;

		if (!is_number(v) || !JsonWholeNumber(v, &d) || d < 1 || d > 65535)
			bad_embed_option("dimensions", "a whole number from 1 to 65535");
	}
	if ((v = GET("user")) != NULL && !json_object_is_type(v, json_type_string))
		bad_embed_option("user", "a string");
	if ((v = GET("encoding_format")) != NULL &&
		(!json_object_is_type(v, json_type_string) || strcmp(json_object_get_string(v), "float") != 0))
		bad_embed_option("encoding_format", "\"float\" (pg_llm reads vectors as numbers)");
	if (GET("stream") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"stream\" is not accepted here"),
				 errhint("Embeddings are not streamed.")));
#undef GET
}

/*
 * The request of an embedding call: its options, checked, and its n
 * inputs (UTF-8, none NULL) as the "input" array.  With no inputs it only
 * checks the options (a statement does that before anything is sent).
 */
LlmRequest *
RequestForEmbedding(const char *const *inputs, int n, const char *options_json)
{
	LlmRequest *req;
	json_object *arr;
	int			i;

	if (options_json)
	{
		req = request_from_text(options_json, "options");
		check_embed_options(req->obj);
		take_own_options(req);
		if (json_object_object_get_ex(req->obj, "input", NULL))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"input\" is not accepted here"),
					 errhint("Pass the text to embed as the input argument.")));
		if (req->cache >= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"cache\" is not accepted by embedding calls"),
					 errdetail("The response cache keeps chat replies only."),
					 errhint("Leave the option out.")));
		json_object_object_del(req->obj, "model");
		/* the provider's encoding is always float: the vectors are read as numbers */
		json_object_object_del(req->obj, "encoding_format");
	}
	else
		req = request_new(json_object_new_object());
	arr = json_object_new_array_ext(Max(n, 1));
	json_object_object_add(req->obj, "input", arr);
	for (i = 0; i < n; i++)
		json_object_array_add(arr, json_object_new_string(inputs[i]));
	if (n > 0)
		RequestCheckSize(RequestWireSize(req));
	return req;
}

/* The number of inputs of an embedding request. */
int
RequestInputCount(LlmRequest *req)
{
	json_object *arr = JsonGetArray(req->obj, "input");

	return arr ? (int) json_object_array_length(arr) : 0;
}

/* The dimensions an embedding request asks for, or 0. */
int
RequestDimensions(LlmRequest *req)
{
	int64		d = 0;

	if (JsonGetInt64(req->obj, "dimensions", &d) && d > 0 && d <= PG_INT32_MAX)
		return (int) d;
	return 0;
}

/* The "model" a request names itself, if any. */
const char *
RequestModel(LlmRequest *req)
{
	return JsonGetString(req->obj, "model");
}

/*
 * The option tag: a label of the caller's, recorded in llm.usage (and so
 * in usage_summary and cost_report) and never sent.  A string of 1 to
 * LLM_USAGE_TAG_LEN - 1 bytes without control characters, or null (no
 * tag).  Returns it, palloc'd, or NULL.
 */
char *
RequestCheckTag(json_object *v)
{
	const char *t;
	size_t		len;
	size_t		i;

	if (v == NULL || json_object_is_type(v, json_type_null))
		return NULL;
	if (!json_object_is_type(v, json_type_string))
		bad_option("tag", "a string: a label of yours recorded with the call in llm.usage, such as \"nightly-triage\"");
	t = json_object_get_string(v);
	len = strlen(t);
	if (len == 0 || len >= LLM_USAGE_TAG_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid option \"tag\""),
				 errdetail("A tag is 1 to %d bytes long; this one has %zu.", LLM_USAGE_TAG_LEN - 1, len),
				 errhint("Use a short label, such as \"nightly-triage\"; llm.usage keeps it with each call.")));
	for (i = 0; i < len; i++)
		if ((unsigned char) t[i] < 0x20 || t[i] == 0x7f)
			bad_option("tag", "a label without control characters");
	/* llm.usage must be able to hold it: refused now, not lost later */
	if (GetDatabaseEncoding() != PG_UTF8 && IsTransactionState())
		(void) pg_any_to_server(t, (int) len, PG_UTF8);
	return pstrdup(t);
}

/* The option tag of a request, or NULL. */
const char *
RequestTag(LlmRequest *req)
{
	return req ? req->tag : NULL;
}

/* The option cache: 1 (true), 0 (false), or -1 when not given. */
int
RequestCacheOption(LlmRequest *req)
{
	return req->cache;
}

/* Does a failed call of this request return NULL (on_error "null")? */
bool
RequestOnErrorNull(LlmRequest *req)
{
	return req->on_error_null;
}

/*
 * The replies a request asks for ("n", 1 to 128): each is as long as
 * max_tokens allows, so the output a request may cost is n times that.
 */
int64
RequestChoices(LlmRequest *req)
{
	int64		v = 1;

	if (!JsonGetInt64(req->obj, "n", &v) || v < 1)
		return 1;
	return v;
}

/* max_tokens (or max_completion_tokens) of a request, or 0. */
int64
RequestMaxTokens(LlmRequest *req)
{
	int64		v = 0;

	if (JsonGetInt64(req->obj, "max_tokens", &v) ||
		JsonGetInt64(req->obj, "max_completion_tokens", &v))
		return v;
	return 0;
}

/* The estimated tokens of a JSON value as the provider would read it. */
static int64
json_tokens(json_object *v)
{
	const char *s;

	if (v == NULL || json_object_is_type(v, json_type_null))
		return 0;
	s = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	return TokensEstimate(s, strlen(s));
}

/*
 * The estimated tokens of a JSON string of a request: the text of the
 * part it stands for when it is a long text's placeholder.
 */
static int64
string_tokens(LlmRequest *req, json_object *v)
{
	const char *s = json_object_get_string(v);
	size_t		len = json_object_get_string_len(v);

	if (req->parts && len > 2 && s[0] == '\001' && s[len - 1] == '\001')
	{
		ListCell   *lc;
		int			i = 0;

		foreach(lc, req->parts)
		{
			char	   *ph = placeholder(req, i++);

			if (strcmp(ph, s) == 0)
			{
				RequestPart *part = lfirst(lc);

				return TokensEstimate(part->data, part->len);
			}
		}
	}
	return TokensEstimate(s, len);
}

/*
 * The input tokens of a request, estimated without a tokenizer
 * (tokens.c): each message's text and its framing, and what else the
 * provider reads (tools, a response format, a JSON schema); each input of
 * an embedding request.  The one estimate behind budgets, rate limits and
 * llm.estimate().
 */
int64
RequestEstimateTokens(LlmRequest *req)
{
	json_object *msgs = JsonGetArray(req->obj, "messages");
	json_object *inputs = JsonGetArray(req->obj, "input");
	int64		n = 0;
	size_t		i;

	if (inputs)
	{
		for (i = 0; i < json_object_array_length(inputs); i++)
		{
			json_object *in = json_object_array_get_idx(inputs, i);

			if (json_object_is_type(in, json_type_string))
				n += string_tokens(req, in);
			else
				n += json_tokens(in);
		}
		return n;
	}
	if (msgs)
	{
		for (i = 0; i < json_object_array_length(msgs); i++)
		{
			json_object *m = json_object_array_get_idx(msgs, i);
			json_object *content = NULL;
			char	   *text;

			n += TOKENS_PER_MESSAGE;
			if (!json_object_object_get_ex(m, "content", &content))
				continue;
			if (json_object_is_type(content, json_type_string))
				n += string_tokens(req, content);
			else if ((text = JsonContentText(content)) != NULL)
				n += TokensEstimate(text, strlen(text));
			n += json_tokens(JsonGetArray(m, "tool_calls"));
		}
		n += TOKENS_PER_REQUEST;
	}
	n += json_tokens(JsonGetArray(req->obj, "tools"));
	n += json_tokens(JsonGetObject(req->obj, "response_format"));
	n += json_tokens(JsonGetObject(req->obj, "json_schema"));
	return n;
}

/*
 * Options that do not change the reply: left out of a request's cache key
 * (who asks, what the provider stores or bills, how it caches prompts).
 */
static const char *const cache_neutral_keys[] = {
	"user", "metadata", "store", "safety_identifier", "prompt_cache_key",
	"service_tier", "stream_options"
};

/* Write a JSON value with every object's keys sorted, for cache keys. */
static void
canonical_json(json_object *v, StringInfo buf, bool top)
{
	if (v != NULL && json_object_is_type(v, json_type_object))
	{
		int			n = json_object_object_length(v);
		const char **keys = palloc(sizeof(char *) * Max(n, 1));
		int			k = 0;
		int			i;

		{
			json_object_object_foreach(v, key, val)
			{
				int			j;
				bool		skip = false;

				(void) val;
				if (top)
					for (j = 0; j < lengthof(cache_neutral_keys); j++)
						if (strcmp(key, cache_neutral_keys[j]) == 0)
							skip = true;
				if (!skip)
					keys[k++] = key;
			}
		}
		/* insertion sort: requests have few keys */
		for (i = 1; i < k; i++)
		{
			const char *t = keys[i];
			int			j = i - 1;

			while (j >= 0 && strcmp(keys[j], t) > 0)
			{
				keys[j + 1] = keys[j];
				j--;
			}
			keys[j + 1] = t;
		}
		appendStringInfoChar(buf, '{');
		for (i = 0; i < k; i++)
		{
			json_object *val = NULL;
			json_object *name = json_object_new_string(keys[i]);

			if (i > 0)
				appendStringInfoChar(buf, ',');
			appendStringInfoString(buf, json_object_to_json_string_ext(name, JSON_C_TO_STRING_PLAIN));
			json_object_put(name);
			appendStringInfoChar(buf, ':');
			json_object_object_get_ex(v, keys[i], &val);
			canonical_json(val, buf, false);
		}
		appendStringInfoChar(buf, '}');
		pfree(keys);
	}
	else if (v != NULL && json_object_is_type(v, json_type_array))
	{
		size_t		i;

		appendStringInfoChar(buf, '[');
		for (i = 0; i < json_object_array_length(v); i++)
		{
			if (i > 0)
				appendStringInfoChar(buf, ',');
			canonical_json(json_object_array_get_idx(v, i), buf, false);
		}
		appendStringInfoChar(buf, ']');
	}
	else if (v != NULL && json_object_is_type(v, json_type_double))
	{
		/* 0, 0.0 and 0e0 are one number */
		double		d = json_object_get_double(v);

		if (isfinite(d) && d == floor(d) && fabs(d) < 1e15)
			appendStringInfo(buf, INT64_FORMAT, (int64) d);
		else
			appendStringInfo(buf, "%.17g", d);
	}
	else
		appendStringInfoString(buf, v == NULL ? "null" :
							   json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
}

/*
 * The request as the response cache keys it: its JSON with sorted keys,
 * without "model" (the route says where it goes) and the options that do
 * not change the reply.
 */
char *
RequestCacheText(LlmRequest *req)
{
	StringInfoData buf;
	json_object *model = NULL;

	initStringInfo(&buf);
	if (json_object_object_get_ex(req->obj, "model", &model))
	{
		json_object_get(model);
		json_object_object_del(req->obj, "model");
	}
	PG_TRY();
	{
		canonical_json(req->obj, &buf, true);
	}
	PG_FINALLY();
	{
		if (model)
			json_object_object_add(req->obj, "model", model);
	}
	PG_END_TRY();
	if (req->parts)
	{
		/* the long texts themselves, not their placeholders */
		size_t		n = splice_parts(req, buf.data, buf.len, NULL);
		char	   *out = palloc(n + 1);

		(void) splice_parts(req, buf.data, buf.len, out);
		out[n] = '\0';
		pfree(buf.data);
		return out;
	}
	return buf.data;
}

/* Does the request ask for a deterministic reply (temperature 0)? */
bool
RequestDeterministic(LlmRequest *req)
{
	json_object *v;

	return json_object_object_get_ex(req->obj, "temperature", &v) &&
		(json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double)) &&
		json_object_get_double(v) == 0;
}

/* The setting of requests: the largest one sent. */
void
RequestDefineSettings(void)
{
	DefineCustomIntVariable("llm.max_request_size",
							"Largest request sent to a provider: the prompt, the system prompt and the options as JSON.",
							"A larger call or enqueue is refused before anything is sent or queued.",
							&llm_max_request_size_kb, 32768, 1, INT_MAX / 1024,
							PGC_SUSET, GUC_UNIT_KB, NULL, NULL, NULL);
}
