/*-------------------------------------------------------------------------
 *
 * provider_anthropic.c
 *	  The Anthropic Messages protocol: translate the OpenAI-shaped request
 *	  (system messages to the top-level field, max_tokens required,
 *	  temperature 0..1, stop to stop_sequences, tools and tool results),
 *	  and translate replies and stream events back to the OpenAI shape.
 *
 *	  A Chat Completions request (PROTOCOLS.md 1.2) becomes a Messages
 *	  request (3.2) field by field, in anthropic_build_body:
 *
 *		model					the route's upstream model
 *		messages: system,		joined by blank lines into the top-level
 *		  developer				"system" (Messages has no system role)
 *		messages: user			a user turn of content blocks (text parts;
 *								image_url as an image block, a data: URL
 *								as a base64 source)
 *		messages: assistant		an assistant turn: its text, each tool call
 *								a tool_use block whose "input" is the
 *								parsed arguments (an object, not text)
 *		messages: tool			a tool_result block in a user turn
 *		max_tokens,				max_tokens, which Messages requires: when
 *		  max_completion_tokens	neither is given, the provider's
 *								default_max_tokens or llm.anthropic_max_tokens
 *		temperature				as it is, refused above 1 (Anthropic: 0 to 1)
 *		top_p, top_k, metadata,	as they are
 *		  thinking, service_tier
 *		stop					stop_sequences (a string: an array of one)
 *		tools					{name, description, input_schema}
 *		tool_choice				"auto", "none" as they are; "required" is
 *								"any"; a named function is {"type": "tool"}
 *		parallel_tool_calls		false: tool_choice.disable_parallel_tool_use
 *		response_format			an instruction at the end of the system
 *								prompt (Messages has no JSON mode)
 *		n other than 1,			refused: no equivalent, and the answer
 *		  penalties, logprobs,	would not be what was asked for
 *		  logit_bias, ...		(the list in anthropic_build_body)
 *		seed, user, any other	not sent: Messages has no such field
 *
 *	  Turns of one role in a row (several tool results, a user message
 *	  after one) are merged into one: Messages alternates user and
 *	  assistant.  A reply
 *	  (3.3) goes back the other way in anthropic_parse_reply, a stream's
 *	  events (3.4) in anthropic_stream_event.
 *
 *	  This file must not include utils/builtins.h (see llm_json.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "lib/stringinfo.h"

#include "http.h"
#include "llm_json.h"
#include "provider.h"
#include "request_int.h"

int			llm_anthropic_max_tokens = 4096;

/* An option that would change the answer and that Messages cannot express. */
static void
unsupported(const char *key)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("option \"%s\" is not supported by the anthropic protocol", key),
			 errhint("Remove the option, or route the model to an OpenAI-compatible provider.")));
}

/* Add a {"type":"text","text":...} block. */
static void
add_text_block(json_object *blocks, const char *text)
{
	json_object *b = json_object_new_object();

	json_object_object_add(b, "type", json_object_new_string("text"));
	json_object_object_add(b, "text", json_object_new_string(text));
	json_object_array_add(blocks, b);
}

/*
 * Translate OpenAI content (string or parts) to Anthropic blocks: text
 * parts as text, image_url parts as URL or base64 image sources.  Parts
 * of other types (audio, files) have no block here and are left out.
 */
static json_object *
content_blocks(json_object *content)
{
	json_object *blocks = json_object_new_array();
	size_t		i,
				n;

	if (content == NULL || json_object_is_type(content, json_type_null))
		return blocks;
	if (json_object_is_type(content, json_type_string))
	{
		add_text_block(blocks, json_object_get_string(content));
		return blocks;
	}
	n = json_object_array_length(content);
	for (i = 0; i < n; i++)
	{
		json_object *part = json_object_array_get_idx(content, i);
		const char *type = JsonGetString(part, "type");
		const char *url = JsonGetString(JsonGetObject(part, "image_url"), "url");

		if (type && strcmp(type, "text") == 0 && JsonGetString(part, "text"))
			add_text_block(blocks, JsonGetString(part, "text"));
		else if (type && strcmp(type, "image_url") == 0 && url)
		{
			json_object *b = json_object_new_object();
			json_object *src = json_object_new_object();
			const char *comma = strchr(url, ',');

			/*
			 * data:<media type>[;base64],<data>: the media type ends at the
			 * first ";" or ","; the data goes as it is, as base64.
			 */
			if (strncmp(url, "data:", 5) == 0 && comma)
			{
				const char *semi = strchr(url, ';');
				size_t		mlen = (semi && semi < comma ? semi : comma) - (url + 5);
				char	   *media = pnstrdup(url + 5, mlen);

				json_object_object_add(src, "type", json_object_new_string("base64"));
				json_object_object_add(src, "media_type", json_object_new_string(media));
				json_object_object_add(src, "data", json_object_new_string(comma + 1));
			}
			else
			{
				json_object_object_add(src, "type", json_object_new_string("url"));
				json_object_object_add(src, "url", json_object_new_string(url));
			}
			json_object_object_add(b, "type", json_object_new_string("image"));
			json_object_object_add(b, "source", src);
			json_object_array_add(blocks, b);
		}
	}
	return blocks;
}

