/*-------------------------------------------------------------------------
 *
 * call.c
 *	  The call engine shared by every call mode: walk a model's fallback
 *	  chain, send each attempt, judge the outcome, wait as the provider
 *	  asks (Retry-After) or with exponential backoff and jitter, and raise
 *	  one clear error when nothing served the call.
 *
 *	  Judging follows the providers' own SDKs: connection errors,
 *	  timeouts, 408, 409, 429 (but not an exhausted quota), 5xx, 529 and a
 *	  2xx whose body cannot be read are retried; x-should-retry overrides;
 *	  a Retry-After above llm.max_retry_after moves on to the next route at
 *	  once.  Permanent errors fail at once.  LlmCallDecide is the one place
 *	  that says what follows a failed attempt, for every call mode and the
 *	  queue worker.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include <math.h>

#include "access/xact.h"
#include "common/pg_prng.h"
#include "utils/resowner.h"
#include "mb/pg_wchar.h"
#include "utils/guc.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/timestamp.h"

#include "cache.h"
#include "call.h"
#include "http.h"
#include "ratelimit.h"
#include "redact.h"
#include "usage.h"
#include "utf8.h"

char	   *llm_default_model = NULL;
int			llm_max_retries = 2;
int			llm_max_retry_after = 60;

/* A new call in the current memory context. */
LlmCall *
LlmCallCreate(LlmRequest *req, const char *model, LlmMode mode)
{
	LlmCall    *call = palloc0(sizeof(LlmCall));

	call->req = req;
	call->tag = RequestTag(req);
	call->model = pstrdup(model);
	call->mode = mode;
	call->routes = ConfigRoutes(model);
	call->route_cell = list_head(call->routes);
	call->route_no = 1;
	call->started = GetCurrentTimestamp();
	return call;
}

/*
 * The model a call goes to: the argument, else the request's own "model",
 * else llm.default_model.
 */
const char *
LlmResolveModel(const char *model, LlmRequest *req)
{
	if (model == NULL && req != NULL)
		model = RequestModel(req);
	if (model == NULL && llm_default_model != NULL && llm_default_model[0] != '\0')
		model = llm_default_model;
	if (model == NULL || model[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("no model given"),
				 errhint("Pass a model, or set llm.default_model.")));
	return model;
}

/* A setting overridden per provider (-1: not overridden). */
static long
pick(int provider_value, int setting)
{
	return provider_value >= 0 ? provider_value : setting;
}

/* Send one attempt on a route. */
HttpTransfer *
LlmSendAttempt(LlmCall *call, const LlmRoute *route, bool stream)
{
	const LlmProvider *p = route->provider;
	const char *key = ConfigProviderKey(p);
	HttpRequestSpec spec;
	List	   *headers = NIL;
	bool		embed = (call->task == LLM_TASK_EMBED);
	size_t		body_len;
	char	   *body;
	size_t		blen = strlen(p->base_url);
	ListCell   *lc;

	/* embedding calls are routed only to protocols with embeddings */
	if (embed && p->ops->embed_path == NULL)
		elog(ERROR, "embedding call routed to provider \"%s\", whose protocol has no embeddings", p->name);
	while (blen > 0 && p->base_url[blen - 1] == '/')
		blen--;

	memset(&spec, 0, sizeof(spec));
	spec.url = psprintf("%.*s%s", (int) blen, p->base_url,
						embed ? p->ops->embed_path : p->ops->chat_path);
	headers = lappend(headers, "Content-Type: application/json");
	p->ops->add_headers(p, key, &headers);
	if (stream)
		headers = lappend(headers, "Accept: text/event-stream");
	foreach(lc, p->headers)
		headers = lappend(headers, lfirst(lc));

	spec.headers = headers;
	spec.connect_timeout_ms = pick(p->connect_timeout_ms, llm_connect_timeout_ms);
	if (stream)
	{
		/* a stream may run long; going quiet is what fails it */
		spec.timeout_ms = 0;
		spec.idle_timeout_ms = pick(p->stream_idle_timeout, llm_stream_idle_timeout) * 1000L;
	}
	else
	{
		spec.timeout_ms = pick(p->timeout_ms, llm_timeout_ms);
		spec.low_speed_time = pick(p->low_speed_time, llm_low_speed_time);
		spec.low_speed_limit = pick(p->low_speed_limit, llm_low_speed_limit);
	}
	spec.max_response = (size_t) llm_max_response_size_kb * 1024;
	spec.xact_bound = (call->mode != LLM_MODE_QUEUE);
	spec.transport = &p->transport;

	/*
	 * Last, so that nothing fails between the body's malloc and HttpStart:
	 * a chat body is malloc'd for the transfer to send without a copy.
	 */
	if (embed)
	{
		body = ProviderEmbedBody(call->req, route);
		body_len = strlen(body);
		RequestCheckSize(body_len);
	}
	else
	{
		body = ProviderRequestBody(call->req, route, stream, &body_len);
		if (body_len > (size_t) llm_max_request_size_kb * 1024)
		{
			free(body);
			RequestCheckSize(body_len);
		}
		spec.body_owned = true;
	}
	spec.body = body;
	spec.body_len = body_len;

	call->attempts++;
	call->route = route;
	call->http_status = 0;
	call->delivered_bytes = 0;
	call->delivered_tokens = 0;
	call->sent_unanswered = false;
	call->attempt_started = GetCurrentTimestamp();
	/* what an attempt read is its own: nothing of the one before */
	memset(&call->reply, 0, sizeof(LlmReply));
	call->rl_unsent = false;	/* the turn held is used */
	return HttpStart(&spec);
}

/*
 * The first bytes of a body, for an error detail: on one line, white space
 * folded, the secrets redacted before it is cut (a key straddling the cut
 * leaves no beginning behind), shown as RedactProviderText shows text.
 */
#define EXCERPT_BYTES 200

static char *
body_excerpt(const HttpTransfer *t, const LlmProvider *p)
{
	size_t		n = Min(t->len - t->consumed, 4096);
	char	   *s = ConfigRedactSecret(pnstrdup(t->data ? t->data + t->consumed : "", n), p);
	char	   *r = s;
	char	   *w = s;
	bool		space = false;

	for (; *r; r++)
	{
		if (isspace((unsigned char) *r))
		{
			if (!space && w != s)
				*w++ = ' ';
			space = true;
			continue;
		}
		space = false;
		*w++ = *r;
	}
	while (w > s && w[-1] == ' ')
		w--;
	*w = '\0';
	if (w - s > EXCERPT_BYTES)
	{
		size_t		cut = EXCERPT_BYTES;
		char	   *mark;

		/* not inside a redacted secret's mark, nor inside a UTF-8 character */
		for (mark = strstr(s, "[redacted]"); mark; mark = strstr(mark + 1, "[redacted]"))
			if ((size_t) (mark - s) < cut && (size_t) (mark - s) + 10 > cut)
				cut = (mark - s) + 10;
		while (cut > 0 && ((unsigned char) s[cut] & 0xC0) == 0x80)
			cut--;
		s[cut] = '\0';
	}
	return RedactProviderCString(s, p);
}

