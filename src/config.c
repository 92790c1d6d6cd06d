/*-------------------------------------------------------------------------
 *
 * config.c
 *	  Providers, models, the primary provider and the roles' budgets, read
 *	  from the llm schema and cached per backend.
 *
 *	  The tables (and the key table above all) are readable only by the
 *	  extension's owner, so the cache is loaded with the owner's user id,
 *	  under a pinned search_path (runas.c): the caller's search_path must
 *	  not be able to put its own functions or operators into these
 *	  queries, which run with the owner's rights.  Other files see the
 *	  tables' contents only through this module's functions (routes,
 *	  providers, budgets); keys reach only the HTTP headers and the
 *	  redaction of texts (ConfigSecrets).  A statement trigger on each
 *	  table sends a relcache invalidation at commit, which empties every
 *	  backend's cache: that is how llm.use_provider() reaches all sessions
 *	  and the worker at once.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "utils/guc.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "compat.h"
#include "citus.h"
#include "config.h"
#include "http.h"
#include "names.h"
#include "provider.h"
#include "runas.h"

bool		llm_pass_through = false;

/* the tables the cache is read from: config_load's tables[] */
#define CONFIG_NTABLES 5

/*
 * The cache.  config_ctx holds all of it and is reset by the next load
 * after an invalidation, not by the invalidation itself: what a caller got
 * stays valid until a call into this module loads again.  config_valid is
 * false until a load succeeds, and again after a change to one of the
 * tables (config_inval_cb).
 */
static MemoryContext config_ctx = NULL;
static bool config_valid = false;
static List *config_providers = NIL;	/* LlmProvider *, by priority, name */
static List *config_models = NIL;	/* LlmRoute * templates, by name, priority */
static char *config_primary = NULL;	/* llm._setting's primary_provider */
static List *config_budgets = NIL;	/* ConfigBudgetRow * */
static Oid	config_relids[CONFIG_NTABLES];	/* the tables', at the last load */

static void config_load(void);

/* A row of llm.budget; -1: no limit of that kind. */
typedef struct ConfigBudgetRow
{
	Oid			roleid;
	double		usd;			/* USD a month */
	int64		calls;			/* calls a month */
	int64		max_queued;		/* items in the queue at once */
} ConfigBudgetRow;

/*
 * Any change to one of our tables (or a full reset) empties the cache.
 * relid InvalidOid: the whole relcache was reset (the backend missed
 * invalidations), so anything may have changed.  This runs wherever
 * invalidations are processed, a load in progress included: it only
 * marks the cache, and frees nothing.
 */
static void
config_inval_cb(Datum arg, Oid relid)
{
	int			i;

	if (relid == InvalidOid)
	{
		config_valid = false;
		return;
	}
	for (i = 0; i < CONFIG_NTABLES; i++)
		if (config_relids[i] == relid)
			config_valid = false;
}

/*
 * Called from _PG_init, once per process: a relcache callback cannot be
 * unregistered, and a process has room for only a few.
 */
void
ConfigRegisterInvalidation(void)
{
	CacheRegisterRelcacheCallback(config_inval_cb, (Datum) 0);
}

PG_FUNCTION_INFO_V1(pg_llm_config_changed);

/*
 * Statement trigger on the configuration tables: queue a relcache
 * invalidation of the table, delivered to every backend at commit (and to
 * this one at the end of the command).
 */
Datum
pg_llm_config_changed(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("llm._config_changed() must be called as a trigger")));
	/* FOR EACH STATEMENT: one invalidation however many rows changed */
	CacheInvalidateRelcacheByRelid(RelationGetRelid(td->tg_relation));
	/* a Citus coordinator sends the change to its worker nodes at commit */
	CitusConfigChanged();
	return PointerGetDatum(NULL);
}

/* Column i of the current SPI row as a string in config_ctx, or NULL. */
static char *
col_str(HeapTuple tup, TupleDesc td, int i)
{
	char	   *v = SPI_getvalue(tup, td, i);

	return v ? MemoryContextStrdup(config_ctx, v) : NULL;
}

/* An integer column (int4, cast in the query), -1 when NULL. */
static int
col_int(HeapTuple tup, TupleDesc td, int i)
{
	char	   *v = SPI_getvalue(tup, td, i);

	return v ? atoi(v) : -1;
}

/*
 * Refuse to work against an install script of another version than the
 * library's: the queries below, and the worker's, need its tables.
 */
