/*-------------------------------------------------------------------------
 *
 * http_transport.c
 *	  How libcurl reaches a provider, and what it says when it cannot:
 *	  the proxy (a provider's option, else the server's environment, read
 *	  once per process, with no_proxy matched by libcurl's rules), the CA
 *	  file and client certificate, the HTTP version, the comparison of
 *	  origins, and the cause of a transfer that failed below HTTP (an
 *	  unknown CA, a hostname mismatch, an expired certificate, a proxy
 *	  that refused ...).
 *
 *	  With http.c, the only file that talks to libcurl (http_int.h).
 *	  Nothing here raises an error or allocates outside palloc, except
 *	  the environment's values, kept for the life of the process.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <curl/curl.h>

#include "http_int.h"

#define HTTP_CA_CACHE_S 3600	/* a CA store is read again after this long */

/*
 * The proxy variables of the server's environment, read once per process
 * (curl would read them at every request): what libcurl itself honours,
 * with its precedence.  NULL when unset or empty.
 */
typedef struct EnvProxy
{
	const char *name;
	char	   *value;
} EnvProxy;

enum
{
	ENV_HTTP_PROXY,				/* only the lower-case name, as curl does */
	ENV_HTTPS_PROXY,
	ENV_HTTPS_PROXY_UC,
	ENV_ALL_PROXY,
	ENV_ALL_PROXY_UC,
	ENV_NO_PROXY,
	ENV_NO_PROXY_UC,
	ENV_NPROXY
};
static bool env_read = false;
static EnvProxy env_proxy[ENV_NPROXY] = {
	{"http_proxy"}, {"https_proxy"}, {"HTTPS_PROXY"}, {"all_proxy"}, {"ALL_PROXY"},
	{"no_proxy"}, {"NO_PROXY"}
};

/* Read the proxy variables of the environment, once per process. */
void
HttpReadEnvironment(void)
{
	int			i;

	if (env_read)
		return;
	env_read = true;
	for (i = 0; i < ENV_NPROXY; i++)
	{
		const char *v = getenv(env_proxy[i].name);

		env_proxy[i].value = (v && v[0]) ? strdup(v) : NULL;
	}
}

/* A PEM text (rather than the path of a PEM file)? */
static bool
is_pem(const char *v)
{
	return strncmp(v, "-----BEGIN", 10) == 0;
}

/*
 * How a request reaches its provider: proxy, CA store, client
 * certificate, HTTP version.  Every option is set explicitly, so that
 * libcurl reads no environment variable and no CA directory per request.
 * Peer and host verification stay on whatever is configured.  share is
 * the process's share handle, default_ca_file libcurl's own CA bundle.
 */