/* The hint for an HTTP status from a provider. */
static char *
status_hint(long status, const LlmRoute *route, bool quota)
{
	const char *pname = route->provider->name;

	if (quota)
		return psprintf("The account of provider \"%s\" is out of credit: add credit, or route the model to another provider with llm.add_model().", pname);
	switch (status)
	{
		case 401:
			return psprintf("Check the API key of provider \"%s\": an administrator can set it with llm.alter_provider('%s', api_key => '...') or api_key_env => '...'; pg_llm sends it as %s.",
							pname, pname, route->provider->ops->key_header);
		case 403:
			return psprintf("The key of provider \"%s\" is not allowed to do this; check the account's permissions and region.", pname);
		case 404:
			return psprintf("Check that provider \"%s\" serves the model \"%s\", and that its base_url ends with the version prefix (such as /v1).", pname, route->upstream_model);
		case 400:
		case 422:
			return pstrdup("Check the options of the call against what the provider accepts.");
		case 407:
			return psprintf("A proxy between the database server and provider \"%s\" wants credentials: put them in the proxy URL (http://user:password@host:port) of the provider's proxy option; they are kept secret like the key.", pname);
		case 413:
			return pstrdup("The request is larger than the provider accepts; send a shorter prompt.");
		case 429:
		case 529:
			return pstrdup("The provider is rate-limiting or overloaded; try again later, raise llm.max_retries, or add a fallback route with llm.add_model().");
		case 503:
			return pstrdup("The provider is unavailable or overloaded; try again later, raise llm.max_retries, or add a fallback route with llm.add_model().");
		default:
			if (status >= 500 && status <= 599)
				return pstrdup("The provider failed to serve the request; try again later, raise llm.max_retries, or add a fallback route with llm.add_model().");
			if (status < 100 || status > 599)
				return psprintf("HTTP %ld is not a status HTTP defines: check that the base_url of provider \"%s\" points at an LLM API, not at something else answering on that port.",
								status, pname);
			return NULL;
	}
}

/* The host of a base_url, for messages. */
static char *
url_host(const char *url)
{
	const char *h = strstr(url, "://");
	size_t		n;

	h = h ? h + 3 : url;
	if (strchr(h, '@') && strchr(h, '@') < h + strcspn(h, "/"))
		h = strchr(h, '@') + 1;
	n = h[0] == '[' ? strcspn(h, "]") + 1 : strcspn(h, ":/");
	return pnstrdup(h, n);
}

/*
 * Where a provider's proxy comes from, for hints: its option, or a
 * variable of the server's environment.
 */
static char *
proxy_origin(const LlmProvider *p)
{
	const char *source;
	const char *proxy = HttpProxyFor(&p->transport, p->base_url, &source);

	if (proxy == NULL)
		return pstrdup("no proxy");
	if (strcmp(source, "option") == 0)
		return psprintf("the proxy %s of its proxy option", HttpUrlWithoutCredentials(proxy));
	return psprintf("the proxy %s of the server's environment variable %s",
					HttpUrlWithoutCredentials(proxy), source);
}

/* The hint for a route whose host (or proxy) cannot be reached. */
static char *
down_hint(const LlmProvider *p)
{
	const char *source;

	if (HttpProxyFor(&p->transport, p->base_url, &source) != NULL)
		return psprintf("Provider \"%s\" goes through %s: check that it runs and that its host name resolves, send the provider direct with its no_proxy option (\"*\"), or add a fallback route with llm.add_model().",
						p->name, proxy_origin(p));
	return psprintf("Check that the server at the base_url of provider \"%s\" is running and reachable, or add a fallback route with llm.add_model().",
					p->name);
}

/*
 * A failure below HTTP: say what it was (the TLS check that failed, the
 * proxy that refused) and what to do.  Timeouts and connections that
 * could not be made are retried; a certificate that is refused, a proxy
 * that refuses or a CA file that cannot be read will be the same at the
 * next attempt, so the call goes on to its next route at once, if any.
 */
