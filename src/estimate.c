/*-------------------------------------------------------------------------
 *
 * estimate.c
 *	  llm.estimate(prompts, model, system, options): what sending the
 *	  prompts would use and cost, before anything is sent, on every route
 *	  of the model (the first row its own route, then the rest of its
 *	  chain), at realtime and at batch prices, and whether the caller's
 *	  budget allows it.
 *
 *	  Input tokens come from the one estimate behind budgets and rate
 *	  limits (UsageInputTokens: tokens.c, without a tokenizer), or, on a
 *	  route whose provider has the option count_tokens and whose protocol
 *	  counts (Anthropic), from the provider's count for each request.
 *	  Output tokens are what a budget reserves on the route
 *	  (UsageOutputTokens): max_tokens times the choices asked for; without
 *	  max_tokens, the max_tokens pg_llm sends to an Anthropic route, or
 *	  256 a reply elsewhere.
 *	  A system prompt long enough for OpenAI's automatic prompt cache
 *	  (1,024 tokens) is priced at the route's cached-input price for every
 *	  request after the first.  A route without prices has no cost (NULL,
 *	  with a WARNING that says so), never 0.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "call.h"
#include "config.h"
#include "count.h"
#include "request.h"
#include "runas.h"
#include "tokens.h"
#include "usage.h"

PG_FUNCTION_INFO_V1(pg_llm_estimate);

/* The smallest prompt OpenAI's automatic prompt cache keeps. */
#define AUTO_CACHE_MIN_TOKENS 1024

/* What llm.estimate adds up for one route. */
typedef struct RouteSum
{
	const LlmRoute *route;
	bool		exact;			/* counted by the provider */
	int64		input;
	int64		cached;			/* of the input, read from a prompt cache */
	int64		output;
} RouteSum;

/* Does a provider have the option count_tokens (read as the owner)? */
typedef struct CountOption
{
	const char *provider;
	bool		on;
} CountOption;

static void
count_option_query(void *arg)
{
	CountOption *q = (CountOption *) arg;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(q->provider)};

	q->on = false;
	if (RunSql("SELECT COALESCE((options->>'count_tokens')::pg_catalog.bool, false) "
			   "FROM llm.provider WHERE name = $1",
			   1, types, values, NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		char	   *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		q->on = v && strcmp(v, "t") == 0;
	}
}

static bool
counts_tokens(const LlmRoute *route)
{
	CountOption q;

	if (!CountTokensSupported(route))
		return false;
	q.provider = route->provider->name;
	RunAsOwner(count_option_query, &q);
	return q.on;
}

/* An amount in USD as numeric, to 8 decimals (as llm.usage keeps it). */
static Datum
usd(double v)
{
	return DirectFunctionCall2(numeric_round,
							   DirectFunctionCall1(float8_numeric, Float8GetDatum(v)),
							   Int32GetDatum(8));
}

/*
 * llm.estimate(prompts text[], model text, system text, options jsonb)
 * returns table (provider, requests, input_tokens, output_tokens,
 * cost_usd, batch_cost_usd, within_budget).  NULL and empty prompts are
 * not counted: nothing would be sent for them.
 */
