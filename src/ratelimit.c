/*-------------------------------------------------------------------------
 *
 * ratelimit.c
 *	  Traffic control per provider endpoint, held in shared memory for
 *	  every backend and worker of the cluster at once.
 *
 *	  An endpoint is its protocol, base_url and key (so two providers that
 *	  name the same relay with the same key share its limits, and every
 *	  database sees the same state).  The breakers (a key refused, a host
 *	  down) are kept per path: the endpoint and the proxy it is reached
 *	  through (the provider's proxy option, or the server environment's),
 *	  so that a dead proxy, or a proxy's own refusal, says nothing of the
 *	  same endpoint reached direct or through another proxy; a path
 *	  without a proxy is its endpoint's own entry.  For each, pg_llm keeps:
 *
 *	  - rpm_limit and tpm_limit as two generic cell rate algorithms: each
 *		call takes the next free turn (a request, or its estimated tokens,
 *		spread evenly over the minute), with a burst of one second's worth.
 *		A caller that can wait takes its turn at once and sleeps until it
 *		comes (callers are served in order, without polling); the worker
 *		and chat_many only look, and come back when a turn is free.  One
 *		call counts for at most one minute of a limit.  Whatever way a call
 *		ends (a reply, an error, a cancel, a timeout, a stream cut short),
 *		what it took is settled: a turn it never used is given back, and
 *		its token estimate is replaced by the tokens it used.  A limit that
 *		is changed applies at once to the turns already taken, and
 *		llm.clear_cooldown() gives every turn back.
 *	  - a cooldown: a 429, 503 or 529 with Retry-After (or retry-after-ms)
 *		stops every sender until then (at most llm.max_cooldown: a
 *		provider's number never stops the cluster for longer); a 429 or
 *		529 without one starts a short cooldown that doubles on repeats
 *		(1 s to 60 s, at most llm.max_cooldown) and ends with the next
 *		success.  An error event inside a stream that stands for a 429 or
 *		a 529 (rate_limit_error, overloaded_error, rate_limit_exceeded)
 *		counts as that status answered over HTTP.  Rate-limit headers that say nothing remains
 *		(x-ratelimit-remaining-*, anthropic-ratelimit-*-remaining) pace
 *		the senders until their reset, before a 429 happens.
 *	  - a route out of quota (insufficient_quota, billing_error, 402) is
 *		disabled for the provider's quota_cooldown: calls go to the next
 *		route of their model.
 *	  - a key the provider refused (401 or 403, twice in a row, so that
 *		one odd answer does not count): nothing more is sent to
 *		it, the callers fail at once (the worker's items wait), until the
 *		key changes (another key is another endpoint) or a recheck after
 *		AUTH_RECHECK_MS gets through.
 *	  - a host that cannot be reached (connection refused, a name that
 *		does not resolve, a timeout) twice in a row is down: calls go to
 *		their next route at once, or fail at once on their last one,
 *		until one probe after a short interval (5 s, doubling up to 60 s)
 *		gets an answer.
 *	  - counts of the last minute (requests, tokens, 429s) and of the
 *		callers waiting, for llm.provider_status.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "citus_remote.h"
#include "config.h"
#include "http.h"
#include "ratelimit.h"
#include "shmem.h"
#include "usage.h"

int			llm_max_cooldown = 600;

#define LIMIT_ENDPOINTS 256
#define LIMIT_REASON_LEN 128
#define COOLDOWN_FIRST_MS 1000
#define COOLDOWN_MAX_MS 60000
#define BURST_USEC 1000000		/* one second's worth above the steady rate */
#define AUTH_AFTER 2			/* 401s or 403s in a row: the key is refused */
#define AUTH_RECHECK_MS 30000	/* a refused key is tried again after this */
#define DOWN_AFTER 2			/* transport failures in a row: the host is down */
#define DOWN_FIRST_MS 5000
#define DOWN_MAX_MS 60000

