/*-------------------------------------------------------------------------
 *
 * llm_json.h
 *	  json-c helpers shared by json.c and the provider adapters.  Only
 *	  files that never include utils/builtins.h may include this header:
 *	  json-c's json_object type collides with PostgreSQL's json_object().
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_JSON_H
#define PG_LLM_JSON_H

#include "postgres.h"

#include <json-c/json.h>

#include "pg_llm.h"

struct LlmRequest
{
	json_object *obj;			/* the OpenAI-shaped request */
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
extern json_object *JsonParseOrNull(const char *text, size_t len);
extern char *JsonToPstr(json_object *obj);
extern const char *JsonGetString(json_object *obj, const char *key);
extern json_object *JsonGetObject(json_object *obj, const char *key);
extern json_object *JsonGetArray(json_object *obj, const char *key);
extern bool JsonGetInt64(json_object *obj, const char *key, int64 *val);
extern char *JsonContentText(json_object *content);

/* provider adapters */
extern json_object *OpenAIBuildBody(LlmRequest *req, const LlmRoute *route, bool stream);
extern json_object *AnthropicBuildBody(LlmRequest *req, const LlmRoute *route, bool stream);
extern bool OpenAIParseReply(json_object *root, const LlmRoute *route, bool want_json, LlmReply *reply, char **problem);
extern bool AnthropicParseReply(json_object *root, const LlmRoute *route, bool want_json, LlmReply *reply, char **problem);
extern void OpenAIStreamEvent(LlmStreamDecoder *dec, json_object *root);
extern void AnthropicStreamEvent(LlmStreamDecoder *dec, const char *type, json_object *root);

#endif							/* PG_LLM_JSON_H */
