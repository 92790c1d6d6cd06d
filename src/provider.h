/*-------------------------------------------------------------------------
 *
 * provider.h
 *	  The protocols pg_llm speaks, as a table of callbacks in the manner of
 *	  PostgreSQL's access methods: each protocol file (provider_openai.c,
 *	  provider_anthropic.c) exports one LlmProviderOps, config.c stores the
 *	  right one in every provider, and the call engine, the stream and the
 *	  worker go through it.  Adding a protocol is one new file and one line
 *	  in provider.c.
 *
 *	  The callbacks take json-c objects as "struct json_object", so this
 *	  header can be included next to utils/builtins.h (whose json_object()
 *	  collides with json-c's typedef).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_LLM_PROVIDER_H
#define PG_LLM_PROVIDER_H

#include "postgres.h"

#include "nodes/pg_list.h"

#include "config.h"
#include "protocol.h"
#include "request.h"

struct json_object;

/*
 * The most tokens one call is believed to use, in or out: a usage number
 * above it (or negative, or not whole, or given twice) is not billed by.
 */
#define LLM_MAX_USAGE_TOKENS INT64CONST(1000000000)

/* A 2xx reply, read. */
typedef struct LlmReply
{
	char	   *content;		/* text of choice 0, or NULL */
	int			nchoices;
	char	   *finish_reason;	/* in OpenAI's words */
	char	   *stop_reason;	/* in the provider's own words */
	char	   *refusal;		/* OpenAI's message.refusal, or NULL */
	bool		tool_calls;		/* choice 0 calls tools */
	bool		has_usage;
	int64		input_tokens;	/* every input token, cached ones included */
	int64		output_tokens;	/* every output token, reasoning included */
	int64		cached_input_tokens;	/* read from the prompt cache */
	int64		cache_write_tokens; /* written to it */
	int64		cache_write_1h_tokens;	/* of which for an hour */
	int64		reasoning_tokens;
	char		service_tier[32];	/* the tier that served it, or "" */
	bool		usage_invalid;	/* the provider's numbers cannot be billed by */
	char	   *response_json;	/* normalized, OpenAI shape, with "provider";
								 * only when asked for */
	char	   *tool_name;		/* the first tool call of the first choice, */
	char	   *tool_input;		/* and its arguments as JSON text; or NULL */
} LlmReply;

/* One input's vector in an embedding reply. */
typedef struct LlmVector
{
	int			dim;			/* elements; 0 when there is no vector */
	float4	   *values;
	char	   *error;			/* why the input has no usable vector, or NULL */
} LlmVector;

/*
 * A 2xx embedding reply, read: one vector (or the reason there is none)
 * per input of the request, matched by the reply's "index".
 */
typedef struct LlmEmbedReply
{
	int			n;				/* inputs of the request */
	LlmVector  *vectors;		/* n of them, in the order of the inputs */
	bool		has_usage;
	bool		usage_invalid;	/* see LlmReply */
	int64		input_tokens;
} LlmEmbedReply;

/* What a provider said in an error body; any field may be NULL. */
typedef struct LlmErrorBody
{
	char	   *message;
	char	   *type;
	char	   *code;
} LlmErrorBody;

/*
 * Streaming: one decoder per stream, fed one SSE event at a time.  Only
 * choice 0 is followed (chunks are matched by their choice index).
 */
typedef struct LlmStreamDecoder
{
	const struct LlmProviderOps *ops;
	bool		finished;		/* the protocol's end marker seen */
	bool		saw_finish_reason;	/* a finish_reason/stop_reason seen */
	char	   *finish_reason;	/* in OpenAI's words */
	char	   *stop_reason;	/* in the provider's own words */
	char	   *error;			/* error event text, or NULL */
	LlmErrorBody error_body;	/* the error event's fields */
	char	   *refusal;		/* OpenAI delta.refusal text so far, or NULL */
	bool		tool_calls;		/* a tool call was streamed */
	ProtoUsage	usage;			/* the last value of each count */
	bool		usage_invalid;	/* see LlmReply */
	List	   *pieces;			/* text deltas not yet returned */
} LlmStreamDecoder;