static LlmVerdict
transport_failure(const LlmRoute *route, HttpTransfer *t, bool stream, LlmFailure *f)
{
	const LlmProvider *p = route->provider;
	const char *name = p->name;
	f->sqlstate = ERRCODE_CONNECTION_FAILURE;
	f->detail = psprintf("%s.", RedactProviderCString(t->errbuf, p));
	switch (t->cause)
	{
		case HTTP_CAUSE_TIMEOUT:
			f->message = psprintf("request to provider \"%s\" timed out", name);
			f->hint = pstrdup(stream ? "Raise llm.stream_idle_timeout (or the provider's stream_idle_timeout option)." :
							  "Raise llm.timeout (or the provider's timeout_ms option), or ask for a shorter reply.");
			return LLM_VERDICT_RETRY;
		case HTTP_CAUSE_DNS:
			f->message = psprintf("could not reach provider \"%s\"", name);
			f->hint = psprintf("The host name in the base_url of provider \"%s\" does not resolve: check its spelling, and the DNS of the database server.", name);
			return LLM_VERDICT_RETRY;
		case HTTP_CAUSE_PROXY_DNS:
		case HTTP_CAUSE_PROXY_CONNECT:
			f->message = psprintf("could not reach the proxy of provider \"%s\"", name);
			f->hint = psprintf("Provider \"%s\" goes through %s: check that it runs and that its host name resolves, or send the provider direct with its no_proxy option (\"*\").",
							   name, proxy_origin(p));
			return LLM_VERDICT_RETRY;
		case HTTP_CAUSE_PROXY_REFUSED:
			f->message = psprintf("the proxy of provider \"%s\" refused the connection", name);
			if (t->proxy_status > 0)
				f->detail = psprintf("It answered HTTP %ld to CONNECT %s (%s).", t->proxy_status,
									 url_host(p->base_url), RedactProviderCString(t->errbuf, p));
			f->hint = (t->proxy_status == 407 || t->proxy_status == 401) ?
				psprintf("The proxy wants credentials, or refused those it was given: put them in the proxy URL (http://user:password@host:port) of the proxy option of provider \"%s\"; they are kept secret like the key.", name) :
				psprintf("Provider \"%s\" goes through %s, which does not let the database server reach this host and port: ask its administrators to allow them.",
						 name, proxy_origin(p));
			f->route_unusable = true;
			return LLM_VERDICT_FAIL;
		case HTTP_CAUSE_TLS_UNKNOWN_CA:
			f->message = psprintf("the certificate of provider \"%s\" is not signed by a trusted CA", name);
			f->hint = p->transport.ca_file ?
				psprintf("Provider \"%s\" trusts only the CAs in its ca_file (%s): add the CA that signed the server's certificate to it. Certificate checks cannot be turned off.",
						 name, p->transport.ca_file) :
				psprintf("If the server uses a private CA, give its PEM bundle with llm.alter_provider('%s', options => '{\"ca_file\": \"/path/to/ca.pem\"}'). Certificate checks cannot be turned off.",
						 name);
			f->route_unusable = true;
			return LLM_VERDICT_FAIL;
		case HTTP_CAUSE_TLS_HOSTNAME:
			f->message = psprintf("the certificate of provider \"%s\" is not valid for host \"%s\"",
								  name, url_host(p->base_url));
			f->hint = psprintf("Use the host name the server's certificate names in the base_url of provider \"%s\" (not another name or an IP address it does not list), or have the server present a certificate for this name.",
							   name);
			f->route_unusable = true;
			return LLM_VERDICT_FAIL;
		case HTTP_CAUSE_TLS_EXPIRED:
		case HTTP_CAUSE_TLS_NOT_YET_VALID:
			f->message = t->cause == HTTP_CAUSE_TLS_EXPIRED ?
				psprintf("the certificate of provider \"%s\" has expired", name) :
				psprintf("the certificate of provider \"%s\" is not valid yet", name);
			f->hint = pstrdup("The server at the base_url must present a current certificate; if it does, check the clock of the database server.");
			f->route_unusable = true;
			return LLM_VERDICT_FAIL;
		case HTTP_CAUSE_TLS_VERIFY:
			f->message = psprintf("the certificate of provider \"%s\" was refused", name);
			f->hint = pstrdup("Certificate checks cannot be turned off: the server must present a certificate valid for its host name and signed by a trusted CA (see the ca_file option).");
			f->route_unusable = true;
			return LLM_VERDICT_FAIL;
		case HTTP_CAUSE_TLS_CA_FILE:
			f->sqlstate = ERRCODE_INVALID_PARAMETER_VALUE;
			f->message = psprintf("could not load the ca_file of provider \"%s\"", name);
			f->hint = psprintf("The ca_file option (%s) must name a PEM bundle that the operating-system user of the database server can read.",
							   p->transport.ca_file ? p->transport.ca_file : "not set");
			f->route_unusable = true;
			return LLM_VERDICT_FAIL;
		case HTTP_CAUSE_TLS_CLIENT_CERT:
			f->sqlstate = ERRCODE_INVALID_PARAMETER_VALUE;
			f->message = psprintf("could not use the client certificate of provider \"%s\"", name);
			f->hint = pstrdup("client_cert and client_key must be PEM, as the path of a file the database server can read or as the PEM text; the key unencrypted and the pair's own.");
			f->route_unusable = true;
			return LLM_VERDICT_FAIL;
		case HTTP_CAUSE_TLS_HANDSHAKE:
			f->message = psprintf("the TLS handshake with provider \"%s\" failed", name);
			f->hint = p->transport.client_cert ?
				psprintf("Check that the server at the base_url of provider \"%s\" speaks HTTPS on that port and accepts its client certificate.", name) :
				psprintf("Check that the server at the base_url of provider \"%s\" speaks HTTPS on that port; a server that wants a client certificate gets one from the client_cert and client_key options.", name);
			return LLM_VERDICT_RETRY;
		case HTTP_CAUSE_DESCRIPTORS:
			f->message = psprintf("could not reach provider \"%s\"", name);
			f->hint = pstrdup("The server process has no file descriptor left: lower llm.many_concurrency or llm.worker_concurrency, or raise the server's limit on open files (LimitNOFILE in its systemd unit, or ulimit -n before pg_ctl start).");
			return LLM_VERDICT_RETRY;
		case HTTP_CAUSE_CONNECT:
		case HTTP_CAUSE_NONE:
			break;
	}
	/* reached, but cut: after its status, or after the whole request went out */
	if (!t->timed_out && t->status >= 200)
		f->message = psprintf("the response of provider \"%s\" was cut off", name);
	else if (!t->timed_out && t->request_sent)
		f->message = psprintf("provider \"%s\" closed the connection before answering", name);
	else
		f->message = t->timed_out ?
			psprintf("request to provider \"%s\" timed out", name) :
			psprintf("could not reach provider \"%s\"", name);
	f->detail = psprintf("%s.", RedactProviderCString(t->errbuf, p));
	f->hint = t->via_proxy ?
		psprintf("Provider \"%s\" goes through %s; check that the proxy can reach the server at its base_url.", name, proxy_origin(p)) :
		psprintf("Check that the server at the base_url of provider \"%s\" is running and reachable.", name);
	return LLM_VERDICT_RETRY;
}

/*
 * Text as a sentence: a full stop added unless it ends with one already
 * (provider messages often do), so that details never read "provided..".
 */
char *
LlmSentence(const char *text)
{
	size_t		n = strlen(text);

	while (n > 0 && isspace((unsigned char) text[n - 1]))
		n--;
	if (n > 0 && (text[n - 1] == '.' || text[n - 1] == '!' || text[n - 1] == '?'))
		return pnstrdup(text, n);
	return psprintf("%.*s.", (int) n, text);
}

/*
 * "The provider said: <message> (<code or type>)." for an error body,
 * the key redacted; NULL when the body had no message.
 */
static char *
error_said(const LlmErrorBody *eb, const LlmProvider *p)
{
	char	   *m;
	const char *kind = eb->code ? eb->code : eb->type;

	if (eb->message == NULL)
		return NULL;
	/* the provider's words as RedactProviderText shows them: redacted, escaped, bounded */
	m = RedactProviderCString(eb->message, p);
	if (kind)
	{
		char	   *k = RedactProviderCString(kind, p);

		if (strcmp(k, m) != 0)
			m = psprintf("%s (%s)", m, k);
	}
	return psprintf("The provider said: %s", LlmSentence(m));
}

/*
 * Is an HTTP status worth trying again, the request not being at fault?
 * The one rule for every call mode, the worker, and provider batches
 * (their requests and each result).
 */
bool
LlmRetryableStatus(long status)
{
	return status == 408 || status == 409 || status == 429 || (status >= 500 && status <= 599);
}

/*
 * Judge a finished attempt, filling *f on failure.  Everything needed
 * later is copied out so that the transfer can be released at once.
 */
