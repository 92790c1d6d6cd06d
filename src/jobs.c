/*-------------------------------------------------------------------------
 *
 * jobs.c
 *	  Jobs: llm.create_job, llm.run_job, llm.drop_job and the trigger every
 *	  job's triggers call, llm._job_trigger(job id).
 *
 *	  A job is its row of llm.job, known by its id.  Nothing is made for a
 *	  job that its owner owns: she cannot alter what runs it, and nothing
 *	  of hers is ever run with anyone else's rights.  Whoever calls
 *	  run_job, and whoever writes the source table, the job's work is done
 *	  the same way:
 *
 *	  - the job is read as the extension owner (search_path pinned);
 *	  - the job's SQL (llm._job_sql: read the rows, render the prompts, add
 *		the result table's key rows) runs as the job's owner, in a
 *		security-restricted operation with search_path pinned, after a
 *		check that the owner may still read the rows and write the results
 *		(a trigger reads its rows from a transition table or from the row
 *		itself, where no privilege is checked);
 *	  - the rows go into the queue through QueueAddJobItems (queue.c), the
 *		one place items enter the queue, with the owner's cap and the
 *		target's checks.
 *
 *	  Runs of a job are serialized by a lock on the job's row of llm.job,
 *	  which only the extension owner can take (the roles that use jobs may
 *	  not update llm.job), not by an advisory lock whose key anyone can
 *	  compute.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/partition.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/rls.h"

#include "embed.h"
#include "call.h"
#include "citus.h"
#include "compat.h"
#include "queue.h"
#include "runas.h"

PG_FUNCTION_INFO_V1(pg_llm_create_job);
PG_FUNCTION_INFO_V1(pg_llm_run_job);
PG_FUNCTION_INFO_V1(pg_llm_drop_job);
PG_FUNCTION_INFO_V1(pg_llm_job_trigger);

/* The statements of llm._job_sql, by their position there. */
#define JOB_CHECK 1
#define JOB_RUN_ADD_KEYS 2
#define JOB_RUN_SELECT 3
#define JOB_STMT_ADD_KEYS 4
#define JOB_STMT_SELECT 5
#define JOB_ROW_RESET 6
#define JOB_ROW_HAS_RESULT 7
#define JOB_ROW_ADD_KEY 8
#define JOB_ROW_SELECT 9
#define JOB_TARGET_ALIAS 10
#define JOB_ROW_MAY_UPDATE 11
#define JOB_ROW_INPUT 12
#define JOB_NSTMTS 12

/* Rows queued at a time. */
#define JOB_CHUNK 10000

/*
 * A job as this backend last read it, with its statements and the plans
 * kept for those run at each row.  A job never changes but for
 * llm.job.last_run_at; the row's xmin tells when it must be read again.
 */
typedef struct JobDef
{
	MemoryContext cxt;
	char		xmin[16];
	LocalTransactionId read_in;	/* the transaction that read it last */
	QueueJob	q;
	Oid			source;
	bool		sep;			/* a result table of its own */
	char	   *result_column;
	char	   *stmts[JOB_NSTMTS + 1];	/* 1-based; NULL where none */
	int			nrowcols;
	char	  **rowcols;
	SPIPlanPtr	plans[JOB_NSTMTS + 1];
	Oid		   *plan_types[JOB_NSTMTS + 1];
} JobDef;

typedef struct JobEntry
{
	int64		id;				/* the hash key */
	JobDef	   *def;
} JobEntry;

static HTAB *job_cache = NULL;

/*
 * How many jobs this backend is running (a job's work can fire another
 * job's trigger): a job read again meanwhile leaves its earlier version
 * alone, which may be in use.
 */
static int	job_depth = 0;

static void
job_free(JobDef *job)
{
	int			i;

	for (i = 1; i <= JOB_NSTMTS; i++)
		if (job->plans[i])
			SPI_freeplan(job->plans[i]);
	MemoryContextDelete(job->cxt);
}

/* The elements of a text[] (NULL elements as NULL), in cxt. */
static char **
text_array(Datum array, int *n, MemoryContext cxt)
{
	Datum	   *elems;
	bool	   *nulls;
	char	  **out;
	int			i;

	deconstruct_array(DatumGetArrayTypeP(array), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, n);
	out = MemoryContextAllocZero(cxt, sizeof(char *) * (*n + 1));
	for (i = 0; i < *n; i++)
		out[i] = nulls[i] ? NULL : MemoryContextStrdup(cxt, TextDatumGetCString(elems[i]));
	return out;
}

static char *
value_or_null(HeapTuple tup, TupleDesc td, int col, MemoryContext cxt)
{
	char	   *v = SPI_getvalue(tup, td, col);

	return v ? MemoryContextStrdup(cxt, v) : NULL;
}

/* Reading a job as the extension owner (RunAs). */
typedef struct JobRead
{
	int64		id;
	JobDef	   *job;			/* NULL: there is no such job */
} JobRead;