Datum
pg_llm_estimate(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *model = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *system = PG_ARGISNULL(2) ? NULL : LlmToUtf8(text_to_cstring(PG_GETARG_TEXT_PP(2)));
	char	   *options = LlmArgJsonb(fcinfo, 3);
	Datum	   *elems;
	bool	   *elem_nulls;
	int			n;
	int			i;
	List	   *routes;
	ListCell   *lc;
	RouteSum   *sums;
	int			nroutes;
	int64		requests = 0;
	int64		system_tokens = 0;
	bool		has_budget;
	double		usd_left = -1;
	int64		calls_left = -1;
	MemoryContext per_prompt;
	MemoryContext old;
	LlmRequest *req;

	n = LlmArgTextArray(fcinfo, 0, "prompts", "Pass an array of prompts, such as array(SELECT body FROM tickets).",
						&elems, &elem_nulls);

	/* a bad option or model fails before anything is counted */
	model = pstrdup(LlmResolveModel(model, NULL));
	req = RequestFromPrompt("x", system, options);
	routes = ConfigRoutes(model);
	nroutes = list_length(routes);
	sums = palloc0(sizeof(RouteSum) * Max(nroutes, 1));
	i = 0;
	foreach(lc, routes)
	{
		sums[i].route = lfirst(lc);
		sums[i].exact = counts_tokens(sums[i].route);
		i++;
	}
	if (system)
		system_tokens = TokensEstimate(system, strlen(system)) + TOKENS_PER_MESSAGE;

	per_prompt = AllocSetContextCreate(CurrentMemoryContext, "pg_llm estimate",
									   ALLOCSET_DEFAULT_SIZES);
	for (i = 0; i < n; i++)
	{
		LlmCall		call;
		char	   *prompt;
		int			r;

		CHECK_FOR_INTERRUPTS();
		if (elem_nulls[i])
			continue;
		old = MemoryContextSwitchTo(per_prompt);
		prompt = LlmToUtf8(TextDatumGetCString(elems[i]));
		if (LlmBlank(prompt, strlen(prompt)))
		{
			MemoryContextSwitchTo(old);
			MemoryContextReset(per_prompt);
			continue;
		}
		memset(&call, 0, sizeof(call));
		call.task = LLM_TASK_CHAT;
		call.req = RequestFromPrompt(prompt, system, options);
		call.max_tokens = RequestMaxTokens(call.req);
		call.choices = RequestChoices(call.req);
		call.estimated_input_tokens = UsageInputTokens(&call, 0);
		requests++;
		for (r = 0; r < nroutes; r++)
		{
			sums[r].input += sums[r].exact ?
				CountTokensExact(call.req, sums[r].route) : call.estimated_input_tokens;
			sums[r].output += UsageOutputTokens(&call, sums[r].route);
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(per_prompt);
	}
	MemoryContextDelete(per_prompt);

	has_budget = UsageBudgetLeft(GetUserId(), &usd_left, &calls_left);

	InitMaterializedSRF(fcinfo, 0);
	for (i = 0; i < nroutes; i++)
	{
		const LlmRoute *route = sums[i].route;
		Datum		values[7];
		bool		nulls[7] = {false, false, false, false, false, false, false};
		double		cost;

		/* OpenAI caches a long enough prefix by itself: the system prompt */
		if (system_tokens >= AUTO_CACHE_MIN_TOKENS && requests > 1 &&
			route->cached_input_usd_per_mtok >= 0 &&
			strcmp(route->provider->ops->name, "openai") == 0)
			sums[i].cached = Min(system_tokens * (requests - 1), sums[i].input);
		cost = UsageRouteCost(route, sums[i].input, sums[i].cached, sums[i].output);

		values[0] = CStringGetTextDatum(route->provider->name);
		values[1] = Int64GetDatum(requests);
		values[2] = Int64GetDatum(sums[i].input);
		values[3] = Int64GetDatum(sums[i].output);
		if (cost < 0)
		{
			nulls[4] = nulls[5] = true;
			ereport(WARNING,
					(errcode(ERRCODE_WARNING),
					 errmsg("model \"%s\" has no price on provider \"%s\": its cost is not known",
							model, route->provider->name),
					 errhint("An administrator can price the route with llm.add_model('%s', '%s', '%s', input_usd_per_mtok => ..., output_usd_per_mtok => ...).",
							 route->model, route->provider->name, route->upstream_model)));
		}
		else
		{
			values[4] = usd(cost);
			values[5] = usd(cost * route->batch_price_factor);
		}
		if (!has_budget)
			values[6] = BoolGetDatum(true);
		else if (calls_left >= 0 && requests > calls_left)
			values[6] = BoolGetDatum(false);
		else if (usd_left >= 0 && cost < 0)
			nulls[6] = true;
		else
			values[6] = BoolGetDatum(usd_left < 0 || cost <= usd_left);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	(void) req;
	return (Datum) 0;
}
