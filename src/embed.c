/*-------------------------------------------------------------------------
 *
 * embed.c
 *	  Embeddings from SQL: llm.embed(input, model, options), one vector,
 *	  and llm.embed_many(inputs, model, options), many inputs packed into
 *	  each request and the requests run concurrently, one row per input.
 *
 *	  An embedding call goes through the call engine like a chat call
 *	  (retries, fallback chain, cluster-wide limits, budgets, usage), with
 *	  the task LLM_TASK_EMBED: its routes are those of the model whose
 *	  protocol has embeddings, its body and reply are the protocol's
 *	  embedding ones (provider.h), and its usage row counts its inputs and
 *	  input tokens, priced at the model's input price.
 *
 *	  embed_many packs up to llm.embed_inputs_per_request inputs into one
 *	  request, fewer when their estimated tokens would pass
 *	  llm.embed_tokens_per_request, and keeps up to llm.many_concurrency
 *	  requests in flight.  A request that the provider refuses as a whole
 *	  (HTTP 400, 413 or 422) of EMBED_PROBE_MIN_INPUTS inputs or more sends
 *	  one of them alone first (EmbedRefusedWhole): refused with the same
 *	  words, every input fails with them (an option the model does not
 *	  take); otherwise, and for a smaller request, the inputs are split in
 *	  half and each half sent again, down to the single input at fault
 *	  (one over the model's limit), which fails alone; a refused request is
 *	  not charged, so nothing is paid twice.  An input the reply has no
 *	  usable vector for (fewer vectors than inputs, a non-numeric element,
 *	  other dimensions than asked for) fails alone; the others keep theirs.
 *	  A NULL input gives a row with NULL embedding and NULL error; an
 *	  empty one gives its error, and neither is sent.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "common/shortest_dec.h"
#include "utils/guc.h"
#include "funcapi.h"
#include "lib/ilist.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "call.h"
#include "chat.h"
#include "config.h"
#include "embed.h"
#include "http.h"
#include "provider.h"
#include "request.h"
#include "tokens.h"
#include "usage.h"

PG_FUNCTION_INFO_V1(pg_llm_embed);
PG_FUNCTION_INFO_V1(pg_llm_embed_many);

int			llm_embed_inputs_per_request = 100;
int			llm_embed_tokens_per_request = 300000;
char	   *llm_default_embedding_model = NULL;

/*
 * The model of an embedding call: the argument, else
 * llm.default_embedding_model.  llm.default_model names a chat model and
 * is not used.
 */
const char *
EmbedResolveModel(const char *model)
{
	if (model == NULL && llm_default_embedding_model != NULL &&
		llm_default_embedding_model[0] != '\0')
		model = llm_default_embedding_model;
	if (model == NULL || model[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("no embedding model given"),
				 errhint("Pass a model, or set llm.default_embedding_model.")));
	return model;
}

/*
 * The routes of a model that can serve embeddings, in the order of its
 * chain: those whose protocol has an embeddings endpoint.  A model none
 * of whose routes can is refused with the reason.
 */
List *
EmbedRoutes(const char *model)
{
	List	   *all = ConfigRoutes(model);
	List	   *routes = NIL;
	const LlmRoute *without = NULL;
	ListCell   *lc;

	foreach(lc, all)
	{
		const LlmRoute *r = lfirst(lc);

		if (r->provider->ops->embed_path != NULL)
			routes = lappend(routes, (void *) r);
		else if (without == NULL)
			without = r;
	}
	if (routes == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model \"%s\" has no route to a provider with embeddings", model),
				 without ?
				 errdetail("Provider \"%s\" speaks the %s protocol, which has no embeddings endpoint.",
						   without->provider->name, without->provider->ops->name) : 0,
				 errhint("Route the model to an OpenAI-compatible provider with llm.add_model().")));
	return routes;
}

/* An embedding input must not be empty (a NULL one is answered NULL). */
void
EmbedCheckInput(const char *input)
{
	if (input != NULL && LlmBlank(input, strlen(input)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("input must not be empty"),
				 errhint("Filter empty rows out; there is nothing to embed.")));
}

