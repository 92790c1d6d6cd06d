/*-------------------------------------------------------------------------
 *
 * jsonschema.c
 *	  A JSON Schema validator for the subset the providers' structured
 *	  outputs accept (see jsonschema.h for the keywords and the bounds).
 *
 *	  A schema is checked and compiled once into nodes (one per subschema)
 *	  that borrow from the json-c schema, which the compiled schema holds a
 *	  reference to; $ref targets are resolved to nodes, patterns compiled
 *	  through the caller's callbacks.  Validating an instance allocates
 *	  nothing and stops at the first broken rule, reporting the instance's
 *	  path ("$.items[2].price"), the keyword and what was wrong.
 *
 *	  This file must stay free of PostgreSQL: it includes json-c and the
 *	  C library only, and returns every failure to its caller.
 *
 *	  src/jsonschema.c
 *
 *-------------------------------------------------------------------------
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonschema.h"

#if defined(__GNUC__) || defined(__clang__)
#define JS_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define JS_PRINTF(f, a)
#endif

#ifndef JSON_SCHEMA_MALLOC
#define JSON_SCHEMA_MALLOC malloc
#endif

/* type bits; "number" takes integers too */
#define T_NULL		0x01
#define T_BOOLEAN	0x02
#define T_OBJECT	0x04
#define T_ARRAY		0x08
#define T_NUMBER	0x10
#define T_STRING	0x20
#define T_INTEGER	0x40

static const struct
{
	const char *name;
	unsigned	bit;
}			type_names[] = {
	{"null", T_NULL}, {"boolean", T_BOOLEAN}, {"object", T_OBJECT},
	{"array", T_ARRAY}, {"number", T_NUMBER}, {"string", T_STRING},
	{"integer", T_INTEGER},
};

typedef struct SNode SNode;

typedef struct SProp
{
	const char *name;
	SNode	   *node;
} SProp;

struct SNode
{
	int			index;			/* in JsonSchema.nodes */
	unsigned	types;			/* 0: any type */
	json_object *enumv;			/* borrowed; NULL: none */
	json_object *constv;
	bool		has_const;
	SProp	   *props;			/* sorted by name */
	int			nprops;
	const char **required;
	int			nrequired;
	int			addl;			/* -1 absent, 0 false, 1 true, 2 a schema */
	SNode	   *addl_node;
	SNode	   *items;
	int64_t		min_items,
				max_items,
				min_len,
				max_len;		/* -1: absent */
	bool		has_min,
				has_max;
	double		minimum,
				maximum;
	const char *pattern;
	void	   *re;
	SNode	  **any;
	int			nany;
	const char *ref_str;
	SNode	   *ref;
	bool		strict_bad;		/* a keyword OpenAI's strict mode refuses */
};

struct JsonSchema
{
	json_object *src;
	SNode	   *root;
	SNode	  **nodes;
	int			nnodes;
	int			cap;
	const char **def_names;
	SNode	  **defs;
	int			ndefs;
	int			size;
	JsonSchemaRegex rx;
};

/* ----------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------- */

static void set_error(JsonSchemaError *err, const char *path, const char *rule, const char *fmt,...) JS_PRINTF(4, 5);

static void
set_error(JsonSchemaError *err, const char *path, const char *rule, const char *fmt,...)
{
	va_list		ap;

	if (err == NULL)
		return;
	snprintf(err->path, sizeof(err->path), "%s", path);
	snprintf(err->rule, sizeof(err->rule), "%s", rule);
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
}

/* A JSON value as short text for a message: at most 60 bytes, whole characters. */
static void
excerpt(json_object *v, char *buf, size_t size)
{
	const char *s = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
	size_t		n = strlen(s);
	size_t		cut = n;

	if (cut > 60)
	{
		cut = 60;
		while (cut > 0 && ((unsigned char) s[cut] & 0xC0) == 0x80)
			cut--;
	}
	snprintf(buf, size, "%.*s%s", (int) cut, s, cut < n ? "..." : "");
}

/* Is v a number (int or double)? */
static bool
is_number(json_object *v)
{
	return json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double);
}

/* A whole, non-negative number that fits in 31 bits, as a count. */
static bool
get_count(json_object *v, int64_t *out)
{
	double		d;

	if (!is_number(v))
		return false;
	d = json_object_get_double(v);
	if (!isfinite(d) || d < 0 || d > 2147483647.0 || d != floor(d))
		return false;
	*out = (int64_t) d;
	return true;
}

