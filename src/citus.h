/*-------------------------------------------------------------------------
 *
 * citus.h
 *	  pg_llm on a Citus cluster, without linking Citus: what this node is
 *	  (coordinator or worker), which tables are Citus tables, whether this
 *	  backend runs a query on a shard for another node (citus.c); the
 *	  planner hook that keeps coordinator-only calls on the coordinator,
 *	  and llm.citus_calls (citus_plan.c); the configuration sent to the
 *	  worker nodes and what a worker node may do with it (citus_sync.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_CITUS_H
#define PG_LLM_CITUS_H

#include "postgres.h"

#include "nodes/pg_list.h"
#include "utils/jsonb.h"
#include "utils/relcache.h"

/* What a Citus table is (CitusTableKind). */
#define CITUS_NOT_CITUS		'\0'
#define CITUS_DISTRIBUTED	'd'		/* hash-distributed, or one shard */
#define CITUS_REFERENCE		'r'		/* a copy on every node */
#define CITUS_LOCAL			'l'		/* a local table in Citus's metadata */

/* llm.citus_calls */
#define CITUS_CALLS_AUTO		0
#define CITUS_CALLS_COORDINATOR	1
#define CITUS_CALLS_WORKERS		2

/* A node of the cluster, as pg_dist_node names it. */
typedef struct CitusNode
{
	int32		nodeid;
	int32		groupid;
	char	   *host;
	int			port;
	char	   *name;			/* host:port */
} CitusNode;

struct pg_conn;
struct pg_result;

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
extern bool CitusExtensionDistributed(void);
extern char *CitusDistributionColumn(Oid relid);
extern int64 CitusShardOf(Oid relid, Oid type, Datum value);
extern void CitusRefuseTracking(Oid relid, const char *job);
extern void CitusGuardJobTrigger(const char *trigger);

/* citus_net.c */
extern List *CitusWorkerNodes(void);
extern CitusNode *CitusCoordinator(void);
extern struct pg_conn *CitusConnect(const CitusNode *node, const char *role, const char *appname,
									const char *options);
extern struct pg_result *CitusExec(struct pg_conn **conn, const char *node, const char *sql,
								   int nparams, const char *const *params);
extern void CitusCommand(struct pg_conn **conn, const char *node, const char *sql);
extern char *CitusValue(struct pg_result *r, int row, int col);
extern void CitusClear(struct pg_result *r);
extern void CitusFinish(struct pg_conn *conn);

/* citus_sync.c */
extern void CitusConfigChanged(void);
extern bool CitusCallsOnWorkers(void);
extern void CitusGuard(CitusUse use, const char *function);
extern bool CitusWorkersSynced(void);

/* citus_plan.c */
extern int	llm_citus_calls;
extern bool CitusWorkersCall(void);
extern void CitusDefineSettings(void);
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
