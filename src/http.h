/*-------------------------------------------------------------------------
 *
 * http.h
 *	  The HTTP engine: one libcurl multi handle per process, driven from a
 *	  WaitEventSet that holds the process latch and curl's sockets, so that
 *	  every wait can be interrupted by a cancel, a timeout or a new item.
 *
 *	  This header does not include curl.h; http.c is the only file that
 *	  does.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_HTTP_H
#define PG_LLM_HTTP_H

#include "postgres.h"
#include "nodes/pg_list.h"

/* What a caller asks for. */
typedef struct HttpRequestSpec
{
	const char *url;
	bool		get;			/* a GET; otherwise a POST of the body */
	List	   *headers;		/* "Name: value" strings */
	const char *body;
	size_t		body_len;
	const char *body_path;		/* POST this file's bytes instead of body */
	/* a multipart/form-data POST: fields "name=value" and one file part */
	List	   *form_fields;
	const char *form_file_field;
	const char *form_file_path;
	const char *form_file_name;
	const char *response_path;	/* write the body of a 2xx here, not in data */
	long		connect_timeout_ms;
	long		timeout_ms;		/* 0: none */
	long		low_speed_time; /* seconds; 0: none */
	long		low_speed_limit;	/* bytes per second */
	long		idle_timeout_ms;	/* no byte for this long fails it; 0: none */
	size_t		max_response;	/* cap on buffered body bytes */
	bool		xact_bound;		/* released at the end of the transaction */
} HttpRequestSpec;

typedef enum HttpOutcome
{
	HTTP_RUNNING,
	HTTP_COMPLETE,				/* a full response arrived (any status) */
	HTTP_TRANSPORT_ERROR,		/* connect, DNS, reset, timeout, ... */
	HTTP_TOO_BIG,				/* body exceeded max_response */
	HTTP_REFUSED				/* scheme or URL refused before sending */
} HttpOutcome;

/* One request in flight or finished.  Fields are read-only to callers. */
typedef struct HttpTransfer
{
	HttpOutcome outcome;
	long		status;			/* HTTP status of the final response */
	bool		headers_done;	/* the final response's headers are in */
	bool		timed_out;		/* transport error was a timeout */
	bool		unresolved;		/* transport error: the host name did not resolve */
	bool		unreachable;	/* no answer: refused, unresolved or timed out */
	char		errbuf[256];	/* libcurl's words for a transport error */

	/* body bytes; for streams, [consumed, len) is not yet read */
	char	   *data;
	size_t		len;
	size_t		cap;
	size_t		consumed;
	size_t		max_response;
	long		idle_timeout_ms;
	int64		last_activity_us;	/* monotonic time of the last byte */

	/* response headers pg_llm acts on */
	double		retry_after_s;	/* -1 when absent or unparsable */
	int			should_retry;	/* x-should-retry: -1 absent, 0, 1 */
	char		request_id[96];
	char		content_type[64];
	/* rate-limit headers: what remains and when it resets (-1: not sent) */
	int64		rl_remaining_requests;
	int64		rl_remaining_tokens;
	double		rl_reset_requests_s;
	double		rl_reset_tokens_s;
	char		location[256];	/* of a redirect, which is not followed */

	/* bookkeeping (http.c) */
	void	   *easy;
	void	   *mime;
	FILE	   *body_file;
	FILE	   *response_file;
	size_t		response_bytes; /* written to response_file */
	void	   *header_list;
	bool		attached;
	bool		xact_bound;
	bool		reported;		/* handed out by HttpNextDone */
	struct HttpTransfer **owner_ref;
	struct HttpTransfer *next;
	struct HttpTransfer *prev;
	void	   *user;			/* caller's pointer, e.g. a queue item */
	int			user_kind;		/* what user points to (the caller's own codes) */
} HttpTransfer;

extern void HttpInit(void);
extern HttpTransfer *HttpStart(const HttpRequestSpec *spec);
extern void HttpRelease(HttpTransfer *t);
extern void HttpReleaseAll(bool xact_bound_only);
extern void HttpSetOwnerRef(HttpTransfer *t, HttpTransfer **ref);
extern bool HttpPoll(long timeout_ms);
extern void HttpWaitDone(HttpTransfer *t);
extern void HttpWaitHeaders(HttpTransfer *t);
extern void HttpWaitData(HttpTransfer *t);
extern void HttpWatchClient(pgsocket sock, bool writable);
extern void HttpConsume(HttpTransfer *t, size_t n);
extern int	HttpInFlight(void);
extern bool HttpSameOrigin(const char *a, const char *b);
extern HttpTransfer *HttpNextDone(void);

#endif							/* PG_LLM_HTTP_H */