/*
 * An embedding call of n inputs to a model, on the routes that can serve
 * it.  Its budget is reserved, and its usage record promised, by
 * UsageBegin(call, role, request_bytes, 0).
 */
LlmCall *
EmbedCallCreate(LlmRequest *req, const char *model, int ninputs, LlmMode mode)
{
	LlmCall    *call = LlmCallCreate(req, model, mode);

	call->task = LLM_TASK_EMBED;
	call->ninputs = ninputs;
	call->routes = EmbedRoutes(model);
	call->route_cell = list_head(call->routes);
	return call;
}

/* A vector as a real[] datum. */
static Datum
vector_datum(const LlmVector *v)
{
	Datum	   *elems = palloc(sizeof(Datum) * v->dim);
	int			k;

	for (k = 0; k < v->dim; k++)
		elems[k] = Float4GetDatum(v->values[k]);
	/* float4 is passed by value on every supported version */
	return PointerGetDatum(construct_array(elems, v->dim, FLOAT4OID, sizeof(float4),
										   true, TYPALIGN_INT));
}

/* The error text of an input the reply had no usable vector for. */
static char *
vector_error(const LlmCall *call, const LlmVector *v)
{
	return psprintf("provider \"%s\" returned no usable vector for this input: %s",
					call->route->provider->name, v->error);
}

/* The vector of llm.embed, run inside LlmTry when on_error is "null". */
typedef struct EmbedOne
{
	LlmCall    *call;
	const char *input;
	size_t		request_bytes;
	Datum		result;
} EmbedOne;

static void
embed_one(void *arg)
{
	EmbedOne   *run = (EmbedOne *) arg;
	LlmCall    *call = run->call;
	LlmVector  *v;

	EmbedCheckInput(run->input);
	UsageBegin(call, GetUserId(), run->request_bytes, 0);
	LlmCallRun(call, false);
	v = &call->embed.vectors[0];
	if (v->error)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("provider \"%s\" returned no usable embedding", call->route->provider->name),
				 errdetail("%s", v->error),
				 errhint("Check that model \"%s\" is an embedding model of the provider, and that the provider follows the OpenAI embeddings API.",
						 call->route->upstream_model)));
	run->result = vector_datum(v);
}

/*
 * llm.embed(input text, model text, options jsonb) returns real[]: the
 * embedding of one input; NULL for a NULL input.  Bad options and a model
 * without embeddings raise whatever on_error says; from the input's check
 * on, on_error "null" makes a failure a WARNING and NULL.
 */
Datum
pg_llm_embed(PG_FUNCTION_ARGS)
{
	char	   *options;
	const char *model;
	LlmRequest *req;
	EmbedOne	run;
	ErrorData  *edata;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	run.input = LlmToUtf8(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	options = LlmArgJsonb(fcinfo, 2);
	model = EmbedResolveModel(PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1)));
	req = RequestForEmbedding(&run.input, 1, options);
	run.call = EmbedCallCreate(req, model, 1, LLM_MODE_SYNC);
	run.request_bytes = strlen(run.input) + (options ? strlen(options) : 0);
	run.result = (Datum) 0;
	if (!RequestOnErrorNull(req))
		embed_one(&run);
	else if ((edata = LlmTry(embed_one, &run)) != NULL)
	{
		LlmCallFailed(run.call, edata);
		PG_RETURN_NULL();
	}
	PG_RETURN_DATUM(run.result);
}

/* ---- vectors as text, for the columns they are written into ---- */

/*
 * A vector as text, "[v1,v2,...]", each element in the shortest form that
 * reads back as the same real (as float4out writes it): what the queue
 * keeps as an embedding item's reply, and what pgvector's types read.
 */
