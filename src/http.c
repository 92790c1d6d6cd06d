/*-------------------------------------------------------------------------
 *
 * http.c
 *	  The HTTP engine over libcurl (with http_transport.c, the only files
 *	  that talk to it: see http_int.h).
 *
 *	  One multi handle per process holds every transfer, so connections are
 *	  kept alive across calls (the multi handle owns the connection cache)
 *	  and one wait serves a single call, a stream or a worker's fifty
 *	  requests alike.  Waiting is a WaitEventSet over the process latch and
 *	  the sockets curl asks us to watch: a cancel, statement_timeout or a
 *	  worker wake-up sets the latch and ends the wait at once, and
 *	  CHECK_FOR_INTERRUPTS() then raises the normal error.  Callers catch it
 *	  and release their transfers; transaction-bound transfers are also
 *	  released by a transaction callback, as a safety net.
 *
 *	  Callbacks from curl only copy bytes into malloc'd buffers and return
 *	  curl's own abort codes: no palloc, no ereport, no longjmp there.
 *
 *	  Transport (the options themselves are set by http_transport.c):
 *	  every TLS connection of the process checks certificates
 *	  against one CA store, loaded once (libcurl's CA cache, which needs
 *	  the CA file alone, without the CA directory), and resumes TLS
 *	  sessions from a share handle; requests to a server that speaks
 *	  HTTP/2 wait for its first connection and are multiplexed over it
 *	  (CURLOPT_PIPEWAIT).  The proxy of the server's environment is read
 *	  once per process and handed to curl like a provider's own, so that
 *	  curl looks nothing up per request.  Certificate checks are never
 *	  turned off.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <math.h>
#include <sys/stat.h>
#include <time.h>
#ifdef __linux__
#include <sys/epoll.h>
#define HTTP_USE_EPOLL 1
#endif

#include "access/xact.h"
#include "libpq/libpq-be.h"
#include "utils/guc.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "storage/latch.h"
#include "tcop/dest.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "http_int.h"

int			llm_connect_timeout_ms = 10000;
int			llm_timeout_ms = 300000;
int			llm_low_speed_time = 0;
int			llm_low_speed_limit = 1;
int			llm_stream_idle_timeout = 60;
int			llm_max_response_size_kb = 16384;

/*
 * llm.max_response_size: a role that is not a superuser may lower it, not
 * raise it above the value its session started with (postgresql.conf,
 * ALTER SYSTEM, ALTER DATABASE or ROLE ... SET): a response is held in a
 * backend's memory, and a plain role must not choose how much.
 */
static bool
check_max_response_size(int *newval, void **extra, GucSource source)
{
	const char *reset;
	int			ceiling;

	if (source < PGC_S_CLIENT || source == PGC_S_TEST || !IsTransactionState())
		return true;
	reset = GetConfigOptionResetString("llm.max_response_size");
	ceiling = reset ? atoi(reset) : 16384;
	if (*newval <= ceiling || superuser())
		return true;
	GUC_check_errcode(ERRCODE_INSUFFICIENT_PRIVILEGE);
	GUC_check_errmsg("permission denied to raise llm.max_response_size above %d kB", ceiling);
	GUC_check_errhint("Only a superuser can raise it above the server's setting; any role can lower it.");
	return false;
}

#define HTTP_USER_AGENT "pg_llm/" PG_LLM_VERSION
#define HTTP_MAX_SOCKETS 256
#define HTTP_EASY_POOL 64
#define HTTP_MIN_CONNECTS 128	/* connections kept alive, at least */
#define HTTP_FDS_PER_REQUEST 2	/* a socket, and the resolver's while connecting */
#define HTTP_FD_HEADROOM 64		/* for everything else the process opens */

typedef struct WatchedSocket
{
	curl_socket_t fd;
	int			what;			/* CURL_POLL_IN / OUT / INOUT */
} WatchedSocket;

static CURLM *multi = NULL;
static CURLSH *share = NULL;	/* TLS sessions (and DNS) of the process */
static char *default_ca_file = NULL;	/* libcurl's built-in CA bundle */
static int	reserved_in_flight = 0; /* HttpReserve's largest request so far */
static WaitEventSet *wait_set = NULL;
static bool sockets_changed = true;
static WatchedSocket sockets[HTTP_MAX_SOCKETS];
static int	nsockets = 0;
static int64 timer_deadline_us = -1;	/* monotonic; -1: no timer */
static pgsocket client_socket = PGINVALID_SOCKET;	/* see HttpWatchClient */
static bool client_writable = false;
static HttpTransfer *transfers = NULL;	/* all live transfers */
static HttpTransfer *done_head = NULL;	/* finished, not yet handed out */
static HttpTransfer *done_tail = NULL;
static int	ntransfers = 0;
static int	nidle_watched = 0;	/* live transfers with an idle timeout */
static CURL *easy_pool[HTTP_EASY_POOL];
static int	neasy_pool = 0;

#ifdef HTTP_USE_EPOLL
/*
 * On Linux curl's sockets live in an epoll set of our own, which sits in
 * the WaitEventSet as one readable descriptor: a socket curl adds, drops
 * or switches between reading and writing costs one epoll_ctl(), and the
 * WaitEventSet is built once.  Elsewhere the set is rebuilt from the
 * socket table whenever it changes.
 */
static int	curl_epfd = -1;
static pgsocket epoll_client = PGINVALID_SOCKET;	/* the client socket in it */
static uint32 epoll_client_events = 0;
#endif

/* Monotonic microseconds, for curl's timer. */
static int64
monotonic_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * curl tells us which sockets to watch.  We keep a small table and rebuild
 * the WaitEventSet before the next wait, because a set cannot drop a socket
 * before PostgreSQL 17.
 */
static int
socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	int			i;

