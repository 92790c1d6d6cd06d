/*-------------------------------------------------------------------------
 *
 * test_jsonschema.c
 *	  Standalone unit and property tests of the JSON Schema validator
 *	  (src/jsonschema.c).
 *
 * Three parts:
 *   - a table of (schema, instance, verdict, rule, path): every keyword of
 *     the subset with instances it takes and instances it refuses, and the
 *     error's path and rule checked;
 *   - a table of schemas that must be refused when checked (unsupported
 *     keywords, bad keyword values, $ref cycles, too deep, too large);
 *   - a property test: random schemas and random instances from a fixed
 *     seed (--seed N, --rounds N), checking that nothing crashes, that an
 *     instance generated to fit its schema validates, that a verdict is
 *     the same twice, and that an invalid verdict names a path and a rule.
 *     Allocations may be made to fail (every Nth), and must fail cleanly.
 *
 * Patterns use POSIX extended regular expressions here; the extension
 * gives the validator PostgreSQL's regex engine instead.  It prints each
 * failure, then exactly one line "N passed, M failed" counting test
 * cases (a table row, a bound, and each property over all its rounds, see
 * cases.h), and exits 1 if anything failed.
 *
 * test/unit/test_jsonschema.c
 *
 *-------------------------------------------------------------------------
 */
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *test_malloc(size_t size);

#define JSON_SCHEMA_MALLOC test_malloc
#include "jsonschema.c"

#include "cases.h"

static int	passed = 0;
static int	failed = 0;

/* ----------------------------------------------------------------------
 * Allocation failure injection
 * ---------------------------------------------------------------------- */

static long alloc_calls = 0;
static long alloc_fail_every = 0;	/* 0: never */

static void *
test_malloc(size_t size)
{
	alloc_calls++;
	if (alloc_fail_every > 0 && alloc_calls % alloc_fail_every == 0)
		return NULL;
	return malloc(size);
}

/* ----------------------------------------------------------------------
 * POSIX regex callbacks
 * ---------------------------------------------------------------------- */

static long regex_live = 0;		/* compiled and not yet released */

static void *
rx_compile(void *arg __attribute__((unused)), const char *pattern, char *err, size_t errlen)
{
	regex_t    *re = malloc(sizeof(regex_t));
	int			rc;

	if (re == NULL)
		return NULL;
	rc = regcomp(re, pattern, REG_EXTENDED | REG_NOSUB);
	if (rc != 0)
	{
		regerror(rc, re, err, errlen);
		free(re);
		return NULL;
	}
	regex_live++;
	return re;
}

static int
rx_match(void *arg __attribute__((unused)), void *handle, const char *text, size_t len, char *err, size_t errlen)
{
	if (strlen(text) != len)
	{
		snprintf(err, errlen, "the string holds a NUL");
		return -1;
	}
	return regexec((regex_t *) handle, text, 0, NULL, 0) == 0 ? 1 : 0;
}

static void
rx_release(void *arg __attribute__((unused)), void *handle)
{
	regfree((regex_t *) handle);
	free(handle);
	regex_live--;
}

static const JsonSchemaRegex posix_rx = {rx_compile, rx_match, rx_release, NULL};

/* ----------------------------------------------------------------------
 * Validation table
 * ---------------------------------------------------------------------- */

typedef struct VCase
{
	const char *schema;
	const char *instance;
	int			expect;			/* JSON_SCHEMA_VALID or _INVALID */
	const char *rule;			/* for invalid: the rule */
	const char *path;			/* for invalid: the path */
} VCase;

#define OK(s, i) {s, i, JSON_SCHEMA_VALID, NULL, NULL}
#define BAD(s, i, r, p) {s, i, JSON_SCHEMA_INVALID, r, p}

