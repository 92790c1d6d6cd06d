/*-------------------------------------------------------------------------
 *
 * provider.h
 *	  The protocols pg_llm speaks, as a table of callbacks in the manner of
 *	  PostgreSQL's access methods: each protocol file (provider_openai.c,
 *	  provider_anthropic.c) exports one LlmProviderOps, config.c stores the
 *	  right one in every provider, and the call engine, the stream and the
 *	  worker go through it.  Adding a protocol is one new file and one line
 *	  in provider.c; adding a batch API to a protocol, one LlmBatchOps in
 *	  its file.
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

#include "http.h"
#include "protocol.h"
#include "request.h"

struct json_object;
struct LlmProviderOps;
struct LlmBatchOps;

/* A provider, as llm.provider holds it (config.c reads it). */
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

/*
 * The half of a protocol that speaks to its provider's batch API, for the
 * worker's batch transport (src/worker/batch.c), which owns the state
 * machine and all the I/O.  A batch goes through steps, each one request:
 * the requests file up (UPLOAD, when the kind uploads a file), the batch
 * created (CREATE; an inline kind's answer holds the results), polled
 * (POLL) until it has ended, its results files down (RESULTS, the first,
 * the second...), or cancelled (CANCEL); after a crash, a batch whose
 * creation was not recorded is looked for (LOOKUP, a page at a time).
 * The kind builds each request and reads each 2xx answer into an event;
 * it sends nothing and writes nothing.
 */
typedef enum LlmBatchStep
{
	LLM_BATCH_UPLOAD,
	LLM_BATCH_CREATE,
	LLM_BATCH_POLL,
	LLM_BATCH_LOOKUP,
	LLM_BATCH_RESULTS,
	LLM_BATCH_CANCEL
} LlmBatchStep;

/* What a kind knows of a batch when it builds a request. */
typedef struct LlmBatchState
{
	const LlmProvider *provider;
	int64		id;				/* ours (llm._batch.id) */
	const char *token;			/* ours, for the provider's metadata */
	bool		embed;			/* its requests are embeddings */
	const char *input_file_id;	/* the uploaded requests file */
	const char *batch_id;		/* the provider's id of the batch */
	const char *output_file_id;
	const char *error_file_id;
	const char *results_url;
	const char *lookup_after;	/* the page of the lookup to ask for */
	int			results_step;	/* which results file: 0, 1, ... */
} LlmBatchState;

/* How long a request of a batch may take. */
typedef enum LlmBatchTimeout
{
	LLM_BATCH_TIMEOUT_CALL,		/* a call's (the provider's timeout_ms) */
	LLM_BATCH_TIMEOUT_TRANSFER, /* a file's: the call's, at least 10 minutes */
	LLM_BATCH_TIMEOUT_SYNC		/* an inline batch's: batch_timeout_ms */
} LlmBatchTimeout;

/* A request of a batch API, described; the transport sends it. */
typedef struct LlmBatchRequest
{
	const char *path;			/* under the provider's base_url, or */
	const char *url;			/* a whole URL on the provider's origin */
	bool		get;			/* a GET; otherwise a POST */
	const char *body;			/* a JSON body */
	bool		send_file;		/* the requests file (or body) as a JSON body */
	bool		upload_file;	/* the requests file as a form upload */
	const char *upload_name;	/* its file name */
	bool		to_file;		/* the answer into a file (results) */
	LlmBatchTimeout timeout;
} LlmBatchRequest;

/* What a 2xx answer says (the event the transport applies). */
typedef enum LlmBatchEventKind
{
	LLM_BATCH_UNREADABLE,		/* nothing pg_llm can read */
	LLM_BATCH_UPLOADED,			/* id: the requests file's */
	LLM_BATCH_CREATED,			/* id: the batch's */
	LLM_BATCH_ANSWERED,			/* the results are in the answer (inline) */
	LLM_BATCH_RUNNING,			/* a poll: not ended yet */
	LLM_BATCH_ENDED,			/* a poll: ended; where its results are */
	LLM_BATCH_FOUND,			/* a lookup: id, the batch's */
	LLM_BATCH_NOT_FOUND,		/* a lookup page without it (lookup_after: more) */
	LLM_BATCH_RESULTS_IN,		/* a results file is in */
	LLM_BATCH_CANCELLED
} LlmBatchEventKind;

