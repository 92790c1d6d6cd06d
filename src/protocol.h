/*-------------------------------------------------------------------------
 *
 * protocol.h
 *	  Facts of the provider protocols that need nothing of PostgreSQL (see
 *	  protocol.c): how a usage object adds up and what it costs, what a
 *	  finish or stop reason means, which HTTP status an error type stands
 *	  for, where an error body keeps its message, and which choice of a
 *	  reply is the first.
 *
 *	  Pure C over json-c: it includes no PostgreSQL header, and json-c only
 *	  as a forward declaration, so it can be included next to
 *	  utils/builtins.h and unit-tested on its own (test/unit).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_PROTOCOL_H
#define PG_LLM_PROTOCOL_H

#include <stdbool.h>
#include <stdint.h>

struct json_object;

/* The counts of a usage object, as the provider names them. */
typedef enum ProtoUsageField
{
	PU_INPUT,					/* prompt_tokens / input_tokens */
	PU_OUTPUT,					/* completion_tokens / output_tokens */
	PU_CACHE_READ,				/* cached_tokens / cache_read_input_tokens */
	PU_CACHE_WRITE,				/* cache_creation_input_tokens */
	PU_CACHE_WRITE_1H,			/* cache_creation.ephemeral_1h_input_tokens */
	PU_REASONING,				/* completion_tokens_details.reasoning_tokens */
	PU_NFIELDS
} ProtoUsageField;

/*
 * A usage as read so far.  Each count is the last value seen: Anthropic's
 * message_delta usage is cumulative, so a later value replaces an earlier
 * one, and a count a later object leaves out keeps its value.
 */
typedef struct ProtoUsage
{
	bool		anthropic;		/* input_tokens excludes the cache counts */
	unsigned	present;		/* a bit (1 << field) per count seen */
	int64_t		v[PU_NFIELDS];
	char		service_tier[32];	/* the tier that served the call, or "" */
} ProtoUsage;

/* What a usage adds up to; every count is at least 0. */
typedef struct ProtoTokens
{
	int64_t		input;			/* every input token: fresh, read and written */
	int64_t		cached_input;	/* read from the provider's prompt cache */
	int64_t		cache_write;	/* written to it (all lifetimes) */
	int64_t		cache_write_1h; /* of which with a one-hour lifetime */
	int64_t		output;			/* every output token, reasoning included */
	int64_t		reasoning;		/* of which reasoning */
} ProtoTokens;

/* A route's prices in USD per million tokens; cached_input < 0: none. */
typedef struct ProtoPrices
{
	double		input;
	double		output;
	double		cached_input;
} ProtoPrices;

/* Anthropic bills cache writes above the input price (prompt caching). */
#define PROTO_CACHE_WRITE_5M_FACTOR 1.25
#define PROTO_CACHE_WRITE_1H_FACTOR 2.0

extern void ProtoUsageInit(ProtoUsage *u, bool anthropic);
extern bool ProtoUsageRead(struct json_object *usage, ProtoUsage *u);
extern void ProtoUsageSetTier(ProtoUsage *u, const char *tier);
extern bool ProtoUsageHasTokens(const ProtoUsage *u);
extern void ProtoUsageTotals(const ProtoUsage *u, ProtoTokens *t);
extern double ProtoCost(const ProtoTokens *t, const ProtoPrices *p);

/* How a reply ended, from its finish_reason or stop_reason. */
typedef enum ProtoEnding
{
	PROTO_END_NONE,				/* no reason given */
	PROTO_END_COMPLETE,			/* stop, end_turn, stop_sequence */
	PROTO_END_LENGTH,			/* length, max_tokens, model_context_window_exceeded */
	PROTO_END_TOOL,				/* tool_calls, function_call, tool_use */
	PROTO_END_PAUSED,			/* pause_turn: the turn is not finished */
	PROTO_END_REFUSED,			/* refusal */
	PROTO_END_FILTERED,			/* content_filter */
	PROTO_END_OTHER				/* a reason the references do not name */
} ProtoEnding;

extern ProtoEnding ProtoEndingOf(const char *reason);
extern const char *ProtoFinishReason(const char *stop_reason);

/* The HTTP status an error's type or code stands for (0: unknown). */
extern long ProtoErrorStatus(const char *type, const char *code);
extern bool ProtoErrorIsQuota(const char *type, const char *code);

/* Where an error body keeps its message, type and code (NULL: none). */
typedef struct ProtoErrorFields
{
	struct json_object *message;
	struct json_object *type;
	struct json_object *code;
} ProtoErrorFields;

extern void ProtoErrorRead(struct json_object *root, ProtoErrorFields *e);

/* The choice of an OpenAI "choices" array with this index, or NULL. */
extern struct json_object *ProtoChoice(struct json_object *choices, int index);

#endif							/* PG_LLM_PROTOCOL_H */
