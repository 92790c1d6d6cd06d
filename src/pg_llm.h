/*-------------------------------------------------------------------------
 *
 * pg_llm.h
 *	  Types and entry points shared by the pg_llm modules: settings,
 *	  providers and routes, requests and replies, and the call engine.
 *
 *	  Nothing here includes libcurl or json-c: http.c is the only file that
 *	  sees curl, and the json-c users (json.c, provider_*.c) never include
 *	  utils/builtins.h, whose json_object() collides with json-c's type.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_H
#define PG_LLM_H

#include "postgres.h"

#include "compat.h"
#include "fmgr.h"
#include "nodes/pg_list.h"
#include "utils/timestamp.h"

#define PG_LLM_VERSION "0.1.0"

/* ---- settings (pg_llm.c) ---- */
extern char *llm_default_model;
extern int	llm_connect_timeout_ms;
extern int	llm_timeout_ms;
extern int	llm_low_speed_time;
extern int	llm_low_speed_limit;
extern int	llm_stream_idle_timeout;
extern int	llm_max_retries;
extern int	llm_max_retry_after;
extern int	llm_max_response_size_kb;
extern int	llm_anthropic_max_tokens;

/* ---- providers and routes (config.c) ---- */
typedef enum LlmProtocol
{
	LLM_OPENAI,
	LLM_ANTHROPIC
} LlmProtocol;

typedef struct LlmProvider
{
	char	   *name;
	LlmProtocol protocol;
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
	List	   *headers;		/* extra "Name: value" strings */
} LlmProvider;

/* One step of a model's fallback chain. */
typedef struct LlmRoute
{
	LlmProvider *provider;
	char	   *model;			/* the name SQL asked for */
	char	   *upstream_model; /* the name sent to the provider */
	bool		has_price;
	double		input_usd_per_mtok;
	double		output_usd_per_mtok;
} LlmRoute;

extern List *ConfigRoutes(const char *model);
extern const char *ConfigProviderKey(const LlmProvider *provider);
extern void ConfigInit(void);
extern Oid	ConfigOwner(void);
extern char *RedactSecret(const char *text, const LlmProvider *provider);

/* ---- requests and replies (json.c, provider_*.c) ---- */
typedef struct LlmRequest LlmRequest;

typedef struct LlmReply
{
	char	   *content;		/* text of the first choice, or NULL */
	int			nchoices;
	char	   *finish_reason;
	bool		has_usage;
	int64		input_tokens;
	int64		output_tokens;
	char	   *response_json;	/* normalized, OpenAI shape, with "provider";
								 * only when asked for */
} LlmReply;

/* What a provider said in an error body; any field may be NULL. */
typedef struct LlmErrorBody
{
	char	   *message;
	char	   *type;
	char	   *code;
} LlmErrorBody;

extern LlmRequest *LlmRequestFromPrompt(const char *prompt, const char *system,
										const char *options_json);
extern LlmRequest *LlmRequestFromJson(const char *request_json);
extern const char *LlmRequestModel(LlmRequest *req);
extern char *ProviderRequestBody(LlmRequest *req, const LlmRoute *route,
								 bool stream);
extern bool ProviderParseReply(const LlmRoute *route, const char *body,
							   size_t len, bool want_json, LlmReply *reply,
							   char **problem);
extern void ProviderParseError(const char *body, size_t len, LlmErrorBody *err);

/* Streaming: one decoder per stream, fed one SSE event at a time. */
typedef struct LlmStreamDecoder
{
	LlmProtocol protocol;
	bool		finished;		/* [DONE] or message_stop seen */
	bool		saw_finish_reason;	/* a finish_reason/stop_reason seen */
	char	   *finish_reason;	/* in OpenAI's words */
	char	   *error;			/* error event text, or NULL */
	bool		has_usage;
	int64		input_tokens;
	int64		output_tokens;
	List	   *pieces;			/* text deltas not yet returned */
} LlmStreamDecoder;