static void
job_read(void *arg)
{
	JobRead    *r = (JobRead *) arg;
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(r->id)};
	HeapTuple	tup;
	TupleDesc	td;
	JobEntry   *entry;
	JobDef	   *job;
	bool		found;
	bool		isnull;
	char	   *xmin;
	MemoryContext cxt;
	char	  **keys;
	int			n;
	int			i;

	r->job = NULL;
	if (RunSql("SELECT j.xmin::pg_catalog.text, j.name, j.owner::pg_catalog.oid, j.source_table::pg_catalog.oid, "
			   "coalesce(j.result_table, j.source_table)::pg_catalog.oid, j.result_table IS NOT NULL, "
			   "j.result_column::pg_catalog.text, j.key_columns::pg_catalog.text[], j.model, j.system, "
			   "j.options::pg_catalog.text, j.via, j.provider, j.task, j.spread_columns::pg_catalog.text[] "
			   "FROM llm.job j WHERE j.id = $1",
			   1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read llm.job");
	if (SPI_processed == 0)
		return;
	tup = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;
	xmin = SPI_getvalue(tup, td, 1);

	if (job_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(int64);
		ctl.entrysize = sizeof(JobEntry);
		job_cache = hash_create("pg_llm jobs", 16, &ctl, HASH_ELEM | HASH_BLOBS);
	}
	entry = hash_search(job_cache, &r->id, HASH_ENTER, &found);
	if (!found)
		entry->def = NULL;
	else if (entry->def && strcmp(entry->def->xmin, xmin) == 0)
	{
		r->job = entry->def;
		return;
	}
	if (entry->def && job_depth == 0)
		job_free(entry->def);
	entry->def = NULL;

	cxt = AllocSetContextCreate(CacheMemoryContext, "pg_llm job", ALLOCSET_SMALL_SIZES);
	job = MemoryContextAllocZero(cxt, sizeof(JobDef));
	job->cxt = cxt;
	strlcpy(job->xmin, xmin, sizeof(job->xmin));
	job->q.id = r->id;
	job->q.name = value_or_null(tup, td, 2, cxt);
	job->q.owner = DatumGetObjectId(SPI_getbinval(tup, td, 3, &isnull));
	job->source = DatumGetObjectId(SPI_getbinval(tup, td, 4, &isnull));
	job->q.target = DatumGetObjectId(SPI_getbinval(tup, td, 5, &isnull));
	job->sep = DatumGetBool(SPI_getbinval(tup, td, 6, &isnull));
	job->result_column = value_or_null(tup, td, 7, cxt);
	job->q.column = job->result_column;
	keys = text_array(SPI_getbinval(tup, td, 8, &isnull), &n, cxt);
	job->q.key_columns = NIL;
	for (i = 0; i < n; i++)
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		job->q.key_columns = lappend(job->q.key_columns, keys[i]);
		MemoryContextSwitchTo(old);
	}
	job->q.model = value_or_null(tup, td, 9, cxt);
	job->q.system = value_or_null(tup, td, 10, cxt);
	job->q.options = value_or_null(tup, td, 11, cxt);
	job->q.via = value_or_null(tup, td, 12, cxt);
	job->q.provider = value_or_null(tup, td, 13, cxt);
	job->q.embed = strcmp(SPI_getvalue(tup, td, 14), "embed") == 0;
	/* an answer spread over columns (a json_schema and no result column) */
	job->q.spread_columns = NIL;
	(void) SPI_getbinval(tup, td, 15, &isnull);
	if (!isnull)
	{
		keys = text_array(SPI_getbinval(tup, td, 15, &isnull), &n, cxt);
		for (i = 0; i < n; i++)
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			job->q.spread_columns = lappend(job->q.spread_columns, keys[i]);
			MemoryContextSwitchTo(old);
		}
	}

	/* its statements */
	if (RunSql("SELECT s.statements, s.row_columns::pg_catalog.text[] "
			   "FROM llm.job j, llm._job_sql(j) s WHERE j.id = $1",
			   1, types, values, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the statements of job %s", job->q.name);
	tup = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;
	{
		char	  **stmts = text_array(SPI_getbinval(tup, td, 1, &isnull), &n, cxt);

		for (i = 0; i < n && i < JOB_NSTMTS; i++)
			job->stmts[i + 1] = stmts[i];
	}
	job->rowcols = text_array(SPI_getbinval(tup, td, 2, &isnull), &job->nrowcols, cxt);
	entry->def = job;
	r->job = job;
}

/* Run a job's work as its owner, in a security-restricted operation. */
static void
job_run_as_owner(JobDef *job, RunAsFunc fn, void *arg)
{
	job_depth++;
	PG_TRY();
	{
		RunAs(job->q.owner, true, fn, arg);
	}
	PG_FINALLY();
	{
		job_depth--;
	}
	PG_END_TRY();
}

/*
 * A job by its id, or NULL.  Read once a transaction: a job does not
 * change, and while a transaction writes its source table (or runs it) the
 * job cannot be dropped (drop_job drops the triggers, which waits for the
 * table; run_job locks the job's row).
 */
static JobDef *
job_load(int64 id)
{
	JobRead		r;

	if (job_cache)
	{
		JobEntry   *entry = hash_search(job_cache, &id, HASH_FIND, NULL);

		if (entry && entry->def && entry->def->read_in == LlmMyLocalXid())
			return entry->def;
	}
	r.id = id;
	r.job = NULL;
	RunAsOwner(job_read, &r);
	if (r.job)
		r.job->read_in = LlmMyLocalXid();
	return r.job;
}

/* Finding a job by name for a caller (RunAs, as the extension owner). */
typedef struct JobFind
{
	const char *name;
	bool		found;
	int64		id;
	Oid			owner;
} JobFind;

static void
job_find_by_name(void *arg)
{
	JobFind    *f = (JobFind *) arg;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(f->name)};
	bool		isnull;

	if (RunSql("SELECT j.id, j.owner::pg_catalog.oid FROM llm.job j WHERE j.name = $1",
			   1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read llm.job");
	f->found = SPI_processed > 0;
	if (f->found)
	{
		f->id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		f->owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	}
}

static void
job_does_not_exist(const char *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("job \"%s\" does not exist", name),
			 errhint("See SELECT name FROM llm.job.")));
}