#ifdef HTTP_USE_EPOLL
	if (curl_epfd >= 0)
	{
		struct epoll_event ev;

		memset(&ev, 0, sizeof(ev));
		ev.data.fd = fd;
		if (what & CURL_POLL_IN)
			ev.events |= EPOLLIN;
		if (what & CURL_POLL_OUT)
			ev.events |= EPOLLOUT;
		/*
		 * A socket curl stops watching is usually a kept-alive connection
		 * that the next call takes up again: leave it registered but quiet
		 * (one-shot, so a hang-up wakes us at most once), and the next call
		 * costs one epoll_ctl instead of two.  The kernel forgets a socket
		 * when curl closes it.
		 */
		if (what == CURL_POLL_REMOVE)
			ev.events = EPOLLONESHOT;
		if (epoll_ctl(curl_epfd, EPOLL_CTL_MOD, fd, &ev) != 0 &&
			what != CURL_POLL_REMOVE &&
			epoll_ctl(curl_epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
			return -1;			/* curl fails the transfer */
		return 0;
	}
#endif

	for (i = 0; i < nsockets; i++)
		if (sockets[i].fd == fd)
			break;

	if (what == CURL_POLL_REMOVE)
	{
		if (i < nsockets)
		{
			sockets[i] = sockets[nsockets - 1];
			nsockets--;
			sockets_changed = true;
		}
		return 0;
	}

	if (i == nsockets)
	{
		if (nsockets >= HTTP_MAX_SOCKETS)
			return -1;			/* curl fails the transfer; never raised here */
		sockets[nsockets].fd = fd;
		nsockets++;
	}
	else if (sockets[i].what == what)
		return 0;
	sockets[i].what = what;
	sockets_changed = true;
	return 0;
}

/* curl's single timer: remember when it wants to be called back. */
static int
timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	if (timeout_ms < 0)
		timer_deadline_us = -1;
	else
		timer_deadline_us = monotonic_us() + (int64) timeout_ms * 1000;
	return 0;
}

/*
 * Response body bytes: append to the transfer's buffer, refusing to grow
 * past the cap (returning a short count makes curl stop with a write
 * error, which the caller reports as "too big").
 */
static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	HttpTransfer *t = (HttpTransfer *) userdata;
	size_t		n = size * nmemb;

	t->last_activity_us = monotonic_us();
	if (t->response_file && t->status >= 200 && t->status < 300)
	{
		/* a download: straight to its file, never to memory */
		if (fwrite(ptr, 1, n, t->response_file) != n)
			return 0;
		t->response_bytes += n;
		return n;
	}
	if (t->len + n > t->max_response + t->consumed)
	{
		t->outcome = HTTP_TOO_BIG;
		return 0;
	}
	if (t->len + n + 1 > t->cap)
	{
		size_t		newcap = Max(t->cap * 2, t->len + n + 1);
		char	   *p;

		newcap = Max(newcap, 4096);
		p = realloc(t->data, newcap);
		if (p == NULL)
			return 0;
		t->data = p;
		t->cap = newcap;
	}
	memcpy(t->data + t->len, ptr, n);
	t->len += n;
	t->data[t->len] = '\0';
	return n;
}

/*
 * The longest wait any header of a provider is read as (a year): what a
 * caller does with it is capped again by the settings, but no number from
 * a header ever reaches a timestamp sum unbounded ("inf", "1e300").
 */
#define HTTP_MAX_WAIT_S (365.0 * 86400.0)

/* A wait in seconds read from a header: -1 unless finite and not negative. */
static double
sane_wait(double secs)
{
	if (!isfinite(secs) || secs < 0)
		return -1;
	return Min(secs, HTTP_MAX_WAIT_S);
}

/*
 * A decimal number of a header (digits, a point, an exponent): strtod
 * alone would also take "inf", "nan" and hexadecimal.  *end is set after
 * it; false when there is none.
 */
static bool
parse_decimal(const char *v, double *d, char **end)
{
	const char *p = v;

	while (*p == ' ' || *p == '\t')
		p++;
	if (!isdigit((unsigned char) *p) && !(*p == '.' && isdigit((unsigned char) p[1])))
		return false;
	*d = strtod(p, end);
	return *end != p && isfinite(*d);
}

/*
 * Parse a Retry-After value: delay-seconds (integer or decimal) or an
 * HTTP-date.  Returns seconds from now (at most HTTP_MAX_WAIT_S), or -1.
 */
static double
parse_retry_after(const char *v)
{
	char	   *end;
	double		secs;
	time_t		when;

	if (parse_decimal(v, &secs, &end))
	{
		while (*end == ' ' || *end == '\r' || *end == '\n')
			end++;
		if (*end == '\0')
			return sane_wait(secs);
	}
	when = curl_getdate(v, NULL);
	if (when != -1)
	{
		double		d = difftime(when, time(NULL));

		return d < 0 ? 0 : sane_wait(d);
	}
	return -1;
}

/*
 * A Go duration, as OpenAI's x-ratelimit-reset-* headers send it ("1s",
 * "6m0s", "12ms", "1h2m3.5s"), in seconds; -1 if it is not one.
 */
static double
parse_go_duration(const char *v)
{
	double		total = 0;
	bool		any = false;

	while (*v == ' ')
		v++;
	while (*v && *v != '\r' && *v != '\n')
	{
		char	   *end;
		double		n;

		if (!parse_decimal(v, &n, &end))
			return -1;
		v = end;
		if (strncmp(v, "ms", 2) == 0)
			total += n / 1000.0, v += 2;
		else if (strncmp(v, "us", 2) == 0)
			total += n / 1e6, v += 2;
		else if (strncmp(v, "\xc2\xb5s", 3) == 0)
			total += n / 1e6, v += 3;
		else if (strncmp(v, "ns", 2) == 0)
			total += n / 1e9, v += 2;
		else if (*v == 'h')
			total += n * 3600, v++;
		else if (*v == 'm')
			total += n * 60, v++;
		else if (*v == 's')
			total += n, v++;
		else
			return -1;
		any = true;
	}
	return any ? sane_wait(total) : -1;
}

/*
 * An RFC 3339 timestamp, as Anthropic's anthropic-ratelimit-*-reset
 * headers send it ("2025-01-01T12:00:05Z", fractions and offsets
 * allowed), as seconds from now (0 when past); -1 if it is not one.
 */