typedef struct RateEndpoint
{
	uint64		key;			/* 0: a free entry */
	char		name[NAMEDATALEN];	/* the provider's name, as last used */
	Oid			dboid;
	TimestampTz last_used;
	int			rpm_limit;		/* as last configured; 0: none */
	int			tpm_limit;
	TimestampTz req_tat;		/* next free request turn */
	TimestampTz tok_tat;		/* next free token turn */
	TimestampTz cooldown_until;
	int			cooldown_ms;	/* the last hintless cooldown, for doubling */
	char		cooldown_reason[LIMIT_REASON_LEN];
	TimestampTz disabled_until;
	int			waiting;
	/* the last minute, one slot a second */
	int64		second[60];
	int32		requests[60];
	int64		tokens[60];
	int32		limited[60];	/* 429s */
	TimestampTz last_429;
	/* a key refused: since when, with which status, and the next recheck */
	int			auth_failures;	/* in a row */
	TimestampTz auth_failed_at;
	int			auth_status;
	TimestampTz auth_recheck_at;
	/* a host that cannot be reached */
	int			transport_failures; /* in a row */
	TimestampTz down_since;
	TimestampTz down_until;		/* the next probe */
	int			down_ms;		/* the interval before it */
	char		down_error[LIMIT_REASON_LEN];
	bool		proxied;		/* a path through a proxy: down is the proxy */
} RateEndpoint;

typedef struct RateShared
{
	LWLock	   *lock;
	RateEndpoint endpoints[LIMIT_ENDPOINTS];
} RateShared;

static RateShared *limits = NULL;

/* what RateLimitAsk said of a refused key or a host down, for errors */
static char *last_detail = NULL;

static Size
ratelimit_size(void)
{
	return sizeof(RateShared);
}

/* Attach the endpoints' state (zeroed the first time: nothing known). */
static void
ratelimit_attach(void *mem, bool found, LWLockPadded *locks)
{
	limits = (RateShared *) mem;
	if (!found)
		limits->lock = &locks[0].lock;
}

const LlmShmemPart RateLimitShmemPart = {
	.name = "pg_llm limits",
	.size = ratelimit_size,
	.nlocks = 1,
	.attach = ratelimit_attach,
};

/*
 * The key of a route's endpoint: its protocol, its base_url and where its
 * key comes from.
 */
static uint64
endpoint_key(const LlmProvider *p)
{
	StringInfoData s;
	uint64		h;

	initStringInfo(&s);
	appendStringInfo(&s, "%s%c%s%c%s%c%s", p->ops->name, 0, p->base_url, 0,
					 p->api_key ? p->api_key : "", 0, p->api_key_env ? p->api_key_env : "");
	h = hash_bytes_extended((const unsigned char *) s.data, s.len, 0x706c6c6d);
	pfree(s.data);
	return h ? h : 1;
}

/*
 * The key of a route's path, for its breakers: its endpoint's, and the
 * proxy its requests go through (its credentials too: other credentials
 * may be let through).  Without a proxy, the endpoint's key.
 */
static uint64
path_key(const LlmProvider *p, uint64 ekey)
{
	const char *source;
	const char *proxy = HttpProxyFor(&p->transport, p->base_url, &source);
	uint64		h;

	if (proxy == NULL)
		return ekey;
	h = hash_bytes_extended((const unsigned char *) proxy, strlen(proxy), ekey);
	return (h == 0 || h == ekey) ? ekey + 1 : h;
}

/*
 * The entry of an endpoint or a path (lock held exclusively), made if need
 * be, never in place of keep (the entry the caller holds already).
 */
static RateEndpoint *
endpoint_keep(const LlmProvider *p, uint64 key, TimestampTz now, const RateEndpoint *keep)
{
	RateEndpoint *free_e = NULL;
	RateEndpoint *oldest = NULL;
	int			i;

	for (i = 0; i < LIMIT_ENDPOINTS; i++)
	{
		RateEndpoint *e = &limits->endpoints[i];

		if (e->key == key)
			return e;
		if (e->key == 0 && free_e == NULL)
			free_e = e;
		if (e->key != 0 && e->waiting == 0 && e != keep &&
			(oldest == NULL || e->last_used < oldest->last_used))
			oldest = e;
	}
	if (free_e == NULL)
		free_e = oldest;		/* the endpoint unused the longest */
	if (free_e == NULL)
		return NULL;
	memset(free_e, 0, sizeof(RateEndpoint));
	free_e->key = key;
	strlcpy(free_e->name, p->name, NAMEDATALEN);
	free_e->dboid = MyDatabaseId;
	free_e->last_used = now;
	return free_e;
}

