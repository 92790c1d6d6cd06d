/*-------------------------------------------------------------------------
 *
 * test_protocol.c
 *	  Standalone unit tests for the protocol facts (src/protocol.c): usage
 *	  objects and event sequences as the OpenAI and Anthropic references
 *	  document them, what they add up to and cost, every finish and stop
 *	  reason, the status each error type stands for, the shapes of error
 *	  bodies, and choices matched by index.
 *
 *	  The JSON of each vector is the providers' documented shape; the
 *	  numbers of the server-tool streams are those of two recorded
 *	  Anthropic streams whose input arrived only in message_delta.  Prints
 *	  each failure, then exactly one line "N passed, M failed"; exits 1 if
 *	  anything failed.  Needs json-c, nothing of PostgreSQL.
 *
 * test/unit/test_protocol.c
 *
 *-------------------------------------------------------------------------
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "protocol.h"

static int	npassed = 0;
static int	nfailed = 0;

static void
check_i64(const char *name, const char *what, long long exp, long long act)
{
	if (exp == act)
	{
		npassed++;
		return;
	}
	nfailed++;
	printf("FAIL %s (%s)\n  expected: %lld\n  actual:   %lld\n", name, what, exp, act);
}

static void
check_str(const char *name, const char *what, const char *exp, const char *act)
{
	if ((exp == NULL && act == NULL) || (exp && act && strcmp(exp, act) == 0))
	{
		npassed++;
		return;
	}
	nfailed++;
	printf("FAIL %s (%s)\n  expected: %s\n  actual:   %s\n", name, what,
		   exp ? exp : "(null)", act ? act : "(null)");
}

static void
check_usd(const char *name, double exp, double act)
{
	if (fabs(exp - act) < 1e-12)
	{
		npassed++;
		return;
	}
	nfailed++;
	printf("FAIL %s (cost)\n  expected: %.12f\n  actual:   %.12f\n", name, exp, act);
}

static json_object *
parse(const char *text)
{
	json_object *o = json_tokener_parse(text);

	if (o == NULL)
	{
		printf("test_protocol: vector is not JSON: %s\n", text);
		exit(2);
	}
	return o;
}

/* ----------------------------------------------------------------------
 * Usage: event sequences read in order, and what they add up to
 * ---------------------------------------------------------------------- */

typedef struct UsageVector
{
	const char *name;
	int			anthropic;
	/*
	 * The usage objects in the order they arrive: a reply's one, or a
	 * stream's message_start.message.usage then each message_delta.usage
	 * (OpenAI: the include_usage chunk's).  NULL ends the list.
	 */
	const char *events[4];
	const char *tier;			/* an OpenAI reply's top-level service_tier */
	int			has_tokens;
	ProtoTokens expect;
	const char *expect_tier;
} UsageVector;

