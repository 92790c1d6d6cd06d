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
		reason = json_tokener_get_error(tok) == json_tokener_error_depth ?
			"it is nested too deep" : "it is not valid JSON";
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

/* Serialize to palloc'd text. */
char *
JsonToPstr(json_object *obj)
{
	return pstrdup(json_object_to_json_string_ext(obj,
												  JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
}

static json_object *member_of_type(json_object *obj, const char *key, json_type type);

/* A string member, or NULL when missing, null or not a string. */
const char *
JsonGetString(json_object *obj, const char *key)
{
	json_object *v = member_of_type(obj, key, json_type_string);

	return v ? json_object_get_string(v) : NULL;
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
		return pstrdup(json_object_get_string(content));
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

