/*
 * test/bench/raw_curl.c
 *	  The floor for bench_chat.sh: the least a C program can do to make the
 *	  requests llm.chat() makes.  One easy handle, reused, so libcurl keeps
 *	  the connection alive; each call POSTs the body pg_llm sends for
 *	  llm.chat('bench <i>', 'mock') with the same Content-Type and
 *	  Authorization headers, and reads the whole response into a buffer.
 *	  The response is not parsed (only the status is checked).
 *
 *	  usage: raw_curl URL CALLS [WARMUP [API_KEY [MOCK_PID [CA_FILE]]]]
 *	  URL is the full endpoint, e.g. http://127.0.0.1:PORT/v1/chat/completions;
 *	  for an https URL, CA_FILE is the PEM bundle of the CAs to trust (as
 *	  pg_llm's ca_file option; libcurl's defaults otherwise, HTTP/2 where
 *	  the server offers it).
 *	  Warm-up calls are numbered 1..WARMUP, timed calls 1..CALLS, as in the
 *	  SQL statement.  Prints one line:
 *	    calls=N seconds=S errors=E cpu_seconds=C mock_cpu_seconds=M
 *	  where C is this process's CPU time (user + system, from
 *	  /proc/self/schedstat) during the timed calls, and M the same for the
 *	  process MOCK_PID (-1 when not given or unreadable).
 *
 *	  Build: cc -O2 -o raw_curl raw_curl.c -lcurl
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct Buf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} Buf;

static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	Buf		   *b = userdata;
	size_t		n = size * nmemb;

	if (b->len + n + 1 > b->cap)
	{
		size_t		cap = b->cap ? b->cap * 2 : 4096;
		char	   *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->data, cap);
		if (p == NULL)
			return 0;
		b->data = p;
		b->cap = cap;
	}
	memcpy(b->data + b->len, ptr, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

/* CPU time of a process (0: this one) in seconds, from schedstat; -1 on failure. */
static double
cpu_s(long pid)
{
	char		path[64];
	FILE	   *f;
	unsigned long long ns;
	int			ok;

	if (pid < 0)
		return -1;
	if (pid == 0)
		snprintf(path, sizeof(path), "/proc/self/schedstat");
	else
		snprintf(path, sizeof(path), "/proc/%ld/schedstat", pid);
	f = fopen(path, "r");
	if (f == NULL)
		return -1;
	ok = fscanf(f, "%llu", &ns) == 1;
	fclose(f);
	return ok ? ns / 1e9 : -1;
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Make calls 1..n; returns the number that failed. */
static long
run(CURL *e, Buf *b, long n)
{
	char		body[128];
	long		i;
	long		errors = 0;

	for (i = 1; i <= n; i++)
	{
		CURLcode	rc;
		long		status = 0;
		int			blen = snprintf(body, sizeof(body),
									"{\"messages\":[{\"role\":\"user\",\"content\":\"bench %ld\"}],\"model\":\"mock\"}", i);

		b->len = 0;
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long) blen);
		rc = curl_easy_perform(e);
		if (rc == CURLE_OK)
			curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
		if (rc != CURLE_OK || status != 200 || b->len == 0)
		{
			if (errors++ < 3)
				fprintf(stderr, "raw_curl: call %ld: %s, HTTP %ld\n", i,
						curl_easy_strerror(rc), status);
		}
	}
	return errors;
}

int
main(int argc, char **argv)
{
	const char *url;
	long		calls;
	long		warmup = 0;
	const char *key = "sk-mock";
	char		auth[256];
	struct curl_slist *hl = NULL;
	CURL	   *e;
	Buf			b = {0};
	double		t0,
				t1;
	double		c0,
				c1,
				m0,
				m1;
	long		mock_pid = -1;
	const char *ca_file = NULL;
	long		errors;

	if (argc < 3)
	{
		fprintf(stderr, "usage: %s URL CALLS [WARMUP [API_KEY [MOCK_PID [CA_FILE]]]]\n", argv[0]);
		return 2;
	}
	url = argv[1];
	calls = atol(argv[2]);
	if (argc > 3)
		warmup = atol(argv[3]);
	if (argc > 4)
		key = argv[4];
	if (argc > 5)
		mock_pid = atol(argv[5]);
	if (argc > 6)
		ca_file = argv[6];

	curl_global_init(CURL_GLOBAL_ALL);
	e = curl_easy_init();
	if (e == NULL)
		return 1;
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
	hl = curl_slist_append(hl, "Content-Type: application/json");
	hl = curl_slist_append(hl, auth);
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
	if (ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, ca_file);

	if (run(e, &b, warmup) > 0)
	{
		fprintf(stderr, "raw_curl: the warm-up failed\n");
		return 1;
	}
	m0 = cpu_s(mock_pid);
	c0 = cpu_s(0);
	t0 = now_s();
	errors = run(e, &b, calls);
	t1 = now_s();
	c1 = cpu_s(0);
	m1 = cpu_s(mock_pid);
	printf("calls=%ld seconds=%.6f errors=%ld cpu_seconds=%.6f mock_cpu_seconds=%.6f\n",
		   calls, t1 - t0, errors, c0 < 0 || c1 < 0 ? -1 : c1 - c0,
		   m0 < 0 || m1 < 0 ? -1 : m1 - m0);

	curl_slist_free_all(hl);
	curl_easy_cleanup(e);
	free(b.data);
	curl_global_cleanup();
	return errors ? 1 : 0;
}
