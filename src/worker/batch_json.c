/*-------------------------------------------------------------------------
 *
 * batch_json.c
 *	  Reading the providers' answers about batches: the batch or file
 *	  object (OpenAI's Batch and File, Anthropic's message_batch, a relay's
 *	  inline answer), a page of OpenAI's batch list, and the results array
 *	  of an inline answer.
 *
 *	  This file must not include utils/builtins.h (see llm_json.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "llm_json.h"
#include "worker/batch.h"

/* A string member, copied, or NULL. */
static char *
copy_string(json_object *obj, const char *key)
{
	const char *s = JsonGetString(obj, key);

	return s ? pstrdup(s) : NULL;
}

/* An integer member, or 0. */
static int
get_int(json_object *obj, const char *key)
{
	int64		v = 0;

	/* a provider's count, held to what a count can be */
	return JsonGetInt64(obj, key, &v) ? (int) Max(Min(v, PG_INT32_MAX), 0) : 0;
}

/*
 * The answer about a batch or a file, whatever the kind: NULL when the
 * body is not a JSON object.
 */
LlmBatchAnswer *
BatchReadAnswer(const char *body, size_t len)
{
	json_object *root = JsonParseOrNull(body, len);
	JsonGuard  *g;
	LlmBatchAnswer *a;
	json_object *counts;
	const char *ps;

	if (root == NULL || !json_object_is_type(root, json_type_object))
	{
		if (root)
			json_object_put(root);
		return NULL;
	}
	g = JsonGuardNew(root);
	a = palloc0(sizeof(LlmBatchAnswer));
	a->id = copy_string(root, "id");
	a->output_file_id = copy_string(root, "output_file_id");
	a->error_file_id = copy_string(root, "error_file_id");
	a->results_url = copy_string(root, "results_url");
	a->has_results = JsonGetArray(root, "results") != NULL;

	ps = JsonGetString(root, "processing_status");
	if (ps)
	{
		/* Anthropic: in_progress, canceling, ended */
		a->status = pstrdup(ps);
		a->ended = strcmp(ps, "ended") == 0;
		a->cancelling = strcmp(ps, "canceling") == 0;
		counts = JsonGetObject(root, "request_counts");
		a->succeeded = get_int(counts, "succeeded");
		a->errored = get_int(counts, "errored");
		a->expired = get_int(counts, "expired") + get_int(counts, "canceled");
	}
	else
	{
		/* OpenAI: validating ... completed, failed, expired, cancelled */
		const char *s = JsonGetString(root, "status");

		a->status = s ? pstrdup(s) : NULL;
		if (s)
		{
			a->ended = strcmp(s, "completed") == 0 || strcmp(s, "failed") == 0 ||
				strcmp(s, "expired") == 0 || strcmp(s, "cancelled") == 0;
			a->failed = strcmp(s, "failed") == 0;
			a->cancelling = strcmp(s, "cancelling") == 0;
		}
		counts = JsonGetObject(root, "request_counts");
		a->succeeded = get_int(counts, "completed");
		a->errored = get_int(counts, "failed");
		if (a->failed)
		{
			/* {"errors": {"data": [{"code", "message", "line"}]}} */
			json_object *data = JsonGetArray(JsonGetObject(root, "errors"), "data");
			json_object *first = data && json_object_array_length(data) > 0 ?
				json_object_array_get_idx(data, 0) : NULL;
			const char *m = JsonGetString(first, "message");
			const char *c = JsonGetString(first, "code");

			a->failure = psprintf("%s%s%s", m ? m : "the batch failed", c ? " " : "",
								  c ? psprintf("(%s)", c) : "");
		}
	}
	JsonGuardRelease(g);
	return a;
}

/*
 * A page of GET /batches: the id of the batch whose metadata carries our
 * token, or NULL; *after is the last id of the page when there are more.
 */
char *
BatchFindToken(const char *body, size_t len, const char *token, char **after)
{
	json_object *root = JsonParseOrNull(body, len);
	JsonGuard  *g;
	json_object *data;
	size_t		i,
				n;
	char	   *found = NULL;

	*after = NULL;
	if (root == NULL)
		return NULL;
	g = JsonGuardNew(root);
	data = JsonGetArray(root, "data");
	n = data ? json_object_array_length(data) : 0;
	for (i = 0; i < n && found == NULL; i++)
	{
		json_object *b = json_object_array_get_idx(data, i);
		const char *t = JsonGetString(JsonGetObject(b, "metadata"), "pg_llm_token");

		if (t && strcmp(t, token) == 0)
			found = copy_string(b, "id");
	}
	if (found == NULL && n > 0)
	{
		json_object *more;

		if (json_object_object_get_ex(root, "has_more", &more) && json_object_get_boolean(more))
			*after = copy_string(json_object_array_get_idx(data, n - 1), "id");
	}
	JsonGuardRelease(g);
	return found;
}

/* Each result of an inline answer, as JSON text, to fn. */
void
BatchEachResult(const char *body, size_t len,
				void (*fn) (void *arg, const char *line, size_t len), void *arg)
{
	json_object *root = JsonParseOrNull(body, len);
	JsonGuard  *g;
	json_object *results;
	size_t		i,
				n;

	if (root == NULL)
		return;
	g = JsonGuardNew(root);
	results = JsonGetArray(root, "results");
	n = results ? json_object_array_length(results) : 0;
	for (i = 0; i < n; i++)
	{
		const char *line = json_object_to_json_string_ext(json_object_array_get_idx(results, i),
														  JSON_C_TO_STRING_PLAIN);

		fn(arg, line, strlen(line));
	}
	JsonGuardRelease(g);
}

/*
 * The body that creates an OpenAI batch from an uploaded file, with our
 * token in its metadata (to find it again after a crash).
 */
char *
BatchCreateBody(const char *input_file_id, const char *endpoint, const char *token)
{
	json_object *o = json_object_new_object();
	json_object *meta = json_object_new_object();
	char	   *body;

	json_object_object_add(o, "input_file_id", json_object_new_string(input_file_id));
	json_object_object_add(o, "endpoint", json_object_new_string(endpoint));
	json_object_object_add(o, "completion_window", json_object_new_string("24h"));
	json_object_object_add(meta, "pg_llm_token", json_object_new_string(token));
	json_object_object_add(o, "metadata", meta);
	body = pstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return body;
}
