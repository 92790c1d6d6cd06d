/*-------------------------------------------------------------------------
 *
 * utf8.h
 *	  Repair of invalid UTF-8, in pure C (no PostgreSQL headers), shared by
 *	  the SSE parser and the reply decoder.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_UTF8_H
#define PG_LLM_UTF8_H

#include <stddef.h>

/* Length of the valid UTF-8 prefix of buf (== len when all is valid). */
extern size_t Utf8ValidPrefix(const char *buf, size_t len);

/*
 * Copy buf to out, replacing each maximal invalid subpart with U+FFFD.
 * out must hold 3 * len bytes; returns the bytes written.
 */
extern size_t Utf8Repair(const char *buf, size_t len, char *out);

#endif							/* PG_LLM_UTF8_H */