static const VCase vcases[] = {
	/* type */
	OK("{\"type\":\"string\"}", "\"x\""),
	BAD("{\"type\":\"string\"}", "1", "type", "$"),
	OK("{\"type\":\"number\"}", "1.5"),
	OK("{\"type\":\"number\"}", "2"),
	BAD("{\"type\":\"number\"}", "\"2\"", "type", "$"),
	OK("{\"type\":\"integer\"}", "7"),
	OK("{\"type\":\"integer\"}", "7.0"),
	BAD("{\"type\":\"integer\"}", "7.5", "type", "$"),
	OK("{\"type\":\"boolean\"}", "false"),
	BAD("{\"type\":\"boolean\"}", "0", "type", "$"),
	OK("{\"type\":\"null\"}", "null"),
	BAD("{\"type\":\"null\"}", "false", "type", "$"),
	OK("{\"type\":\"object\"}", "{}"),
	BAD("{\"type\":\"object\"}", "[]", "type", "$"),
	OK("{\"type\":\"array\"}", "[]"),
	BAD("{\"type\":\"array\"}", "{}", "type", "$"),
	OK("{\"type\":[\"string\",\"null\"]}", "null"),
	OK("{\"type\":[\"string\",\"null\"]}", "\"a\""),
	BAD("{\"type\":[\"string\",\"null\"]}", "3", "type", "$"),
	OK("{}", "[1, {\"a\": null}]"),
	/* properties */
	OK("{\"properties\":{\"a\":{\"type\":\"number\"}}}", "{\"a\":1}"),
	OK("{\"properties\":{\"a\":{\"type\":\"number\"}}}", "{\"b\":\"x\"}"),
	BAD("{\"properties\":{\"a\":{\"type\":\"number\"}}}", "{\"a\":\"1\"}", "type", "$.a"),
	BAD("{\"properties\":{\"a b\":{\"type\":\"number\"}}}", "{\"a b\":\"1\"}", "type", "$[\"a b\"]"),
	OK("{\"properties\":{\"a\":{\"type\":\"number\"}}}", "[\"not an object\"]"),
	/* required */
	OK("{\"required\":[\"a\",\"b\"]}", "{\"a\":1,\"b\":null}"),
	BAD("{\"required\":[\"a\",\"b\"]}", "{\"a\":1}", "required", "$"),
	OK("{\"required\":[\"a\"]}", "\"not an object\""),
	/* additionalProperties */
	OK("{\"properties\":{\"a\":{}},\"additionalProperties\":false}", "{\"a\":1}"),
	BAD("{\"properties\":{\"a\":{}},\"additionalProperties\":false}", "{\"a\":1,\"c\":2}", "additionalProperties", "$"),
	OK("{\"additionalProperties\":true}", "{\"z\":1}"),
	OK("{\"properties\":{\"a\":{}},\"additionalProperties\":{\"type\":\"string\"}}", "{\"a\":1,\"b\":\"s\"}"),
	BAD("{\"properties\":{\"a\":{}},\"additionalProperties\":{\"type\":\"string\"}}", "{\"a\":1,\"b\":2}", "type", "$.b"),
	/* enum */
	OK("{\"enum\":[\"red\",\"green\",1,null]}", "\"green\""),
	OK("{\"enum\":[\"red\",\"green\",1,null]}", "1.0"),
	OK("{\"enum\":[\"red\",\"green\",1,null]}", "null"),
	BAD("{\"enum\":[\"red\",\"green\",1,null]}", "\"blue\"", "enum", "$"),
	BAD("{\"enum\":[\"red\"]}", "\"Red\"", "enum", "$"),
	OK("{\"enum\":[{\"a\":[1,2]}]}", "{\"a\":[1,2.0]}"),
	BAD("{\"enum\":[{\"a\":[1,2]}]}", "{\"a\":[2,1]}", "enum", "$"),
	/* const */
	OK("{\"const\":\"x\"}", "\"x\""),
	BAD("{\"const\":\"x\"}", "\"y\"", "const", "$"),
	OK("{\"const\":{\"a\":1,\"b\":2}}", "{\"b\":2,\"a\":1}"),
	BAD("{\"const\":{\"a\":1}}", "{\"a\":1,\"b\":2}", "const", "$"),
	BAD("{\"const\":false}", "0", "const", "$"),
	/* items */
	OK("{\"items\":{\"type\":\"integer\"}}", "[1,2,3]"),
	BAD("{\"items\":{\"type\":\"integer\"}}", "[1,\"2\",3]", "type", "$[1]"),
	OK("{\"items\":{\"type\":\"integer\"}}", "{\"not\":\"an array\"}"),
	BAD("{\"properties\":{\"l\":{\"items\":{\"properties\":{\"p\":{\"type\":\"number\"}}}}}}",
		"{\"l\":[{\"p\":1},{\"p\":\"x\"}]}", "type", "$.l[1].p"),
	/* minItems / maxItems */
	OK("{\"minItems\":2}", "[1,2]"),
	BAD("{\"minItems\":2}", "[1]", "minItems", "$"),
	OK("{\"maxItems\":2}", "[1,2]"),
	BAD("{\"maxItems\":2}", "[1,2,3]", "maxItems", "$"),
	OK("{\"maxItems\":0}", "[]"),
	/* minimum / maximum */
	OK("{\"minimum\":0}", "0"),
	BAD("{\"minimum\":0}", "-0.5", "minimum", "$"),
	OK("{\"maximum\":10.5}", "10.5"),
	BAD("{\"maximum\":10}", "11", "maximum", "$"),
	OK("{\"minimum\":0}", "\"-1 is a string\""),
	/* minLength / maxLength: characters, not bytes */
	OK("{\"minLength\":2}", "\"ab\""),
	BAD("{\"minLength\":2}", "\"a\"", "minLength", "$"),
	OK("{\"maxLength\":2}", "\"\\u00e9\\u00e9\""),
	BAD("{\"maxLength\":2}", "\"abc\"", "maxLength", "$"),
	OK("{\"maxLength\":1}", "\"\xe2\x82\xac\""),
	/* pattern: found anywhere, as JSON Schema says */
	OK("{\"pattern\":\"^[A-Z]{2}-[0-9]+$\"}", "\"AB-12\""),
	BAD("{\"pattern\":\"^[A-Z]{2}-[0-9]+$\"}", "\"ab-12\"", "pattern", "$"),
	OK("{\"pattern\":\"o\"}", "\"foo\""),
	OK("{\"pattern\":\"^x$\"}", "12"),
	/* anyOf */
	OK("{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"integer\"}]}", "3"),
	OK("{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"integer\"}]}", "\"3\""),
	BAD("{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"integer\"}]}", "3.5", "anyOf", "$"),
	BAD("{\"properties\":{\"v\":{\"anyOf\":[{\"minimum\":5},{\"maximum\":1}]}}}", "{\"v\":3}", "anyOf", "$.v"),
	/* $defs / $ref */
	OK("{\"$defs\":{\"id\":{\"type\":\"integer\"}},\"properties\":{\"a\":{\"$ref\":\"#/$defs/id\"}}}", "{\"a\":4}"),
	BAD("{\"$defs\":{\"id\":{\"type\":\"integer\"}},\"properties\":{\"a\":{\"$ref\":\"#/$defs/id\"}}}", "{\"a\":\"4\"}", "type", "$.a"),
	OK("{\"$defs\":{\"a/b\":{\"const\":1}},\"$ref\":\"#/$defs/a~1b\"}", "1"),
	/* recursion through properties is bounded by the instance */
	OK("{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"children\":{\"type\":\"array\",\"items\":{\"$ref\":\"#\"}}},\"required\":[\"name\"]}",
	   "{\"name\":\"a\",\"children\":[{\"name\":\"b\",\"children\":[{\"name\":\"c\"}]}]}"),
	BAD("{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"children\":{\"type\":\"array\",\"items\":{\"$ref\":\"#\"}}},\"required\":[\"name\"]}",
		"{\"name\":\"a\",\"children\":[{\"name\":\"b\",\"children\":[{}]}]}", "required", "$.children[0].children[0]"),
	/* annotations are accepted and do not constrain */
	OK("{\"title\":\"t\",\"description\":\"d\",\"$comment\":\"c\",\"default\":1,\"examples\":[1],\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"type\":\"integer\"}", "5"),
	/* a whole record as the issue's examples */
	OK("{\"type\":\"object\",\"properties\":{\"order_id\":{\"type\":\"string\"},\"amount\":{\"type\":\"number\"},\"product\":{\"type\":\"string\"}},\"required\":[\"order_id\",\"amount\",\"product\"],\"additionalProperties\":false}",
	   "{\"order_id\":\"A-1\",\"amount\":12.5,\"product\":\"lamp\"}"),
	BAD("{\"type\":\"object\",\"properties\":{\"order_id\":{\"type\":\"string\"},\"amount\":{\"type\":\"number\"},\"product\":{\"type\":\"string\"}},\"required\":[\"order_id\",\"amount\",\"product\"],\"additionalProperties\":false}",
		"{\"order_id\":\"A-1\",\"amount\":\"12.5\",\"product\":\"lamp\"}", "type", "$.amount"),
	BAD("{\"type\":\"object\",\"properties\":{\"order_id\":{\"type\":\"string\"},\"amount\":{\"type\":\"number\"},\"product\":{\"type\":\"string\"}},\"required\":[\"order_id\",\"amount\",\"product\"],\"additionalProperties\":false}",
		"{\"order_id\":\"A-1\",\"amount\":12.5}", "required", "$"),
};

