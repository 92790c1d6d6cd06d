/*-------------------------------------------------------------------------
 *
 * pg_llm.h
 *	  The version of the library.  Each module defines its own settings
 *	  and declares them in its header; _PG_init (pg_llm.c) asks each to.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_H
#define PG_LLM_H

#include "postgres.h"

#include "compat.h"

/* set once, by the Makefile, from pg_llm.control */
#ifndef PG_LLM_VERSION
#error "PG_LLM_VERSION must be defined by the build"
#endif


#endif							/* PG_LLM_H */