static LlmVerdict
judge(const LlmRoute *route, HttpTransfer *t, bool stream, LlmFailure *f)
{
	const LlmProvider *p = route->provider;
	LlmErrorBody eb;
	bool		quota = false;
	bool		retryable;

	memset(f, 0, sizeof(LlmFailure));
	f->provider = pstrdup(p->name);
	f->retry_after_s = t->retry_after_s;
	f->status = t->status;

	switch (t->outcome)
	{
		case HTTP_RUNNING:
			elog(ERROR, "transfer judged while running");
			break;
		case HTTP_REFUSED:
			f->sqlstate = ERRCODE_INVALID_PARAMETER_VALUE;
			f->message = psprintf("provider \"%s\" has a base_url pg_llm will not call", p->name);
			f->detail = pstrdup("Only http and https URLs are allowed.");
			f->hint = psprintf("Fix it with llm.alter_provider('%s', base_url => ...).", p->name);
			return LLM_VERDICT_FAIL;
		case HTTP_TOO_BIG:
			f->sqlstate = ERRCODE_PROGRAM_LIMIT_EXCEEDED;
			f->message = psprintf("response from provider \"%s\" exceeds llm.max_response_size", p->name);
			f->detail = psprintf("The limit is %d kB.", llm_max_response_size_kb);
			f->hint = pstrdup("Ask for a shorter reply (max_tokens), or raise llm.max_response_size.");
			return LLM_VERDICT_FAIL;
		case HTTP_TRANSPORT_ERROR:
			if (t->headers_too_big)
			{
				f->sqlstate = ERRCODE_PROGRAM_LIMIT_EXCEEDED;
				f->message = psprintf("response from provider \"%s\" has headers too large to read", p->name);
				f->detail = psprintf("%s.", t->errbuf);
				f->hint = psprintf("Check what answers at the base_url of provider \"%s\" (a proxy or a server that is not an LLM API?).",
								   p->name);
				return LLM_VERDICT_FAIL;
			}
			return transport_failure(route, t, stream, f);
		case HTTP_COMPLETE:
			break;
	}

	if (t->status >= 200 && t->status < 300)
		return LLM_VERDICT_OK;
	if (t->status >= 300 && t->status < 400)
	{
		f->sqlstate = ERRCODE_EXTERNAL_ROUTINE_EXCEPTION;
		f->message = psprintf("provider \"%s\" answered with a redirect (HTTP %ld), which pg_llm does not follow",
							  p->name, t->status);
		f->detail = t->location[0] ?
			psprintf("It points to %s.", RedactProviderCString(t->location, p)) :
			pstrdup("It gives no Location.");
		f->hint = psprintf("Set the provider's base_url to the final address: llm.alter_provider('%s', base_url => ...).",
						   p->name);
		return LLM_VERDICT_FAIL;
	}

	ProviderParseError(t->data ? t->data + t->consumed : NULL, t->len - t->consumed, &eb);
	if (t->status == 402 || ProtoErrorIsQuota(eb.type, eb.code))
		quota = true;

	retryable = !quota && LlmRetryableStatus(t->status);
	if (t->should_retry >= 0)
		retryable = (t->should_retry == 1);

	f->sqlstate = ERRCODE_EXTERNAL_ROUTINE_EXCEPTION;
	f->message = psprintf("provider \"%s\" returned HTTP %ld", p->name, t->status);
	if (eb.message)
		f->detail = error_said(&eb, p);
	else
		f->detail = psprintf("The response body is not a JSON error object: %s",
							 body_excerpt(t, p));
	f->hint = status_hint(t->status, route, quota);
	/* nginx's answer to a client without the certificate it wants */
	if (t->status == 400 && t->data &&
		strstr(t->data + t->consumed, "No required SSL certificate was sent") != NULL)
		f->hint = psprintf("The server wants a client certificate: give one with the client_cert and client_key options of provider \"%s\".",
						   p->name);
	f->quota = quota;
	return retryable ? LLM_VERDICT_RETRY : LLM_VERDICT_FAIL;
}

/* Raise a failure; n_attempts and n_routes say how hard we tried. */
void
LlmRaiseFailure(const LlmFailure *f, int attempts, int routes)
{
	ereport(ERROR,
			(errcode(f->sqlstate),
			 errmsg("%s", f->message),
			 f->detail ? errdetail("%s%s", f->detail,
								   attempts > 1 ? psprintf(" Gave up after %d attempts on %d provider%s.",
														   attempts, routes, routes > 1 ? "s" : "") : "") : 0,
			 f->hint ? errhint("%s", f->hint) : 0));
}

/*
 * How long to wait before retry number n (0-based): the provider's hint
 * when it is given and within llm.max_retry_after, else min(0.5 * 2^n, 8)
 * seconds scaled by a random factor in [0.75, 1].  -1: the provider asks
 * for more than we are willing to wait.
 */
long
LlmRetryDelayMs(double retry_after_s, int n)
{
	double		base;

	if (retry_after_s > 0)
	{
		if (!(retry_after_s <= llm_max_retry_after))	/* NaN too */
			return -1;
		return (long) (retry_after_s * 1000.0);
	}
	base = Min(0.5 * pow(2.0, n), 8.0);
	return (long) (base * (1.0 - 0.25 * pg_prng_double(&pg_global_prng_state)) * 1000.0);
}

