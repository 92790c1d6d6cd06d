/*-------------------------------------------------------------------------
 *
 * config.h
 *	  Providers, model routes, the primary provider and budgets, read from
 *	  the llm schema and cached per backend (config.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_CONFIG_H
#define PG_LLM_CONFIG_H

#include "postgres.h"

#include "nodes/pg_list.h"

#include "http.h"

struct LlmProviderOps;
struct LlmBatchOps;

typedef struct LlmProvider
{
	char	   *name;
	const struct LlmProviderOps *ops;	/* the protocol it speaks */
	char	   *base_url;
	bool		enabled;
	int			priority;
	char	   *api_key;		/* stored value, or NULL */
	char	   *api_key_env;	/* server environment variable, or NULL */
	/* per-provider overrides; -1 means "use the setting" */
	int			connect_timeout_ms;
	int			timeout_ms;
	int			low_speed_time;
	int			low_speed_limit;
	int			stream_idle_timeout;
	int			max_retries;
	int			default_max_tokens;
	char	   *max_tokens_param;	/* OpenAI: max_tokens or max_completion_tokens */
	char	   *anthropic_version;
	bool		stream_usage;	/* send stream_options.include_usage */
	int			rpm_limit;		/* requests a minute, cluster-wide; 0: none */
	int			tpm_limit;		/* tokens a minute, cluster-wide; 0: none */
	int			quota_cooldown; /* seconds a route out of quota is left alone */
	char	   *batch_api;		/* inline, openai, anthropic or none */
	const struct LlmBatchOps *batch;	/* that batch API; NULL: none */
	int			batch_timeout_ms;	/* one inline batch request; -1: default */
	char	   *batch_url;		/* the url of a batch line (and endpoint of a batch) */
	bool		pass_through;	/* takes model names that have no route */
	List	   *headers;		/* extra "Name: value" strings (secret) */
	char	   *structured_output;	/* json_schema, tool or prompt; NULL: by protocol */
	HttpTransport transport;	/* proxy, CA file, client certificate, HTTP version */
} LlmProvider;

/* One step of a model's fallback chain. */
typedef struct LlmRoute
{
	LlmProvider *provider;
	char	   *model;			/* the name SQL asked for */
	char	   *upstream_model; /* the name sent to the provider */
	bool		has_price;		/* both prices are set */
	bool		has_input_price;	/* enough to price an embedding */
	double		input_usd_per_mtok;
	double		output_usd_per_mtok;
	double		cached_input_usd_per_mtok;	/* -1: the input price */
	double		batch_price_factor; /* share of the prices a batch request costs */
	double		priority_price_factor;	/* the prices' multiple at priority tier */
} LlmRoute;

extern bool llm_pass_through;

extern void ConfigRegisterInvalidation(void);
extern List *ConfigRoutes(const char *model);
extern const char *ConfigProviderKey(const LlmProvider *provider);
extern char *ConfigRedactSecret(const char *text, const LlmProvider *provider);
extern char *ConfigRedactOne(const char *text, const char *secret);
extern bool ConfigLooksLikeKey(const char *s);
extern List *ConfigSecrets(const LlmProvider *provider);
extern List *ConfigProviders(void);
extern bool ConfigBudget(Oid roleid, double *usd_per_month, int64 *calls_per_month,
						 int64 *max_queued);

#endif							/* PG_LLM_CONFIG_H */