/* Schemas refused when checked: (schema, rule). */
typedef struct SCase
{
	const char *schema;
	const char *rule;
	const char *path;			/* the place in the schema, when checked */
} SCase;

static const SCase scases[] = {
	{"[]", "schema", NULL},
	{"\"string\"", "schema", NULL},
	{"true", "schema", NULL},
	{"{\"format\":\"email\"}", "format", NULL},
	{"{\"oneOf\":[{}]}", "oneOf", NULL},
	{"{\"allOf\":[{}]}", "allOf", NULL},
	{"{\"not\":{}}", "not", NULL},
	{"{\"exclusiveMinimum\":1}", "exclusiveMinimum", NULL},
	{"{\"multipleOf\":2}", "multipleOf", NULL},
	{"{\"patternProperties\":{}}", "patternProperties", NULL},
	{"{\"definitions\":{}}", "definitions", NULL},
	{"{\"properties\":{\"a\":{\"uniqueItems\":true}}}", "uniqueItems", "#/properties/a/uniqueItems"},
	{"{\"properties\":{\"a/b~\":{\"type\":\"text\"}}}", "type", "#/properties/a~1b~0/type"},
	{"{\"items\":{\"anyOf\":[{},{\"format\":\"uri\"}]}}", "format", "#/items/anyOf/1/format"},
	{"{\"$defs\":{\"d\":{\"additionalProperties\":{\"not\":{}}}}}", "not", "#/$defs/d/additionalProperties/not"},
	{"{\"type\":\"text\"}", "type", NULL},
	{"{\"type\":[]}", "type", NULL},
	{"{\"type\":[\"string\",\"string\"]}", "type", NULL},
	{"{\"type\":3}", "type", NULL},
	{"{\"properties\":[]}", "properties", NULL},
	{"{\"properties\":{\"a\":1}}", "schema", NULL},
	{"{\"required\":\"a\"}", "required", NULL},
	{"{\"required\":[\"a\",\"a\"]}", "required", NULL},
	{"{\"required\":[1]}", "required", NULL},
	{"{\"additionalProperties\":\"no\"}", "schema", NULL},
	{"{\"enum\":[]}", "enum", NULL},
	{"{\"enum\":\"a\"}", "enum", NULL},
	{"{\"items\":[{}]}", "schema", NULL},
	{"{\"minItems\":-1}", "minItems", NULL},
	{"{\"maxItems\":1.5}", "maxItems", NULL},
	{"{\"minLength\":\"1\"}", "minLength", NULL},
	{"{\"maxLength\":3000000000}", "maxLength", NULL},
	{"{\"minimum\":\"0\"}", "minimum", NULL},
	{"{\"maximum\":null}", "maximum", NULL},
	{"{\"pattern\":1}", "pattern", NULL},
	{"{\"pattern\":\"(\"}", "pattern", NULL},
	{"{\"anyOf\":[]}", "anyOf", NULL},
	{"{\"anyOf\":{}}", "anyOf", NULL},
	{"{\"$ref\":1}", "$ref", NULL},
	{"{\"$ref\":\"#/$defs/missing\"}", "$ref", NULL},
	{"{\"$ref\":\"http://example.com/schema\"}", "$ref", NULL},
	{"{\"$ref\":\"#/properties/a\",\"properties\":{\"a\":{}}}", "$ref", NULL},
	{"{\"properties\":{\"a\":{\"$defs\":{}}}}", "$defs", NULL},
	{"{\"$defs\":[]}", "$defs", NULL},
	{"{\"title\":1}", "title", NULL},
	/* cycles that never go into the instance */
	{"{\"$ref\":\"#\"}", "$ref", NULL},
	{"{\"$defs\":{\"a\":{\"$ref\":\"#/$defs/b\"},\"b\":{\"$ref\":\"#/$defs/a\"}},\"$ref\":\"#/$defs/a\"}", "$ref", NULL},
	{"{\"$defs\":{\"a\":{\"anyOf\":[{\"type\":\"string\"},{\"$ref\":\"#/$defs/a\"}]}}}", "$ref", NULL},
	{"{\"anyOf\":[{\"$ref\":\"#\"}]}", "$ref", NULL},
};

