/*-------------------------------------------------------------------------
 *
 * citus.h
 *	  pg_llm on a Citus cluster, without linking Citus: what this node is
 *	  (coordinator or worker), which tables are Citus tables, whether this
 *	  backend runs a query on a shard for another node (citus.c); the
 *	  planner hook that keeps coordinator-only calls on the coordinator
 *	  (citus_plan.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_CITUS_H
#define PG_LLM_CITUS_H

#include "postgres.h"

#include "utils/jsonb.h"
#include "utils/relcache.h"

/* What a Citus table is (CitusTableKind). */
#define CITUS_NOT_CITUS		'\0'
#define CITUS_DISTRIBUTED	'd'		/* hash-distributed, or one shard */
#define CITUS_REFERENCE		'r'		/* a copy on every node */
#define CITUS_LOCAL			'l'		/* a local table in Citus's metadata */

/* What a pg_llm function running in a query on a shard is about to do. */
typedef enum CitusUse
{
	CITUS_USE_CALL,				/* call a provider */
	CITUS_USE_ENQUEUE			/* queue an item */
} CitusUse;

extern bool CitusPresent(void);
extern int32 CitusGroupId(void);
extern bool CitusIsWorkerNode(void);
extern bool CitusInShardQuery(void);
extern char CitusTableKind(Oid relid);
extern const char *CitusTableKindName(char kind);
extern void CitusGuard(CitusUse use, const char *function);
extern bool CitusCallsOnWorkers(void);
extern char *CitusDistributionColumn(Oid relid);
extern int64 CitusShardOf(Oid relid, Oid type, Datum value);
extern void CitusRefuseTracking(Oid relid, const char *job);
extern void CitusGuardJobTrigger(const char *trigger);

/* citus_plan.c */
extern void CitusPlanInit(void);

/* citus_ddl.c */
struct Query;
extern void CitusCheckAddNode(struct Query *parse);
extern void CitusDdlInit(void);

/* citus_keys.c */
struct TargetArgs;
extern bool CitusKeyDefer(Relation rel, const char *relname, Jsonb *key,
						  struct TargetArgs *args, Oid role);
extern void CitusKeysInit(void);

#endif							/* PG_LLM_CITUS_H */