/* Type bits of an instance. */
static unsigned
instance_type(json_object *v)
{
	double		d;

	switch (json_object_get_type(v))
	{
		case json_type_null:
			return T_NULL;
		case json_type_boolean:
			return T_BOOLEAN;
		case json_type_object:
			return T_OBJECT;
		case json_type_array:
			return T_ARRAY;
		case json_type_string:
			return T_STRING;
		case json_type_int:
			return T_NUMBER | T_INTEGER;
		case json_type_double:
			d = json_object_get_double(v);
			return T_NUMBER | (isfinite(d) && d == floor(d) ? T_INTEGER : 0);
	}
	return 0;
}

/* The JSON type of an instance in words. */
static const char *
instance_type_name(json_object *v)
{
	switch (json_object_get_type(v))
	{
		case json_type_null:
			return "null";
		case json_type_boolean:
			return "a boolean";
		case json_type_object:
			return "an object";
		case json_type_array:
			return "an array";
		case json_type_string:
			return "a string";
		case json_type_int:
			return "an integer";
		case json_type_double:
			return "a number";
	}
	return "a value";
}

/*
 * JSON equality: numbers by value (1 equals 1.0), strings byte for byte,
 * arrays in order, objects by their members whatever their order.
 */
static bool
json_equal(json_object *a, json_object *b, int depth)
{
	json_type	ta = json_object_get_type(a);
	json_type	tb = json_object_get_type(b);

	if (depth > 512)
		return false;
	if (is_number(a) && is_number(b))
	{
		if (ta == json_type_int && tb == json_type_int)
			return json_object_get_int64(a) == json_object_get_int64(b);
		return json_object_get_double(a) == json_object_get_double(b);
	}
	if (ta != tb)
		return false;
	switch (ta)
	{
		case json_type_null:
			return true;
		case json_type_boolean:
			return json_object_get_boolean(a) == json_object_get_boolean(b);
		case json_type_string:
			return json_object_get_string_len(a) == json_object_get_string_len(b) &&
				memcmp(json_object_get_string(a), json_object_get_string(b),
					   json_object_get_string_len(a)) == 0;
		case json_type_array:
			{
				size_t		n = json_object_array_length(a);
				size_t		i;

				if (n != json_object_array_length(b))
					return false;
				for (i = 0; i < n; i++)
					if (!json_equal(json_object_array_get_idx(a, i),
									json_object_array_get_idx(b, i), depth + 1))
						return false;
				return true;
			}
		case json_type_object:
			{
				json_object *bv;

				if (json_object_object_length(a) != json_object_object_length(b))
					return false;
				{
					json_object_object_foreach(a, key, av)
					{
						if (!json_object_object_get_ex(b, key, &bv) ||
							!json_equal(av, bv, depth + 1))
							return false;
					}
				}
				return true;
			}
		default:
			return false;
	}
}

/* Characters (UTF-8 code points) in a string. */
static int64_t
utf8_length(const char *s, size_t len)
{
	int64_t		n = 0;
	size_t		i;

	for (i = 0; i < len; i++)
		if (((unsigned char) s[i] & 0xC0) != 0x80)
			n++;
	return n;
}

/* ----------------------------------------------------------------------
 * Checking and compiling a schema
 * ---------------------------------------------------------------------- */

typedef struct CompileCtx
{
	JsonSchema *s;
	JsonSchemaError *err;
	char		path[256];		/* the place in the schema, "#/properties/a" */
} CompileCtx;

/* Append "/seg" to the schema path; returns the old length to restore. */
static size_t path_push(char *path, size_t size, const char *fmt,...) JS_PRINTF(3, 4);

static size_t
path_push(char *path, size_t size, const char *fmt,...)
{
	size_t		len = strlen(path);
	va_list		ap;

	if (len + 1 < size)
	{
		va_start(ap, fmt);
		vsnprintf(path + len, size - len, fmt, ap);
		va_end(ap);
	}
	return len;
}

static bool schema_error(CompileCtx *c, const char *rule, const char *fmt,...) JS_PRINTF(3, 4);

static bool
schema_error(CompileCtx *c, const char *rule, const char *fmt,...)
{
	va_list		ap;

	if (c->err)
	{
		snprintf(c->err->path, sizeof(c->err->path), "%s", c->path[0] ? c->path : "#");
		snprintf(c->err->rule, sizeof(c->err->rule), "%s", rule);
		va_start(ap, fmt);
		vsnprintf(c->err->message, sizeof(c->err->message), fmt, ap);
		va_end(ap);
	}
	return false;
}

/* Count entries against the size bound. */
static bool
count_size(CompileCtx *c, int n)
{
	c->s->size += n;
	if (c->s->size > JSON_SCHEMA_MAX_SIZE)
		return schema_error(c, "limit", "the schema is too large: more than %d subschemas and enum, const and required entries",
							JSON_SCHEMA_MAX_SIZE);
	return true;
}

