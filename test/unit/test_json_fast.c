/*
 * test/unit/test_json_fast.c
 *	  The fast JSON path (src/json_fast.c) against json-c's tokener, used
 *	  as pg_llm uses it (default flags, depth 256): whatever the fast path
 *	  returns must be what the tokener returns (same types, same values,
 *	  the same text when serialized), and everything else must make it
 *	  give up.  Provider replies of every shape must take the fast path.
 *
 *	  Cases: provider replies (OpenAI, Anthropic, embeddings, errors, tool
 *	  calls), escapes and surrogates, numbers at the edges, what json-c
 *	  reads beyond standard JSON, nesting at the limit; then random JSON
 *	  texts written with random white space, and the same texts cut and
 *	  with bytes changed.
 *
 *	  usage: test_json_fast [--rounds N]
 *	  Last line: "N passed, M failed", in test cases (each property of
 *	  the random texts is one over all its rounds, see cases.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "json_fast.h"

#include "cases.h"

#define DEPTH 256

static int	passed = 0;
static int	failed = 0;
static unsigned long long rng = 88172645463325252ULL;

static unsigned
rnd(unsigned n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (unsigned) (rng % n);
}

/* in the random rounds: a check is one of a property's rounds (cases.h) */
static int	in_property = 0;

static void
check(int cond, const char *what, const char *text)
{
	if (in_property)
		cond = UnitProperty(what, cond);
	else if (cond)
		passed++;
	else
		failed++;
	if (!cond)
		fprintf(stderr, "FAILED: %s: %.300s\n", what, text);
}

/* The tokener as JsonParse calls it; NULL when it refuses the text. */
static json_object *
tokener(const char *text, size_t len, int *refused)
{
	json_tokener *tok = json_tokener_new_ex(DEPTH);
	json_object *o = json_tokener_parse_ex(tok, text, (int) len);
	size_t		off;

	*refused = (o == NULL);
	if (o)
		for (off = json_tokener_get_parse_end(tok); off < len; off++)
			if (text[off] != ' ' && text[off] != '\n' && text[off] != '\r' &&
				text[off] != '\t' && text[off] != '\f' && text[off] != '\v')
			{
				json_object_put(o);
				o = NULL;
				*refused = 1;
				break;
			}
	json_tokener_free(tok);
	return o;
}

/* Same types, values and text, all the way down. */
static int
same(json_object *a, json_object *b)
{
	const char *sa;
	const char *sb;

	if (a == NULL || b == NULL)
		return a == b;
	if (!json_object_equal(a, b))
		return 0;
	sa = json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN);
	sb = json_object_to_json_string_ext(b, JSON_C_TO_STRING_PLAIN);
	return strcmp(sa, sb) == 0;
}

/*
 * One text: the fast path gives up or agrees with the tokener; with
 * must_take, it must not give up.
 */
static void
compare(const char *text, size_t len, int must_take, const char *what)
{
	int			refused;
	json_object *t = tokener(text, len, &refused);
	json_object *f = JsonFastParse(text, len, DEPTH);

	if (f != NULL)
		check(!refused && same(f, t), what, text);
	else
		check(!must_take, what, text);
	json_object_put(f);
	json_object_put(t);
}