static void
config_check_version(void)
{
	int			rc;
	char	   *v;

	rc = SPI_execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_llm'",
					 true, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		return;					/* the schema without the extension: a test setup */
	v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (v && strcmp(v, PG_LLM_VERSION) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_llm %s is installed in this database, but the server has loaded pg_llm %s",
						v, PG_LLM_VERSION),
				 errhint("Run ALTER EXTENSION pg_llm UPDATE in this database.")));
}

/*
 * The transport options of the providers just loaded: proxy (its
 * credentials kept with the key), no_proxy, ca_file, client_cert,
 * client_key (kept with the key), http_version.
 */
static void
config_load_transport(void)
{
	uint64		i;
	int			rc;
	TupleDesc	td;

	/*
	 * The proxy and the client key are in the secret table, beside the key:
	 * a proxy's URL may carry credentials.  Matched to the providers loaded
	 * by name.
	 */
	rc = SPI_execute("SELECT p.name, s.transport->>'proxy', p.options->>'no_proxy', "
					 "p.options->>'ca_file', p.options->>'client_cert', "
					 "s.transport->>'client_key', p.options->>'http_version' "
					 "FROM llm.provider p LEFT JOIN llm._provider_secret s ON s.provider = p.name",
					 true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read llm.provider: %s", SPI_result_code_string(rc));
	td = SPI_tuptable->tupdesc;
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		char	   *name = SPI_getvalue(tup, td, 1);
		ListCell   *lc;

		foreach(lc, config_providers)
		{
			LlmProvider *p = lfirst(lc);
			char	   *hv;

			if (strcmp(p->name, name) != 0)
				continue;
			p->transport.proxy = col_str(tup, td, 2);
			p->transport.no_proxy = col_str(tup, td, 3);
			p->transport.ca_file = col_str(tup, td, 4);
			p->transport.client_cert = col_str(tup, td, 5);
			p->transport.client_key = col_str(tup, td, 6);
			/* absent: libcurl's default; "1.1": HTTP/1.1 only; else HTTP/2 */
			hv = SPI_getvalue(tup, td, 7);
			p->transport.http_version = hv == NULL ? 0 : strcmp(hv, "1.1") == 0 ? 11 : 2;
		}
	}
}

/*
 * The provider options an LlmProvider holds, by name: how each is read
 * from llm.provider.options (an integer, -1 when absent; a text, NULL
 * when absent; a boolean), its default, and its field.  A new option is a
 * line here, its field, and its check in the install script's
 * llm._check_provider_options.
 */
typedef struct ProviderOption
{
	const char *name;
	char		kind;			/* 'i' int4, 's' text, 'b' boolean */
	const char *dflt;			/* SQL literal when absent, or NULL */
	size_t		offset;			/* of its field in LlmProvider */
} ProviderOption;

static const ProviderOption provider_options[] = {
	/* overrides of the settings of the same name: absent (-1), the setting */
	{"connect_timeout_ms", 'i', NULL, offsetof(LlmProvider, connect_timeout_ms)},
	{"timeout_ms", 'i', NULL, offsetof(LlmProvider, timeout_ms)},
	{"low_speed_time", 'i', NULL, offsetof(LlmProvider, low_speed_time)},
	{"low_speed_limit", 'i', NULL, offsetof(LlmProvider, low_speed_limit)},
	{"stream_idle_timeout", 'i', NULL, offsetof(LlmProvider, stream_idle_timeout)},
	{"max_retries", 'i', NULL, offsetof(LlmProvider, max_retries)},
	{"default_max_tokens", 'i', NULL, offsetof(LlmProvider, default_max_tokens)},
	{"max_tokens_param", 's', NULL, offsetof(LlmProvider, max_tokens_param)},
	{"anthropic_version", 's', "'2023-06-01'", offsetof(LlmProvider, anthropic_version)},
	{"stream_usage", 'b', "true", offsetof(LlmProvider, stream_usage)},
	{"rpm_limit", 'i', NULL, offsetof(LlmProvider, rpm_limit)},
	{"tpm_limit", 'i', NULL, offsetof(LlmProvider, tpm_limit)},
	{"quota_cooldown", 'i', NULL, offsetof(LlmProvider, quota_cooldown)},
	{"batch_api", 's', NULL, offsetof(LlmProvider, batch_api)},
	{"batch_timeout_ms", 'i', NULL, offsetof(LlmProvider, batch_timeout_ms)},
	{"batch_url", 's', "'/v1/chat/completions'", offsetof(LlmProvider, batch_url)},
	{"pass_through", 'b', "false", offsetof(LlmProvider, pass_through)},
	{"structured_output", 's', NULL, offsetof(LlmProvider, structured_output)},
};

