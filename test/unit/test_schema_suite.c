/*-------------------------------------------------------------------------
 *
 * test_schema_suite.c
 *	  The official JSON Schema Test Suite (Debian package
 *	  json-schema-test-suite, draft 7) run against the validator
 *	  (src/jsonschema.c), for the files of the keywords it supports.
 *
 * Every schema of those files is either taken, and then every test of it
 * must get the suite's verdict, or refused, and then the refusal must
 * name a rule (a keyword outside the subset, a boolean or tuple schema,
 * a $ref outside "#" and "#/$defs/...": the subset refuses what it does
 * not validate).  Refusals are counted and listed with -v.  Patterns use
 * POSIX extended regular expressions; the suite's tests of ECMA-only
 * syntax are among the refusals (the pattern does not compile) or listed
 * here as known differences.
 *
 * With the suite absent it prints that it was skipped, and "0 passed,
 * 0 failed".  Usage: test_schema_suite [-v] [DIR]
 *
 * test/unit/test_schema_suite.c
 *
 *-------------------------------------------------------------------------
 */
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "jsonschema.h"

#define SUITE_DIR "/usr/share/json-schema-test-suite/tests/draft7"

/* The files of the keywords the subset validates. */
static const char *const files[] = {
	"additionalProperties", "anyOf", "const", "enum", "items", "maxItems",
	"maxLength", "maximum", "minItems", "minLength", "minimum", "pattern",
	"properties", "ref", "required", "type", "default",
};

static void *
rx_compile(void *arg, const char *pattern, char *err, size_t errlen)
{
	regex_t    *re = malloc(sizeof(regex_t));
	int			rc;

	(void) arg;
	if (re == NULL)
		return NULL;
	rc = regcomp(re, pattern, REG_EXTENDED | REG_NOSUB);
	if (rc != 0)
	{
		regerror(rc, re, err, errlen);
		free(re);
		return NULL;
	}
	return re;
}

static int
rx_match(void *arg, void *handle, const char *text, size_t len, char *err, size_t errlen)
{
	(void) arg;
	(void) len;
	(void) err;
	(void) errlen;
	return regexec((regex_t *) handle, text, 0, NULL, 0) == 0 ? 1 : 0;
}

static void
rx_release(void *arg, void *handle)
{
	(void) arg;
	regfree((regex_t *) handle);
	free(handle);
}

static const JsonSchemaRegex rx = {rx_compile, rx_match, rx_release, NULL};

int
main(int argc, char **argv)
{
	const char *dir = SUITE_DIR;
	int			verbose = 0;
	int			passed = 0,
				failed = 0,
				refused = 0,
				groups = 0;
	size_t		f;
	int			i;
	struct stat st;

	for (i = 1; i < argc; i++)
	{
		if (strcmp(argv[i], "-v") == 0)
			verbose = 1;
		else
			dir = argv[i];
	}
	if (stat(dir, &st) != 0)
	{
		printf("schema suite: %s is absent (Debian package json-schema-test-suite); skipped\n", dir);
		printf("0 passed, 0 failed\n");
		return 0;
	}
	for (f = 0; f < sizeof(files) / sizeof(files[0]); f++)
	{
		char		path[4096];
		json_object *all;
		size_t		g,
					ng;

		snprintf(path, sizeof(path), "%s/%s.json", dir, files[f]);
		all = json_object_from_file(path);
		if (all == NULL || !json_object_is_type(all, json_type_array))
		{
			printf("FAIL cannot read %s\n", path);
			failed++;
			json_object_put(all);
			continue;
		}
		ng = json_object_array_length(all);
		for (g = 0; g < ng; g++)
		{
			json_object *grp = json_object_array_get_idx(all, g);
			json_object *schema = json_object_object_get(grp, "schema");
			json_object *tests = json_object_object_get(grp, "tests");
			const char *desc = json_object_get_string(json_object_object_get(grp, "description"));
			JsonSchemaError err;
			JsonSchema *s;
			size_t		t,
						nt = json_object_array_length(tests);

			groups++;
			memset(&err, 0, sizeof(err));
			s = JsonSchemaCompile(schema, &rx, &err);
			if (s == NULL)
			{
				refused++;
				if (err.rule[0] == '\0' || err.path[0] != '#')
				{
					printf("FAIL %s / %s: refused without a rule\n", files[f], desc);
					failed++;
				}
				else if (verbose)
					printf("refused %s / %s: at %s, rule \"%s\": %s\n", files[f], desc,
						   err.path, err.rule, err.message);
				continue;
			}
			for (t = 0; t < nt; t++)
			{
				json_object *test = json_object_array_get_idx(tests, t);
				int			want = json_object_get_boolean(json_object_object_get(test, "valid"));
				int			r = JsonSchemaValidate(s, json_object_object_get(test, "data"), &err);

				if ((r == JSON_SCHEMA_VALID) == want && r != JSON_SCHEMA_LIMIT)
					passed++;
				else
				{
					failed++;
					printf("FAIL %s / %s / %s: want %s, got %s (%s %s: %s)\n", files[f], desc,
						   json_object_get_string(json_object_object_get(test, "description")),
						   want ? "valid" : "invalid", r == JSON_SCHEMA_VALID ? "valid" : "invalid",
						   err.path, err.rule, err.message);
				}
			}
			JsonSchemaFree(s);
		}
		json_object_put(all);
	}
	printf("schema suite: %d groups, %d taken, %d refused\n", groups, groups - refused, refused);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
