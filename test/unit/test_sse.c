/*-------------------------------------------------------------------------
 *
 * test_sse.c
 *	  Standalone unit tests for the SSE parser (src/sse.c).
 *
 * This program owns the byte-level test vectors of PROTOCOLS.md section 4
 * and the parser's edge cases.  Each table row is run fed whole, one byte at
 * a time and split in two at every position, so a row tests chunk-boundary
 * handling for free.  It prints each failure with escaped expected and
 * actual values, then exactly one line "N passed, M failed", and exits 1 if
 * anything failed.  It must not depend on PostgreSQL or any test framework.
 *
 * sse.c is included directly so that allocations can be made to fail on
 * demand (SSE_REALLOC) without any test hook in the production build.
 *
 * With "--write-corpus DIR" it instead writes every vector as a seed file
 * for fuzz_sse (prefixed with the fuzzer's two control bytes) and exits.
 *
 * test/unit/test_sse.c
 *
 *-------------------------------------------------------------------------
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *test_realloc(void *ptr, size_t size);

#define SSE_REALLOC test_realloc
#include "sse.c"

/* ----------------------------------------------------------------------
 * Allocation failure injection
 * ---------------------------------------------------------------------- */

static long alloc_calls = 0;	/* SSE_REALLOC calls so far */
static long alloc_fail_at = -1; /* fail this call (0-based), -1 = never */

/*
 * test_realloc
 *		realloc that fails exactly once, on call number alloc_fail_at, so a
 *		test can walk the failure through every allocation site.
 */
static void *
test_realloc(void *ptr, size_t size)
{
	if (alloc_calls++ == alloc_fail_at)
		return NULL;
	return realloc(ptr, size);
}

/* ----------------------------------------------------------------------
 * Growable string and assertion helpers
 * ---------------------------------------------------------------------- */

typedef struct Str
{
	char	   *s;
	size_t		len;
	size_t		cap;
} Str;

static int	npassed = 0;
static int	nfailed = 0;

/*
 * str_add
 *		Append bytes; the tests treat out-of-memory as fatal.
 */
static void
str_add(Str *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap)
	{
		size_t		cap = b->cap ? b->cap : 64;

		while (cap < b->len + n + 1)
			cap *= 2;
		b->s = realloc(b->s, cap);
		if (b->s == NULL)
		{
			fprintf(stderr, "test_sse: out of memory\n");
			exit(2);
		}
		b->cap = cap;
	}
	if (n > 0)
		memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void
str_free(Str *b)
{
	free(b->s);
	b->s = NULL;
	b->len = b->cap = 0;
}

/*
 * str_esc
 *		Append bytes escaped so that control bytes, non-ASCII bytes and the
 *		event separators of serialize_event stay visible in a report.
 */
static void
str_esc(Str *b, const char *s, size_t n)
{
	size_t		i;

	for (i = 0; i < n; i++)
	{
		unsigned char c = (unsigned char) s[i];
		char		tmp[8];

		if (c == '\n')
			str_add(b, "\\n", 2);
		else if (c == '\r')
			str_add(b, "\\r", 2);
		else if (c < 0x20 || c >= 0x7F || c == '\\' || c == '|' ||
				 c == '[' || c == ']')
		{
			snprintf(tmp, sizeof(tmp), "\\x%02X", c);
			str_add(b, tmp, 4);
		}
		else
			str_add(b, (const char *) &c, 1);
	}
}

/*
 * serialize_event
 *		One event as "[type|data|id]", escaped: comparing two serialized
 *		event lists compares types, data, ids and order at once, and the
 *		same text doubles as the failure message.
 */
static void
serialize_event(Str *b, const char *type, size_t type_len,
				const char *data, size_t data_len, const char *id)
{
	str_add(b, "[", 1);
	str_esc(b, type, type_len);
	str_add(b, "|", 1);
	str_esc(b, data, data_len);
	str_add(b, "|", 1);
	str_esc(b, id, strlen(id));
	str_add(b, "]", 1);
}

/*
 * check_str
 *		Assert that two serializations match; report both on failure.
 */
static int
check_str(const char *name, const char *mode, const Str *exp, const Str *act)
{
	if (exp->len == act->len &&
		(exp->len == 0 || memcmp(exp->s, act->s, exp->len) == 0))
	{
		npassed++;
		return 1;
	}
	nfailed++;
	printf("FAIL %s (%s)\n  expected: %s\n  actual:   %s\n",
		   name, mode, exp->len ? exp->s : "(no events)",
		   act->len ? act->s : "(no events)");
	return 0;
}

/*
 * check_long
 *		Assert an integer result (status codes, retry, counts).
 */
static int
check_long(const char *name, const char *what, long exp, long act)
{
	if (exp == act)
	{
		npassed++;
		return 1;
	}
	nfailed++;
	printf("FAIL %s (%s)\n  expected: %ld\n  actual:   %ld\n",
		   name, what, exp, act);
	return 0;
}

/* ----------------------------------------------------------------------
 * Recording callback
 * ---------------------------------------------------------------------- */

typedef struct Recorder
{
	Str			out;			/* serialized events */
	int			nevents;
	int			stop_after;		/* return stop_value on this event; 0 never */
	int			stop_value;
	int			broken;			/* an event violated the API contract */
} Recorder;

/*
 * record
 *		SseCallback that serializes each event and checks the promises of
 *		the SseEvent contract (NUL terminators, lengths, non-NULL pointers).
 */
