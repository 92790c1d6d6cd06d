/*-------------------------------------------------------------------------
 *
 * json_fast.c
 *	  A fast path for reading a JSON text into json-c objects: one pass
 *	  over the text, building the objects as it goes, without json-c's
 *	  tokener (its state machine, its character buffer and its change of
 *	  locale at every call cost a provider's reply more than the rest of
 *	  the call together).
 *
 *	  It reads standard JSON (RFC 8259) exactly as json-c's tokener does:
 *	  the same objects, numbers, strings and key order, a repeated key's
 *	  last value.  Whatever the tokener might read differently or refuse
 *	  (its extensions such as comments, NaN or single quotes, escapes of
 *	  lone surrogates or of NUL, control characters in strings, integers
 *	  beyond 18 digits, nesting beyond the limit, any error) makes it give
 *	  up: the caller then parses the text with the tokener, so the result
 *	  is always the tokener's.  test/unit/test_json_fast.c checks both
 *	  against each other.
 *
 *	  Pure C with json-c only (no PostgreSQL header), so that it can be
 *	  unit-tested and fuzzed alone.
 *
 *-------------------------------------------------------------------------
 */
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "json_fast.h"

typedef struct FastParser
{
	const char *p;
	const char *end;
	int			depth;
	int			max_depth;
	char	   *buf;			/* unescaped strings */
	size_t		cap;
} FastParser;

/* Keys of provider replies, kept as constants rather than copied. */
typedef struct CommonKey
{
	const char *key;
	size_t		len;
} CommonKey;

#define K(s) {s, sizeof(s) - 1}
static const CommonKey common_keys[] = {
	K("id"), K("type"), K("text"), K("role"), K("name"), K("code"), K("data"), K("index"),
	K("model"), K("usage"), K("delta"), K("error"), K("param"), K("object"), K("choices"),
	K("message"), K("content"), K("refusal"), K("created"), K("logprobs"), K("function"),
	K("arguments"), K("embedding"), K("tool_calls"), K("stop_reason"), K("annotations"),
	K("input_tokens"), K("service_tier"), K("total_tokens"), K("audio_tokens"),
	K("finish_reason"), K("output_tokens"), K("prompt_tokens"), K("stop_sequence"),
	K("cached_tokens"), K("reasoning_tokens"), K("completion_tokens"),
	K("system_fingerprint"), K("prompt_tokens_details"), K("cache_read_input_tokens"),
	K("completion_tokens_details"), K("cache_creation_input_tokens"),
	K("accepted_prediction_tokens"), K("rejected_prediction_tokens")
};
#undef K

static json_object *parse_value(FastParser *fp, int *ok);

static void
skip_ws(FastParser *fp)
{
	while (fp->p < fp->end &&
		   (*fp->p == ' ' || *fp->p == '\n' || *fp->p == '\r' || *fp->p == '\t'))
		fp->p++;
}

/* The constant spelling of a common key, or NULL. */
static const char *
common_key(const char *s, size_t n)
{
	size_t		i;

	for (i = 0; i < sizeof(common_keys) / sizeof(common_keys[0]); i++)
		if (common_keys[i].len == n && common_keys[i].key[0] == s[0] &&
			memcmp(common_keys[i].key, s, n) == 0)
			return common_keys[i].key;
	return NULL;
}

static int
hex4(const char *s, unsigned *out)
{
	unsigned	v = 0;
	int			i;

	for (i = 0; i < 4; i++)
	{
		char		c = s[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned) (c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned) (c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned) (c - 'A' + 10);
		else
			return 0;
	}
	*out = v;
	return 1;
}

static int
buf_reserve(FastParser *fp, size_t need)
{
	if (need > fp->cap)
	{
		size_t		cap = fp->cap ? fp->cap : 256;
		char	   *b;

		while (cap < need)
			cap *= 2;
		b = realloc(fp->buf, cap);
		if (b == NULL)
			return 0;
		fp->buf = b;
		fp->cap = cap;
	}
	return 1;
}