char *
EmbedVectorText(const float4 *values, int dim)
{
	static char *scratch = NULL;
	static size_t scratch_len = 0;
	size_t		need = (size_t) dim * (FLOAT_SHORTEST_DECIMAL_LEN + 1) + 3;
	size_t		len = 0;
	int			k;

	/* written into a buffer of the longest size, then copied exactly */
	if (need > scratch_len)
	{
		if (scratch)
			pfree(scratch);
		scratch = MemoryContextAlloc(TopMemoryContext, need);
		scratch_len = need;
	}
	scratch[len++] = '[';
	for (k = 0; k < dim; k++)
	{
		if (k > 0)
			scratch[len++] = ',';
		len += float_to_shortest_decimal_bufn(values[k], scratch + len);
	}
	scratch[len++] = ']';
	return pnstrdup(scratch, len);
}

/* The name of a type (its base type's, for a domain). */
static char *
type_name(Oid typid)
{
	HeapTuple	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));
	char	   *name;

	if (!HeapTupleIsValid(tup))
		return pstrdup("");
	name = pstrdup(NameStr(((Form_pg_type) GETSTRUCT(tup))->typname));
	ReleaseSysCache(tup);
	return name;
}

/*
 * How a column of a type takes a vector: an array of numbers ("{...}"),
 * pgvector's sparsevec ("{i:v,...}/n"), pgvector's vector and halfvec and
 * the text and JSON types ("[...]"), or not at all.  pgvector is known by
 * its types' names, not linked to.
 */
EmbedColumnKind
EmbedColumnKindOf(Oid typid)
{
	Oid			base = getBaseType(typid);
	Oid			elem = get_element_type(base);
	char		category;
	bool		preferred;
	char	   *name;

	if (OidIsValid(elem))
	{
		get_type_category_preferred(getBaseType(elem), &category, &preferred);
		return category == TYPCATEGORY_NUMERIC ? EMBED_COLUMN_ARRAY : EMBED_COLUMN_NONE;
	}
	name = type_name(base);
	if (strcmp(name, "sparsevec") == 0)
		return EMBED_COLUMN_SPARSE;
	if (strcmp(name, "vector") == 0 || strcmp(name, "halfvec") == 0)
		return EMBED_COLUMN_BRACKETS;
	get_type_category_preferred(base, &category, &preferred);
	if (category == TYPCATEGORY_STRING || base == JSONOID || base == JSONBOID)
		return EMBED_COLUMN_BRACKETS;
	return EMBED_COLUMN_NONE;
}

/*
 * The dimensions a column of pgvector's types holds (its typmod), or -1
 * when it does not say (no typmod, or another type).
 */
int
EmbedColumnDimensions(Oid typid, int32 typmod)
{
	Oid			base = getBaseType(typid);
	char	   *name;

	if (typmod <= 0 || OidIsValid(get_element_type(base)))
		return -1;
	name = type_name(base);
	if (strcmp(name, "vector") == 0 || strcmp(name, "halfvec") == 0 ||
		strcmp(name, "sparsevec") == 0)
		return typmod;
	return -1;
}

/*
 * An embedding item's reply ("[v1,...]", as EmbedVectorText writes it) in
 * the syntax of a column's type, for the type's input function to read:
 * "{v1,...}" for arrays, "{i:v,...}/n" (the non-zero elements, 1-based)
 * for sparsevec, as it is otherwise (then the same string, not a copy:
 * a pass's vectors are most of the worker's memory).
 */
char *
EmbedTextForColumn(const char *vector, Oid typid)
{
	EmbedColumnKind kind = EmbedColumnKindOf(typid);
	size_t		len = strlen(vector);
	StringInfoData buf;
	const char *p;
	int			i;

	if (len < 2 || vector[0] != '[' || vector[len - 1] != ']' || kind == EMBED_COLUMN_BRACKETS ||
		kind == EMBED_COLUMN_NONE)
		return unconstify(char *, vector);
	initStringInfo(&buf);
	if (kind == EMBED_COLUMN_ARRAY)
	{
		appendStringInfoChar(&buf, '{');
		appendBinaryStringInfo(&buf, vector + 1, len - 2);
		appendStringInfoChar(&buf, '}');
		return buf.data;
	}
	/* sparsevec: the elements that are not zero, with their places */
	appendStringInfoChar(&buf, '{');
	p = vector + 1;
	for (i = 1; *p && *p != ']'; i++)
	{
		const char *end = strpbrk(p, ",]");
		char	   *num;

		if (end == NULL)
			end = p + strlen(p);
		num = pnstrdup(p, end - p);
		if (strtod(num, NULL) != 0)
			appendStringInfo(&buf, "%s%d:%s", buf.len > 1 ? "," : "", i, num);
		pfree(num);
		p = *end == ',' ? end + 1 : end;
	}
	appendStringInfo(&buf, "}/%d", i - 1);
	return buf.data;
}