/* Parse JSON text, nested up to 256 levels as the extension reads it. */
static json_object *
parse(const char *text)
{
	json_tokener *tok = json_tokener_new_ex(256);
	json_object *obj = json_tokener_parse_ex(tok, text, (int) strlen(text) + 1);

	json_tokener_free(tok);
	return obj;
}

/* in run_property: a check is one of a property's rounds (cases.h) */
static int	in_property = 0;

static void
check(int ok, const char *what, int n, const char *fmt, const char *a, const char *b)
{
	if (in_property)
		ok = UnitProperty(what, ok);
	else if (ok)
		passed++;
	else
		failed++;
	if (ok)
		return;
	printf("FAIL %s #%d: ", what, n);
	printf(fmt, a ? a : "(null)", b ? b : "(null)");
	printf("\n");
}

static void
run_tables(void)
{
	size_t		i;

	for (i = 0; i < sizeof(vcases) / sizeof(vcases[0]); i++)
	{
		const VCase *c = &vcases[i];
		json_object *schema = parse(c->schema);
		json_object *inst = parse(c->instance);
		JsonSchemaError err;
		JsonSchema *s;
		int			r;

		memset(&err, 0, sizeof(err));
		if (schema == NULL || (inst == NULL && strcmp(c->instance, "null") != 0))
		{
			check(0, "vcase parse", (int) i, "%s / %s", c->schema, c->instance);
			continue;
		}
		s = JsonSchemaCompile(schema, &posix_rx, &err);
		json_object_put(schema);
		if (s == NULL)
		{
			check(0, "vcase compile", (int) i, "%s: %s", c->schema, err.message);
			json_object_put(inst);
			continue;
		}
		r = JsonSchemaValidate(s, inst, &err);
		if (c->expect == JSON_SCHEMA_VALID)
			check(r == JSON_SCHEMA_VALID, "valid", (int) i, "%s rejected: %s", c->instance, err.message);
		else
		{
			check(r == JSON_SCHEMA_INVALID, "invalid", (int) i, "%s accepted by %s", c->instance, c->schema);
			if (r == JSON_SCHEMA_INVALID)
			{
				check(strcmp(err.rule, c->rule) == 0, "rule", (int) i, "expected %s, got %s", c->rule, err.rule);
				check(strcmp(err.path, c->path) == 0, "path", (int) i, "expected %s, got %s", c->path, err.path);
				check(err.message[0] != '\0', "message", (int) i, "%s%s", "empty message", "");
			}
		}
		JsonSchemaFree(s);
		json_object_put(inst);
	}
	for (i = 0; i < sizeof(scases) / sizeof(scases[0]); i++)
	{
		const SCase *c = &scases[i];
		json_object *schema = parse(c->schema);
		JsonSchemaError err;
		JsonSchema *s;

		memset(&err, 0, sizeof(err));
		s = JsonSchemaCompile(schema, &posix_rx, &err);
		json_object_put(schema);
		check(s == NULL, "refused", (int) i, "%s was accepted%s", c->schema, "");
		if (s)
		{
			JsonSchemaFree(s);
			continue;
		}
		check(strcmp(err.rule, c->rule) == 0, "refused rule", (int) i, "expected %s, got %s", c->rule, err.rule);
		check(err.path[0] == '#', "refused path", (int) i, "%s: path %s", c->schema, err.path);
		if (c->path)
			check(strcmp(err.path, c->path) == 0, "refused at", (int) i, "expected %s, got %s", c->path, err.path);
	}
}

