/*-------------------------------------------------------------------------
 *
 * llm_json.h
 *	  json-c helpers (json.c), and the request object the provider
 *	  adapters read.  Only files that never include utils/builtins.h may
 *	  include this header: json-c's json_object type collides with
 *	  PostgreSQL's json_object().
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_JSON_H
#define PG_LLM_JSON_H

#include "postgres.h"

#include <json-c/json.h>

#include "request.h"

/* Deepest nesting accepted in JSON from callers and providers. */
#define LLM_JSON_MAX_DEPTH 256

struct JsonSchema;

/* The request object (request.c), read by the provider adapters. */
struct LlmRequest
{
	json_object *obj;			/* the OpenAI-shaped request */
	bool		on_error_null;	/* option on_error "null" */
	struct JsonSchema *schema;	/* its json_schema, compiled (schema.c), or NULL */
};

/*
 * A json-c object tied to a memory context: it is put when the context is
 * reset or deleted (an error), unless JsonGuardRelease() did it first.
 */
typedef struct JsonGuard
{
	json_object *obj;
	MemoryContextCallback cb;
} JsonGuard;

extern JsonGuard *JsonGuardNew(json_object *obj);
extern void JsonGuardRelease(JsonGuard *g);
extern json_object *JsonParse(const char *text, size_t len, const char **why);
extern json_object *JsonParseOrNull(const char *text, size_t len);
extern char *JsonToPstr(json_object *obj);
extern const char *JsonGetString(json_object *obj, const char *key);
extern json_object *JsonGetObject(json_object *obj, const char *key);
extern json_object *JsonGetArray(json_object *obj, const char *key);
extern bool JsonWholeNumber(json_object *v, int64 *val);
extern bool JsonGetInt64(json_object *obj, const char *key, int64 *val);
extern char *JsonContentText(json_object *content);

#endif							/* PG_LLM_JSON_H */
