/*-------------------------------------------------------------------------
 *
 * tokens.h
 *	  The tokenizer-free estimate of how many tokens a text is (tokens.c).
 *	  Pure C: no PostgreSQL headers, so it can be unit-tested alone.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_TOKENS_H
#define PG_LLM_TOKENS_H

#include <stddef.h>
#include <stdint.h>

/* What a chat request adds to its texts: per message, and once. */
#define TOKENS_PER_MESSAGE 3
#define TOKENS_PER_REQUEST 3

/* The default output of a call that sets no max_tokens, for estimates. */
#define TOKENS_DEFAULT_OUTPUT 256

extern int64_t TokensEstimate(const char *utf8, size_t len);

#endif							/* PG_LLM_TOKENS_H */