static const UsageVector usage_vectors[] = {
	/* PROTOCOLS.md 1.3: a chat.completion's usage */
	{"openai reply", 0,
		{"{\"prompt_tokens\":24,\"completion_tokens\":15,\"total_tokens\":39,"
		 "\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},"
		 "\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,"
		 "\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}"},
		NULL, 1, {24, 0, 0, 0, 15, 0}, ""},
	/* prompt caching: cached_tokens are part of prompt_tokens */
	{"openai cached and reasoning", 0,
		{"{\"prompt_tokens\":2006,\"completion_tokens\":300,\"total_tokens\":2306,"
		 "\"prompt_tokens_details\":{\"cached_tokens\":1920},"
		 "\"completion_tokens_details\":{\"reasoning_tokens\":192}}"},
		"default", 1, {2006, 1920, 0, 0, 300, 192}, "default"},
	/* the include_usage chunk of a stream, the only one with usage */
	{"openai stream usage chunk", 0,
		{"{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}"},
		"flex", 1, {9, 0, 0, 0, 2, 0}, "flex"},
	/* DeepSeek: prompt_cache_hit_tokens beside prompt_cache_miss_tokens */
	{"deepseek cache hits", 0,
		{"{\"prompt_tokens\":100,\"completion_tokens\":10,\"prompt_cache_hit_tokens\":64,"
		 "\"prompt_cache_miss_tokens\":36,\"completion_tokens_details\":{\"reasoning_tokens\":4}}"},
		NULL, 1, {100, 64, 0, 0, 10, 4}, ""},
	/* a provider's parts larger than their whole are cut to the whole */
	{"openai parts over the whole", 0,
		{"{\"prompt_tokens\":100,\"completion_tokens\":5,"
		 "\"prompt_tokens_details\":{\"cached_tokens\":5000},"
		 "\"completion_tokens_details\":{\"reasoning_tokens\":7}}"},
		NULL, 1, {100, 100, 0, 0, 5, 5}, ""},
	/* what is not a count is left out */
	{"openai counts that are not counts", 0,
		{"{\"prompt_tokens\":-5,\"completion_tokens\":\"12\","
		 "\"prompt_tokens_details\":{\"cached_tokens\":1.5}}"},
		NULL, 0, {0, 0, 0, 0, 0, 0}, ""},
	{"openai whole doubles", 0,
		{"{\"prompt_tokens\":12.0,\"completion_tokens\":3}"},
		NULL, 1, {12, 0, 0, 0, 3, 0}, ""},
	/* PROTOCOLS.md 3.3: a Message's usage; cache counts are input too */
	{"anthropic reply", 1,
		{"{\"input_tokens\":12,\"output_tokens\":6,\"cache_creation_input_tokens\":0,"
		 "\"cache_read_input_tokens\":0,\"service_tier\":\"standard\"}"},
		NULL, 1, {12, 0, 0, 0, 6, 0}, "standard"},
	{"anthropic reply with the cache", 1,
		{"{\"input_tokens\":12,\"output_tokens\":6,\"cache_creation_input_tokens\":100,"
		 "\"cache_read_input_tokens\":1000,\"cache_creation\":{\"ephemeral_5m_input_tokens\":60,"
		 "\"ephemeral_1h_input_tokens\":40},\"service_tier\":\"priority\"}"},
		NULL, 1, {1112, 1000, 100, 40, 6, 0}, "priority"},
	/* the documented stream: message_start, then message_delta's output */
	{"anthropic stream", 1,
		{"{\"input_tokens\":25,\"output_tokens\":1}",
		 "{\"output_tokens\":15}"},
		NULL, 1, {25, 0, 0, 0, 15, 0}, ""},
	/*
	 * Server tools (web search): message_delta's usage is cumulative and
	 * carries the real input count; two recorded streams were booked at
	 * the message_start counts (2,049 and 11,734).
	 */
	{"anthropic web search stream", 1,
		{"{\"input_tokens\":2049,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,"
		 "\"output_tokens\":3,\"service_tier\":\"standard\"}",
		 "{\"input_tokens\":13520,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,"
		 "\"output_tokens\":612,\"server_tool_use\":{\"web_search_requests\":1}}"},
		NULL, 1, {13520, 0, 0, 0, 612, 0}, "standard"},
	{"anthropic web search stream with the cache", 1,
		{"{\"input_tokens\":11734,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,"
		 "\"output_tokens\":2}",
		 "{\"output_tokens\":40}",
		 "{\"input_tokens\":21652,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":12000,"
		 "\"output_tokens\":988,\"server_tool_use\":{\"web_search_requests\":2}}"},
		NULL, 1, {33652, 12000, 0, 0, 988, 0}, ""},
	/* a count a later event leaves out (or sends as null) keeps its value */
	{"anthropic later event without the cache counts", 1,
		{"{\"input_tokens\":10,\"cache_read_input_tokens\":500,\"output_tokens\":1}",
		 "{\"output_tokens\":20,\"cache_read_input_tokens\":null}"},
		NULL, 1, {510, 500, 0, 0, 20, 0}, ""},
	{"anthropic tier that is not a word", 1,
		{"{\"input_tokens\":1,\"output_tokens\":1,\"service_tier\":\"x y\"}"},
		NULL, 1, {1, 0, 0, 0, 1, 0}, ""},
};