void
HttpSetTransport(HttpTransfer *t, CURL *e, const char *url, const HttpTransport *tr,
				 void *share, const char *default_ca_file)
{
	static const HttpTransport defaults;
	const char *source;
	const char *proxy;
	const char *ca_file;
	bool		https = pg_strncasecmp(url, "https://", 8) == 0;

	if (tr == NULL)
		tr = &defaults;

	/* shared TLS sessions; the connections live in the multi handle */
	if (share)
		curl_easy_setopt(e, CURLOPT_SHARE, (CURLSH *) share);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(e, CURLOPT_CA_CACHE_TIMEOUT, (long) HTTP_CA_CACHE_S);
	ca_file = tr->ca_file ? tr->ca_file : default_ca_file;
	if (ca_file)
	{
		curl_easy_setopt(e, CURLOPT_CAINFO, ca_file);
		curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
		curl_easy_setopt(e, CURLOPT_PROXY_CAINFO, ca_file);
		curl_easy_setopt(e, CURLOPT_PROXY_CAPATH, NULL);
	}
	if (tr->client_cert)
	{
		if (is_pem(tr->client_cert))
		{
			struct curl_blob blob = {(void *) tr->client_cert, strlen(tr->client_cert), CURL_BLOB_COPY};

			curl_easy_setopt(e, CURLOPT_SSLCERT_BLOB, &blob);
		}
		else
			curl_easy_setopt(e, CURLOPT_SSLCERT, tr->client_cert);
		curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
	}
	if (tr->client_key)
	{
		if (is_pem(tr->client_key))
		{
			struct curl_blob blob = {(void *) tr->client_key, strlen(tr->client_key), CURL_BLOB_COPY};

			curl_easy_setopt(e, CURLOPT_SSLKEY_BLOB, &blob);
		}
		else
			curl_easy_setopt(e, CURLOPT_SSLKEY, tr->client_key);
		curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
	}

	/*
	 * HTTP/2: over TLS when the server offers it (ALPN), or, when asked
	 * for, over plain HTTP with prior knowledge.  A request waits for a
	 * connection being made to the same server rather than opening one of
	 * its own, and is multiplexed over it when the server speaks HTTP/2.
	 */
	if (tr->http_version == 11)
		curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_1_1);
	else if (tr->http_version == 2 && !https)
		curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
	else
		curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);

	/*
	 * Only over TLS, where the handshake (ALPN) says whether the server
	 * speaks HTTP/2: over plain HTTP/1.1, libcurl learns whether a
	 * connection can be shared only from its first response, and every
	 * other request would wait that long; and libcurl 7.88 fails requests
	 * that waited for a plain HTTP/2 connection made with prior knowledge
	 * ("Error in the HTTP2 framing layer"), so those open connections of
	 * their own until one is up.
	 */
	if (https && tr->http_version != 11)
		curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);

	/* the proxy: the provider's, else the environment's; "" is none */
	proxy = HttpProxyFor(tr, url, &source);
	t->via_proxy = (proxy != NULL);
	curl_easy_setopt(e, CURLOPT_PROXY, proxy ? proxy : "");
	curl_easy_setopt(e, CURLOPT_NOPROXY, "");

	/*
	 * Through an HTTP proxy every request goes in a tunnel (CONNECT),
	 * plain-HTTP providers' too, and the proxy's answer to CONNECT is kept
	 * from the response's headers: whatever the proxy says for itself (a
	 * host it does not allow, credentials it wants) is then a failure
	 * below HTTP that names the proxy, never a status the provider gave,
	 * so a proxy's 403 cannot pass for the provider refusing its key.  A
	 * proxy forwarding a plain request would answer with the same
	 * statuses as the provider behind it.  SOCKS proxies have no answer
	 * of their own and ignore both.
	 */
	curl_easy_setopt(e, CURLOPT_HTTPPROXYTUNNEL, proxy ? 1L : 0L);
	curl_easy_setopt(e, CURLOPT_SUPPRESS_CONNECT_HEADERS, proxy ? 1L : 0L);
}

/* An IPv4 or IPv6 address (text) within an address or CIDR block (text)? */
static bool
ip_in_block(const char *host, bool v6, const char *block, size_t blen)
{
	char		buf[128];
	char	   *slash;
	int			bits;
	unsigned char a[16];
	unsigned char b[16];
	int			i;

	if (blen >= sizeof(buf))
		return false;
	memcpy(buf, block, blen);
	buf[blen] = '\0';
	slash = strchr(buf, '/');
	bits = v6 ? 128 : 32;
	if (slash)
	{
		*slash = '\0';
		bits = atoi(slash + 1);
		if (bits <= 0 || bits > (v6 ? 128 : 32))
			bits = v6 ? 128 : 32;
	}
	if (inet_pton(v6 ? AF_INET6 : AF_INET, host, a) != 1 ||
		inet_pton(v6 ? AF_INET6 : AF_INET, buf, b) != 1)
		return false;
	for (i = 0; bits > 0; i++, bits -= 8)
	{
		unsigned char mask = bits >= 8 ? 0xff : (unsigned char) (0xff << (8 - bits));

		if ((a[i] & mask) != (b[i] & mask))
			return false;
	}
	return true;
}

/*
 * Does a no_proxy list name this host?  The rules are libcurl's: "*"
 * alone names every host; otherwise entries separated by commas or
 * spaces, a host name matching itself and its subdomains (a leading dot
 * ignored), an IP address or CIDR block matching the addresses in it.
 */
