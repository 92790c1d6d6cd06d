/*-------------------------------------------------------------------------
 *
 * request_int.h
 *	  The request object of request.c as the files that build and read
 *	  its JSON see it: request.c, schema.c, provider.c and the provider
 *	  adapters.  Everyone else holds an LlmRequest as an opaque pointer
 *	  (request.h).  It includes json-c (llm_json.h): only files that never
 *	  include utils/builtins.h may include it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_REQUEST_INT_H
#define PG_LLM_REQUEST_INT_H

#include "postgres.h"

#include "nodes/pg_list.h"

#include "llm_json.h"
#include "request.h"

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

extern char *RequestCheckTag(json_object *v);
extern char *RequestSerialize(LlmRequest *req, json_object *obj, bool use_malloc, size_t *len);

#endif							/* PG_LLM_REQUEST_INT_H */