/* Bounds: depth, size, steps, and a pattern without a regex engine. */
static void
run_bounds(void)
{
	char	   *buf = malloc(1 << 20);
	size_t		o = 0;
	int			i;
	json_object *schema;
	JsonSchemaError err;
	JsonSchema *s;

	/* nested JSON_SCHEMA_MAX_DEPTH deep: taken; one more: refused */
	for (int extra = 0; extra < 2; extra++)
	{
		o = 0;
		for (i = 0; i < JSON_SCHEMA_MAX_DEPTH + extra; i++)
			o += sprintf(buf + o, "{\"items\":");
		o += sprintf(buf + o, "{}");
		for (i = 0; i < JSON_SCHEMA_MAX_DEPTH + extra; i++)
			buf[o++] = '}';
		buf[o] = '\0';
		{
			json_tokener *tok = json_tokener_new_ex(200);

			schema = json_tokener_parse_ex(tok, buf, (int) o);
			json_tokener_free(tok);
		}
		memset(&err, 0, sizeof(err));
		s = JsonSchemaCompile(schema, &posix_rx, &err);
		check(extra == 0 ? s != NULL : (s == NULL && strcmp(err.rule, "limit") == 0),
			  "depth bound", extra, "%s%s", err.message, "");
		JsonSchemaFree(s);
		json_object_put(schema);
	}

	/* a schema with more than JSON_SCHEMA_MAX_SIZE entries */
	o = sprintf(buf, "{\"enum\":[");
	for (i = 0; i <= JSON_SCHEMA_MAX_SIZE; i++)
		o += sprintf(buf + o, "%s%d", i ? "," : "", i);
	o += sprintf(buf + o, "]}");
	schema = parse(buf);
	s = JsonSchemaCompile(schema, &posix_rx, &err);
	check(s == NULL && strcmp(err.rule, "limit") == 0, "size bound", 0, "%s%s", err.message, "");
	JsonSchemaFree(s);
	json_object_put(schema);

	/* a pattern without a regex engine is refused, not ignored */
	schema = parse("{\"pattern\":\"a\"}");
	s = JsonSchemaCompile(schema, NULL, &err);
	check(s == NULL && strcmp(err.rule, "pattern") == 0, "pattern without engine", 0, "%s%s", err.message, "");
	json_object_put(schema);

	/*
	 * Work bound: nested anyOf whose alternatives all fail late doubles
	 * the work at each level; it ends with a limit, not a hang.
	 */
	o = 0;
	for (i = 0; i < 24; i++)
		o += sprintf(buf + o, "{\"anyOf\":[{\"type\":\"string\"},");
	o += sprintf(buf + o, "{\"type\":\"integer\"}");
	for (i = 0; i < 24; i++)
		o += sprintf(buf + o, "]}");
	buf[o] = '\0';
	schema = parse(buf);
	s = JsonSchemaCompile(schema, &posix_rx, &err);
	check(s != NULL, "deep anyOf compiles", 0, "%s%s", err.message, "");
	if (s)
	{
		json_object *inst = parse("1.5");
		int			r = JsonSchemaValidate(s, inst, &err);

		check(r == JSON_SCHEMA_INVALID || r == JSON_SCHEMA_LIMIT, "deep anyOf ends", 0, "%s%s", err.message, "");
		json_object_put(inst);
		JsonSchemaFree(s);
	}
	json_object_put(schema);

	/*
	 * A long chain of $ref that never goes into the instance: accepted (no
	 * cycle), and validating it stops at the nesting bound.
	 */
	o = sprintf(buf, "{\"$defs\":{");
	for (i = 0; i < 2000; i++)
		o += sprintf(buf + o, "%s\"d%d\":{\"$ref\":\"#/$defs/d%d\"}", i ? "," : "", i, i + 1);
	o += sprintf(buf + o, ",\"d2000\":{\"type\":\"integer\"}},\"$ref\":\"#/$defs/d0\"}");
	schema = parse(buf);
	s = JsonSchemaCompile(schema, &posix_rx, &err);
	check(s != NULL, "long ref chain compiles", 0, "%s%s", err.message, "");
	if (s)
	{
		json_object *inst = parse("1");
		int			r = JsonSchemaValidate(s, inst, &err);

		check(r == JSON_SCHEMA_LIMIT, "long ref chain limited", 0, "%s%s", err.message, "");
		json_object_put(inst);
		JsonSchemaFree(s);
	}
	json_object_put(schema);

	/* strictness: closed and fully required objects only */
	{
		static const struct
		{
			const char *schema;
			bool		strict;
		}			st[] = {
			{"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}},\"required\":[\"a\"],\"additionalProperties\":false}", true},
			{"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}},\"additionalProperties\":false}", false},
			{"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}},\"required\":[\"a\"]}", false},
			{"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"maxLength\":3}},\"required\":[\"a\"],\"additionalProperties\":false}", false},
			{"{\"type\":\"array\"}", false},
		};

		for (i = 0; i < (int) (sizeof(st) / sizeof(st[0])); i++)
		{
			schema = parse(st[i].schema);
			s = JsonSchemaCompile(schema, &posix_rx, &err);
			check(s != NULL && JsonSchemaStrictable(s) == st[i].strict, "strictable", i, "%s%s", st[i].schema, "");
			JsonSchemaFree(s);
			json_object_put(schema);
		}
	}
	free(buf);
}