static bool
no_proxy_matches(const char *no_proxy, const char *url)
{
	CURLU	   *u;
	char	   *host = NULL;
	char		name[256];
	size_t		namelen;
	bool		v4 = false;
	bool		v6 = false;
	bool		match = false;
	const char *p;
	unsigned char addr[16];

	if (no_proxy == NULL || no_proxy[0] == '\0')
		return false;
	if (strcmp(no_proxy, "*") == 0)
		return true;
	u = curl_url();
	if (u == NULL)
		return false;
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || host == NULL)
	{
		curl_url_cleanup(u);
		return false;
	}
	strlcpy(name, host, sizeof(name));
	curl_free(host);
	curl_url_cleanup(u);
	namelen = strlen(name);
	if (name[0] == '[' && namelen > 2)
	{
		memmove(name, name + 1, namelen - 2);
		name[namelen - 2] = '\0';
		v6 = true;
	}
	else if (inet_pton(AF_INET, name, addr) == 1)
		v4 = true;
	else if (namelen > 0 && name[namelen - 1] == '.')
		name[--namelen] = '\0';
	namelen = strlen(name);

	for (p = no_proxy; *p && !match;)
	{
		const char *token;
		size_t		tlen;

		while (*p == ' ' || *p == ',')
			p++;
		token = p;
		while (*p && *p != ' ' && *p != ',')
			p++;
		tlen = p - token;
		if (tlen == 0)
			continue;
		if (v4 || v6)
			match = ip_in_block(name, v6, token, tlen);
		else
		{
			if (token[tlen - 1] == '.')
				tlen--;
			if (tlen > 0 && token[0] == '.')
				token++, tlen--;
			if (tlen == namelen)
				match = pg_strncasecmp(token, name, namelen) == 0;
			else if (tlen > 0 && tlen < namelen && name[namelen - tlen - 1] == '.')
				match = pg_strncasecmp(token, name + namelen - tlen, tlen) == 0;
		}
	}
	return match;
}

/* The value of the first of these environment variables that is set. */
static const char *
env_first(int a, int b, int c, int d, const char **source)
{
	int			which[4] = {a, b, c, d};
	int			i;

	for (i = 0; i < 4; i++)
		if (which[i] >= 0 && env_proxy[which[i]].value)
		{
			*source = env_proxy[which[i]].name;
			return env_proxy[which[i]].value;
		}
	return NULL;
}

/*
 * The proxy a request to url goes through (NULL: none), and where it was
 * configured (*source: "option" or the environment variable's name).
 * The provider's proxy option wins; without it, the proxy variables of
 * the server's environment count as libcurl would read them (for http
 * URLs only the lower-case http_proxy).  The provider's no_proxy, else
 * the environment's, sends the hosts it names direct.  The URL may hold
 * credentials: it is for libcurl, never for display.
 */
const char *
HttpProxyFor(const HttpTransport *tr, const char *url, const char **source)
{
	const char *proxy;
	const char *no_proxy;
	const char *nsource;

	*source = NULL;
	HttpReadEnvironment();
	if (tr && tr->proxy)
	{
		proxy = tr->proxy;
		*source = "option";
	}
	else if (pg_strncasecmp(url, "https://", 8) == 0)
		proxy = env_first(ENV_HTTPS_PROXY, ENV_HTTPS_PROXY_UC, ENV_ALL_PROXY, ENV_ALL_PROXY_UC, source);
	else
		proxy = env_first(ENV_HTTP_PROXY, ENV_ALL_PROXY, ENV_ALL_PROXY_UC, -1, source);
	if (proxy == NULL)
		return NULL;
	no_proxy = (tr && tr->no_proxy) ? tr->no_proxy :
		env_first(ENV_NO_PROXY, ENV_NO_PROXY_UC, -1, -1, &nsource);
	if (no_proxy_matches(no_proxy, url))
	{
		*source = NULL;
		return NULL;
	}
	return proxy;
}

/*
 * A URL without its user name and password, for display (palloc'd); a
 * proxy written without a scheme gets libcurl's http://.
 */