static void
test_usage(void)
{
	size_t		i;

	for (i = 0; i < sizeof(usage_vectors) / sizeof(usage_vectors[0]); i++)
	{
		const UsageVector *v = &usage_vectors[i];
		ProtoUsage	u;
		ProtoTokens t;
		int			k;

		ProtoUsageInit(&u, v->anthropic);
		for (k = 0; k < 4 && v->events[k]; k++)
		{
			json_object *o = parse(v->events[k]);

			(void) ProtoUsageRead(o, &u);
			json_object_put(o);
		}
		if (v->tier)
			ProtoUsageSetTier(&u, v->tier);
		ProtoUsageTotals(&u, &t);
		check_i64(v->name, "has tokens", v->has_tokens, ProtoUsageHasTokens(&u));
		check_i64(v->name, "input", v->expect.input, t.input);
		check_i64(v->name, "cached input", v->expect.cached_input, t.cached_input);
		check_i64(v->name, "cache write", v->expect.cache_write, t.cache_write);
		check_i64(v->name, "cache write 1h", v->expect.cache_write_1h, t.cache_write_1h);
		check_i64(v->name, "output", v->expect.output, t.output);
		check_i64(v->name, "reasoning", v->expect.reasoning, t.reasoning);
		check_str(v->name, "service tier", v->expect_tier, u.service_tier);
	}
}

/* ----------------------------------------------------------------------
 * Cost
 * ---------------------------------------------------------------------- */

static void
test_cost(void)
{
	ProtoTokens t;
	ProtoPrices p;

	/* OpenAI: 86 fresh at 2.50, 1920 cached at 1.25, 300 out at 10 */
	memset(&t, 0, sizeof(t));
	t.input = 2006;
	t.cached_input = 1920;
	t.output = 300;
	t.reasoning = 192;
	p.input = 2.5;
	p.output = 10;
	p.cached_input = 1.25;
	check_usd("openai cached at the cached price", (86 * 2.5 + 1920 * 1.25 + 300 * 10) / 1e6, ProtoCost(&t, &p));
	/* no cached price: the input price, never less */
	p.cached_input = -1;
	check_usd("openai cached without a cached price", (2006 * 2.5 + 300 * 10) / 1e6, ProtoCost(&t, &p));

	/*
	 * Anthropic at 3 / 15 with reads at 0.30: 12 fresh, 1000 read, 60
	 * written for 5 minutes at 1.25 times the input price, 40 for an hour
	 * at 2 times.
	 */
	memset(&t, 0, sizeof(t));
	t.input = 1112;
	t.cached_input = 1000;
	t.cache_write = 100;
	t.cache_write_1h = 40;
	t.output = 6;
	p.input = 3;
	p.output = 15;
	p.cached_input = 0.3;
	check_usd("anthropic cache reads and writes",
			  (12 * 3 + 1000 * 0.3 + 60 * 3 * 1.25 + 40 * 3 * 2.0 + 6 * 15) / 1e6, ProtoCost(&t, &p));

	/* the web search stream, booked at its real input count */
	memset(&t, 0, sizeof(t));
	t.input = 13520;
	t.output = 612;
	p.cached_input = -1;
	check_usd("anthropic web search stream", (13520 * 3 + 612 * 15) / 1e6, ProtoCost(&t, &p));
}

/* ----------------------------------------------------------------------
 * Endings
 * ---------------------------------------------------------------------- */

static void
test_endings(void)
{
	static const struct
	{
		const char *reason;
		ProtoEnding ending;
		const char *finish_reason;
	}			v[] = {
		/* OpenAI finish_reason (PROTOCOLS.md 1.3) */
		{"stop", PROTO_END_COMPLETE, "stop"},
		{"length", PROTO_END_LENGTH, "length"},
		{"tool_calls", PROTO_END_TOOL, "tool_calls"},
		{"content_filter", PROTO_END_FILTERED, "content_filter"},
		{"function_call", PROTO_END_TOOL, "function_call"},
		/* Anthropic stop_reason (PROTOCOLS.md 3.3) */
		{"end_turn", PROTO_END_COMPLETE, "stop"},
		{"max_tokens", PROTO_END_LENGTH, "length"},
		{"stop_sequence", PROTO_END_COMPLETE, "stop"},
		{"tool_use", PROTO_END_TOOL, "tool_calls"},
		{"pause_turn", PROTO_END_PAUSED, "pause_turn"},
		{"refusal", PROTO_END_REFUSED, "content_filter"},
		{"model_context_window_exceeded", PROTO_END_LENGTH, "length"},
		/* a new reason stays itself */
		{"compaction", PROTO_END_OTHER, "compaction"},
		{"", PROTO_END_NONE, ""},
	};
	size_t		i;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++)
	{
		check_i64(v[i].reason, "ending", v[i].ending, ProtoEndingOf(v[i].reason));
		check_str(v[i].reason, "finish_reason", v[i].finish_reason, ProtoFinishReason(v[i].reason));
	}
	check_i64("null", "ending", PROTO_END_NONE, ProtoEndingOf(NULL));
	check_str("null", "finish_reason", NULL, ProtoFinishReason(NULL));
}