/* An assistant message: its text and its tool calls as tool_use blocks. */
static json_object *
assistant_blocks(json_object *m)
{
	json_object *content = NULL;
	json_object *blocks;
	json_object *calls = JsonGetArray(m, "tool_calls");
	size_t		i,
				n;

	json_object_object_get_ex(m, "content", &content);
	blocks = content_blocks(content);
	n = calls ? json_object_array_length(calls) : 0;
	for (i = 0; i < n; i++)
	{
		json_object *call = json_object_array_get_idx(calls, i);
		json_object *fn = JsonGetObject(call, "function");
		const char *args = JsonGetString(fn, "arguments");
		json_object *input = args ? JsonParseOrNull(args, strlen(args)) : NULL;
		json_object *b = json_object_new_object();

		/*
		 * OpenAI's arguments are JSON text, Anthropic's input an object
		 * (PROTOCOLS.md 3.3): text that is no object goes as {}.
		 */
		if (input == NULL || !json_object_is_type(input, json_type_object))
		{
			if (input)
				json_object_put(input);
			input = json_object_new_object();
		}
		json_object_object_add(b, "type", json_object_new_string("tool_use"));
		json_object_object_add(b, "id", json_object_new_string(JsonGetString(call, "id") ? JsonGetString(call, "id") : ""));
		json_object_object_add(b, "name", json_object_new_string(JsonGetString(fn, "name") ? JsonGetString(fn, "name") : ""));
		json_object_object_add(b, "input", input);
		json_object_array_add(blocks, b);
	}
	return blocks;
}

/* Append a message, merging into the previous one when the role repeats. */
static void
append_turn(json_object *msgs, const char *role, json_object *blocks)
{
	size_t		n = json_object_array_length(msgs);
	json_object *last = n > 0 ? json_object_array_get_idx(msgs, n - 1) : NULL;
	const char *last_role = JsonGetString(last, "role");

	if (last_role && strcmp(last_role, role) == 0)
	{
		json_object *lb = JsonGetArray(last, "content");
		size_t		i,
					nb = json_object_array_length(blocks);

		/* each block gains a reference in lb before blocks drops its own */
		for (i = 0; i < nb; i++)
			json_object_array_add(lb, json_object_get(json_object_array_get_idx(blocks, i)));
		json_object_put(blocks);
	}
	else
	{
		json_object *m = json_object_new_object();

		json_object_object_add(m, "role", json_object_new_string(role));
		json_object_object_add(m, "content", blocks);
		json_object_array_add(msgs, m);
	}
}

/* Tools: {type:function, function:{name, description, parameters}} -> {name, description, input_schema}. */
static json_object *
translate_tools(json_object *tools)
{
	json_object *out = json_object_new_array();
	size_t		i,
				n = json_object_array_length(tools);

	for (i = 0; i < n; i++)
	{
		json_object *fn = JsonGetObject(json_object_array_get_idx(tools, i), "function");
		json_object *t = json_object_new_object();
		json_object *params = JsonGetObject(fn, "parameters");
		const char *desc = JsonGetString(fn, "description");

		json_object_object_add(t, "name", json_object_new_string(JsonGetString(fn, "name")));
		if (desc)
			json_object_object_add(t, "description", json_object_new_string(desc));
		if (params)
			json_object_object_add(t, "input_schema", json_object_get(params));
		else
		{
			/* input_schema is required: {"type": "object"} at least */
			json_object *s = json_object_new_object();

			json_object_object_add(s, "type", json_object_new_string("object"));
			json_object_object_add(t, "input_schema", s);
		}
		json_object_array_add(out, t);
	}
	return out;
}