/* ----------------------------------------------------------------------
 * Property test: random schemas and instances
 * ---------------------------------------------------------------------- */

static uint64_t rng_state = 1;

static uint32_t
rnd(void)
{
	/* xorshift64* */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (uint32_t) ((rng_state * 2685821657736338717ULL) >> 32);
}

static int
rn(int n)
{
	return (int) (rnd() % (uint32_t) n);
}

static const char *const words[] = {"a", "b", "id", "name", "x y", "\xc3\xa9t\xc3\xa9", "", "$ref"};

static json_object *
random_value(int depth)
{
	switch (rn(depth > 3 ? 5 : 7))
	{
		case 0:
			return NULL;
		case 1:
			return json_object_new_boolean(rn(2));
		case 2:
			return json_object_new_int64(rn(21) - 10);
		case 3:
			return json_object_new_double((rn(41) - 20) / 4.0);
		case 4:
			return json_object_new_string(words[rn(8)]);
		case 5:
			{
				json_object *a = json_object_new_array();
				int			n = rn(4);

				while (n-- > 0)
					json_object_array_add(a, random_value(depth + 1));
				return a;
			}
		default:
			{
				json_object *o = json_object_new_object();
				int			n = rn(4);

				while (n-- > 0)
					json_object_object_add(o, words[rn(8)], random_value(depth + 1));
				return o;
			}
	}
}