/* ---- a request refused as a whole ---- */

/*
 * A request the provider refused as a whole (HTTP 400, 413 or 422): one
 * of its inputs may be at fault (over the model's limit), or the request
 * itself (an option the model does not take, such as dimensions).  Which
 * one is learnt from one input sent alone, the probe (EmbedProbeInput):
 * refused with the same words, the fault is the request's and every input
 * fails with it; otherwise the other inputs are split in half and sent
 * again, down to the input at fault, which fails alone.  Either way a
 * refusal that every input shares costs two requests, not one for each
 * input and more.
 */
bool
EmbedRefusedWhole(long status)
{
	return status == 400 || status == 413 || status == 422;
}

/*
 * The input sent alone to learn whose fault a refusal is: the one of
 * median size (estimated tokens), as an input at fault is at an end (too
 * long, or too short to be valid).  Its index among the n.
 */
int
EmbedProbeInput(const int64 *tokens, int n)
{
	int			below;
	int			i;
	int			j;

	/* the input with as many larger as smaller ones (ties by place) */
	for (i = 0; i < n; i++)
	{
		below = 0;
		for (j = 0; j < n; j++)
			if (tokens[j] < tokens[i] || (tokens[j] == tokens[i] && j < i))
				below++;
		if (below == n / 2)
			return i;
	}
	return 0;
}

/* ---- embed_many ---- */

typedef enum PackState
{
	PACK_READY,					/* to be sent at not_before */
	PACK_IN_FLIGHT,
	PACK_FINISHED				/* its rows wait to be returned */
} PackState;

/* One request of embed_many: some inputs, and once finished their rows. */
typedef struct EmbedPack
{
	dlist_node	node;			/* in the run's list of live packs */
	PackState	state;
	int			n;
	int		   *ords;			/* 0-based places of its inputs */
	MemoryContext ctx;			/* everything of the pack but this struct */
	LlmCall    *call;
	HttpTransfer *xfer;
	TimestampTz not_before;
	char	   *error;			/* the whole request's failure, or NULL */
	int			next_row;
	struct EmbedPack *next;		/* in the ready list or the finished queue */
	bool		probed;			/* made from a refused request: a refusal splits it */
	int		   *rest;			/* a probe: the other inputs of its request */
	int			nrest;
	char	   *refusal;		/* a probe: the words of that request's refusal */
} EmbedPack;

typedef struct EmbedRun
{
	char	  **inputs;			/* UTF-8; NULL for a NULL element */
	int			n;
	int			next_input;		/* the first input not yet in a pack */
	int		   *instant;		/* ords of rows known without a request */
	int			instant_head;
	int			instant_tail;
	EmbedPack  *ready;			/* packs to send, splits first */
	EmbedPack  *finished_head;	/* packs whose rows wait, in completion order */
	EmbedPack  *finished_tail;
	EmbedPack  *current;		/* the pack whose rows are being returned */
	dlist_head	live;			/* every pack not freed yet */
	int			in_flight;
	int			concurrency;
	int			per_request;
	int64		tokens_per_request;
	int			returned;
	char	   *model;
	char	   *options;		/* UTF-8 */
	MemoryContext ctx;			/* the SRF's multi-call context */
	ManyHold	hold;
	bool		released;
} EmbedRun;

