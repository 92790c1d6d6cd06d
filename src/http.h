/*-------------------------------------------------------------------------
 *
 * http.h
 *	  The HTTP engine: one libcurl multi handle per process, driven from a
 *	  WaitEventSet that holds the process latch and curl's sockets, so that
 *	  every wait can be interrupted by a cancel, a timeout or a new item.
 *
 *	  This header does not include curl.h; http.c and http_transport.c
 *	  (through http_int.h) are the only files that do.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_HTTP_H
#define PG_LLM_HTTP_H

#include "postgres.h"
#include "nodes/pg_list.h"

/*
 * How a provider is reached: the transport options of llm.provider.
 * Every field may be NULL (or 0), which means the default: the proxy of
 * the server's environment, libcurl's CA bundle, no client certificate,
 * HTTP/2 where the server offers it over TLS.
 */
typedef struct HttpTransport
{
	const char *proxy;			/* http, https, socks5(h) URL; may hold credentials */
	const char *no_proxy;		/* hosts reached directly, curl's syntax */
	const char *ca_file;		/* PEM bundle of the CAs trusted instead of the default */
	const char *client_cert;	/* PEM file path or PEM text */
	const char *client_key;		/* PEM file path or PEM text (secret) */
	int			http_version;	/* 0: default; 11: HTTP/1.1 only; 2: HTTP/2 */
} HttpTransport;

/* Why a transfer failed below HTTP, when pg_llm can tell. */
typedef enum HttpCause
{
	HTTP_CAUSE_NONE,
	HTTP_CAUSE_TIMEOUT,
	HTTP_CAUSE_DNS,				/* the provider's host name did not resolve */
	HTTP_CAUSE_CONNECT,			/* no connection to the provider */
	HTTP_CAUSE_PROXY_DNS,		/* the proxy's host name did not resolve */
	HTTP_CAUSE_PROXY_CONNECT,	/* no connection to the proxy */
	HTTP_CAUSE_PROXY_REFUSED,	/* the proxy answered CONNECT with an error */
	HTTP_CAUSE_TLS_UNKNOWN_CA,	/* certificate not signed by a trusted CA */
	HTTP_CAUSE_TLS_HOSTNAME,	/* certificate for another host name */
	HTTP_CAUSE_TLS_EXPIRED,		/* certificate expired */
	HTTP_CAUSE_TLS_NOT_YET_VALID,	/* certificate not valid yet */
	HTTP_CAUSE_TLS_VERIFY,		/* certificate refused for another reason */
	HTTP_CAUSE_TLS_CA_FILE,		/* the CA file cannot be read */
	HTTP_CAUSE_TLS_CLIENT_CERT, /* the client certificate or key cannot be used */
	HTTP_CAUSE_TLS_HANDSHAKE,	/* the TLS handshake failed otherwise */
	HTTP_CAUSE_DESCRIPTORS		/* the process is out of file descriptors */
} HttpCause;
/* The most bytes of response headers read (libcurl refuses a line > 100 kB). */
#define HTTP_MAX_HEADERS (256 * 1024)

/* What a caller asks for. */
typedef struct HttpRequestSpec
{
	const char *url;
	bool		get;			/* a GET; otherwise a POST of the body */
	List	   *headers;		/* "Name: value" strings */
	const char *body;
	size_t		body_len;
	bool		body_owned;		/* body is malloc'd: the transfer takes it over */
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
	const HttpTransport *transport; /* NULL: every default */
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
	bool		unreachable;	/* refused, unresolved, or timed out unconnected */
	bool		request_sent;	/* transport error: the whole request had gone out */
	HttpCause	cause;			/* transport error: why, when known */
	bool		via_proxy;		/* sent through a proxy */
	long		proxy_status;	/* the proxy's answer to CONNECT (HTTP_CAUSE_PROXY_REFUSED) */
	bool		headers_too_big;	/* transport error: headers over HTTP_MAX_HEADERS */
	size_t		header_bytes;	/* of the response so far */
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
	char	   *owned_body;		/* sent without a copy, freed with the transfer */
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
	struct HttpTransfer *done_next; /* finished, not yet handed out */
	struct HttpTransfer *done_prev;
	bool		on_done_list;
	void	   *gate;			/* its origin's gate (http_gate.c), or NULL */
	struct HttpTransfer *hold_next; /* held by the gate, in order */
	bool		held;			/* held by the gate: not given to libcurl yet */
	bool		gate_counted;	/* counted as running by the gate */
	bool		gate_opener;	/* opening a connection for the gate */
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
extern pgsocket HttpClientSocket(void);
extern void HttpWatchClient(pgsocket sock, bool writable);
extern void HttpConsume(HttpTransfer *t, size_t n);
extern int	HttpInFlight(void);
extern bool HttpSameOrigin(const char *a, const char *b);
extern HttpTransfer *HttpNextDone(void);
extern int	HttpReserve(int in_flight, const char *setting, int elevel);
extern const char *HttpProxyFor(const HttpTransport *tr, const char *url,
								const char **source);
extern char *HttpUrlWithoutCredentials(const char *url);
extern const char *HttpCauseText(const HttpTransfer *t);

/* the llm.* settings of every request to a provider */
extern int	llm_connect_timeout_ms;
extern int	llm_timeout_ms;
extern int	llm_low_speed_time;
extern int	llm_low_speed_limit;
extern int	llm_stream_idle_timeout;
extern int	llm_max_response_size_kb;
extern void HttpDefineSettings(void);

#endif							/* PG_LLM_HTTP_H */