/*
 * The query of the providers: each column by the name it is read by, each
 * option of provider_options under its own name.  Built once per process
 * (the options are this file's constants) and kept in TopMemoryContext.
 * The names and defaults put into its text are those constants, never
 * input.  headers: the secret headers as "Name: value" texts, as curl
 * takes them; ConfigSecrets finds each value after the ": ".
 */
static const char *
provider_query(void)
{
	static char *query = NULL;
	StringInfoData q;
	int			i;

	if (query)
		return query;
	initStringInfo(&q);
	appendStringInfoString(&q, "SELECT p.name, p.protocol, p.base_url, p.enabled, p.priority, "
						   "p.api_key_env, s.api_key, "
						   "ARRAY(SELECT h.key || ': ' || h.value "
						   "      FROM pg_catalog.jsonb_each_text(s.headers) AS h ORDER BY h.key) AS headers");
	for (i = 0; i < lengthof(provider_options); i++)
	{
		const ProviderOption *o = &provider_options[i];
		const char *type = o->kind == 'i' ? "::int4" : o->kind == 'b' ? "::pg_catalog.bool" : "";

		if (o->dflt)
			appendStringInfo(&q, ", COALESCE((p.options->>'%s')%s, %s) AS %s", o->name, type, o->dflt, o->name);
		else
			appendStringInfo(&q, ", (p.options->>'%s')%s AS %s", o->name, type, o->name);
	}
	appendStringInfoString(&q, " FROM llm.provider p LEFT JOIN llm._provider_secret s ON s.provider = p.name "
						   "ORDER BY p.priority, p.name");
	query = MemoryContextStrdup(TopMemoryContext, q.data);
	pfree(q.data);
	return query;
}

/* An option of a provider's row into its field. */
static void
read_option(LlmProvider *p, const ProviderOption *o, HeapTuple tup, TupleDesc td)
{
	int			col = SPI_fnumber(td, o->name);
	char	   *field = (char *) p + o->offset;

	switch (o->kind)
	{
		case 'i':
			*(int *) field = col_int(tup, td, col);
			break;
		case 'b':
			/* never NULL: a boolean option has a default */
			*(bool *) field = strcmp(SPI_getvalue(tup, td, col), "t") == 0;
			break;
		default:
			*(char **) field = col_str(tup, td, col);
			break;
	}
}

/*
 * Load providers, models, the primary and the budgets (as the owner, see
 * config_load).  Every query is read-only, so all of them read the
 * caller's snapshot: the routes match the providers read.  A failed
 * option cast (a value llm._check_provider_options would refuse) fails
 * the load.
 */