/*
 * tool_choice: "auto" / "required" / "none" / a named function, as
 * Anthropic's object {"type": auto, any, none or tool}.  Any other string,
 * or an object without a function's name, is "auto".
 */
static json_object *
translate_tool_choice(json_object *tc)
{
	json_object *out = json_object_new_object();

	if (json_object_is_type(tc, json_type_string))
	{
		const char *s = json_object_get_string(tc);

		json_object_object_add(out, "type", json_object_new_string(strcmp(s, "required") == 0 ? "any" :
																	strcmp(s, "none") == 0 ? "none" : "auto"));
	}
	else
	{
		const char *name = JsonGetString(JsonGetObject(tc, "function"), "name");

		json_object_object_add(out, "type", json_object_new_string(name ? "tool" : "auto"));
		if (name)
			json_object_object_add(out, "name", json_object_new_string(name));
	}
	return out;
}

/*
 * parallel_tool_calls: false becomes tool_choice.disable_parallel_tool_use
 * (the model then calls at most one tool), with tool_choice "auto" when
 * none was given.  It means nothing without tools or with tool_choice
 * "none", which call no tool at all.
 */
static void
parallel_tool_calls(json_object *src, json_object *body)
{
	json_object *v;
	json_object *tc;
	const char *type;

	if (!json_object_object_get_ex(src, "parallel_tool_calls", &v) ||
		!json_object_is_type(v, json_type_boolean) || json_object_get_boolean(v) ||
		JsonGetArray(body, "tools") == NULL)
		return;
	tc = JsonGetObject(body, "tool_choice");
	if (tc == NULL)
	{
		tc = json_object_new_object();
		json_object_object_add(tc, "type", json_object_new_string("auto"));
		json_object_object_add(body, "tool_choice", tc);
	}
	type = JsonGetString(tc, "type");
	if (type && strcmp(type, "none") == 0)
		return;
	json_object_object_add(tc, "disable_parallel_tool_use", json_object_new_boolean(1));
}

/* The instruction that stands in for OpenAI's JSON modes. */
static char *
json_mode_instruction(json_object *rf)
{
	const char *type = JsonGetString(rf, "type");
	json_object *js = JsonGetObject(rf, "json_schema");
	json_object *schema = JsonGetObject(js, "schema");

	if (type == NULL || strcmp(type, "text") == 0)
		return NULL;
	if (schema)
		return psprintf("Respond with only a JSON value that matches this JSON Schema, and nothing else:\n%s",
						json_object_to_json_string_ext(schema, JSON_C_TO_STRING_PLAIN));
	return pstrdup("Respond with only a valid JSON object, and nothing else.");
}

/*
 * The Messages request for a route.  Options Anthropic has no equivalent
 * for either have no effect on a reply (seed, user) and are dropped, or
 * change its meaning (n, penalties, logprobs) and are refused.
 */