/*
 * A string at fp->p (after its opening quote): its bytes in *s and *n,
 * pointing into the text when it has no escape, else into fp->buf.
 * 0 to give up.
 */
static int
parse_string(FastParser *fp, const char **s, size_t *n)
{
	const char *start = fp->p;
	const char *q = start;
	size_t		len = 0;

	/* the usual case: no escape */
	while (q < fp->end && *q != '"' && *q != '\\' && (unsigned char) *q >= 0x20)
		q++;
	if (q >= fp->end || (unsigned char) *q < 0x20)
		return 0;
	if (*q == '"')
	{
		*s = start;
		*n = q - start;
		fp->p = q + 1;
		return 1;
	}

	/* escapes: copy into the buffer (at most as long as the rest) */
	if (!buf_reserve(fp, (size_t) (fp->end - start) + 1))
		return 0;
	memcpy(fp->buf, start, q - start);
	len = q - start;
	while (q < fp->end)
	{
		char		c = *q;

		if (c == '"')
		{
			*s = fp->buf;
			*n = len;
			fp->p = q + 1;
			return 1;
		}
		if ((unsigned char) c < 0x20)
			return 0;
		if (c != '\\')
		{
			fp->buf[len++] = c;
			q++;
			continue;
		}
		if (q + 1 >= fp->end)
			return 0;
		c = q[1];
		q += 2;
		switch (c)
		{
			case '"':
			case '\\':
			case '/':
				fp->buf[len++] = c;
				break;
			case 'b':
				fp->buf[len++] = '\b';
				break;
			case 'f':
				fp->buf[len++] = '\f';
				break;
			case 'n':
				fp->buf[len++] = '\n';
				break;
			case 'r':
				fp->buf[len++] = '\r';
				break;
			case 't':
				fp->buf[len++] = '\t';
				break;
			case 'u':
				{
					unsigned	cp;
					unsigned	lo;

					if (q + 4 > fp->end || !hex4(q, &cp) || cp == 0)
						return 0;
					q += 4;
					if (cp >= 0xDC00 && cp <= 0xDFFF)
						return 0;	/* a lone low surrogate */
					if (cp >= 0xD800 && cp <= 0xDBFF)
					{
						if (q + 6 > fp->end || q[0] != '\\' || q[1] != 'u' ||
							!hex4(q + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
							return 0;	/* a lone high surrogate */
						q += 6;
						cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
					}
					/* UTF-8 is never longer than the escape it replaces */
					if (cp < 0x80)
						fp->buf[len++] = (char) cp;
					else if (cp < 0x800)
					{
						fp->buf[len++] = (char) (0xC0 | (cp >> 6));
						fp->buf[len++] = (char) (0x80 | (cp & 0x3F));
					}
					else if (cp < 0x10000)
					{
						fp->buf[len++] = (char) (0xE0 | (cp >> 12));
						fp->buf[len++] = (char) (0x80 | ((cp >> 6) & 0x3F));
						fp->buf[len++] = (char) (0x80 | (cp & 0x3F));
					}
					else
					{
						fp->buf[len++] = (char) (0xF0 | (cp >> 18));
						fp->buf[len++] = (char) (0x80 | ((cp >> 12) & 0x3F));
						fp->buf[len++] = (char) (0x80 | ((cp >> 6) & 0x3F));
						fp->buf[len++] = (char) (0x80 | (cp & 0x3F));
					}
					break;
				}
			default:
				return 0;
		}
	}
	return 0;
}

/*
 * A number: an integer of up to 18 digits as int64 (what the tokener
 * makes of it), a fraction or exponent as a double that keeps its text.
 */
static json_object *
parse_number(FastParser *fp, int *ok)
{
	const char *start = fp->p;
	const char *q = start;
	int			neg = 0;
	int			digits = 0;
	int			is_double = 0;
	long long	v = 0;

	if (q < fp->end && *q == '-')
		neg = 1, q++;
	if (q >= fp->end || *q < '0' || *q > '9')
		return *ok = 0, NULL;
	if (*q == '0')
	{
		q++;
		digits = 1;
		if (q < fp->end && *q >= '0' && *q <= '9')
			return *ok = 0, NULL;	/* a leading zero */
	}
	else
		while (q < fp->end && *q >= '0' && *q <= '9')
		{
			/* past 18 digits only counted: the tokener decides those */
			if (digits < 18)
				v = v * 10 + (*q - '0');
			digits++;
			q++;
		}
	if (q < fp->end && *q == '.')
	{
		is_double = 1;
		q++;
		if (q >= fp->end || *q < '0' || *q > '9')
			return *ok = 0, NULL;
		while (q < fp->end && *q >= '0' && *q <= '9')
			q++;
	}
	if (q < fp->end && (*q == 'e' || *q == 'E'))
	{
		is_double = 1;
		q++;
		if (q < fp->end && (*q == '+' || *q == '-'))
			q++;
		if (q >= fp->end || *q < '0' || *q > '9')
			return *ok = 0, NULL;
		while (q < fp->end && *q >= '0' && *q <= '9')
			q++;
	}
	fp->p = q;
	if (!is_double)
	{
		json_object *o;

		if (digits > 18)
			return *ok = 0, NULL;
		o = json_object_new_int64(neg ? -v : v);
		if (o == NULL)
			*ok = 0;
		return o;
	}
	else
	{
		char		tmp[64];
		char	   *text;
		char	   *endp;
		double		d;
		size_t		n = q - start;
		json_object *o;

		text = n < sizeof(tmp) ? tmp : malloc(n + 1);
		if (text == NULL)
			return *ok = 0, NULL;
		memcpy(text, start, n);
		text[n] = '\0';
		d = strtod(text, &endp);
		o = (endp == text + n) ? json_object_new_double_s(d, text) : NULL;
		if (text != tmp)
			free(text);
		if (o == NULL)
			*ok = 0;
		return o;
	}
}

static json_object *
parse_object(FastParser *fp, int *ok)
{
	json_object *obj = json_object_new_object();

	if (obj == NULL)
		return *ok = 0, NULL;
	fp->p++;					/* { */
	skip_ws(fp);
	if (fp->p < fp->end && *fp->p == '}')
	{
		fp->p++;
		return obj;
	}
	for (;;)
	{
		const char *ks;
		size_t		kn;
		const char *constant;
		char	   *key;
		json_object *val;
		int			added;

		if (fp->p >= fp->end || *fp->p != '"')
			break;
		fp->p++;
		if (!parse_string(fp, &ks, &kn) || kn == 0 || memchr(ks, '\0', kn) != NULL)
			break;
		/* the key outlives the buffer: constant, or copied */
		constant = common_key(ks, kn);
		key = NULL;
		if (constant == NULL)
		{
			key = malloc(kn + 1);
			if (key == NULL)
				break;
			memcpy(key, ks, kn);
			key[kn] = '\0';
		}
		skip_ws(fp);
		if (fp->p >= fp->end || *fp->p != ':')
		{
			free(key);
			break;
		}
		fp->p++;
		val = parse_value(fp, ok);
		if (!*ok)
		{
			free(key);
			json_object_put(obj);
			return NULL;
		}
		/* a repeated key: the last value wins, as with the tokener */
		added = constant ?
			json_object_object_add_ex(obj, constant, val, JSON_C_OBJECT_KEY_IS_CONSTANT) :
			json_object_object_add(obj, key, val);
		free(key);
		if (added != 0)
		{
			json_object_put(val);
			break;
		}
		skip_ws(fp);
		if (fp->p < fp->end && *fp->p == ',')
		{
			fp->p++;
			skip_ws(fp);
			continue;
		}
		if (fp->p < fp->end && *fp->p == '}')
		{
			fp->p++;
			return obj;
		}
		break;
	}
	json_object_put(obj);
	*ok = 0;
	return NULL;
}

static json_object *
parse_array(FastParser *fp, int *ok)
{
	json_object *arr = json_object_new_array();

	if (arr == NULL)
		return *ok = 0, NULL;
	fp->p++;					/* [ */
	skip_ws(fp);
	if (fp->p < fp->end && *fp->p == ']')
	{
		fp->p++;
		return arr;
	}
	for (;;)
	{
		json_object *val = parse_value(fp, ok);

		if (!*ok)
			break;
		if (json_object_array_add(arr, val) != 0)
		{
			json_object_put(val);
			break;
		}
		skip_ws(fp);
		if (fp->p < fp->end && *fp->p == ',')
		{
			fp->p++;
			continue;
		}
		if (fp->p < fp->end && *fp->p == ']')
		{
			fp->p++;
			return arr;
		}
		break;
	}
	json_object_put(arr);
	*ok = 0;
	return NULL;
}

/* One value; a JSON null is a NULL object with *ok still set. */
static json_object *
parse_value(FastParser *fp, int *ok)
{
	json_object *o = NULL;

	skip_ws(fp);
	if (fp->p >= fp->end)
		return *ok = 0, NULL;
	switch (*fp->p)
	{
		case '{':
		case '[':
			/* near the limit, the tokener decides (and says why) */
			if (++fp->depth >= fp->max_depth - 1)
				return *ok = 0, NULL;
			o = *fp->p == '{' ? parse_object(fp, ok) : parse_array(fp, ok);
			fp->depth--;
			return o;
		case '"':
			{
				const char *s;
				size_t		n;

				fp->p++;
				if (!parse_string(fp, &s, &n) || memchr(s, '\0', n) != NULL)
					return *ok = 0, NULL;
				o = json_object_new_string_len(s, (int) n);
				if (o == NULL)
					*ok = 0;
				return o;
			}
		case 't':
			if (fp->end - fp->p >= 4 && memcmp(fp->p, "true", 4) == 0)
			{
				fp->p += 4;
				if ((o = json_object_new_boolean(1)) == NULL)
					*ok = 0;
				return o;
			}
			break;
		case 'f':
			if (fp->end - fp->p >= 5 && memcmp(fp->p, "false", 5) == 0)
			{
				fp->p += 5;
				if ((o = json_object_new_boolean(0)) == NULL)
					*ok = 0;
				return o;
			}
			break;
		case 'n':
			if (fp->end - fp->p >= 4 && memcmp(fp->p, "null", 4) == 0)
			{
				fp->p += 4;
				return NULL;
			}
			break;
		default:
			if (*fp->p == '-' || (*fp->p >= '0' && *fp->p <= '9'))
				return parse_number(fp, ok);
			break;
	}
	*ok = 0;
	return NULL;
}

/*
 * Read a JSON text whose top level is an object or an array, with white
 * space around it and nothing else.  NULL when it gives up, for any
 * reason: the caller then asks json-c's tokener.
 */
json_object *
JsonFastParse(const char *text, size_t len, int max_depth)
{
	FastParser	fp;
	json_object *o;
	int			ok = 1;

	memset(&fp, 0, sizeof(fp));
	fp.p = text;
	fp.end = text + len;
	fp.max_depth = max_depth;
	skip_ws(&fp);
	if (fp.p >= fp.end || (*fp.p != '{' && *fp.p != '['))
		return NULL;
	o = parse_value(&fp, &ok);
	free(fp.buf);
	if (!ok)
		return NULL;
	skip_ws(&fp);
	if (fp.p != fp.end)
	{
		json_object_put(o);
		return NULL;
	}
	return o;
}