/* Close every transfer still open; from every way out (idempotent). */
static void
run_release(void *arg)
{
	EmbedRun   *run = (EmbedRun *) arg;
	dlist_iter	it;

	if (run->released)
		return;
	run->released = true;
	dlist_foreach(it, &run->live)
	{
		EmbedPack  *p = dlist_container(EmbedPack, node, it.cur);

		if (p->xfer)
		{
			HttpRelease(p->xfer);
			p->xfer = NULL;
		}
	}
	HttpWatchClient(PGINVALID_SOCKET, false);
}

/*
 * The estimated tokens of an input, for packing requests under the
 * provider's tokens per request: the one estimate of tokens.c (the pack's
 * budget is reserved by the same).
 */
static int64
input_tokens(const char *input)
{
	return (int64) TokensEstimate(input, strlen(input));
}

/*
 * A pack of the given inputs: its request, and its call with the budget
 * reserved (an exhausted budget ends the statement).
 */
static EmbedPack *
pack_new(EmbedRun *run, const int *ords, int n)
{
	EmbedPack  *p = MemoryContextAllocZero(run->ctx, sizeof(EmbedPack));
	MemoryContext old;
	const char **texts;
	size_t		bytes = run->options ? strlen(run->options) : 0;
	int			i;

	p->n = n;
	p->state = PACK_READY;
	p->ctx = AllocSetContextCreate(run->ctx, "pg_llm embed_many request", ALLOCSET_DEFAULT_SIZES);
	dlist_push_tail(&run->live, &p->node);
	old = MemoryContextSwitchTo(p->ctx);
	p->ords = palloc(sizeof(int) * n);
	texts = palloc(sizeof(char *) * n);
	for (i = 0; i < n; i++)
	{
		p->ords[i] = ords[i];
		texts[i] = run->inputs[ords[i]];
		bytes += strlen(texts[i]);
	}
	p->call = EmbedCallCreate(RequestForEmbedding(texts, n, run->options), run->model, n,
							  LLM_MODE_MANY);
	UsageBegin(p->call, GetUserId(), bytes, 0);
	MemoryContextSwitchTo(old);
	return p;
}

/* Free a pack whose rows are out (or which was split). */
static void
pack_free(EmbedRun *run, EmbedPack *p)
{
	dlist_delete(&p->node);
	MemoryContextDelete(p->ctx);
	pfree(p);
}

static void ready_push(EmbedRun *run, EmbedPack *p);

/* Two packs of half the inputs each, sent first (refused ones are split). */
static void
pack_halves(EmbedRun *run, const int *ords, int n)
{
	int			half = n / 2;
	EmbedPack  *a = pack_new(run, ords, half);
	EmbedPack  *b = pack_new(run, ords + half, n - half);

	a->probed = b->probed = true;
	ready_push(run, b);
	ready_push(run, a);
}

/*
 * A pack is finished: queue its rows.  A probe's other inputs are split
 * in half: it was not refused with its request's words.
 */
static void
pack_finish(EmbedRun *run, EmbedPack *p)
{
	if (p->nrest > 0)
	{
		int			n = p->nrest;

		p->nrest = 0;
		pack_halves(run, p->rest, n);
	}
	p->state = PACK_FINISHED;
	p->next = NULL;
	if (run->finished_tail)
		run->finished_tail->next = p;
	else
		run->finished_head = p;
	run->finished_tail = p;
}

/* A pack fails as a whole, with a message in the server encoding. */
static void
pack_fail(EmbedRun *run, EmbedPack *p, const char *error)
{
	MemoryContext old = MemoryContextSwitchTo(p->ctx);

	p->error = pstrdup(error);
	p->call->error = p->error;
	UsageRecord(p->call, LLM_OUTCOME_ERROR);
	MemoryContextSwitchTo(old);
	pack_finish(run, p);
}

/*
 * The next pack of inputs not yet sent: up to per_request of them, fewer
 * when their estimated tokens would pass tokens_per_request (one input
 * goes alone whatever its size).  NULL and empty inputs are not sent:
 * their rows are known at once.  NULL when no input is left.
 */