static SNode *
new_node(CompileCtx *c)
{
	JsonSchema *s = c->s;
	SNode	   *n;

	if (s->nnodes == s->cap)
	{
		int			cap = s->cap ? s->cap * 2 : 16;
		SNode	  **nodes = realloc(s->nodes, sizeof(SNode *) * cap);

		if (nodes == NULL)
			return NULL;
		s->nodes = nodes;
		s->cap = cap;
	}
	n = JSON_SCHEMA_MALLOC(sizeof(SNode));
	if (n == NULL)
		return NULL;
	memset(n, 0, sizeof(SNode));
	n->index = s->nnodes;
	n->addl = -1;
	n->min_items = n->max_items = n->min_len = n->max_len = -1;
	s->nodes[s->nnodes++] = n;
	return n;
}

static int
prop_cmp(const void *a, const void *b)
{
	return strcmp(((const SProp *) a)->name, ((const SProp *) b)->name);
}

static SNode *compile_node(CompileCtx *c, json_object *js, int depth);

/*
 * A subschema of the keyword being compiled (whose name is on the path
 * already), under a member name or index when sub is given, written as a
 * JSON pointer token (~ as ~0, / as ~1).
 */
static SNode *
compile_child(CompileCtx *c, json_object *js, int depth, const char *sub)
{
	size_t		old = strlen(c->path);
	SNode	   *n;

	if (sub)
	{
		char		tok[128];
		size_t		o = 0;
		const char *p;

		for (p = sub; *p && o + 3 < sizeof(tok); p++)
		{
			if (*p == '~' || *p == '/')
			{
				tok[o++] = '~';
				tok[o++] = (*p == '~') ? '0' : '1';
			}
			else
				tok[o++] = *p;
		}
		tok[o] = '\0';
		path_push(c->path, sizeof(c->path), "/%s", tok);
	}
	n = compile_node(c, js, depth + 1);
	if (n)
		c->path[old] = '\0';
	return n;
}

/* Compile the subschemas of $defs (the root only). */
static bool
compile_defs(CompileCtx *c, json_object *defs, int depth)
{
	JsonSchema *s = c->s;
	size_t		n;
	int			i = 0;

	if (!json_object_is_type(defs, json_type_object))
		return schema_error(c, "$defs", "\"$defs\" must be an object of schemas");
	n = json_object_object_length(defs);
	s->def_names = JSON_SCHEMA_MALLOC(sizeof(char *) * (n ? n : 1));
	s->defs = JSON_SCHEMA_MALLOC(sizeof(SNode *) * (n ? n : 1));
	if (s->def_names == NULL || s->defs == NULL)
		return schema_error(c, "limit", "out of memory");
	{
		json_object_object_foreach(defs, key, val)
		{
			SNode	   *d = compile_child(c, val, depth, key);

			if (d == NULL)
				return false;
			s->def_names[i] = key;
			s->defs[i] = d;
			s->ndefs = ++i;
		}
	}
	return true;
}

/* The "type" keyword: a name or a non-empty array of distinct names. */
static bool
compile_type(CompileCtx *c, SNode *node, json_object *v)
{
	size_t		i,
				n = 1;
	bool		array = json_object_is_type(v, json_type_array);

	if (array)
		n = json_object_array_length(v);
	if ((!array && !json_object_is_type(v, json_type_string)) || n == 0)
		return schema_error(c, "type", "\"type\" must be a type name or a non-empty array of them");
	for (i = 0; i < n; i++)
	{
		json_object *t = array ? json_object_array_get_idx(v, i) : v;
		const char *name = json_object_is_type(t, json_type_string) ? json_object_get_string(t) : NULL;
		unsigned	bit = 0;
		size_t		k;

		for (k = 0; name && k < sizeof(type_names) / sizeof(type_names[0]); k++)
			if (strcmp(name, type_names[k].name) == 0)
				bit = type_names[k].bit;
		if (bit == 0)
			return schema_error(c, "type", "unknown type %s: the types are null, boolean, object, array, number, string and integer",
								name ? name : json_object_to_json_string_ext(t, JSON_C_TO_STRING_PLAIN));
		if (node->types & bit)
			return schema_error(c, "type", "type \"%s\" is listed twice", name);
		node->types |= bit;
	}
	return true;
}