static void
config_load_rows(void *arg)
{
	uint64		i;
	int			rc;
	TupleDesc	td;

	config_check_version();
	rc = SPI_execute(provider_query(), true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read llm.provider: %s", SPI_result_code_string(rc));
	td = SPI_tuptable->tupdesc;
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		MemoryContext old = MemoryContextSwitchTo(config_ctx);
		LlmProvider *p = palloc0(sizeof(LlmProvider));
		bool		isnull;
		Datum		hdrs = SPI_getbinval(tup, td, SPI_fnumber(td, "headers"), &isnull);
		Datum	   *elems;
		int			nelems;
		int			j;

		p->name = col_str(tup, td, SPI_fnumber(td, "name"));
		p->ops = ProviderLookup(SPI_getvalue(tup, td, SPI_fnumber(td, "protocol")));
		if (p->ops == NULL)
			elog(ERROR, "provider \"%s\" has an unknown protocol", p->name);
		p->base_url = col_str(tup, td, SPI_fnumber(td, "base_url"));
		p->enabled = strcmp(SPI_getvalue(tup, td, SPI_fnumber(td, "enabled")), "t") == 0;
		p->priority = atoi(SPI_getvalue(tup, td, SPI_fnumber(td, "priority")));
		p->api_key_env = col_str(tup, td, SPI_fnumber(td, "api_key_env"));
		p->api_key = col_str(tup, td, SPI_fnumber(td, "api_key"));
		for (j = 0; j < lengthof(provider_options); j++)
			read_option(p, &provider_options[j], tup, td);
		/* absent (-1) and 0 both mean no limit to ratelimit.c */
		p->rpm_limit = Max(p->rpm_limit, 0);
		p->tpm_limit = Max(p->tpm_limit, 0);
		/* the batch API it names, or its protocol's default (NULL: none) */
		p->batch = (p->batch_api && strcmp(p->batch_api, "none") == 0) ? NULL :
			ProviderBatchKind(p->ops, p->batch_api);
		if (p->batch_api == NULL)
			p->batch_api = MemoryContextStrdup(config_ctx, p->batch ? p->batch->name : "none");
		if (!isnull)
		{
			deconstruct_array(DatumGetArrayTypeP(hdrs), TEXTOID, -1, false, TYPALIGN_INT,
							  &elems, NULL, &nelems);
			for (j = 0; j < nelems; j++)
				p->headers = lappend(p->headers, TextDatumGetCString(elems[j]));
		}
		config_providers = lappend(config_providers, p);
		MemoryContextSwitchTo(old);
	}

	config_load_transport();

	/*
	 * The routes, by name then priority: the order ConfigRoutes keeps (and
	 * unknown_model relies on).  Prices are USD per million tokens; the
	 * factors multiply them.
	 */
	rc = SPI_execute("SELECT name, provider, upstream_model, "
					 "input_usd_per_mtok::pg_catalog.float8, output_usd_per_mtok::pg_catalog.float8, "
					 "batch_price_factor::pg_catalog.float8, cached_input_usd_per_mtok::pg_catalog.float8, "
					 "priority_price_factor::pg_catalog.float8 "
					 "FROM llm.model ORDER BY name, priority, provider", true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read llm.model: %s", SPI_result_code_string(rc));
	td = SPI_tuptable->tupdesc;
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		LlmRoute   *r = MemoryContextAllocZero(config_ctx, sizeof(LlmRoute));
		char	   *pname = SPI_getvalue(tup, td, 2);
		char	   *in = SPI_getvalue(tup, td, 4);
		char	   *out = SPI_getvalue(tup, td, 5);
		char	   *cached = SPI_getvalue(tup, td, 7);
		ListCell   *lc;

		r->model = col_str(tup, td, 1);
		r->upstream_model = col_str(tup, td, 3);
		foreach(lc, config_providers)
			if (strcmp(((LlmProvider *) lfirst(lc))->name, pname) == 0)
				r->provider = lfirst(lc);
		/* output needs both prices; input alone (embeddings), the first */
		r->has_price = (in != NULL && out != NULL);
		r->has_input_price = (in != NULL);
		r->input_usd_per_mtok = in ? atof(in) : 0;
		r->output_usd_per_mtok = out ? atof(out) : 0;
		r->batch_price_factor = atof(SPI_getvalue(tup, td, 6));
		/* -1: no price of its own, the input price applies */
		r->cached_input_usd_per_mtok = cached ? atof(cached) : -1;
		r->priority_price_factor = atof(SPI_getvalue(tup, td, 8));
		/* llm.model's foreign key leaves none without its provider */
		if (r->provider)
		{
			MemoryContext old = MemoryContextSwitchTo(config_ctx);

			config_models = lappend(config_models, r);
			MemoryContextSwitchTo(old);
		}
	}

	/* no row: none named, and primary_provider() takes the first enabled */
	rc = SPI_execute("SELECT value FROM llm._setting WHERE key = 'primary_provider'", true, 0);
	if (rc == SPI_OK_SELECT && SPI_processed == 1)
		config_primary = col_str(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

	rc = SPI_execute("SELECT role_oid, usd_per_month::pg_catalog.float8, calls_per_month, max_queued "
					 "FROM llm.budget", true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read llm.budget: %s", SPI_result_code_string(rc));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	btd = SPI_tuptable->tupdesc;
		ConfigBudgetRow *b = MemoryContextAllocZero(config_ctx, sizeof(ConfigBudgetRow));
		char	   *usd = SPI_getvalue(tup, btd, 2);
		char	   *calls = SPI_getvalue(tup, btd, 3);
		char	   *queued = SPI_getvalue(tup, btd, 4);
		MemoryContext old;

		b->roleid = atooid(SPI_getvalue(tup, btd, 1));
		b->usd = usd ? atof(usd) : -1;
		b->calls = calls ? strtoll(calls, NULL, 10) : -1;
		b->max_queued = queued ? strtoll(queued, NULL, 10) : -1;
		old = MemoryContextSwitchTo(config_ctx);
		config_budgets = lappend(config_budgets, b);
		MemoryContextSwitchTo(old);
	}
}

/*
 * The monthly budget of a role and its cap on queued items (-1: no limit
 * of that kind); false when the role has none.
 */
bool
ConfigBudget(Oid roleid, double *usd_per_month, int64 *calls_per_month,
			 int64 *max_queued)
{
	ListCell   *lc;

	config_load();
	foreach(lc, config_budgets)
	{
		ConfigBudgetRow *b = lfirst(lc);

		if (b->roleid == roleid)
		{
			*usd_per_month = b->usd;
			*calls_per_month = b->calls;
			*max_queued = b->max_queued;
			return true;
		}
	}
	return false;
}

/* Fill the cache if an invalidation emptied it. */
static void
config_load(void)
{
	Oid			nsp;
	static const char *const tables[CONFIG_NTABLES] = {"provider", "_provider_secret", "model", "_setting", "budget"};
	int			i;

	if (config_valid)
		return;

	nsp = get_namespace_oid("llm", true);
	if (!OidIsValid(nsp))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("schema \"llm\" does not exist"),
				 errhint("Run CREATE EXTENSION pg_llm in this database.")));
	/*
	 * Looked up at every load, not once: the extension may have been
	 * dropped and created again, its tables with new OIDs.
	 */
	for (i = 0; i < CONFIG_NTABLES; i++)
		config_relids[i] = get_relname_relid(tables[i], nsp);

	/* the previous load's memory goes: routes were handed out as copies */
	if (config_ctx == NULL)
		config_ctx = AllocSetContextCreate(CacheMemoryContext, "pg_llm config",
										   ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(config_ctx);
	config_providers = NIL;
	config_models = NIL;
	config_primary = NULL;
	config_budgets = NIL;

	/* mark valid first: an invalidation during the load marks it stale again */
	config_valid = true;
	PG_TRY();
	{
		RunAsOwner(config_load_rows, NULL);
	}
	PG_CATCH();
	{
		/* a half-loaded cache is never used: the next call loads again */
		config_valid = false;
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/* Every provider (enabled or not), in priority order, as cached. */
List *
ConfigProviders(void)
{
	config_load();
	return config_providers;
}

/*
 * A deep copy of a route in the current memory context, its provider
 * included: a caller's chain must outlive the next load, which resets
 * config_ctx.  Without src, the route of a name passed through: no price,
 * and the batch and priority factors of llm.model's column defaults.
 */
static LlmRoute *
route_copy(const LlmRoute *src, const LlmProvider *p, const char *model, const char *upstream)
{
	LlmRoute   *r = palloc(sizeof(LlmRoute));
	LlmProvider *pc = palloc(sizeof(LlmProvider));
	ListCell   *lc;

	*pc = *p;
	pc->name = pstrdup(p->name);
	pc->base_url = pstrdup(p->base_url);
	pc->api_key = p->api_key ? pstrdup(p->api_key) : NULL;
	pc->api_key_env = p->api_key_env ? pstrdup(p->api_key_env) : NULL;
	pc->max_tokens_param = p->max_tokens_param ? pstrdup(p->max_tokens_param) : NULL;
	pc->anthropic_version = pstrdup(p->anthropic_version);
	pc->batch_api = pstrdup(p->batch_api);
	pc->batch_url = pstrdup(p->batch_url);
	pc->structured_output = p->structured_output ? pstrdup(p->structured_output) : NULL;
	pc->transport.proxy = p->transport.proxy ? pstrdup(p->transport.proxy) : NULL;
	pc->transport.no_proxy = p->transport.no_proxy ? pstrdup(p->transport.no_proxy) : NULL;
	pc->transport.ca_file = p->transport.ca_file ? pstrdup(p->transport.ca_file) : NULL;
	pc->transport.client_cert = p->transport.client_cert ? pstrdup(p->transport.client_cert) : NULL;
	pc->transport.client_key = p->transport.client_key ? pstrdup(p->transport.client_key) : NULL;
	pc->headers = NIL;
	foreach(lc, p->headers)
		pc->headers = lappend(pc->headers, pstrdup(lfirst(lc)));
	if (src)
		*r = *src;
	else
	{
		memset(r, 0, sizeof(LlmRoute));
		r->batch_price_factor = 0.5;
		r->cached_input_usd_per_mtok = -1;
		r->priority_price_factor = 2;
	}
	r->provider = pc;
	r->model = pstrdup(model);
	r->upstream_model = pstrdup(upstream);
	return r;
}

/*
 * The primary provider: the one llm._setting names, when it is enabled,
 * else the first enabled provider by priority; NULL when none is enabled.
 * Its routes come first in every chain, and it takes the names without a
 * route that llm.pass_through lets through.
 */
static LlmProvider *
primary_provider(void)
{
	ListCell   *lc;

	if (config_primary)
		foreach(lc, config_providers)
		{
			LlmProvider *p = lfirst(lc);

			if (p->enabled && strcmp(p->name, config_primary) == 0)
				return p;
		}
	foreach(lc, config_providers)
	{
		LlmProvider *p = lfirst(lc);

		if (p->enabled)
			return p;
	}
	return NULL;
}

/*
 * The provider that takes names with no route: an enabled provider with
 * the option pass_through (the primary if it has it, else the first by
 * priority); else, with llm.pass_through on, the primary.  NULL: none.
 */
static LlmProvider *
pass_through_provider(LlmProvider *primary)
{
	ListCell   *lc;

	if (primary && primary->pass_through)
		return primary;
	foreach(lc, config_providers)
	{
		LlmProvider *p = lfirst(lc);

		if (p->enabled && p->pass_through)
			return p;
	}
	/*
	 * The worker sends what was checked when it was enqueued (under the
	 * enqueuing session's settings), so it passes names through too.
	 */
	if (llm_pass_through || LlmAmBackgroundWorker())
		return primary;
	return NULL;
}

/*
 * Raise the error of a model name with no route and no pass-through: the
 * hint names the aliases it is likely a typo of (case included), or the
 * provider its name starts with, and how to route it.
 */
static void
unknown_model(const char *model)
{
	const char **names = palloc(sizeof(char *) * (list_length(config_models) + 1));
	int			n = 0;
	ListCell   *lc;
	char	   *near;
	StringInfoData hint;
	const LlmProvider *named = NULL;

	foreach(lc, config_models)
	{
		LlmRoute   *r = lfirst(lc);

		/* config_models is sorted by name: one entry a name */
		if (n == 0 || strcmp(names[n - 1], r->model) != 0)
			names[n++] = r->model;
	}
	near = NamesSuggest(model, names, n);
	/*
	 * A name that starts with a provider's ("openai/gpt-x"): the longest
	 * such provider.  Names shorter than 3 bytes would match by chance.
	 */
	foreach(lc, config_providers)
	{
		LlmProvider *p = lfirst(lc);

		if (strlen(p->name) >= 3 && pg_strncasecmp(model, p->name, strlen(p->name)) == 0 &&
			(named == NULL || strlen(p->name) > strlen(named->name)))
			named = p;
	}
	initStringInfo(&hint);
	if (near)
	{
		bool		case_only = false;
		int			i;

		for (i = 0; i < n; i++)
			if (pg_strcasecmp(model, names[i]) == 0)
				case_only = true;
		appendStringInfo(&hint, "Did you mean %s?%s ", near,
						 case_only ? " Model names are case-sensitive." : "");
	}
	appendStringInfo(&hint, "An administrator can route it with llm.add_model(%s, %s)",
					 quote_literal_cstr(model),
					 named ? quote_literal_cstr(named->name) : "provider");
	appendStringInfoString(&hint, "; SET llm.pass_through = on sends names without a route unchanged to the primary provider.");
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("model \"%s\" does not exist", model),
			 errdetail("No row of llm.model has that name, and pass-through is off: pg_llm sends no request it cannot route and price."),
			 errhint("%s", hint.data)));
}