static json_object *
anthropic_build_body(LlmRequest *req, const LlmRoute *route, bool stream)
{
	json_object *src = req->obj;
	json_object *body;
	json_object *msgs;
	json_object *in_msgs = JsonGetArray(src, "messages");
	StringInfoData system;
	JsonGuard  *g;
	int64		max_tokens = 0;
	size_t		i,
				n;
	char	   *instr;

	/*
	 * The refusals first, before any json-c object is made: an error raised
	 * here has nothing to free.  From the body on, its guard puts it if an
	 * error is raised (JsonGuard).
	 */
	json_object_object_foreach(src, key, val)
	{
		if (json_object_is_type(val, json_type_null))
			continue;
		/* n: Messages gives one reply; asking for one is no change */
		if (strcmp(key, "n") == 0 && json_object_get_int64(val) == 1)
			continue;
		if (strcmp(key, "n") == 0 || strcmp(key, "presence_penalty") == 0 ||
			strcmp(key, "frequency_penalty") == 0 || strcmp(key, "logprobs") == 0 ||
			strcmp(key, "top_logprobs") == 0 || strcmp(key, "logit_bias") == 0 ||
			strcmp(key, "reasoning_effort") == 0 || strcmp(key, "verbosity") == 0 ||
			strcmp(key, "web_search_options") == 0 || strcmp(key, "modalities") == 0 ||
			strcmp(key, "audio") == 0 || strcmp(key, "functions") == 0 ||
			strcmp(key, "function_call") == 0)
			unsupported(key);
		if (strcmp(key, "temperature") == 0 && json_object_get_double(val) > 1.0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("temperature %g is outside the anthropic range 0 to 1",
							json_object_get_double(val)),
					 errdetail("Provider \"%s\" speaks the anthropic protocol.", route->provider->name),
					 errhint("Use a temperature from 0 to 1 for this model.")));
	}

	body = json_object_new_object();
	g = JsonGuardNew(body);
	json_object_object_add(body, "model", json_object_new_string(route->upstream_model));

	initStringInfo(&system);
	msgs = json_object_new_array();
	json_object_object_add(body, "messages", msgs);
	n = in_msgs ? json_object_array_length(in_msgs) : 0;
	for (i = 0; i < n; i++)
	{
		json_object *m = json_object_array_get_idx(in_msgs, i);
		const char *role = JsonGetString(m, "role");
		json_object *content = NULL;

		json_object_object_get_ex(m, "content", &content);
		/* system and developer messages: the top-level system prompt */
		if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0)
		{
			char	   *text = JsonContentText(content);

			if (text)
			{
				if (system.len > 0)
					appendStringInfoString(&system, "\n\n");
				appendStringInfoString(&system, text);
			}
		}
		/* a tool's answer: a tool_result block, sent by the user */
		else if (strcmp(role, "tool") == 0)
		{
			json_object *blocks = json_object_new_array();
			json_object *b = json_object_new_object();
			char	   *text = JsonContentText(content);
			const char *id = JsonGetString(m, "tool_call_id");

			json_object_object_add(b, "type", json_object_new_string("tool_result"));
			json_object_object_add(b, "tool_use_id", json_object_new_string(id ? id : ""));
			json_object_object_add(b, "content", json_object_new_string(text ? text : ""));
			json_object_array_add(blocks, b);
			append_turn(msgs, "user", blocks);
		}
		else if (strcmp(role, "assistant") == 0)
			append_turn(msgs, "assistant", assistant_blocks(m));
		else
			append_turn(msgs, "user", content_blocks(content));
	}

	/* response_format: said in words, after the caller's system prompt */
	instr = json_mode_instruction(JsonGetObject(src, "response_format"));
	if (instr)
	{
		if (system.len > 0)
			appendStringInfoString(&system, "\n\n");
		appendStringInfoString(&system, instr);
	}
	if (system.len > 0)
		json_object_object_add(body, "system", json_object_new_string(system.data));

	/* required by Messages, optional in Chat Completions */
	if (!JsonGetInt64(src, "max_tokens", &max_tokens) &&
		!JsonGetInt64(src, "max_completion_tokens", &max_tokens))
		max_tokens = route->provider->default_max_tokens > 0 ?
			route->provider->default_max_tokens : llm_anthropic_max_tokens;
	json_object_object_add(body, "max_tokens", json_object_new_int64(max_tokens));

	/* the options Anthropic shares, under its own names */
	{
		json_object_object_foreach(src, key2, val2)
		{
			if (json_object_is_type(val2, json_type_null))
				continue;
			if (strcmp(key2, "temperature") == 0 || strcmp(key2, "top_p") == 0 ||
				strcmp(key2, "top_k") == 0 || strcmp(key2, "metadata") == 0 ||
				strcmp(key2, "thinking") == 0 || strcmp(key2, "service_tier") == 0)
				/* shared with the request, which keeps its own reference */
				json_object_object_add(body, key2, json_object_get(val2));
			else if (strcmp(key2, "stop") == 0)
			{
				json_object *ss;

				if (json_object_is_type(val2, json_type_string))
				{
					ss = json_object_new_array();
					json_object_array_add(ss, json_object_get(val2));
				}
				else
					ss = json_object_get(val2);
				json_object_object_add(body, "stop_sequences", ss);
			}
			else if (strcmp(key2, "tools") == 0)
				json_object_object_add(body, "tools", translate_tools(val2));
			else if (strcmp(key2, "tool_choice") == 0)
				json_object_object_add(body, "tool_choice", translate_tool_choice(val2));
		}
	}
	parallel_tool_calls(src, body);
	/* Messages streams with the same flag; no stream_options (usage always comes) */
	if (stream)
		json_object_object_add(body, "stream", json_object_new_boolean(1));

	/* hand the object to the caller: clear the guard without putting it */
	g->obj = NULL;
	return body;
}

