/*-------------------------------------------------------------------------
 *
 * request.h
 *	  Chat requests in the OpenAI shape, built from a prompt or from a
 *	  caller's JSON, with every option a user can get wrong checked before
 *	  anything is sent (request.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_REQUEST_H
#define PG_LLM_REQUEST_H

#include "postgres.h"

/* Opaque outside request.c and the provider adapters. */
typedef struct LlmRequest LlmRequest;

/* The longest option tag, its terminating NUL included (llm.usage.tag). */
#define LLM_USAGE_TAG_LEN 64

extern LlmRequest *RequestFromPrompt(const char *prompt, const char *system,
									 const char *options_json);
extern LlmRequest *RequestFromPromptText(const char *prompt, size_t prompt_len,
										 const char *system, size_t system_len,
										 const char *options_json);
extern size_t RequestWireSize(LlmRequest *req);
extern void RequestCheckSize(size_t bytes);
extern LlmRequest *RequestFromJson(const char *request_json);
extern const char *RequestModel(LlmRequest *req);
extern int64 RequestMaxTokens(LlmRequest *req);
extern LlmRequest *RequestForEmbedding(const char *const *inputs, int n,
									   const char *options_json);
extern int	RequestInputCount(LlmRequest *req);
extern int	RequestDimensions(LlmRequest *req);
extern bool RequestOnErrorNull(LlmRequest *req);
extern int64 RequestChoices(LlmRequest *req);
extern int	RequestCacheOption(LlmRequest *req);
extern const char *RequestTag(LlmRequest *req);
extern char *RequestCacheText(LlmRequest *req);
extern bool RequestDeterministic(LlmRequest *req);
extern int64 RequestEstimateTokens(LlmRequest *req);

extern int	llm_max_request_size_kb;
extern void RequestDefineSettings(void);

#endif							/* PG_LLM_REQUEST_H */