static int
record(void *arg, const SseEvent *ev)
{
	Recorder   *r = arg;

	if (ev->type == NULL || ev->data == NULL || ev->id == NULL ||
		ev->data[ev->data_len] != '\0' || ev->type[ev->type_len] != '\0' ||
		strlen(ev->id) != ev->id_len || ev->type_len == 0)
		r->broken = 1;
	serialize_event(&r->out, ev->type, ev->type_len, ev->data, ev->data_len,
					ev->id);
	r->nevents++;
	if (r->stop_after > 0 && r->nevents == r->stop_after)
		return r->stop_value;
	return 0;
}

/* ----------------------------------------------------------------------
 * Table-driven vectors
 * ---------------------------------------------------------------------- */

#define MAX_EVENTS 12
#define MAX_PIECES 8
#define FINISH ((size_t) -1)	/* Piece.n meaning "call SseFinish here" */

typedef struct ExpEvent
{
	const char *type;
	const char *data;
	size_t		data_len;
	const char *id;
} ExpEvent;

typedef struct Piece
{
	const char *s;
	size_t		n;
} Piece;

typedef struct Vector
{
	const char *name;
	const char *in;				/* whole input (unless pieces are given) */
	size_t		in_len;
	Piece		pieces[MAX_PIECES]; /* explicit feeds; run as given too */
	int			script_only;	/* pieces contain FINISH: no re-splitting */
	size_t		max;			/* max_event_size; 0 = no cap */
	int			status;			/* expected first non-zero SseFeed result */
	int			stop_after;		/* callback stops on this event */
	int			check_retry;	/* compare SseRetry with retry */
	long		retry;
	int			line_end_variants;	/* rerun with CRLF and CR line ends */
	int			nev;
	ExpEvent	ev[MAX_EVENTS];
} Vector;

/* helpers that keep the byte length of literals with embedded NULs */
#define IN(lit) .in = (lit), .in_len = sizeof(lit) - 1
#define P(lit) { (lit), sizeof(lit) - 1 }
#define PFINISH { NULL, FINISH }
#define E(type, lit, id) { (type), (lit), sizeof(lit) - 1, (id) }
#define M(lit) E("message", lit, "")
#define RETRY(x) .check_retry = 1, .retry = (x)
#define FFFD "\xEF\xBF\xBD"

/* a realistic OpenAI stream: PROTOCOLS.md section 1.4 */
#define OAI1 "{\"id\":\"chatcmpl-X\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}"
#define OAI2 "{\"id\":\"chatcmpl-X\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}"
#define OAI3 "{\"id\":\"chatcmpl-X\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}"
#define OAI4 "{\"id\":\"chatcmpl-X\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}"
#define OPENAI_STREAM \
	"data: " OAI1 "\n\n" \
	"data: " OAI2 "\n\n" \
	"data: " OAI3 "\n\n" \
	"data: " OAI4 "\n\n" \
	"data: [DONE]\n\n"

/* a realistic Anthropic stream, with a ping and a keep-alive comment */
#define ANT1 "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-x\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}"
#define ANT2 "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}"
#define ANT3 "{\"type\": \"ping\"}"
#define ANT4 "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}"
#define ANT5 "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" w\xC3\xB6rld \xF0\x9F\x8E\x89\"}}"
#define ANT6 "{\"type\":\"content_block_stop\",\"index\":0}"
#define ANT7 "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}"
#define ANT8 "{\"type\":\"message_stop\"}"
#define ANTHROPIC_STREAM \
	"event: message_start\ndata: " ANT1 "\n\n" \
	"event: content_block_start\ndata: " ANT2 "\n\n" \
	"event: ping\ndata: " ANT3 "\n\n" \
	"event: content_block_delta\ndata: " ANT4 "\n\n" \
	": keep-alive\n\n" \
	"event: content_block_delta\ndata: " ANT5 "\n\n" \
	"event: content_block_stop\ndata: " ANT6 "\n\n" \
	"event: message_delta\ndata: " ANT7 "\n\n" \
	"event: message_stop\ndata: " ANT8 "\n\n"