/* ----------------------------------------------------------------------
 * Errors
 * ---------------------------------------------------------------------- */

static void
test_error_status(void)
{
	static const struct
	{
		const char *type;
		const char *code;
		long		status;
		int			quota;
	}			v[] = {
		/* Anthropic error types, as in-stream error events carry them */
		{"invalid_request_error", NULL, 400, 0},
		{"authentication_error", NULL, 401, 0},
		{"billing_error", NULL, 402, 1},
		{"permission_error", NULL, 403, 0},
		{"not_found_error", NULL, 404, 0},
		{"request_too_large", NULL, 413, 0},
		{"rate_limit_error", NULL, 429, 0},
		{"api_error", NULL, 500, 0},
		{"timeout_error", NULL, 504, 0},
		{"overloaded_error", NULL, 529, 0},
		/* OpenAI: the code says more than the type */
		{"invalid_request_error", "invalid_api_key", 401, 0},
		{"insufficient_quota", "insufficient_quota", 429, 1},
		{"requests", "rate_limit_exceeded", 429, 0},
		{"tokens", "rate_limit_exceeded", 429, 0},
		{"invalid_request_error", "model_not_found", 404, 0},
		{"invalid_request_error", "context_length_exceeded", 400, 0},
		{"server_error", NULL, 500, 0},
		/* vLLM and llama.cpp: the status as the code */
		{"BadRequestError", "400", 400, 0},
		{"unavailable_error", "503", 503, 0},
		/* unknown */
		{"mystery_error", NULL, 0, 0},
		{NULL, "12", 0, 0},
		{NULL, NULL, 0, 0},
	};
	size_t		i;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++)
	{
		char		name[128];

		snprintf(name, sizeof(name), "error %s/%s", v[i].type ? v[i].type : "-",
				 v[i].code ? v[i].code : "-");
		check_i64(name, "status", v[i].status, ProtoErrorStatus(v[i].type, v[i].code));
		check_i64(name, "quota", v[i].quota, ProtoErrorIsQuota(v[i].type, v[i].code));
	}
}

/* A field of an error body as text: strings as they are, others as JSON. */
static const char *
field_text(json_object *f)
{
	if (f == NULL)
		return NULL;
	if (json_object_is_type(f, json_type_string))
		return json_object_get_string(f);
	return json_object_to_json_string_ext(f, JSON_C_TO_STRING_PLAIN);
}

