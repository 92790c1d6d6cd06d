/*-------------------------------------------------------------------------
 *
 * citus.c
 *	  What pg_llm needs to know about Citus, read from Citus's catalogs
 *	  without linking Citus: whether this database is part of a Citus
 *	  cluster, whether this node is its coordinator or a worker, which
 *	  tables are Citus tables, and whether this backend runs a query on a
 *	  shard that another node sent.  Facts of the cluster, no policy: what
 *	  a worker node may do with them is citus_sync.c's (CitusGuard), where
 *	  the pushed-down calls run is citus_plan.c's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/fmgroids.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/builtins.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "citus.h"
#include "compat.h"

/* The prefixes of application_name that Citus gives its own connections. */
static const char *const citus_backend_prefixes[] = {
	"citus_internal gpid=",		/* tasks: queries on shards */
	"citus_run_command gpid=",	/* run_command_on_shards and friends */
	"citus_rebalancer gpid="
};

/* Per transaction: this node's group (-2: not read yet in it). */
static LocalTransactionId group_xact = InvalidLocalTransactionId;
static int32 group_id = -2;

/* Is Citus installed in this database (its catalog tables are there)? */
bool
CitusPresent(void)
{
	return OidIsValid(get_relname_relid("pg_dist_partition", PG_CATALOG_NAMESPACE));
}

/*
 * This node's group in the Citus cluster: 0 for the coordinator, above 0
 * for a worker node, -1 when this database has no Citus.  Read once a
 * transaction (citus_add_node gives a worker its group).
 */
int32
CitusGroupId(void)
{
	Oid			relid;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	if (!IsTransactionState())
		return -1;
	if (group_xact == LlmMyLocalXid() && group_id != -2)
		return group_id;
	group_xact = LlmMyLocalXid();
	group_id = -1;
	relid = get_relname_relid("pg_dist_local_group", PG_CATALOG_NAMESPACE);
	if (!OidIsValid(relid))
		return group_id;
	rel = table_open(relid, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	tup = heap_getnext(scan, ForwardScanDirection);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, 1, RelationGetDescr(rel), &isnull);

		group_id = isnull ? 0 : DatumGetInt32(d);
	}
	else
		group_id = 0;
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	return group_id;
}

/* Is this node a Citus worker node? */
bool
CitusIsWorkerNode(void)
{
	return CitusGroupId() > 0;
}

/*
 * Does this backend run work that another Citus node sent it: a task (a
 * query on a shard), a run_command_on_* command, a rebalancer's step?
 * Citus names such connections with a prefix of application_name.
 */
bool
CitusInShardQuery(void)
{
	int			i;

	if (application_name == NULL || application_name[0] != 'c')
		return false;
	for (i = 0; i < lengthof(citus_backend_prefixes); i++)
		if (strncmp(application_name, citus_backend_prefixes[i],
					strlen(citus_backend_prefixes[i])) == 0)
			return true;
	return false;
}

/*
 * What a table is to Citus, from pg_dist_partition: distributed (by hash,
 * or a single shard), a reference table, a Citus local table, or not a
 * Citus table (CITUS_NOT_CITUS).
 */
char
CitusTableKind(Oid relid)
{
	Oid			partition;
	Oid			index;
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tup;
	char		kind = CITUS_NOT_CITUS;

	partition = get_relname_relid("pg_dist_partition", PG_CATALOG_NAMESPACE);
	if (!OidIsValid(partition))
		return CITUS_NOT_CITUS;
	index = get_relname_relid("pg_dist_partition_logical_relid_index", PG_CATALOG_NAMESPACE);
	rel = table_open(partition, AccessShareLock);
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(relid));
	scan = systable_beginscan(rel, index, OidIsValid(index), NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		TupleDesc	td = RelationGetDescr(rel);
		bool		isnull;
		char		method = DatumGetChar(heap_getattr(tup, 2, td, &isnull));
		int32		colocation = DatumGetInt32(heap_getattr(tup, 4, td, &isnull));
		char		repmodel = DatumGetChar(heap_getattr(tup, 5, td, &isnull));

		if (method != 'n')
			kind = CITUS_DISTRIBUTED;
		else if (repmodel == 't')
			kind = CITUS_REFERENCE;
		else if (colocation != 0)
			kind = CITUS_DISTRIBUTED;	/* a single shard (schema-based) */
		else
			kind = CITUS_LOCAL;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return kind;
}