/*
 * Read a Message (PROTOCOLS.md 3.3) and build the OpenAI-shaped response
 * (1.3), field by field:
 *
 *	content: text blocks	joined as choices[0].message.content (null when
 *							there are none, as OpenAI's is with tool calls)
 *	content: tool_use		tool_calls, {id, "function", {name, arguments:
 *							its "input" object written as JSON text}}
 *	stop_reason				finish_reason (ProtoFinishReason: end_turn and
 *							stop_sequence "stop", max_tokens "length",
 *							tool_use "tool_calls", refusal "content_filter");
 *							kept as it is in reply->stop_reason too
 *	usage					prompt_tokens: input_tokens plus the cache reads
 *							and writes, which Anthropic counts apart;
 *							completion_tokens: output_tokens;
 *							prompt_tokens_details.cached_tokens: the reads,
 *							cache_write_tokens: the writes
 *	id, model				as they are; "provider" names the route's
 *
 * Other blocks (thinking, redacted_thinking, server tools' results) are
 * not part of the answer.  Without want_json only the reply's fields are
 * filled, no response_json.
 */
static bool
anthropic_parse_reply(json_object *root, const LlmRoute *route, bool want_json,
					  LlmReply *reply, char **problem)
{
	json_object *content = JsonGetArray(root, "content");
	json_object *usage = JsonGetObject(root, "usage");
	json_object *out;
	json_object *choices;
	json_object *choice;
	json_object *msg;
	json_object *calls = NULL;
	json_object *uo;
	JsonGuard  *g;
	StringInfoData text;
	bool		any_text = false;
	size_t		i,
				n;
	const char *fr;
	const char *sr;
	ProtoUsage	u;

	if (content == NULL)
	{
		*problem = pstrdup("The response has no \"content\" array.");
		return false;
	}
	initStringInfo(&text);
	n = json_object_array_length(content);
	for (i = 0; i < n; i++)
	{
		json_object *b = json_object_array_get_idx(content, i);
		const char *type = JsonGetString(b, "type");

		if (type && strcmp(type, "text") == 0 && JsonGetString(b, "text"))
		{
			appendStringInfoString(&text, JsonGetString(b, "text"));
			any_text = true;
		}
		else if (type && strcmp(type, "tool_use") == 0)
		{
			/* the first tool's name and input are the reply's (a shaped answer's tool) */
			json_object *call = json_object_new_object();
			json_object *fn = json_object_new_object();
			json_object *input = NULL;

			if (calls == NULL)
				calls = json_object_new_array();
			json_object_object_get_ex(b, "input", &input);
			if (reply->tool_name == NULL && JsonGetString(b, "name"))
			{
				reply->tool_name = pstrdup(JsonGetString(b, "name"));
				reply->tool_input = pstrdup(input ? json_object_to_json_string_ext(input, JSON_C_TO_STRING_PLAIN) : "{}");
			}
			json_object_object_add(fn, "name", json_object_new_string(JsonGetString(b, "name") ? JsonGetString(b, "name") : ""));
			json_object_object_add(fn, "arguments", json_object_new_string(input ? json_object_to_json_string_ext(input, JSON_C_TO_STRING_PLAIN) : "{}"));
			json_object_object_add(call, "id", json_object_new_string(JsonGetString(b, "id") ? JsonGetString(b, "id") : ""));
			json_object_object_add(call, "type", json_object_new_string("function"));
			json_object_object_add(call, "function", fn);
			json_object_array_add(calls, call);
		}
	}

	/* no text, no tool call: no choice, an empty answer the caller judges */
	reply->content = any_text ? text.data : NULL;
	reply->nchoices = (any_text || calls) ? 1 : 0;
	reply->tool_calls = (calls != NULL);
	sr = JsonGetString(root, "stop_reason");
	reply->stop_reason = sr ? pstrdup(sr) : NULL;
	fr = ProtoFinishReason(sr);
	reply->finish_reason = fr ? pstrdup(fr) : NULL;
	/* Anthropic's input_tokens leave out the cache's (PROTOCOLS.md 3.3) */
	ProtoUsageInit(&u, true);
	(void) ProtoUsageRead(usage, &u);
	ProviderReplySetUsage(reply, &u);

	if (!want_json)
	{
		if (calls)
			json_object_put(calls);
		return true;
	}
	out = json_object_new_object();
	g = JsonGuardNew(out);
	json_object_object_add(out, "id", json_object_new_string(JsonGetString(root, "id") ? JsonGetString(root, "id") : ""));
	json_object_object_add(out, "object", json_object_new_string("chat.completion"));
	/* a Message has no creation time: the time it was read */
	json_object_object_add(out, "created", json_object_new_int64((int64) time(NULL)));
	json_object_object_add(out, "model", json_object_new_string(JsonGetString(root, "model") ? JsonGetString(root, "model") : route->upstream_model));
	choices = json_object_new_array();
	json_object_object_add(out, "choices", choices);
	if (reply->nchoices > 0)
	{
		choice = json_object_new_object();
		msg = json_object_new_object();
		json_object_object_add(msg, "role", json_object_new_string("assistant"));
		json_object_object_add(msg, "content", any_text ? json_object_new_string(text.data) : NULL);
		if (calls)
			json_object_object_add(msg, "tool_calls", calls);
		json_object_object_add(choice, "index", json_object_new_int(0));
		json_object_object_add(choice, "message", msg);
		json_object_object_add(choice, "finish_reason", fr ? json_object_new_string(fr) : NULL);
		json_object_array_add(choices, choice);
	}
	else if (calls)
		json_object_put(calls);
	if (reply->has_usage)
	{
		json_object *details = json_object_new_object();

		uo = json_object_new_object();
		json_object_object_add(uo, "prompt_tokens", json_object_new_int64(reply->input_tokens));
		json_object_object_add(uo, "completion_tokens", json_object_new_int64(reply->output_tokens));
		json_object_object_add(uo, "total_tokens", json_object_new_int64(reply->input_tokens + reply->output_tokens));
		/* OpenAI's name for the input read from the cache; the writes too */
		json_object_object_add(details, "cached_tokens", json_object_new_int64(reply->cached_input_tokens));
		json_object_object_add(details, "cache_write_tokens", json_object_new_int64(reply->cache_write_tokens));
		json_object_object_add(uo, "prompt_tokens_details", details);
		json_object_object_add(out, "usage", uo);
	}
	if (reply->service_tier[0])
		json_object_object_add(out, "service_tier", json_object_new_string(reply->service_tier));
	json_object_object_add(out, "provider", json_object_new_string(route->provider->name));
	reply->response_json = JsonToPstr(out);
	JsonGuardRelease(g);
	return true;
}

