/*-------------------------------------------------------------------------
 *
 * provider.c
 *	  The table of protocols and what every protocol shares: building a
 *	  request body, parsing a reply or an error body, and handing stream
 *	  events to the protocol's decoder.  The protocol specifics live in
 *	  provider_openai.c and provider_anthropic.c, behind LlmProviderOps.
 *
 *	  This file must not include utils/builtins.h (see llm_json.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>
#include "utils/guc.h"

#include "llm_json.h"
#include "provider.h"
#include "request_int.h"
#include "schema.h"

/* Every protocol pg_llm speaks; a new one is a new line here. */
static const LlmProviderOps *const protocols[] = {
	&OpenAIProviderOps,
	&AnthropicProviderOps,
};

/* The protocol of this name, or NULL. */
const LlmProviderOps *
ProviderLookup(const char *protocol)
{
	int			i;

	for (i = 0; i < lengthof(protocols); i++)
		if (strcmp(protocols[i]->name, protocol) == 0)
			return protocols[i];
	return NULL;
}


/*
 * The body to send on a route, with the request's long texts spliced in
 * (RequestSerialize), as malloc'd text for the transfer to take over;
 * *len is its length.
 */
char *
ProviderRequestBody(LlmRequest *req, const LlmRoute *route, bool stream, size_t *len)
{
	json_object *body;
	JsonGuard  *g;
	char	   *text;

	body = route->provider->ops->build_body(SchemaRouteRequest(req, route), route, stream);
	g = JsonGuardNew(body);
	text = RequestSerialize(req, body, true, len);
	JsonGuardRelease(g);
	if (text == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Failed on a request of %zu bytes.", *len)));
	return text;
}

/* The JSON object in text, or NULL when text is not one. */
static json_object *
parse_object(const char *text, size_t len)
{
	json_object *root = JsonParseOrNull(text, len);

	if (root != NULL && !json_object_is_type(root, json_type_object))
	{
		json_object_put(root);
		root = NULL;
	}
	return root;
}

/*
 * Read a 2xx reply.  false, with *problem set, when the body is not JSON
 * or not shaped like a reply.
 */
bool
ProviderParseReply(const LlmRoute *route, const char *body, size_t len,
				   bool want_json, LlmReply *reply, char **problem)
{
	json_object *root = parse_object(body, len);
	JsonGuard  *g;
	bool		ok;

	memset(reply, 0, sizeof(LlmReply));
	if (root == NULL)
	{
		*problem = pstrdup("The response body is not a JSON object.");
		return false;
	}
	g = JsonGuardNew(root);
	ok = route->provider->ops->parse_reply(root, route, want_json, reply, problem);
	JsonGuardRelease(g);
	if (ok && !JsonUsageSane(body, len, LLM_MAX_USAGE_TOKENS))
		reply->usage_invalid = true;
	return ok;
}

/* A field of an error body as text, whatever its JSON type (codes are strings or numbers). */
static char *
field_text(json_object *v)
{
	if (v == NULL)
		return NULL;
	if (json_object_is_type(v, json_type_string))
		return pstrdup(json_object_get_string(v));
	return pstrdup(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
}

/*
 * Read an error body of any of the shapes in the wild (ProtoErrorRead):
 * OpenAI's nested {"error": {...}}, Anthropic's {"type": "error", "error":
 * {...}}, vLLM's flat {"object": "error", "message": ...}, the
 * {"error": "SyntaxError", "message": ...} of Express, Fastify and
 * NestJS, FastAPI's {"detail": ...}, or a bare {"error": "text"}.
 * Anything else (HTML from a proxy, nothing at all) leaves the fields NULL.
 */
void
ProviderParseError(const char *body, size_t len, LlmErrorBody *err)
{
	json_object *root;
	JsonGuard  *g;

	memset(err, 0, sizeof(LlmErrorBody));
	root = body ? JsonParseOrNull(body, len) : NULL;
	if (root == NULL)
		return;
	g = JsonGuardNew(root);
	ProviderReadError(root, err);
	JsonGuardRelease(g);
}

/* The fields of an error object already parsed (an error inside a stream). */
void
ProviderReadError(json_object *root, LlmErrorBody *err)
{
	ProtoErrorFields e;

	ProtoErrorRead(root, &e);
	err->message = field_text(e.message);
	err->type = field_text(e.type);
	err->code = field_text(e.code);
}

/* A usage, as read by the protocol, into a reply. */
void
ProviderReplySetUsage(LlmReply *reply, const ProtoUsage *u)
{
	ProtoTokens t;

	ProtoUsageTotals(u, &t);
	reply->has_usage = ProtoUsageHasTokens(u);
	reply->input_tokens = t.input;
	reply->output_tokens = t.output;
	reply->cached_input_tokens = t.cached_input;
	reply->cache_write_tokens = t.cache_write;
	reply->cache_write_1h_tokens = t.cache_write_1h;
	reply->reasoning_tokens = t.reasoning;
	strlcpy(reply->service_tier, u->service_tier, sizeof(reply->service_tier));
}

/* A decoder for a stream of a protocol, nothing read yet. */
void
ProviderDecoderInit(LlmStreamDecoder *dec, const LlmProviderOps *ops)
{
	memset(dec, 0, sizeof(LlmStreamDecoder));
	dec->ops = ops;
	ProtoUsageInit(&dec->usage, ops == &AnthropicProviderOps);
}

/*
 * One SSE event of a stream.  The protocol sees the raw event first (end
 * markers and pings that are not JSON); everything else is parsed and
 * handed to its decoder.  Data that is not JSON ends the stream with an
 * error rather than being skipped, so a reply is never silently shortened.
 */
void
ProviderStreamEvent(LlmStreamDecoder *dec, const char *type, const char *data, size_t len)
{
	json_object *volatile root;

	if (dec->ops->raw_event && dec->ops->raw_event(dec, type, data, len))
		return;
	if (!JsonUsageSane(data, len, LLM_MAX_USAGE_TOKENS))
		dec->usage_invalid = true;
	root = JsonParseOrNull(data, len);
	if (root == NULL)
	{
		/* whole: what shows it redacts first, then cuts (redact.c) */
		dec->error = psprintf("a stream event is not JSON: %.*s", (int) Min(len, 8192), data);
		return;
	}

	/*
	 * Once per chunk: a PG_TRY rather than a JsonGuard, whose callback would
	 * stay registered in the stream's context until the stream ends.
	 */
	PG_TRY();
	{
		dec->ops->stream_event(dec, type, root);
	}
	PG_CATCH();
	{
		json_object_put(root);
		PG_RE_THROW();
	}
	PG_END_TRY();
	json_object_put(root);
}

/* The body of an embedding request on a route, as palloc'd text. */
char *
ProviderEmbedBody(LlmRequest *req, const LlmRoute *route)
{
	json_object *body = route->provider->ops->build_embed_body(req, route);
	JsonGuard  *g = JsonGuardNew(body);
	char	   *text = JsonToPstr(body);

	JsonGuardRelease(g);
	return text;
}

/*
 * Read a 2xx embedding reply into one vector (or error) per input of req.
 * false, with *problem, when the body is not JSON or not shaped like a
 * reply at all (retried like a 5xx by the caller).  Otherwise every input
 * the reply has no usable vector for gets its own error: none at all
 * (fewer vectors than inputs), or one of other dimensions than the
 * request asked for.
 */
bool
ProviderParseEmbedReply(const LlmRoute *route, LlmRequest *req, const char *body, size_t len,
						LlmEmbedReply *reply, char **problem)
{
	json_object *root = parse_object(body, len);
	JsonGuard  *g;
	int			want = RequestDimensions(req);
	int			got = 0;
	int			i;
	bool		ok;

	memset(reply, 0, sizeof(LlmEmbedReply));
	reply->n = RequestInputCount(req);
	reply->vectors = palloc0(sizeof(LlmVector) * Max(reply->n, 1));
	if (root == NULL)
	{
		*problem = pstrdup("The response body is not a JSON object.");
		return false;
	}
	g = JsonGuardNew(root);
	ok = route->provider->ops->parse_embed_reply(root, route, reply, problem);
	JsonGuardRelease(g);
	if (!ok)
		return false;
	if (!JsonUsageSane(body, len, LLM_MAX_USAGE_TOKENS))
		reply->usage_invalid = true;

	for (i = 0; i < reply->n; i++)
		if (reply->vectors[i].dim > 0 || reply->vectors[i].error)
			got++;
	for (i = 0; i < reply->n; i++)
	{
		LlmVector  *v = &reply->vectors[i];

		if (v->error)
			continue;
		if (v->dim == 0)
			v->error = psprintf("The reply has no vector for this input (%d vector%s for %d input%s).",
								got, got == 1 ? "" : "s", reply->n, reply->n == 1 ? "" : "s");
		else if (want > 0 && v->dim != want)
			v->error = psprintf("The reply's vector has %d dimensions; %d were asked for.",
								v->dim, want);
		if (v->error)
		{
			v->dim = 0;
			v->values = NULL;
		}
	}
	return true;
}

/*
 * The batch kind of a protocol named by the provider option batch_api
 * (NULL: the protocol's default), or NULL when it has no such kind.
 */
const LlmBatchOps *
ProviderBatchKind(const LlmProviderOps *ops, const char *name)
{
	int			i;

	if (ops->batch_kinds == NULL)
		return NULL;
	if (name == NULL)
		return ops->batch_kinds[0];
	for (i = 0; ops->batch_kinds[i]; i++)
		if (strcmp(ops->batch_kinds[i]->name, name) == 0)
			return ops->batch_kinds[i];
	return NULL;
}

/* One request of a batch as a line of JSON text (palloc'd). */
char *
ProviderBatchLine(const LlmBatchOps *kind, LlmRequest *req, const LlmRoute *route,
				  const char *custom_id)
{
	json_object *line = kind->request_line(SchemaRouteRequest(req, route), route, custom_id);
	JsonGuard  *g = JsonGuardNew(line);
	size_t		len;
	char	   *text = RequestSerialize(req, line, false, &len);

	JsonGuardRelease(g);
	return text;
}

/*
 * A 2xx answer of a step of a batch, read by its kind into *ev (which
 * holds copies: nothing of the parsed answer is kept).
 */
void
ProviderBatchAnswer(const LlmBatchOps *kind, LlmBatchStep step, const LlmBatchState *b,
					const char *body, size_t len, LlmBatchEvent *ev)
{
	json_object *root = parse_object(body ? body : "", len);
	JsonGuard  *g = root ? JsonGuardNew(root) : NULL;

	memset(ev, 0, sizeof(LlmBatchEvent));
	kind->read_answer(step, b, root, ev);
	if (g)
		JsonGuardRelease(g);
}

/* Each result of an inline batch's answer, as JSON text, to fn. */
void
ProviderBatchEachResult(const LlmBatchOps *kind, const char *body, size_t len,
						void (*fn) (void *arg, const char *line, size_t len), void *arg)
{
	json_object *root = parse_object(body, len);
	JsonGuard  *g;
	json_object *results;
	size_t		i,
				n;

	if (root == NULL)
		return;
	g = JsonGuardNew(root);
	results = kind->answer_results ? kind->answer_results(root) : NULL;
	n = results ? json_object_array_length(results) : 0;
	for (i = 0; i < n; i++)
	{
		const char *line = json_object_to_json_string_ext(json_object_array_get_idx(results, i),
														  JSON_C_TO_STRING_PLAIN);

		fn(arg, line, strlen(line));
	}
	JsonGuardRelease(g);
}

/*
 * One line of a batch's results: false, with *problem, when it cannot be
 * read at all (then *custom_id may be NULL).
 */
bool
ProviderBatchResult(const LlmBatchOps *kind, const LlmRoute *route, const char *line, size_t len,
					char **custom_id, long *status, bool *expired,
					LlmReply *reply, char **problem)
{
	json_object *root = parse_object(line, len);
	JsonGuard  *g;
	const char *id = NULL;
	bool		ok;

	*custom_id = NULL;
	*status = 0;
	*expired = false;
	memset(reply, 0, sizeof(LlmReply));
	if (root == NULL)
	{
		*problem = pstrdup("A result line is not a JSON object.");
		return false;
	}
	g = JsonGuardNew(root);
	ok = kind->result_line(root, route, &id, status, expired, reply, problem);
	*custom_id = id ? pstrdup(id) : NULL;
	JsonGuardRelease(g);
	if (!JsonUsageSane(line, len, LLM_MAX_USAGE_TOKENS))
		reply->usage_invalid = true;
	return ok;
}

/* The settings of the protocols (the Anthropic default of max_tokens, which the Messages API requires). */
void
ProviderDefineSettings(void)
{
	DefineCustomIntVariable("llm.anthropic_max_tokens",
							"max_tokens sent to anthropic providers when a call gives none.",
							"The Messages API requires it; providers can override it with the default_max_tokens option.",
							&llm_anthropic_max_tokens, 4096, 1, INT_MAX,
							PGC_USERSET, 0, NULL, NULL, NULL);
}

/*
 * The url of an embedding line of a batch (and the endpoint of an OpenAI
 * batch of embeddings): the provider's batch_url with its chat endpoint
 * made the embeddings endpoint ("/v1/chat/completions" gives
 * "/v1/embeddings", a relay's "/chat/completions" gives "/embeddings");
 * "/v1/embeddings" when batch_url names some other endpoint.
 */
char *
ProviderEmbedBatchUrl(const LlmProvider *provider)
{
	const char *url = provider->batch_url ? provider->batch_url : "/v1/chat/completions";
	const char *chat = "chat/completions";
	size_t		len = strlen(url);
	size_t		clen = strlen(chat);

	if (len >= clen && strcmp(url + len - clen, chat) == 0)
		return psprintf("%.*sembeddings", (int) (len - clen), url);
	return pstrdup("/v1/embeddings");
}

/* One embedding request of a batch (one input) as a line of JSON text. */
char *
ProviderBatchEmbedLine(const LlmBatchOps *kind, LlmRequest *req, const LlmRoute *route,
					   const char *custom_id)
{
	json_object *line = kind->embed_line(req, route, custom_id);
	JsonGuard  *g = JsonGuardNew(line);
	char	   *text = JsonToPstr(line);

	JsonGuardRelease(g);
	return text;
}

/*
 * One line of a batch of embeddings' results, as ProviderBatchResult
 * reads one of chat: its vector (or why it has none) in reply, one
 * input's.
 */
bool
ProviderBatchEmbedResult(const LlmBatchOps *kind, const LlmRoute *route, const char *line, size_t len,
						 char **custom_id, long *status, bool *expired,
						 LlmEmbedReply *reply, char **problem)
{
	json_object *root = parse_object(line, len);
	JsonGuard  *g;
	const char *id = NULL;
	bool		ok;

	*custom_id = NULL;
	*status = 0;
	*expired = false;
	memset(reply, 0, sizeof(LlmEmbedReply));
	reply->n = 1;
	reply->vectors = palloc0(sizeof(LlmVector));
	if (root == NULL)
	{
		*problem = pstrdup("A result line is not a JSON object.");
		return false;
	}
	g = JsonGuardNew(root);
	ok = kind->embed_result_line(root, route, &id, status, expired, reply, problem);
	*custom_id = id ? pstrdup(id) : NULL;
	JsonGuardRelease(g);
	if (!JsonUsageSane(line, len, LLM_MAX_USAGE_TOKENS))
		reply->usage_invalid = true;
	if (ok && reply->vectors[0].error == NULL && reply->vectors[0].dim == 0)
		reply->vectors[0].error = pstrdup("The reply has no vector for this input.");
	return ok;
}