static EmbedPack *
pack_form(EmbedRun *run)
{
	int		   *ords = palloc(sizeof(int) * run->per_request);
	int			n = 0;
	int64		tokens = 0;
	EmbedPack  *p = NULL;

	while (run->next_input < run->n)
	{
		int			i = run->next_input;
		const char *in = run->inputs[i];
		int64		t;

		if (in == NULL || LlmBlank(in, strlen(in)))
		{
			run->instant[run->instant_tail++] = i;
			run->next_input++;
			continue;
		}
		t = input_tokens(in);
		if (n > 0 && (n >= run->per_request || tokens + t > run->tokens_per_request))
			break;
		ords[n++] = i;
		tokens += t;
		run->next_input++;
	}
	if (n > 0)
		p = pack_new(run, ords, n);
	pfree(ords);
	return p;
}

/* Send a pack when it is its route's turn; else it stays ready. */
static void
pack_send(EmbedRun *run, EmbedPack *p)
{
	MemoryContext old = MemoryContextSwitchTo(p->ctx);
	LlmFailure	f;
	TimestampTz not_before;

	if (LlmCallTurn(p->call, &not_before, &f))
	{
		p->xfer = LlmSendAttempt(p->call, LlmCallRoute(p->call), false);
		p->xfer->user = p;
		p->state = PACK_IN_FLIGHT;
		run->in_flight++;
	}
	else if (not_before)
		p->not_before = not_before;
	else
		pack_fail(run, p, LlmFailureText(&f));
	MemoryContextSwitchTo(old);
}

/* Put a pack at the head of the ready list (splits go first). */
static void
ready_push(EmbedRun *run, EmbedPack *p)
{
	p->state = PACK_READY;
	p->next = run->ready;
	run->ready = p;
}

/*
 * A pack refused as a whole: its probe, one input sent alone, holding the
 * others until its answer (EmbedRefusedWhole).  A pack made from a
 * refused one, or of fewer than EMBED_PROBE_MIN_INPUTS inputs, is split
 * in half at once.
 */
static void
pack_refused(EmbedRun *run, EmbedPack *p, const char *error)
{
	int64	   *tokens;
	EmbedPack  *probe;
	int			k;
	int			i;
	int			j = 0;

	if (p->probed || p->n < EMBED_PROBE_MIN_INPUTS)
	{
		pack_halves(run, p->ords, p->n);
		pack_free(run, p);
		return;
	}
	tokens = palloc(sizeof(int64) * p->n);
	for (i = 0; i < p->n; i++)
		tokens[i] = input_tokens(run->inputs[p->ords[i]]);
	k = EmbedProbeInput(tokens, p->n);
	probe = pack_new(run, p->ords + k, 1);
	probe->probed = true;
	probe->rest = MemoryContextAlloc(probe->ctx, sizeof(int) * (p->n - 1));
	for (i = 0; i < p->n; i++)
		if (i != k)
			probe->rest[j++] = p->ords[i];
	probe->nrest = j;
	probe->refusal = MemoryContextStrdup(probe->ctx, error);
	pfree(tokens);
	pack_free(run, p);
	ready_push(run, probe);
}

/*
 * A transfer of a pack finished: done, again later, refused as a whole
 * (pack_refused), or failed.
 */
