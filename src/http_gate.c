/*-------------------------------------------------------------------------
 *
 * http_gate.c
 *	  Many requests to one HTTP/2 server over few connections.
 *
 *	  libcurl (7.88) multiplexes the requests that wait for a server's
 *	  first connection (CURLOPT_PIPEWAIT) up to its stream limit; every
 *	  request beyond it opens a connection of its own, and the requests
 *	  after that do not wait for those new connections either.  A thousand
 *	  requests started at once to an HTTP/2 server took 900 connections,
 *	  900 TLS handshakes, where ten would do.
 *
 *	  So requests to a server that may speak HTTP/2 (https without
 *	  http_version 1.1, or h2c) go through a gate per origin.  Until the
 *	  server's protocol is known, as many as one connection carries are
 *	  let through (libcurl's PIPEWAIT puts them on the first connection)
 *	  and the rest wait.  The protocol is known as soon as two of those
 *	  requests are connected: on one socket, HTTP/2; on two, HTTP/1.1, and
 *	  then the gate opens for good.  Over HTTP/2 the gate lets through as
 *	  many requests as the connections it knows of carry, and for the rest
 *	  lets through one "opener" a connection still needed, all at once;
 *	  each opener that is connected adds a connection's worth.  What the
 *	  gate holds costs nothing: the transfer is set up, only not yet given
 *	  to libcurl.  An estimate that is off (a server with a lower stream
 *	  limit, connections the server closed) only means libcurl opens a
 *	  connection more, as it would have anyway.
 *
 *	  With http.c and http_transport.c, the only files that talk to
 *	  libcurl (http_int.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "utils/memutils.h"

#include "http_int.h"

/* requests one connection carries (CURLMOPT_MAX_CONCURRENT_STREAMS) */
#define GATE_STREAMS 100

typedef enum GateProto
{
	GATE_UNKNOWN,
	GATE_H1,
	GATE_H2
} GateProto;

typedef struct GateOrigin
{
	struct GateOrigin *next;
	char		key[256];		/* scheme://host:port */
	GateProto	proto;
	int			attached;		/* its requests given to libcurl, running */
	int			conns;			/* connections known to be up (HTTP/2) */
	int			openers;		/* requests opening a connection */
	int			nheld;
	HttpTransfer *held_head;	/* requests waiting, oldest first */
	HttpTransfer *held_tail;
} GateOrigin;

static GateOrigin *origins = NULL;	/* for the life of the process */
static int	nwaiting = 0;		/* origins with requests held */

/* http.c's, handed down by HttpGateSetup */
static HttpGateAttachFn gate_give = NULL;	/* a transfer to libcurl, now */
static HttpTransfer *const *gate_live = NULL;	/* head of the live transfers */

/*
 * What the gate needs of http.c, set when http.c sets up libcurl (before
 * any transfer starts).
 */
void
HttpGateSetup(HttpGateAttachFn attach, HttpTransfer *const *live)
{
	gate_give = attach;
	gate_live = live;
}

/* The origin of a URL (scheme, host and port as written), or NULL. */
static GateOrigin *
gate_origin(const char *url)
{
	const char *p = strstr(url, "://");
	size_t		n;
	GateOrigin *o;

	if (p == NULL)
		return NULL;
	p += 3;
	n = (p - url) + strcspn(p, "/?#");
	if (n >= sizeof(origins->key))
		return NULL;
	for (o = origins; o; o = o->next)
		if (strlen(o->key) == n && pg_strncasecmp(o->key, url, n) == 0)
			return o;
	o = MemoryContextAllocZero(TopMemoryContext, sizeof(GateOrigin));
	memcpy(o->key, url, n);
	o->key[n] = '\0';
	o->next = origins;
	origins = o;
	return o;
}

/*
 * Has the transfer got its connection (its request is on the way), and
 * did it make that connection (rather than use one that was there)?
 */
static bool
gate_connected(HttpTransfer *t, bool *made)
{
	curl_off_t	pre = 0;
	long		n = 0;

	if (!t->attached || t->easy == NULL)
		return false;
	if (curl_easy_getinfo((CURL *) t->easy, CURLINFO_PRETRANSFER_TIME_T, &pre) != CURLE_OK || pre <= 0)
		return false;
	*made = curl_easy_getinfo((CURL *) t->easy, CURLINFO_NUM_CONNECTS, &n) == CURLE_OK && n > 0;
	return true;
}

static void
gate_attach(GateOrigin *o, HttpTransfer *t, bool opener)
{
	t->gate = o;
	t->gate_counted = true;
	t->gate_opener = opener;
	if (opener)
		o->openers++;

	/*
	 * Once the server is known to multiplex, the gate knows where there is
	 * room: no request waits for a stream of a full connection (what
	 * PIPEWAIT does then, until one of its requests ends), an opener makes
	 * its connection, and a request the estimate got wrong makes one too.
	 */
	if (o->proto == GATE_H2)
		curl_easy_setopt((CURL *) t->easy, CURLOPT_PIPEWAIT, 0L);
	o->attached++;
	gate_give(t);
}