static double
parse_rfc3339_from_now(const char *v)
{
	struct tm	tm;
	int			y, mo, d, h, mi;
	double		s;
	int			n = 0;
	time_t		when;
	const char *rest;
	int			off = 0;
	double		delta;

	while (*v == ' ')
		v++;
	if (sscanf(v, "%4d-%2d-%2dT%2d:%2d:%lf%n", &y, &mo, &d, &h, &mi, &s, &n) != 6)
		return -1;
	rest = v + n;
	if (*rest == '+' || *rest == '-')
	{
		int			oh, om;

		if (sscanf(rest + 1, "%2d:%2d", &oh, &om) != 2)
			return -1;
		off = (oh * 3600 + om * 60) * (*rest == '+' ? 1 : -1);
	}
	else if (*rest != 'Z' && *rest != 'z')
		return -1;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = 0;
	when = timegm(&tm);
	if (when == (time_t) -1)
		return -1;
	delta = difftime(when, time(NULL)) + s - off;
	return delta < 0 ? 0 : sane_wait(delta);
}

/* A whole number header value, or -1. */
static int64
parse_count(const char *v)
{
	char	   *end;
	long long	n = strtoll(v, &end, 10);

	return (end == v || n < 0) ? -1 : (int64) n;
}

/* Copy a header value without its line end into a fixed buffer. */
static void
copy_header_value(char *dst, size_t dstlen, const char *v)
{
	size_t		n = strcspn(v, "\r\n");

	if (n >= dstlen)
		n = dstlen - 1;
	memcpy(dst, v, n);
	dst[n] = '\0';
}

/*
 * Response headers: note the status line and the few headers that steer
 * retries.  A new status line (after a 1xx) starts over.
 */
static size_t
header_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
	HttpTransfer *t = (HttpTransfer *) userdata;
	size_t		n = size * nitems;
	const char *v;
	const char *colon;
	char		tmp[64];

	t->last_activity_us = monotonic_us();
	t->header_bytes += n;
	if (t->header_bytes > HTTP_MAX_HEADERS)
	{
		t->headers_too_big = true;
		return 0;				/* curl stops with a write error */
	}
	if (n >= 5 && strncmp(buf, "HTTP/", 5) == 0)
	{
		const char *sp = memchr(buf, ' ', n);

		t->status = sp ? strtol(sp + 1, NULL, 10) : 0;
		t->headers_done = false;
		t->retry_after_s = -1;
		t->should_retry = -1;
		t->request_id[0] = '\0';
		t->content_type[0] = '\0';
		t->location[0] = '\0';
		t->rl_remaining_requests = t->rl_remaining_tokens = -1;
		t->rl_reset_requests_s = t->rl_reset_tokens_s = -1;
	}
	else if (n <= 2 && (buf[0] == '\r' || buf[0] == '\n'))
	{
		/* the end of a header block; 1xx blocks are followed by another */
		if (t->status >= 200)
			t->headers_done = true;
	}
	else if ((colon = memchr(buf, ':', n)) != NULL)
	{
		/*
		 * One look at the name's length and first letter picks the few
		 * names it can be (this runs for every header of every reply).
		 */
		size_t		nlen = colon - buf;

#define NAME_IS(lit) (nlen == sizeof(lit) - 1 && pg_strncasecmp(buf, lit, sizeof(lit) - 1) == 0)
		v = colon + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		switch (buf[0] | 0x20)
		{
			case 'r':
				if (NAME_IS("retry-after-ms"))
				{
					double		ms;
					char	   *end;

					copy_header_value(tmp, sizeof(tmp), v);
					if (parse_decimal(tmp, &ms, &end))
						t->retry_after_s = sane_wait(ms / 1000.0);
				}
				else if (NAME_IS("retry-after"))
				{
					/* retry-after-ms wins when both are sent */
					if (t->retry_after_s < 0)
					{
						copy_header_value(tmp, sizeof(tmp), v);
						t->retry_after_s = parse_retry_after(tmp);
					}
				}
				else if (NAME_IS("request-id"))
					copy_header_value(t->request_id, sizeof(t->request_id), v);
				break;
			case 'x':
				if (NAME_IS("x-should-retry"))
					t->should_retry = (pg_strncasecmp(v, "true", 4) == 0) ? 1 : 0;
				else if (NAME_IS("x-ratelimit-remaining-requests"))
					t->rl_remaining_requests = parse_count(v);
				else if (NAME_IS("x-ratelimit-remaining-tokens"))
					t->rl_remaining_tokens = parse_count(v);
				else if (NAME_IS("x-ratelimit-reset-requests"))
					t->rl_reset_requests_s = parse_go_duration(v);
				else if (NAME_IS("x-ratelimit-reset-tokens"))
					t->rl_reset_tokens_s = parse_go_duration(v);
				else if (NAME_IS("x-request-id"))
					copy_header_value(t->request_id, sizeof(t->request_id), v);
				break;
			case 'a':
				if (NAME_IS("anthropic-ratelimit-requests-remaining"))
					t->rl_remaining_requests = parse_count(v);
				else if (NAME_IS("anthropic-ratelimit-tokens-remaining"))
					t->rl_remaining_tokens = parse_count(v);
				else if (NAME_IS("anthropic-ratelimit-requests-reset"))
					t->rl_reset_requests_s = parse_rfc3339_from_now(v);
				else if (NAME_IS("anthropic-ratelimit-tokens-reset"))
					t->rl_reset_tokens_s = parse_rfc3339_from_now(v);
				break;
			case 'c':
				if (NAME_IS("content-type"))
					copy_header_value(t->content_type, sizeof(t->content_type), v);
				break;
			case 'l':
				if (NAME_IS("location"))
					copy_header_value(t->location, sizeof(t->location), v);
				break;
		}
#undef NAME_IS
	}
	return n;
}

static void collect_finished(void);
static void push_done(HttpTransfer *t);
static void unlink_done(HttpTransfer *t);
static void rebuild_wait_set(void);
static bool http_set_body(HttpTransfer *t, CURL *e, const HttpRequestSpec *spec);
static void http_attach(HttpTransfer *t);

/* Release every transaction-bound transfer when a transaction ends. */
static void
http_xact_cb(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PREPARE)
	{
		HttpReleaseAll(true);
		HttpWatchClient(PGINVALID_SOCKET, false);
	}
}

/*
 * Create the multi handle, the share handle and the wait set on first
 * use.  Errors here are raised normally: nothing is allocated yet that
 * could leak.
 */
