/*-------------------------------------------------------------------------
 *
 * runas.c
 *	  The one way pg_llm runs SQL with rights other than its caller's.
 *
 *	  The configuration and the budgets are read as the extension owner,
 *	  the queue is written as the owner, and a queue item's reply is
 *	  written back as the role that enqueued it.  Each of these runs under
 *	  a search_path of "pg_catalog, pg_temp" set at a new GUC nesting
 *	  level, which is unwound afterwards (also on error): an exact-type
 *	  look-alike in a schema the caller controls, or in public, can never
 *	  beat the pg_catalog object our SQL means, and nothing a trigger SETs
 *	  during a write-back survives into the next item's.  PostgreSQL does
 *	  the same for maintenance commands (RestrictSearchPath).  The SQL
 *	  itself is schema-qualified as well.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "commands/prepare.h"
#include "common/hashfn.h"
#include "commands/sequence.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/syscache.h"

#include "compat.h"
#include "runas.h"

/*
 * Open a GUC nesting level with search_path pinned; returns the level to
 * hand to RunAsRestoreSettings.
 */
int
RunAsPinSearchPath(void)
{
	int			nestlevel = NewGUCNestLevel();

	(void) set_config_option("search_path", LLM_SAFE_SEARCH_PATH,
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return nestlevel;
}

/*
 * Undo every setting made since RunAsPinSearchPath (the pinned path and
 * anything the SQL run meanwhile SET, even without LOCAL).
 */
void
RunAsRestoreSettings(int nestlevel)
{
	AtEOXact_GUC(false, nestlevel);
}

/*
 * Forget the session-level state that code run for a role left in a
 * background process (the queue worker), which a security-restricted
 * operation does not forbid: session advisory locks (a lock the worker
 * kept would block the role's victims for good), prepared statements,
 * open cursors (after the code ended well; an error's rollback closes
 * them) and the sequence values currval and lastval read.  Settings are
 * undone by the GUC nesting level; temporary objects, cursors WITH HOLD,
 * SET ROLE and LISTEN are refused inside the operation itself.  The
 * worker holds none of these of its own.
 */
static void
forget_session_state(bool ended_well)
{
	LockReleaseSession(USER_LOCKMETHOD);
	DropAllPreparedStatements();
	if (ended_well)
	{
		PortalHashTableDeleteAll();
		ResetSequenceCaches();
	}
}

/*
 * Run fn(arg) connected to SPI, as role, with search_path pinned.  With
 * restricted, the code also runs as a security-restricted operation (no
 * SET ROLE, no temporary objects), as for code run on a role's behalf
 * from a background process, and in a background process the session
 * state the code left is forgotten afterwards.  The caller's identity and
 * settings come back however fn ends.
 */
void
RunAs(Oid role, bool restricted, RunAsFunc fn, void *arg)
{
	Oid			save_user;
	int			save_sec;
	int			nestlevel;
	bool		forget = restricted && LlmAmBackgroundWorker();

	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(role, save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   (restricted ? SECURITY_RESTRICTED_OPERATION : 0));
	nestlevel = RunAsPinSearchPath();
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		fn(arg);
		SPI_finish();
	}
	PG_CATCH();
	{
		RunAsRestoreSettings(nestlevel);
		SetUserIdAndSecContext(save_user, save_sec);
		if (forget)
			forget_session_state(false);
		PG_RE_THROW();
	}
	PG_END_TRY();
	RunAsRestoreSettings(nestlevel);
	SetUserIdAndSecContext(save_user, save_sec);
	if (forget)
		forget_session_state(true);
}

/*
 * The saved plans, by a hash of their statement's whole text (the claim
 * statement is longer than a kilobyte).  A statement whose hash another
 * one has, and any beyond PLAN_CACHE_MAX, is planned each time: a caller
 * that put values into its text would otherwise fill the cache.
 */
#define PLAN_CACHE_MAX 1024

typedef struct PlanEntry
{
	uint64		hash;
	char	   *sql;			/* the whole text, in TopMemoryContext */
	SPIPlanPtr	plan;
} PlanEntry;

static HTAB *plan_cache = NULL;

/* A saved plan for a statement, prepared once per process (or NULL). */
static SPIPlanPtr
cached_plan(const char *sql, int nargs, Oid *types)
{
	PlanEntry  *e;
	bool		found;
	size_t		len = strlen(sql);
	uint64		hash = hash_bytes_extended((const unsigned char *) sql, (int) len, 0);

	if (plan_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(uint64);
		ctl.entrysize = sizeof(PlanEntry);
		plan_cache = hash_create("pg_llm saved plans", 64, &ctl, HASH_ELEM | HASH_BLOBS);
	}
	e = hash_search(plan_cache, &hash, HASH_FIND, NULL);
	if (e != NULL && e->plan != NULL)
		return strcmp(e->sql, sql) == 0 ? e->plan : NULL;
	if (e == NULL && hash_get_num_entries(plan_cache) >= PLAN_CACHE_MAX)
		return NULL;
	e = hash_search(plan_cache, &hash, HASH_ENTER, &found);
	if (!found)
	{
		e->sql = NULL;
		e->plan = NULL;
	}
	{
		SPIPlanPtr	p;

		/* one generic plan: these statements run thousands of times */
		p = SPI_prepare_cursor(sql, nargs, types, CURSOR_OPT_GENERIC_PLAN);
		if (p == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql, SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		if (e->sql == NULL)
			e->sql = MemoryContextStrdup(TopMemoryContext, sql);
		e->plan = p;
	}
	return e->plan;
}

/*
 * Run a statement with a saved plan (or a one-off one, see cached_plan).  A
 * statement's text must say everything its plan depends on: the plans
 * are found by text, argument types included.
 */
int
RunSql(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls,
			 bool read_only, long count)
{
	SPIPlanPtr	p = cached_plan(sql, nargs, types);

	if (p)
		return SPI_execute_plan(p, values, nulls, read_only, count);
	return SPI_execute_with_args(sql, nargs, types, values, nulls, read_only, count);
}

/*
 * The owner of schema llm, who owns the extension's objects: the
 * configuration and the queue.
 */
Oid
RunAsOwnerOid(void)
{
	Oid			nsp = get_namespace_oid("llm", false);
	HeapTuple	tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nsp));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for namespace %u", nsp);
	owner = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
	ReleaseSysCache(tup);
	return owner;
}

/* Run fn(arg) as the owner of schema llm (see RunAs). */
void
RunAsOwner(RunAsFunc fn, void *arg)
{
	RunAs(RunAsOwnerOid(), false, fn, arg);
}
