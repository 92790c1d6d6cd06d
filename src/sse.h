/*-------------------------------------------------------------------------
 *
 * sse.h
 *	  Incremental parser for text/event-stream (Server-Sent Events).
 *
 * This header owns the SSE wire format as defined by WHATWG HTML 9.2.6:
 * line splitting, fields, event dispatch and UTF-8 decoding.  It must not
 * know anything about PostgreSQL, HTTP or any provider's JSON: it includes
 * only <stddef.h>, so it can be unit-tested and fuzzed on its own and
 * included next to postgres.h without conflicts.
 *
 * The parser keeps no global state and never prints or aborts.  All its
 * memory comes from malloc/realloc (not palloc), so the owner must call
 * SseFree on every exit path, including error paths.
 *
 * src/sse.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_SSE_H
#define PG_LLM_SSE_H

#include <stddef.h>

/*
 * Return codes of SseFeed.  Parser errors are negative so that they can
 * never be confused with a callback's stop value, which should be positive.
 */
#define SSE_OK				0
#define SSE_ERR_TOO_BIG		(-1)	/* line + pending data over the cap */
#define SSE_ERR_NOMEM		(-2)	/* malloc/realloc failed */

/*
 * One dispatched event.  Every pointer is valid only while the callback
 * runs; copy what you need to keep.  All strings are valid UTF-8 and
 * NUL-terminated, but data may also contain NUL bytes, so use data_len.
 */
typedef struct SseEvent
{
	const char *type;			/* event type; "message" when no event: field */
	const char *data;			/* data with the final LF removed */
	size_t		data_len;
	const char *id;				/* last event id (persists), "" if none */
	size_t		type_len;		/* strlen(type) unless it holds a NUL */
	size_t		id_len;			/* strlen(id); an id never holds a NUL */
} SseEvent;

/*
 * Called once per dispatched event.  Return 0 to go on; any other value
 * (use a positive one) stops parsing, and SseFeed returns it.  The callback
 * must not call SseFeed, SseFinish, SseReset or SseFree on the same parser.
 * If it leaves by longjmp (ereport), the parser holds no locks or half-made
 * allocations, but its state is mid-event: only SseReset or SseFree it.
 */
typedef int (*SseCallback) (void *arg, const SseEvent *ev);

/* A growable byte buffer; internal to the parser. */
typedef struct SseBuf
{
	char	   *buf;
	size_t		len;
	size_t		cap;
} SseBuf;

/*
 * Parser state.  The fields are public only so that the struct can live on
 * the stack or inside another struct; treat them as private.
 */
typedef struct SseParser
{
	/* set by SseInit */
	size_t		max_event_size; /* cap on line + pending data bytes */
	SseCallback cb;
	void	   *arg;

	/* per-stream state */
	SseBuf		line;			/* bytes of an unterminated line */
	SseBuf		data;			/* decoded data buffer, each line + LF */
	SseBuf		type;			/* decoded event type buffer */
	SseBuf		id;				/* decoded last event id buffer */
	long		retry;			/* last valid retry: value, -1 if none */
	int			status;			/* sticky: SSE_OK, SSE_ERR_* or stop value */
	int			bom_matched;	/* BOM bytes seen at stream start; 3 = done */
	int			cr_pending;		/* last feed ended with CR: swallow an LF */
} SseParser;

/*
 * SseInit: max_event_size caps the bytes of the current line plus the
 * pending data buffer (0 means no cap); cb may be NULL.
 *
 * SseFeed: parse the next bytes of the stream, in pieces of any size.
 * Returns SSE_OK, SSE_ERR_TOO_BIG, SSE_ERR_NOMEM or the callback's stop
 * value.  A non-zero result is sticky until SseReset.
 *
 * SseFinish: end of stream.  Discards a partial line and event (per spec);
 * keeps the last event id and retry, so the parser can take a reconnected
 * stream.
 *
 * SseReset: back to the state after SseInit, keeping the buffers.
 *
 * SseFree: frees the buffers; safe twice and on a zeroed struct.  SseInit
 * again before reuse.
 *
 * SseRetry: last valid retry: value in milliseconds, -1 if none.
 */
extern void SseInit(SseParser *p, size_t max_event_size,
					SseCallback cb, void *arg);
extern int	SseFeed(SseParser *p, const char *buf, size_t len);
extern void SseFinish(SseParser *p);
extern void SseReset(SseParser *p);
extern void SseFree(SseParser *p);
extern long SseRetry(const SseParser *p);

#endif							/* PG_LLM_SSE_H */
