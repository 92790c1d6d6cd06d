/*-------------------------------------------------------------------------
 *
 * config.h
 *	  Providers, model routes, the primary provider and budgets, read from
 *	  the llm schema and cached per backend (config.c).  What a provider
 *	  and a route are is the protocols' (provider.h).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_CONFIG_H
#define PG_LLM_CONFIG_H

#include "postgres.h"

#include "nodes/pg_list.h"

#include "provider.h"

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

extern void ConfigDefineSettings(void);

#endif							/* PG_LLM_CONFIG_H */