/*
 * The id of the job of this name that the calling role may see (it has
 * the rights of the job's owner, as llm.job's policy says), or an error:
 * no role learns of, runs or drops another role's job by its name.
 */
static int64
job_find(FunctionCallInfo fcinfo)
{
	JobFind		f;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("a job's name must not be null")));
	f.name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	RunAsOwner(job_find_by_name, &f);
	if (!f.found || !has_privs_of_role(GetUserId(), f.owner))
		job_does_not_exist(f.name);
	return f.id;
}

/* Run a statement with parameters, keeping its plan with the job. */
static int
job_exec(JobDef *job, int stmt, int nargs, Oid *types, Datum *values, const char *nulls,
		 bool read_only)
{
	if (job->plans[stmt] && nargs > 0 &&
		memcmp(job->plan_types[stmt], types, sizeof(Oid) * nargs) != 0)
	{
		/* a column's type changed since the plan was made */
		SPI_freeplan(job->plans[stmt]);
		job->plans[stmt] = NULL;
	}
	if (job->plans[stmt] == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(job->stmts[stmt], nargs, types);

		if (p == NULL)
			elog(ERROR, "could not prepare statement %d of job %s: %s", stmt, job->q.name,
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		if (nargs > 0)
		{
			job->plan_types[stmt] = MemoryContextAlloc(job->cxt, sizeof(Oid) * nargs);
			memcpy(job->plan_types[stmt], types, sizeof(Oid) * nargs);
		}
		job->plans[stmt] = p;
	}
	return SPI_execute_plan(job->plans[stmt], values, nulls, read_only, 0);
}

/* What the job's owner may do now (JOB_CHECK, run as the owner). */
typedef struct JobRights
{
	char	   *denied;			/* why the owner may not run the job, or NULL */
	bool		source_rls;		/* row-level security applies to it */
	bool		target_rls;
} JobRights;

static JobRights
job_rights(JobDef *job)
{
	JobRights	r;
	HeapTuple	tup;
	TupleDesc	td;
	bool		isnull;

	if (job_exec(job, JOB_CHECK, 0, NULL, NULL, NULL, true) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not check the rights of job %s", job->q.name);
	tup = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;
	r.denied = SPI_getvalue(tup, td, 1);
	r.source_rls = DatumGetBool(SPI_getbinval(tup, td, 2, &isnull));
	r.target_rls = DatumGetBool(SPI_getbinval(tup, td, 3, &isnull));
	return r;
}

/*
 * Queue the rows (prompt, key) a query returns, in chunks.  With
 * row-level security on the table written back, the rows are read FOR KEY
 * SHARE, which applies its UPDATE policies too: a row the owner may read
 * but not update is not sent.  Returns the number of items queued; stops
 * when the owner's queue is full.
 */
static int64
job_queue_rows(JobDef *job, const char *sql, bool lock_target, bool supersede, bool *target_checked)
{
	SPIParseOpenOptions opts;
	Portal		portal;
	int64		total = 0;
	bool		full = false;
	const char *query = lock_target ?
		psprintf("%s FOR KEY SHARE OF %s", sql, job->stmts[JOB_TARGET_ALIAS]) : sql;

	memset(&opts, 0, sizeof(opts));
	opts.cursorOptions = CURSOR_OPT_NO_SCROLL;
	opts.read_only = false;
	portal = SPI_cursor_parse_open(NULL, query, &opts);
	while (!full)
	{
		Datum	   *prompts;
		Datum	   *keys;
		uint64		i;
		uint64		n;
		SPITupleTable *tt;

		SPI_cursor_fetch(portal, true, JOB_CHUNK);
		tt = SPI_tuptable;
		n = SPI_processed;
		if (n == 0)
			break;
		prompts = palloc(sizeof(Datum) * n);
		keys = palloc(sizeof(Datum) * n);
		for (i = 0; i < n; i++)
		{
			bool		isnull;

			prompts[i] = SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull);
			if (isnull)
				prompts[i] = CStringGetTextDatum("");
			keys[i] = SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull);
		}
		total += QueueAddJobItems(&job->q,
								  PointerGetDatum(construct_array(prompts, n, TEXTOID, -1, false, TYPALIGN_INT)),
								  PointerGetDatum(construct_array(keys, n, JSONBOID, -1, false, TYPALIGN_INT)),
								  n, supersede, target_checked, &full);
		SPI_freetuptable(tt);
		pfree(prompts);
		pfree(keys);
	}
	SPI_cursor_close(portal);
	return total;
}