/*
 * The fallback chain for a model name, copied into the caller's memory
 * context: the rows of llm.model with that name whose provider is
 * enabled, those of the primary provider first, then by priority.  A name
 * with no row is an error naming the nearest ones, unless a provider
 * takes such names (its option pass_through) or llm.pass_through is on:
 * then it goes unchanged to that provider, or the primary.
 */
List *
ConfigRoutes(const char *model)
{
	List	   *routes = NIL;
	List	   *later = NIL;
	ListCell   *lc;
	bool		any_row = false;
	LlmProvider *primary;

	/* a call that Citus pushed down to a worker node that cannot make it */
	CitusGuard(CITUS_USE_CALL, NULL);
	config_load();
	primary = primary_provider();

	foreach(lc, config_models)
	{
		LlmRoute   *r = lfirst(lc);

		if (strcmp(r->model, model) != 0)
			continue;
		any_row = true;
		if (!r->provider->enabled)
			continue;
		if (primary && r->provider == primary)
			routes = lappend(routes, route_copy(r, r->provider, r->model, r->upstream_model));
		else
			later = lappend(later, route_copy(r, r->provider, r->model, r->upstream_model));
	}
	routes = list_concat(routes, later);

	/* the name exists, every provider of it disabled: not an unknown name */
	if (routes == NIL && any_row)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("model \"%s\" has no enabled provider", model),
				 errhint("Enable one of its providers with llm.alter_provider(name, enabled => true).")));
	if (routes == NIL)
	{
		LlmProvider *taker;

		if (primary == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("no enabled provider is configured"),
					 errhint("An administrator can add one with llm.create_provider().")));
		taker = pass_through_provider(primary);
		if (taker == NULL)
			unknown_model(model);
		routes = list_make1(route_copy(NULL, taker, model, model));
	}
	return routes;
}

