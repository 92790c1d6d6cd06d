/*-------------------------------------------------------------------------
 *
 * count.c
 *	  Exact input token counts from a provider that counts them: Anthropic's
 *	  POST /v1/messages/count_tokens, which takes the fields of a Messages
 *	  request that make its input (model, messages, system, tools,
 *	  tool_choice, thinking) and answers {"input_tokens": N}, free of
 *	  charge.  Used by llm.estimate() for the routes whose provider has the
 *	  option count_tokens.
 *
 *	  This file must not include utils/builtins.h (see llm_json.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "llm_json.h"

#include "call.h"
#include "count.h"
#include "http.h"
#include "provider.h"
#include "redact.h"

/* The members of a Messages request that count_tokens accepts. */
static const char *const count_keys[] = {
	"model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers"
};

/* The count_tokens body of a request on a route, as JSON text. */
static char *
count_body(LlmRequest *req, const LlmRoute *route)
{
	json_object *body = route->provider->ops->build_body(req, route, false);
	JsonGuard  *g = JsonGuardNew(body);
	json_object *out = json_object_new_object();
	char	   *text;
	int			i;

	for (i = 0; i < lengthof(count_keys); i++)
	{
		json_object *v;

		if (json_object_object_get_ex(body, count_keys[i], &v))
			json_object_object_add(out, count_keys[i], json_object_get(v));
	}
	JsonGuardRelease(g);
	g = JsonGuardNew(out);
	text = JsonToPstr(out);
	JsonGuardRelease(g);
	return text;
}

/*
 * Does a route's protocol count tokens?  Only Anthropic's has an
 * endpoint for it.
 */
bool
CountTokensSupported(const LlmRoute *route)
{
	return strcmp(route->provider->ops->name, "anthropic") == 0;
}

/*
 * The input tokens of a request on a route, as the provider counts them.
 * A failure raises an error naming the provider and what it said.
 */
int64
CountTokensExact(LlmRequest *req, const LlmRoute *route)
{
	const LlmProvider *p = route->provider;
	HttpRequestSpec spec;
	HttpTransfer *volatile t = NULL;
	List	   *headers = NIL;
	ListCell   *lc;
	size_t		blen = strlen(p->base_url);
	char	   *body = count_body(req, route);
	long		status;
	char	   *reply = NULL;
	json_object *root;
	int64		n = -1;

	while (blen > 0 && p->base_url[blen - 1] == '/')
		blen--;
	memset(&spec, 0, sizeof(spec));
	spec.url = psprintf("%.*s%s/count_tokens", (int) blen, p->base_url, p->ops->chat_path);
	headers = lappend(headers, "Content-Type: application/json");
	p->ops->add_headers(p, ConfigProviderKey(p), &headers);
	foreach(lc, p->headers)
		headers = lappend(headers, lfirst(lc));
	spec.headers = headers;
	spec.body = body;
	spec.body_len = strlen(body);
	spec.connect_timeout_ms = p->connect_timeout_ms >= 0 ? p->connect_timeout_ms : llm_connect_timeout_ms;
	spec.timeout_ms = p->timeout_ms >= 0 ? p->timeout_ms : llm_timeout_ms;
	spec.max_response = 64 * 1024;
	spec.xact_bound = true;
	spec.transport = &p->transport;

	PG_TRY();
	{
		t = HttpStart(&spec);
		HttpWaitDone(t);
		status = t->outcome == HTTP_COMPLETE ? t->status : 0;
		if (t->data && t->len > 0)
			reply = pnstrdup(t->data, Min(t->len, 64 * 1024));
		if (status == 0)
			reply = pstrdup(t->errbuf);
	}
	PG_CATCH();
	{
		HttpRelease(t);
		PG_RE_THROW();
	}
	PG_END_TRY();
	HttpRelease(t);

	if (status >= 200 && status < 300 && reply != NULL &&
		(root = JsonParseOrNull(reply, strlen(reply))) != NULL)
	{
		int64		v;

		if (JsonGetInt64(root, "input_tokens", &v) && v >= 0)
			n = v;
		json_object_put(root);
	}
	if (n >= 0)
		return n;
	if (status >= 200 && status < 300)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_JSON_TEXT),
				 errmsg("provider \"%s\" answered count_tokens without input_tokens", p->name),
				 errhint("Turn the provider's count_tokens option off to estimate its tokens instead.")));
	{
		LlmErrorBody eb;
		char	   *said = NULL;

		memset(&eb, 0, sizeof(eb));
		if (status > 0 && reply)
			ProviderParseError(reply, strlen(reply), &eb);
		said = eb.message ? eb.message : reply;
		ereport(ERROR,
				(errcode(status > 0 ? ERRCODE_EXTERNAL_ROUTINE_EXCEPTION : ERRCODE_CONNECTION_FAILURE),
				 errmsg("provider \"%s\" could not count tokens", p->name),
				 status > 0 ?
				 errdetail("It answered HTTP %ld: %s", status,
						   said ? RedactProviderTextMax(said, strlen(said), p, 500) : "") :
				 errdetail("%s", said ? RedactProviderCString(said, p) : ""),
				 errhint("Turn the provider's count_tokens option off to estimate its tokens instead.")));
	}
	return -1;					/* not reached */
}
