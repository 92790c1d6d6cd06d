/*-------------------------------------------------------------------------
 *
 * json.c
 *	  Helpers over json-c that depend on nothing else of pg_llm: parsing
 *	  (with a depth limit and the reason a text is not JSON), typed member
 *	  lookups, exact whole numbers, and guards that tie a json-c object to
 *	  a memory context so that an ERROR raised anywhere leaks nothing.
 *
 *	  This file must not include utils/builtins.h (see llm_json.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include <math.h>

#include "lib/stringinfo.h"
#include "utils/memutils.h"

#include "json_fast.h"
#include "llm_json.h"

/* Put a guarded object when its memory context goes away. */
static void
json_guard_cb(void *arg)
{
	JsonGuard  *g = (JsonGuard *) arg;

	if (g->obj)
		json_object_put(g->obj);
	g->obj = NULL;
}

/* Tie a json-c object to the current memory context. */
JsonGuard *
JsonGuardNew(json_object *obj)
{
	JsonGuard  *g = palloc0(sizeof(JsonGuard));

	g->obj = obj;
	g->cb.func = json_guard_cb;
	g->cb.arg = g;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, &g->cb);
	return g;
}

/* Put the guarded object now. */
void
JsonGuardRelease(JsonGuard *g)
{
	json_guard_cb(g);
}

/* Is a text the JSON literal null, with white space around it? */
static bool
is_null_literal(const char *text, size_t len)
{
	size_t		b = 0;

	while (b < len && isspace((unsigned char) text[b]))
		b++;
	while (len > b && isspace((unsigned char) text[len - 1]))
		len--;
	return len - b == 4 && memcmp(text + b, "null", 4) == 0;
}

/*
 * Parse JSON text; NULL when it is not one complete JSON value, with *why
 * (when asked for) saying what is wrong in our words.  Leading and
 * trailing white space is allowed (DeepSeek sends blank lines before the
 * body while it holds a connection open).  Nesting up to
 * LLM_JSON_MAX_DEPTH levels is accepted: tool schemas nest deeply.
 */
json_object *
JsonParse(const char *text, size_t len, const char **why)
{
	/* one tokener per process, reset before each parse */
	static json_tokener *tok = NULL;
	json_object *obj;
	size_t		off;
	const char *reason = NULL;

	if (len > INT_MAX)
		reason = "it is too large";
	else if (tok == NULL && (tok = json_tokener_new_ex(LLM_JSON_MAX_DEPTH)) == NULL)
		reason = "out of memory";
	if (reason)
	{
		if (why)
			*why = reason;
		return NULL;
	}
	/* most texts are read by the fast path; what it gives up on, here */
	obj = JsonFastParse(text, len, LLM_JSON_MAX_DEPTH);
	if (obj != NULL)
	{
		if (why)
			*why = NULL;
		return obj;
	}
	json_tokener_reset(tok);
	obj = json_tokener_parse_ex(tok, text, (int) len);
	if (obj == NULL)
		/* json-c reads a JSON null as no object at all */
		reason = json_tokener_get_error(tok) == json_tokener_error_depth ? "it is nested too deep" :
			is_null_literal(text, len) ? "it is null" : "it is not valid JSON";
	else
	{
		/* only white space may follow the value */
		for (off = json_tokener_get_parse_end(tok); off < len; off++)
			if (!isspace((unsigned char) text[off]))
			{
				json_object_put(obj);
				obj = NULL;
				reason = "it is not valid JSON";
				break;
			}
	}
	/* an incomplete value leaves state behind: drop it now */
	json_tokener_reset(tok);
	if (why)
		*why = reason;
	return obj;
}

/* JsonParse without the reason. */
json_object *
JsonParseOrNull(const char *text, size_t len)
{
	return JsonParse(text, len, NULL);
}

/*
 * Serialize to palloc'd text.  A NUL character in a string (a provider's
 * \u0000: PostgreSQL's text and jsonb cannot hold it) is written as
 * U+FFFD, as JsonGetString reads it.
 */