static RateEndpoint *
endpoint(const LlmProvider *p, uint64 key, TimestampTz now)
{
	return endpoint_keep(p, key, now, NULL);
}

/* The keys of a route's endpoint and path, taken before the lock. */
typedef struct RateKeys
{
	uint64		endpoint;
	uint64		path;
} RateKeys;

static RateKeys
route_keys(const LlmProvider *p)
{
	RateKeys	k;

	k.endpoint = endpoint_key(p);
	k.path = path_key(p, k.endpoint);
	return k;
}

/*
 * A route's endpoint and its path (lock held exclusively): *path is
 * *e itself when the route goes direct.  Either may be NULL when the
 * table is full of callers waiting.
 */
static void
endpoint_and_path(const LlmProvider *p, RateKeys k, TimestampTz now,
				  RateEndpoint **e, RateEndpoint **path)
{
	uint64		ekey = k.endpoint;
	uint64		pkey = k.path;

	*e = endpoint(p, ekey, now);
	*path = pkey == ekey ? *e : endpoint_keep(p, pkey, now, *e);
	if (*path && *path != *e)
	{
		strlcpy((*path)->name, p->name, NAMEDATALEN);
		(*path)->dboid = MyDatabaseId;
		(*path)->last_used = now;
		(*path)->proxied = true;
	}
}

/*
 * The endpoint and path of a provider's route, with the lock of the
 * limits held (exclusive); false, with the lock released, when shared
 * memory has no room for them.
 */
static bool
lock_endpoint(const LlmProvider *p, TimestampTz now, RateEndpoint **e, RateEndpoint **path)
{
	RateKeys	keys = route_keys(p);

	LWLockAcquire(limits->lock, LW_EXCLUSIVE);
	endpoint_and_path(p, keys, now, e, path);
	if (*e == NULL || *path == NULL)
	{
		LWLockRelease(limits->lock);
		return false;
	}
	return true;
}

/*
 * The turns already taken under a limit that changed, at the new limit's
 * pace: the same number of turns ahead, each as long as the new limit
 * makes it (none when there was no limit).
 */
static void
rescale(TimestampTz *tat, int old_limit, int new_limit, TimestampTz now)
{
	if (*tat <= now || old_limit == new_limit || new_limit <= 0)
		return;
	if (old_limit <= 0)
		*tat = now;
	else
		*tat = now + (TimestampTz) ((double) (*tat - now) * old_limit / new_limit);
}

/* Note the configured limits and who uses the endpoint. */
static void
endpoint_touch(RateEndpoint *e, const LlmProvider *p, TimestampTz now)
{
	int			rpm = Max(p->rpm_limit, 0);
	int			tpm = Max(p->tpm_limit, 0);

	strlcpy(e->name, p->name, NAMEDATALEN);
	e->dboid = MyDatabaseId;
	e->last_used = now;
	rescale(&e->req_tat, e->rpm_limit, rpm, now);
	rescale(&e->tok_tat, e->tpm_limit, tpm, now);
	e->rpm_limit = rpm;
	e->tpm_limit = tpm;
}

/* What one call may count for under a limit: at most one minute of it. */
static int64
capped(int64 cost, int per_minute)
{
	return per_minute > 0 ? Min(Max(cost, 0), (int64) per_minute) : Max(cost, 0);
}

/* Add to the last minute's counts. */
static void
count(RateEndpoint *e, TimestampTz now, int requests, int64 tokens, int limited)
{
	int64		sec = now / USECS_PER_SEC;
	int			i = (int) (sec % 60);

	if (e->second[i] != sec)
	{
		e->second[i] = sec;
		e->requests[i] = 0;
		e->tokens[i] = 0;
		e->limited[i] = 0;
	}
	e->requests[i] += requests;
	e->tokens[i] += tokens;
	e->limited[i] += limited;
}

