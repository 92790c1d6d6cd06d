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

#include <float.h>
#include <math.h>

#include "llm_json.h"
#include "provider.h"
#include "request_int.h"

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

/*
 * The usage of a reply or chunk, with the service tier beside it.  Groq
 * streams have it in x_groq.usage on the last chunk instead.
 */
static void
read_usage(json_object *root, ProtoUsage *u)
{
	json_object *usage = JsonGetObject(root, "usage");

	if (usage == NULL)
		usage = JsonGetObject(JsonGetObject(root, "x_groq"), "usage");
	(void) ProtoUsageRead(usage, u);
	ProtoUsageSetTier(u, JsonGetString(root, "service_tier"));
}

/*
 * Read a chat.completion.  The text is that of choice 0 (matched by its
 * index); a refusal (message.refusal, with content null) and tool calls
 * are noted.  The normalized response is the provider's own JSON with
 * "provider" added; unknown fields are kept and ignored.
 */
static bool
openai_parse_reply(json_object *root, const LlmRoute *route, bool want_json,
				   LlmReply *reply, char **problem)
{
	json_object *choices = JsonGetArray(root, "choices");
	json_object *first;
	json_object *msg;
	json_object *content = NULL;
	ProtoUsage	u;

	if (choices == NULL)
	{
		*problem = pstrdup("The response has no \"choices\" array.");
		return false;
	}
	reply->nchoices = (int) json_object_array_length(choices);
	ProtoUsageInit(&u, false);
	read_usage(root, &u);
	ProviderReplySetUsage(reply, &u);
	first = ProtoChoice(choices, 0);
	if (first)
	{
		const char *fr = JsonGetString(first, "finish_reason");
		const char *refusal;
		json_object *calls;

		msg = JsonGetObject(first, "message");
		if (msg)
			json_object_object_get_ex(msg, "content", &content);
		reply->content = JsonContentText(content);
		refusal = JsonGetString(msg, "refusal");
		if (refusal && refusal[0] != '\0')
			reply->refusal = pstrdup(refusal);
		calls = JsonGetArray(msg, "tool_calls");
		reply->tool_calls = (calls && json_object_array_length(calls) > 0) ||
			JsonGetObject(msg, "function_call") != NULL;
		{
			json_object *fn = calls && json_object_array_length(calls) > 0 ?
				JsonGetObject(json_object_array_get_idx(calls, 0), "function") : NULL;

			if (JsonGetString(fn, "name") && JsonGetString(fn, "arguments"))
			{
				reply->tool_name = pstrdup(JsonGetString(fn, "name"));
				reply->tool_input = pstrdup(JsonGetString(fn, "arguments"));
			}
		}
		reply->finish_reason = fr ? pstrdup(fr) : NULL;
		reply->stop_reason = reply->finish_reason;
	}
	else
		reply->nchoices = 0;
	if (want_json)
	{
		json_object_object_add(root, "provider", json_object_new_string(route->provider->name));
		reply->response_json = JsonToPstr(root);
	}
	return true;
}

/*
 * One chunk of a chat.completion.chunk stream: text deltas of choice 0
 * (matched by index: with n > 1 the chunks of the choices come in turn),
 * its refusal and tool-call deltas and finish reason, the usage chunk, or
 * an error object sent after the 200.
 */
