/*-------------------------------------------------------------------------
 *
 * embed.h
 *	  Embedding calls (embed.c): the model and routes of an embedding
 *	  call, the input rule, and the call itself, shared by llm.embed,
 *	  llm.embed_many and the queue.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_EMBED_H
#define PG_LLM_EMBED_H

#include "postgres.h"

#include "nodes/pg_list.h"

#include "call.h"

extern int	llm_embed_inputs_per_request;
extern int	llm_embed_tokens_per_request;
extern char *llm_default_embedding_model;

extern const char *EmbedResolveModel(const char *model);
extern List *EmbedRoutes(const char *model);
extern void EmbedCheckInput(const char *input);
extern LlmCall *EmbedCallCreate(LlmRequest *req, const char *model, int ninputs,
								LlmMode mode, Oid roleid, size_t request_bytes);

#endif							/* PG_LLM_EMBED_H */
