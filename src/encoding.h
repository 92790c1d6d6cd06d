/*-------------------------------------------------------------------------
 *
 * encoding.h
 *	  Texts between the database's encoding and UTF-8 (encoding.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_ENCODING_H
#define PG_LLM_ENCODING_H

#include "postgres.h"

extern char *LlmToServerEncoding(const char *utf8, size_t len);
extern char *LlmToUtf8(const char *text);
extern char *LlmTextToUtf8(text *t, size_t *len);

#endif							/* PG_LLM_ENCODING_H */
