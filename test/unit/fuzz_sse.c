/*-------------------------------------------------------------------------
 *
 * fuzz_sse.c
 *	  libFuzzer target for the SSE parser (src/sse.c).
 *
 * This file owns the parser's fuzzing invariants.  One input is parsed four
 * ways: by a deliberately naive reference model of WHATWG HTML 9.2.6 written
 * straight from the spec's prose (byte-by-byte UTF-8 decoder, whole input at
 * once), and by SseFeed fed whole, fed in pseudo-random pieces (some empty)
 * and fed one byte at a time.  All four must produce the same events (type,
 * data, id, order), the same final status and the same retry value.  Every
 * event must also keep the SseEvent contract: well-formed UTF-8, NUL
 * terminators, data no longer than the cap.  A broken invariant calls
 * __builtin_trap so libFuzzer records a crash.  It must not depend on
 * anything but libc and sse.c.
 *
 * Input layout (test_sse --write-corpus writes seeds in this form):
 *	  byte 0, bits 0-2: cap: none, 4, 8, 16, 32, 64, 256 or 1024 bytes
 *	  byte 0, bits 3-4: callback stops after event 1-3 (0: never)
 *	  byte 0, bits 5-7: longest piece: 1, 2, 3, 5, 8, 16, 64 or 512 bytes
 *	  byte 1:           seed of the piece-length generator
 *	  the rest:         the event stream
 *
 * test/unit/fuzz_sse.c
 *
 *-------------------------------------------------------------------------
 */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sse.h"

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

#define STOP_VALUE 5

static const size_t caps[8] = {0, 4, 8, 16, 32, 64, 256, 1024};
static const size_t piece_max[8] = {1, 2, 3, 5, 8, 16, 64, 512};

/* ----------------------------------------------------------------------
 * Byte buffers and the event log
 * ---------------------------------------------------------------------- */

typedef struct Buf
{
	unsigned char *b;
	size_t		len;
	size_t		cap;
} Buf;

static void
buf_add(Buf *b, const void *s, size_t n)
{
	if (b->len + n > b->cap)
	{
		size_t		cap = b->cap ? b->cap : 256;

		while (cap < b->len + n)
			cap *= 2;
		b->b = realloc(b->b, cap);
		CHECK(b->b != NULL);
		b->cap = cap;
	}
	if (n > 0)
		memcpy(b->b + b->len, s, n);
	b->len += n;
}

static void
buf_add_byte(Buf *b, unsigned char c)
{
	buf_add(b, &c, 1);
}

/*
 * log_event
 *		Append one event as length-prefixed fields, so that two logs are
 *		equal exactly when the event sequences are.
 */
static void
log_event(Buf *log, const void *type, size_t type_len,
		  const void *data, size_t data_len, const void *id, size_t id_len)
{
	buf_add(log, &type_len, sizeof(type_len));
	buf_add(log, type, type_len);
	buf_add(log, &data_len, sizeof(data_len));
	buf_add(log, data, data_len);
	buf_add(log, &id_len, sizeof(id_len));
	buf_add(log, id, id_len);
}

static int
same_buf(const Buf *a, const Buf *b)
{
	return a->len == b->len && (a->len == 0 || memcmp(a->b, b->b, a->len) == 0);
}

/* ----------------------------------------------------------------------
 * Independent UTF-8 code
 * ---------------------------------------------------------------------- */

/*
 * valid_utf8
 *		Well-formedness by code point value (shortest form, no surrogates,
 *		at most U+10FFFF), a different method from sse.c's byte ranges.
 */
