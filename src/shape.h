/*-------------------------------------------------------------------------
 *
 * shape.h
 *	  The loop of a synchronous call with a json_schema (shape.c): send,
 *	  judge the answer against the schema, ask again with the validation
 *	  error.  llm.chat and llm.chat_many run their shaped calls through it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_SHAPE_H
#define PG_LLM_SHAPE_H

#include "postgres.h"

#include "call.h"
#include "schema.h"

extern LlmCall *ShapeRun(LlmCall *call, LlmShapeResult *res);
extern bool ShapeJudge(LlmCall *call, LlmShapeResult *res);
extern LlmCall *ShapeAskAgain(LlmCall *call, const LlmShapeResult *res);
extern char *ShapeFailureDetail(LlmCall *call, int asked, const LlmShapeResult *res);

#endif							/* PG_LLM_SHAPE_H */