static const Vector vectors[] = {
	/* PROTOCOLS.md section 4, in order */
	{.name = "basic", IN("data: a\n\n"), .nev = 1, .ev = {M("a")}},
	{.name = "crlf", IN("data:a\r\n\r\n"), .nev = 1, .ev = {M("a")}},
	{.name = "lone cr", IN("data: a\r\rdata: b\r\r"), .nev = 2,
	.ev = {M("a"), M("b")}},
	{.name = "partial event at eof", IN("data: a\n")},
	{.name = "comment", IN(": keep-alive\n\ndata: x\n\n"), .nev = 1,
	.ev = {M("x")}},
	{.name = "multi-line data", IN("data: l1\ndata: l2\n\n"), .nev = 1,
	.ev = {M("l1\nl2")}},
	{.name = "one space removed", IN("data:  two-spaces\n\n"), .nev = 1,
	.ev = {M(" two-spaces")}},
	{.name = "bare data", IN("data\n\n"), .nev = 1, .ev = {M("")}},
	{.name = "event type", IN("event: ping\ndata: {}\n\n"), .nev = 1,
	.ev = {E("ping", "{}", "")}},
	{.name = "bom", IN("\xEF\xBB\xBF" "data: bom\n\n"), .nev = 1,
	.ev = {M("bom")}},
	{.name = "utf8 e-acute and emoji",
		IN("data: \xC3\xA9\xF0\x9F\x8E\x89\n\n"), .nev = 1,
	.ev = {M("\xC3\xA9\xF0\x9F\x8E\x89")}},
	{.name = "crlf split across reads", .pieces = {P("data: a\r"), P("\n\r\n")},
	.nev = 1, .ev = {M("a")}},

	/* line ends */
	{.name = "cr then lf is one line end", IN("data: a\r\ndata: b\r\n\r\n"),
	.nev = 1, .ev = {M("a\nb")}},
	{.name = "lf then cr is two line ends", IN("data: a\n\rdata: b\n\n"),
	.nev = 2, .ev = {M("a"), M("b")}},
	{.name = "cr at end of read, data follows",
		.pieces = {P("data: a\r"), P("data: b\r\r")},
	.nev = 1, .ev = {M("a\nb")}},
	{.name = "cr at end of read, then empty read",
		.pieces = {P("data: a\r"), P(""), P("\n"), P("\n")},
	.nev = 1, .ev = {M("a")}},
	{.name = "cr cr lf", IN("data: a\r\r\n"), .nev = 1, .ev = {M("a")}},
	{.name = "mixed line ends", IN("data: a\ndata: b\rdata: c\r\n\n"),
	.nev = 1, .ev = {M("a\nb\nc")}},
	{.name = "only blank lines", IN("\n\n\r\n\r\r\n")},

	/* BOM */
	{.name = "bom split across reads",
		.pieces = {P("\xEF"), P("\xBB"), P("\xBF" "da"), P("ta: x\n\n")},
	.nev = 1, .ev = {M("x")}},
	{.name = "bom only at start (second bom stays)",
		IN("\xEF\xBB\xBF\xEF\xBB\xBF" "data: x\n\ndata: y\n\n"),
	.nev = 1, .ev = {M("y")}},
	{.name = "bom inside data stays", IN("data: \xEF\xBB\xBFx\n\n"), .nev = 1,
	.ev = {M("\xEF\xBB\xBFx")}},
	{.name = "bom after first line stays",
		IN("data: a\n\n\xEF\xBB\xBF" "data: b\n\ndata: c\n\n"),
	.nev = 2, .ev = {M("a"), M("c")}},
	{.name = "broken bom prefix is content", IN("\xEF\xBB" "data: x\n\n")},
	{.name = "broken bom then line", IN("\xEF\n" "data: x\n\n"), .nev = 1,
	.ev = {M("x")}},
	{.name = "bom only", IN("\xEF\xBB\xBF")},
	{.name = "bom prefix only", IN("\xEF\xBB")},

	/* fields */
	{.name = "field without space", IN("data:x\n\n"), .nev = 1, .ev = {M("x")}},
	{.name = "colon in value", IN("data: a:b: c\n\n"), .nev = 1,
	.ev = {M("a:b: c")}},
	{.name = "empty value with colon", IN("data:\ndata:\n\n"), .nev = 1,
	.ev = {M("\n")}},
	{.name = "trailing space kept", IN("data: a \n\n"), .nev = 1,
	.ev = {M("a ")}},
	{.name = "tab not stripped", IN("data:\ta\n\n"), .nev = 1,
	.ev = {M("\ta")}},
	{.name = "comment inside event", IN("data: a\n:c\ndata: b\n\n"), .nev = 1,
	.ev = {M("a\nb")}},
	{.name = "empty comment", IN(":\n\ndata: a\n\n"), .nev = 1, .ev = {M("a")}},
	{.name = "unknown field ignored", IN("foo: bar\ndata: a\n\n"), .nev = 1,
	.ev = {M("a")}},
	{.name = "Data is not data", IN("Data: x\n\n")},
	{.name = "data space colon is unknown", IN("data : x\n\n")},
	{.name = "event without data not dispatched",
		IN("event: e\n\ndata: a\n\n"), .nev = 1, .ev = {M("a")}},
	{.name = "empty event type means message", IN("event:\ndata: a\n\n"),
	.nev = 1, .ev = {M("a")}},
	{.name = "last event line wins", IN("event: a\nevent: b\ndata: x\n\n"),
	.nev = 1, .ev = {E("b", "x", "")}},
	{.name = "event type reset after dispatch",
		IN("event: e\ndata: a\n\ndata: b\n\n"), .nev = 2,
	.ev = {E("e", "a", ""), M("b")}},
	{.name = "nul in data kept", IN("data: a\0b\n\n"), .nev = 1,
	.ev = {M("a\0b")}},

	/* id */
	{.name = "id persists across events",
		IN("id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n"), .nev = 3,
	.ev = {E("message", "a", "1"), E("message", "b", "1"),
	E("message", "c", "2")}},
	{.name = "id with nul ignored",
		IN("id: 1\ndata: a\n\nid: x\0y\ndata: b\n\n"), .nev = 2,
	.ev = {E("message", "a", "1"), E("message", "b", "1")}},
	{.name = "bare id clears it", IN("id: 1\ndata: a\n\nid\ndata: b\n\n"),
	.nev = 2, .ev = {E("message", "a", "1"), M("b")}},
	{.name = "id set without data still persists",
		IN("id: 7\n\ndata: a\n\n"), .nev = 1, .ev = {E("message", "a", "7")}},
	{.name = "id applies to event in progress", IN("data: a\nid: 3\n\n"),
	.nev = 1, .ev = {E("message", "a", "3")}},

	/* retry */
	{.name = "retry digits", IN("retry: 1000\n"), RETRY(1000)},
	{.name = "retry with letter ignored", IN("retry: 10a0\n"), RETRY(-1)},
	{.name = "retry keeps last valid", IN("retry: 1000\nretry: 10a0\n"),
	RETRY(1000)},
	{.name = "retry empty ignored", IN("retry:\nretry: \n"), RETRY(-1)},
	{.name = "retry with sign ignored", IN("retry: -5\nretry: +5\n"),
	RETRY(-1)},
	{.name = "retry with two spaces ignored", IN("retry:  5\n"), RETRY(-1)},
	{.name = "retry zero", IN("retry: 0\n"), RETRY(0)},
	{.name = "retry clamped", IN("retry: 99999999999999999999999999\n"),
	RETRY(LONG_MAX)},
	{.name = "retry is not an event", IN("retry: 5\n\n"), RETRY(5)},

	/* UTF-8 decoding with U+FFFD for each maximal subpart */
	{.name = "invalid byte", IN("data: a\xFF" "b\n\n"), .nev = 1,
	.ev = {M("a" FFFD "b")}},
	{.name = "lone continuation", IN("data: \x80\n\n"), .nev = 1,
	.ev = {M(FFFD)}},
	{.name = "truncated 3-byte at end", IN("data: \xE2\x82\n\n"), .nev = 1,
	.ev = {M(FFFD)}},
	{.name = "truncated 3-byte before ascii", IN("data: \xE2\x82x\n\n"),
	.nev = 1, .ev = {M(FFFD "x")}},
	{.name = "truncated 4-byte", IN("data: \xF0\x9F\x8E\n\n"), .nev = 1,
	.ev = {M(FFFD)}},
	{.name = "overlong C0 AF", IN("data: \xC0\xAF\n\n"), .nev = 1,
	.ev = {M(FFFD FFFD)}},
	{.name = "overlong E0 80 80", IN("data: \xE0\x80\x80\n\n"), .nev = 1,
	.ev = {M(FFFD FFFD FFFD)}},
	{.name = "surrogate ED A0 80", IN("data: \xED\xA0\x80\n\n"), .nev = 1,
	.ev = {M(FFFD FFFD FFFD)}},
	{.name = "above U+10FFFF", IN("data: \xF4\x90\x80\x80\n\n"), .nev = 1,
	.ev = {M(FFFD FFFD FFFD FFFD)}},
	{.name = "F5 lead", IN("data: \xF5\x80\n\n"), .nev = 1,
	.ev = {M(FFFD FFFD)}},
	{.name = "largest code points valid",
		IN("data: \xF4\x8F\xBF\xBF\xED\x9F\xBF\xEE\x80\x80\n\n"), .nev = 1,
	.ev = {M("\xF4\x8F\xBF\xBF\xED\x9F\xBF\xEE\x80\x80")}},
	{.name = "unicode table 3-8 example",
		IN("data: \x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64\n\n"),
		.nev = 1,
	.ev = {M("a" FFFD FFFD FFFD "b" FFFD "c" FFFD FFFD "d")}},
	{.name = "invalid byte in event type and id",
		IN("event: t\xFF\nid: i\xC3\ndata: d\n\n"), .nev = 1,
	.ev = {E("t" FFFD, "d", "i" FFFD)}},
	{.name = "invalid byte in field name", IN("dat\xE1: x\n\n")},
	{.name = "truncated sequence before line end across lines",
		IN("data: \xC3\ndata: \xA9\n\n"), .nev = 1,
	.ev = {M(FFFD "\n" FFFD)}},
	{.name = "long ascii run then invalid",
		IN("data: 0123456789abcdef0123456789abcdef\xFF" "0123456789\n\n"),
		.nev = 1, .ev = {M("0123456789abcdef0123456789abcdef" FFFD "0123456789")}},

	/* size cap: line bytes plus pending data bytes */
	{.name = "cap: line exactly at cap", IN("data: 1234\n\n"), .max = 10,
	.nev = 1, .ev = {M("1234")}},
	{.name = "cap: line one over", IN("data: 12345\n\n"), .max = 10,
	.status = SSE_ERR_TOO_BIG},
	{.name = "cap: events before the error are delivered",
		IN("data: a\n\ndata: 123456789\n\ndata: b\n\n"), .max = 10,
		.status = SSE_ERR_TOO_BIG, .nev = 1, .ev = {M("a")}},
	{.name = "cap: pending data counts", IN("data: 12\ndata: 12\n\n"),
	.max = 11, .nev = 1, .ev = {M("12\n12")}},
	{.name = "cap: pending data counts, one over", IN("data: 12\ndata: 123\n\n"),
	.max = 11, .status = SSE_ERR_TOO_BIG},
	{.name = "cap: unterminated line", IN("data: 12345"), .max = 10,
	.status = SSE_ERR_TOO_BIG},
	{.name = "cap: comments count too", IN(": 12345678901\ndata: a\n\n"),
	.max = 10, .status = SSE_ERR_TOO_BIG},
	{.name = "cap: replacement growth counts",
		IN("data: \xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\n\n"), .max = 20,
	.status = SSE_ERR_TOO_BIG},
	{.name = "cap: replacement growth within cap",
		IN("data: \xFF\xFF\xFF\xFF\xFF\n\n"), .max = 20, .nev = 1,
	.ev = {M(FFFD FFFD FFFD FFFD FFFD)}},
	{.name = "cap: bom not counted", IN("\xEF\xBB\xBF" "data: 1234\n\n"),
	.max = 10, .nev = 1, .ev = {M("1234")}},
	{.name = "cap: broken bom bytes count", IN("\xEF\xBB" "x\n"), .max = 2,
	.status = SSE_ERR_TOO_BIG},
	{.name = "cap: broken bom bytes within cap", IN("\xEF\xBB" "\n"),
	.max = 2},

	/* callback stop */
	{.name = "callback stop propagated",
		IN("data: a\n\ndata: b\n\ndata: c\n\n"), .stop_after = 2,
		.status = 7, .nev = 2, .ev = {M("a"), M("b")}},

	/* SseFinish: partial events discarded, new stream starts */
	{.name = "finish discards partial event",
		.pieces = {P("data: a\n"), PFINISH, P("\n"), P("data: b\n\n")},
		.script_only = 1, .nev = 1, .ev = {M("b")}},
	{.name = "finish discards partial line",
		.pieces = {P("data: a\n\ndata: xy"), PFINISH, P("z\n\n")},
		.script_only = 1, .nev = 1, .ev = {M("a")}},
	{.name = "finish drops event type",
		.pieces = {P("event: e\n"), PFINISH, P("data: a\n\n")},
		.script_only = 1, .nev = 1, .ev = {M("a")}},
	{.name = "finish: next stream strips its bom, keeps id",
		.pieces = {P("id: 9\ndata: a\n\n"), PFINISH,
		P("\xEF\xBB\xBF" "data: b\n\n")},
		.script_only = 1, .nev = 2,
	.ev = {E("message", "a", "9"), E("message", "b", "9")}},
	{.name = "finish with a pending cr",
		.pieces = {P("data: a\r"), PFINISH, P("\ndata: b\n\n")},
		.script_only = 1, .nev = 1, .ev = {M("b")}},

	/* realistic streams; also run with CRLF and CR line ends below */
	{.name = "openai stream", IN(OPENAI_STREAM), .line_end_variants = 1,
		.nev = 5,
	.ev = {M(OAI1), M(OAI2), M(OAI3), M(OAI4), M("[DONE]")}},
	{.name = "anthropic stream", IN(ANTHROPIC_STREAM),
		.line_end_variants = 1, .nev = 8,
		.ev = {E("message_start", ANT1, ""),
			E("content_block_start", ANT2, ""), E("ping", ANT3, ""),
			E("content_block_delta", ANT4, ""),
			E("content_block_delta", ANT5, ""),
			E("content_block_stop", ANT6, ""),
			E("message_delta", ANT7, ""),
	E("message_stop", ANT8, "")}},
};