/* Sleep, waking for interrupts (a cancel raises its error from here). */
void
LlmSleepMs(long ms)
{
	TimestampTz end = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);

	for (;;)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), end);

		CHECK_FOR_INTERRUPTS();
		if (left <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 left, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * Judge a finished non-streaming attempt of call->route and, when it is
 * good, parse the reply into call->reply.  A 2xx body that cannot be read
 * (cut off by a proxy, not JSON, the wrong shape) is retried like a 5xx:
 * the next attempt is likely to be whole.  The caller still owns the
 * transfer.
 */
LlmVerdict
LlmJudgeComplete(LlmCall *call, HttpTransfer *t, LlmFailure *f)
{
	const LlmRoute *route = call->route;
	LlmVerdict	v = judge(route, t, false, f);
	char	   *problem = NULL;

	call->http_status = t->status;
	if (v != LLM_VERDICT_OK)
		return v;
	if (call->task == LLM_TASK_EMBED)
	{
		/* the usage of the vectors is the call's usage (no output tokens) */
		memset(&call->reply, 0, sizeof(LlmReply));
		if (ProviderParseEmbedReply(route, call->req, t->data, t->len, &call->embed, &problem))
		{
			call->reply.has_usage = call->embed.has_usage;
			call->reply.usage_invalid = call->embed.usage_invalid;
			call->reply.input_tokens = call->embed.input_tokens;
			return LLM_VERDICT_OK;
		}
	}
	else if (ProviderParseReply(route, t->data, t->len, call->want_response_json, &call->reply, &problem))
		return LLM_VERDICT_OK;
	f->provider = route->provider->name;
	f->sqlstate = ERRCODE_INVALID_JSON_TEXT;
	f->status = t->status;
	f->message = psprintf("provider \"%s\" returned a response pg_llm cannot read",
						  route->provider->name);
	f->detail = psprintf("%s It begins: %s", problem, body_excerpt(t, route->provider));
	f->hint = pstrdup("Check that the base_url points at an OpenAI- or Anthropic-compatible API of the right protocol.");
	f->retry_after_s = -1;
	return LLM_VERDICT_RETRY;
}

/*
 * An error event inside a stream that had returned no row yet: judged as
 * the HTTP status its type or code stands for (an in-band
 * authentication_error is a 401, an overloaded_error a 529), so that what
 * a retry cannot mend (a bad key, a bad request, an exhausted account) is
 * not sent again.  An error of an unknown kind is retried like a 5xx.
 */
LlmVerdict
LlmJudgeStreamError(LlmCall *call, const LlmErrorBody *eb, const char *text, LlmFailure *f)
{
	const LlmRoute *route = call->route;
	const LlmProvider *p = route->provider;
	long		status = ProtoErrorStatus(eb->type, eb->code);
	bool		quota = ProtoErrorIsQuota(eb->type, eb->code);
	bool		retryable;

	memset(f, 0, sizeof(LlmFailure));
	f->provider = pstrdup(p->name);
	f->sqlstate = ERRCODE_EXTERNAL_ROUTINE_EXCEPTION;
	f->status = status;
	f->retry_after_s = -1;
	f->quota = quota;
	f->message = psprintf("stream from provider \"%s\" sent an error", p->name);
	f->detail = error_said(eb, p);
	if (f->detail == NULL)
		f->detail = psprintf("The provider said: %s",
							 LlmSentence(RedactProviderCString(text, p)));
	f->hint = status ? status_hint(status, route, quota) : NULL;
	retryable = !quota && (status == 0 || LlmRetryableStatus(status));
	return retryable ? LLM_VERDICT_RETRY : LLM_VERDICT_FAIL;
}

/*
 * A refusal's words for an error detail, shown as every provider text is
 * (RedactProviderText: a secret the provider echoed redacted before the
 * cut, control characters escaped, in the server encoding or UTF-8 in the
 * worker), cut at 500 bytes on a character boundary.
 */
#define REFUSAL_SHOWN_BYTES 500

static char *
refusal_text(const LlmCall *call, const char *refusal)
{
	return RedactProviderTextMax(refusal, strlen(refusal),
								 call->route ? call->route->provider : NULL, REFUSAL_SHOWN_BYTES);
}

/*
 * What a reply read for its text amounts to, on every path that returns
 * text (llm.chat, llm.chat_stream, llm.chat_many, the queue, batches):
 * LLM_OUTCOME_OK when there is text to return (a reply cut at max_tokens
 * included: its finish reason says so in llm.usage), else the failure in
 * *f and the outcome to record:
 *   - a refusal (OpenAI's refusal text, Anthropic's stop_reason
 *     "refusal") or a content filter: LLM_OUTCOME_REFUSED, even after
 *     text (a refusal can stop a reply half way);
 *   - a tool call, a paused turn (Anthropic's pause_turn: the turn is not
 *     finished) or no text at all: LLM_OUTCOME_ERROR.
 * have_text says whether the reply had text (a stream's rows).
 */
LlmOutcome
LlmJudgeText(const LlmCall *call, bool have_text, LlmFailure *f)
{
	const LlmReply *r = &call->reply;
	const char *pname = call->route ? call->route->provider->name : "";
	const char *raw = r->stop_reason ? r->stop_reason : r->finish_reason;
	ProtoEnding ending = ProtoEndingOf(raw);
	/* the reason as shown: the provider's word, redacted, escaped, bounded */
	const char *reason = RedactProviderCString(raw, call->route ? call->route->provider : NULL);

	memset(f, 0, sizeof(LlmFailure));
	f->provider = pstrdup(pname);
	f->sqlstate = ERRCODE_EXTERNAL_ROUTINE_EXCEPTION;
	f->status = call->http_status;
	f->retry_after_s = -1;
	if (r->refusal || ending == PROTO_END_REFUSED || ending == PROTO_END_FILTERED)
	{
		if (ending == PROTO_END_FILTERED && r->refusal == NULL)
		{
			f->message = psprintf("the reply of provider \"%s\" was stopped by its content filter", pname);
			f->detail = psprintf("The finish reason is \"%s\".", reason);
		}
		else
		{
			f->message = psprintf("provider \"%s\" refused the request", pname);
			f->detail = r->refusal ?
				psprintf("It said: %s", LlmSentence(refusal_text(call, r->refusal))) :
				psprintf("The stop reason is \"%s\".", reason);
		}
		f->hint = pstrdup("Change the prompt: the provider will not answer it as it is, and sending it again gets the same answer.");
		return LLM_OUTCOME_REFUSED;
	}
	if (ending == PROTO_END_TOOL || (r->tool_calls && !have_text))
	{
		f->message = psprintf("provider \"%s\" returned a tool call, not text", pname);
		f->detail = psprintf("The finish reason is \"%s\".", reason ? reason : "none");
		f->hint = pstrdup("Tool calls are returned by llm.chat_completion(); llm.chat, llm.chat_stream, llm.chat_many and the queue return text.");
		return LLM_OUTCOME_ERROR;
	}
	if (ending == PROTO_END_PAUSED)
	{
		f->message = psprintf("provider \"%s\" paused its turn before finishing", pname);
		f->detail = psprintf("The stop reason is \"%s\": the reply is not finished.", reason);
		f->hint = pstrdup("The provider pauses long turns of its server tools; call again with a narrower request.");
		return LLM_OUTCOME_ERROR;
	}
	if (!have_text && r->nchoices == 0 && reason == NULL && call->mode != LLM_MODE_STREAM)
	{
		f->message = psprintf("provider \"%s\" returned no choices", pname);
		f->hint = pstrdup("Look at the whole response with llm.chat_completion().");
		return LLM_OUTCOME_ERROR;
	}
	if (!have_text)
	{
		f->message = psprintf("provider \"%s\" returned no text", pname);
		f->detail = psprintf("The finish reason is \"%s\".", reason ? reason : "none");
		f->hint = ending == PROTO_END_LENGTH ?
			pstrdup("The reply reached its token limit before any text (reasoning tokens count toward it); raise max_tokens.") :
			pstrdup("Look at the whole response with llm.chat_completion().");
		return LLM_OUTCOME_ERROR;
	}
	return LLM_OUTCOME_OK;
}

/*
 * Is a reply a refusal (or a content filter's stop)?  For the paths that
 * read an answer of their own from the reply (a shape): a refusal is no
 * answer, and asking again gets the same one.  *f is the error to raise.
 */
bool
LlmReplyRefused(const LlmCall *call, LlmFailure *f)
{
	return LlmJudgeText(call, true, f) == LLM_OUTCOME_REFUSED;
}

/* Move a call on to the next route of its chain. */
static LlmNext
next_route(LlmCall *call)
{
	call->route_cell = lnext(call->routes, call->route_cell);
	call->route_no++;
	call->tries = 0;
	call->fallback = true;
	return LLM_NEXT_ROUTE;
}

/*
 * What follows a failed attempt of a call, for every call mode and the
 * queue worker: a permanent failure gives up at once; a retryable one is
 * tried again on the same route (after the provider's Retry-After, or
 * backoff) until the route's retries are spent or the provider asks for a
 * longer wait than llm.max_retry_after, then the next route of the chain
 * serves the call.  *delay_ms is the wait before a retry; on giving up
 * after a retryable failure it is the wait the provider asked for (or
 * backoff), -1 when it asked for more than we wait.
 */
/*
 * A failed attempt followed by another: its own usage row (every request
 * sent is in llm.usage), saying what happened to it.
 */
static void
attempt_again(LlmCall *call, const LlmFailure *f)
{
	UsageRecordAttempt(call, f && f->message ? f->message : "the attempt failed");
}

LlmNext
LlmCallDecide(LlmCall *call, LlmVerdict v, const LlmFailure *f, long *delay_ms)
{
	const LlmRoute *route = lfirst(call->route_cell);
	int			max_retries = pick(route->provider->max_retries, llm_max_retries);
	bool		has_next = lnext(call->routes, call->route_cell) != NULL;
	long		delay;

	*delay_ms = 0;
	if (v == LLM_VERDICT_FAIL && !((f->quota || f->route_unusable) && has_next))
		return LLM_NEXT_GIVE_UP;

	/*
	 * A route out of quota, or a provider that asked everyone to slow down
	 * (it is now cooling down for the whole cluster), hands the call to
	 * the next route at once.
	 */
	if (has_next && (f->quota || f->route_unusable ||
					 RateLimitCoolsDown(f->status, f->retry_after_s)))
	{
		attempt_again(call, f);
		return next_route(call);
	}

	delay = LlmRetryDelayMs(f->retry_after_s, call->tries);
	if (call->tries < max_retries && delay >= 0)
	{
		attempt_again(call, f);
		call->tries++;
		*delay_ms = delay;
		return LLM_NEXT_RETRY;
	}
	if (has_next)
	{
		attempt_again(call, f);
		return next_route(call);
	}
	*delay_ms = delay;
	return LLM_NEXT_GIVE_UP;
}

/* The route the call's next attempt goes to. */
const LlmRoute *
LlmCallRoute(LlmCall *call)
{
	return lfirst(call->route_cell);
}

/*
 * Tell the cluster's traffic control how an attempt went: cooldowns,
 * quota, rate-limit headers, and the tokens really used (a stream that
 * opened settles when it ends, in UsageRecord).
 */
void
LlmCallAfterAttempt(LlmCall *call, HttpTransfer *t, LlmVerdict v, const LlmFailure *f)
{
	/* the request went out whole and no status came: it may be billed */
	call->sent_unanswered = t && t->outcome == HTTP_TRANSPORT_ERROR && t->status == 0 &&
		t->request_sent;
	RateLimitAfter(call->route, t, v != LLM_VERDICT_OK && f->quota);
	if (v == LLM_VERDICT_OK && call->mode == LLM_MODE_STREAM)
		return;
	/* a failed attempt the provider may have run used its tokens too */
	UsageSettleTurn(call, UsageTokensUsed(call));
}

/*
 * Tell the cluster's traffic control of an error the provider sent inside
 * a stream (judged by LlmJudgeStreamError), before or after its first
 * row: an in-stream rate limit or overload cools the provider down as an
 * HTTP 429 or 529 does, an in-stream refused key counts as a 401.
 */
void
LlmCallAfterStreamError(LlmCall *call, const LlmFailure *f)
{
	RateLimitAfterInBand(call->route, f->status, f->quota);
}

/*
 * Before a call run alongside others (the worker, chat_many) is sent: is
 * it its route's turn?  A route cooling down or out of quota hands the
 * call to its next route; over a limit, or cooling down with no route
 * left, the call comes back at *not_before (false).  The last route out
 * of quota fails the call: false with f filled and *not_before 0.  A
 * call that only waits has f zeroed (no sqlstate), except for a refused
 * key (the worker's item waits for it to change).
 */
bool
LlmCallTurn(LlmCall *call, TimestampTz *not_before, LlmFailure *f)
{
	*not_before = 0;
	memset(f, 0, sizeof(LlmFailure));
	UsageSettleTurn(call, 0);
	/* a budget spent is said here, not before the response cache was asked */
	UsageBudgetGate(call);
	for (;;)
	{
		const LlmRoute *route = LlmCallRoute(call);
		TimestampTz until;
		char	   *why;
		int64		charged;
		LlmTurn		turn = RateLimitAsk(route, UsageEstimatedTokens(call, route), false, 0,
										&until, &why, &charged);
		bool		has_next = lnext(call->routes, call->route_cell) != NULL;

		if (turn == LLM_TURN_GO)
		{
			UsageHoldTurn(call, route, charged);
			return true;
		}
		if ((turn == LLM_TURN_COOLDOWN || turn == LLM_TURN_DISABLED || turn == LLM_TURN_DOWN) &&
			has_next)
		{
			(void) next_route(call);
			continue;
		}

		/*
		 * A refused key, or a host down on the last route: a call that
		 * someone waits for (chat_many) fails at once, without a request;
		 * a queue item waits for the key to change, the recheck or the
		 * probe.
		 */
		if ((turn == LLM_TURN_AUTH || turn == LLM_TURN_DOWN) &&
			call->mode != LLM_MODE_QUEUE && call->mode != LLM_MODE_BATCH_API)
		{
			memset(f, 0, sizeof(LlmFailure));
			f->sqlstate = turn == LLM_TURN_AUTH ? ERRCODE_EXTERNAL_ROUTINE_EXCEPTION :
				ERRCODE_CONNECTION_FAILURE;
			f->provider = pstrdup(route->provider->name);
			f->message = why;
			f->detail = pstrdup(RateLimitDetail());
			f->hint = turn == LLM_TURN_AUTH ?
				psprintf("Fix the key with llm.alter_provider('%s', api_key => '...'); calls go out again at once.",
						 route->provider->name) :
				down_hint(route->provider);
			f->retry_after_s = -1;
			return false;
		}
		if (turn == LLM_TURN_DISABLED)
		{
			memset(f, 0, sizeof(LlmFailure));
			f->sqlstate = ERRCODE_EXTERNAL_ROUTINE_EXCEPTION;
			f->provider = pstrdup(route->provider->name);
			f->message = why;
			f->detail = pstrdup("It answered that the account has no credit, and the model has no other route.");
			f->retry_after_s = -1;
			f->quota = true;
			return false;
		}
		/*
		 * A queue item waits: for a refused key, the worker is told why
		 * (it hands the item back, to be set up again with the new key).
		 */
		if (turn == LLM_TURN_AUTH)
		{
			memset(f, 0, sizeof(LlmFailure));
			f->sqlstate = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
			f->provider = pstrdup(route->provider->name);
			f->message = why;
			f->retry_after_s = -1;
		}
		*not_before = until;
		return false;
	}
}

/*
 * The time a provider's wait ends, from now: at most llm.max_cooldown
 * (a provider's number never holds an item or a call longer).
 */
static TimestampTz
wait_ends(TimestampTz now, double secs)
{
	double		ms = secs * 1000.0;

	if (!(ms > 0))
		ms = 0;
	return TimestampTzPlusMilliseconds(now, (int64) Min(ms, (double) llm_max_cooldown * 1000.0));
}

/* The longest a call waits for its turn: its timeout (0: statement's). */
static long
max_wait_ms(const LlmRoute *route)
{
	return route->provider->timeout_ms >= 0 ? route->provider->timeout_ms : llm_timeout_ms;
}

/* Sleep (interruptibly), counted among the route's waiting callers. */
static void
sleep_waiting(const LlmRoute *route, long ms)
{
	RateLimitWaiting(route, 1);
	PG_TRY();
	{
		LlmSleepMs(ms);
	}
	PG_FINALLY();
	{
		RateLimitWaiting(route, -1);
	}
	PG_END_TRY();
}

/*
 * Wait (interruptibly) until a synchronous call may be sent on a route:
 * the blocking twin of LlmCallTurn.
 * Returns false when the route is cooling down or out of quota and the
 * call has another route to go to; raises an error when the wait would
 * be longer than the call's timeout, or the last route is out of quota.
 */
static bool
route_wait_turn(LlmCall *call, const LlmRoute *route)
{
	int64		tokens = UsageEstimatedTokens(call, route);

	UsageSettleTurn(call, 0);
	/* a budget spent is said here, not before the response cache was asked */
	UsageBudgetGate(call);
	for (;;)
	{
		TimestampTz until;
		char	   *why;
		long		wait_ms;
		long		limit_ms = max_wait_ms(route);
		int64		charged;
		LlmTurn		turn = RateLimitAsk(route, tokens, true, limit_ms, &until, &why, &charged);
		bool		last = lnext(call->routes, call->route_cell) == NULL;

		if (turn == LLM_TURN_GO || turn == LLM_TURN_RESERVED)
			UsageHoldTurn(call, route, charged);
		if (turn == LLM_TURN_GO)
			return true;
		if ((turn == LLM_TURN_COOLDOWN || turn == LLM_TURN_DISABLED || turn == LLM_TURN_DOWN) && !last)
			return false;
		if (turn == LLM_TURN_AUTH)
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("%s", why),
					 errdetail("%s", RateLimitDetail()),
					 errhint("Fix the key with llm.alter_provider('%s', api_key => '...') or api_key_env => '...'; calls go out again at once.",
							 route->provider->name)));
		if (turn == LLM_TURN_DOWN)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("%s", why),
					 errdetail("%s", RateLimitDetail()),
					 errhint("%s", down_hint(route->provider))));
		wait_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);
		if (turn == LLM_TURN_DISABLED)
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("%s", why),
					 errdetail("It answered that the account has no credit; pg_llm leaves it alone for its quota_cooldown (%d s).",
							   route->provider->quota_cooldown > 0 ? route->provider->quota_cooldown : 600),
					 errhint("Add credit, or route the model to another provider with llm.add_model().")));
		if (turn == LLM_TURN_COOLDOWN && wait_ms > llm_max_retry_after * 1000L)
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("%s", why),
					 errdetail("The cooldown ends later than llm.max_retry_after (%d s) lets a call wait.",
							   llm_max_retry_after),
					 errhint("Try again later, raise llm.max_retry_after, or add a fallback route with llm.add_model().")));
		if (turn == LLM_TURN_TOO_LONG ||
			(turn == LLM_TURN_COOLDOWN && limit_ms > 0 && wait_ms > limit_ms))
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("%s: the call would wait %.1f s for its turn, longer than its timeout", why,
							wait_ms / 1000.0),
					 errhint("Raise llm.timeout (or the provider's timeout_ms), raise the limit, or add a fallback route with llm.add_model().")));
		sleep_waiting(route, wait_ms);
		if (turn == LLM_TURN_RESERVED)
			return true;
	}
}