/* One keyword of a subschema. */
static bool
compile_keyword(CompileCtx *c, SNode *node, const char *key, json_object *v, int depth)
{
	JsonSchema *s = c->s;

	if (strcmp(key, "type") == 0)
		return compile_type(c, node, v);
	if (strcmp(key, "properties") == 0)
	{
		size_t		n;
		int			i = 0;

		if (!json_object_is_type(v, json_type_object))
			return schema_error(c, key, "\"properties\" must be an object of schemas");
		n = json_object_object_length(v);
		node->props = JSON_SCHEMA_MALLOC(sizeof(SProp) * (n ? n : 1));
		if (node->props == NULL)
			return schema_error(c, "limit", "out of memory");
		{
			json_object_object_foreach(v, pname, pval)
			{
				SNode	   *p = compile_child(c, pval, depth, pname);

				if (p == NULL)
					return false;
				node->props[i].name = pname;
				node->props[i].node = p;
				node->nprops = ++i;
			}
		}
		qsort(node->props, node->nprops, sizeof(SProp), prop_cmp);
		return true;
	}
	if (strcmp(key, "required") == 0)
	{
		size_t		n,
					i,
					j;

		if (!json_object_is_type(v, json_type_array))
			return schema_error(c, key, "\"required\" must be an array of property names");
		n = json_object_array_length(v);
		if (!count_size(c, (int) n))
			return false;
		node->required = JSON_SCHEMA_MALLOC(sizeof(char *) * (n ? n : 1));
		if (node->required == NULL)
			return schema_error(c, "limit", "out of memory");
		for (i = 0; i < n; i++)
		{
			json_object *e = json_object_array_get_idx(v, i);

			if (!json_object_is_type(e, json_type_string))
				return schema_error(c, key, "\"required\" must be an array of property names");
			for (j = 0; j < i; j++)
				if (strcmp(node->required[j], json_object_get_string(e)) == 0)
					return schema_error(c, key, "property \"%s\" is required twice", json_object_get_string(e));
			node->required[i] = json_object_get_string(e);
			node->nrequired = (int) i + 1;
		}
		return true;
	}
	if (strcmp(key, "additionalProperties") == 0)
	{
		if (json_object_is_type(v, json_type_boolean))
		{
			node->addl = json_object_get_boolean(v) ? 1 : 0;
			return true;
		}
		node->addl = 2;
		node->addl_node = compile_child(c, v, depth, NULL);
		return node->addl_node != NULL;
	}
	if (strcmp(key, "enum") == 0)
	{
		if (!json_object_is_type(v, json_type_array) || json_object_array_length(v) == 0)
			return schema_error(c, key, "\"enum\" must be a non-empty array");
		node->enumv = v;
		return count_size(c, (int) json_object_array_length(v));
	}
	if (strcmp(key, "const") == 0)
	{
		node->constv = v;
		node->has_const = true;
		return count_size(c, 1);
	}
	if (strcmp(key, "items") == 0)
	{
		node->items = compile_child(c, v, depth, NULL);
		return node->items != NULL;
	}
	if (strcmp(key, "minItems") == 0 || strcmp(key, "maxItems") == 0 ||
		strcmp(key, "minLength") == 0 || strcmp(key, "maxLength") == 0)
	{
		int64_t		n;

		if (!get_count(v, &n))
			return schema_error(c, key, "\"%s\" must be a whole number from 0 to 2147483647", key);
		if (strcmp(key, "minItems") == 0)
			node->min_items = n;
		else if (strcmp(key, "maxItems") == 0)
			node->max_items = n;
		else
		{
			node->strict_bad = true;
			if (strcmp(key, "minLength") == 0)
				node->min_len = n;
			else
				node->max_len = n;
		}
		return true;
	}
	if (strcmp(key, "minimum") == 0 || strcmp(key, "maximum") == 0)
	{
		double		d;

		if (!is_number(v) || !isfinite(d = json_object_get_double(v)))
			return schema_error(c, key, "\"%s\" must be a number", key);
		if (key[1] == 'i')
		{
			node->has_min = true;
			node->minimum = d;
		}
		else
		{
			node->has_max = true;
			node->maximum = d;
		}
		return true;
	}
	if (strcmp(key, "pattern") == 0)
	{
		char		msg[256];

		if (!json_object_is_type(v, json_type_string))
			return schema_error(c, key, "\"pattern\" must be a string");
		if (s->rx.compile == NULL || s->rx.match == NULL)
			return schema_error(c, key, "\"pattern\" cannot be used here");
		msg[0] = '\0';
		node->pattern = json_object_get_string(v);
		node->re = s->rx.compile(s->rx.arg, node->pattern, msg, sizeof(msg));
		if (node->re == NULL)
			return schema_error(c, key, "pattern \"%.100s\" is not a valid regular expression: %s",
								node->pattern, msg[0] ? msg : "unknown error");
		return true;
	}
	if (strcmp(key, "anyOf") == 0)
	{
		size_t		n,
					i;

		if (!json_object_is_type(v, json_type_array) || (n = json_object_array_length(v)) == 0)
			return schema_error(c, key, "\"anyOf\" must be a non-empty array of schemas");
		node->any = JSON_SCHEMA_MALLOC(sizeof(SNode *) * n);
		if (node->any == NULL)
			return schema_error(c, "limit", "out of memory");
		for (i = 0; i < n; i++)
		{
			char		idx[16];
			SNode	   *a;

			snprintf(idx, sizeof(idx), "%d", (int) i);
			a = compile_child(c, json_object_array_get_idx(v, i), depth, idx);
			if (a == NULL)
				return false;
			node->any[i] = a;
			node->nany = (int) i + 1;
		}
		return true;
	}
	if (strcmp(key, "$ref") == 0)
	{
		if (!json_object_is_type(v, json_type_string))
			return schema_error(c, key, "\"$ref\" must be a string");
		node->ref_str = json_object_get_string(v);
		return true;
	}
	if (strcmp(key, "$defs") == 0)
	{
		if (depth != 0)
			return schema_error(c, key, "\"$defs\" is accepted at the root of the schema only");
		return compile_defs(c, v, depth);
	}
	if (strcmp(key, "title") == 0 || strcmp(key, "description") == 0 ||
		strcmp(key, "$comment") == 0)
	{
		if (!json_object_is_type(v, json_type_string))
			return schema_error(c, key, "\"%s\" must be a string", key);
		return true;
	}
	if (strcmp(key, "$schema") == 0 || strcmp(key, "default") == 0 ||
		strcmp(key, "examples") == 0)
	{
		node->strict_bad = true;
		return true;
	}
	return schema_error(c, key[0] ? key : "schema", "keyword \"%.100s\" is not supported", key);
}