/* llm.run_job's work, as the job's owner (RunAs, restricted). */
typedef struct JobRun
{
	JobDef	   *job;
	int64		n;
} JobRun;

static void
run_work(void *arg)
{
	JobRun	   *r = (JobRun *) arg;
	JobDef	   *job = r->job;
	JobRights	rights = job_rights(job);
	bool		target_checked = false;

	if (rights.denied)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("job \"%s\" cannot run: %s", job->q.name, rights.denied),
				 errhint("A job runs with the rights of its owner: grant them again, or drop the job.")));
	if (job->sep && SPI_execute(job->stmts[JOB_RUN_ADD_KEYS], false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not add the key rows of job %s", job->q.name);
	r->n = job_queue_rows(job, job->stmts[JOB_RUN_SELECT], rights.target_rls, false, &target_checked);
}

/* The lock of a run, and its time (RunAs, as the extension owner). */
typedef struct JobLock
{
	int64		id;
	bool		found;
} JobLock;

static void
job_lock(void *arg)
{
	JobLock    *l = (JobLock *) arg;
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(l->id)};

	if (RunSql("UPDATE llm.job SET last_run_at = pg_catalog.now() WHERE id = $1",
			   1, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update llm.job");
	l->found = SPI_processed > 0;
}

/*
 * llm.run_job(name) returns bigint: queue every row of the job without a
 * result and without an item not yet answered, as the job's owner,
 * whoever calls it.  One run of a job at a time: the run locks the job's
 * row (and records its time there).
 */
Datum
pg_llm_run_job(PG_FUNCTION_ARGS)
{
	JobLock		l;
	JobRun		r;

	l.id = job_find(fcinfo);
	RunAsOwner(job_lock, &l);
	if (!l.found)
		job_does_not_exist(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	r.job = job_load(l.id);
	if (r.job == NULL)
		job_does_not_exist(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	r.n = 0;
	job_run_as_owner(r.job, run_work, &r);
	/* in the server log, so that a run that queued nothing shows */
	ereport(LOG,
			(errmsg("pg_llm: run of job \"%s\" queued " INT64_FORMAT " %s",
					r.job->q.name, r.n, r.n == 1 ? "row" : "rows"),
			 errhidestmt(true)));
	PG_RETURN_INT64(r.n);
}

/* llm.drop_job's work (RunAs, as the extension owner). */
typedef struct JobDrop
{
	int64		id;
	bool		cancel;
	bool		found;
} JobDrop;

static void
drop_work(void *arg)
{
	JobDrop    *d = (JobDrop *) arg;
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(d->id)};

	if (d->cancel &&
		RunSql("DELETE FROM llm.queue WHERE job_id = $1 AND status IN ('pending', 'submitted')",
			   1, types, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not remove the items of a job");
	/* its triggers go with it (llm._job_uninstall) */
	if (RunSql("DELETE FROM llm.job WHERE id = $1", 1, types, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not delete from llm.job");
	d->found = SPI_processed > 0;
}

/*
 * llm.drop_job(name, cancel) returns void: remove a job the caller may
 * see, and its triggers; with cancel, its items not yet answered, which
 * are found by the job's id (never by the name: another role's job of
 * the same name, earlier or later, is another job).
 */
Datum
pg_llm_drop_job(PG_FUNCTION_ARGS)
{
	JobDrop		d;

	d.id = job_find(fcinfo);
	d.cancel = !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);
	RunAsOwner(drop_work, &d);
	if (!d.found)
		job_does_not_exist(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}

/* llm.create_job's work (RunAs, as the extension owner). */
#define CREATE_NARGS 14
typedef struct JobCreate
{
	Datum		values[CREATE_NARGS];
	char		nulls[CREATE_NARGS];
	int64		id;
	char	   *check_sql;
} JobCreate;

static void
create_work(void *arg)
{
	JobCreate  *c = (JobCreate *) arg;
	Oid			types[CREATE_NARGS] = {OIDOID, TEXTOID, REGCLASSOID, TEXTARRAYOID, TEXTOID, NAMEOID,
		REGCLASSOID, TEXTOID, TEXTOID, JSONBOID, BOOLOID, TEXTOID, TEXTOID, TEXTOID};
	bool		isnull;

	if (SPI_execute_with_args("SELECT c.id, c.check_sql FROM llm._job_create($1, $2, $3, $4, $5, $6, "
							  "$7, $8, $9, $10, $11, $12, $13, $14) c",
							  CREATE_NARGS, types, c->values, c->nulls, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not create the job");
	c->id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	c->check_sql = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	if (c->check_sql)
		c->check_sql = MemoryContextStrdup(TopTransactionContext, c->check_sql);
}

static void
run_check(void *arg)
{
	if (SPI_execute((const char *) arg, false, 0) < 0)
		elog(ERROR, "could not check the job's tables");
}

/*
 * llm.create_job(name, source_table, key_columns, prompt_template,
 * result_column, result_table, model, system, options, track_changes,
 * via, task, provider) returns void.  The job belongs to the calling role and runs with
 * its rights: what it must be allowed to do is checked for it
 * (llm._job_create, as the extension owner, which also stores the job and
 * creates its triggers), and what only its own rights can show is run as
 * it (a statement that copies the key columns into the result table,
 * planned; whether row-level security applies to it on the source table).
 */
Datum
pg_llm_create_job(PG_FUNCTION_ARGS)
{
	JobCreate	c;
	Oid			caller = GetUserId();
	int			i;

	c.values[0] = ObjectIdGetDatum(caller);
	c.nulls[0] = ' ';
	for (i = 0; i < CREATE_NARGS - 1; i++)
	{
		c.nulls[i + 1] = PG_ARGISNULL(i) ? 'n' : ' ';
		c.values[i + 1] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
	}
	c.check_sql = NULL;
	/* a provider named is one of the model's routes */
	if (!PG_ARGISNULL(12))
	{
		bool		embed = !PG_ARGISNULL(11) &&
			strcmp(text_to_cstring(PG_GETARG_TEXT_PP(11)), "embed") == 0;

		(void) QueueRoutesOn(!PG_ARGISNULL(6) ? text_to_cstring(PG_GETARG_TEXT_PP(6)) :
							 embed ? EmbedResolveModel(NULL) : LlmResolveModel(NULL, NULL),
							 text_to_cstring(PG_GETARG_TEXT_PP(12)));
	}
	/* a distributed or reference table's triggers would run on the worker nodes */
	if ((PG_ARGISNULL(9) || PG_GETARG_BOOL(9)) && !PG_ARGISNULL(1) && !PG_ARGISNULL(0))
		CitusRefuseTracking(PG_GETARG_OID(1), text_to_cstring(PG_GETARG_TEXT_PP(0)));
	RunAsOwner(create_work, &c);
	if (c.check_sql)
		RunAs(caller, true, run_check, c.check_sql);
	if ((PG_ARGISNULL(9) || PG_GETARG_BOOL(9)) && !PG_ARGISNULL(1) &&
		check_enable_rls(PG_GETARG_OID(1), caller, true) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("table %s has row-level security for role %s",
						quote_qualified_identifier(get_namespace_name(get_rel_namespace(PG_GETARG_OID(1))),
												   get_rel_name(PG_GETARG_OID(1))),
						quote_identifier(GetUserNameFromId(caller, false))),
				 errdetail("The job's trigger sees every row written, also those the job's owner may not read."),
				 errhint("Create the job with track_changes => false and run it with llm.run_job(): it reads only the rows its owner may read.")));
	PG_RETURN_VOID();
}

/*
 * The BEFORE UPDATE trigger of a job whose result is in its source table
 * (it fires when an input column really changed): the result is no longer
 * current, unless this statement set it too.  The result is the result
 * column, or the columns an answer is spread over: all of them go back to
 * NULL, unless the statement set one of them (it wrote an answer).
 */
static Datum
job_reset(TriggerData *td, JobDef *job)
{
	Relation	rel = td->tg_relation;
	TupleDesc	desc = RelationGetDescr(rel);
	List	   *results = job->q.spread_columns ? job->q.spread_columns :
		list_make1(job->result_column);
	int		   *cols = palloc(sizeof(int) * list_length(results));
	Datum	   *nullv = palloc0(sizeof(Datum) * list_length(results));
	bool	   *isnull = palloc(sizeof(bool) * list_length(results));
	int			n = 0;
	ListCell   *lc;

	foreach(lc, results)
	{
		const char *name = lfirst(lc);
		AttrNumber	att = get_attnum(RelationGetRelid(rel), name);
		Form_pg_attribute a;
		Datum		oldv,
					newv;
		bool		oldnull,
					newnull;

		if (att <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("result column \"%s\" of job \"%s\" no longer exists", name, job->q.name),
					 errhint("Drop the job and create it again.")));
		a = TupleDescAttr(desc, att - 1);
		oldv = heap_getattr(td->tg_trigtuple, att, desc, &oldnull);
		newv = heap_getattr(td->tg_newtuple, att, desc, &newnull);
		/* set by the statement: it wrote the result itself */
		if (oldnull != newnull || (!oldnull && !datum_image_eq(oldv, newv, a->attbyval, a->attlen)))
			return PointerGetDatum(td->tg_newtuple);
		/* already NULL */
		if (newnull)
			continue;
		cols[n] = att;
		isnull[n] = true;
		n++;
	}
	if (n == 0)
		return PointerGetDatum(td->tg_newtuple);
	return PointerGetDatum(heap_modify_tuple_by_cols(td->tg_newtuple, desc, n, cols, nullv, isnull));
}

/*
 * What a job's trigger checked in this statement (in the trigger's
 * fn_extra, which lives as long as the statement): a row trigger fires for
 * every row, and PostgreSQL checks a statement's rights once too.
 */
typedef struct JobFireCache
{
	int64		id;
	bool		rights_checked;
	JobRights	rights;
	bool		target_checked;
	bool		warned;
} JobFireCache;

/* A trigger's work, as the job's owner (RunAs, restricted). */
typedef struct JobFire
{
	JobDef	   *job;
	TriggerData *td;
	JobFireCache *cache;
	bool		current;		/* JobInputCurrent: the input did not change */
} JobFire;

/*
 * The values of a row that a job's row statements take, in the order of
 * the job's row columns.
 */
static void
row_params(JobDef *job, Relation rel, HeapTuple tup, Oid **types, Datum **values, char **nulls)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			i;

	*types = palloc(sizeof(Oid) * job->nrowcols);
	*values = palloc(sizeof(Datum) * job->nrowcols);
	*nulls = palloc(job->nrowcols);
	for (i = 0; i < job->nrowcols; i++)
	{
		AttrNumber	att = get_attnum(RelationGetRelid(rel), job->rowcols[i]);
		bool		isnull;

		if (att <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" of table %s, which job \"%s\" reads, no longer exists",
							job->rowcols[i], RelationGetRelationName(rel), job->q.name),
					 errhint("Drop the job and create it again.")));
		(*types)[i] = TupleDescAttr(desc, att - 1)->atttypid;
		(*values)[i] = heap_getattr(tup, att, desc, &isnull);
		(*nulls)[i] = isnull ? 'n' : ' ';
	}
}

/*
 * An embedding job's row that an UPDATE changed: is its rendered input
 * still the one its latest item was queued with (the hash kept with the
 * item)?  Then its vector is current, or on its way, and the update costs
 * nothing: the result is not reset and nothing is queued.  Run as the
 * job's owner (RunAs, restricted); the queue is read as the extension's
 * owner.
 */
static void
input_current_work(void *arg)
{
	JobFire    *f = (JobFire *) arg;
	JobDef	   *job = f->job;
	Oid		   *types;
	Datum	   *values;
	char	   *nulls;
	Datum		prompt;
	Datum		key;
	bool		isnull;

	f->current = false;
	row_params(job, f->td->tg_relation, f->td->tg_newtuple, &types, &values, &nulls);
	if (job_exec(job, JOB_ROW_INPUT, job->nrowcols, types, values, nulls, true) != SPI_OK_SELECT)
		elog(ERROR, "could not render the input of job %s", job->q.name);
	if (SPI_processed == 0)
		return;					/* a key column is NULL */
	prompt = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		return;
	key = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	f->current = QueueJobInputCurrent(&job->q, TextDatumGetCString(prompt), key);
}

/* Does an UPDATE leave an embedding job's row as it was (see above)? */
static bool
job_input_current(JobDef *job, TriggerData *td)
{
	JobFire		f;

	if (!job->q.embed || !TRIGGER_FIRED_BY_UPDATE(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event))
		return false;
	memset(&f, 0, sizeof(f));
	f.job = job;
	f.td = td;
	job_run_as_owner(job, input_current_work, &f);
	return f.current;
}

static void
trigger_work(void *arg)
{
	JobFire    *f = (JobFire *) arg;
	JobDef	   *job = f->job;
	TriggerData *td = f->td;
	JobRights	rights;
	bool		inserted = TRIGGER_FIRED_BY_INSERT(td->tg_event);

	if (!f->cache->rights_checked)
	{
		rights = job_rights(job);
		if (rights.denied)
			rights.denied = MemoryContextStrdup(GetMemoryChunkContext(f->cache), rights.denied);
		f->cache->rights = rights;
		f->cache->rights_checked = true;
	}
	rights = f->cache->rights;

	/*
	 * A trigger reads rows no privilege check sees (the transition table,
	 * the row itself): the owner must still be allowed to read them.
	 */
	if (rights.denied || rights.source_rls)
	{
		/* one warning a statement */
		if (f->cache->warned)
			return;
		f->cache->warned = true;
		ereport(WARNING,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("pg_llm job \"%s\": %s; rows not queued", job->q.name,
						rights.denied ? rights.denied :
						psprintf("row-level security of table %s applies to role %s",
								 quote_qualified_identifier(get_namespace_name(get_rel_namespace(job->source)),
															get_rel_name(job->source)),
								 GetUserNameFromId(job->q.owner, false))),
				 errhint("A job runs with the rights of its owner: grant them again, or drop the job.")));
		return;
	}

	if (TRIGGER_FIRED_FOR_STATEMENT(td->tg_event))
	{
		if (SPI_register_trigger_data(td) != SPI_OK_TD_REGISTER)
			elog(ERROR, "could not read the rows inserted");
		if (job->sep && SPI_execute(job->stmts[JOB_STMT_ADD_KEYS], false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not add the key rows of job %s", job->q.name);
		(void) job_queue_rows(job, job->stmts[JOB_STMT_SELECT], job->sep && rights.target_rls, true,
							  &f->cache->target_checked);
		return;
	}
	else
	{
		Relation	rel = td->tg_relation;
		HeapTuple	tup = inserted ? td->tg_trigtuple : td->tg_newtuple;
		Oid		   *types;
		Datum	   *values;
		char	   *nulls;
		Datum		prompt;
		Datum		key;
		bool		isnull;
		bool		full;

		row_params(job, rel, tup, &types, &values, &nulls);
		if (job->sep)
		{
			if (!inserted &&
				job_exec(job, JOB_ROW_RESET, job->nrowcols, types, values, nulls, false) != SPI_OK_UPDATE)
				elog(ERROR, "could not reset the result of job %s", job->q.name);
			if (inserted)
			{
				if (job_exec(job, JOB_ROW_HAS_RESULT, job->nrowcols, types, values, nulls, true) != SPI_OK_SELECT)
					elog(ERROR, "could not read the result of job %s", job->q.name);
				/* inserted (into a partition) with a result already there */
				if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
					return;
			}
			if (job_exec(job, JOB_ROW_ADD_KEY, job->nrowcols, types, values, nulls, false) != SPI_OK_INSERT)
				elog(ERROR, "could not add the key row of job %s", job->q.name);
			/* a result row the owner may not update is not sent for */
			if (rights.target_rls)
			{
				if (job_exec(job, JOB_ROW_MAY_UPDATE, job->nrowcols, types, values, nulls, false) != SPI_OK_SELECT)
					elog(ERROR, "could not read the result row of job %s", job->q.name);
				if (SPI_processed == 0)
					return;
			}
		}
		if (job_exec(job, JOB_ROW_SELECT, job->nrowcols, types, values, nulls, true) != SPI_OK_SELECT)
			elog(ERROR, "could not render the prompt of job %s", job->q.name);
		if (SPI_processed == 0)
			return;				/* a key column is NULL */
		prompt = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (isnull)
			prompt = CStringGetTextDatum("");
		key = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		/* the new input replaces a pending item (an empty prompt only removes it) */
		(void) QueueAddJobItems(&job->q,
								PointerGetDatum(construct_array(&prompt, 1, TEXTOID, -1, false, TYPALIGN_INT)),
								PointerGetDatum(construct_array(&key, 1, JSONBOID, -1, false, TYPALIGN_INT)),
								1, true, &f->cache->target_checked, &full);
	}
}

/* A job's trigger fired at another time, or for other rows, than it was made for. */
static LlmNoReturn void
fired_wrong_time(TriggerData *td, JobDef *job)
{
	ereport(ERROR,
			(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
			 errmsg("trigger \"%s\" of pg_llm job \"%s\" fires at the wrong time",
					td->tg_trigger->tgname, job->q.name)));
}

/* Is relid the table, or one of its partitions? */
static bool
is_table_or_partition(Oid relid, Oid table)
{
	List	   *ancestors;
	bool		found;

	if (relid == table)
		return true;
	if (!get_rel_relispartition(relid))
		return false;
	ancestors = get_partition_ancestors(relid);
	found = list_member_oid(ancestors, table);
	list_free(ancestors);
	return found;
}

/*
 * llm._job_trigger(): the trigger of every job, its argument the job's
 * id.  Only the extension owner creates triggers with it (nobody else may
 * execute it), on the job's source table.  It fires as whoever writes the
 * table; the job's work runs as the job's owner.
 */
Datum
pg_llm_job_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td;
	JobDef	   *job;
	JobFire		f;
	int64		id;
	char	   *end;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("llm._job_trigger() must be called as a trigger")));
	td = (TriggerData *) fcinfo->context;
	errno = 0;
	id = td->tg_trigger->tgnargs == 1 ? strtoi64(td->tg_trigger->tgargs[0], &end, 10) : 0;
	if (td->tg_trigger->tgnargs != 1 || errno != 0 || *end != '\0' || id <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" must give llm._job_trigger() a job's id", td->tg_trigger->tgname)));
	/* a job's trigger copied onto a shard of a Citus table: jobs live on the coordinator */
	CitusGuardJobTrigger(td->tg_trigger->tgname);
	job = job_load(id);
	if (job == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the job of trigger \"%s\" no longer exists", td->tg_trigger->tgname),
				 errhint("Drop the trigger: its job was dropped.")));
	if (!is_table_or_partition(RelationGetRelid(td->tg_relation), job->source))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the trigger of pg_llm job \"%s\" fired on another table than %s",
						job->q.name,
						quote_qualified_identifier(get_namespace_name(get_rel_namespace(job->source)),
												   get_rel_name(job->source)))));

	if (TRIGGER_FIRED_BEFORE(td->tg_event))
	{
		if (!TRIGGER_FIRED_BY_UPDATE(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) || job->sep)
			fired_wrong_time(td, job);
		if (job_input_current(job, td))
			return PointerGetDatum(td->tg_newtuple);
		return job_reset(td, job);
	}
	if (TRIGGER_FIRED_BY_DELETE(td->tg_event) || TRIGGER_FIRED_BY_TRUNCATE(td->tg_event) ||
		(TRIGGER_FIRED_FOR_STATEMENT(td->tg_event) &&
		 (!TRIGGER_FIRED_BY_INSERT(td->tg_event) || td->tg_newtable == NULL)))
		fired_wrong_time(td, job);
	if (job_input_current(job, td))
		return PointerGetDatum(NULL);
	f.job = job;
	f.td = td;
	f.cache = (JobFireCache *) fcinfo->flinfo->fn_extra;
	if (f.cache == NULL || f.cache->id != id)
	{
		f.cache = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(JobFireCache));
		f.cache->id = id;
		fcinfo->flinfo->fn_extra = f.cache;
	}
	job_run_as_owner(job, trigger_work, &f);
	return PointerGetDatum(NULL);
}

