/*-------------------------------------------------------------------------
 *
 * names.h
 *	  The names nearest to a misspelt one, for "did you mean" hints
 *	  (names.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_NAMES_H
#define PG_LLM_NAMES_H

#include "postgres.h"

/* the distance of names too long to compare */
#define NAMES_FAR 1000

extern int	NamesDistance(const char *a, const char *b);
extern int	NamesMaxDistance(const char *known);
extern char *NamesSuggest(const char *name, const char *const *known, int n);
extern void NamesInstallHints(void);
extern char *NamesColumnHint(const char *given, const char *const *columns, int n,
							 const char *what);

#endif							/* PG_LLM_NAMES_H */