#define NVECTORS (sizeof(vectors) / sizeof(vectors[0]))

/*
 * Run state of one parse: the recorder plus sticky-status bookkeeping.
 */
typedef struct Run
{
	SseParser	p;
	Recorder	rec;
	int			status;			/* first non-zero SseFeed result */
	int			unsticky;		/* a later call returned something else */
} Run;

static void
run_init(Run *r, const Vector *v)
{
	memset(r, 0, sizeof(*r));
	SseInit(&r->p, v->max, record, &r->rec);
	r->rec.stop_after = v->stop_after;
	r->rec.stop_value = 7;
}

static void
run_feed(Run *r, const char *s, size_t n)
{
	int			rc = SseFeed(&r->p, s, n);

	if (r->status == 0)
		r->status = rc;
	else if (rc != r->status)
		r->unsticky = 1;
}

/*
 * expected_events
 *		Serialize a vector's expected events the way record() does.
 */
static void
expected_events(const Vector *v, Str *out)
{
	int			i;

	for (i = 0; i < v->nev; i++)
		serialize_event(out, v->ev[i].type, strlen(v->ev[i].type),
						v->ev[i].data, v->ev[i].data_len, v->ev[i].id);
}

/*
 * check_run
 *		Compare one finished run with the vector's expectations.  One call
 *		is one test case; "count" is 0 inside a sweep, which counts itself
 *		once.  Returns 1 on a match.
 */