/* Check and compile one subschema (an object). */
static SNode *
compile_node(CompileCtx *c, json_object *js, int depth)
{
	SNode	   *node;

	if (depth > JSON_SCHEMA_MAX_DEPTH)
	{
		schema_error(c, "limit", "the schema is nested more than %d levels deep", JSON_SCHEMA_MAX_DEPTH);
		return NULL;
	}
	if (!json_object_is_type(js, json_type_object))
	{
		schema_error(c, "schema", "a schema must be a JSON object, not %s", instance_type_name(js));
		return NULL;
	}
	if (!count_size(c, 1))
		return NULL;
	node = new_node(c);
	if (node == NULL)
	{
		schema_error(c, "limit", "out of memory");
		return NULL;
	}
	if (depth == 0)
		c->s->root = node;
	{
		json_object_object_foreach(js, key, val)
		{
			size_t		old = path_push(c->path, sizeof(c->path), "/%s", key);

			if (!compile_keyword(c, node, key, val, depth))
				return NULL;
			c->path[old] = '\0';
		}
	}
	return node;
}

/* Decode one JSON pointer token (~1 is '/', ~0 is '~') into buf. */
static bool
pointer_token(const char *tok, char *buf, size_t size)
{
	size_t		o = 0;

	for (; *tok; tok++)
	{
		char		ch = *tok;

		if (ch == '~')
		{
			if (tok[1] == '0')
				ch = '~';
			else if (tok[1] == '1')
				ch = '/';
			else
				return false;
			tok++;
		}
		if (o + 1 >= size)
			return false;
		buf[o++] = ch;
	}
	buf[o] = '\0';
	return true;
}

/* Resolve every $ref: "#" (the root) or "#/$defs/NAME". */
static bool
resolve_refs(CompileCtx *c)
{
	JsonSchema *s = c->s;
	int			i,
				k;

	for (i = 0; i < s->nnodes; i++)
	{
		SNode	   *n = s->nodes[i];
		char		name[256];

		if (n->ref_str == NULL)
			continue;
		if (strcmp(n->ref_str, "#") == 0)
		{
			n->ref = s->root;
			continue;
		}
		if (strncmp(n->ref_str, "#/$defs/", 8) == 0 && strchr(n->ref_str + 8, '/') == NULL &&
			pointer_token(n->ref_str + 8, name, sizeof(name)))
			for (k = 0; k < s->ndefs; k++)
				if (strcmp(s->def_names[k], name) == 0)
				{
					n->ref = s->defs[k];
					break;
				}
		if (n->ref == NULL)
		{
			snprintf(c->path, sizeof(c->path), "#");
			return schema_error(c, "$ref", "$ref \"%.100s\" does not name a schema of this schema's $defs (\"#/$defs/NAME\") or its root (\"#\")",
								n->ref_str);
		}
	}
	return true;
}

/*
 * Refuse a cycle of $ref and anyOf that comes back to a subschema without
 * going down into a property or an item: validating against it would never
 * end.  An iterative depth-first search, so a long chain uses no stack.
 */
