/*-------------------------------------------------------------------------
 *
 * provider_openai.c
 *	  The OpenAI Chat Completions protocol, which the request already
 *	  speaks: set the upstream model name and the streaming flags, read
 *	  replies and stream chunks.  Also serves every OpenAI-compatible
 *	  server (DeepSeek, vLLM, llama.cpp, Ollama, relays).
 *
 *	  This file must not include utils/builtins.h (see llm_json.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "llm_json.h"
#include "pg_llm.h"
#include "provider.h"

/*
 * The wire body for a route: the caller's request with the upstream model,
 * max_tokens renamed when the provider wants max_completion_tokens, and
 * the streaming flags.  The returned object belongs to the caller.
 */
static json_object *
openai_build_body(LlmRequest *req, const LlmRoute *route, bool stream)
{
	json_object *body = NULL;
	json_object *v;
	const LlmProvider *p = route->provider;

	if (json_object_deep_copy(req->obj, &body, NULL) != 0 || body == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	json_object_object_add(body, "model", json_object_new_string(route->upstream_model));

	if (p->max_tokens_param && strcmp(p->max_tokens_param, "max_tokens") != 0 &&
		json_object_object_get_ex(body, "max_tokens", &v))
	{
		json_object_get(v);
		json_object_object_del(body, "max_tokens");
		json_object_object_add(body, p->max_tokens_param, v);
	}
	if (stream)
	{
		json_object_object_add(body, "stream", json_object_new_boolean(1));
		if (p->stream_usage)
		{
			json_object *so = json_object_new_object();

			json_object_object_add(so, "include_usage", json_object_new_boolean(1));
			json_object_object_add(body, "stream_options", so);
		}
	}
	return body;
}

/* Read a usage object (either protocol's names) into counters. */
static void
read_usage(json_object *usage, bool *has, int64 *in, int64 *out)
{
	int64		v;

	if (usage == NULL)
		return;
	if (JsonGetInt64(usage, "prompt_tokens", &v))
	{
		*in = v;
		*has = true;
	}
	if (JsonGetInt64(usage, "completion_tokens", &v))
	{
		*out = v;
		*has = true;
	}
}

/*
 * Read a chat.completion.  The normalized response is the provider's own
 * JSON with "provider" added; unknown fields are kept and ignored.
 */
static bool
openai_parse_reply(json_object *root, const LlmRoute *route, bool want_json,
				   LlmReply *reply, char **problem)
{
	json_object *choices = JsonGetArray(root, "choices");
	json_object *first;
	json_object *msg;
	json_object *content = NULL;

	if (choices == NULL)
	{
		*problem = pstrdup("The response has no \"choices\" array.");
		return false;
	}
	reply->nchoices = (int) json_object_array_length(choices);
	read_usage(JsonGetObject(root, "usage"), &reply->has_usage,
			   &reply->input_tokens, &reply->output_tokens);
	if (reply->nchoices > 0)
	{
		const char *fr;

		first = json_object_array_get_idx(choices, 0);
		msg = JsonGetObject(first, "message");
		if (msg)
			json_object_object_get_ex(msg, "content", &content);
		reply->content = JsonContentText(content);
		fr = JsonGetString(first, "finish_reason");
		reply->finish_reason = fr ? pstrdup(fr) : NULL;
	}
	if (want_json)
	{
		json_object_object_add(root, "provider", json_object_new_string(route->provider->name));
		reply->response_json = JsonToPstr(root);
	}
	return true;
}

/*
 * One chunk of a chat.completion.chunk stream: text deltas of the first
 * choice, the finish reason, the usage chunk, or an error object sent
 * after the 200.
 */
static void
openai_stream_event(LlmStreamDecoder *dec, const char *type, json_object *root)
{
	json_object *err = JsonGetObject(root, "error");
	json_object *choices;

	if (err)
	{
		const char *m = JsonGetString(err, "message");

		dec->error = pstrdup(m ? m : json_object_to_json_string(err));
		return;
	}
	read_usage(JsonGetObject(root, "usage"), &dec->has_usage,
			   &dec->input_tokens, &dec->output_tokens);
	choices = JsonGetArray(root, "choices");
	if (choices && json_object_array_length(choices) > 0)
	{
		json_object *c = json_object_array_get_idx(choices, 0);
		const char *text = JsonGetString(JsonGetObject(c, "delta"), "content");

		if (text && text[0] != '\0')
			dec->pieces = lappend(dec->pieces, pstrdup(text));
		if (JsonGetString(c, "finish_reason"))
		{
			dec->saw_finish_reason = true;
			dec->finish_reason = pstrdup(JsonGetString(c, "finish_reason"));
		}
	}
}

/* "Authorization: Bearer <key>" when there is a key. */
static void
openai_add_headers(const LlmProvider *p, const char *key, List **headers)
{
	if (key)
		*headers = lappend(*headers, psprintf("Authorization: Bearer %s", key));
}

/* "data: [DONE]" ends the stream; it is not JSON. */
static bool
openai_raw_event(LlmStreamDecoder *dec, const char *type, const char *data, size_t len)
{
	if (len >= 6 && strncmp(data, "[DONE]", 6) == 0)
	{
		dec->finished = true;
		return true;
	}
	return false;
}

/*
 * One line of an OpenAI batch input file (also what a relay's inline
 * /batches endpoint takes): the request as it would be sent, never
 * streamed.
 */
static json_object *
openai_batch_line(LlmRequest *req, const LlmRoute *route, const char *custom_id)
{
	json_object *line = json_object_new_object();

	json_object_object_add(line, "custom_id", json_object_new_string(custom_id));
	json_object_object_add(line, "method", json_object_new_string("POST"));
	json_object_object_add(line, "url", json_object_new_string(route->provider->batch_url));
	json_object_object_add(line, "body", openai_build_body(req, route, false));
	return line;
}

/*
 * One line of an OpenAI batch output or error file (or an inline batch's
 * results): {"custom_id", "response": {"status_code", "body"}, "error"}.
 * A request that was never run has "error" and no response; the expiry
 * of the batch's window is one of those, and can be sent again.
 */
static bool
openai_batch_result(json_object *line, const LlmRoute *route, const char **custom_id,
					long *status, bool *expired, LlmReply *reply, char **problem)
{
	json_object *response = JsonGetObject(line, "response");
	json_object *error = JsonGetObject(line, "error");
	json_object *body;
	int64		code = 0;

	*custom_id = JsonGetString(line, "custom_id");
	if (*custom_id == NULL)
	{
		*problem = pstrdup("A result line has no custom_id.");
		return false;
	}
	if (response == NULL)
	{
		const char *c = JsonGetString(error, "code");
		const char *m = JsonGetString(error, "message");

		*expired = c && (strcmp(c, "batch_expired") == 0 || strcmp(c, "batch_cancelled") == 0);
		*problem = psprintf("The request was not run: %s%s%s.", m ? m : "no reason given",
							c ? " " : "", c ? psprintf("(%s)", c) : "");
		return false;
	}
	(void) JsonGetInt64(response, "status_code", &code);
	*status = (long) code;
	body = JsonGetObject(response, "body");
	if (code < 200 || code >= 300)
	{
		json_object *e = JsonGetObject(body, "error");
		const char *m = JsonGetString(e, "message");

		*expired = (code == 0);
		*problem = psprintf("HTTP %ld: %s", *status, m ? m : "no message");
		return false;
	}
	if (body == NULL)
	{
		*problem = pstrdup("A result line has no response body.");
		return false;
	}
	return openai_parse_reply(body, route, false, reply, problem);
}

const LlmProviderOps OpenAIProviderOps = {
	.name = "openai",
	.chat_path = "/chat/completions",
	.key_header = "\"Authorization: Bearer <key>\"",
	.add_headers = openai_add_headers,
	.build_body = openai_build_body,
	.parse_reply = openai_parse_reply,
	.raw_event = openai_raw_event,
	.stream_event = openai_stream_event,
	.default_batch_api = "openai",
	.batch_line = openai_batch_line,
	.batch_result = openai_batch_result,
};
