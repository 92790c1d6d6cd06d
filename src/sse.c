/*-------------------------------------------------------------------------
 *
 * sse.c
 *	  Incremental, WHATWG-conformant parser for text/event-stream.
 *
 * This file owns the event-stream interpretation rules of WHATWG HTML
 * 9.2.6: BOM stripping, CR/LF/CRLF line ends (also when a CRLF is split
 * across reads), comments, field/value splitting, the data/event/id/retry
 * fields, dispatch on a blank line, discarding a partial event at EOF and
 * UTF-8 decoding with U+FFFD replacement.  It also enforces a size cap so
 * that a hostile or broken server cannot make the backend allocate without
 * bound.
 *
 * It must not include PostgreSQL headers, print, abort, longjmp or keep
 * global state: it runs inside a backend, under libcurl's write callback,
 * where the only safe way out is a return code.  Every allocation failure is
 * reported as SSE_ERR_NOMEM.  It must not know about providers or JSON.
 *
 * Performance notes: lines are located with memchr, a line that arrives
 * whole in one read is parsed straight from the caller's buffer without a
 * copy, and UTF-8 validation skips ASCII eight bytes at a time.  Every byte
 * is scanned a bounded number of times, so a feed costs O(n) amortized.
 *
 * src/sse.c
 *
 *-------------------------------------------------------------------------
 */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sse.h"
#include "utf8.h"

/*
 * The unit tests define SSE_REALLOC to a function that fails on demand, to
 * prove that every allocation failure comes back as SSE_ERR_NOMEM.
 */
#ifndef SSE_REALLOC
#define SSE_REALLOC realloc
#endif

/* bom_matched value once the start of the stream is behind us */
#define SSE_BOM_DONE 3

/* first allocation of a buffer; big enough for a typical LLM chunk line */
#define SSE_MIN_ALLOC 256

static const unsigned char utf8_bom[3] = {0xEF, 0xBB, 0xBF};

/*
 * buf_reserve
 *		Make room for at least "need" more bytes in b.
 *
 * Growth is geometric so that a long line arriving in many small reads
 * costs amortized O(n) copying.
 */
static int
buf_reserve(SseBuf *b, size_t need)
{
	size_t		want;
	size_t		newcap;
	char	   *nbuf;

	if (need <= b->cap - b->len)
		return SSE_OK;
	if (need > SIZE_MAX - b->len)
		return SSE_ERR_NOMEM;
	want = b->len + need;
	newcap = b->cap > 0 ? b->cap : SSE_MIN_ALLOC;
	while (newcap < want)
	{
		if (newcap > SIZE_MAX / 2)
		{
			newcap = want;
			break;
		}
		newcap *= 2;
	}
	nbuf = SSE_REALLOC(b->buf, newcap);
	if (nbuf == NULL)
		return SSE_ERR_NOMEM;	/* b->buf is still valid and still ours */
	b->buf = nbuf;
	b->cap = newcap;
	return SSE_OK;
}

/*
 * buf_append_utf8
 *		Append src to b, replacing each maximal ill-formed subpart by U+FFFD,
 *		and reserve "extra" more bytes for the caller's LF or NUL.
 *
 * Well-formed input (the normal case) costs one validation pass and one
 * memcpy.  Only a span with errors pays for the sanitizing copy, sized for
 * the worst case of three output bytes per input byte.
 */
static int
buf_append_utf8(SseBuf *b, const char *src, size_t n, size_t extra)
{
	size_t		i;
	size_t		bad;

	i = Utf8ValidPrefix(src, n);
	if (i == n)
	{
		if (buf_reserve(b, n + extra) != SSE_OK)
			return SSE_ERR_NOMEM;
		if (n > 0)
			memcpy(b->buf + b->len, src, n);
		b->len += n;
		return SSE_OK;
	}

	bad = n - i;
	if (bad > (SIZE_MAX - extra - i) / 3)
		return SSE_ERR_NOMEM;
	if (buf_reserve(b, i + 3 * bad + extra) != SSE_OK)
		return SSE_ERR_NOMEM;
	b->len += Utf8Repair(src, n, b->buf + b->len);
	return SSE_OK;
}

/*
 * buf_set_utf8
 *		Replace the contents of a string buffer (event type, id) by the
 *		decoded value, NUL-terminated.
 *
 * An empty value allocates nothing: readers treat len == 0 as "unset".
 */
static int
buf_set_utf8(SseBuf *b, const char *src, size_t n)
{
	b->len = 0;
	if (n == 0)
		return SSE_OK;
	if (buf_append_utf8(b, src, n, 1) != SSE_OK)
	{
		b->len = 0;
		return SSE_ERR_NOMEM;
	}
	b->buf[b->len] = '\0';
	return SSE_OK;
}

/*
 * line_append
 *		Keep part of an unterminated line for the next feed.
 *
 * The cap is checked before anything is copied, so a line that never ends
 * cannot grow the buffer past max_event_size.  data.len never exceeds the
 * cap while the parser is healthy, so the subtractions cannot wrap.
 */
