/*-------------------------------------------------------------------------
 *
 * jsonschema.h
 *	  A JSON Schema validator for the subset the providers' structured
 *	  outputs accept: type, properties, required, additionalProperties,
 *	  enum, const, items, minItems/maxItems, minimum/maximum,
 *	  minLength/maxLength, pattern, anyOf, $defs/$ref within the schema,
 *	  and the annotations title, description, $schema, $comment, default
 *	  and examples.  Every other keyword is refused when the schema is
 *	  checked, never ignored.
 *
 *	  It knows json-c and nothing of PostgreSQL: it includes no PostgreSQL
 *	  header, allocates with malloc, never prints, aborts or longjmps on
 *	  its own, so it can be unit-tested and fuzzed alone (test/unit).  A
 *	  pattern is compiled and matched through callbacks: PostgreSQL's
 *	  regex engine in the extension, POSIX regex in the unit tests.
 *
 *	  Bounds: subschemas nested at most JSON_SCHEMA_MAX_DEPTH deep, at most
 *	  JSON_SCHEMA_MAX_SIZE subschemas and enum/const/required entries, no
 *	  $ref cycle that does not go through an object's properties or an
 *	  array's items (recursion through those is bounded by the instance),
 *	  and at most JSON_SCHEMA_MAX_STEPS steps and JSON_SCHEMA_MAX_NESTING
 *	  nested steps to validate one instance.
 *
 *	  src/jsonschema.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_JSONSCHEMA_H
#define PG_LLM_JSONSCHEMA_H

#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>

#define JSON_SCHEMA_MAX_DEPTH	32
#define JSON_SCHEMA_MAX_SIZE	10000
#define JSON_SCHEMA_MAX_STEPS	1000000
#define JSON_SCHEMA_MAX_NESTING 512

/* What went wrong: where (a JSON path), which rule, and in words. */
typedef struct JsonSchemaError
{
	char		path[256];		/* "$.items[2].price" (instance) or schema path */
	char		rule[32];		/* the keyword, or "schema", "limit", "json" */
	char		message[512];
} JsonSchemaError;

/*
 * Pattern callbacks.  compile returns a handle, or NULL with a message in
 * err; match returns 1 (matches somewhere), 0 (does not) or -1 (could not
 * be run, message in err); release frees a handle.  They may be NULL: a
 * schema with a pattern is then refused.
 */
typedef struct JsonSchemaRegex
{
	void	   *(*compile) (void *arg, const char *pattern, char *err, size_t errlen);
	int			(*match) (void *arg, void *handle, const char *text, size_t len,
						  char *err, size_t errlen);
	void		(*release) (void *arg, void *handle);
	void	   *arg;
} JsonSchemaRegex;

typedef struct JsonSchema JsonSchema;

/* Results of JsonSchemaValidate. */
#define JSON_SCHEMA_VALID		0
#define JSON_SCHEMA_INVALID		1	/* the instance breaks a rule */
#define JSON_SCHEMA_LIMIT		2	/* too much work, or a pattern failed */

/*
 * Check a schema and prepare it for validation.  NULL with err filled
 * (err->path the place in the schema) when it is not one this validator
 * takes.  The schema object is referenced, not copied.
 */
extern JsonSchema *JsonSchemaCompile(json_object *schema, const JsonSchemaRegex *rx,
									 JsonSchemaError *err);
extern int	JsonSchemaValidate(const JsonSchema *s, json_object *instance,
							   JsonSchemaError *err);
extern void JsonSchemaFree(JsonSchema *s);

/* Is the root a schema of type "object" (what tools and strict modes take)? */
extern bool JsonSchemaRootIsObject(const JsonSchema *s);

/*
 * Does the schema meet OpenAI's strict mode: every object closed
 * (additionalProperties false) with all its properties required, and no
 * keyword that strict mode refuses?
 */
extern bool JsonSchemaStrictable(const JsonSchema *s);

/* Number of subschemas and entries counted against JSON_SCHEMA_MAX_SIZE. */
extern int	JsonSchemaSize(const JsonSchema *s);

#endif							/* PG_LLM_JSONSCHEMA_H */