/*
 * The key to send to a provider: the stored value, else the server
 * environment variable it names, else none.  The variable's name may be
 * shown in errors; its value never is.
 */
const char *
ConfigProviderKey(const LlmProvider *p)
{
	const char *v;

	if (p->api_key)
		return p->api_key;
	if (p->api_key_env == NULL)
		return NULL;
	v = getenv(p->api_key_env);

	/*
	 * Checked before the error that names the variable: a key pasted as
	 * api_key_env would be shown there.
	 */
	if ((v == NULL || v[0] == '\0') && ConfigLooksLikeKey(p->api_key_env))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the api_key_env of provider \"%s\" looks like a key, not the name of an environment variable", p->name),
				 errdetail("It is not shown."),
				 errhint("Give the key with llm.alter_provider('%s', api_key => '...'), or put it in an environment variable of the server and give that variable's name as api_key_env.", p->name)));
	if (v == NULL || v[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("environment variable \"%s\" for the key of provider \"%s\" is not set",
						p->api_key_env, p->name),
				 errhint("Set it in the environment of the PostgreSQL server and restart it, or store a key with llm.alter_provider(name, api_key => ...).")));
	return v;
}

/*
 * Does a text given as the name of an environment variable look like a
 * key pasted there by mistake?  A known key prefix (sk-, sk_, xai-, gsk_,
 * AKIA, AIza, ...), or a run of 20 letters and digits with a digit in it
 * (a variable's name is words joined by "_"), or 20 characters or more
 * with some a name never has (base64's "/", "+", "=").  Such a text is
 * never shown: it is refused, or named "a key", without its value.
 */