static int
check_run(const Vector *v, const char *mode, Run *r, const Str *exp,
		  int count)
{
	int			same_events;
	int			same_retry;

	same_events = exp->len == r->rec.out.len &&
		(exp->len == 0 || memcmp(exp->s, r->rec.out.s, exp->len) == 0);
	same_retry = !v->check_retry || v->retry == SseRetry(&r->p);
	if (same_events && same_retry && v->status == r->status &&
		!r->unsticky && !r->rec.broken)
	{
		npassed += count;
		return 1;
	}

	nfailed++;
	printf("FAIL %s (%s)\n", v->name, mode);
	if (!same_events)
		printf("  expected: %s\n  actual:   %s\n",
			   exp->len ? exp->s : "(no events)",
			   r->rec.out.len ? r->rec.out.s : "(no events)");
	if (v->status != r->status)
		printf("  status expected: %d\n  status actual:   %d\n",
			   v->status, r->status);
	if (!same_retry)
		printf("  retry expected: %ld\n  retry actual:   %ld\n",
			   v->retry, SseRetry(&r->p));
	if (r->unsticky)
		printf("  a non-zero SseFeed result was not sticky\n");
	if (r->rec.broken)
		printf("  an event broke the SseEvent contract\n");
	return 0;
}

/*
 * run_pieces
 *		Feed a vector's explicit pieces; a FINISH piece calls SseFinish.
 */