/*
 * After a finished non-streaming attempt of a call run alongside others:
 * judge it, tell the traffic control, and decide what comes next.
 * LLM_STEP_DONE: the reply is in call->reply.  LLM_STEP_AGAIN: send again
 * (on the same or the next route) at *not_before.  LLM_STEP_FAILED: a
 * permanent failure, in *f.  LLM_STEP_SPENT: retryable, but the retries
 * and routes are spent (*not_before: when the provider would have it
 * tried again).  With patient (the worker), a 429 on the last route is
 * waited out without using a retry: it is the provider's pace, not a
 * failure.
 */
LlmStep
LlmCallStep(LlmCall *call, HttpTransfer *t, bool patient, LlmFailure *f, TimestampTz *not_before)
{
	LlmVerdict	v;
	long		delay;
	TimestampTz now = GetCurrentTimestamp();

	memset(f, 0, sizeof(LlmFailure));
	*not_before = 0;
	v = LlmJudgeComplete(call, t, f);
	LlmCallAfterAttempt(call, t, v, f);
	if (v == LLM_VERDICT_OK)
		return LLM_STEP_DONE;
	if (patient && v == LLM_VERDICT_RETRY && f->status == 429 && !f->quota &&
		lnext(call->routes, call->route_cell) == NULL)
	{
		attempt_again(call, f);
		*not_before = wait_ends(now, f->retry_after_s > 0 ? f->retry_after_s : 1);
		return LLM_STEP_AGAIN;
	}
	switch (LlmCallDecide(call, v, f, &delay))
	{
		case LLM_NEXT_RETRY:
			*not_before = TimestampTzPlusMilliseconds(now, delay);
			return LLM_STEP_AGAIN;
		case LLM_NEXT_ROUTE:
			return LLM_STEP_AGAIN;
		case LLM_NEXT_GIVE_UP:
			break;
	}
	if (v == LLM_VERDICT_FAIL)
		return LLM_STEP_FAILED;
	if (f->retry_after_s > 0)
		*not_before = wait_ends(now, f->retry_after_s);
	return LLM_STEP_SPENT;
}