static bool
check_cycles(CompileCtx *c)
{
	JsonSchema *s = c->s;
	int			n = s->nnodes;
	char	   *color = calloc(n ? n : 1, 1);
	int		   *stack = JSON_SCHEMA_MALLOC(sizeof(int) * (n ? n : 1));
	int		   *edge = JSON_SCHEMA_MALLOC(sizeof(int) * (n ? n : 1));
	bool		ok = true;
	int			i;

	if (color == NULL || stack == NULL || edge == NULL)
	{
		free(color);
		free(stack);
		free(edge);
		return schema_error(c, "limit", "out of memory");
	}
	for (i = 0; i < n && ok; i++)
	{
		int			sp = 0;

		if (color[i])
			continue;
		color[i] = 1;
		stack[sp] = i;
		edge[sp++] = 0;
		while (sp > 0 && ok)
		{
			SNode	   *top = s->nodes[stack[sp - 1]];
			int			e = edge[sp - 1]++;
			SNode	   *next = NULL;

			if (e < top->nany)
				next = top->any[e];
			else if (e == top->nany && top->ref)
				next = top->ref;
			else
			{
				color[top->index] = 2;
				sp--;
				continue;
			}
			if (color[next->index] == 1)
			{
				snprintf(c->path, sizeof(c->path), "#");
				ok = schema_error(c, "$ref", "the schema refers to itself through $ref or anyOf without going into a property or an item, which would never end");
			}
			else if (color[next->index] == 0)
			{
				color[next->index] = 1;
				stack[sp] = next->index;
				edge[sp++] = 0;
			}
		}
	}
	free(color);
	free(stack);
	free(edge);
	return ok;
}

JsonSchema *
JsonSchemaCompile(json_object *schema, const JsonSchemaRegex *rx, JsonSchemaError *err)
{
	CompileCtx	c;
	JsonSchema *s = JSON_SCHEMA_MALLOC(sizeof(JsonSchema));

	if (s == NULL)
	{
		set_error(err, "#", "limit", "out of memory");
		return NULL;
	}
	memset(s, 0, sizeof(JsonSchema));
	if (rx)
		s->rx = *rx;
	s->src = json_object_get(schema);
	memset(&c, 0, sizeof(c));
	c.s = s;
	c.err = err;
	c.path[0] = '#';
	if (compile_node(&c, schema, 0) == NULL || !resolve_refs(&c) || !check_cycles(&c))
	{
		JsonSchemaFree(s);
		return NULL;
	}
	return s;
}

void
JsonSchemaFree(JsonSchema *s)
{
	int			i;

	if (s == NULL)
		return;
	for (i = 0; i < s->nnodes; i++)
	{
		SNode	   *n = s->nodes[i];

		if (n->re && s->rx.release)
			s->rx.release(s->rx.arg, n->re);
		free(n->props);
		free(n->required);
		free(n->any);
		free(n);
	}
	free(s->nodes);
	free(s->def_names);
	free(s->defs);
	if (s->src)
		json_object_put(s->src);
	free(s);
}

bool
JsonSchemaRootIsObject(const JsonSchema *s)
{
	return s->root->types == T_OBJECT;
}

bool
JsonSchemaStrictable(const JsonSchema *s)
{
	int			i,
				k,
				r;

	if (!JsonSchemaRootIsObject(s))
		return false;
	for (i = 0; i < s->nnodes; i++)
	{
		SNode	   *n = s->nodes[i];

		if (n->strict_bad)
			return false;
		if ((n->types & T_OBJECT) || n->nprops > 0)
		{
			if (n->addl != 0)
				return false;
			for (k = 0; k < n->nprops; k++)
			{
				bool		found = false;

				for (r = 0; r < n->nrequired && !found; r++)
					found = strcmp(n->required[r], n->props[k].name) == 0;
				if (!found)
					return false;
			}
		}
	}
	return true;
}

int
JsonSchemaSize(const JsonSchema *s)
{
	return s->size;
}

/* ----------------------------------------------------------------------
 * Validating an instance
 * ---------------------------------------------------------------------- */

typedef struct ValidateCtx
{
	const JsonSchema *s;
	JsonSchemaError *err;
	long		steps;
	int			nesting;
	char		path[256];
	size_t		plen;
} ValidateCtx;

/* Append ".key" (or ["key"] when it is not a plain name) or "[i]". */
static size_t
vpath_key(ValidateCtx *v, const char *key)
{
	size_t		old = v->plen;
	bool		plain = (*key != '\0');
	const char *p;
	size_t		room = sizeof(v->path) - v->plen;
	int			w;

	for (p = key; *p && plain; p++)
		plain = (*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
				 (p != key && *p >= '0' && *p <= '9'));
	w = plain ? snprintf(v->path + v->plen, room, ".%s", key) :
		snprintf(v->path + v->plen, room, "[\"%.40s\"]", key);
	if (w > 0 && (size_t) w < room)
		v->plen += w;
	else
		v->path[old] = '\0';
	return old;
}

