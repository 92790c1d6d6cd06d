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

/* How a column's type takes a vector (EmbedColumnKindOf). */
typedef enum EmbedColumnKind
{
	EMBED_COLUMN_NONE,			/* it cannot */
	EMBED_COLUMN_ARRAY,			/* an array of numbers: {v1,...} */
	EMBED_COLUMN_SPARSE,		/* pgvector's sparsevec: {i:v,...}/n */
	EMBED_COLUMN_BRACKETS		/* vector, halfvec, text, json: [v1,...] */
} EmbedColumnKind;

extern const char *EmbedResolveModel(const char *model);
extern List *EmbedRoutes(const char *model);
extern void EmbedCheckInput(const char *input);
extern LlmCall *EmbedCallCreate(LlmRequest *req, const char *model, int ninputs,
								LlmMode mode);
extern char *EmbedVectorText(const float4 *values, int dim);
/*
 * The fewest inputs of a refused request that are probed (EmbedRefusedWhole)
 * rather than split in half at once: below, halving costs about as few
 * requests whoever is at fault.
 */
#define EMBED_PROBE_MIN_INPUTS 8

extern bool EmbedRefusedWhole(long status);
extern int	EmbedProbeInput(const int64 *tokens, int n);
extern EmbedColumnKind EmbedColumnKindOf(Oid typid);
extern int	EmbedColumnDimensions(Oid typid, int32 typmod);
extern char *EmbedTextForColumn(const char *vector, Oid typid);

extern void EmbedDefineSettings(void);

#endif							/* PG_LLM_EMBED_H */
