/*-------------------------------------------------------------------------
 *
 * encoding.h
 *	  Texts between the database's encoding and UTF-8, the jsonb and
 *	  text[] arguments of the SQL functions, and a provider's text with
 *	  its control characters escaped (encoding.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_ENCODING_H
#define PG_LLM_ENCODING_H

#include "postgres.h"

#include "fmgr.h"
#include "lib/stringinfo.h"

extern char *LlmToServerEncoding(const char *utf8, size_t len);
extern char *LlmToUtf8(const char *text);
extern bool LlmBlank(const char *s, size_t len);
extern char *LlmTextToUtf8(text *t, size_t *len);
extern char *LlmArgJsonb(FunctionCallInfo fcinfo, int n);
extern int	LlmArgTextArray(FunctionCallInfo fcinfo, int n, const char *what, const char *hint,
							Datum **elems, bool **nulls);
extern void LlmAppendShown(StringInfo out, const char *s, size_t n, size_t *i);
extern char *LlmEscapeControls(const char *utf8);

#endif							/* PG_LLM_ENCODING_H */