static size_t
vpath_index(ValidateCtx *v, size_t i)
{
	size_t		old = v->plen;
	size_t		room = sizeof(v->path) - v->plen;
	int			w = snprintf(v->path + v->plen, room, "[%zu]", i);

	if (w > 0 && (size_t) w < room)
		v->plen += w;
	else
		v->path[old] = '\0';
	return old;
}

static void
vpath_pop(ValidateCtx *v, size_t old)
{
	v->plen = old;
	v->path[old] = '\0';
}

static int invalid(ValidateCtx *v, const char *rule, const char *fmt,...) JS_PRINTF(3, 4);

static int
invalid(ValidateCtx *v, const char *rule, const char *fmt,...)
{
	va_list		ap;

	if (v->err)
	{
		snprintf(v->err->path, sizeof(v->err->path), "%s", v->path);
		snprintf(v->err->rule, sizeof(v->err->rule), "%s", rule);
		va_start(ap, fmt);
		vsnprintf(v->err->message, sizeof(v->err->message), fmt, ap);
		va_end(ap);
	}
	return JSON_SCHEMA_INVALID;
}

static int limit(ValidateCtx *v, const char *fmt,...) JS_PRINTF(2, 3);

static int
limit(ValidateCtx *v, const char *fmt,...)
{
	va_list		ap;

	if (v->err)
	{
		snprintf(v->err->path, sizeof(v->err->path), "%s", v->path);
		snprintf(v->err->rule, sizeof(v->err->rule), "limit");
		va_start(ap, fmt);
		vsnprintf(v->err->message, sizeof(v->err->message), fmt, ap);
		va_end(ap);
	}
	return JSON_SCHEMA_LIMIT;
}

/* The type names of a mask in words: "a number or null". */
static void
types_text(unsigned types, char *buf, size_t size)
{
	size_t		k,
				o = 0;
	int			seen = 0;

	buf[0] = '\0';
	for (k = 0; k < sizeof(type_names) / sizeof(type_names[0]); k++)
		if (types & type_names[k].bit)
		{
			int			w = snprintf(buf + o, size - o, "%s%s", seen ? " or " : "", type_names[k].name);

			if (w < 0 || (size_t) w >= size - o)
				break;
			o += w;
			seen++;
		}
}

static int	validate_node(ValidateCtx *v, const SNode *n, json_object *inst);

static const SNode *
find_prop(const SNode *n, const char *name)
{
	int			lo = 0,
				hi = n->nprops - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;
		int			cmp = strcmp(name, n->props[mid].name);

		if (cmp == 0)
			return n->props[mid].node;
		if (cmp < 0)
			hi = mid - 1;
		else
			lo = mid + 1;
	}
	return NULL;
}

static int
validate_object(ValidateCtx *v, const SNode *n, json_object *inst)
{
	int			i;
	json_object *dummy;

	for (i = 0; i < n->nrequired; i++)
		if (!json_object_object_get_ex(inst, n->required[i], &dummy))
			return invalid(v, "required", "required property \"%.100s\" is missing", n->required[i]);
	{
		json_object_object_foreach(inst, key, val)
		{
			const SNode *child = find_prop(n, key);
			size_t		old;
			int			r;

			if (child == NULL && n->addl == 0)
				return invalid(v, "additionalProperties", "property \"%.100s\" is not allowed", key);
			if (child == NULL && n->addl == 2)
				child = n->addl_node;
			if (child == NULL)
				continue;
			old = vpath_key(v, key);
			r = validate_node(v, child, val);
			if (r != JSON_SCHEMA_VALID)
				return r;
			vpath_pop(v, old);
		}
	}
	return JSON_SCHEMA_VALID;
}