/*
 * One generic cell rate algorithm: a call costing `cost` turns of a limit
 * of `per_minute` may go when its theoretical arrival time, less the
 * burst, is not in the future.  Returns the microseconds to wait (0: go),
 * and with take, advances the turn.
 */
static int64
gcra(TimestampTz *tat, int per_minute, int64 cost, TimestampTz now, bool take)
{
	double		interval;
	TimestampTz start;
	int64		wait;

	if (per_minute <= 0 || cost <= 0)
		return 0;
	cost = capped(cost, per_minute);
	interval = 60.0 * USECS_PER_SEC / per_minute;
	start = Max(*tat, now);
	wait = Max((int64) 0, (start - BURST_USEC) - now);
	if (take)
		*tat = start + (TimestampTz) (interval * cost);
	return wait;
}

/*
 * Ask for a turn to send one call (of an estimated `tokens`) on a route.
 * A route out of quota, or a provider cooling down, is not sent to: the
 * caller goes to its next route or comes back at *until.  Over a limit,
 * with reserve the caller takes the next turn (LLM_TURN_RESERVED, unless
 * it is more than max_wait_ms away: LLM_TURN_TOO_LONG) and sends at
 * *until without asking again; without, it comes back at *until.  *why
 * names what holds the call back.
 */
LlmTurn
RateLimitAsk(const LlmRoute *route, int64 tokens, bool reserve, long max_wait_ms,
			 TimestampTz *until, char **why, int64 *charged)
{
	const LlmProvider *p = route->provider;
	TimestampTz now = GetCurrentTimestamp();
	RateEndpoint *e;
	RateEndpoint *path;
	int64		wait_req;
	int64		wait_tok;
	int64		wait;
	LlmTurn		turn = LLM_TURN_GO;
	char	   *detail = NULL;

	*until = now;
	*why = NULL;
	last_detail = NULL;
	*charged = 0;
	/* a Citus worker node takes its turns from the coordinator's limits */
	if (CitusDelegates())
		return CitusRemoteTurn(route, tokens, reserve, max_wait_ms, until, why, charged, &last_detail);
	if (limits == NULL)
		return LLM_TURN_GO;
	if (!lock_endpoint(p, now, &e, &path))
		return LLM_TURN_GO;
	endpoint_touch(e, p, now);
	if (e->disabled_until > now)
	{
		*until = e->disabled_until;
		*why = psprintf("provider \"%s\" is out of quota", p->name);
		LWLockRelease(limits->lock);
		return LLM_TURN_DISABLED;
	}
	if (path->auth_failed_at != 0)
	{
		if (path->auth_recheck_at > now)
		{
			*until = path->auth_recheck_at;
			*why = psprintf("provider \"%s\" refused its key", p->name);
			detail = psprintf("It answered HTTP %d at %s; pg_llm sends nothing more with this key until it changes, or a recheck at %s gets through.",
							  path->auth_status, pstrdup(timestamptz_to_str(path->auth_failed_at)),
							  pstrdup(timestamptz_to_str(path->auth_recheck_at)));
			LWLockRelease(limits->lock);
			last_detail = detail;
			return LLM_TURN_AUTH;
		}
		/* this call is the recheck; the others wait for its answer */
		path->auth_recheck_at = TimestampTzPlusMilliseconds(now, AUTH_RECHECK_MS);
	}
	if (path->down_ms > 0)
	{
		if (path->down_until > now)
		{
			*until = path->down_until;
			*why = path->proxied ?
				psprintf("the proxy of provider \"%s\" is down", p->name) :
				psprintf("provider \"%s\" is down", p->name);
			detail = psprintf("It could not be reached since %s (%s); no request is sent to it until a probe at %s gets an answer.",
							  pstrdup(timestamptz_to_str(path->down_since)), path->down_error,
							  pstrdup(timestamptz_to_str(path->down_until)));
			LWLockRelease(limits->lock);
			last_detail = detail;
			return LLM_TURN_DOWN;
		}
		/* this call is the probe; the others wait for its answer */
		path->down_until = TimestampTzPlusMilliseconds(now, path->down_ms);
	}
	if (e->cooldown_until > now)
	{
		*until = e->cooldown_until;
		*why = psprintf("provider \"%s\" is cooling down: %s", p->name, e->cooldown_reason);
		LWLockRelease(limits->lock);
		return LLM_TURN_COOLDOWN;
	}
	wait_req = gcra(&e->req_tat, e->rpm_limit, 1, now, false);
	wait_tok = gcra(&e->tok_tat, e->tpm_limit, tokens, now, false);
	wait = Max(wait_req, wait_tok);
	if (wait > 0)
	{
		*until = now + wait;
		*why = wait_req >= wait_tok ?
			psprintf("provider \"%s\" allows %d requests a minute (rpm_limit)", p->name, e->rpm_limit) :
			psprintf("provider \"%s\" allows %d tokens a minute (tpm_limit)", p->name, e->tpm_limit);
		if (!reserve)
			turn = LLM_TURN_WAIT;
		else if (max_wait_ms > 0 && wait > (int64) max_wait_ms * 1000)
			turn = LLM_TURN_TOO_LONG;
		else
			turn = LLM_TURN_RESERVED;
	}
	if (turn == LLM_TURN_GO || turn == LLM_TURN_RESERVED)
	{
		(void) gcra(&e->req_tat, e->rpm_limit, 1, now, true);
		(void) gcra(&e->tok_tat, e->tpm_limit, tokens, now, true);
		*charged = capped(tokens, e->tpm_limit);
		count(e, now, 1, *charged, 0);
	}
	LWLockRelease(limits->lock);
	return turn;
}