typedef struct LlmProviderOps
{
	const char *name;			/* the protocol's name in llm.provider */
	const char *chat_path;		/* appended to base_url for a chat call */
	const char *key_header;		/* how the key is sent, for hints */

	/* append the key and protocol headers ("Name: value") to *headers */
	void		(*add_headers) (const LlmProvider *p, const char *key, List **headers);

	/* the wire body of a chat call on a route; the caller puts it */
	struct json_object *(*build_body) (LlmRequest *req, const LlmRoute *route, bool stream);

	/* read a 2xx reply; false with *problem when it is not shaped as one */
	bool		(*parse_reply) (struct json_object *root, const LlmRoute *route,
								bool want_json, LlmReply *reply, char **problem);

	/*
	 * One SSE event: raw_event sees it first (end markers and pings that
	 * are not JSON) and returns true when it consumed it; otherwise its
	 * JSON goes to stream_event.
	 */
	bool		(*raw_event) (LlmStreamDecoder *dec, const char *type,
							  const char *data, size_t len);
	void		(*stream_event) (LlmStreamDecoder *dec, const char *type,
								 struct json_object *root);

	/* provider batch APIs: the batch kind used when none is configured */
	const char *default_batch_api;

	/* one request of a batch, with our id for it; the caller puts it */
	struct json_object *(*batch_line) (LlmRequest *req, const LlmRoute *route,
									   const char *custom_id);

	/*
	 * One result of a batch: its custom_id, and either the reply (*status
	 * 200-299, in reply) or what went wrong (*status the HTTP status, 0
	 * when the request was not run, *expired when it ran out of time or
	 * was cancelled and can be sent again; *problem says it).
	 */
	bool		(*batch_result) (struct json_object *line, const LlmRoute *route,
								 const char **custom_id, long *status, bool *expired,
								 LlmReply *reply, char **problem);

	/*
	 * Embeddings: the path appended to base_url (NULL: the protocol has no
	 * embeddings, and no embedding call is routed to it), the wire body of
	 * an embedding request on a route (the caller puts it), and the reader
	 * of a 2xx reply into reply->vectors (reply->n of them, allocated by
	 * the caller with every dim 0); false with *problem when the reply is
	 * not shaped as one at all.  An input the reply gives no usable vector
	 * for is left with dim 0 or gets its own error.
	 */
	const char *embed_path;
	struct json_object *(*build_embed_body) (LlmRequest *req, const LlmRoute *route);
	bool		(*parse_embed_reply) (struct json_object *root, const LlmRoute *route,
									  LlmEmbedReply *reply, char **problem);
} LlmProviderOps;

extern const LlmProviderOps OpenAIProviderOps;
extern const LlmProviderOps AnthropicProviderOps;

extern const LlmProviderOps *ProviderLookup(const char *protocol);
extern char *ProviderRequestBody(LlmRequest *req, const LlmRoute *route, bool stream,
								 size_t *len);
extern bool ProviderParseReply(const LlmRoute *route, const char *body, size_t len,
							   bool want_json, LlmReply *reply, char **problem);
extern void ProviderParseError(const char *body, size_t len, LlmErrorBody *err);
extern void ProviderReadError(struct json_object *root, LlmErrorBody *err);
extern void ProviderReplySetUsage(LlmReply *reply, const ProtoUsage *u);
extern void ProviderDecoderInit(LlmStreamDecoder *dec, const struct LlmProviderOps *ops);
extern void ProviderStreamEvent(LlmStreamDecoder *dec, const char *type,
								const char *data, size_t len);
extern char *ProviderBatchLine(LlmRequest *req, const LlmRoute *route, const char *custom_id);
extern char *ProviderEmbedBody(LlmRequest *req, const LlmRoute *route);
extern bool ProviderParseEmbedReply(const LlmRoute *route, LlmRequest *req,
									const char *body, size_t len,
									LlmEmbedReply *reply, char **problem);
extern bool ProviderBatchResult(const LlmRoute *route, const char *line, size_t len,
								char **custom_id, long *status, bool *expired,
								LlmReply *reply, char **problem);

#endif							/* PG_LLM_PROVIDER_H */
