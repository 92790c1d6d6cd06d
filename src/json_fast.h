/*-------------------------------------------------------------------------
 *
 * json_fast.h
 *	  A fast path for reading standard JSON into json-c objects
 *	  (json_fast.c); NULL means "ask json-c's tokener".
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_JSON_FAST_H
#define PG_LLM_JSON_FAST_H

#include <stddef.h>

#include <json-c/json.h>

extern json_object *JsonFastParse(const char *text, size_t len, int max_depth);

#endif							/* PG_LLM_JSON_FAST_H */