bool
ConfigLooksLikeKey(const char *s)
{
	static const char *const prefixes[] = {
		"sk-", "sk_", "pk_", "rk_", "gsk_", "xai-", "ghp_", "gho_", "github_pat_", "hf_",
		"r8_", "AKIA", "ASIA", "AIza", "nvapi-", "pplx-", "csk-", "bearer ", "key-"
	};
	size_t		len = strlen(s);
	int			i;
	int			run = 0;			/* letters and digits in a row, so far */
	bool		run_digit = false;	/* and whether a digit is among them */
	bool		odd = false;		/* a character a name never has was seen */

	/* a prefix with more than 8 characters after it */
	for (i = 0; i < lengthof(prefixes); i++)
		if (pg_strncasecmp(s, prefixes[i], strlen(prefixes[i])) == 0 && len > strlen(prefixes[i]) + 8)
			return true;
	for (i = 0; i < (int) len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		bool		digit = (c >= '0' && c <= '9');

		if (digit || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
		{
			if (run == 0)
				run_digit = false;
			run++;
			run_digit |= digit;
			if (run >= 20 && run_digit)
				return true;
		}
		else
		{
			run = 0;
			if (c != '_')
				odd = true;
		}
	}
	return odd && len >= 20;
}

PG_FUNCTION_INFO_V1(pg_llm_check_key_env);

/*
 * llm._check_key_env(name): refuse an api_key_env that looks like a key,
 * without showing it, and without the statement that carried it in the
 * server log (an error logs its statement: log_min_error_statement).
 */
Datum
pg_llm_check_key_env(PG_FUNCTION_ARGS)
{
	char	   *name;

	if (PG_ARGISNULL(0))
		PG_RETURN_VOID();
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (ConfigLooksLikeKey(name))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("api_key_env must be the name of an environment variable, not a key"),
				 errdetail("The value given looks like a key: it is not shown, and the statement is not written to the server log."),
				 errhint("Give the key itself as api_key => '...' (stored where only the extension's owner can read it), or put it in an environment variable of the server and give that variable's name."),
				 errhidestmt(true)));
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(pg_llm_key_env_set);

/*
 * llm._key_env_set(name): is the server environment variable that a
 * provider's api_key_env names set (to something)?  Its value is never
 * returned.
 */
Datum
pg_llm_key_env_set(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	const char *v = getenv(name);

	PG_RETURN_BOOL(v != NULL && v[0] != '\0');
}