/*
 * Settle a turn a call took on a route: it was charged `charged` tokens
 * (RateLimitAsk) and used `used` (at most one minute of the limit counts);
 * the difference goes back, or is added.  A turn never used to send (the
 * call was cancelled while it waited, or failed before sending) gives its
 * request back too.
 */
void
RateLimitSettle(const LlmRoute *route, int64 charged, int64 used, bool unsent)
{
	TimestampTz now = GetCurrentTimestamp();
	RateEndpoint *e;

	if (CitusDelegates())
	{
		CitusRemoteSettle(route, charged, used, unsent);
		return;
	}
	if (limits == NULL)
		return;
	LWLockAcquire(limits->lock, LW_EXCLUSIVE);
	e = endpoint(route->provider, endpoint_key(route->provider), now);
	if (e)
	{
		if (e->tpm_limit > 0)
		{
			int64		back = charged - capped(used, e->tpm_limit);

			e->tok_tat -= (TimestampTz) (60.0 * USECS_PER_SEC / e->tpm_limit * back);
			count(e, now, 0, -back, 0);
		}
		if (unsent && e->rpm_limit > 0)
		{
			e->req_tat -= (TimestampTz) (60.0 * USECS_PER_SEC / e->rpm_limit);
			count(e, now, -1, 0, 0);
		}
	}
	LWLockRelease(limits->lock);
}

/* The longest a provider's number keeps a cooldown: llm.max_cooldown. */
static int64
cooldown_ms(double secs)
{
	double		ms = secs * 1000.0;

	if (!(ms > 0))				/* NaN too */
		return 0;
	return (int64) Min(ceil(ms), (double) llm_max_cooldown * 1000.0);
}

/*
 * Does a status (an HTTP answer, or an error a provider sent inside a 2xx
 * answer, as the status its type stands for) cool a provider down for the
 * whole cluster?  A 429 (rate-limited) and a 529 (overloaded) do, with a
 * wait or without; a 503 when it says how long.  The call engine hands a
 * call to its next route at once on the same rule.
 */
bool
RateLimitCoolsDown(long status, double retry_after_s)
{
	return status == 429 || status == 529 || (status == 503 && retry_after_s > 0);
}

/*
 * Start (or lengthen) an endpoint's cooldown (lock held): the provider's
 * wait when it gave one, else a cooldown of 1 s that doubles on repeats up
 * to 60 s and ends with the next success; either at most llm.max_cooldown.
 * inband: the status an error event inside a stream stands for.
 */
