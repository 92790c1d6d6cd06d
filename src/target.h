/*-------------------------------------------------------------------------
 *
 * target.h
 *	  Write-back targets: the row a queue item's reply goes to, found by
 *	  its key, and the values of a statement that reaches it (target.c).
 *	  Shared by llm.enqueue's checks and the worker's write-back.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_TARGET_H
#define PG_LLM_TARGET_H

#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/jsonb.h"
#include "utils/relcache.h"

#define TARGET_MAX_ARGS 33		/* the reply and up to 32 key columns */

/* The arguments of a statement on a target, as text and their types. */
typedef struct TargetArgs
{
	int			nargs;
	Oid			types[TARGET_MAX_ARGS];
	int32		typmods[TARGET_MAX_ARGS];
	char	   *texts[TARGET_MAX_ARGS];
	StringInfoData signature;	/* the types, for the key of a saved plan */
} TargetArgs;

extern void TargetArgsInit(TargetArgs *args);
extern void TargetAddArgument(TargetArgs *args, Oid typid, int32 typmod, char *text);
extern void TargetKeyClause(Relation rel, const char *relname, Jsonb *key,
							TargetArgs *args, StringInfo sql, Bitmapset **keycols,
							const char *param);
extern int	TargetKeyTexts(Jsonb *key, char **texts, int max, StringInfo names);
extern char *TargetEqualityOperator(Oid typid, const char *column);
extern void TargetValues(TargetArgs *args, Datum *values, int from);
extern char *TargetRelationName(Relation rel);
extern char *TargetColumnHint(Relation rel, const char *given, const char *what);
extern char *TargetGone(Oid relid, const char *column);

#endif							/* PG_LLM_TARGET_H */