static void
run_pieces(Run *r, const Vector *v)
{
	int			i;

	for (i = 0; i < MAX_PIECES; i++)
	{
		if (v->pieces[i].n == FINISH)
			SseFinish(&r->p);
		else if (v->pieces[i].s == NULL)
			break;
		else
			run_feed(r, v->pieces[i].s, v->pieces[i].n);
	}
}

/*
 * run_free
 *		Release a run's parser and recording.
 */
static void
run_free(Run *r)
{
	SseFree(&r->p);
	str_free(&r->rec.out);
}

/*
 * run_vector
 *		Run one vector as its explicit pieces (if any), then fed whole, byte
 *		by byte, and split in two at every position.
 */
static void
run_vector(const Vector *v, const char *in, size_t in_len)
{
	Str			exp = {0};
	Run			r;
	size_t		i;
	char		mode[64];

	expected_events(v, &exp);

	if (v->pieces[0].s != NULL)
	{
		run_init(&r, v);
		run_pieces(&r, v);
		SseFinish(&r.p);
		check_run(v, "as scripted", &r, &exp, 1);
		run_free(&r);
	}
	if (v->script_only)
	{
		str_free(&exp);
		return;
	}

	/* (a) whole */
	run_init(&r, v);
	run_feed(&r, in, in_len);
	SseFinish(&r.p);
	check_run(v, "whole", &r, &exp, 1);
	run_free(&r);

	/* (b) one byte at a time */
	run_init(&r, v);
	for (i = 0; i < in_len; i++)
		run_feed(&r, in + i, 1);
	SseFinish(&r.p);
	check_run(v, "one byte at a time", &r, &exp, 1);
	run_free(&r);

	/*
	 * (c) two feeds, split at every position including both ends (so empty
	 * feeds too).  One parser is reused through SseReset, which is part of
	 * what is tested.  The sweep is one case; it stops at the first failure.
	 */
	run_init(&r, v);
	for (i = 0; i <= in_len; i++)
	{
		run_feed(&r, in, i);
		run_feed(&r, in + i, in_len - i);
		SseFinish(&r.p);
		snprintf(mode, sizeof(mode), "split at %zu of %zu", i, in_len);
		if (!check_run(v, mode, &r, &exp, 0))
			break;
		SseReset(&r.p);
		r.status = 0;
		r.unsticky = 0;
		r.rec.nevents = 0;
		r.rec.out.len = 0;
	}
	if (i > in_len)
		npassed++;
	run_free(&r);
	str_free(&exp);
}

/*
 * pieces_input
 *		Concatenate a vector's explicit pieces into its whole input.
 */
static void
pieces_input(const Vector *v, Str *out)
{
	int			i;

	for (i = 0; i < MAX_PIECES; i++)
	{
		if (v->pieces[i].n == FINISH)
			continue;
		if (v->pieces[i].s == NULL)
			break;
		str_add(out, v->pieces[i].s, v->pieces[i].n);
	}
}

/*
 * convert_line_ends
 *		Rewrite every LF of src as "\r\n" or "\r", to rerun the realistic
 *		streams with the other two line-end styles.
 */
static void
convert_line_ends(const char *src, size_t n, const char *eol, Str *out)
{
	size_t		i;

	for (i = 0; i < n; i++)
	{
		if (src[i] == '\n')
			str_add(out, eol, strlen(eol));
		else
			str_add(out, src + i, 1);
	}
}

static void
test_vectors(void)
{
	size_t		k;

	for (k = 0; k < NVECTORS; k++)
	{
		const Vector *v = &vectors[k];
		Str			in = {0};

		if (v->pieces[0].s != NULL)
			pieces_input(v, &in);
		else
			str_add(&in, v->in, v->in_len);
		run_vector(v, in.s, in.len);

		if (v->line_end_variants)
		{
			Str			crlf = {0};
			Str			cr = {0};

			convert_line_ends(in.s, in.len, "\r\n", &crlf);
			convert_line_ends(in.s, in.len, "\r", &cr);
			run_vector(v, crlf.s, crlf.len);
			run_vector(v, cr.s, cr.len);
			str_free(&crlf);
			str_free(&cr);
		}
		str_free(&in);
	}
}

/* ----------------------------------------------------------------------
 * Tests that do not fit a table row
 * ---------------------------------------------------------------------- */

/*
 * test_multibyte_every_split
 *		é and 🎉 split at every byte inside the character, in the data and
 *		in the event type.
 */
static void
test_multibyte_every_split(void)
{
	static const char in[] = "event: \xC3\xA9\ndata: \xF0\x9F\x8E\x89\xC3\xA9\n\n";
	Str			exp = {0};
	size_t		a;
	size_t		b;
	int			ok = 1;

	serialize_event(&exp, "\xC3\xA9", 2, "\xF0\x9F\x8E\x89\xC3\xA9", 6, "");

	/* three feeds, cut at every pair of positions */
	for (a = 0; a < sizeof(in) - 1 && ok; a++)
	{
		for (b = a; b < sizeof(in) - 1 && ok; b++)
		{
			Recorder	rec = {0};
			SseParser	p;

			SseInit(&p, 0, record, &rec);
			SseFeed(&p, in, a);
			SseFeed(&p, in + a, b - a);
			SseFeed(&p, in + b, sizeof(in) - 1 - b);
			SseFinish(&p);
			if (rec.out.len != exp.len ||
				memcmp(rec.out.s, exp.s, exp.len) != 0)
			{
				char		mode[64];

				snprintf(mode, sizeof(mode), "cuts at %zu and %zu", a, b);
				ok = check_str("multibyte three-way split", mode, &exp,
							   &rec.out);
			}
			SseFree(&p);
			str_free(&rec.out);
		}
	}
	if (ok)
		npassed++;
	str_free(&exp);
}