static void
cool_down(RateEndpoint *e, TimestampTz now, long status, double retry_after_s, bool inband)
{
	int64		ms;
	const char *what = inband ? "an error in a stream standing for HTTP" : "HTTP";

	if (retry_after_s > 0)
	{
		ms = cooldown_ms(retry_after_s);
		if (ms < retry_after_s * 1000.0)
			snprintf(e->cooldown_reason, LIMIT_REASON_LEN,
					 "%s %ld with a wait of %.3g s, held to llm.max_cooldown (%d s)", what, status,
					 retry_after_s, llm_max_cooldown);
		else
			snprintf(e->cooldown_reason, LIMIT_REASON_LEN, "%s %ld with a wait of %.3g s", what, status,
					 retry_after_s);
	}
	else
	{
		ms = e->cooldown_ms > 0 ? Min(e->cooldown_ms * 2, COOLDOWN_MAX_MS) : COOLDOWN_FIRST_MS;
		e->cooldown_ms = (int) ms;
		/* a provider's silence never stops the cluster longer than its number could */
		ms = Min(ms, (int64) llm_max_cooldown * 1000);
		snprintf(e->cooldown_reason, LIMIT_REASON_LEN, "%s %ld without a wait, %lld ms", what, status,
				 (long long) ms);
	}
	e->cooldown_until = Max(e->cooldown_until, TimestampTzPlusMilliseconds(now, ms));
	if (status == 429)
	{
		count(e, now, 0, 0, 1);
		e->last_429 = now;
	}
}

/* A key refused once more (401, 403): twice in a row stops it (lock held). */
static void
key_refused(RateEndpoint *path, TimestampTz now, long status)
{
	if (++path->auth_failures >= AUTH_AFTER)
	{
		path->auth_failed_at = now;
		path->auth_status = (int) status;
		path->auth_recheck_at = TimestampTzPlusMilliseconds(now, AUTH_RECHECK_MS);
	}
}

/* A route out of quota: left alone for its quota_cooldown (lock held). */
static void
out_of_quota(RateEndpoint *e, const LlmProvider *p, TimestampTz now)
{
	int			secs = p->quota_cooldown > 0 ? p->quota_cooldown : 600;

	e->disabled_until = TimestampTzPlusMilliseconds(now, (int64) secs * 1000);
}

/*
 * After an attempt on a route: a cooldown for a 429 or a 529 (or a 503
 * with a wait), a disabled route for an exhausted quota, and the pace the
 * rate-limit headers ask for.  Every wait a provider's header asks for is
 * capped at llm.max_cooldown.
 */
