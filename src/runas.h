/*-------------------------------------------------------------------------
 *
 * runas.h
 *	  Running SQL on someone else's behalf: as another role (the extension
 *	  owner, the role that enqueued an item) and always with search_path
 *	  pinned to "pg_catalog, pg_temp", so that no name in pg_llm's SQL can
 *	  resolve to an object somebody else planted.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_RUNAS_H
#define PG_LLM_RUNAS_H

#include "postgres.h"

/* The search_path every statement pg_llm runs for someone else uses. */
#define LLM_SAFE_SEARCH_PATH "pg_catalog, pg_temp"

typedef void (*RunAsFunc) (void *arg);

extern void RunAs(Oid role, bool restricted, RunAsFunc fn, void *arg);
extern Oid	RunAsOwnerOid(void);
extern void RunAsOwner(RunAsFunc fn, void *arg);
extern int	RunAsPinSearchPath(void);
extern void RunAsRestoreSettings(int nestlevel);
extern int	RunSql(const char *sql, int nargs, Oid *types, Datum *values,
				   const char *nulls, bool read_only, long count);

#endif							/* PG_LLM_RUNAS_H */