static int
line_append(SseParser *p, const char *src, size_t n)
{
	if (n > p->max_event_size - p->data.len - p->line.len)
		return SSE_ERR_TOO_BIG;
	if (buf_reserve(&p->line, n) != SSE_OK)
		return SSE_ERR_NOMEM;
	memcpy(p->line.buf + p->line.len, src, n);
	p->line.len += n;
	return SSE_OK;
}

/*
 * dispatch
 *		Handle a blank line: deliver the pending event, if it has data.
 *
 * The data buffer always ends with the LF added by its last data line, so
 * that byte is simply overwritten by the NUL terminator.
 */
static int
dispatch(SseParser *p)
{
	SseEvent	ev;
	int			rc = SSE_OK;

	if (p->data.len == 0)
	{
		/* per spec an event without data resets the type but is not sent */
		p->type.len = 0;
		return SSE_OK;
	}
	p->data.len--;
	p->data.buf[p->data.len] = '\0';

	ev.type = p->type.len > 0 ? p->type.buf : "message";
	ev.type_len = p->type.len > 0 ? p->type.len : sizeof("message") - 1;
	ev.data = p->data.buf;
	ev.data_len = p->data.len;
	ev.id = p->id.len > 0 ? p->id.buf : "";
	ev.id_len = p->id.len;

	if (p->cb != NULL)
		rc = p->cb(p->arg, &ev);

	/* the id buffer deliberately survives: it is the *last* event id */
	p->data.len = 0;
	p->type.len = 0;
	return rc;
}

/*
 * set_retry
 *		Apply a retry: field, which the spec accepts only as ASCII digits.
 *
 * An empty value is ignored like any other non-number.  Values too large
 * for a long are clamped rather than rejected: the server clearly asked for
 * a very long delay.
 */
static void
set_retry(SseParser *p, const char *v, size_t n)
{
	long		val = 0;
	size_t		i;

	if (n == 0)
		return;
	for (i = 0; i < n; i++)
	{
		if (v[i] < '0' || v[i] > '9')
			return;
	}
	for (i = 0; i < n; i++)
	{
		int			d = v[i] - '0';

		if (val > (LONG_MAX - d) / 10)
		{
			val = LONG_MAX;
			break;
		}
		val = val * 10 + d;
	}
	p->retry = val;
}

/*
 * process_line
 *		Interpret one complete line (terminator excluded).
 *
 * The raw bytes are split before decoding.  That is equivalent to decoding
 * first because ':' and ' ' are ASCII, which ends any partial UTF-8
 * sequence, and because a field name with invalid bytes could not have
 * matched a known name after decoding either.
 */
static int
process_line(SseParser *p, const char *line, size_t n)
{
	const char *colon;
	const char *value;
	size_t		name_len;
	size_t		vlen;

	if (n == 0)
		return dispatch(p);
	if (line[0] == ':')
		return SSE_OK;			/* comment, e.g. ": keep-alive" */

	colon = memchr(line, ':', n);
	if (colon != NULL)
	{
		name_len = (size_t) (colon - line);
		value = colon + 1;
		vlen = n - name_len - 1;
		if (vlen > 0 && value[0] == ' ')
		{
			value++;
			vlen--;
		}
	}
	else
	{
		/* a bare field name has an empty value: "data" adds an empty line */
		name_len = n;
		value = line + n;
		vlen = 0;
	}

	switch (name_len)
	{
		case 4:
			if (memcmp(line, "data", 4) == 0)
			{
				if (buf_append_utf8(&p->data, value, vlen, 1) != SSE_OK)
					return SSE_ERR_NOMEM;
				p->data.buf[p->data.len++] = '\n';

				/*
				 * U+FFFD replacement can make the decoded data longer than
				 * the raw line that passed the cap check.
				 */
				if (p->data.len > p->max_event_size)
					return SSE_ERR_TOO_BIG;
			}
			break;
		case 5:
			if (memcmp(line, "event", 5) == 0)
				return buf_set_utf8(&p->type, value, vlen);
			if (memcmp(line, "retry", 5) == 0)
				set_retry(p, value, vlen);
			break;
		case 2:
			if (memcmp(line, "id", 2) == 0 &&
				(vlen == 0 || memchr(value, '\0', vlen) == NULL))
				return buf_set_utf8(&p->id, value, vlen);
			break;
		default:
			break;				/* unknown fields are ignored */
	}
	return SSE_OK;
}

/*
 * skip_bom
 *		Strip one UTF-8 BOM at the very start of the stream.
 *
 * The BOM may arrive split over several reads, so matched bytes are held
 * back in bom_matched.  On a mismatch those bytes were ordinary content:
 * they are pushed into the line buffer to be decoded (and, being an
 * incomplete sequence, replaced) like any other bytes.
 */
static const char *
skip_bom(SseParser *p, const char *pos, const char *end)
{
	while (pos < end && p->bom_matched < SSE_BOM_DONE)
	{
		if ((unsigned char) *pos == utf8_bom[p->bom_matched])
		{
			p->bom_matched++;
			pos++;
			continue;
		}
		if (p->bom_matched > 0)
		{
			int			rc = line_append(p, (const char *) utf8_bom,
										 (size_t) p->bom_matched);

			if (rc != SSE_OK)
				p->status = rc;
		}
		p->bom_matched = SSE_BOM_DONE;
	}
	return pos;
}