void
RateLimitAfter(const LlmRoute *route, const HttpTransfer *t, bool quota)
{
	const LlmProvider *p = route->provider;
	TimestampTz now = GetCurrentTimestamp();
	RateEndpoint *e;
	RateEndpoint *path;
	long		status = t ? t->status : 0;

	if (CitusDelegates())
	{
		CitusRemoteAfter(route, t, quota);
		return;
	}
	if (limits == NULL)
		return;
	if (!lock_endpoint(p, now, &e, &path))
		return;
	/* a host that answered is up; one that could not be reached twice is down */
	if (t && t->outcome == HTTP_TRANSPORT_ERROR && t->unreachable)
	{
		if (++path->transport_failures >= DOWN_AFTER)
		{
			if (path->down_ms == 0)
				path->down_since = now;
			path->down_ms = path->down_ms > 0 ? Min(path->down_ms * 2, DOWN_MAX_MS) : DOWN_FIRST_MS;
			path->down_until = TimestampTzPlusMilliseconds(now, path->down_ms);
			snprintf(path->down_error, LIMIT_REASON_LEN, "%s", t->errbuf[0] ? t->errbuf :
					 t->timed_out ? "timed out" : "could not connect");
		}
	}
	else if (t && t->outcome != HTTP_REFUSED)
	{
		/* it answered, if only to reset the connection */
		path->transport_failures = 0;
		path->down_ms = 0;
		path->down_until = 0;
		path->down_since = 0;
	}
	/* a key refused, or accepted again */
	if (status == 401 || status == 403)
		key_refused(path, now, status);
	else if (status >= 200 && status < 300)
	{
		path->auth_failures = 0;
		path->auth_failed_at = 0;
	}

	if (quota)
		out_of_quota(e, p, now);
	else if (RateLimitCoolsDown(status, t ? t->retry_after_s : -1))
		cool_down(e, now, status, t->retry_after_s, false);
	else if (t && t->status >= 200 && t->status < 300)
	{
		e->cooldown_ms = 0;
		/* the provider says nothing is left: quiet until it resets */
		if (t->rl_remaining_requests == 0 && t->rl_reset_requests_s > 0)
		{
			e->cooldown_until = Max(e->cooldown_until,
									TimestampTzPlusMilliseconds(now, cooldown_ms(t->rl_reset_requests_s)));
			snprintf(e->cooldown_reason, LIMIT_REASON_LEN, "no requests remain until the provider's reset");
		}
		if (t->rl_remaining_tokens == 0 && t->rl_reset_tokens_s > 0)
		{
			e->cooldown_until = Max(e->cooldown_until,
									TimestampTzPlusMilliseconds(now, cooldown_ms(t->rl_reset_tokens_s)));
			snprintf(e->cooldown_reason, LIMIT_REASON_LEN, "no tokens remain until the provider's reset");
		}
	}
	LWLockRelease(limits->lock);
}

/*
 * An error a provider sent inside a 2xx answer (an error event of a
 * stream, before or after its first text), as the status its type or code
 * stands for (LlmJudgeStreamError): counted as the same status answered
 * over HTTP would be.  An in-stream rate_limit_error or overloaded_error
 * cools the provider down for the cluster (at most llm.max_cooldown), an
 * in-stream authentication_error counts toward a refused key, an
 * exhausted account disables the route.
 */
void
RateLimitAfterInBand(const LlmRoute *route, long status, bool quota)
{
	const LlmProvider *p = route->provider;
	TimestampTz now = GetCurrentTimestamp();
	RateEndpoint *e;
	RateEndpoint *path;

	if (limits == NULL || (status == 0 && !quota))
		return;
	if (!lock_endpoint(p, now, &e, &path))
		return;
	if (status == 401 || status == 403)
		key_refused(path, now, status);
	if (quota)
		out_of_quota(e, p, now);
	else if (RateLimitCoolsDown(status, -1))
		cool_down(e, now, status, -1, true);
	LWLockRelease(limits->lock);
}

/* The detail of the last refused key or host down RateLimitAsk met. */
const char *
RateLimitDetail(void)
{
	return last_detail ? last_detail : "";
}

/* Is a route's host down (no request goes to it before its probe)? */
bool
RateLimitDown(const LlmRoute *route)
{
	RateEndpoint *e;
	bool		down = false;
	TimestampTz now = GetCurrentTimestamp();

	RateEndpoint *path;
	RateKeys	keys;

	if (limits == NULL)
		return false;
	keys = route_keys(route->provider);
	LWLockAcquire(limits->lock, LW_EXCLUSIVE);
	endpoint_and_path(route->provider, keys, now, &e, &path);
	if (path)
		down = path->down_ms > 0 && path->down_until > now;
	LWLockRelease(limits->lock);
	return down;
}

/* One more (or one less) caller waiting on a route. */
void
RateLimitWaiting(const LlmRoute *route, int delta)
{
	RateEndpoint *e;

	if (limits == NULL)
		return;
	LWLockAcquire(limits->lock, LW_EXCLUSIVE);
	e = endpoint(route->provider, endpoint_key(route->provider), GetCurrentTimestamp());
	if (e)
		e->waiting = Max(0, e->waiting + delta);
	LWLockRelease(limits->lock);
}

/*
 * End a provider's cooldown, its time out of quota, a refused key and a
 * host marked down now (credit was added, the relay is back), and give
 * back every turn taken under its rpm and tpm limits, for every backend:
 * its endpoint, and its path when it goes through a proxy.
 */
