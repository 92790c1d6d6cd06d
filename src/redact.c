/*-------------------------------------------------------------------------
 *
 * redact.c
 *	  Every text that came from a provider (an error message, its code,
 *	  type or param, an error event of a stream, a batch request's error,
 *	  a body that is not JSON, a header shown in an error) goes through
 *	  RedactProviderText before it is stored or shown, in an error, a log
 *	  line or a row:
 *
 *	  - the provider's secrets (its key and secret header values, as
 *		ConfigSecrets lists them) are replaced by "[redacted]", in the whole
 *		text before it is cut, and a secret's beginning left at the end of
 *		a text someone else cut (a header copied into a fixed buffer) goes
 *		too;
 *	  - bytes that are not UTF-8 become U+FFFD;
 *	  - control characters are shown escaped (\n, \r, \t, \xNN: the
 *		escaping of encoding.c, LlmAppendShown), so a provider's text
 *		cannot start a line of its own in the server log or in psql's
 *		output;
 *	  - the result is at most LLM_PROVIDER_TEXT_MAX bytes, cut at a
 *		character boundary and saying how much was left out.
 *
 *	  The text stays UTF-8 outside a transaction (the worker converts what
 *	  it writes), as LlmToServerEncoding does.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"

#include "config.h"
#include "encoding.h"
#include "redact.h"
#include "utf8.h"

/* The length of the longest beginning of secret s that ends text. */
static size_t
secret_tail(const char *text, size_t len, const char *s)
{
	size_t		klen = strlen(s);
	size_t		k;

	for (k = Min(len, klen - 1); k >= 4; k--)
		if (memcmp(text + len - k, s, k) == 0)
			return k;
	return 0;
}

/*
 * A provider's text of len bytes (not necessarily terminated), made fit
 * to show: see the file's header.  Returns palloc'd text; NULL for NULL.
 */
char *
RedactProviderText(const char *text, size_t len, const LlmProvider *p)
{
	return RedactProviderTextMax(text, len, p, LLM_PROVIDER_TEXT_MAX);
}

/*
 * RedactProviderText cut at max bytes (at most LLM_PROVIDER_TEXT_MAX):
 * for a text quoted inside a sentence of pg_llm's own (a refusal).
 */
char *
RedactProviderTextMax(const char *text, size_t len, const LlmProvider *p, size_t max)
{
	List	   *secrets = p ? ConfigSecrets(p) : NIL;
	size_t		longest = 0;
	size_t		take;
	char	   *s;
	size_t		n;
	ListCell   *lc;
	StringInfoData out;
	size_t		i;
	size_t		cut_at = 0;
	bool		cut = false;

	if (text == NULL)
		return NULL;
	max = Min(max, (size_t) LLM_PROVIDER_TEXT_MAX);
	foreach(lc, secrets)
		longest = Max(longest, strlen((char *) lfirst(lc)));

	/* enough to find a secret that straddles the cut, redacted first */
	take = Min(len, max * 4 + longest);
	s = pnstrdup(text, take);	/* a NUL inside ends it: shown up to there */
	n = strlen(s);
	foreach(lc, secrets)
	{
		const char *secret = lfirst(lc);
		size_t		tail;

		s = ConfigRedactOne(s, secret);
		n = strlen(s);
		if (take == len && (tail = secret_tail(s, n, secret)) > 0)
		{
			s[n - tail] = '\0';
			s = psprintf("%s[redacted]", s);
			n = strlen(s);
		}
	}

	/* not UTF-8: U+FFFD, as everywhere else */
	if (Utf8ValidPrefix(s, n) != n)
	{
		char	   *fixed = palloc(n * 3 + 1);

		n = Utf8Repair(s, n, fixed);
		fixed[n] = '\0';
		s = fixed;
	}

	initStringInfo(&out);
	for (i = 0; i < n; i++)
	{
		if ((size_t) out.len >= max)
		{
			cut = true;
			cut_at = i;
			break;
		}
		LlmAppendShown(&out, s, n, &i);
	}
	if (cut || take < len)
		appendStringInfo(&out, "... (%zu bytes more)",
						 (cut ? n - cut_at : 0) + (len - take));
	pfree(s);
	return LlmToServerEncoding(out.data, out.len);
}

/* RedactProviderText of a terminated string. */
char *
RedactProviderCString(const char *text, const LlmProvider *p)
{
	return text ? RedactProviderText(text, strlen(text), p) : NULL;
}