/*
 * One Messages stream event, dispatched on the JSON "type" (which repeats
 * the SSE event name).  Usage arrives in message_start and again in every
 * message_delta, cumulative (input, output and the cache counts; with
 * server tools the real input count arrives only there): the last value
 * of each count wins.  Pings and unknown events are ignored.
 */
static void
anthropic_stream_event(LlmStreamDecoder *dec, const char *type, json_object *root)
{
	const char *t = JsonGetString(root, "type");

	if (t == NULL)
		t = type ? type : "";
	if (strcmp(t, "content_block_delta") == 0)
	{
		json_object *delta = JsonGetObject(root, "delta");
		const char *dt = JsonGetString(delta, "type");
		const char *text = JsonGetString(delta, "text");

		/* text_delta only: input_json_delta, thinking_delta and the rest are no text */
		if (dt && strcmp(dt, "text_delta") == 0 && text && text[0] != '\0')
			dec->pieces = lappend(dec->pieces, pstrdup(text));
	}
	else if (strcmp(t, "content_block_start") == 0)
	{
		const char *bt = JsonGetString(JsonGetObject(root, "content_block"), "type");

		if (bt && strcmp(bt, "tool_use") == 0)
			dec->tool_calls = true;
	}
	/* the first counts (input, cache), replaced by message_delta's */
	else if (strcmp(t, "message_start") == 0)
		(void) ProtoUsageRead(JsonGetObject(JsonGetObject(root, "message"), "usage"), &dec->usage);
	else if (strcmp(t, "message_delta") == 0)
	{
		const char *sr = JsonGetString(JsonGetObject(root, "delta"), "stop_reason");

		(void) ProtoUsageRead(JsonGetObject(root, "usage"), &dec->usage);
		if (sr)
		{
			dec->saw_finish_reason = true;
			dec->stop_reason = pstrdup(sr);
			dec->finish_reason = pstrdup(ProtoFinishReason(sr));
		}
	}
	/* the end of the stream: Messages has no [DONE] */
	else if (strcmp(t, "message_stop") == 0)
		dec->finished = true;
	/* an error after the 200 (overloaded_error): the stream fails with it */
	else if (strcmp(t, "error") == 0)
	{
		const char *et;
		const char *m;

		ProviderReadError(root, &dec->error_body);
		et = dec->error_body.type;
		m = dec->error_body.message;
		dec->error = psprintf("%s%s%s", et ? et : "", et ? ": " : "", m ? m : "error event");
	}
}

