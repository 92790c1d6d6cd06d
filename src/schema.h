/*-------------------------------------------------------------------------
 *
 * schema.h
 *	  Answers with a shape (schema.c): the json_schema option of a request
 *	  checked before anything is sent, the request each route is sent
 *	  (OpenAI response_format json_schema, a forced tool, or a
 *	  constrained prompt, as the provider's structured_output option
 *	  says), a reply read and validated, and the request that asks again
 *	  with the validation error.
 *
 *	  The json-c side of the feature; shape.c holds the SQL functions and
 *	  the retry loop, and may include utils/builtins.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_SCHEMA_H
#define PG_LLM_SCHEMA_H

#include "postgres.h"

#include "nodes/pg_list.h"

#include "provider.h"
#include "request.h"

/* The name of the format or tool a shaped answer is asked under. */
#define LLM_SHAPE_NAME "answer"

/* A reply checked against its request's schema. */
typedef struct LlmShapeResult
{
	bool		valid;
	char	   *json;			/* the answer as JSON text (UTF-8), when valid */
	char	   *said;			/* what the model answered, for asking again */
	char	   *path;			/* when not valid: where, */
	char	   *rule;			/* which rule, */
	char	   *message;		/* and what was wrong */
} LlmShapeResult;

extern void RequestCompileSchema(LlmRequest *req);
/* One member of an answer, for a write-back spread over columns. */
typedef struct LlmAnswerMember
{
	char	   *name;
	char	   *json;			/* the value as JSON text; NULL for null */
	char	   *text;			/* a string unquoted, others as JSON; NULL for null */
} LlmAnswerMember;

extern bool RequestHasSchema(LlmRequest *req);
extern void RequestSetSchema(LlmRequest *req, const char *schema_json, bool need_object,
							 const char *what);
extern LlmRequest *SchemaRouteRequest(LlmRequest *req, const LlmRoute *route);
extern void SchemaCheckReply(LlmRequest *req, const LlmReply *reply, LlmShapeResult *res);
extern LlmRequest *SchemaRetryRequest(LlmRequest *req, const LlmShapeResult *res);
extern LlmRequest *SchemaRetryRequestFor(LlmRequest *req, const char *said, const char *problem);
extern bool SchemaOptionsHaveSchema(const char *options_json);
extern char *SchemaNormalizedResponse(const char *response_json, const char *answer_json);
extern char *SchemaMemberText(const char *json, const char *key);
extern char *SchemaLabelsSchema(const char *labels_json);
extern const char *SchemaStructuredOutput(const LlmProvider *p);
extern char *SchemaAnswerForColumn(const char *json, bool json_column, bool *isnull);
extern List *SchemaAnswerMembers(const char *json);
extern List *SchemaPropertyNames(LlmRequest *req);

extern int	llm_validation_retries;
extern void SchemaDefineSettings(void);

#endif							/* PG_LLM_SCHEMA_H */
