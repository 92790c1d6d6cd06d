/*-------------------------------------------------------------------------
 *
 * protocol.c
 *	  Facts of the OpenAI Chat Completions and Anthropic Messages protocols
 *	  that the readers of replies, streams, errors and batch results share,
 *	  taken from the providers' references (PROTOCOLS.md):
 *
 *	  - usage: OpenAI's prompt_tokens include the cached ones
 *	    (prompt_tokens_details.cached_tokens) and completion_tokens the
 *	    reasoning ones (completion_tokens_details.reasoning_tokens);
 *	    Anthropic's input_tokens exclude the tokens read from and written
 *	    to the prompt cache (cache_read_input_tokens,
 *	    cache_creation_input_tokens), and a stream's message_delta usage is
 *	    cumulative: the last value of each count is the count;
 *	  - cost: cached input at the route's cached-input price, cache writes
 *	    at 1.25 times the input price (2 times for the one-hour lifetime);
 *	  - endings: every finish_reason and stop_reason, in one vocabulary;
 *	  - errors: the HTTP status an error type or code stands for (an error
 *	    inside a stream has no status of its own), and where the message is
 *	    in each shape of error body seen in the wild.
 *
 *	  Pure C over json-c: no PostgreSQL header, no allocation, so that
 *	  test/unit/test_protocol.c runs the references' vectors through it.
 *
 *-------------------------------------------------------------------------
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "protocol.h"

/* A member of an object, or NULL (also when obj is not an object). */
static json_object *
member(json_object *obj, const char *key)
{
	json_object *v;

	if (obj == NULL || !json_object_is_type(obj, json_type_object) ||
		!json_object_object_get_ex(obj, key, &v) ||
		json_object_is_type(v, json_type_null))
		return NULL;
	return v;
}

/*
 * A token count: a whole number from 0 up.  Anything else (a negative
 * number, a fraction, a string, a number json-c clamped) is not a count
 * and is left out, as if the provider had not sent it.
 */
static bool
count_of(json_object *obj, const char *key, int64_t *val)
{
	json_object *v = member(obj, key);

	if (v == NULL)
		return false;
	if (json_object_is_type(v, json_type_int))
	{
		int64_t		i = json_object_get_int64(v);

		if (i < 0 || i == INT64_MAX)
			return false;
		*val = i;
		return true;
	}
	if (json_object_is_type(v, json_type_double))
	{
		double		d = json_object_get_double(v);

		if (isfinite(d) && d >= 0 && d == floor(d) && d < 9.2e18)
		{
			*val = (int64_t) d;
			return true;
		}
	}
	return false;
}

/* Take a count into u when the object has it. */
static bool
take(ProtoUsage *u, ProtoUsageField f, json_object *obj, const char *key)
{
	int64_t		v;

	if (!count_of(obj, key, &v))
		return false;
	u->v[f] = v;
	u->present |= 1u << f;
	return true;
}

/* A usage with nothing read yet. */
void
ProtoUsageInit(ProtoUsage *u, bool anthropic)
{
	memset(u, 0, sizeof(ProtoUsage));
	u->anthropic = anthropic;
}

/*
 * Read a usage object into u, in the protocol's names.  Counts present
 * replace what u held (cumulative usage: the last value wins); counts
 * absent keep it.  Returns true when the object carried any count.
 */
bool
ProtoUsageRead(json_object *usage, ProtoUsage *u)
{
	bool		any = false;
	json_object *tier;

	if (usage == NULL || !json_object_is_type(usage, json_type_object))
		return false;
	if (u->anthropic)
	{
		any |= take(u, PU_INPUT, usage, "input_tokens");
		any |= take(u, PU_OUTPUT, usage, "output_tokens");
		any |= take(u, PU_CACHE_READ, usage, "cache_read_input_tokens");
		any |= take(u, PU_CACHE_WRITE, usage, "cache_creation_input_tokens");
		any |= take(u, PU_CACHE_WRITE_1H, member(usage, "cache_creation"),
					"ephemeral_1h_input_tokens");
		tier = member(usage, "service_tier");
		if (tier && json_object_is_type(tier, json_type_string))
			ProtoUsageSetTier(u, json_object_get_string(tier));
	}
	else
	{
		any |= take(u, PU_INPUT, usage, "prompt_tokens");
		any |= take(u, PU_OUTPUT, usage, "completion_tokens");
		/* DeepSeek names its cache hits prompt_cache_hit_tokens */
		if (!take(u, PU_CACHE_READ, member(usage, "prompt_tokens_details"), "cached_tokens"))
			(void) take(u, PU_CACHE_READ, usage, "prompt_cache_hit_tokens");
		(void) take(u, PU_REASONING, member(usage, "completion_tokens_details"),
					"reasoning_tokens");
	}
	return any;
}