char *
JsonToPstr(json_object *obj)
{
	char	   *s = pstrdup(json_object_to_json_string_ext(obj,
														   JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	char	   *p;

	for (p = strchr(s, '\\'); p; p = strchr(p, '\\'))
	{
		if (strncmp(p, "\\u0000", 6) == 0)
			memcpy(p, "\\ufffd", 6);
		p += (p[1] != '\0') ? 2 : 1;	/* past the escape: "\\\\u0000" is no NUL */
	}
	return s;
}

/*
 * The text of a json-c string.  json-c keeps a \u0000 as a NUL byte inside
 * the string, where C (and PostgreSQL) would end it: such a string comes
 * back as a palloc'd copy with each NUL replaced by U+FFFD, so a reply is
 * never cut short at one (on every path: replies, streams, batches).
 */
static const char *
string_text(json_object *v)
{
	const char *s = json_object_get_string(v);
	size_t		len = (size_t) json_object_get_string_len(v);
	StringInfoData buf;
	size_t		i;

	if (s == NULL || strlen(s) == len)
		return s;
	initStringInfo(&buf);
	for (i = 0; i < len; i++)
	{
		if (s[i] == '\0')
			appendStringInfoString(&buf, "\xef\xbf\xbd");
		else
			appendStringInfoChar(&buf, s[i]);
	}
	return buf.data;
}

static json_object *member_of_type(json_object *obj, const char *key, json_type type);

/* A string member, or NULL when missing, null or not a string. */
const char *
JsonGetString(json_object *obj, const char *key)
{
	json_object *v = member_of_type(obj, key, json_type_string);

	return v ? string_text(v) : NULL;
}

/* A member of one JSON type, or NULL. */
static json_object *
member_of_type(json_object *obj, const char *key, json_type type)
{
	json_object *v;

	if (obj == NULL || !json_object_is_type(obj, json_type_object) ||
		!json_object_object_get_ex(obj, key, &v) ||
		!json_object_is_type(v, type))
		return NULL;
	return v;
}

/* An object member, or NULL. */
json_object *
JsonGetObject(json_object *obj, const char *key)
{
	return member_of_type(obj, key, json_type_object);
}

/* An array member, or NULL. */
json_object *
JsonGetArray(json_object *obj, const char *key)
{
	return member_of_type(obj, key, json_type_array);
}

/*
 * A JSON number that is a whole number representable as an int64.  json-c
 * clamps integers that do not fit (to the largest unsigned or smallest
 * signed value), so those limits are treated as out of range.
 */
bool
JsonWholeNumber(json_object *v, int64 *val)
{
	if (v == NULL)
		return false;
	if (json_object_is_type(v, json_type_int))
	{
		int64		i = json_object_get_int64(v);

		if (i == PG_INT64_MIN ||
			(i == PG_INT64_MAX && json_object_get_uint64(v) != (uint64) PG_INT64_MAX))
			return false;
		*val = i;
		return true;
	}
	if (json_object_is_type(v, json_type_double))
	{
		double		d = json_object_get_double(v);

		/* 2^63 is the first double beyond int64 */
		if (isfinite(d) && d == floor(d) && d > -9223372036854775808.0 &&
			d < 9223372036854775808.0)
		{
			*val = (int64) d;
			return true;
		}
	}
	return false;
}

/* An integer member (a JSON number that is a whole number). */
bool
JsonGetInt64(json_object *obj, const char *key, int64 *val)
{
	json_object *v;

	if (obj == NULL || !json_object_is_type(obj, json_type_object) ||
		!json_object_object_get_ex(obj, key, &v))
		return false;
	return JsonWholeNumber(v, val);
}

/* A string member copied into the current memory context, or NULL. */
char *
JsonCopyString(json_object *obj, const char *key)
{
	const char *v = JsonGetString(obj, key);

	return v ? pstrdup(v) : NULL;
}

/*
 * A count a provider reports (an integer member), held to what a count
 * can be (0 to INT32_MAX); 0 when missing or not a whole number.
 */
int
JsonGetCount(json_object *obj, const char *key)
{
	int64		v = 0;

	return JsonGetInt64(obj, key, &v) ? (int) Max(Min(v, PG_INT32_MAX), 0) : 0;
}

/*
 * The text of a message content: a string, or the concatenated "text" of
 * an array of parts.  NULL for null or anything else.
 */
char *
JsonContentText(json_object *content)
{
	if (content == NULL)
		return NULL;
	if (json_object_is_type(content, json_type_string))
		return pstrdup(string_text(content));
	if (json_object_is_type(content, json_type_array))
	{
		StringInfoData buf;
		size_t		i,
					n = json_object_array_length(content);
		bool		any = false;

		initStringInfo(&buf);
		for (i = 0; i < n; i++)
		{
			const char *t = JsonGetString(json_object_array_get_idx(content, i), "text");

			if (t)
			{
				appendStringInfoString(&buf, t);
				any = true;
			}
		}
		return any ? buf.data : NULL;
	}
	return NULL;
}


/*
 * A scanner of JSON text that looks only at the "usage" objects of a
 * provider's answer, for JsonUsageSane().  It does not build anything: the
 * text was (or will be) parsed by json-c; this pass finds what json-c
 * hides, a key given twice (json-c keeps the last), and checks every
 * number in a usage object against what a token count can be.
 */
typedef struct UsageScan
{
	const char *p;
	const char *end;
	int64		max;
	bool		bad;
} UsageScan;

#define USAGE_KEY_MAX 64		/* longest key compared (decoded) */
#define USAGE_KEYS_MAX 64		/* most keys in one usage object */

static void
scan_ws(UsageScan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

/*
 * A string at s->p (its opening quote).  With out, its decoded text (up
 * to USAGE_KEY_MAX bytes; *outlen is -1 when longer) for comparing keys.
 */
static bool
scan_string(UsageScan *s, char *out, int *outlen)
{
	int			n = 0;

	if (s->p >= s->end || *s->p != '"')
		return false;
	s->p++;
	while (s->p < s->end && *s->p != '"')
	{
		char		c = *s->p++;

		if (c == '\\')
		{
			if (s->p >= s->end)
				return false;
			c = *s->p++;
			switch (c)
			{
				case 'b': c = '\b'; break;
				case 'f': c = '\f'; break;
				case 'n': c = '\n'; break;
				case 'r': c = '\r'; break;
				case 't': c = '\t'; break;
				case 'u':
					{
						unsigned int u = 0;
						int			i;

						if (s->end - s->p < 4)
							return false;
						for (i = 0; i < 4; i++)
						{
							char		h = s->p[i];

							u = u * 16 + (h >= '0' && h <= '9' ? h - '0' :
										  h >= 'a' && h <= 'f' ? h - 'a' + 10 :
										  h >= 'A' && h <= 'F' ? h - 'A' + 10 : 0);
						}
						s->p += 4;
						/* keys that matter are ASCII; others only need to differ */
						c = u < 0x80 ? (char) u : (char) (0x80 | (u & 0x7f));
						break;
					}
				default:
					break;		/* \" \\ \/ stand for themselves */
			}
		}
		if (out && n >= 0)
		{
			if (n < USAGE_KEY_MAX)
				out[n++] = c;
			else
				n = -1;
		}
	}
	if (s->p >= s->end)
		return false;
	s->p++;						/* the closing quote */
	if (out)
		*outlen = n;
	return true;
}

/* A number token at s->p; in a usage object it must be a token count. */
static bool
scan_number(UsageScan *s, bool in_usage)
{
	const char *start = s->p;
	char		buf[64];
	size_t		n;
	double		d;
	char	   *endp;

	while (s->p < s->end && (isdigit((unsigned char) *s->p) || *s->p == '-' || *s->p == '+' ||
							 *s->p == '.' || *s->p == 'e' || *s->p == 'E'))
		s->p++;
	n = s->p - start;
	if (n == 0)
		return false;
	if (!in_usage)
		return true;
	if (n >= sizeof(buf))
	{
		s->bad = true;			/* no sane count takes 64 characters */
		return true;
	}
	memcpy(buf, start, n);
	buf[n] = '\0';
	d = strtod(buf, &endp);
	if (*endp != '\0' || !isfinite(d) || d != floor(d) || d < 0 || d > (double) s->max ||
		(buf[0] == '-' && d != 0))
		s->bad = true;
	return true;
}

static bool scan_value(UsageScan *s, int depth, bool objects_only, bool in_usage);

/* An object at s->p; its members named "usage" are checked. */
static bool
scan_object(UsageScan *s, int depth, bool objects_only, bool in_usage)
{
	char		keys[USAGE_KEYS_MAX][USAGE_KEY_MAX];
	int			keylens[USAGE_KEYS_MAX];
	int			nkeys = 0;

	s->p++;						/* the { */
	scan_ws(s);
	if (s->p < s->end && *s->p == '}')
	{
		s->p++;
		return true;
	}
	for (;;)
	{
		char		key[USAGE_KEY_MAX];
		int			klen;
		bool		usage;

		scan_ws(s);
		if (!scan_string(s, key, &klen))
			return false;
		if (in_usage)
		{
			int			i;

			/* a key given twice leaves the count in doubt */
			for (i = 0; i < nkeys; i++)
				if (klen >= 0 && keylens[i] == klen && memcmp(keys[i], key, klen) == 0)
					s->bad = true;
			if (nkeys < USAGE_KEYS_MAX)
			{
				if (klen > 0)
					memcpy(keys[nkeys], key, klen);
				keylens[nkeys++] = klen;
			}
			else
				s->bad = true;
		}
		usage = objects_only && klen == 5 && memcmp(key, "usage", 5) == 0;
		scan_ws(s);
		if (s->p >= s->end || *s->p != ':')
			return false;
		s->p++;
		scan_ws(s);
		if (!scan_value(s, depth + 1, objects_only, in_usage || usage))
			return false;
		scan_ws(s);
		if (s->p < s->end && *s->p == ',')
		{
			s->p++;
			continue;
		}
		if (s->p < s->end && *s->p == '}')
		{
			s->p++;
			return true;
		}
		return false;
	}
}

/* Any value at s->p. */
static bool
scan_value(UsageScan *s, int depth, bool objects_only, bool in_usage)
{
	if (depth > LLM_JSON_MAX_DEPTH || s->p >= s->end)
		return false;
	switch (*s->p)
	{
		case '{':
			return scan_object(s, depth, objects_only, in_usage);
		case '[':
			s->p++;
			scan_ws(s);
			if (s->p < s->end && *s->p == ']')
			{
				s->p++;
				return true;
			}
			for (;;)
			{
				scan_ws(s);
				/* what a model writes sits in arrays: not the provider's count */
				if (!scan_value(s, depth + 1, false, in_usage))
					return false;
				scan_ws(s);
				if (s->p < s->end && *s->p == ',')
				{
					s->p++;
					continue;
				}
				if (s->p < s->end && *s->p == ']')
				{
					s->p++;
					return true;
				}
				return false;
			}
		case '"':
			return scan_string(s, NULL, NULL);
		case 't':
		case 'f':
		case 'n':
			while (s->p < s->end && isalpha((unsigned char) *s->p))
				s->p++;
			return true;
		default:
			return scan_number(s, in_usage);
	}
}

/*
 * Are the usage numbers of a provider's JSON text (a reply, a stream
 * event, a batch result line) fit to bill by?  Every object named "usage"
 * that is reached from the top through object members only (not what a
 * model wrote, which sits in arrays or strings) must hold each key once
 * and only numbers that are whole, not negative and at most max, nested
 * objects included.  Text that is not JSON is judged elsewhere: true.
 */
bool
JsonUsageSane(const char *text, size_t len, int64 max)
{
	UsageScan	s;

	if (text == NULL)
		return true;
	s.p = text;
	s.end = text + len;
	s.max = max;
	s.bad = false;
	scan_ws(&s);
	if (s.p < s.end && *s.p == '{')
		(void) scan_object(&s, 0, true, false);
	return !s.bad;
}

/*
 * The length of a text written as the inside of a JSON string (UTF-8 kept
 * as it is; quote, backslash and control characters escaped as json-c
 * escapes them).
 */
size_t
JsonEscapedLength(const char *s, size_t len)
{
	size_t		n = len;
	size_t		i;

	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' ||
			c == '\r' || c == '\t')
			n += 1;
		else if (c < 0x20)
			n += 5;				/* \u00XX */
	}
	return n;
}

/* Write a text as the inside of a JSON string at out; returns its end. */
char *
JsonEscapeInto(char *out, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t		i;
	size_t		run = 0;

	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];
		const char *e = NULL;

		if (c >= 0x20 && c != '"' && c != '\\')
		{
			run++;
			continue;
		}
		/* copy the plain bytes before it in one go */
		memcpy(out, s + i - run, run);
		out += run;
		run = 0;
		switch (c)
		{
			case '"': e = "\\\""; break;
			case '\\': e = "\\\\"; break;
			case '\b': e = "\\b"; break;
			case '\f': e = "\\f"; break;
			case '\n': e = "\\n"; break;
			case '\r': e = "\\r"; break;
			case '\t': e = "\\t"; break;
			default:
				*out++ = '\\';
				*out++ = 'u';
				*out++ = '0';
				*out++ = '0';
				*out++ = hex[c >> 4];
				*out++ = hex[c & 15];
				continue;
		}
		memcpy(out, e, 2);
		out += 2;
	}
	memcpy(out, s + len - run, run);
	return out + run;
}