/* A random schema of the subset; refs point into $defs d0..d2 or the root. */
static json_object *
random_schema(int depth)
{
	json_object *s = json_object_new_object();
	int			n = rn(4);

	while (n-- > 0)
	{
		switch (rn(depth > 3 ? 12 : 16))
		{
			case 0:
				json_object_object_add(s, "type", json_object_new_string(type_names[rn(7)].name));
				break;
			case 1:
				{
					json_object *e = json_object_new_array();
					int			k = 1 + rn(3);

					while (k-- > 0)
						json_object_array_add(e, random_value(3));
					json_object_object_add(s, "enum", e);
					break;
				}
			case 2:
				json_object_object_add(s, "const", random_value(2));
				break;
			case 3:
				json_object_object_add(s, "minimum", json_object_new_int(rn(11) - 5));
				break;
			case 4:
				json_object_object_add(s, "maximum", json_object_new_double(rn(11) / 2.0));
				break;
			case 5:
				json_object_object_add(s, rn(2) ? "minLength" : "maxLength", json_object_new_int(rn(4)));
				break;
			case 6:
				json_object_object_add(s, rn(2) ? "minItems" : "maxItems", json_object_new_int(rn(4)));
				break;
			case 7:
				json_object_object_add(s, "pattern", json_object_new_string(rn(2) ? "^a" : "[0-9]|t"));
				break;
			case 8:
				{
					json_object *r = json_object_new_array();

					json_object_array_add(r, json_object_new_string(words[rn(8)]));
					json_object_object_add(s, "required", r);
					break;
				}
			case 9:
				json_object_object_add(s, "additionalProperties", rn(2) ? json_object_new_boolean(rn(2)) : random_schema(depth + 1));
				break;
			case 10:
				json_object_object_add(s, "$ref", json_object_new_string(rn(4) == 0 ? "#" : rn(2) ? "#/$defs/d0" : "#/$defs/d1"));
				break;
			case 11:
				json_object_object_add(s, "description", json_object_new_string("d"));
				break;
			case 12:
			case 13:
				{
					json_object *p = json_object_new_object();
					int			k = 1 + rn(3);

					while (k-- > 0)
						json_object_object_add(p, words[rn(8)], random_schema(depth + 1));
					json_object_object_add(s, "properties", p);
					break;
				}
			case 14:
				json_object_object_add(s, "items", random_schema(depth + 1));
				break;
			default:
				{
					json_object *a = json_object_new_array();
					int			k = 1 + rn(3);

					while (k-- > 0)
						json_object_array_add(a, random_schema(depth + 1));
					json_object_object_add(s, "anyOf", a);
					break;
				}
		}
	}
	return s;
}

/*
 * An instance made to fit a simple schema (built by fitting_schema below):
 * objects with required typed properties, arrays of typed items, enums.
 */
static json_object *
fitting_schema(int depth, json_object **inst)
{
	json_object *s = json_object_new_object();
	int			kind = rn(depth > 2 ? 4 : 6);

	switch (kind)
	{
		case 0:
			json_object_object_add(s, "type", json_object_new_string("string"));
			json_object_object_add(s, "maxLength", json_object_new_int(5));
			json_object_object_add(s, "pattern", json_object_new_string("^[a-z]*$"));
			*inst = json_object_new_string(rn(2) ? "abc" : "");
			break;
		case 1:
			json_object_object_add(s, "type", json_object_new_string("integer"));
			json_object_object_add(s, "minimum", json_object_new_int(-3));
			json_object_object_add(s, "maximum", json_object_new_int(3));
			*inst = json_object_new_int(rn(7) - 3);
			break;
		case 2:
			{
				json_object *e = json_object_new_array();
				json_object *v = random_value(2);

				json_object_array_add(e, json_object_new_string("zz"));
				json_object_array_add(e, v);
				json_object_object_add(s, "enum", e);
				*inst = NULL;
				json_object_deep_copy(v, inst, NULL);
				break;
			}
		case 3:
			{
				json_object *t = json_object_new_array();

				json_object_array_add(t, json_object_new_string("boolean"));
				json_object_array_add(t, json_object_new_string("null"));
				json_object_object_add(s, "type", t);
				*inst = rn(2) ? json_object_new_boolean(1) : NULL;
				break;
			}
		case 4:
			{
				json_object *props = json_object_new_object();
				json_object *req = json_object_new_array();
				int			k = 1 + rn(3);

				*inst = json_object_new_object();
				json_object_object_add(s, "type", json_object_new_string("object"));
				while (k-- > 0)
				{
					char		name[16];
					json_object *child;

					snprintf(name, sizeof(name), "p%d", k);
					json_object_object_add(props, name, fitting_schema(depth + 1, &child));
					json_object_object_add(*inst, name, child);
					json_object_array_add(req, json_object_new_string(name));
				}
				json_object_object_add(s, "properties", props);
				json_object_object_add(s, "required", req);
				json_object_object_add(s, "additionalProperties", json_object_new_boolean(0));
				break;
			}
		default:
			{
				json_object *child;
				int			k = rn(4);
				json_object *items = fitting_schema(depth + 1, &child);

				*inst = json_object_new_array();
				json_object_object_add(s, "type", json_object_new_string("array"));
				json_object_object_add(s, "items", items);
				json_object_object_add(s, "maxItems", json_object_new_int(4));
				while (k-- > 0)
				{
					json_object *copy = NULL;

					json_object_deep_copy(child, &copy, NULL);
					json_object_array_add(*inst, copy);
				}
				json_object_put(child);
				break;
			}
	}
	return s;
}