/* Hold a request until the gate lets it through. */
static void
gate_hold(GateOrigin *o, HttpTransfer *t)
{
	t->gate = o;
	t->held = true;
	t->hold_next = NULL;
	if (o->held_tail)
		o->held_tail->hold_next = t;
	else
		o->held_head = t;
	o->held_tail = t;
	if (o->nheld++ == 0)
		nwaiting++;
}

static HttpTransfer *
gate_unhold_first(GateOrigin *o)
{
	HttpTransfer *t = o->held_head;

	o->held_head = t->hold_next;
	if (o->held_head == NULL)
		o->held_tail = NULL;
	t->hold_next = NULL;
	t->held = false;
	if (--o->nheld == 0)
		nwaiting--;
	return t;
}

/*
 * A new request: to libcurl now, or held.  Requests that cannot use
 * HTTP/2 are not gated.
 */
void
HttpGateStart(HttpTransfer *t, const char *url, bool may_multiplex)
{
	GateOrigin *o = may_multiplex ? gate_origin(url) : NULL;

	if (o == NULL || o->proto == GATE_H1)
	{
		if (o)
			gate_attach(o, t, false);
		else
			gate_give(t);
		return;
	}
	if (o->nheld == 0 &&
		((o->proto == GATE_UNKNOWN && o->attached < GATE_STREAMS) ||
		 (o->proto == GATE_H2 && o->attached < o->conns * GATE_STREAMS)))
		gate_attach(o, t, false);
	else
		gate_hold(o, t);
	HttpGatePump();
}

/* A request of the gate is done (finished or released). */
void
HttpGateDone(HttpTransfer *t)
{
	GateOrigin *o = (GateOrigin *) t->gate;

	if (o == NULL)
		return;
	if (t->held)
	{
		HttpTransfer **pp = &o->held_head;
		HttpTransfer *prev = NULL;

		while (*pp && *pp != t)
		{
			prev = *pp;
			pp = &(*pp)->hold_next;
		}
		if (*pp)
		{
			*pp = t->hold_next;
			if (o->held_tail == t)
				o->held_tail = prev;
			if (--o->nheld == 0)
				nwaiting--;
		}
		t->held = false;
	}
	else if (t->gate_counted)
	{
		o->attached--;
		if (t->gate_opener)
			o->openers--;
	}
	t->gate_counted = false;
	t->gate_opener = false;
	t->gate = NULL;
}

/* A finished request says which protocol its server speaks. */
void
HttpGateLearn(HttpTransfer *t, long http_version)
{
	GateOrigin *o = (GateOrigin *) t->gate;

	if (o == NULL || o->proto != GATE_UNKNOWN)
		return;
	if (http_version == CURL_HTTP_VERSION_2_0)
	{
		o->proto = GATE_H2;
		o->conns = Max(o->conns, 1);
	}
	else if (http_version == CURL_HTTP_VERSION_1_1 || http_version == CURL_HTTP_VERSION_1_0)
		o->proto = GATE_H1;
}

/*
 * Let through what may go: after libcurl has acted on the sockets, see
 * which requests got connected, learn the protocol, count connections.
 */
void
HttpGatePump(void)
{
	GateOrigin *o;

	if (nwaiting == 0)
		return;
	for (o = origins; o; o = o->next)
	{
		if (o->nheld == 0)
			continue;
		if (o->proto == GATE_UNKNOWN || o->openers > 0)
		{
			/*
			 * Look at its running requests.  While the protocol is not
			 * known they all wait for the first connection (PIPEWAIT): a
			 * request that got one without making it shares it (HTTP/2);
			 * two that each made one do not (HTTP/1.1).
			 */
			int			made_own = 0;
			HttpTransfer *t;

			for (t = *gate_live; t; t = t->next)
			{
				bool		made;

				if (t->gate != o || !gate_connected(t, &made))
					continue;
				if (t->gate_opener)
				{
					/* its connection is up (or it found room on one) */
					t->gate_opener = false;
					o->openers--;
					if (made)
						o->conns++;
				}
				if (o->proto == GATE_UNKNOWN)
				{
					if (!made)
					{
						o->proto = GATE_H2;
						o->conns = Max(o->conns, 1);
					}
					else if (++made_own >= 2)
						o->proto = GATE_H1;
				}
			}
		}
		if (o->proto == GATE_H1)
		{
			while (o->nheld > 0)
				gate_attach(o, gate_unhold_first(o), false);
			continue;
		}
		if (o->proto == GATE_UNKNOWN)
		{
			/* the first connection's worth (it may all have ended at once) */
			while (o->nheld > 0 && o->attached < GATE_STREAMS)
				gate_attach(o, gate_unhold_first(o), false);
			continue;
		}
		while (o->nheld > 0 && o->attached < o->conns * GATE_STREAMS)
			gate_attach(o, gate_unhold_first(o), false);
		/* one opener for each connection still needed, all at once */
		while (o->nheld > 0 &&
			   o->openers * GATE_STREAMS < o->nheld)
			gate_attach(o, gate_unhold_first(o), true);
	}
}