/*
 * llm.estimate_job(name): llm.estimate over the prompts of the job's rows
 * without a result, with the job's model, system prompt and options.  The
 * rows are read and the prompts rendered as run_job does it, as the job's
 * owner in a security-restricted operation: code of the source and result
 * tables (a rule that made the table a view, a cast of a column's type to
 * text, a policy) never runs with the caller's rights.  The budget is the
 * caller's, as in llm.estimate.
 */
PG_FUNCTION_INFO_V1(pg_llm_estimate_job);

extern PGDLLEXPORT Datum pg_llm_estimate(PG_FUNCTION_ARGS);

typedef struct JobPrompts
{
	JobDef	   *job;
	Datum		prompts;
	bool		isnull;
} JobPrompts;

static void
prompts_work(void *arg)
{
	JobPrompts *p = (JobPrompts *) arg;
	char	   *sql = psprintf("SELECT pg_catalog.array_agg(q.prompt) FROM (%s) AS q",
							   p->job->stmts[JOB_RUN_SELECT]);
	Datum		d;

	if (RunSql(sql, 0, NULL, NULL, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the rows of job %s", p->job->q.name);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &p->isnull);
	if (!p->isnull)
		p->prompts = SPI_datumTransfer(d, false, -1);
}

Datum
pg_llm_estimate_job(PG_FUNCTION_ARGS)
{
	JobPrompts	p;
	LOCAL_FCINFO(est, 4);

	p.job = job_load(job_find(fcinfo));
	if (p.job == NULL)
		job_does_not_exist(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	job_run_as_owner(p.job, prompts_work, &p);

	InitFunctionCallInfoData(*est, fcinfo->flinfo, 4, fcinfo->fncollation, NULL, fcinfo->resultinfo);
	est->args[0].value = p.isnull ? PointerGetDatum(construct_empty_array(TEXTOID)) : p.prompts;
	est->args[0].isnull = false;
	est->args[1].isnull = p.job->q.model == NULL;
	est->args[1].value = est->args[1].isnull ? (Datum) 0 : CStringGetTextDatum(p.job->q.model);
	est->args[2].isnull = p.job->q.system == NULL;
	est->args[2].value = est->args[2].isnull ? (Datum) 0 : CStringGetTextDatum(p.job->q.system);
	est->args[3].isnull = p.job->q.options == NULL;
	est->args[3].value = est->args[3].isnull ? (Datum) 0 :
		DirectFunctionCall1(jsonb_in, CStringGetDatum(p.job->q.options));
	return pg_llm_estimate(est);
}