static const char *const replies[] = {
	"{\"id\":\"chatcmpl-mock1\",\"object\":\"chat.completion\",\"created\":1741570283,\"model\":\"gpt-4o-2024-08-06\","
	"\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"echo: bench 1\",\"refusal\":null,"
	"\"annotations\":[]},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":24,"
	"\"completion_tokens\":15,\"total_tokens\":39,\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},"
	"\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,"
	"\"rejected_prediction_tokens\":0}},\"service_tier\":\"default\",\"system_fingerprint\":\"fp_abc\"}",
	"{\n  \"id\": \"msg_01\",\n  \"type\": \"message\",\n  \"role\": \"assistant\",\n  \"model\": \"claude-sonnet-4-5\",\n"
	"  \"content\": [{\"type\": \"text\", \"text\": \"Hi! My name is Claude.\"}],\n  \"stop_reason\": \"end_turn\",\n"
	"  \"stop_sequence\": null,\n  \"usage\": {\"input_tokens\": 2095, \"output_tokens\": 503,"
	" \"cache_creation_input_tokens\": 0, \"cache_read_input_tokens\": 0}\n}\n",
	"{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":[0.0023064255,-0.009327292,"
	"-0.0028842222,1e-05,-1.5E+10,0.5e3,-0,0,3.0,2.50]}],\"model\":\"text-embedding-3-small\","
	"\"usage\":{\"prompt_tokens\":8,\"total_tokens\":8}}",
	"{\"error\":{\"message\":\"Incorrect API key provided.\",\"type\":\"invalid_request_error\",\"param\":null,"
	"\"code\":\"invalid_api_key\"}}",
	"{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\","
	"\"type\":\"function\",\"function\":{\"name\":\"lookup\",\"arguments\":\"{\\\"q\\\":\\\"caf\\u00e9 \\\\ \\/\\\"}\"}}]},"
	"\"finish_reason\":\"tool_calls\"}]}",
	"{\"content\":\"\\u00e9\\u4e2d\\ud83d\\ude00 \\\"q\\\" \\b\\f\\n\\r\\t tab\\ttab\",\"raw\":\"caf\xc3\xa9 \xe4\xb8\xad\"}",
	"[1,-1,9223372036854775,-922337203685477580,123456789012345678,true,false,null,[],{},\"\",[[[[]]]]]",
	"{\"a\":1,\"a\":2,\"b\":{\"a\":[1,2]},\"b\":null}",
	"  \r\n\t{\"blank lines before the body\": true}\n\n",
	"{\"results\":[{\"custom_id\":\"doc_0\",\"response\":{\"status_code\":200,\"body\":{\"x\":1.25}}}]}",
};

/* What the fast path must leave to the tokener (it may read them or not). */
static const char *const edges[] = {
	"null", "true", "1", "\"str\"", "", "   ", "{", "[", "}", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "[1,]",
	"[01]", "[1.]", "[.5]", "[1e]", "[-]", "[+1]", "[NaN]", "[Infinity]", "[-Infinity]", "[nan]",
	"[TRUE]", "[True]", "[NULL]", "['single']", "/* c */ {}", "{} // c", "{\"a\":1} x", "{\"a\":1}{}",
	"[\"\\ud800\"]", "[\"\\udc00\"]", "[\"\\ud800\\u0041\"]", "[\"\\u0000\"]", "{\"\\u0000k\":1}",
	"[\"\\x41\"]", "[\"\\'\"]", ("[\"a\x01" "b\"]"), "[\"tab\there\"]", "[\"unterminated]", "{\"\":1}",
	"[12345678901234567890]", "[9223372036854775807]", "[9223372036854775808]", "[-9223372036854775808]",
	"[18446744073709551615]", "[18446744073709551616]", "[1.7976931348623157e309]", "[4.9e-325]",
	"[\"\\u00E9\\u00e9\"]", "[\"\\uD83D\\uDE00\"]", "\xef\xbb\xbf{}", "{\"a\":\"\xff\xfe\"}",
	"[1,\n2]", "[\f1]", "[\v1]", "{\"a\" : 1 , \"b\" : [ 2 , 3 ] }",
};

/* Random JSON, written with random white space. */
static void
gen(char **out, size_t *len, size_t *cap, int depth);

static void
put(char **out, size_t *len, size_t *cap, const char *s, size_t n)
{
	if (*len + n + 1 > *cap)
	{
		*cap = (*len + n + 1) * 2;
		*out = realloc(*out, *cap);
	}
	memcpy(*out + *len, s, n);
	*len += n;
	(*out)[*len] = '\0';
}

static void
ws(char **out, size_t *len, size_t *cap)
{
	static const char *const w[] = {"", "", "", " ", "\n", "\t", "\r\n  "};
	const char *s = w[rnd(7)];

	put(out, len, cap, s, strlen(s));
}

static void
gen_string(char **out, size_t *len, size_t *cap)
{
	static const char *const parts[] = {
		"a", "echo: ", "caf\xc3\xa9", "\\n", "\\\"", "\\\\", "\\/", "\\t", "\\u00e9", "\\u4E2D",
		"\\ud83d\\ude00", "\\u0041", " ", "{}", "[1]", "\\b", "\\f", "\\r", "x y z", "\xe4\xb8\xad"
	};
	int			n = rnd(6);
	int			i;

	put(out, len, cap, "\"", 1);
	for (i = 0; i < n; i++)
	{
		const char *p = parts[rnd(sizeof(parts) / sizeof(parts[0]))];

		put(out, len, cap, p, strlen(p));
	}
	put(out, len, cap, "\"", 1);
}

static void
gen(char **out, size_t *len, size_t *cap, int depth)
{
	static const char *const nums[] = {
		"0", "-0", "7", "-12", "1234567890", "123456789012345678", "-123456789012345678", "0.5",
		"-2.25", "1e3", "1E-7", "6.02e+23", "3.0", "0.000001", "100.10"
	};
	static const char *const keys[] = {
		"\"id\"", "\"content\"", "\"usage\"", "\"x\"", "\"a b\"", "\"caf\\u00e9\"", "\"choices\"", "\"k\\\"q\"",
		"\"index\"", "\"data\""
	};
	int			kind = depth > 6 ? rnd(5) : rnd(7);
	int			i, n;

	ws(out, len, cap);
	switch (kind)
	{
		case 0:
			{
				const char *s = nums[rnd(15)];

				put(out, len, cap, s, strlen(s));
				break;
			}
		case 1:
			gen_string(out, len, cap);
			break;
		case 2:
			put(out, len, cap, "true", 4);
			break;
		case 3:
			put(out, len, cap, "false", 5);
			break;
		case 4:
			put(out, len, cap, "null", 4);
			break;
		case 5:
			n = rnd(5);
			put(out, len, cap, "[", 1);
			for (i = 0; i < n; i++)
			{
				if (i)
					put(out, len, cap, ",", 1);
				gen(out, len, cap, depth + 1);
			}
			ws(out, len, cap);
			put(out, len, cap, "]", 1);
			break;
		default:
			n = rnd(5);
			put(out, len, cap, "{", 1);
			for (i = 0; i < n; i++)
			{
				const char *k = keys[rnd(10)];

				if (i)
					put(out, len, cap, ",", 1);
				ws(out, len, cap);
				put(out, len, cap, k, strlen(k));
				ws(out, len, cap);
				put(out, len, cap, ":", 1);
				gen(out, len, cap, depth + 1);
			}
			ws(out, len, cap);
			put(out, len, cap, "}", 1);
			break;
	}
	ws(out, len, cap);
}

/* Nesting around the limit: the tokener decides there. */
static void
nesting(void)
{
	int			d;

	for (d = DEPTH - 4; d <= DEPTH + 2; d++)
	{
		char	   *t = malloc(2 * d + 1);
		int			i;

		for (i = 0; i < d; i++)
		{
			t[i] = '[';
			t[2 * d - 1 - i] = ']';
		}
		t[2 * d] = '\0';
		compare(t, 2 * d, 0, "nesting near the limit");
		free(t);
	}
}

int
main(int argc, char **argv)
{
	int			rounds = 20000;
	size_t		i;
	int			r;
	int			taken = 0;
	int			random_texts = 0;

	if (argc > 2 && strcmp(argv[1], "--rounds") == 0)
		rounds = atoi(argv[2]);

	for (i = 0; i < sizeof(replies) / sizeof(replies[0]); i++)
		compare(replies[i], strlen(replies[i]), 1, "a provider reply takes the fast path");
	for (i = 0; i < sizeof(edges) / sizeof(edges[0]); i++)
		compare(edges[i], strlen(edges[i]), 0, "an edge case");
	nesting();

	in_property = 1;
	for (r = 0; r < rounds; r++)
	{
		char	   *out = NULL;
		size_t		len = 0;
		size_t		cap = 0;
		json_object *f;

		if (rnd(2))
			put(&out, &len, &cap, "{\"v\":", 5);
		else
			put(&out, &len, &cap, "[", 1);
		if (out[0] == '{')
		{
			gen(&out, &len, &cap, 1);
			put(&out, &len, &cap, "}", 1);
		}
		else
		{
			gen(&out, &len, &cap, 1);
			put(&out, &len, &cap, "]", 1);
		}
		f = JsonFastParse(out, len, DEPTH);
		taken += (f != NULL);
		json_object_put(f);
		random_texts++;
		compare(out, len, 0, "a random text");
		/* cut short, and with a byte changed */
		if (len > 1)
		{
			size_t		cut = rnd((unsigned) len);
			char		saved;

			compare(out, cut, 0, "a random text cut short");
			saved = out[cut];
			out[cut] = "{}[]\",:\\0-e. \x01\xff"[rnd(16)];
			compare(out, len, 0, "a random text with a byte changed");
			out[cut] = saved;
		}
		free(out);
	}
	in_property = 0;
	UnitPropertiesEnd("random texts", rounds, &passed, &failed);
	/* standard JSON is what the fast path is for: most random texts take it */
	check(taken * 10 > random_texts * 9, "random standard texts take the fast path", "");
	printf("fast path took %d of %d random texts\n", taken, random_texts);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