void
HttpInit(void)
{
	CURL	   *probe;

	if (multi != NULL)
		return;
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialize libcurl")));
	HttpReadEnvironment();

	/*
	 * libcurl's built-in CA bundle.  Naming it (and no CA directory)
	 * lets libcurl keep the store it builds from it for every later
	 * connection instead of reading the bundle at each handshake.
	 */
	probe = curl_easy_init();
	if (probe)
	{
		char	   *ca = NULL;

		if (curl_easy_getinfo(probe, CURLINFO_CAINFO, &ca) == CURLE_OK && ca && ca[0])
			default_ca_file = strdup(ca);
		curl_easy_cleanup(probe);
	}

	share = curl_share_init();
	if (share)
	{
		curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
		curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	}
	multi = curl_multi_init();
	if (multi == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl multi handle")));
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) HTTP_MIN_CONNECTS);
	curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
#ifdef HTTP_USE_EPOLL
	curl_epfd = epoll_create1(EPOLL_CLOEXEC);
#endif
	HttpGateSetup(http_attach, &transfers);
	RegisterXactCallback(http_xact_cb, NULL);
	rebuild_wait_set();
}

/* Descriptors open in this process now. */
static long
count_open_fds(long limit)
{
	DIR		   *dir = opendir("/proc/self/fd");
	long		n = 0;
	long		fd;

	if (dir)
	{
		struct dirent *de;

		while ((de = readdir(dir)) != NULL)
			if (de->d_name[0] != '.')
				n++;
		closedir(dir);
		return n - 1;			/* the directory's own */
	}
	for (fd = 0; fd < Min(limit, 65536); fd++)
		if (fcntl((int) fd, F_GETFD) != -1)
			n++;
	return n;
}

/*
 * Make room for in_flight requests at once (llm.chat_many, the worker):
 * each holds a socket, and a new connection briefly two more (libcurl's
 * resolver), beside the files PostgreSQL keeps open (up to max_safe_fds).
 * When the soft limit on open files is too low, it is raised toward the
 * hard one, as far as needed.  When even that is not enough: an error at
 * elevel ERROR, naming what to raise; at a lower elevel the message is
 * logged and the number of requests that fit is returned.  The connection
 * cache grows to hold that many connections between requests.
 */
int
HttpReserve(int in_flight, const char *setting, int elevel)
{
	struct rlimit rl;
	long		need;
	long		open_now;
	long		fit;

	HttpInit();
	need = (long) in_flight * HTTP_FDS_PER_REQUEST + HTTP_FD_HEADROOM;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return in_flight;
	/* the usual case costs one system call */
	if (rl.rlim_cur == RLIM_INFINITY ||
		(long) rl.rlim_cur >= need + max_safe_fds + HTTP_FD_HEADROOM)
		goto fits;

	open_now = count_open_fds((long) rl.rlim_cur);
	if (open_now + need > (long) rl.rlim_cur)
	{
		struct rlimit raised = rl;
		rlim_t		want = (rlim_t) (open_now + need + max_safe_fds);

		if (rl.rlim_max != RLIM_INFINITY && want > rl.rlim_max)
			want = rl.rlim_max;
		if (want > rl.rlim_cur)
		{
			raised.rlim_cur = want;
			if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
			{
				elog(DEBUG1, "pg_llm: raised the limit on open files from %ld to %ld for %s = %d",
					 (long) rl.rlim_cur, (long) want, setting, in_flight);
				rl.rlim_cur = want;
			}
		}
	}
	if (open_now + need > (long) rl.rlim_cur)
	{
		fit = ((long) rl.rlim_cur - open_now - HTTP_FD_HEADROOM) / HTTP_FDS_PER_REQUEST;
		ereport(elevel,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("%s = %d needs more file descriptors than this process may open",
						setting, in_flight),
				 errdetail("%d requests in flight need up to %ld descriptors; %ld are open, the limit is %ld and its hard limit %ld, so %ld requests fit.",
						   in_flight, need, open_now, (long) rl.rlim_cur,
						   rl.rlim_max == RLIM_INFINITY ? -1L : (long) rl.rlim_max,
						   Max(fit, 0)),
				 errhint("Lower %s, or raise the PostgreSQL server's limit on open files (LimitNOFILE in its systemd unit, or ulimit -n before pg_ctl start).",
						 setting)));
		in_flight = (int) Max(fit, 1);
	}
fits:
	if (in_flight > reserved_in_flight)
	{
		reserved_in_flight = in_flight;
		curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS,
						  (long) Max(HTTP_MIN_CONNECTS, in_flight + 16));
	}
	return in_flight;
}

/* An easy handle from the pool (reset to defaults) or a new one. */
static CURL *
easy_get(void)
{
	if (neasy_pool > 0)
	{
		CURL	   *e = easy_pool[--neasy_pool];

		curl_easy_reset(e);
		return e;
	}
	return curl_easy_init();
}

/* Return an easy handle to the pool, or free it when the pool is full. */
static void
easy_put(CURL *e)
{
	if (neasy_pool < HTTP_EASY_POOL)
		easy_pool[neasy_pool++] = e;
	else
		curl_easy_cleanup(e);
}

/* Link a transfer into the list of live ones. */
static void
link_transfer(HttpTransfer *t)
{
	t->next = transfers;
	if (transfers)
		transfers->prev = t;
	transfers = t;
	ntransfers++;
}

/*
 * Start a request.  Every curl object it makes is owned by the returned
 * transfer, which the caller must hand to HttpRelease (directly, from
 * PG_CATCH, or from a memory context callback).  If setting it up fails,
 * the transfer comes back already finished with outcome HTTP_REFUSED or
 * HTTP_TRANSPORT_ERROR, so that callers have one path for every failure.
 */
static HttpTransfer *http_start(const HttpRequestSpec *spec);

HttpTransfer *
HttpStart(const HttpRequestSpec *spec)
{
	HttpTransfer *t = http_start(spec);

	/* one that could not even start is handed out like any finished one */
	if (t->outcome != HTTP_RUNNING)
		push_done(t);
	return t;
}