/* Replace every occurrence of a secret (of 4 bytes or more) in a text. */
char *
ConfigRedactOne(const char *text, const char *secret)
{
	StringInfoData buf;
	const char *s;
	const char *hit;
	size_t		klen;

	if (secret == NULL || (klen = strlen(secret)) < 4 || strstr(text, secret) == NULL)
		return pstrdup(text);
	initStringInfo(&buf);
	s = text;
	while ((hit = strstr(s, secret)) != NULL)
	{
		appendBinaryStringInfo(&buf, s, hit - s);
		appendStringInfoString(&buf, "[redacted]");
		s = hit + klen;
	}
	appendStringInfoString(&buf, s);
	return buf.data;
}

/*
 * The secrets of a provider that no text may show: its key, and the
 * values of its secret headers (every secret a provider gains belongs
 * here: ConfigRedactSecret and RedactProviderText read this list).  Only
 * those of 4 bytes or more are listed.
 */
List *
ConfigSecrets(const LlmProvider *p)
{
	List	   *out = NIL;
	/* the key in use, found as ConfigProviderKey finds it */
	const char *key = p->api_key ? p->api_key :
		(p->api_key_env ? getenv(p->api_key_env) : NULL);
	ListCell   *lc;

	if (key && strlen(key) >= 4)
		out = lappend(out, (void *) key);
	foreach(lc, p->headers)
	{
		/* "Name: value" (provider_query): the value after ": " */
		const char *h = lfirst(lc);
		const char *colon = strchr(h, ':');

		if (colon && strlen(colon + 2) >= 4)
			out = lappend(out, (void *) (colon + 2));
	}
	/* the credentials of a proxy (user:password, and each), a client key given as text */
	if (p->transport.proxy)
	{
		const char *at = strrchr(p->transport.proxy, '@');
		const char *start = strstr(p->transport.proxy, "://");

		start = start ? start + 3 : p->transport.proxy;
		if (at && at > start)
		{
			char	   *userinfo = pnstrdup(start, at - start);
			char	   *colon = strchr(userinfo, ':');

			out = lappend(out, userinfo);
			if (colon)
			{
				out = lappend(out, pstrdup(colon + 1));
				out = lappend(out, pnstrdup(userinfo, colon - userinfo));
			}
		}
	}
	if (p->transport.client_key)
		out = lappend(out, (void *) p->transport.client_key);
	/* only those long enough to be found and not mistaken */
	{
		List	   *kept = NIL;
		ListCell   *lc2;

		foreach(lc2, out)
			if (strlen((char *) lfirst(lc2)) >= 4)
				kept = lappend(kept, lfirst(lc2));
		return kept;
	}
}

/*
 * Replace every occurrence of the provider's secrets (ConfigSecrets: its
 * key, the values of its secret headers, its proxy's credentials, a client
 * key given as text) in a text.
 */
char *
ConfigRedactSecret(const char *text, const LlmProvider *p)
{
	char	   *out;
	ListCell   *lc;

	if (text == NULL)
		return NULL;
	out = pstrdup(text);
	foreach(lc, ConfigSecrets(p))
		out = ConfigRedactOne(out, lfirst(lc));
	return out;
}

PG_FUNCTION_INFO_V1(pg_llm_provider_transport);

/*
 * llm._provider_transport(): per provider, the proxy its requests go
 * through now, credentials removed (NULL: direct), and where that proxy
 * was configured: its proxy option, or a variable of the server's
 * environment (as this backend sees it, and so every process of the
 * server).  For llm.provider_status.
 */
Datum
pg_llm_provider_transport(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ListCell   *lc;

	InitMaterializedSRF(fcinfo, 0);
	foreach(lc, ConfigProviders())
	{
		LlmProvider *p = lfirst(lc);
		const char *source;
		const char *proxy = HttpProxyFor(&p->transport, p->base_url, &source);
		Datum		values[3];
		bool		nulls[3] = {false, true, true};

		values[0] = CStringGetTextDatum(p->name);
		if (proxy)
		{
			values[1] = CStringGetTextDatum(HttpUrlWithoutCredentials(proxy));
			values[2] = CStringGetTextDatum(strcmp(source, "option") == 0 ? "option" :
											psprintf("environment (%s)", source));
			nulls[1] = nulls[2] = false;
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* The setting of model names without a route. */
void
ConfigDefineSettings(void)
{
	DefineCustomBoolVariable("llm.pass_through",
							 "Send model names that have no row in llm.model unchanged to the primary provider.",
							 "Off: such a name is an error naming the nearest aliases, and nothing is sent.",
							 &llm_pass_through, false,
							 PGC_USERSET, 0, NULL, NULL, NULL);
}