/* The words for a kind of Citus table, for messages. */
const char *
CitusTableKindName(char kind)
{
	switch (kind)
	{
		case CITUS_DISTRIBUTED:
			return "distributed table";
		case CITUS_REFERENCE:
			return "reference table";
		case CITUS_LOCAL:
			return "Citus local table";
	}
	return "table";
}

/*
 * The distribution column of a distributed table, or NULL (a table with
 * one shard has none).  SPI, as the caller.
 */
char *
CitusDistributionColumn(Oid relid)
{
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	char	   *name = NULL;
	MemoryContext caller = CurrentMemoryContext;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT pg_catalog.column_to_column_name(p.logicalrelid, p.partkey) "
							  "FROM pg_catalog.pg_dist_partition p "
							  "WHERE p.logicalrelid = $1 AND p.partkey IS NOT NULL",
							  1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the distribution column of table %u", relid);
	if (SPI_processed > 0)
	{
		char	   *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		if (v)
			name = MemoryContextStrdup(caller, v);
	}
	SPI_finish();
	return name;
}

/* The shard of a distributed table that a distribution column's value is in. */
int64
CitusShardOf(Oid relid, Oid type, Datum value)
{
	Oid			types[2] = {REGCLASSOID, type};
	Datum		values[2] = {ObjectIdGetDatum(relid), value};
	bool		isnull;
	int64		shard = 0;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT pg_catalog.get_shard_id_for_distribution_column($1, $2)",
							  2, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not find the shard of a row of table %u", relid);
	if (SPI_processed > 0)
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			shard = DatumGetInt64(d);
	}
	SPI_finish();
	return shard;
}

/*
 * create_job's refusal of track_changes on a distributed or reference
 * table, with the form that works.
 */
void
CitusRefuseTracking(Oid relid, const char *job)
{
	char		kind = CitusTableKind(relid);

	if (kind != CITUS_DISTRIBUTED && kind != CITUS_REFERENCE)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("track_changes cannot follow %s %s", CitusTableKindName(kind),
					quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
											   get_rel_name(relid))),
			 errdetail("Citus runs the triggers of such a table on the worker nodes, shard by shard, where there is no queue and no job."),
			 errhint("Create the job with track_changes => false and run llm.run_job('%s') on the coordinator, on a schedule (pg_cron): it queues every row whose result is missing.",
					 job)));
}

/*
 * A job's trigger fired on a Citus worker node: its table was distributed
 * after the job was made with track_changes (Citus copied the trigger onto
 * the shards).
 */
void
CitusGuardJobTrigger(const char *trigger)
{
	if (!IsTransactionState() || !CitusIsWorkerNode())
		return;
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("trigger \"%s\" of a pg_llm job cannot run on a Citus worker node", trigger),
			 errdetail("Its table was distributed after the job was created with track_changes; a job's rows are queued on the coordinator."),
			 errhint("Drop the job on the coordinator with llm.drop_job() (its triggers go with it) and create it again with track_changes => false, run by llm.run_job().")));
}

/*
 * Is pg_llm one of Citus's distributed objects (created on every node)?
 * Not when it was created with citus.enable_ddl_propagation off: then it
 * lives on the coordinator alone, and Citus sends nothing of it anywhere.
 */
bool
CitusExtensionDistributed(void)
{
	bool		yes;

	if (!OidIsValid(get_relname_relid("pg_dist_object", PG_CATALOG_NAMESPACE)))
		return false;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	yes = SPI_execute("SELECT 1 FROM pg_catalog.pg_dist_object o JOIN pg_catalog.pg_extension e "
					  "ON o.classid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND o.objid = e.oid "
					  "WHERE e.extname = 'pg_llm'", true, 1) == SPI_OK_SELECT && SPI_processed > 0;
	SPI_finish();
	return yes;
}

