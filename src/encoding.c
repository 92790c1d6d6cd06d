/*-------------------------------------------------------------------------
 *
 * encoding.c
 *	  Texts between the database's encoding and UTF-8, the encoding of
 *	  every provider: prompts on their way out, replies on their way in
 *	  (invalid UTF-8 from a provider repaired, never an error).  Outside a
 *	  transaction (the worker between its transactions) no conversion can
 *	  be looked up: texts stay UTF-8 until they are written.  The jsonb
 *	  and text[] arguments of the SQL functions are read here too, and a
 *	  provider's UTF-8 is shown here: control characters escaped.
 *
 *	  The ground floor: it calls nothing of pg_llm's above it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/jsonb.h"

#include "compat.h"
#include "encoding.h"
#include "utf8.h"

/*
 * Text in the server encoding to UTF-8 for the wire.  Outside a
 * transaction (the worker between its transactions) no conversion can be
 * looked up, and the text is taken as it is.
 */
char *
LlmToUtf8(const char *text)
{
	if (!IsTransactionState())
		return pstrdup(text);
	return pg_server_to_any(text, strlen(text), PG_UTF8);
}

/*
 * The text of a text datum in UTF-8, and its length: the datum's own bytes
 * (not terminated, not copied) when the server encoding is UTF-8, else a
 * converted copy.  A long prompt is then held once, not once per step.
 */
char *
LlmTextToUtf8(text *t, size_t *len)
{
	char	   *s = VARDATA_ANY(t);
	char	   *u;

	*len = VARSIZE_ANY_EXHDR(t);
	if (!IsTransactionState() || GetDatabaseEncoding() == PG_UTF8 ||
		GetDatabaseEncoding() == PG_SQL_ASCII)
		return s;
	u = pg_server_to_any(s, (int) *len, PG_UTF8);
	if (u != s)
		*len = strlen(u);
	return u;
}

/*
 * UTF-8 from the wire to the server encoding.  Invalid sequences become
 * U+FFFD (as WHATWG decoders do) rather than failing a whole batch over
 * one stray byte from a provider.  Outside a transaction the repaired
 * UTF-8 is returned: the worker keeps texts in UTF-8 until it writes them.
 */
char *
LlmToServerEncoding(const char *utf8, size_t len)
{
	char	   *fixed;
	size_t		n;

	if (Utf8ValidPrefix(utf8, len) == len)
		fixed = pnstrdup(utf8, len);
	else
	{
		fixed = palloc(len * 3 + 1);
		n = Utf8Repair(utf8, len, fixed);
		fixed[n] = '\0';
	}
	if (!IsTransactionState())
		return fixed;
	return pg_any_to_server(fixed, strlen(fixed), PG_UTF8);
}

/* A jsonb argument of an SQL function as JSON text in UTF-8, or NULL. */
char *
LlmArgJsonb(FunctionCallInfo fcinfo, int n)
{
	Jsonb	   *j;

	if (PG_ARGISNULL(n))
		return NULL;
	j = PG_GETARG_JSONB_P(n);
	return LlmToUtf8(JsonbToCString(NULL, &j->root, VARSIZE(j)));
}

/*
 * A text[] argument of an SQL function as its elements (text datums and
 * their NULL flags, in the array's own memory, in the server encoding);
 * returns how many there are.  A NULL array or one of more than one
 * dimension is refused: what names the argument in the error, hint says
 * what to pass instead of NULL.
 */
int
LlmArgTextArray(FunctionCallInfo fcinfo, int n, const char *what, const char *hint,
				Datum **elems, bool **nulls)
{
	ArrayType  *arr;
	int			count;

	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what),
				 errhint("%s", hint)));
	arr = PG_GETARG_ARRAYTYPE_P(n);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s must be a one-dimensional array", what)));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, elems, nulls, &count);
	return count;
}

/*
 * Append one byte of UTF-8 text at s[*i] to out as it is shown: control
 * characters escaped (\n, \r, \t, \xNN), a multi-byte character whole
 * (*i moved to its last byte).  The one escaping of a provider's text,
 * for RedactProviderText and LlmEscapeControls.
 */
void
LlmAppendShown(StringInfo out, const char *s, size_t n, size_t *i)
{
	unsigned char c = (unsigned char) s[*i];

	if (c == '\n')
		appendStringInfoString(out, "\\n");
	else if (c == '\r')
		appendStringInfoString(out, "\\r");
	else if (c == '\t')
		appendStringInfoString(out, "\\t");
	else if (c < 0x20 || c == 0x7f)
		appendStringInfo(out, "\\x%02x", c);
	else if (c < 0x80)
		appendStringInfoChar(out, (char) c);
	else
	{
		/* a whole character at a time, so that a cut never splits one */
		int			l = pg_utf_mblen((const unsigned char *) s + *i);

		appendBinaryStringInfo(out, s + *i, Min((size_t) l, n - *i));
		*i += l - 1;
	}
}

/*
 * A text a model or a provider wrote (UTF-8, terminated) with its control
 * characters escaped as RedactProviderText (redact.c) escapes them, and
 * left UTF-8: for the words of a validation error that quote an answer (a
 * property name, a value), which are shown later like every provider
 * text.  Text escaping, no secret in sight: the ground floor, so that
 * schema.c (the protocols) need not reach up to the redaction.
 */
char *
LlmEscapeControls(const char *utf8)
{
	StringInfoData out;
	size_t		n;
	size_t		i;

	if (utf8 == NULL)
		return NULL;
	n = strlen(utf8);
	for (i = 0; i < n; i++)
		if ((unsigned char) utf8[i] < 0x20 || utf8[i] == 0x7f)
			break;
	if (i == n)
		return pstrdup(utf8);
	initStringInfo(&out);
	for (i = 0; i < n; i++)
		LlmAppendShown(&out, utf8, n, &i);
	return out.data;
}

/*
 * Is a prompt or an input empty, or nothing but white space (ASCII: any
 * encoding pg_llm runs in keeps those bytes as they are)?  A model has
 * nothing to answer or embed there, so it is not sent.  Stops at the
 * first other byte: a long text costs nothing to check.
 */
bool
LlmBlank(const char *s, size_t len)
{
	size_t		i;

	for (i = 0; i < len; i++)
		if (!(s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' ||
			  s[i] == '\v' || s[i] == '\f'))
			return false;
	return true;
}