static HttpTransfer *
http_start(const HttpRequestSpec *spec)
{
	HttpTransfer *t;
	CURL	   *e;
	struct curl_slist *hl = NULL;
	ListCell   *lc;

	HttpInit();

	t = calloc(1, sizeof(HttpTransfer));
	if (t == NULL)
	{
		if (spec->body_owned)
			free((char *) spec->body);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	}
	if (spec->body_owned)
		t->owned_body = (char *) spec->body;
	t->retry_after_s = -1;
	t->should_retry = -1;
	t->rl_remaining_requests = t->rl_remaining_tokens = -1;
	t->rl_reset_requests_s = t->rl_reset_tokens_s = -1;
	t->max_response = spec->max_response;
	t->idle_timeout_ms = spec->idle_timeout_ms;
	if (t->idle_timeout_ms > 0)
		nidle_watched++;
	t->last_activity_us = monotonic_us();
	t->xact_bound = spec->xact_bound;
	t->outcome = HTTP_RUNNING;
	link_transfer(t);

	if (pg_strncasecmp(spec->url, "http://", 7) != 0 &&
		pg_strncasecmp(spec->url, "https://", 8) != 0)
	{
		t->outcome = HTTP_REFUSED;
		strlcpy(t->errbuf, "only http and https URLs are allowed", sizeof(t->errbuf));
		return t;
	}

	e = easy_get();
	if (e == NULL)
	{
		t->outcome = HTTP_TRANSPORT_ERROR;
		strlcpy(t->errbuf, "could not create a libcurl handle", sizeof(t->errbuf));
		return t;
	}
	t->easy = e;

	foreach(lc, spec->headers)
	{
		struct curl_slist *n = curl_slist_append(hl, (const char *) lfirst(lc));

		if (n == NULL)
			break;
		hl = n;
	}
	/* no "Expect: 100-continue" round trip for large bodies */
	{
		struct curl_slist *n = curl_slist_append(hl, "Expect:");

		if (n != NULL)
			hl = n;
		n = curl_slist_append(hl, "User-Agent: " HTTP_USER_AGENT);
		if (n != NULL)
			hl = n;
	}
	t->header_list = hl;

	curl_easy_setopt(e, CURLOPT_URL, spec->url);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, hl);
	if (!http_set_body(t, e, spec))
		return t;
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
	curl_easy_setopt(e, CURLOPT_PRIVATE, t);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, spec->connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, spec->timeout_ms);
	if (spec->low_speed_time > 0)
	{
		curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, spec->low_speed_time);
		curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, Max(spec->low_speed_limit, 1L));
	}
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	HttpSetTransport(t, e, spec->url, spec->transport, share, default_ca_file);

	/* to libcurl now, or when the origin's gate lets it (http_gate.c) */
	{
		int			version = spec->transport ? spec->transport->http_version : 0;
		bool		https = pg_strncasecmp(spec->url, "https://", 8) == 0;

		HttpGateStart(t, spec->url, (https && version != 11) || (!https && version == 2));
	}
	return t;
}

/*
 * Give a set-up transfer to libcurl and start it now (connect or send)
 * rather than at the next wait.  The gate calls it (HttpGateSetup) when it
 * lets a transfer through.
 */
static void
http_attach(HttpTransfer *t)
{
	CURLMcode	mrc;
	int			running;

	mrc = curl_multi_add_handle(multi, (CURL *) t->easy);
	if (mrc != CURLM_OK)
	{
		t->outcome = HTTP_TRANSPORT_ERROR;
		strlcpy(t->errbuf, curl_multi_strerror(mrc), sizeof(t->errbuf));
		HttpGateDone(t);
		push_done(t);
		return;
	}
	t->attached = true;
	curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	collect_finished();
}

/* Bytes for curl from a request body file. */
static size_t
read_cb(char *buffer, size_t size, size_t nitems, void *userdata)
{
	return fread(buffer, 1, size * nitems, (FILE *) userdata);
}

/*
 * What a request sends: nothing (GET), a multipart form with a file, the
 * bytes of a file, or a body in memory.  false (with the transfer failed)
 * when a file cannot be opened.
 */
static bool
http_set_body(HttpTransfer *t, CURL *e, const HttpRequestSpec *spec)
{
	if (spec->response_path)
	{
		t->response_file = fopen(spec->response_path, "wb");
		if (t->response_file == NULL)
		{
			t->outcome = HTTP_TRANSPORT_ERROR;
			snprintf(t->errbuf, sizeof(t->errbuf), "could not create the download file: %m");
			return false;
		}
	}
	if (spec->get)
	{
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
		return true;
	}
	if (spec->form_file_path)
	{
		curl_mime  *mime = curl_mime_init(e);
		curl_mimepart *part;
		ListCell   *lc;

		t->mime = mime;
		foreach(lc, spec->form_fields)
		{
			const char *f = lfirst(lc);
			const char *eq = strchr(f, '=');

			part = curl_mime_addpart(mime);
			curl_mime_name(part, pnstrdup(f, eq - f));
			curl_mime_data(part, eq + 1, CURL_ZERO_TERMINATED);
		}
		part = curl_mime_addpart(mime);
		curl_mime_name(part, spec->form_file_field);
		if (curl_mime_filedata(part, spec->form_file_path) != CURLE_OK)
		{
			t->outcome = HTTP_TRANSPORT_ERROR;
			snprintf(t->errbuf, sizeof(t->errbuf), "could not read the upload file");
			return false;
		}
		curl_mime_filename(part, spec->form_file_name);
		curl_mime_type(part, "application/jsonl");
		curl_easy_setopt(e, CURLOPT_MIMEPOST, mime);
		return true;
	}
	if (spec->body_path)
	{
		struct stat st;

		t->body_file = fopen(spec->body_path, "rb");
		if (t->body_file == NULL || fstat(fileno(t->body_file), &st) != 0)
		{
			t->outcome = HTTP_TRANSPORT_ERROR;
			snprintf(t->errbuf, sizeof(t->errbuf), "could not read the request body file: %m");
			return false;
		}
		curl_easy_setopt(e, CURLOPT_POST, 1L);
		curl_easy_setopt(e, CURLOPT_READFUNCTION, read_cb);
		curl_easy_setopt(e, CURLOPT_READDATA, t->body_file);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) st.st_size);
		return true;
	}
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) spec->body_len);
	if (t->owned_body)
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->owned_body);	/* no copy: ours */
	else
		curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, spec->body ? spec->body : "");
	return true;
}

/* Let a caller's pointer be cleared when the transfer is released. */
void
HttpSetOwnerRef(HttpTransfer *t, HttpTransfer **ref)
{
	t->owner_ref = ref;
}