/* The service tier that served the call (OpenAI sends it beside usage). */
void
ProtoUsageSetTier(ProtoUsage *u, const char *tier)
{
	size_t		n = 0;

	if (tier == NULL)
		return;
	/* a short word of letters, digits, - and _; anything else is not one */
	while (tier[n] && n < sizeof(u->service_tier) - 1 &&
		   (((tier[n] | 0x20) >= 'a' && (tier[n] | 0x20) <= 'z') ||
			(tier[n] >= '0' && tier[n] <= '9') || tier[n] == '-' || tier[n] == '_'))
		n++;
	if (tier[n] != '\0')
		return;
	memcpy(u->service_tier, tier, n);
	u->service_tier[n] = '\0';
}

/* Did the provider report the tokens of the call? */
bool
ProtoUsageHasTokens(const ProtoUsage *u)
{
	return (u->present & ((1u << PU_INPUT) | (1u << PU_OUTPUT))) != 0;
}

/* a + b, kept within int64 */
static int64_t
add_counts(int64_t a, int64_t b)
{
	return a > INT64_MAX - b ? INT64_MAX : a + b;
}

static int64_t
min_count(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

/*
 * What a usage adds up to.  The parts (cached, written, reasoning) never
 * exceed their whole, whatever a provider sent.
 */
void
ProtoUsageTotals(const ProtoUsage *u, ProtoTokens *t)
{
	memset(t, 0, sizeof(ProtoTokens));
	if (u->anthropic)
	{
		t->input = add_counts(add_counts(u->v[PU_INPUT], u->v[PU_CACHE_READ]),
							  u->v[PU_CACHE_WRITE]);
		t->cached_input = u->v[PU_CACHE_READ];
		t->cache_write = u->v[PU_CACHE_WRITE];
	}
	else
	{
		t->input = u->v[PU_INPUT];
		t->cached_input = min_count(u->v[PU_CACHE_READ], t->input);
		t->cache_write = min_count(u->v[PU_CACHE_WRITE], t->input - t->cached_input);
	}
	t->cache_write_1h = min_count(u->v[PU_CACHE_WRITE_1H], t->cache_write);
	t->output = u->v[PU_OUTPUT];
	t->reasoning = min_count(u->v[PU_REASONING], t->output);
}

/*
 * The cost of the tokens at a route's prices: fresh input at the input
 * price, cached input at the cached-input price (the input price when the
 * route has none: never booked below what may be billed), cache writes at
 * Anthropic's premium over the input price, output at the output price.
 */
double
ProtoCost(const ProtoTokens *t, const ProtoPrices *p)
{
	double		cached_price = p->cached_input >= 0 ? p->cached_input : p->input;
	int64_t		fresh = t->input - t->cached_input - t->cache_write;
	double		usd;

	if (fresh < 0)
		fresh = 0;
	usd = (double) fresh * p->input +
		(double) t->cached_input * cached_price +
		(double) (t->cache_write - t->cache_write_1h) * p->input * PROTO_CACHE_WRITE_5M_FACTOR +
		(double) t->cache_write_1h * p->input * PROTO_CACHE_WRITE_1H_FACTOR +
		(double) t->output * p->output;
	return usd / 1e6;
}

/* Every finish_reason (OpenAI) and stop_reason (Anthropic) named by the references. */
static const struct
{
	const char *reason;
	ProtoEnding ending;
	const char *finish_reason;	/* in OpenAI's words */
}			endings[] = {
	{"stop", PROTO_END_COMPLETE, "stop"},
	{"length", PROTO_END_LENGTH, "length"},
	{"tool_calls", PROTO_END_TOOL, "tool_calls"},
	{"function_call", PROTO_END_TOOL, "function_call"},
	{"content_filter", PROTO_END_FILTERED, "content_filter"},
	{"end_turn", PROTO_END_COMPLETE, "stop"},
	{"stop_sequence", PROTO_END_COMPLETE, "stop"},
	{"max_tokens", PROTO_END_LENGTH, "length"},
	{"model_context_window_exceeded", PROTO_END_LENGTH, "length"},
	{"tool_use", PROTO_END_TOOL, "tool_calls"},
	{"pause_turn", PROTO_END_PAUSED, "pause_turn"},
	{"refusal", PROTO_END_REFUSED, "content_filter"},
};

/* How a reply ended. */
ProtoEnding
ProtoEndingOf(const char *reason)
{
	size_t		i;

	if (reason == NULL || reason[0] == '\0')
		return PROTO_END_NONE;
	for (i = 0; i < sizeof(endings) / sizeof(endings[0]); i++)
		if (strcmp(endings[i].reason, reason) == 0)
			return endings[i].ending;
	return PROTO_END_OTHER;
}

/*
 * A stop_reason in OpenAI's words (the normalized reply's finish_reason).
 * pause_turn has no OpenAI equivalent and stays itself, as does a reason
 * the references do not name.
 */
const char *
ProtoFinishReason(const char *stop_reason)
{
	size_t		i;

	if (stop_reason == NULL)
		return NULL;
	for (i = 0; i < sizeof(endings) / sizeof(endings[0]); i++)
		if (strcmp(endings[i].reason, stop_reason) == 0)
			return endings[i].finish_reason;
	return stop_reason;
}

/*
 * Error types (Anthropic's error.type, OpenAI's error.type) and codes
 * (OpenAI's error.code) and the status each stands for.
 */
static const struct
{
	const char *name;
	long		status;
}			error_kinds[] = {
	/* Anthropic error types (PROTOCOLS.md 3.5) */
	{"invalid_request_error", 400},
	{"authentication_error", 401},
	{"billing_error", 402},
	{"permission_error", 403},
	{"not_found_error", 404},
	{"request_too_large", 413},
	{"rate_limit_error", 429},
	{"api_error", 500},
	{"timeout_error", 504},
	{"overloaded_error", 529},
	/* OpenAI error types and codes (PROTOCOLS.md 1.5) */
	{"invalid_api_key", 401},
	{"insufficient_quota", 429},
	{"rate_limit_exceeded", 429},
	{"tokens", 429},
	{"requests", 429},
	{"model_not_found", 404},
	{"unsupported_country_region_territory", 403},
	{"server_error", 500},
	{"service_unavailable", 503},
	{"insufficient_balance", 402},
};

static long
kind_status(const char *name)
{
	size_t		i;
	char	   *end;
	long		n;

	if (name == NULL || name[0] == '\0')
		return 0;
	/* vLLM and llama.cpp send the status itself as the code */
	n = strtol(name, &end, 10);
	if (*end == '\0' && n >= 100 && n <= 599)
		return n;
	for (i = 0; i < sizeof(error_kinds) / sizeof(error_kinds[0]); i++)
		if (strcmp(error_kinds[i].name, name) == 0)
			return error_kinds[i].status;
	return 0;
}

/*
 * The HTTP status an error stands for: its code first (OpenAI's
 * invalid_api_key comes with type invalid_request_error), then its type;
 * 0 when neither is known.
 */
long
ProtoErrorStatus(const char *type, const char *code)
{
	long		s = kind_status(code);

	return s ? s : kind_status(type);
}

/* An exhausted account: retrying will not help (PROTOCOLS.md 6). */
bool
ProtoErrorIsQuota(const char *type, const char *code)
{
	return (code && strcmp(code, "insufficient_quota") == 0) ||
		(type && (strcmp(type, "insufficient_quota") == 0 ||
				  strcmp(type, "billing_error") == 0));
}

/* The first of some members that is there. */
static json_object *
first_member(json_object *obj, const char *const *keys)
{
	json_object *v = NULL;

	for (; *keys && v == NULL; keys++)
		v = member(obj, *keys);
	return v;
}

/*
 * Where an error body keeps its message, type and code:
 *   {"error": {"message", "type", "code"}}          OpenAI, vLLM, llama.cpp
 *   {"type": "error", "error": {"type", "message"}}  Anthropic
 *   {"object": "error", "message", "type", "code"}   older vLLM
 *   {"error": "SyntaxError", "message": "..."}       Express, Fastify, NestJS
 *   {"detail": "..."} or {"detail": [...]}           FastAPI, Starlette
 *   {"error": "invalid_token", "error_description"}  OAuth proxies
 *   {"error": "text"}                                 bare
 * When "error" is a string and a message sits beside it, the string is
 * the error's type (its name) and the message is the message.
 */
void
ProtoErrorRead(json_object *root, ProtoErrorFields *e)
{
	static const char *const message_keys[] = {"message", "detail", "error_description", NULL};
	json_object *err = member(root, "error");

	memset(e, 0, sizeof(ProtoErrorFields));
	if (root == NULL || !json_object_is_type(root, json_type_object))
		return;
	if (err && json_object_is_type(err, json_type_object))
	{
		e->message = member(err, "message");
		e->type = member(err, "type");
		e->code = member(err, "code");
		return;
	}
	if (err && json_object_is_type(err, json_type_string))
	{
		e->message = first_member(root, message_keys);
		if (e->message)
			e->type = err;
		else
			e->message = err;
		e->code = member(root, "code");
		return;
	}
	e->message = first_member(root, message_keys);
	e->type = member(root, "type");
	e->code = member(root, "code");
}

/*
 * The choice with this index.  Choices are matched by their "index", not
 * by their place: with n > 1 a stream's chunks carry the choices in turn,
 * and a server may order a reply's choices as it likes.  A choice without
 * an index counts by its place.
 */
json_object *
ProtoChoice(json_object *choices, int index)
{
	size_t		i,
				n;

	if (choices == NULL || !json_object_is_type(choices, json_type_array))
		return NULL;
	n = json_object_array_length(choices);
	for (i = 0; i < n; i++)
	{
		json_object *c = json_object_array_get_idx(choices, i);
		json_object *ix = member(c, "index");

		if (ix ? (json_object_is_type(ix, json_type_int) && json_object_get_int64(ix) == index)
			: (int64_t) i == index)
			return c;
	}
	return NULL;
}