extern void ProviderStreamEvent(LlmStreamDecoder *dec, const char *type,
								const char *data, size_t len);

/* ---- the call engine (call.c) ---- */
typedef enum LlmMode
{
	LLM_MODE_SYNC,
	LLM_MODE_STREAM,
	LLM_MODE_MANY,
	LLM_MODE_QUEUE,
	LLM_MODE_BATCH_API
} LlmMode;

struct HttpTransfer;

typedef enum LlmVerdict
{
	LLM_VERDICT_OK,
	LLM_VERDICT_RETRY,
	LLM_VERDICT_FAIL
} LlmVerdict;

/* What went wrong with an attempt, copied out of the transfer. */
typedef struct LlmFailure
{
	int			sqlstate;
	char	   *provider;
	long		status;			/* 0 for transport errors */
	char	   *message;		/* errmsg */
	char	   *detail;			/* errdetail; the provider's words, redacted */
	char	   *hint;
	double		retry_after_s;	/* -1 when not given */
} LlmFailure;

typedef struct LlmCall
{
	LlmRequest *req;
	char	   *model;
	LlmMode		mode;
	List	   *routes;
	const LlmRoute *route;		/* the route that served (or last tried) */
	int			attempts;		/* HTTP requests sent, all routes */
	bool		fallback;		/* served by a route after the first */
	long		http_status;
	struct HttpTransfer *xfer;	/* live transfer (streams) */
	bool		want_response_json; /* build reply.response_json */
	TimestampTz started;
	TimestampTz first_byte;
	LlmReply	reply;
	/* accounting (usage.c) */
	Oid			roleid;			/* the role the call runs and is billed for */
	bool		usage_recorded;
	bool		usage_counted;
	int			budget_month;	/* non-zero while a reservation is held */
	double		reserved_usd;
	int64		estimated_input_tokens;
	int64		estimated_output_tokens;
} LlmCall;

typedef enum LlmOutcome
{
	LLM_OUTCOME_OK,
	LLM_OUTCOME_ERROR,
	LLM_OUTCOME_CANCELLED,
	LLM_OUTCOME_RETRY
} LlmOutcome;

extern LlmCall *LlmCallCreate(LlmRequest *req, const char *model, LlmMode mode);
extern void LlmCallRun(LlmCall *call);
extern void LlmCallOpenStream(LlmCall *call);
extern struct HttpTransfer *LlmSendAttempt(LlmCall *call, const LlmRoute *route, bool stream);
extern LlmVerdict LlmJudgeComplete(LlmCall *call, struct HttpTransfer *t, LlmFailure *f);
extern long LlmRetryDelayMs(double retry_after_s, int n);
extern void LlmSleepMs(long ms);
extern void LlmRaiseFailure(const LlmFailure *f, int attempts, int routes) pg_attribute_noreturn();
extern char *LlmFailureText(const LlmFailure *f);
extern const char *LlmResolveModel(const char *model, LlmRequest *req);
extern char *LlmToServerEncoding(const char *utf8, size_t len);
extern char *LlmToUtf8(const char *text);

/* ---- usage.c ---- */
extern bool llm_track_usage;
extern void UsageBegin(LlmCall *call, Oid roleid, size_t request_bytes, int64 max_tokens);
extern void UsageRecord(LlmCall *call, LlmOutcome outcome);
extern int	UsageFlush(void);
extern uint32 UsagePending(void);
extern Datum LlmMakeArray(Datum *values, bool *nulls, int n, Oid elemtype);
extern bool ConfigBudget(Oid roleid, double *usd_per_month, int64 *calls_per_month);
extern int64 LlmRequestMaxTokens(LlmRequest *req);

/* ---- chat.c ---- */
extern LlmCall *ChatCallFromArgs(FunctionCallInfo fcinfo, LlmMode mode);
extern void LlmCheckPrompt(const char *prompt);

#endif							/* PG_LLM_H */