/*
 * test_reset_after_error
 *		TOO_BIG is sticky until SseReset, after which the same parser and
 *		buffers work again.
 */
static void
test_reset_after_error(void)
{
	Recorder	rec = {0};
	SseParser	p;
	Str			exp = {0};

	SseInit(&p, 10, record, &rec);
	check_long("cap error", "first feed", SSE_ERR_TOO_BIG,
			   SseFeed(&p, "data: 12345\n\n", 13));
	check_long("cap error", "sticky", SSE_ERR_TOO_BIG,
			   SseFeed(&p, "data: 1\n\n", 9));
	check_long("cap error", "sticky across finish", SSE_ERR_TOO_BIG,
			   (SseFinish(&p), SseFeed(&p, "data: 1\n\n", 9)));
	SseReset(&p);
	check_long("cap error", "after reset", SSE_OK,
			   SseFeed(&p, "data: 1234\n\n", 12));
	serialize_event(&exp, "message", 7, "1234", 4, "");
	check_str("cap error", "event after reset", &exp, &rec.out);
	SseFree(&p);
	str_free(&rec.out);
	str_free(&exp);
}

/*
 * test_stop_then_reset
 *		A callback's stop value is sticky too, and SseReset clears it.
 */
static void
test_stop_then_reset(void)
{
	Recorder	rec = {0};
	SseParser	p;

	rec.stop_after = 1;
	rec.stop_value = 42;
	SseInit(&p, 0, record, &rec);
	check_long("callback stop", "returned", 42,
			   SseFeed(&p, "data: a\n\ndata: b\n\n", 18));
	check_long("callback stop", "events", 1, rec.nevents);
	check_long("callback stop", "sticky", 42, SseFeed(&p, "data: c\n\n", 9));
	check_long("callback stop", "no event after stop", 1, rec.nevents);
	SseReset(&p);
	check_long("callback stop", "after reset", SSE_OK,
			   SseFeed(&p, "data: d\n\n", 9));
	check_long("callback stop", "events after reset", 2, rec.nevents);
	SseFree(&p);
	str_free(&rec.out);
}

/*
 * test_reset_clears_id_and_retry
 *		Unlike SseFinish, SseReset also forgets the last event id and the
 *		retry value, and a partial line must not leak into the next stream.
 */
static void
test_reset_clears_id_and_retry(void)
{
	Recorder	rec = {0};
	SseParser	p;
	Str			exp = {0};

	SseInit(&p, 0, record, &rec);
	SseFeed(&p, "id: 5\nretry: 300\nevent: e\ndata: par", 35);
	check_long("reset", "retry before", 300, SseRetry(&p));
	SseReset(&p);
	check_long("reset", "retry after", -1, SseRetry(&p));
	SseFeed(&p, "data: x\n\n", 9);
	serialize_event(&exp, "message", 7, "x", 1, "");
	check_str("reset", "id, type and partial line cleared", &exp, &rec.out);
	SseFree(&p);
	str_free(&rec.out);
	str_free(&exp);
}

/*
 * test_big_line
 *		A 1 MB data line fed in 4 KB pieces arrives intact as one event.
 */
static void
test_big_line(void)
{
	const size_t payload = 1024 * 1024;
	const size_t total = 6 + payload + 2;
	char	   *in = malloc(total);
	Recorder	rec = {0};
	SseParser	p;
	size_t		i;
	int			rc = 0;
	int			ok;

	if (in == NULL)
		exit(2);
	memcpy(in, "data: ", 6);
	for (i = 0; i < payload; i++)
		in[6 + i] = (char) ('a' + i % 26);
	in[6 + payload] = '\n';
	in[7 + payload] = '\n';

	SseInit(&p, 8 * 1024 * 1024, record, &rec);
	for (i = 0; i < total && rc == 0; i += 4096)
		rc = SseFeed(&p, in + i, total - i < 4096 ? total - i : 4096);
	SseFinish(&p);
	check_long("1 MB line", "status", SSE_OK, rc);
	check_long("1 MB line", "events", 1, rec.nevents);

	/* the serialization of pure letters is the payload itself */
	ok = rec.out.len == payload + 11 &&
		memcmp(rec.out.s + 9, in + 6, payload) == 0;
	check_long("1 MB line", "payload intact", 1, ok);
	free(in);
	SseFree(&p);
	str_free(&rec.out);
}

/*
 * test_nomem
 *		Fail each allocation in turn: SseFeed must report SSE_ERR_NOMEM,
 *		stay in that state, leak nothing, and work again after SseReset.
 */