/* A failure as one line of text, for the queue's error column. */
char *
LlmFailureText(const LlmFailure *f)
{
	return psprintf("%s%s%s", f->message, f->detail ? ": " : "", f->detail ? f->detail : "");
}

/*
 * One attempt on a route.  For a stream the attempt is judged as soon as
 * a 2xx status and its headers are in, and the live transfer is handed
 * back in *xfer; otherwise the whole response is read, judged and parsed
 * into call->reply, and the transfer is released before returning.
 */
static LlmVerdict
attempt(LlmCall *call, const LlmRoute *route, bool stream, LlmFailure *f,
		HttpTransfer **xfer)
{
	HttpTransfer *volatile t = NULL;
	volatile LlmVerdict v = LLM_VERDICT_FAIL;

	PG_TRY();
	{
		t = LlmSendAttempt(call, route, stream);
		HttpWatchClient(HttpClientSocket(), false);
		if (stream)
		{
			HttpWaitHeaders(t);
			if (t->outcome == HTTP_RUNNING && t->status >= 200 && t->status < 300)
				v = LLM_VERDICT_OK;
			else
			{
				HttpWaitDone(t);
				v = judge(route, t, true, f);
			}
			call->http_status = t->status;
		}
		else
		{
			HttpWaitDone(t);
			v = LlmJudgeComplete(call, t, f);
		}
		LlmCallAfterAttempt(call, t, v, f);
	}
	PG_CATCH();
	{
		HttpWatchClient(PGINVALID_SOCKET, false);
		HttpRelease(t);
		PG_RE_THROW();
	}
	PG_END_TRY();
	HttpWatchClient(PGINVALID_SOCKET, false);

	if (v == LLM_VERDICT_OK && stream)
		*xfer = t;
	else
		HttpRelease(t);
	return v;
}