static void
pack_judge(EmbedRun *run, EmbedPack *p)
{
	MemoryContext old = MemoryContextSwitchTo(p->ctx);
	LlmFailure	f;
	TimestampTz not_before;
	LlmStep		step = LlmCallStep(p->call, p->xfer, false, &f, &not_before);

	HttpRelease(p->xfer);
	p->xfer = NULL;
	run->in_flight--;
	switch (step)
	{
		case LLM_STEP_DONE:
			UsageRecord(p->call, LLM_OUTCOME_OK);
			pack_finish(run, p);
			break;
		case LLM_STEP_AGAIN:
			p->not_before = not_before;
			ready_push(run, p);
			break;
		case LLM_STEP_FAILED:
			{
				char	   *error = LlmFailureText(&f);

				if (p->nrest > 0 && EmbedRefusedWhole(f.status) && strcmp(error, p->refusal) == 0)
				{
					/* the request's fault: every input of it fails */
					int		   *ords = palloc(sizeof(int) * (p->n + p->nrest));

					memcpy(ords, p->ords, sizeof(int) * p->n);
					memcpy(ords + p->n, p->rest, sizeof(int) * p->nrest);
					p->ords = ords;
					p->n += p->nrest;
					p->nrest = 0;
				}
				else if (p->n > 1 && EmbedRefusedWhole(f.status))
				{
					p->call->error = error;
					UsageRecord(p->call, LLM_OUTCOME_ERROR);
					MemoryContextSwitchTo(old);
					pack_refused(run, p, error);
					return;
				}
				pack_fail(run, p, error);
			}
			break;
		case LLM_STEP_SPENT:
			pack_fail(run, p, LlmFailureText(&f));
			break;
	}
	MemoryContextSwitchTo(old);
}

/*
 * Send what may go now: ready packs that are due (splits and retries
 * first), then new packs.  Returns when the next waiting pack is due (0:
 * none waits).
 */
static TimestampTz
run_fill(EmbedRun *run)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz next_due = 0;
	EmbedPack **link = &run->ready;

	while (*link && run->in_flight < run->concurrency)
	{
		EmbedPack  *p = *link;

		if (p->not_before > now)
		{
			if (next_due == 0 || p->not_before < next_due)
				next_due = p->not_before;
			link = &p->next;
			continue;
		}
		*link = p->next;
		p->next = NULL;
		pack_send(run, p);
		if (p->state == PACK_READY)
		{
			/* not its turn yet: back where it was */
			p->next = *link;
			*link = p;
			link = &p->next;
			if (next_due == 0 || p->not_before < next_due)
				next_due = p->not_before;
		}
	}
	while (run->in_flight < run->concurrency && run->next_input < run->n)
	{
		EmbedPack  *p = pack_form(run);

		if (p == NULL)
			break;
		pack_send(run, p);
		if (p->state == PACK_READY)
		{
			p->next = run->ready;
			run->ready = p;
			if (next_due == 0 || p->not_before < next_due)
				next_due = p->not_before;
		}
	}
	return next_due;
}

/* A row's values: its place, its vector or NULL, its error or NULL. */
typedef struct EmbedRow
{
	int			ord;			/* 0-based */
	const LlmVector *vector;
	char	   *error;
} EmbedRow;

/*
 * The next row, waiting on the providers for one if need be; false when
 * every row has been returned.
 */
static bool
run_next(EmbedRun *run, EmbedRow *row)
{
	for (;;)
	{
		TimestampTz next_due;
		HttpTransfer *t;

		memset(row, 0, sizeof(EmbedRow));
		if (run->instant_head < run->instant_tail)
		{
			row->ord = run->instant[run->instant_head++];
			if (run->inputs[row->ord] != NULL)
				row->error = "input must not be empty";
			return true;
		}
		if (run->current && run->current->next_row < run->current->n)
		{
			EmbedPack  *p = run->current;
			int			i = p->next_row++;

			row->ord = p->ords[i];
			if (p->error)
				row->error = p->error;
			else if (p->call->embed.vectors[i].error)
				row->error = vector_error(p->call, &p->call->embed.vectors[i]);
			else
				row->vector = &p->call->embed.vectors[i];
			return true;
		}
		if (run->current)
		{
			pack_free(run, run->current);
			run->current = NULL;
		}
		if (run->finished_head)
		{
			run->current = run->finished_head;
			run->finished_head = run->current->next;
			if (run->finished_head == NULL)
				run->finished_tail = NULL;
			continue;
		}
		if (run->returned >= run->n)
			return false;
		next_due = run_fill(run);
		if (run->instant_head < run->instant_tail || run->finished_head)
			continue;
		if (run->in_flight == 0 && run->ready == NULL)
			elog(ERROR, "embed_many has rows left but nothing to wait for");
		ManyWait(run->returned > 0, run->in_flight, next_due);
		while ((t = HttpNextDone()) != NULL)
		{
			EmbedPack  *p = (EmbedPack *) t->user;

			if (p && p->state == PACK_IN_FLIGHT && p->xfer == t)
				pack_judge(run, p);
		}
	}
}

