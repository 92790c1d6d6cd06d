/*-------------------------------------------------------------------------
 *
 * llm_json.h
 *	  json-c helpers (json.c).  Only files that never include
 *	  utils/builtins.h may include this header: json-c's json_object type
 *	  collides with PostgreSQL's json_object().  The request object the
 *	  provider adapters read is request.c's (request_int.h).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_JSON_H
#define PG_LLM_JSON_H

#include "postgres.h"

#include <json-c/json.h>

#include "nodes/pg_list.h"

/* Deepest nesting accepted in JSON from callers and providers. */
#define LLM_JSON_MAX_DEPTH 256

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
extern char *JsonCopyString(json_object *obj, const char *key);
extern int	JsonGetCount(json_object *obj, const char *key);
extern char *JsonContentText(json_object *content);
extern bool JsonUsageSane(const char *text, size_t len, int64 max);
extern size_t JsonEscapedLength(const char *s, size_t len);
extern char *JsonEscapeInto(char *out, const char *s, size_t len);

#endif							/* PG_LLM_JSON_H */