/*
 * Run attempts along the chain until one is judged OK; raise the last
 * failure when none is.
 */
static void
run_chain(LlmCall *call, bool stream)
{
	for (;;)
	{
		LlmFailure	f;
		LlmVerdict	v;
		long		delay;
		const LlmRoute *route = LlmCallRoute(call);

		/* the route's turn under the cluster's limits and cooldowns */
		if (!route_wait_turn(call, route))
		{
			(void) next_route(call);
			continue;
		}
		memset(&f, 0, sizeof(f));
		v = attempt(call, route, stream, &f, &call->xfer);
		if (v == LLM_VERDICT_OK)
			return;
		/* its host is down now, and no route is left: this failure stands */
		if (v == LLM_VERDICT_RETRY && lnext(call->routes, call->route_cell) == NULL &&
			RateLimitDown(route))
		{
			call->error = f.message;
			UsageRecord(call, LLM_OUTCOME_ERROR);
			LlmRaiseFailure(&f, call->attempts, call->route_no);
		}
		switch (LlmCallDecide(call, v, &f, &delay))
		{
			case LLM_NEXT_RETRY:
				LlmSleepMs(delay);
				break;
			case LLM_NEXT_ROUTE:
				break;
			case LLM_NEXT_GIVE_UP:
				call->error = f.message;
				UsageRecord(call, LLM_OUTCOME_ERROR);
				LlmRaiseFailure(&f, call->attempts, call->route_no);
		}
	}
}

/*
 * A prompt must be there and not empty: the same rule for every call and
 * for the queue.
 */
void
LlmCheckPrompt(const char *prompt)
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
 * The part of a call that a row's data can make fail: the prompt's
 * check, and the budget's.  From here on, on_error "null" applies.
 */
void
LlmCallBegin(LlmCall *call)
{
	if (call->prompt)
		LlmCheckPrompt(call->prompt);
	UsageBegin(call, GetUserId(), call->request_bytes, RequestMaxTokens(call->req));
}

/*
 * A call with on_error "null" failed: its usage row (if it was accounted
 * and not yet recorded) says why, and a WARNING names the error.  The
 * caller returns NULL.
 */
void
LlmCallFailed(LlmCall *call, ErrorData *edata)
{
	if (call->accounted && !call->usage_recorded)
	{
		call->error = edata->message;
		UsageRecord(call, LLM_OUTCOME_ERROR);
	}
	ereport(WARNING,
			(errcode(edata->sqlerrcode),
			 errmsg("%s", edata->message),
			 errdetail("%s%sThe call returns NULL (on_error is \"null\").",
					   edata->detail ? edata->detail : "", edata->detail ? " " : ""),
			 edata->hint ? errhint("%s", edata->hint) : 0));
}

/*
 * Run fn(arg) in a subtransaction, for a call whose failure must not end
 * the statement (on_error "null").  An error it raises is returned,
 * copied into the caller's memory context, with the subtransaction
 * rolled back; NULL when it ran through.  A cancel, statement_timeout or
 * shutdown is raised again: those end the statement whatever on_error
 * says.
 */
ErrorData *
LlmTry(void (*fn) (void *arg), void *arg)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcontext);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	PG_END_TRY();
	if (edata && ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_OPERATOR_INTERVENTION)
		ReThrowError(edata);
	return edata;
}

/*
 * A whole call: the reply is in call->reply when this returns.  With
 * text, the caller wants the reply's text (llm.chat): a reply without it
 * (a refusal, a tool call, a paused turn, nothing) is recorded as what it
 * is and raised.  Without (llm.chat_completion), the whole reply is the
 * answer; a refusal is still recorded as one.
 */
void
LlmCallRun(LlmCall *call, bool text)
{
	LlmFailure	f;
	LlmOutcome	outcome;
	CacheKind	kind = text ? CACHE_TEXT : CACHE_RESPONSE;

	/* served by the response cache, or by an identical call in flight */
	for (;;)
	{
		CacheResult c = CacheCheck(call, kind, false);

		if (c == CACHE_HIT)
		{
			UsageRecord(call, LLM_OUTCOME_CACHE);
			return;
		}
		if (c != CACHE_WAIT)
			break;
		CacheWaitLatch(100);
	}
	PG_TRY();
	{
		run_chain(call, false);
	}
	PG_CATCH();
	{
		CacheAbandon(call);
		PG_RE_THROW();
	}
	PG_END_TRY();
	outcome = LlmJudgeText(call, call->reply.content != NULL && call->reply.content[0] != '\0', &f);
	if (!text && outcome != LLM_OUTCOME_REFUSED)
		outcome = LLM_OUTCOME_OK;
	if (outcome != LLM_OUTCOME_OK)
		call->error = f.message;
	/* only a good reply is kept: never an error, a refusal or a cut one */
	if (outcome == LLM_OUTCOME_OK)
		CacheKeep(call, text ? call->reply.content : call->reply.response_json);
	else
		CacheAbandon(call);
	UsageRecord(call, outcome);
	if (text && outcome != LLM_OUTCOME_OK)
		LlmRaiseFailure(&f, 1, 1);
}

/*
 * A whole call whose usage the caller records: its reply is still to be
 * validated (a failure along the chain is recorded and raised here).
 */
void
LlmCallSend(LlmCall *call)
{
	run_chain(call, false);
}

/* Open a stream: a 2xx transfer is in call->xfer when this returns. */
void
LlmCallOpenStream(LlmCall *call)
{
	run_chain(call, true);
}

/* The settings of a call: its model when it names none, its retries. */
void
CallDefineSettings(void)
{
	DefineCustomStringVariable("llm.default_model",
							   "Model used when a call names none.",
							   NULL, &llm_default_model, "",
							   PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.max_retries",
							"Retries of a retryable failure on one provider before the next route is tried.",
							"Providers can override it with the max_retries option.",
							&llm_max_retries, 2, 0, 100,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.max_retry_after",
							"Longest Retry-After a call waits for; a provider asking for more is given up at once.",
							NULL, &llm_max_retry_after, 60, 0, 3600,
							PGC_USERSET, GUC_UNIT_S, NULL, NULL, NULL);
}