static void
test_error_bodies(void)
{
	static const struct
	{
		const char *name;
		const char *body;
		const char *message;
		const char *type;
		const char *code;
	}			v[] = {
		{"openai", "{\"error\":{\"message\":\"Incorrect API key provided.\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"invalid_api_key\"}}",
		"Incorrect API key provided.", "invalid_request_error", "invalid_api_key"},
		{"anthropic", "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"},\"request_id\":\"req_1\"}",
		"Overloaded", "overloaded_error", NULL},
		{"vllm flat", "{\"object\":\"error\",\"message\":\"model x does not exist\",\"type\":\"NotFoundError\",\"param\":null,\"code\":404}",
		"model x does not exist", "NotFoundError", "404"},
		{"llama.cpp", "{\"error\":{\"code\":503,\"message\":\"Loading model\",\"type\":\"unavailable_error\"}}",
		"Loading model", "unavailable_error", "503"},
		/* Express's body-parser, Fastify, NestJS */
		{"express", "{\"error\":\"SyntaxError\",\"message\":\"Unexpected token } in JSON at position 12\"}",
		"Unexpected token } in JSON at position 12", "SyntaxError", NULL},
		{"fastify", "{\"statusCode\":413,\"error\":\"Payload Too Large\",\"message\":\"Request body is too large\"}",
		"Request body is too large", "Payload Too Large", NULL},
		{"nestjs", "{\"statusCode\":404,\"message\":\"Cannot POST /v1/chat/completions\",\"error\":\"Not Found\"}",
		"Cannot POST /v1/chat/completions", "Not Found", NULL},
		{"express with a code", "{\"error\":\"PayloadTooLargeError\",\"message\":\"request entity too large\",\"code\":\"entity.too.large\"}",
		"request entity too large", "PayloadTooLargeError", "entity.too.large"},
		{"fastapi", "{\"detail\":\"Not Found\"}", "Not Found", NULL, NULL},
		{"fastapi validation", "{\"detail\":[{\"loc\":[\"body\",\"model\"],\"msg\":\"field required\",\"type\":\"value_error.missing\"}]}",
		"[{\"loc\":[\"body\",\"model\"],\"msg\":\"field required\",\"type\":\"value_error.missing\"}]", NULL, NULL},
		{"oauth", "{\"error\":\"invalid_token\",\"error_description\":\"The access token expired\"}",
		"The access token expired", "invalid_token", NULL},
		{"bare", "{\"error\":\"Unauthorized\"}", "Unauthorized", NULL, NULL},
		{"nothing", "{\"ok\":false}", NULL, NULL, NULL},
		{"not an object", "[1,2]", NULL, NULL, NULL},
	};
	size_t		i;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++)
	{
		json_object *o = parse(v[i].body);
		ProtoErrorFields e;

		ProtoErrorRead(o, &e);
		check_str(v[i].name, "message", v[i].message, field_text(e.message));
		check_str(v[i].name, "type", v[i].type, field_text(e.type));
		check_str(v[i].name, "code", v[i].code, field_text(e.code));
		json_object_put(o);
	}
}

/* ----------------------------------------------------------------------
 * Choices
 * ---------------------------------------------------------------------- */

static void
test_choices(void)
{
	static const struct
	{
		const char *name;
		const char *choices;
		const char *expect;		/* delta.content or message.content of choice 0 */
	}			v[] = {
		/* n = 2: a chunk of the second choice, then of the first */
		{"stream chunk of choice 1", "[{\"index\":1,\"delta\":{\"content\":\"Blue\"},\"finish_reason\":null}]", NULL},
		{"stream chunk of choice 0", "[{\"index\":0,\"delta\":{\"content\":\"Red\"},\"finish_reason\":null}]", "Red"},
		{"both in one chunk, 1 first", "[{\"index\":1,\"delta\":{\"content\":\"Blue\"}},{\"index\":0,\"delta\":{\"content\":\"Red\"}}]", "Red"},
		{"reply choices out of order", "[{\"index\":1,\"message\":{\"content\":\"b\"}},{\"index\":0,\"message\":{\"content\":\"a\"}}]", "a"},
		{"no index: by place", "[{\"message\":{\"content\":\"first\"}},{\"message\":{\"content\":\"second\"}}]", "first"},
		{"the usage chunk", "[]", NULL},
	};
	size_t		i;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++)
	{
		json_object *o = parse(v[i].choices);
		json_object *c = ProtoChoice(o, 0);
		json_object *part = NULL;
		json_object *content = NULL;
		const char *got = NULL;

		if (c && (json_object_object_get_ex(c, "delta", &part) ||
				  json_object_object_get_ex(c, "message", &part)) &&
			json_object_object_get_ex(part, "content", &content))
			got = json_object_get_string(content);
		check_str(v[i].name, "choice 0", v[i].expect, got);
		json_object_put(o);
	}
}

int
main(void)
{
	test_usage();
	test_cost();
	test_endings();
	test_error_status();
	test_error_bodies();
	test_choices();
	printf("%d passed, %d failed\n", npassed, nfailed);
	return nfailed > 0 ? 1 : 0;
}