/*
 * "x-api-key" when there is a key (not Authorization: Bearer, PROTOCOLS.md
 * 3.1), and the API version: the provider option anthropic_version,
 * "2023-06-01" unless set.
 */
static void
anthropic_add_headers(const LlmProvider *p, const char *key, List **headers)
{
	if (key)
		*headers = lappend(*headers, psprintf("x-api-key: %s", key));
	*headers = lappend(*headers, psprintf("anthropic-version: %s", p->anthropic_version));
}

/* A ping without data is not JSON; skip it. */
static bool
anthropic_raw_event(LlmStreamDecoder *dec, const char *type, const char *data, size_t len)
{
	return len == 0 && type && strcmp(type, "ping") == 0;
}

/* One request of a Message Batch: {"custom_id", "params"}. */
static json_object *
anthropic_batch_line(LlmRequest *req, const LlmRoute *route, const char *custom_id)
{
	json_object *line = json_object_new_object();

	json_object_object_add(line, "custom_id", json_object_new_string(custom_id));
	json_object_object_add(line, "params", anthropic_build_body(req, route, false));
	return line;
}

/*
 * One line of a Message Batch's results: {"custom_id", "result": {"type":
 * succeeded (with "message"), errored (with "error"), canceled or
 * expired}}.  Canceled and expired requests can be sent again.
 */
static bool
anthropic_batch_result(json_object *line, const LlmRoute *route, const char **custom_id,
					   long *status, bool *expired, LlmReply *reply, char **problem)
{
	json_object *result = JsonGetObject(line, "result");
	const char *type = JsonGetString(result, "type");

	*custom_id = JsonGetString(line, "custom_id");
	if (*custom_id == NULL || type == NULL)
	{
		*problem = pstrdup("A result line has no custom_id or result type.");
		return false;
	}
	if (strcmp(type, "succeeded") == 0)
	{
		json_object *msg = JsonGetObject(result, "message");

		*status = 200;
		if (msg == NULL)
		{
			*problem = pstrdup("A succeeded result has no message.");
			return false;
		}
		return anthropic_parse_reply(msg, route, false, reply, problem);
	}
	if (strcmp(type, "errored") == 0)
	{
		/* {"type": "error", "error": {"type", "message"}} */
		json_object *e = JsonGetObject(result, "error");
		json_object *inner = JsonGetObject(e, "error");
		const char *et = JsonGetString(inner ? inner : e, "type");
		const char *m = JsonGetString(inner ? inner : e, "message");

		/*
		 * A result has no HTTP status: the error's type stands for one
		 * (PROTOCOLS.md 3.5), judged as an answer over HTTP is:
		 * rate_limit_error, timeout_error, overloaded_error and api_error
		 * are sent again, the request's own faults and an exhausted
		 * account fail it; a type not documented yet is sent again, as
		 * in a stream.
		 */
		*status = ProtoErrorIsQuota(et, NULL) ? 402 : ProtoErrorStatus(et, NULL);
		if (*status == 0)
			*status = 500;
		*problem = psprintf("%s%s%s", et ? et : "error", m ? ": " : "", m ? m : "");
		return false;
	}
	*expired = (strcmp(type, "expired") == 0 || strcmp(type, "canceled") == 0);
	*problem = psprintf("The request was %s before it ran.", type);
	return false;
}

/* ---- provider batch API: Message Batches ---- */

/*
 * The requests of Message Batches: the batch created with its requests
 * in the body (POST /messages/batches), polled (GET
 * /messages/batches/{id}), its results downloaded, cancelled (POST
 * /messages/batches/{id}/cancel).  The key goes only to the provider's
 * own origin: a results_url elsewhere is read from the documented
 * endpoint under the base URL instead.
 */