/*
 * Free a transfer and everything it holds.  Safe on a transfer in any
 * state; the connection itself stays in the multi handle's cache when the
 * transfer had completed, and is closed when it was cut short.
 */
void
HttpRelease(HttpTransfer *t)
{
	if (t == NULL)
		return;
	HttpGateDone(t);
	if (t->easy)
	{
		if (t->attached)
			curl_multi_remove_handle(multi, (CURL *) t->easy);
		easy_put((CURL *) t->easy);
	}
	if (t->header_list)
		curl_slist_free_all((struct curl_slist *) t->header_list);
	if (t->mime)
		curl_mime_free((curl_mime *) t->mime);
	if (t->body_file)
		fclose(t->body_file);
	if (t->response_file)
		fclose(t->response_file);
	free(t->owned_body);
	free(t->data);
	unlink_done(t);
	if (t->idle_timeout_ms > 0)
		nidle_watched--;
	if (t->owner_ref)
		*t->owner_ref = NULL;
	if (t->prev)
		t->prev->next = t->next;
	else
		transfers = t->next;
	if (t->next)
		t->next->prev = t->prev;
	ntransfers--;
	free(t);
}

/* Release every live transfer (or only those bound to a transaction). */
void
HttpReleaseAll(bool xact_bound_only)
{
	HttpTransfer *t = transfers;

	while (t)
	{
		HttpTransfer *next = t->next;

		if (!xact_bound_only || t->xact_bound)
			HttpRelease(t);
		t = next;
	}
}

/* Number of transfers still running. */
int
HttpInFlight(void)
{
	int			n = 0;
	HttpTransfer *t;

	for (t = transfers; t; t = t->next)
		if (t->outcome == HTTP_RUNNING)
			n++;
	return n;
}

/* A transfer has finished: queue it for HttpNextDone. */
static void
push_done(HttpTransfer *t)
{
	if (t->on_done_list || t->reported)
		return;
	t->on_done_list = true;
	t->done_next = NULL;
	t->done_prev = done_tail;
	if (done_tail)
		done_tail->done_next = t;
	else
		done_head = t;
	done_tail = t;
}

/* Take a transfer off the queue of finished ones. */
static void
unlink_done(HttpTransfer *t)
{
	if (!t->on_done_list)
		return;
	if (t->done_prev)
		t->done_prev->done_next = t->done_next;
	else
		done_head = t->done_next;
	if (t->done_next)
		t->done_next->done_prev = t->done_prev;
	else
		done_tail = t->done_prev;
	t->done_next = t->done_prev = NULL;
	t->on_done_list = false;
}

/*
 * Had the whole request gone out when a transfer failed below HTTP?  Then
 * the provider may have run it (and bills it) though no answer came: a
 * timeout after the request was sent, a connection cut before the status.
 * A request that never reached the host (refused, unresolved, a proxy or
 * a certificate that refused) was not sent.
 */
static void
note_sent(HttpTransfer *t, CURL *e)
{
	curl_off_t	up = 0;
	curl_off_t	want = 0;

	t->request_sent = false;
	if (t->unreachable || t->cause == HTTP_CAUSE_PROXY_REFUSED ||
		t->cause == HTTP_CAUSE_PROXY_CONNECT || t->cause == HTTP_CAUSE_PROXY_DNS)
		return;
	if (curl_easy_getinfo(e, CURLINFO_SIZE_UPLOAD_T, &up) != CURLE_OK || up <= 0)
		return;
	(void) curl_easy_getinfo(e, CURLINFO_CONTENT_LENGTH_UPLOAD_T, &want);
	t->request_sent = (want <= 0 || up >= want);
}

/* Collect finished transfers from curl and record how they ended. */
static void
collect_finished(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		HttpTransfer *t = NULL;
		CURL	   *e = msg->easy_handle;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **) &t);
		if (t == NULL)
			continue;
		if (msg->data.result == CURLE_OK)
		{
			long		code = 0;

			long		version = 0;

			curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
			t->status = code;
			t->headers_done = true;
			t->outcome = HTTP_COMPLETE;
			if (t->gate && curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &version) == CURLE_OK)
				HttpGateLearn(t, version);
		}
		else if (t->outcome != HTTP_TOO_BIG)
		{
			t->outcome = HTTP_TRANSPORT_ERROR;
			t->timed_out = (msg->data.result == CURLE_OPERATION_TIMEDOUT);
			t->unresolved = (msg->data.result == CURLE_COULDNT_RESOLVE_HOST ||
							 msg->data.result == CURLE_COULDNT_RESOLVE_PROXY);
			t->cause = HttpClassify(e, msg->data.result, t);
			/* what a proxy answered for itself is no status of the provider's */
			if (t->cause == HTTP_CAUSE_PROXY_REFUSED)
				t->status = 0;
			t->unreachable = (t->unresolved || msg->data.result == CURLE_COULDNT_CONNECT);
			if (t->timed_out)
			{
				/*
				 * A timeout counts when no connection was made: a slow reply
				 * is not a host down.  A request sent on a connection made
				 * before (kept alive, or a stream of an HTTP/2 connection)
				 * has no connect time of its own, but it got as far as its
				 * transfer (pretransfer time).
				 */
				curl_off_t	connected = 0;
				curl_off_t	pretransfer = 0;

				curl_easy_getinfo(e, CURLINFO_CONNECT_TIME_T, &connected);
				curl_easy_getinfo(e, CURLINFO_PRETRANSFER_TIME_T, &pretransfer);
				t->unreachable = (connected == 0 && pretransfer == 0);
			}
			/* a process out of descriptors says nothing of the host */
			if (t->cause == HTTP_CAUSE_DESCRIPTORS)
				t->unreachable = false;
			note_sent(t, e);
			/* libcurl says "out of memory" of a header line over 100 kB */
			if (msg->data.result == CURLE_OUT_OF_MEMORY && t->errbuf[0] == '\0')
				t->headers_too_big = true;
			if (t->headers_too_big)
				snprintf(t->errbuf, sizeof(t->errbuf),
						 "The response headers are larger than pg_llm reads (a header line over 100 kB, or %d kB in all)",
						 HTTP_MAX_HEADERS / 1024);
			if (t->errbuf[0] == '\0')
				strlcpy(t->errbuf, curl_easy_strerror(msg->data.result),
						sizeof(t->errbuf));
		}
		curl_multi_remove_handle(multi, e);
		t->attached = false;
		HttpGateDone(t);
		push_done(t);
	}
}