typedef struct LlmBatchEvent
{
	LlmBatchEventKind kind;
	char	   *id;
	char	   *status;			/* the provider's word for its state */
	bool		cancelling;
	char	   *failure;		/* why it ended without running, if it did */
	char	   *output_file_id;
	char	   *error_file_id;
	char	   *results_url;
	char	   *lookup_after;
	int			succeeded;		/* the provider's counts */
	int			errored;
	int			expired;
} LlmBatchEvent;

typedef struct LlmBatchOps
{
	const char *name;			/* its value of the provider option batch_api */
	int			max_requests;	/* in a batch; 0: llm.batch_size */
	size_t		max_bytes;		/* of the requests */
	bool		inline_results; /* CREATE answers with the results (then a
								 * batch that times out is split) */
	bool		can_lookup;		/* a creation not recorded can be found */

	/* the requests: head, each line (separated), tail */
	const char *requests_head;
	const char *requests_separator;
	const char *requests_tail;

	/*
	 * The request of a step (for a batch in the state b); false when the
	 * step has nothing to ask (no more results files).
	 */
	bool		(*request) (LlmBatchStep step, const LlmBatchState *b, LlmBatchRequest *req);

	/* a 2xx answer of a step, read (the caller has parsed it; NULL: not JSON) */
	void		(*read_answer) (LlmBatchStep step, const LlmBatchState *b,
								struct json_object *root, LlmBatchEvent *ev);

	/* one request of a batch, with our id for it; the caller puts it */
	struct json_object *(*request_line) (LlmRequest *req, const LlmRoute *route,
										 const char *custom_id);

	/*
	 * One result of a batch: its custom_id, and either the reply (*status
	 * 200-299, in reply) or what went wrong (*status the HTTP status, 0
	 * when the request was not run, *expired when it ran out of time or
	 * was cancelled and can be sent again; *problem says it).
	 */
	bool		(*result_line) (struct json_object *line, const LlmRoute *route,
								const char **custom_id, long *status, bool *expired,
								LlmReply *reply, char **problem);

	/* the results of an inline answer, each as a JSON object (inline kinds) */
	struct json_object *(*answer_results) (struct json_object *root);

	/*
	 * Embeddings (NULL: the kind takes no embedding requests): one input's
	 * request, with our id for it (the caller puts it), and one result,
	 * read as result_line reads a chat result but into reply's one vector
	 * (reply->n is 1, allocated by the caller).
	 */
	struct json_object *(*embed_line) (LlmRequest *req, const LlmRoute *route,
									   const char *custom_id);
	bool		(*embed_result_line) (struct json_object *line, const LlmRoute *route,
									  const char **custom_id, long *status, bool *expired,
									  LlmEmbedReply *reply, char **problem);
} LlmBatchOps;

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

	/*
	 * Provider batch APIs: the kinds the protocol offers (the provider
	 * option batch_api names one), NULL-terminated, the default first;
	 * NULL when it has none.
	 */
	const struct LlmBatchOps *const *batch_kinds;

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
extern const LlmBatchOps *ProviderBatchKind(const LlmProviderOps *ops, const char *name);
extern char *ProviderBatchLine(const LlmBatchOps *kind, LlmRequest *req, const LlmRoute *route,
							   const char *custom_id);
extern void ProviderBatchAnswer(const LlmBatchOps *kind, LlmBatchStep step, const LlmBatchState *b,
								const char *body, size_t len, LlmBatchEvent *ev);
extern void ProviderBatchEachResult(const LlmBatchOps *kind, const char *body, size_t len,
									void (*fn) (void *arg, const char *line, size_t len),
									void *arg);
extern char *ProviderEmbedBody(LlmRequest *req, const LlmRoute *route);
extern bool ProviderParseEmbedReply(const LlmRoute *route, LlmRequest *req,
									const char *body, size_t len,
									LlmEmbedReply *reply, char **problem);
extern bool ProviderBatchResult(const LlmBatchOps *kind, const LlmRoute *route,
								const char *line, size_t len,
								char **custom_id, long *status, bool *expired,
								LlmReply *reply, char **problem);
extern char *ProviderBatchEmbedLine(const LlmBatchOps *kind, LlmRequest *req,
									const LlmRoute *route, const char *custom_id);
extern bool ProviderBatchEmbedResult(const LlmBatchOps *kind, const LlmRoute *route,
									 const char *line, size_t len,
									 char **custom_id, long *status, bool *expired,
									 LlmEmbedReply *reply, char **problem);
extern char *ProviderEmbedBatchUrl(const LlmProvider *provider);

extern int	llm_anthropic_max_tokens;
extern void ProviderDefineSettings(void);

#endif							/* PG_LLM_PROVIDER_H */