static bool
anthropic_batch_request(LlmBatchStep step, const LlmBatchState *b, LlmBatchRequest *req)
{
	memset(req, 0, sizeof(LlmBatchRequest));
	req->timeout = LLM_BATCH_TIMEOUT_CALL;
	switch (step)
	{
			/*
			 * The requests ({"requests": [...]}, up to 256 MB) are the
			 * creation's body, sent from the requests file.
			 */
		case LLM_BATCH_CREATE:
			req->path = "/messages/batches";
			req->send_file = true;
			req->timeout = LLM_BATCH_TIMEOUT_TRANSFER;
			return true;
		case LLM_BATCH_POLL:
			req->get = true;
			req->path = psprintf("/messages/batches/%s", b->batch_id);
			return true;
		case LLM_BATCH_RESULTS:
			/* one file, results_url (OpenAI has output and error files) */
			if (b->results_step > 0 || b->results_url == NULL)
				return false;
			req->get = true;
			req->to_file = true;
			req->timeout = LLM_BATCH_TIMEOUT_TRANSFER;
			if (HttpSameOrigin(b->results_url, b->provider->base_url))
				req->url = b->results_url;
			else
			{
				elog(LOG, "pg_llm worker: batch " INT64_FORMAT ": results_url is not on provider \"%s\"'s origin; "
					 "reading the results from its base URL", b->id, b->provider->name);
				req->path = psprintf("/messages/batches/%s/results", b->batch_id);
			}
			return true;
		case LLM_BATCH_CANCEL:
			req->path = psprintf("/messages/batches/%s/cancel", b->batch_id);
			req->body = "{}";
			return true;
			/*
			 * No upload (the requests go in the creation's body), and no
			 * lookup: a Message Batch carries no metadata of ours to be found
			 * by (can_lookup is false).
			 */
		case LLM_BATCH_UPLOAD:
		case LLM_BATCH_LOOKUP:
			break;
	}
	return false;
}

/*
 * The answer of a step: the message_batch created, or polled
 * (processing_status in_progress, canceling, ended; its request counts
 * and results_url).
 */
static void
anthropic_batch_read(LlmBatchStep step, const LlmBatchState *b, json_object *root, LlmBatchEvent *ev)
{
	const char *ps;
	json_object *counts;

	ev->kind = LLM_BATCH_UNREADABLE;
	if (root == NULL)
		return;
	if (step == LLM_BATCH_CREATE)
	{
		ev->id = JsonCopyString(root, "id");
		if (ev->id)
			ev->kind = LLM_BATCH_CREATED;
		return;
	}
	if (step != LLM_BATCH_POLL)
		return;
	ev->kind = LLM_BATCH_RUNNING;
	ps = JsonGetString(root, "processing_status");
	ev->status = ps ? pstrdup(ps) : NULL;
	if (ps && strcmp(ps, "ended") == 0)
		ev->kind = LLM_BATCH_ENDED;
	ev->cancelling = ps && strcmp(ps, "canceling") == 0;
	ev->results_url = JsonCopyString(root, "results_url");
	counts = JsonGetObject(root, "request_counts");
	ev->succeeded = JsonGetCount(counts, "succeeded");
	ev->errored = JsonGetCount(counts, "errored");
	/* canceled with expired: neither ran, and both are sent again */
	ev->expired = JsonGetCount(counts, "expired") + JsonGetCount(counts, "canceled");
}

/*
 * Message Batches: its limits (PROTOCOLS.md 3.7); results downloaded after
 * the end, not in the creation's answer.
 */
static const LlmBatchOps AnthropicBatchOps = {
	.name = "anthropic",
	.max_requests = 100000,
	.max_bytes = (size_t) 256 * 1024 * 1024,
	.inline_results = false,
	.can_lookup = false,
	.requests_head = "{\"requests\": [",
	.requests_separator = ",",
	.requests_tail = "]}",
	.request = anthropic_batch_request,
	.read_answer = anthropic_batch_read,
	.request_line = anthropic_batch_line,
	.result_line = anthropic_batch_result,
};

static const LlmBatchOps *const anthropic_batch_kinds[] = {&AnthropicBatchOps, NULL};

const LlmProviderOps AnthropicProviderOps = {
	.name = "anthropic",
	.chat_path = "/messages",
	.key_header = "\"x-api-key: <key>\"",
	.add_headers = anthropic_add_headers,
	.build_body = anthropic_build_body,
	.parse_reply = anthropic_parse_reply,
	.raw_event = anthropic_raw_event,
	.stream_event = anthropic_stream_event,
	.batch_kinds = anthropic_batch_kinds,
};
