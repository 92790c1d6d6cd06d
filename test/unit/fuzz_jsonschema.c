/*-------------------------------------------------------------------------
 *
 * fuzz_jsonschema.c
 *	  libFuzzer target for the JSON Schema validator (src/jsonschema.c).
 *
 * The input is a schema and an instance, both JSON text, separated by the
 * first NUL byte (no NUL: the input is the schema, validated against
 * itself).  Each is parsed as the extension parses JSON (nested up to 256
 * levels); a schema the validator takes is then used to validate the
 * instance.  Nothing may crash, leak, recurse without bound or take
 * unbounded time; a refusal or an invalid verdict must name a rule.
 *
 * Patterns are matched by a stand-in engine (a substring search): the
 * fuzzer exercises the validator, not a regex library.
 *
 * test/unit/fuzz_jsonschema.c
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonschema.h"

static void *
sub_compile(void *arg, const char *pattern, char *err, size_t errlen)
{
	(void) arg;
	if (strchr(pattern, '\\') != NULL)
	{
		strncpy(err, "backslashes are refused by the stand-in engine", errlen - 1);
		err[errlen - 1] = '\0';
		return NULL;
	}
	{
		size_t		n = strlen(pattern) + 1;
		char	   *copy = malloc(n);

		if (copy)
			memcpy(copy, pattern, n);
		else
			snprintf(err, errlen, "out of memory");
		return copy;
	}
}

static int
sub_match(void *arg, void *handle, const char *text, size_t len, char *err, size_t errlen)
{
	(void) arg;
	(void) err;
	(void) errlen;
	if (strlen(text) != len)
		return -1;
	return strstr(text, (const char *) handle) != NULL;
}

static void
sub_release(void *arg, void *handle)
{
	(void) arg;
	free(handle);
}

static const JsonSchemaRegex rx = {sub_compile, sub_match, sub_release, NULL};

static json_object *
parse(const uint8_t *data, size_t len)
{
	json_tokener *tok = json_tokener_new_ex(256);
	json_object *obj;

	if (tok == NULL)
		return NULL;
	obj = json_tokener_parse_ex(tok, (const char *) data, (int) len);
	if (obj == NULL && json_tokener_get_error(tok) == json_tokener_continue)
		obj = json_tokener_parse_ex(tok, "", 1);
	json_tokener_free(tok);
	return obj;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, 0, size);
	size_t		slen = nul ? (size_t) (nul - data) : size;
	json_object *schema = parse(data, slen);
	json_object *inst = nul ? parse(nul + 1, size - slen - 1) : json_object_get(schema);
	JsonSchemaError err;
	JsonSchema *s;

	if (schema == NULL)
	{
		json_object_put(inst);
		return 0;
	}
	memset(&err, 0, sizeof(err));
	s = JsonSchemaCompile(schema, &rx, &err);
	if (s == NULL)
	{
		if (err.rule[0] == '\0' || err.path[0] != '#')
			abort();
	}
	else
	{
		int			r = JsonSchemaValidate(s, inst, &err);

		if (r != JSON_SCHEMA_VALID && (err.rule[0] == '\0' || err.path[0] != '$'))
			abort();
		(void) JsonSchemaStrictable(s);
		JsonSchemaFree(s);
	}
	json_object_put(schema);
	json_object_put(inst);
	return 0;
}
