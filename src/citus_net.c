/*-------------------------------------------------------------------------
 *
 * citus_net.c
 *	  Connections between the nodes of a Citus cluster, with libpq: the
 *	  coordinator to its worker nodes (the configuration, keys included),
 *	  a worker node to the coordinator (turns under the limits and budget
 *	  reservations).
 *
 *	  A node is found in pg_dist_node; it is reached as Citus reaches it,
 *	  with citus.node_conninfo and the node's (or every node's) entry of
 *	  pg_dist_authinfo for the role.  Waits are interruptible: a cancel or
 *	  statement_timeout cancels the remote statement and drops the
 *	  connection.  An error of the remote statement is raised here with
 *	  its own SQLSTATE, message, detail and hint, and the node named.
 *
 *	  This is the only file that includes libpq.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "libpq-fe.h"

#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#include "citus.h"
#include "runas.h"

/* The nodes of a kind: active primary worker nodes, or the coordinator. */
static void
nodes_query(void *arg)
{
	List	  **out = (List **) ((void **) arg)[0];
	bool		coordinator = *(bool *) ((void **) arg)[1];
	MemoryContext caller = (MemoryContext) ((void **) arg)[2];
	uint64		i;

	if (SPI_execute(coordinator ?
					"SELECT nodeid, groupid, nodename, nodeport FROM pg_catalog.pg_dist_node "
					"WHERE groupid = 0 AND isactive AND noderole = 'primary' ORDER BY nodeid LIMIT 1" :
					"SELECT nodeid, groupid, nodename, nodeport FROM pg_catalog.pg_dist_node "
					"WHERE groupid > 0 AND isactive AND noderole = 'primary' "
					"AND nodecluster = pg_catalog.current_setting('citus.cluster_name') "
					"ORDER BY nodename, nodeport", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_dist_node");
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		MemoryContext old = MemoryContextSwitchTo(caller);
		CitusNode  *n = palloc0(sizeof(CitusNode));

		n->nodeid = atoi(SPI_getvalue(t, td, 1));
		n->groupid = atoi(SPI_getvalue(t, td, 2));
		n->host = pstrdup(SPI_getvalue(t, td, 3));
		n->port = atoi(SPI_getvalue(t, td, 4));
		n->name = psprintf("%s:%d", n->host, n->port);
		*out = lappend(*out, n);
		MemoryContextSwitchTo(old);
	}
}

static List *
nodes(bool coordinator)
{
	List	   *out = NIL;
	void	   *args[3];

	args[0] = &out;
	args[1] = &coordinator;
	args[2] = CurrentMemoryContext;
	if (!CitusPresent())
		return NIL;
	RunAsOwner(nodes_query, args);
	return out;
}

/* The active primary worker nodes of this database's cluster. */
List *
CitusWorkerNodes(void)
{
	return nodes(false);
}

/* The coordinator, as the metadata names it, or NULL. */
CitusNode *
CitusCoordinator(void)
{
	List	   *l = nodes(true);

	return l ? linitial(l) : NULL;
}

/* The authinfo of pg_dist_authinfo for a role on a node (read as the owner). */
typedef struct AuthQuery
{
	const char *role;
	int32		nodeid;
	char	   *authinfo;
	MemoryContext caller;
} AuthQuery;

static void
auth_query(void *arg)
{
	AuthQuery  *a = (AuthQuery *) arg;
	Oid			types[2] = {NAMEOID, INT4OID};
	Datum		values[2];

	values[0] = DirectFunctionCall1(namein, CStringGetDatum(a->role));
	values[1] = Int32GetDatum(a->nodeid);
	if (SPI_execute_with_args("SELECT authinfo FROM pg_catalog.pg_dist_authinfo "
							  "WHERE rolename = $1 AND nodeid IN ($2, 0) ORDER BY nodeid DESC LIMIT 1",
							  2, types, values, NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
		a->authinfo = MemoryContextStrdup(a->caller, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
}

/* Add a conninfo string's options (citus.node_conninfo, an authinfo). */
static int
add_conninfo(const char *conninfo, const char **keys, const char **values, int n, int max)
{
	PQconninfoOption *opts;
	PQconninfoOption *o;
	char	   *err = NULL;

	if (conninfo == NULL || conninfo[0] == '\0')
		return n;
	opts = PQconninfoParse(conninfo, &err);
	if (opts == NULL)
	{
		if (err)
			PQfreemem(err);
		return n;
	}
	for (o = opts; o->keyword != NULL && n < max; o++)
	{
		if (o->val == NULL || o->val[0] == '\0')
			continue;
		keys[n] = pstrdup(o->keyword);
		values[n] = pstrdup(o->val);
		n++;
	}
	PQconninfoFree(opts);
	return n;
}

/*
 * Connect to a node as a role.  options is given to the server as its
 * startup options ("-c name=value ..."), or NULL.  Raises an error naming
 * the node when it cannot connect.
 */
PGconn *
CitusConnect(const CitusNode *node, const char *role, const char *appname, const char *options)
{
	const char *keys[64];
	const char *values[64];
	int			n = 0;
	char	   *port = psprintf("%d", node->port);
	AuthQuery	a;
	PGconn	   *conn;

	keys[n] = "host";
	values[n++] = node->host;
	keys[n] = "port";
	values[n++] = port;
	keys[n] = "dbname";
	values[n++] = get_database_name(MyDatabaseId);
	keys[n] = "user";
	values[n++] = role;
	keys[n] = "application_name";
	values[n++] = appname;
	keys[n] = "connect_timeout";
	values[n++] = "10";
	if (options)
	{
		keys[n] = "options";
		values[n++] = options;
	}
	n = add_conninfo(GetConfigOption("citus.node_conninfo", true, false), keys, values, n, 62);
	a.role = role;
	a.nodeid = node->nodeid;
	a.authinfo = NULL;
	a.caller = CurrentMemoryContext;
	RunAsOwner(auth_query, &a);
	n = add_conninfo(a.authinfo, keys, values, n, 62);
	keys[n] = NULL;
	values[n] = NULL;

	conn = PQconnectdbParams(keys, values, false);
	if (conn == NULL || PQstatus(conn) != CONNECTION_OK)
	{
		char	   *msg = pstrdup(conn ? PQerrorMessage(conn) : "out of memory");

		if (conn)
			PQfinish(conn);
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("pg_llm could not connect to Citus node %s", node->name),
				 errdetail("%s", msg),
				 errhint("pg_llm reaches the nodes as Citus does (pg_dist_node, pg_dist_authinfo, citus.node_conninfo), as role \"%s\".",
						 role)));
	}
	return conn;
}

/*
 * Wait for a statement's last result, interruptibly: a cancel or a
 * timeout cancels the remote statement, closes the connection (*conn
 * becomes NULL) and raises the usual error.
 */
static PGresult *
wait_result(PGconn **conn)
{
	PGresult   *last = NULL;

	for (;;)
	{
		PGresult   *r;

		while (PQisBusy(*conn))
		{
			int			rc;

			if (INTERRUPTS_PENDING_CONDITION())
			{
				PGcancel   *c = PQgetCancel(*conn);
				char		buf[256];

				if (c)
				{
					(void) PQcancel(c, buf, sizeof(buf));
					PQfreeCancel(c);
				}
				if (last)
					PQclear(last);
				PQfinish(*conn);
				*conn = NULL;
				CHECK_FOR_INTERRUPTS();
				ereport(ERROR,
						(errcode(ERRCODE_QUERY_CANCELED),
						 errmsg("canceling the statement on a Citus node")));
			}
			rc = WaitLatchOrSocket(MyLatch, WL_LATCH_SET | WL_SOCKET_READABLE | WL_EXIT_ON_PM_DEATH,
								   PQsocket(*conn), -1, PG_WAIT_EXTENSION);
			if (rc & WL_LATCH_SET)
				ResetLatch(MyLatch);
			if ((rc & WL_SOCKET_READABLE) && !PQconsumeInput(*conn))
				break;
		}
		r = PQgetResult(*conn);
		if (r == NULL)
			break;
		if (last)
			PQclear(last);
		last = r;
		if (PQstatus(*conn) == CONNECTION_BAD)
			break;
	}
	return last;
}

/*
 * Run a statement with text parameters on a node's connection.  Returns
 * its result (PQclear it), or raises the remote error as it was raised
 * there (SQLSTATE, message, detail, hint), with the node named in the
 * context.  A broken connection is closed (*conn NULL).
 */
PGresult *
CitusExec(PGconn **conn, const char *node, const char *sql, int nparams, const char *const *params)
{
	PGresult   *r;
	char	   *msg;

	if (!PQsendQueryParams(*conn, sql, nparams, NULL, params, NULL, NULL, 0))
	{
		msg = pstrdup(PQerrorMessage(*conn));
		PQfinish(*conn);
		*conn = NULL;
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("lost the connection to Citus node %s", node),
				 errdetail("%s", msg)));
	}
	r = wait_result(conn);
	if (r == NULL || PQresultStatus(r) == PGRES_FATAL_ERROR || PQstatus(*conn) == CONNECTION_BAD)
	{
		const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
		char	   *primary = r && PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) ?
			pstrdup(PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY)) : pstrdup(PQerrorMessage(*conn));
		char	   *detail = r && PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL) ?
			pstrdup(PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL)) : NULL;
		char	   *hint = r && PQresultErrorField(r, PG_DIAG_MESSAGE_HINT) ?
			pstrdup(PQresultErrorField(r, PG_DIAG_MESSAGE_HINT)) : NULL;
		int			code = state && strlen(state) == 5 ?
			MAKE_SQLSTATE(state[0], state[1], state[2], state[3], state[4]) : ERRCODE_CONNECTION_FAILURE;

		if (r)
			PQclear(r);
		if (PQstatus(*conn) == CONNECTION_BAD)
		{
			PQfinish(*conn);
			*conn = NULL;
		}
		ereport(ERROR,
				(errcode(code),
				 errmsg_internal("%s", primary),
				 detail ? errdetail_internal("%s", detail) : 0,
				 hint ? errhint("%s", hint) : 0,
				 errcontext("on Citus node %s", node)));
	}
	return r;
}

/* Run a statement whose result is not needed. */
void
CitusCommand(PGconn **conn, const char *node, const char *sql)
{
	PQclear(CitusExec(conn, node, sql, 0, NULL));
}

/* A result's value as text (palloc'd), or NULL. */
char *
CitusValue(PGresult *r, int row, int col)
{
	if (row >= PQntuples(r) || col >= PQnfields(r) || PQgetisnull(r, row, col))
		return NULL;
	return pstrdup(PQgetvalue(r, row, col));
}

void
CitusClear(PGresult *r)
{
	PQclear(r);
}

void
CitusFinish(PGconn *conn)
{
	if (conn)
		PQfinish(conn);
}
