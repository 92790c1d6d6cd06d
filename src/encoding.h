/*-------------------------------------------------------------------------
 *
 * encoding.h
 *	  Texts between the database's encoding and UTF-8, and the jsonb and
 *	  text[] arguments of the SQL functions (encoding.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_ENCODING_H
#define PG_LLM_ENCODING_H

#include "postgres.h"

#include "fmgr.h"

extern char *LlmToServerEncoding(const char *utf8, size_t len);
extern char *LlmToUtf8(const char *text);
extern char *LlmTextToUtf8(text *t, size_t *len);
extern char *LlmArgJsonb(FunctionCallInfo fcinfo, int n);
extern int	LlmArgTextArray(FunctionCallInfo fcinfo, int n, const char *what, const char *hint,
							Datum **elems, bool **nulls);

#endif							/* PG_LLM_ENCODING_H */