/*
 * Fail transfers that received nothing for their idle timeout (a stream
 * that went quiet).  curl's own low-speed check averages over a window of
 * seconds; this one is exact.  Returns the milliseconds until the next
 * idle deadline, or -1 when none.
 */
static long
check_idle(void)
{
	HttpTransfer *t;
	int64		now;
	long		next = -1;

	/* streams have an idle timeout; a thousand plain requests do not */
	if (nidle_watched == 0)
		return -1;
	now = monotonic_us();
	for (t = transfers; t; t = t->next)
	{
		int64		deadline;

		if (t->outcome != HTTP_RUNNING || t->idle_timeout_ms <= 0)
			continue;
		deadline = t->last_activity_us + (int64) t->idle_timeout_ms * 1000;
		if (deadline <= now)
		{
			if (t->attached)
				curl_multi_remove_handle(multi, (CURL *) t->easy);
			t->attached = false;
			HttpGateDone(t);
			t->outcome = HTTP_TRANSPORT_ERROR;
			t->timed_out = true;
			t->cause = HTTP_CAUSE_TIMEOUT;
			note_sent(t, (CURL *) t->easy);
			snprintf(t->errbuf, sizeof(t->errbuf), "Nothing was received for %ld ms", t->idle_timeout_ms);
			push_done(t);
		}
		else if (next < 0 || (deadline - now + 999) / 1000 < next)
			next = (long) ((deadline - now + 999) / 1000);
	}
	return next;
}

/*
 * Build the wait set: the latch, postmaster death and, on Linux, the epoll
 * set of curl's sockets and the client's, which is all it ever holds (it
 * is built once per process).  Elsewhere it is rebuilt from the socket
 * table and the client socket whenever they change.
 */
static void
rebuild_wait_set(void)
{
	int			i;

	if (wait_set)
		FreeWaitEventSet(wait_set);
	wait_set = NULL;
	wait_set = LlmCreateWaitEventSet(nsockets + 4);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	if (IsUnderPostmaster)
		AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
#ifdef HTTP_USE_EPOLL
	if (curl_epfd >= 0)
	{
		AddWaitEventToSet(wait_set, WL_SOCKET_READABLE, curl_epfd, NULL, NULL);
		sockets_changed = false;
		return;
	}
#endif
	if (client_socket != PGINVALID_SOCKET)
	{
		uint32		ev = LlmWaitClientClosed | (client_writable ? WL_SOCKET_WRITEABLE : 0);

		if (ev != 0)
			AddWaitEventToSet(wait_set, ev, client_socket, NULL, NULL);
	}
	for (i = 0; i < nsockets; i++)
	{
		uint32		ev = 0;

		if (sockets[i].what & CURL_POLL_IN)
			ev |= WL_SOCKET_READABLE;
		if (sockets[i].what & CURL_POLL_OUT)
			ev |= WL_SOCKET_WRITEABLE;
		AddWaitEventToSet(wait_set, ev, sockets[i].fd, NULL, NULL);
	}
	sockets_changed = false;
}

/*
 * Wait once for curl's sockets, curl's timer or the latch (at most
 * timeout_ms; -1 waits as long as curl lets us), and let curl act on what
 * happened.  Returns true when the latch was set.  Interrupts are checked
 * before returning, so a cancel raises its error from here; callers hold
 * their transfers in PG_TRY blocks or memory context callbacks.
 */