static void
test_nomem(void)
{
#define X50 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define X300 X50 X50 X50 X50 X50 X50
	static const char in[] =
		"\xEF\xBB" "\n"				/* held-back BOM bytes: line buffer */
		"event: t\xFF\nid: \xC3\n"	/* type and id, with replacement */
		"data: \xFF\n"				/* data, with replacement */
		"data: " X300 "\n"			/* data buffer grows */
		"data: partial line " X300;	/* line buffer grows */
	static const char rest[] = "that goes on\n\n";
	long		ncalls;
	long		k;
	int			ok = 1;
	int			saw_nomem = 0;

	/* count the allocations a clean run makes */
	{
		Recorder	rec = {0};
		SseParser	p;

		alloc_calls = 0;
		alloc_fail_at = -1;
		SseInit(&p, 0, record, &rec);
		SseFeed(&p, in, sizeof(in) - 1);
		SseFeed(&p, rest, sizeof(rest) - 1);
		ncalls = alloc_calls;
		SseFree(&p);
		str_free(&rec.out);
	}
	check_long("nomem", "allocations happen", 1, ncalls >= 6);

	for (k = 0; k < ncalls; k++)
	{
		Recorder	rec = {0};
		SseParser	p;
		int			rc1;
		int			rc2;

		alloc_calls = 0;
		alloc_fail_at = k;
		SseInit(&p, 0, record, &rec);
		rc1 = SseFeed(&p, in, sizeof(in) - 1);
		rc2 = SseFeed(&p, rest, sizeof(rest) - 1);
		if (rc1 == SSE_ERR_NOMEM || rc2 == SSE_ERR_NOMEM)
			saw_nomem++;
		if (rc1 != SSE_OK && rc1 != SSE_ERR_NOMEM)
			ok = 0;
		if (rc1 == SSE_ERR_NOMEM && rc2 != SSE_ERR_NOMEM)
			ok = 0;				/* not sticky */
		if (rc2 != SSE_OK && rc2 != SSE_ERR_NOMEM)
			ok = 0;
		if (rc2 == SSE_OK && rec.nevents != 1)
			ok = 0;				/* a failure was swallowed */

		/* recovery on the same parser, buffers kept */
		alloc_fail_at = -1;
		SseReset(&p);
		rec.nevents = 0;
		if (SseFeed(&p, "data: ok\n\n", 10) != SSE_OK || rec.nevents != 1)
			ok = 0;
		SseFree(&p);
		SseFree(&p);			/* twice is allowed */
		str_free(&rec.out);
	}
	alloc_fail_at = -1;
	check_long("nomem", "every failure reported as SSE_ERR_NOMEM", 1, ok);
	check_long("nomem", "every allocation site reached", ncalls, saw_nomem);
}

/*
 * test_free_zeroed
 *		SseFree on a zeroed struct is a no-op; a NULL callback is allowed.
 */
static void
test_free_zeroed(void)
{
	SseParser	p;

	memset(&p, 0, sizeof(p));
	SseFree(&p);
	SseInit(&p, 0, NULL, NULL);
	check_long("null callback", "feed", SSE_OK,
			   SseFeed(&p, "retry: 7\ndata: a\n\n", 18));
	check_long("null callback", "retry", 7, SseRetry(&p));
	check_long("empty feed", "NULL buffer, length 0", SSE_OK,
			   SseFeed(&p, NULL, 0));
	SseFree(&p);
	SseFree(&p);
	npassed++;
}

/* ----------------------------------------------------------------------
 * Seed corpus for the fuzzer
 * ---------------------------------------------------------------------- */

/*
 * write_seed
 *		One seed file: fuzz_sse's two control bytes, then the stream.
 */
static int
write_seed(const char *dir, int n, const char *ctl, const char *s, size_t len)
{
	char		path[4096];
	FILE	   *f;

	snprintf(path, sizeof(path), "%s/seed-%03d", dir, n);
	f = fopen(path, "wb");
	if (f == NULL)
		return -1;
	if (fwrite(ctl, 1, 2, f) != 2 || (len > 0 && fwrite(s, 1, len, f) != len))
	{
		fclose(f);
		return -1;
	}
	return fclose(f) == 0 ? 0 : -1;
}

/*
 * write_corpus
 *		Every vector, twice: fed whole with no cap, and split in small
 *		pieces with a small cap (see fuzz_sse.c for the control bytes).
 */
static int
write_corpus(const char *dir)
{
	size_t		k;
	int			n = 0;

	for (k = 0; k < NVECTORS; k++)
	{
		const Vector *v = &vectors[k];
		Str			in = {0};
		int			rc;

		if (v->pieces[0].s != NULL)
			pieces_input(v, &in);
		else
			str_add(&in, v->in, v->in_len);
		rc = write_seed(dir, n++, "\x00\x00", in.s, in.len);
		if (rc == 0)
			rc = write_seed(dir, n++, "\x45\x5A", in.s, in.len);
		str_free(&in);
		if (rc != 0)
		{
			fprintf(stderr, "test_sse: cannot write seed in %s\n", dir);
			return 1;
		}
	}
	printf("%d seeds written to %s\n", n, dir);
	return 0;
}

int
main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
		return write_corpus(argv[2]);
	if (argc != 1)
	{
		fprintf(stderr, "usage: %s [--write-corpus DIR]\n", argv[0]);
		return 2;
	}

	test_vectors();
	test_multibyte_every_split();
	test_reset_after_error();
	test_stop_then_reset();
	test_reset_clears_id_and_retry();
	test_big_line();
	test_nomem();
	test_free_zeroed();

	printf("%d passed, %d failed\n", npassed, nfailed);
	return nfailed > 0 ? 1 : 0;
}