char *
HttpUrlWithoutCredentials(const char *url)
{
	CURLU	   *u = curl_url();
	char	   *out = NULL;
	char	   *result;

	if (u == NULL)
		return pstrdup("(unreadable)");
	if (curl_url_set(u, CURLUPART_URL, url,
					 CURLU_NON_SUPPORT_SCHEME | CURLU_GUESS_SCHEME) != CURLUE_OK ||
		curl_url_set(u, CURLUPART_USER, NULL, 0) != CURLUE_OK ||
		curl_url_set(u, CURLUPART_PASSWORD, NULL, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_URL, &out, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK)
	{
		curl_url_cleanup(u);
		return pstrdup("(unreadable)");
	}
	result = pstrdup(out);
	curl_free(out);
	curl_url_cleanup(u);
	/* curl adds a "/" path to a URL that had none */
	if (strlen(result) > 1 && result[strlen(result) - 1] == '/' &&
		url[strlen(url) - 1] != '/')
		result[strlen(result) - 1] = '\0';
	return result;
}

/* Is one part of two parsed URLs the same (case aside)?  Allocates nothing of ours. */
static bool
url_part_equal(CURLU *ua, CURLU *ub, CURLUPart what, unsigned int flags)
{
	char	   *pa = NULL;
	char	   *pb = NULL;
	bool		same;

	same = curl_url_get(ua, what, &pa, flags) == CURLUE_OK &&
		curl_url_get(ub, what, &pb, flags) == CURLUE_OK &&
		pa != NULL && pb != NULL && pg_strcasecmp(pa, pb) == 0;
	curl_free(pa);
	curl_free(pb);
	return same;
}

/*
 * Do two URLs name the same origin (scheme, host and port, the port
 * defaulted by the scheme)?  A URL that does not parse names none.
 */
bool
HttpSameOrigin(const char *a, const char *b)
{
	CURLU	   *ua = curl_url();
	CURLU	   *ub = curl_url();
	bool		same;

	same = ua && ub &&
		curl_url_set(ua, CURLUPART_URL, a, 0) == CURLUE_OK &&
		curl_url_set(ub, CURLUPART_URL, b, 0) == CURLUE_OK &&
		url_part_equal(ua, ub, CURLUPART_SCHEME, 0) &&
		url_part_equal(ua, ub, CURLUPART_HOST, 0) &&
		url_part_equal(ua, ub, CURLUPART_PORT, CURLU_DEFAULT_PORT);
	curl_url_cleanup(ua);
	curl_url_cleanup(ub);
	return same;
}

/*
 * OpenSSL's verification results that pg_llm names (X509_V_ERR_*; the
 * numbers are part of OpenSSL's ABI).
 */
#define X509_ERR_UNSPECIFIED 1
#define X509_ERR_UNABLE_TO_GET_ISSUER_CERT 2
#define X509_ERR_CERT_NOT_YET_VALID 9
#define X509_ERR_CERT_HAS_EXPIRED 10
#define X509_ERR_DEPTH_ZERO_SELF_SIGNED_CERT 18
#define X509_ERR_SELF_SIGNED_CERT_IN_CHAIN 19
#define X509_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY 20
#define X509_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE 21
#define X509_ERR_HOSTNAME_MISMATCH 62

/*
 * Why a transfer failed below HTTP, from libcurl's code and what it
 * knows of the TLS verification and the proxy.
 */
HttpCause
HttpClassify(CURL *e, CURLcode rc, HttpTransfer *t)
{
	long		verify = 0;
	long		connectcode = 0;
	long		oserr = 0;
	bool		via_proxy = t->via_proxy;

	(void) curl_easy_getinfo(e, CURLINFO_HTTP_CONNECTCODE, &connectcode);
	(void) curl_easy_getinfo(e, CURLINFO_OS_ERRNO, &oserr);
	if (oserr == EMFILE || oserr == ENFILE)
		return HTTP_CAUSE_DESCRIPTORS;
	switch (rc)
	{
		case CURLE_OPERATION_TIMEDOUT:
			return HTTP_CAUSE_TIMEOUT;
		case CURLE_COULDNT_RESOLVE_HOST:
			return HTTP_CAUSE_DNS;
		case CURLE_COULDNT_RESOLVE_PROXY:
			return HTTP_CAUSE_PROXY_DNS;
		case CURLE_COULDNT_CONNECT:
			return via_proxy ? HTTP_CAUSE_PROXY_CONNECT : HTTP_CAUSE_CONNECT;
		case CURLE_PEER_FAILED_VERIFICATION:
			(void) curl_easy_getinfo(e, CURLINFO_SSL_VERIFYRESULT, &verify);
			switch (verify)
			{
				case X509_ERR_CERT_HAS_EXPIRED:
					return HTTP_CAUSE_TLS_EXPIRED;
				case X509_ERR_CERT_NOT_YET_VALID:
					return HTTP_CAUSE_TLS_NOT_YET_VALID;
				case X509_ERR_UNABLE_TO_GET_ISSUER_CERT:
				case X509_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
				case X509_ERR_SELF_SIGNED_CERT_IN_CHAIN:
				case X509_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
				case X509_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
					return HTTP_CAUSE_TLS_UNKNOWN_CA;
				case X509_ERR_HOSTNAME_MISMATCH:
				case X509_ERR_UNSPECIFIED:
				case 0:

					/*
					 * The chain verified and libcurl's own check of the
					 * name failed (it records that as "unspecified").
					 */
					if (strstr(t->errbuf, "host name") != NULL ||
						verify == X509_ERR_HOSTNAME_MISMATCH)
						return HTTP_CAUSE_TLS_HOSTNAME;
					return HTTP_CAUSE_TLS_VERIFY;
				default:
					return HTTP_CAUSE_TLS_VERIFY;
			}
		case CURLE_SSL_CACERT_BADFILE:
			return HTTP_CAUSE_TLS_CA_FILE;
		case CURLE_SSL_CERTPROBLEM:
			return HTTP_CAUSE_TLS_CLIENT_CERT;
		case CURLE_SSL_CONNECT_ERROR:
			/* a proxy over TLS whose certificate failed is named by the proxy code */
			return HTTP_CAUSE_TLS_HANDSHAKE;
#if LIBCURL_VERSION_NUM >= 0x074900
		case CURLE_PROXY:
			return HTTP_CAUSE_PROXY_REFUSED;
#endif
		default:
			break;
	}
	if (connectcode >= 300)
	{
		t->proxy_status = connectcode;
		return HTTP_CAUSE_PROXY_REFUSED;
	}
	return HTTP_CAUSE_NONE;
}

/* What went wrong below HTTP, in a few words, or NULL when nothing is known. */
const char *
HttpCauseText(const HttpTransfer *t)
{
	switch (t->cause)
	{
		case HTTP_CAUSE_NONE:
			return NULL;
		case HTTP_CAUSE_TIMEOUT:
			return "timed out";
		case HTTP_CAUSE_DNS:
			return "the host name does not resolve";
		case HTTP_CAUSE_CONNECT:
			return "no connection to the server";
		case HTTP_CAUSE_PROXY_DNS:
			return "the proxy's host name does not resolve";
		case HTTP_CAUSE_PROXY_CONNECT:
			return "no connection to the proxy";
		case HTTP_CAUSE_PROXY_REFUSED:
			return "the proxy refused the connection";
		case HTTP_CAUSE_TLS_UNKNOWN_CA:
			return "the server's certificate is not signed by a trusted CA";
		case HTTP_CAUSE_TLS_HOSTNAME:
			return "the server's certificate is for another host name";
		case HTTP_CAUSE_TLS_EXPIRED:
			return "the server's certificate has expired";
		case HTTP_CAUSE_TLS_NOT_YET_VALID:
			return "the server's certificate is not valid yet";
		case HTTP_CAUSE_TLS_VERIFY:
			return "the server's certificate was refused";
		case HTTP_CAUSE_TLS_CA_FILE:
			return "the CA file cannot be read";
		case HTTP_CAUSE_TLS_CLIENT_CERT:
			return "the client certificate or key cannot be used";
		case HTTP_CAUSE_TLS_HANDSHAKE:
			return "the TLS handshake failed";
		case HTTP_CAUSE_DESCRIPTORS:
			return "the process has no file descriptor left";
	}
	return NULL;
}