static void
run_property(int rounds)
{
	int			i;
	int			compiled = 0;
	int			verdicts[3] = {0, 0, 0};

	in_property = 1;
	for (i = 0; i < rounds; i++)
	{
		json_object *schema = random_schema(0);
		json_object *defs = json_object_new_object();
		JsonSchemaError err;
		JsonSchema *s;
		int			k;

		json_object_object_add(defs, "d0", random_schema(2));
		json_object_object_add(defs, "d1", random_schema(2));
		if (rn(3))
			json_object_object_add(schema, "$defs", defs);
		else
			json_object_put(defs);

		alloc_fail_every = (i % 10 == 9) ? 1 + rn(20) : 0;
		alloc_calls = 0;
		memset(&err, 0, sizeof(err));
		s = JsonSchemaCompile(schema, &posix_rx, &err);
		alloc_fail_every = 0;
		if (s == NULL)
		{
			/* refused: it says where and why */
			check(err.rule[0] != '\0' && err.path[0] == '#' && err.message[0] != '\0',
				  "refusal names a rule", i, "%s / %s", err.rule, err.message);
		}
		else
		{
			compiled++;
			for (k = 0; k < 8; k++)
			{
				json_object *inst = random_value(0);
				JsonSchemaError e1,
							e2;
				int			r1 = JsonSchemaValidate(s, inst, &e1);
				int			r2 = JsonSchemaValidate(s, inst, &e2);

				verdicts[r1]++;
				check(r1 == r2, "deterministic", i, "%s%s", json_object_to_json_string(schema), "");
				if (r1 == JSON_SCHEMA_INVALID)
					check(e1.path[0] == '$' && e1.rule[0] != '\0' &&
						  strcmp(e1.path, e2.path) == 0 && strcmp(e1.rule, e2.rule) == 0,
						  "invalid names path and rule", i, "%s%s", e1.path, e1.rule);
				json_object_put(inst);
			}
			JsonSchemaFree(s);
		}
		json_object_put(schema);

		/* a fitting instance validates */
		{
			json_object *inst = NULL;
			json_object *fs = fitting_schema(0, &inst);

			s = JsonSchemaCompile(fs, &posix_rx, &err);
			check(s != NULL, "fitting schema compiles", i, "%s: %s", json_object_to_json_string(fs), err.message);
			if (s)
			{
				int			r = JsonSchemaValidate(s, inst, &err);

				check(r == JSON_SCHEMA_VALID, "fitting instance validates", i, "%s: %s",
					  json_object_to_json_string(inst), err.message);
				JsonSchemaFree(s);
			}
			json_object_put(inst);
			json_object_put(fs);
		}
	}
	in_property = 0;
	check(regex_live == 0, "patterns released", 0, "%s%s", "compiled patterns left", "");
	printf("property: %d rounds, %d schemas compiled, %d valid, %d invalid, %d limited\n",
		   rounds, compiled, verdicts[0], verdicts[1], verdicts[2]);
	UnitPropertiesEnd("rounds", rounds, &passed, &failed);
}

/* Write each table row as a seed for fuzz_jsonschema: schema NUL instance. */
static int
write_corpus(const char *dir)
{
	size_t		i;
	char		path[4096];

	for (i = 0; i < sizeof(vcases) / sizeof(vcases[0]) + sizeof(scases) / sizeof(scases[0]); i++)
	{
		bool		v = i < sizeof(vcases) / sizeof(vcases[0]);
		const char *schema = v ? vcases[i].schema : scases[i - sizeof(vcases) / sizeof(vcases[0])].schema;
		FILE	   *f;

		snprintf(path, sizeof(path), "%s/seed%03d", dir, (int) i);
		if ((f = fopen(path, "wb")) == NULL)
		{
			perror(path);
			return 1;
		}
		fwrite(schema, 1, strlen(schema), f);
		if (v)
		{
			fputc('\0', f);
			fwrite(vcases[i].instance, 1, strlen(vcases[i].instance), f);
		}
		fclose(f);
	}
	return 0;
}

int
main(int argc, char **argv)
{
	int			rounds = 20000;
	int			i;

	if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
		return write_corpus(argv[2]);

	for (i = 1; i + 1 < argc; i += 2)
	{
		if (strcmp(argv[i], "--seed") == 0)
			rng_state = strtoull(argv[i + 1], NULL, 10) | 1;
		else if (strcmp(argv[i], "--rounds") == 0)
			rounds = atoi(argv[i + 1]);
	}
	run_tables();
	run_bounds();
	run_property(rounds);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