bool
HttpPoll(long timeout_ms)
{
	WaitEvent	events[64];
	int			nev;
	int			i;
	int			running;
	bool		latch = false;
	long		wait_ms = timeout_ms;

	HttpInit();
	if (sockets_changed || wait_set == NULL)
		rebuild_wait_set();

	{
		long		idle = check_idle();

		if (idle >= 0 && (wait_ms < 0 || idle < wait_ms))
			wait_ms = idle;
	}
	if (timer_deadline_us >= 0)
	{
		int64		left = timer_deadline_us - monotonic_us();
		long		ms = left <= 0 ? 0 : (long) ((left + 999) / 1000);

		if (wait_ms < 0 || ms < wait_ms)
			wait_ms = ms;
	}

	nev = WaitEventSetWait(wait_set, wait_ms, events, lengthof(events),
						   LlmWaitEventHttp);
	for (i = 0; i < nev; i++)
	{
		WaitEvent  *we = &events[i];

		if (we->events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			latch = true;
		}
		else if (client_socket != PGINVALID_SOCKET && we->fd == client_socket)
		{
			/* the same flags a failed send or client_connection_check_interval sets */
			if (we->events & LlmWaitClientClosed)
			{
				ClientConnectionLost = true;
				InterruptPending = true;
			}
		}
#ifdef HTTP_USE_EPOLL
		else if (curl_epfd >= 0 && we->fd == curl_epfd)
		{
			struct epoll_event ready[256];
			int			nready = epoll_wait(curl_epfd, ready, lengthof(ready), 0);
			int			j;

			for (j = 0; j < nready; j++)
			{
				int			mask = 0;

				if (ready[j].data.fd == epoll_client && epoll_client != PGINVALID_SOCKET)
				{
					/* the client hung up: as a failed send would say */
					if (ready[j].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
					{
						ClientConnectionLost = true;
						InterruptPending = true;
					}
					continue;
				}

				if (ready[j].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
					mask |= CURL_CSELECT_IN;
				if (ready[j].events & EPOLLOUT)
					mask |= CURL_CSELECT_OUT;
				if (ready[j].events & EPOLLERR)
					mask |= CURL_CSELECT_ERR;
				curl_multi_socket_action(multi, ready[j].data.fd, mask, &running);
			}
		}
#endif
		else if (we->events & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE))
		{
			int			mask = 0;

			if (we->events & WL_SOCKET_READABLE)
				mask |= CURL_CSELECT_IN;
			if (we->events & WL_SOCKET_WRITEABLE)
				mask |= CURL_CSELECT_OUT;
			curl_multi_socket_action(multi, we->fd, mask, &running);
		}
	}
	if (timer_deadline_us >= 0 && monotonic_us() >= timer_deadline_us)
	{
		timer_deadline_us = -1;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	collect_finished();
	HttpGatePump();
	(void) check_idle();
	CHECK_FOR_INTERRUPTS();
	return latch;
}

/*
 * The socket of this backend's client, watched while waiting on providers
 * (HttpWatchClient), or PGINVALID_SOCKET for a background process or a
 * client that is not a frontend connection.
 */
pgsocket
HttpClientSocket(void)
{
	if (whereToSendOutput != DestRemote || MyProcPort == NULL)
		return PGINVALID_SOCKET;
	return MyProcPort->sock;
}

/*
 * Watch the backend's own client while waiting on providers (sock is
 * MyProcPort's socket; PGINVALID_SOCKET stops).  A client that goes away
 * ends the wait at once, as a lost connection, instead of when the
 * provider next sends something or the reply is done: nobody is left to
 * read it and the provider bills for every token.  With writable, the
 * wait also ends when the client's socket can take more bytes: a stream
 * waiting on its provider watches its client this way, so rows a slow
 * client could not take yet leave as soon as it can.
 */
void
HttpWatchClient(pgsocket sock, bool writable)
{
#ifdef HTTP_USE_EPOLL
	if (curl_epfd >= 0)
	{
		struct epoll_event ev;
		uint32		want;

		/*
		 * The client socket sits in the epoll set of curl's sockets.  It
		 * stays there between calls, watched for a hang-up only (a client
		 * that is gone is gone whoever waits), so that a call costs no
		 * epoll_ctl at all; only the writable watch of a stream is
		 * switched on and off.
		 */
		client_socket = sock;
		client_writable = writable;
		if (sock == PGINVALID_SOCKET)
		{
			if (epoll_client == PGINVALID_SOCKET || !(epoll_client_events & EPOLLOUT))
				return;
			sock = epoll_client;
			writable = false;
		}
		want = (LlmWaitClientClosed != 0 ? EPOLLRDHUP : 0) | (writable ? EPOLLOUT : 0);
		if (sock == epoll_client && want == epoll_client_events)
			return;
		if (epoll_client != PGINVALID_SOCKET && sock != epoll_client)
		{
			(void) epoll_ctl(curl_epfd, EPOLL_CTL_DEL, epoll_client, NULL);
			epoll_client = PGINVALID_SOCKET;
		}
		memset(&ev, 0, sizeof(ev));
		ev.data.fd = sock;
		ev.events = want ? want : EPOLLONESHOT;
		if (epoll_client == sock)
			(void) epoll_ctl(curl_epfd, EPOLL_CTL_MOD, sock, &ev);
		else if (epoll_ctl(curl_epfd, EPOLL_CTL_ADD, sock, &ev) == 0)
			epoll_client = sock;
		epoll_client_events = want;
		return;
	}
#endif
	if (sock == client_socket && writable == client_writable)
		return;
	client_socket = sock;
	client_writable = writable;
	sockets_changed = true;
}

/* Wait until a transfer has finished, one way or another. */
void
HttpWaitDone(HttpTransfer *t)
{
	while (t->outcome == HTTP_RUNNING)
		HttpPoll(-1);
}

/* Wait until the final response's headers are in, or the transfer ended. */
void
HttpWaitHeaders(HttpTransfer *t)
{
	while (t->outcome == HTTP_RUNNING && !t->headers_done)
		HttpPoll(-1);
}

/*
 * Wait until unread body bytes are there, or the transfer ended.  The idle
 * clock counts only while someone waits: a client that fetches a stream's
 * rows slowly must not make the provider look silent.
 */
void
HttpWaitData(HttpTransfer *t)
{
	int64		now = monotonic_us();

	if (t->last_activity_us < now)
		t->last_activity_us = now;
	while (t->outcome == HTTP_RUNNING && t->len == t->consumed)
		HttpPoll(-1);
}

/*
 * Mark n more bytes as read.  When everything is read the buffer starts
 * over, so a long stream never holds more than its unread part.
 */
void
HttpConsume(HttpTransfer *t, size_t n)
{
	t->consumed += n;
	if (t->consumed >= t->len)
	{
		t->consumed = 0;
		t->len = 0;
	}
	else if (t->consumed > 65536 && t->consumed > t->len / 2)
	{
		memmove(t->data, t->data + t->consumed, t->len - t->consumed);
		t->len -= t->consumed;
		t->consumed = 0;
	}
}

/*
 * The next finished transfer not yet handed out, for callers that run
 * many at once (chat_many, the worker).
 */
HttpTransfer *
HttpNextDone(void)
{
	HttpTransfer *t = done_head;

	if (t == NULL)
		return NULL;
	unlink_done(t);
	t->reported = true;
	return t;
}

/* How long a request to a provider may take and how much it may bring back: the llm.* settings of every request. */
void
HttpDefineSettings(void)
{
	DefineCustomIntVariable("llm.connect_timeout",
							"Time allowed to connect to a provider.",
							"Providers can override it with the connect_timeout_ms option.",
							&llm_connect_timeout_ms, 10000, 1, INT_MAX,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.timeout",
							"Total time allowed for one non-streaming request to a provider.",
							"0 means no limit. Providers can override it with the timeout_ms option.",
							&llm_timeout_ms, 300000, 0, INT_MAX,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.low_speed_time",
							"A non-streaming request slower than llm.low_speed_limit for this long is aborted.",
							"0 turns the check off.",
							&llm_low_speed_time, 0, 0, INT_MAX,
							PGC_USERSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.low_speed_limit",
							"Bytes per second below which a transfer counts as stalled.",
							NULL, &llm_low_speed_limit, 1, 1, INT_MAX,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.stream_idle_timeout",
							"A stream that sends nothing (not even a keep-alive) for this long is aborted.",
							NULL, &llm_stream_idle_timeout, 60, 1, INT_MAX,
							PGC_USERSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.max_response_size",
							"Largest response body accepted from a provider.",
							"A role that is not a superuser may only lower it.",
							&llm_max_response_size_kb, 16384, 1, INT_MAX / 1024,
							PGC_USERSET, GUC_UNIT_KB, check_max_response_size, NULL, NULL);
}