static void
openai_stream_event(LlmStreamDecoder *dec, const char *type, json_object *root)
{
	json_object *err = JsonGetObject(root, "error");
	json_object *c;

	if (err)
	{
		ProviderReadError(root, &dec->error_body);
		dec->error = dec->error_body.message ? dec->error_body.message :
			pstrdup(json_object_to_json_string_ext(err, JSON_C_TO_STRING_PLAIN));
		return;
	}
	read_usage(root, &dec->usage);
	c = ProtoChoice(JsonGetArray(root, "choices"), 0);
	if (c)
	{
		json_object *delta = JsonGetObject(c, "delta");
		const char *text = JsonGetString(delta, "content");
		const char *refusal = JsonGetString(delta, "refusal");
		const char *fr = JsonGetString(c, "finish_reason");

		if (text && text[0] != '\0')
			dec->pieces = lappend(dec->pieces, pstrdup(text));
		if (refusal && refusal[0] != '\0')
			dec->refusal = dec->refusal ? psprintf("%s%s", dec->refusal, refusal) : pstrdup(refusal);
		if (JsonGetArray(delta, "tool_calls") || JsonGetObject(delta, "function_call"))
			dec->tool_calls = true;
		if (fr)
		{
			dec->saw_finish_reason = true;
			dec->finish_reason = pstrdup(fr);
			dec->stop_reason = dec->finish_reason;
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
 * of the batch's window is one of those, and can be sent again.  Returns
 * the 2xx response's body, or NULL with *problem.
 */
static json_object *
openai_batch_envelope(json_object *line, const char **custom_id,
					  long *status, bool *expired, char **problem)
{
	json_object *response = JsonGetObject(line, "response");
	json_object *error = JsonGetObject(line, "error");
	json_object *body;
	int64		code = 0;

	*custom_id = JsonGetString(line, "custom_id");
	if (*custom_id == NULL)
	{
		*problem = pstrdup("A result line has no custom_id.");
		return NULL;
	}
	if (response == NULL)
	{
		const char *c = JsonGetString(error, "code");
		const char *m = JsonGetString(error, "message");

		*expired = c && (strcmp(c, "batch_expired") == 0 || strcmp(c, "batch_cancelled") == 0);
		*problem = psprintf("The request was not run: %s%s%s.", m ? m : "no reason given",
							c ? " " : "", c ? psprintf("(%s)", c) : "");
		return NULL;
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
		return NULL;
	}
	if (body == NULL)
	{
		*problem = pstrdup("A result line has no response body.");
		return NULL;
	}
	return body;
}

/* One result of a batch of chat requests. */
static bool
openai_batch_result(json_object *line, const LlmRoute *route, const char **custom_id,
					long *status, bool *expired, LlmReply *reply, char **problem)
{
	json_object *body = openai_batch_envelope(line, custom_id, status, expired, problem);

	if (body == NULL)
		return false;
	return openai_parse_reply(body, route, false, reply, problem);
}

/*
 * The wire body of an embedding request: the request's inputs and
 * options with the upstream model, and the float encoding pg_llm reads.
 * The returned object belongs to the caller.
 */
static json_object *
openai_build_embed_body(LlmRequest *req, const LlmRoute *route)
{
	json_object *body = NULL;

	if (json_object_deep_copy(req->obj, &body, NULL) != 0 || body == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	json_object_object_add(body, "model", json_object_new_string(route->upstream_model));
	json_object_object_add(body, "encoding_format", json_object_new_string("float"));
	return body;
}

/* Read one "embedding" array into a vector, or give the vector its error. */
static void
read_vector(json_object *emb, LlmVector *vec)
{
	size_t		k,
				n;
	float4	   *values;

	if (emb == NULL || !json_object_is_type(emb, json_type_array))
	{
		vec->error = pstrdup(emb && json_object_is_type(emb, json_type_string) ?
							 "The vector is a string, not an array of numbers." :
							 "The reply's item for this input has no \"embedding\" array.");
		return;
	}
	n = json_object_array_length(emb);
	if (n == 0)
	{
		vec->error = pstrdup("The reply's vector for this input is empty.");
		return;
	}
	if (n > PG_INT32_MAX / sizeof(float4))
	{
		vec->error = pstrdup("The reply's vector for this input is too long.");
		return;
	}
	values = palloc(sizeof(float4) * n);
	for (k = 0; k < n; k++)
	{
		json_object *e = json_object_array_get_idx(emb, k);
		double		d;

		if (e == NULL || !(json_object_is_type(e, json_type_double) ||
						   json_object_is_type(e, json_type_int)))
		{
			vec->error = psprintf("Element %zu of the reply's vector for this input is not a number.", k + 1);
			pfree(values);
			return;
		}
		d = json_object_get_double(e);
		if (!isfinite(d) || d > FLT_MAX || d < -FLT_MAX)
		{
			vec->error = psprintf("Element %zu of the reply's vector for this input is out of range for real.", k + 1);
			pfree(values);
			return;
		}
		values[k] = (float4) d;
	}
	vec->dim = (int) n;
	vec->values = values;
}

/*
 * Read an embedding reply: {"data": [{"index", "embedding": [...]}],
 * "usage": {"prompt_tokens"}}.  Vectors are matched to inputs by their
 * "index" (by position only when a server leaves it out), never trusted
 * to come in order; an index outside the request matches nothing, and
 * an input given two vectors gets neither.
 */
static bool
openai_parse_embed_reply(json_object *root, const LlmRoute *route,
						 LlmEmbedReply *reply, char **problem)
{
	json_object *data = JsonGetArray(root, "data");
	json_object *usage = JsonGetObject(root, "usage");
	size_t		i,
				n;
	int64		v;

	if (data == NULL)
	{
		*problem = pstrdup("The response has no \"data\" array.");
		return false;
	}
	if (JsonGetInt64(usage, "prompt_tokens", &v) || JsonGetInt64(usage, "total_tokens", &v))
	{
		reply->has_usage = true;
		reply->input_tokens = v;
	}
	n = json_object_array_length(data);
	for (i = 0; i < n; i++)
	{
		json_object *item = json_object_array_get_idx(data, i);
		json_object *emb = NULL;
		int64		idx = (int64) i;
		LlmVector  *vec;

		if (item == NULL || !json_object_is_type(item, json_type_object))
			continue;
		if (json_object_object_get_ex(item, "index", NULL) && !JsonGetInt64(item, "index", &idx))
			continue;
		if (idx < 0 || idx >= reply->n)
			continue;
		vec = &reply->vectors[idx];
		if (vec->dim > 0 || vec->error)
		{
			vec->dim = 0;
			vec->values = NULL;
			vec->error = pstrdup("The reply has two vectors for this input.");
			continue;
		}
		json_object_object_get_ex(item, "embedding", &emb);
		read_vector(emb, vec);
	}
	return true;
}

/*
 * One embedding request of a batch (one input): what would be sent to the
 * embeddings endpoint, with the url of that endpoint for batch lines.
 */
static json_object *
openai_batch_embed_line(LlmRequest *req, const LlmRoute *route, const char *custom_id)
{
	json_object *line = json_object_new_object();

	json_object_object_add(line, "custom_id", json_object_new_string(custom_id));
	json_object_object_add(line, "method", json_object_new_string("POST"));
	json_object_object_add(line, "url", json_object_new_string(ProviderEmbedBatchUrl(route->provider)));
	json_object_object_add(line, "body", openai_build_embed_body(req, route));
	return line;
}

/* One result of a batch of embeddings: its one vector. */
static bool
openai_batch_embed_result(json_object *line, const LlmRoute *route, const char **custom_id,
						  long *status, bool *expired, LlmEmbedReply *reply, char **problem)
{
	json_object *body = openai_batch_envelope(line, custom_id, status, expired, problem);

	if (body == NULL)
		return false;
	return openai_parse_embed_reply(body, route, reply, problem);
}

/* ---- provider batch APIs: the OpenAI Batch API and a relay's inline batches ---- */

/*
 * The body that creates an OpenAI batch from an uploaded file, with our
 * token in its metadata (to find it again after a crash).
 */
static char *
openai_batch_create_body(const LlmBatchState *b)
{
	json_object *o = json_object_new_object();
	json_object *meta = json_object_new_object();
	char	   *body;

	json_object_object_add(o, "input_file_id", json_object_new_string(b->input_file_id));
	json_object_object_add(o, "endpoint",
						   json_object_new_string(b->embed ? ProviderEmbedBatchUrl(b->provider) :
												  b->provider->batch_url));
	json_object_object_add(o, "completion_window", json_object_new_string("24h"));
	json_object_object_add(meta, "pg_llm_token", json_object_new_string(b->token));
	json_object_object_add(o, "metadata", meta);
	body = pstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return body;
}

/*
 * The requests of the Batch API: the JSONL file uploaded (POST /files,
 * purpose batch), the batch created from it (POST /batches), polled (GET
 * /batches/{id}), its output then its error file downloaded (GET
 * /files/{id}/content; results_step counts the files there are),
 * cancelled (POST /batches/{id}/cancel), and after a crash looked for a
 * page of GET /batches at a time.
 */
static bool
openai_batch_request(LlmBatchStep step, const LlmBatchState *b, LlmBatchRequest *req)
{
	memset(req, 0, sizeof(LlmBatchRequest));
	req->timeout = LLM_BATCH_TIMEOUT_CALL;
	switch (step)
	{
		case LLM_BATCH_UPLOAD:
			req->path = "/files";
			req->upload_file = true;
			req->upload_name = psprintf("%s.jsonl", b->token);
			req->timeout = LLM_BATCH_TIMEOUT_TRANSFER;
			return true;
		case LLM_BATCH_CREATE:
			req->path = "/batches";
			req->body = openai_batch_create_body(b);
			return true;
		case LLM_BATCH_POLL:
			req->get = true;
			req->path = psprintf("/batches/%s", b->batch_id);
			return true;
		case LLM_BATCH_LOOKUP:
			req->get = true;
			req->path = b->lookup_after ?
				psprintf("/batches?limit=100&after=%s", b->lookup_after) : "/batches?limit=100";
			return true;
		case LLM_BATCH_RESULTS:
			{
				/* the files there are: the output file, then the error file */
				const char *files[2];
				int			n = 0;

				if (b->output_file_id)
					files[n++] = b->output_file_id;
				if (b->error_file_id)
					files[n++] = b->error_file_id;
				if (b->results_step >= n)
					return false;
				req->get = true;
				req->path = psprintf("/files/%s/content", files[b->results_step]);
				req->to_file = true;
				req->timeout = LLM_BATCH_TIMEOUT_TRANSFER;
				return true;
			}
		case LLM_BATCH_CANCEL:
			req->path = psprintf("/batches/%s/cancel", b->batch_id);
			req->body = "{}";
			return true;
	}
	return false;
}

/* A Batch object: its status, counts, files, and why it failed. */
static void
openai_read_batch(json_object *root, LlmBatchEvent *ev)
{
	const char *s = JsonGetString(root, "status");
	json_object *counts = JsonGetObject(root, "request_counts");

	/* validating ... completed, failed, expired, cancelled */
	ev->kind = LLM_BATCH_RUNNING;
	ev->status = s ? pstrdup(s) : NULL;
	if (s && (strcmp(s, "completed") == 0 || strcmp(s, "failed") == 0 ||
			  strcmp(s, "expired") == 0 || strcmp(s, "cancelled") == 0))
		ev->kind = LLM_BATCH_ENDED;
	ev->cancelling = s && strcmp(s, "cancelling") == 0;
	ev->output_file_id = JsonCopyString(root, "output_file_id");
	ev->error_file_id = JsonCopyString(root, "error_file_id");
	ev->succeeded = JsonGetCount(counts, "completed");
	ev->errored = JsonGetCount(counts, "failed");
	if (s && strcmp(s, "failed") == 0)
	{
		/* {"errors": {"data": [{"code", "message", "line"}]}} */
		json_object *data = JsonGetArray(JsonGetObject(root, "errors"), "data");
		json_object *first = data && json_object_array_length(data) > 0 ?
			json_object_array_get_idx(data, 0) : NULL;
		const char *m = JsonGetString(first, "message");
		const char *c = JsonGetString(first, "code");

		ev->failure = psprintf("%s%s%s", m ? m : "the batch failed", c ? " " : "",
							   c ? psprintf("(%s)", c) : "");
	}
}

/*
 * A page of GET /batches: the batch whose metadata carries our token, or
 * where the next page starts when there are more.
 */
static void
openai_read_lookup(json_object *root, const LlmBatchState *b, LlmBatchEvent *ev)
{
	json_object *data = JsonGetArray(root, "data");
	size_t		n = data ? json_object_array_length(data) : 0;
	size_t		i;
	json_object *more;

	ev->kind = LLM_BATCH_NOT_FOUND;
	for (i = 0; i < n; i++)
	{
		json_object *batch = json_object_array_get_idx(data, i);
		const char *t = JsonGetString(JsonGetObject(batch, "metadata"), "pg_llm_token");

		if (t && strcmp(t, b->token) == 0)
		{
			ev->kind = LLM_BATCH_FOUND;
			ev->id = JsonCopyString(batch, "id");
			return;
		}
	}
	if (n > 0 && json_object_object_get_ex(root, "has_more", &more) && json_object_get_boolean(more))
		ev->lookup_after = JsonCopyString(json_object_array_get_idx(data, n - 1), "id");
}

/* The answer of a step of the Batch API. */
static void
openai_batch_read(LlmBatchStep step, const LlmBatchState *b, json_object *root, LlmBatchEvent *ev)
{
	ev->kind = LLM_BATCH_UNREADABLE;
	if (root == NULL)
		return;
	switch (step)
	{
		case LLM_BATCH_UPLOAD:
		case LLM_BATCH_CREATE:
			/* the File, or the Batch, by its id */
			ev->id = JsonCopyString(root, "id");
			if (ev->id)
				ev->kind = step == LLM_BATCH_UPLOAD ? LLM_BATCH_UPLOADED : LLM_BATCH_CREATED;
			break;
		case LLM_BATCH_POLL:
			openai_read_batch(root, ev);
			break;
		case LLM_BATCH_LOOKUP:
			openai_read_lookup(root, b, ev);
			break;
		case LLM_BATCH_RESULTS:
		case LLM_BATCH_CANCEL:
			break;
	}
}

/*
 * A relay's synchronous POST /batches {"input_file_content": [...]}: up
 * to llm.batch_size requests, their results in the answer.
 */
static bool
inline_batch_request(LlmBatchStep step, const LlmBatchState *b, LlmBatchRequest *req)
{
	memset(req, 0, sizeof(LlmBatchRequest));
	if (step != LLM_BATCH_CREATE)
		return false;
	req->path = "/batches";
	req->send_file = true;
	req->timeout = LLM_BATCH_TIMEOUT_SYNC;
	return true;
}

/* The answer of an inline batch: its results, or nothing pg_llm can read. */
static void
inline_batch_read(LlmBatchStep step, const LlmBatchState *b, json_object *root, LlmBatchEvent *ev)
{
	ev->kind = root && JsonGetArray(root, "results") ? LLM_BATCH_ANSWERED : LLM_BATCH_UNREADABLE;
}

/* The results array of an inline answer. */
static json_object *
inline_answer_results(json_object *root)
{
	return JsonGetArray(root, "results");
}

static const LlmBatchOps OpenAIBatchOps = {
	.name = "openai",
	.max_requests = 50000,
	.max_bytes = (size_t) 200 * 1024 * 1024,
	.inline_results = false,
	.can_lookup = true,
	.requests_head = "",
	.requests_separator = "\n",
	.requests_tail = "\n",
	.request = openai_batch_request,
	.read_answer = openai_batch_read,
	.request_line = openai_batch_line,
	.result_line = openai_batch_result,
	.embed_line = openai_batch_embed_line,
	.embed_result_line = openai_batch_embed_result,
};

static const LlmBatchOps InlineBatchOps = {
	.name = "inline",
	.max_requests = 0,
	.max_bytes = (size_t) 200 * 1024 * 1024,
	.inline_results = true,
	.can_lookup = false,
	.requests_head = "{\"input_file_content\": [",
	.requests_separator = ",",
	.requests_tail = "]}",
	.request = inline_batch_request,
	.read_answer = inline_batch_read,
	.request_line = openai_batch_line,
	.result_line = openai_batch_result,
	.answer_results = inline_answer_results,
	.embed_line = openai_batch_embed_line,
	.embed_result_line = openai_batch_embed_result,
};

/* The Batch API first: it is the default. */
static const LlmBatchOps *const openai_batch_kinds[] = {&OpenAIBatchOps, &InlineBatchOps, NULL};

const LlmProviderOps OpenAIProviderOps = {
	.name = "openai",
	.chat_path = "/chat/completions",
	.key_header = "\"Authorization: Bearer <key>\"",
	.add_headers = openai_add_headers,
	.build_body = openai_build_body,
	.parse_reply = openai_parse_reply,
	.raw_event = openai_raw_event,
	.stream_event = openai_stream_event,
	.batch_kinds = openai_batch_kinds,
	.embed_path = "/embeddings",
	.build_embed_body = openai_build_embed_body,
	.parse_embed_reply = openai_parse_embed_reply,
};
