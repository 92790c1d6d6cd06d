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

#include "nodes/pg_list.h"

#include "request.h"

/* Deepest nesting accepted in JSON from callers and providers. */
#define LLM_JSON_MAX_DEPTH 256

struct JsonSchema;

/*
 * The request object (request.c), read by the provider adapters.  Long
 * texts (a prompt, a system prompt) are not copied into json-c: each
 * stands in the object as a placeholder string, and the body sent is
 * written with the texts spliced in (RequestSerialize), so that a request
 * costs its caller's text and one body, not five copies of the text.
 */
typedef struct RequestPart
{
	const char *data;			/* UTF-8, not necessarily terminated */
	size_t		len;
	size_t		wire_len;		/* escaped for a JSON string */
} RequestPart;

struct LlmRequest
{
	json_object *obj;			/* the OpenAI-shaped request */
	bool		on_error_null;	/* option on_error "null" */
	int			cache;			/* option cache: 1, 0, or -1 (not given) */
	char	   *tag;			/* option tag, recorded in llm.usage; or NULL */
	struct JsonSchema *schema;	/* its json_schema, compiled (schema.c), or NULL */
	List	   *parts;			/* RequestPart *, index = placeholder number */
	uint64		nonce;			/* in every placeholder: no text can forge one */
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
extern char *JsonCopyString(json_object *obj, const char *key);
extern int	JsonGetCount(json_object *obj, const char *key);
extern char *JsonContentText(json_object *content);
extern char *RequestCheckTag(json_object *v);
extern bool JsonUsageSane(const char *text, size_t len, int64 max);
extern size_t JsonEscapedLength(const char *s, size_t len);
extern char *JsonEscapeInto(char *out, const char *s, size_t len);
extern char *RequestSerialize(LlmRequest *req, json_object *obj, bool use_malloc, size_t *len);

#endif							/* PG_LLM_JSON_H */