/*
 * find_byte
 *		memchr that returns end instead of NULL, so results compare simply.
 */
static inline const char *
find_byte(const char *pos, const char *end, char c)
{
	const char *r = memchr(pos, c, (size_t) (end - pos));

	return r != NULL ? r : end;
}

/*
 * SseInit
 *		Prepare a parser.  max_event_size 0 means no cap.
 */
void
SseInit(SseParser *p, size_t max_event_size, SseCallback cb, void *arg)
{
	memset(p, 0, sizeof(*p));
	p->max_event_size = max_event_size > 0 ? max_event_size : SIZE_MAX;
	p->cb = cb;
	p->arg = arg;
	p->retry = -1;
}

/*
 * SseFeed
 *		Parse the next piece of the stream, calling the callback for each
 *		event it completes.
 *
 * Returns SSE_OK, SSE_ERR_TOO_BIG, SSE_ERR_NOMEM or the callback's non-zero
 * value.  Any non-zero result is sticky: the rest of this buffer is dropped
 * and later calls return the same value until SseReset, because the parser
 * no longer knows where in the stream it is.
 *
 * Lines are found by keeping the next LF and next CR positions from memchr
 * and rescanning only once the cursor has passed them; a stream that never
 * uses CR thus scans for it once per feed, not once per line.
 */
int
SseFeed(SseParser *p, const char *buf, size_t len)
{
	const char *pos = buf;
	const char *end;
	const char *lf;
	const char *cr;

	if (p->status != SSE_OK || len == 0)
		return p->status;
	end = buf + len;

	if (p->bom_matched < SSE_BOM_DONE)
	{
		pos = skip_bom(p, pos, end);
		if (p->status != SSE_OK)
			return p->status;
	}
	if (p->cr_pending && pos < end)
	{
		/* the CR ending the last feed already ended the line */
		p->cr_pending = 0;
		if (*pos == '\n')
			pos++;
	}

	lf = find_byte(pos, end, '\n');
	cr = find_byte(pos, end, '\r');
	while (pos < end)
	{
		const char *eol;
		int			rc;

		if (lf < pos)
			lf = find_byte(pos, end, '\n');
		if (cr < pos)
			cr = find_byte(pos, end, '\r');
		eol = lf < cr ? lf : cr;

		if (eol == end)
		{
			rc = line_append(p, pos, (size_t) (end - pos));
			if (rc != SSE_OK)
				p->status = rc;
			return p->status;
		}

		if (p->line.len > 0)
		{
			/* the line began in an earlier feed: complete it, then parse */
			rc = line_append(p, pos, (size_t) (eol - pos));
			if (rc == SSE_OK)
				rc = process_line(p, p->line.buf, p->line.len);
			p->line.len = 0;
		}
		else if ((size_t) (eol - pos) > p->max_event_size - p->data.len)
			rc = SSE_ERR_TOO_BIG;
		else
			rc = process_line(p, pos, (size_t) (eol - pos));

		if (rc != SSE_OK)
		{
			p->status = rc;
			return rc;
		}

		pos = eol + 1;
		if (*eol == '\r')
		{
			if (pos == end)
				p->cr_pending = 1;
			else if (*pos == '\n')
				pos++;
		}
	}
	return SSE_OK;
}

/*
 * SseFinish
 *		End of stream: discard a partial line and a partial event.
 *
 * Per spec an event without its closing blank line is never dispatched.
 * The parser is then ready for a new stream (BOM stripping starts over)
 * but, like an EventSource reconnecting, keeps the last event id and the
 * retry value.  A sticky error stays until SseReset.
 */
void
SseFinish(SseParser *p)
{
	p->line.len = 0;
	p->data.len = 0;
	p->type.len = 0;
	p->bom_matched = 0;
	p->cr_pending = 0;
}

/*
 * SseReset
 *		Back to the state right after SseInit, keeping the buffers' memory
 *		so a pooled parser does not reallocate for every stream.
 */
void
SseReset(SseParser *p)
{
	SseFinish(p);
	p->id.len = 0;
	p->retry = -1;
	p->status = SSE_OK;
}

/*
 * SseFree
 *		Release the buffers.  Safe twice and on a zeroed struct; call
 *		SseInit before using the parser again.
 */
void
SseFree(SseParser *p)
{
	free(p->line.buf);
	free(p->data.buf);
	free(p->type.buf);
	free(p->id.buf);
	memset(&p->line, 0, sizeof(p->line));
	memset(&p->data, 0, sizeof(p->data));
	memset(&p->type, 0, sizeof(p->type));
	memset(&p->id, 0, sizeof(p->id));
}

/*
 * SseRetry
 *		The last valid retry: value in milliseconds, or -1 if none was seen.
 */
long
SseRetry(const SseParser *p)
{
	return p->retry;
}