static int
validate_node(ValidateCtx *v, const SNode *n, json_object *inst)
{
	unsigned	t = instance_type(inst);
	char		a[96],
				b[128];
	int			r,
				i;

	if (++v->steps > JSON_SCHEMA_MAX_STEPS)
		return limit(v, "validating the reply takes more than %d steps", JSON_SCHEMA_MAX_STEPS);
	if (v->nesting >= JSON_SCHEMA_MAX_NESTING)
		return limit(v, "validating the reply nests more than %d levels deep", JSON_SCHEMA_MAX_NESTING);
	v->nesting++;

	if (n->types && (n->types & t) == 0)
	{
		types_text(n->types, b, sizeof(b));
		v->nesting--;
		return invalid(v, "type", "the value is %s, not of type %s", instance_type_name(inst), b);
	}
	if (n->has_const && !json_equal(n->constv, inst, 0))
	{
		excerpt(n->constv, a, sizeof(a));
		v->nesting--;
		return invalid(v, "const", "the value must be %s", a);
	}
	if (n->enumv)
	{
		size_t		k,
					ne = json_object_array_length(n->enumv);
		bool		found = false;

		for (k = 0; k < ne && !found; k++)
			found = json_equal(json_object_array_get_idx(n->enumv, k), inst, 0);
		if (!found)
		{
			excerpt(inst, a, sizeof(a));
			excerpt(n->enumv, b, sizeof(b));
			v->nesting--;
			return invalid(v, "enum", "%s is not one of %s", a, b);
		}
	}
	if (t & T_NUMBER)
	{
		double		d = json_object_get_double(inst);

		if (n->has_min && d < n->minimum)
		{
			v->nesting--;
			return invalid(v, "minimum", "%.17g is less than the minimum %.17g", d, n->minimum);
		}
		if (n->has_max && d > n->maximum)
		{
			v->nesting--;
			return invalid(v, "maximum", "%.17g is greater than the maximum %.17g", d, n->maximum);
		}
	}
	if (t & T_STRING)
	{
		const char *s = json_object_get_string(inst);
		size_t		len = (size_t) json_object_get_string_len(inst);
		int64_t		chars = (n->min_len >= 0 || n->max_len >= 0) ? utf8_length(s, len) : 0;

		if (n->min_len >= 0 && chars < n->min_len)
		{
			v->nesting--;
			return invalid(v, "minLength", "the string has %lld characters, fewer than %lld",
						   (long long) chars, (long long) n->min_len);
		}
		if (n->max_len >= 0 && chars > n->max_len)
		{
			v->nesting--;
			return invalid(v, "maxLength", "the string has %lld characters, more than %lld",
						   (long long) chars, (long long) n->max_len);
		}
		if (n->re)
		{
			char		msg[256];

			msg[0] = '\0';
			r = v->s->rx.match(v->s->rx.arg, n->re, s, len, msg, sizeof(msg));
			if (r < 0)
			{
				v->nesting--;
				return limit(v, "pattern \"%.100s\" could not be matched: %s", n->pattern, msg);
			}
			if (r == 0)
			{
				excerpt(inst, a, sizeof(a));
				v->nesting--;
				return invalid(v, "pattern", "%s does not match the pattern \"%.100s\"", a, n->pattern);
			}
		}
	}
	if (t & T_ARRAY)
	{
		size_t		len = json_object_array_length(inst);
		size_t		k;

		if (n->min_items >= 0 && (int64_t) len < n->min_items)
		{
			v->nesting--;
			return invalid(v, "minItems", "the array has %zu items, fewer than %lld",
						   len, (long long) n->min_items);
		}
		if (n->max_items >= 0 && (int64_t) len > n->max_items)
		{
			v->nesting--;
			return invalid(v, "maxItems", "the array has %zu items, more than %lld",
						   len, (long long) n->max_items);
		}
		if (n->items)
			for (k = 0; k < len; k++)
			{
				size_t		old = vpath_index(v, k);

				r = validate_node(v, n->items, json_object_array_get_idx(inst, k));
				if (r != JSON_SCHEMA_VALID)
				{
					v->nesting--;
					return r;
				}
				vpath_pop(v, old);
			}
	}
	if (t & T_OBJECT)
	{
		r = validate_object(v, n, inst);
		if (r != JSON_SCHEMA_VALID)
		{
			v->nesting--;
			return r;
		}
	}
	if (n->nany > 0)
	{
		JsonSchemaError first;
		JsonSchemaError *saved = v->err;
		size_t		old = v->plen;
		bool		matched = false;

		memset(&first, 0, sizeof(first));
		for (i = 0; i < n->nany && !matched; i++)
		{
			JsonSchemaError e;

			v->err = &e;
			r = validate_node(v, n->any[i], inst);
			vpath_pop(v, old);
			if (r == JSON_SCHEMA_LIMIT)
			{
				v->err = saved;
				if (saved)
					*saved = e;
				v->nesting--;
				return r;
			}
			if (r == JSON_SCHEMA_VALID)
				matched = true;
			else if (i == 0)
				first = e;
		}
		v->err = saved;
		if (!matched)
		{
			v->nesting--;
			return invalid(v, "anyOf", "the value matches none of the %d alternatives (the first: at %s, rule \"%s\": %s)",
						   n->nany, first.path, first.rule, first.message);
		}
	}
	if (n->ref)
	{
		r = validate_node(v, n->ref, inst);
		if (r != JSON_SCHEMA_VALID)
		{
			v->nesting--;
			return r;
		}
	}
	v->nesting--;
	return JSON_SCHEMA_VALID;
}

int
JsonSchemaValidate(const JsonSchema *s, json_object *instance, JsonSchemaError *err)
{
	ValidateCtx v;

	memset(&v, 0, sizeof(v));
	v.s = s;
	v.err = err;
	v.path[0] = '$';
	v.plen = 1;
	return validate_node(&v, s->root, instance);
}