static int
valid_utf8(const unsigned char *s, size_t n)
{
	size_t		i = 0;

	while (i < n)
	{
		unsigned char c = s[i];
		uint32_t	cp;
		uint32_t	min;
		size_t		len;
		size_t		k;

		if (c < 0x80)
		{
			i++;
			continue;
		}
		if ((c & 0xE0) == 0xC0)
			len = 2, cp = c & 0x1F, min = 0x80;
		else if ((c & 0xF0) == 0xE0)
			len = 3, cp = c & 0x0F, min = 0x800;
		else if ((c & 0xF8) == 0xF0)
			len = 4, cp = c & 0x07, min = 0x10000;
		else
			return 0;
		if (n - i < len)
			return 0;
		for (k = 1; k < len; k++)
		{
			if ((s[i + k] & 0xC0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return 0;
		i += len;
	}
	return 1;
}

static void
emit_cp(Buf *out, uint32_t cp)
{
	if (cp < 0x80)
		buf_add_byte(out, (unsigned char) cp);
	else if (cp < 0x800)
	{
		buf_add_byte(out, (unsigned char) (0xC0 | (cp >> 6)));
		buf_add_byte(out, (unsigned char) (0x80 | (cp & 0x3F)));
	}
	else if (cp < 0x10000)
	{
		buf_add_byte(out, (unsigned char) (0xE0 | (cp >> 12)));
		buf_add_byte(out, (unsigned char) (0x80 | ((cp >> 6) & 0x3F)));
		buf_add_byte(out, (unsigned char) (0x80 | (cp & 0x3F)));
	}
	else
	{
		buf_add_byte(out, (unsigned char) (0xF0 | (cp >> 18)));
		buf_add_byte(out, (unsigned char) (0x80 | ((cp >> 12) & 0x3F)));
		buf_add_byte(out, (unsigned char) (0x80 | ((cp >> 6) & 0x3F)));
		buf_add_byte(out, (unsigned char) (0x80 | (cp & 0x3F)));
	}
}

/*
 * ref_decode
 *		The WHATWG Encoding "UTF-8 decoder" algorithm, step by step: bytes
 *		needed/seen, lower/upper boundary, and "prepend the byte to the
 *		stream" on an error.  Decoded code points are re-encoded.
 */
static void
ref_decode(const unsigned char *s, size_t n, Buf *out)
{
	uint32_t	cp = 0;
	int			needed = 0;
	int			seen = 0;
	unsigned char lower = 0x80;
	unsigned char upper = 0xBF;
	size_t		i = 0;

	while (i < n)
	{
		unsigned char b = s[i];

		if (needed == 0)
		{
			i++;
			if (b <= 0x7F)
				emit_cp(out, b);
			else if (b >= 0xC2 && b <= 0xDF)
				needed = 1, cp = b & 0x1F;
			else if (b >= 0xE0 && b <= 0xEF)
			{
				if (b == 0xE0)
					lower = 0xA0;
				if (b == 0xED)
					upper = 0x9F;
				needed = 2, cp = b & 0xF;
			}
			else if (b >= 0xF0 && b <= 0xF4)
			{
				if (b == 0xF0)
					lower = 0x90;
				if (b == 0xF4)
					upper = 0x8F;
				needed = 3, cp = b & 0x7;
			}
			else
				emit_cp(out, 0xFFFD);
			continue;
		}
		if (b < lower || b > upper)
		{
			/* error: reset and reprocess this byte */
			cp = 0, needed = 0, seen = 0, lower = 0x80, upper = 0xBF;
			emit_cp(out, 0xFFFD);
			continue;
		}
		lower = 0x80, upper = 0xBF;
		cp = (cp << 6) | (b & 0x3F);
		seen++;
		i++;
		if (seen == needed)
		{
			emit_cp(out, cp);
			cp = 0, needed = 0, seen = 0;
		}
	}
	if (needed != 0)
		emit_cp(out, 0xFFFD);
}

/* ----------------------------------------------------------------------
 * Reference model of the event-stream interpretation
 * ---------------------------------------------------------------------- */

typedef struct RefResult
{
	Buf			log;
	int			status;
	long		retry;
} RefResult;

/*
 * ref_parse
 *		Parse the whole stream as the spec's prose describes it: decode each
 *		complete line, then interpret it.  The cap rule is sse.c's own (raw
 *		line bytes plus decoded pending data; decoded data alone after a data
 *		line); a proper prefix of a BOM at EOF is held back by sse.c and so
 *		counts for nothing.
 */
static void
ref_parse(const unsigned char *in, size_t len, size_t max, int stop_after,
		  RefResult *res)
{
	Buf			data = {0};
	Buf			type = {0};
	Buf			id = {0};
	Buf			line = {0};
	size_t		i = 0;
	int			nev = 0;

	res->status = SSE_OK;
	res->retry = -1;
	if (max == 0)
		max = SIZE_MAX;

	if (len >= 3 && in[0] == 0xEF && in[1] == 0xBB && in[2] == 0xBF)
		i = 3;
	else if ((len == 1 && in[0] == 0xEF) ||
			 (len == 2 && in[0] == 0xEF && in[1] == 0xBB))
		i = len;

	while (i < len)
	{
		size_t		start = i;
		size_t		n;
		size_t		colon;
		const unsigned char *l;
		const unsigned char *value;
		size_t		vlen;
		size_t		name_len;

		while (i < len && in[i] != '\r' && in[i] != '\n')
			i++;
		n = i - start;
		if (n > max - data.len)
		{
			res->status = SSE_ERR_TOO_BIG;
			break;
		}
		if (i == len)
			break;				/* unterminated last line: discarded */
		if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n')
			i += 2;
		else
			i += 1;

		line.len = 0;
		ref_decode(in + start, n, &line);
		l = line.b;

		if (line.len == 0)
		{
			/* dispatch */
			if (data.len == 0)
			{
				type.len = 0;
				continue;
			}
			data.len--;
			if (type.len > 0)
				log_event(&res->log, type.b, type.len, data.b, data.len,
						  id.b, id.len);
			else
				log_event(&res->log, "message", 7, data.b, data.len,
						  id.b, id.len);
			data.len = 0;
			type.len = 0;
			if (++nev == stop_after)
			{
				res->status = STOP_VALUE;
				break;
			}
			continue;
		}
		if (l[0] == ':')
			continue;

		for (colon = 0; colon < line.len && l[colon] != ':'; colon++)
			;
		name_len = colon;
		if (colon < line.len)
		{
			value = l + colon + 1;
			vlen = line.len - colon - 1;
			if (vlen > 0 && value[0] == ' ')
				value++, vlen--;
		}
		else
		{
			value = l + line.len;
			vlen = 0;
		}

		if (name_len == 4 && memcmp(l, "data", 4) == 0)
		{
			buf_add(&data, value, vlen);
			buf_add_byte(&data, '\n');
			if (data.len > max)
			{
				res->status = SSE_ERR_TOO_BIG;
				break;
			}
		}
		else if (name_len == 5 && memcmp(l, "event", 5) == 0)
		{
			type.len = 0;
			buf_add(&type, value, vlen);
		}
		else if (name_len == 2 && memcmp(l, "id", 2) == 0)
		{
			size_t		k;
			int			has_nul = 0;

			for (k = 0; k < vlen; k++)
				has_nul |= value[k] == 0;
			if (!has_nul)
			{
				id.len = 0;
				buf_add(&id, value, vlen);
			}
		}
		else if (name_len == 5 && memcmp(l, "retry", 5) == 0 && vlen > 0)
		{
			size_t		k;
			int			digits = 1;
			long		v = 0;

			for (k = 0; k < vlen; k++)
				digits &= value[k] >= '0' && value[k] <= '9';
			if (digits)
			{
				for (k = 0; k < vlen; k++)
				{
					if (v > (LONG_MAX - (value[k] - '0')) / 10)
					{
						v = LONG_MAX;
						break;
					}
					v = v * 10 + (value[k] - '0');
				}
				res->retry = v;
			}
		}
	}
	free(data.b);
	free(type.b);
	free(id.b);
	free(line.b);
}

/* ----------------------------------------------------------------------
 * Runs of the real parser
 * ---------------------------------------------------------------------- */

typedef struct Ctx
{
	Buf			log;
	size_t		max;
	int			stop_after;
	int			nev;
} Ctx;

/*
 * record
 *		SseCallback: check the per-event contract, then log the event.
 */
static int
record(void *arg, const SseEvent *ev)
{
	Ctx		   *c = arg;

	CHECK(ev->type != NULL && ev->data != NULL && ev->id != NULL);
	CHECK(ev->type_len > 0 && ev->type[ev->type_len] == '\0');
	CHECK(ev->data[ev->data_len] == '\0');
	CHECK(strlen(ev->id) == ev->id_len);
	CHECK(c->max == 0 || ev->data_len <= c->max);
	CHECK(valid_utf8((const unsigned char *) ev->type, ev->type_len));
	CHECK(valid_utf8((const unsigned char *) ev->data, ev->data_len));
	CHECK(valid_utf8((const unsigned char *) ev->id, ev->id_len));

	log_event(&c->log, ev->type, ev->type_len, ev->data, ev->data_len,
			  ev->id, ev->id_len);
	if (++c->nev == c->stop_after)
		return STOP_VALUE;
	return 0;
}

/*
 * feed
 *		SseFeed plus the stickiness rule: once non-zero, always the same.
 */
static void
feed(SseParser *p, const unsigned char *s, size_t n, int *status)
{
	int			rc = SseFeed(p, (const char *) s, n);

	if (*status == SSE_OK)
		*status = rc;
	else
		CHECK(rc == *status);
}

/*
 * finish_and_check
 *		End the stream, then verify that nothing of the discarded partial
 *		event survives: a blank line must not dispatch.
 */
static void
finish_and_check(SseParser *p, Ctx *c, int *status)
{
	size_t		before = c->log.len;

	SseFinish(p);
	feed(p, (const unsigned char *) "\n\n", 2, status);
	CHECK(c->log.len == before);
}

static uint32_t
next_rand(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const unsigned char *in;
	size_t		len;
	size_t		max;
	size_t		pmax;
	int			stop_after;
	uint32_t	rng;
	RefResult	ref;
	Ctx			c;
	SseParser	p;
	int			status;
	size_t		i;

	if (size < 2)
		return 0;
	max = caps[data[0] & 7];
	stop_after = (data[0] >> 3) & 3;
	pmax = piece_max[data[0] >> 5];
	rng = 0x9E3779B9u ^ ((uint32_t) data[1] * 0x01000193u);
	in = data + 2;
	len = size - 2;
	memset(&ref, 0, sizeof(ref));
	memset(&c, 0, sizeof(c));

	ref_parse(in, len, max, stop_after, &ref);

	c.max = max;
	c.stop_after = stop_after;

	/* whole */
	SseInit(&p, max, record, &c);
	status = SSE_OK;
	feed(&p, in, len, &status);
	CHECK(status == ref.status);
	CHECK(same_buf(&c.log, &ref.log));
	CHECK(SseRetry(&p) == ref.retry);
	finish_and_check(&p, &c, &status);

	/* pseudo-random pieces, on the same parser after SseReset */
	SseReset(&p);
	c.log.len = 0;
	c.nev = 0;
	status = SSE_OK;
	for (i = 0; i < len;)
	{
		size_t		n = next_rand(&rng) % (pmax + 1);

		if (n > len - i)
			n = len - i;
		feed(&p, in + i, n, &status);
		i += n;
	}
	CHECK(status == ref.status);
	CHECK(same_buf(&c.log, &ref.log));
	CHECK(SseRetry(&p) == ref.retry);
	finish_and_check(&p, &c, &status);
	SseFree(&p);

	/* one byte at a time, on a fresh parser */
	SseInit(&p, max, record, &c);
	c.log.len = 0;
	c.nev = 0;
	status = SSE_OK;
	for (i = 0; i < len; i++)
		feed(&p, in + i, 1, &status);
	CHECK(status == ref.status);
	CHECK(same_buf(&c.log, &ref.log));
	CHECK(SseRetry(&p) == ref.retry);
	finish_and_check(&p, &c, &status);
	SseFree(&p);
	SseFree(&p);

	free(c.log.b);
	free(ref.log.b);
	return 0;
}