/* The arguments, checked once for the whole statement. */
static EmbedRun *
run_start(FunctionCallInfo fcinfo, MemoryContext ctx)
{
	EmbedRun   *run = palloc0(sizeof(EmbedRun));
	Datum	   *elems;
	bool	   *elem_nulls;
	int			n;
	int			i;

	n = LlmArgTextArray(fcinfo, 0, "inputs", "Pass an array of texts, such as array_agg(body).",
						&elems, &elem_nulls);

	run->ctx = ctx;
	run->n = n;
	run->inputs = palloc(sizeof(char *) * Max(n, 1));
	run->instant = palloc(sizeof(int) * Max(n, 1));
	dlist_init(&run->live);
	run->concurrency = llm_many_concurrency;
	run->per_request = llm_embed_inputs_per_request;
	run->tokens_per_request = llm_embed_tokens_per_request;
	run->options = LlmArgJsonb(fcinfo, 2);
	run->model = pstrdup(EmbedResolveModel(PG_ARGISNULL(1) ? NULL :
										   text_to_cstring(PG_GETARG_TEXT_PP(1))));

	/* bad options or a model without embeddings fail before anything is sent */
	(void) RequestForEmbedding(NULL, 0, run->options);
	(void) EmbedRoutes(run->model);

	for (i = 0; i < n; i++)
		run->inputs[i] = elem_nulls[i] ? NULL : LlmToUtf8(TextDatumGetCString(elems[i]));
	return run;
}

/*
 * llm.embed_many(inputs text[], model text, options jsonb) returns table
 * (ord int, embedding real[], error text): one row per input, as its
 * request completes.
 */
Datum
pg_llm_embed_many(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	EmbedRun   *run;
	EmbedRow	row;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	HeapTuple	tuple;

	if (SRF_IS_FIRSTCALL())
	{
		MemoryContext old;
		TupleDesc	tupdesc;

		funcctx = SRF_FIRSTCALL_INIT();
		old = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		funcctx->tuple_desc = BlessTupleDesc(tupdesc);
		run = run_start(fcinfo, funcctx->multi_call_memory_ctx);
		ManyHoldStart(&run->hold, fcinfo, funcctx->multi_call_memory_ctx, run_release, run);
		funcctx->user_fctx = run;
		MemoryContextSwitchTo(old);
	}

	funcctx = SRF_PERCALL_SETUP();
	run = (EmbedRun *) funcctx->user_fctx;
	if (!run_next(run, &row))
	{
		ManyHoldEnd(&run->hold);
		SRF_RETURN_DONE(funcctx);
	}
	values[0] = Int32GetDatum(row.ord + 1);
	if (row.vector)
		values[1] = vector_datum(row.vector);
	else
		nulls[1] = true;
	if (row.error)
		values[2] = CStringGetTextDatum(row.error);
	else
		nulls[2] = true;
	tuple = heap_form_tuple(funcctx->tuple_desc, values, nulls);
	run->returned++;
	SRF_RETURN_NEXT(funcctx, HeapTupleGetDatum(tuple));
}

/* The settings of embedding calls. */
void
EmbedDefineSettings(void)
{
	DefineCustomStringVariable("llm.default_embedding_model",
							   "Model used when an embedding call names none.",
							   NULL, &llm_default_embedding_model, "",
							   PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.embed_inputs_per_request",
							"Inputs packed into one embedding request.",
							"Fewer when their estimated tokens would pass llm.embed_tokens_per_request.",
							&llm_embed_inputs_per_request, 100, 1, 2048,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("llm.embed_tokens_per_request",
							"Estimated input tokens packed into one embedding request at most.",
							"An input larger than this goes alone.",
							&llm_embed_tokens_per_request, 300000, 1, INT_MAX,
							PGC_USERSET, 0, NULL, NULL, NULL);
}