void
RateLimitClear(const LlmProvider *p)
{
	RateKeys	keys;
	int			i;

	if (limits == NULL)
		return;
	keys = route_keys(p);
	LWLockAcquire(limits->lock, LW_EXCLUSIVE);
	for (i = 0; i < LIMIT_ENDPOINTS; i++)
		if (limits->endpoints[i].key == keys.endpoint ||
			limits->endpoints[i].key == keys.path)
		{
			limits->endpoints[i].cooldown_until = 0;
			limits->endpoints[i].cooldown_ms = 0;
			limits->endpoints[i].disabled_until = 0;
			limits->endpoints[i].auth_failed_at = 0;
			limits->endpoints[i].auth_failures = 0;
			limits->endpoints[i].down_ms = 0;
			limits->endpoints[i].down_until = 0;
			limits->endpoints[i].transport_failures = 0;
			/* every turn taken is given back: the limits start afresh */
			limits->endpoints[i].req_tat = 0;
			limits->endpoints[i].tok_tat = 0;
		}
	LWLockRelease(limits->lock);
}

/*
 * What the traffic control holds of a provider, for llm.provider_status:
 * its endpoint's counts of the last minute, what holds its senders back
 * and until when (the breakers are its path's, the endpoint's own entry
 * when direct: a refused key first, then a host that is down; then the
 * endpoint's cooldown or time out of quota), the callers waiting, the
 * last 429.
 */
void
RateLimitLook(const LlmProvider *p, RateLimitView *v)
{
	TimestampTz now = GetCurrentTimestamp();
	int64		sec = now / USECS_PER_SEC;
	RateEndpoint copy;
	RateEndpoint path;
	bool		have = false;
	bool		have_path = false;
	int			i;

	memset(v, 0, sizeof(RateLimitView));
	if (limits)
	{
		RateKeys	keys = route_keys(p);

		LWLockAcquire(limits->lock, LW_SHARED);
		for (i = 0; i < LIMIT_ENDPOINTS; i++)
		{
			if (limits->endpoints[i].key == keys.endpoint)
			{
				copy = limits->endpoints[i];
				have = true;
			}
			if (limits->endpoints[i].key == keys.path)
			{
				path = limits->endpoints[i];
				have_path = true;
			}
		}
		LWLockRelease(limits->lock);
	}
	if (have)
		for (i = 0; i < 60; i++)
			if (copy.second[i] > sec - 60)
			{
				v->requests += copy.requests[i];
				v->tokens += copy.tokens[i];
				v->limited += copy.limited[i];
			}
	v->requests = Max(v->requests, 0);
	v->tokens = Max(v->tokens, 0);
	if (have_path && path.auth_failed_at != 0)
	{
		/* a refused key comes first: nothing goes out until it is fixed */
		v->held = true;
		v->until = path.auth_recheck_at;
		v->why = psprintf("authentication failed at %s (HTTP %d): fix the key with llm.alter_provider",
						  timestamptz_to_str(path.auth_failed_at), path.auth_status);
	}
	else if (have_path && path.down_ms > 0)
	{
		v->held = true;
		v->until = path.down_until;
		v->why = psprintf("down since %s: %s; the next probe at the time shown",
						  timestamptz_to_str(path.down_since), path.down_error);
	}
	else if (have && (copy.cooldown_until > now || copy.disabled_until > now))
	{
		v->held = true;
		v->until = Max(copy.cooldown_until, copy.disabled_until);
		v->why = pstrdup(copy.disabled_until > now ? "out of quota" : copy.cooldown_reason);
	}
	if (have)
	{
		v->waiting = copy.waiting;
		v->last_429 = copy.last_429;
	}
}

/* The setting of the traffic control: the longest cooldown. */
void
RateLimitDefineSettings(void)
{
	DefineCustomIntVariable("llm.max_cooldown",
							"Longest a provider's Retry-After or rate-limit reset stops every sender.",
							"A provider asking for more is left alone this long, then tried again.",
							&llm_max_cooldown, 600, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
}
