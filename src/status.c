/*-------------------------------------------------------------------------
 *
 * status.c
 *	  What pg_llm shows of itself, and the one thing an administrator
 *	  clears by hand: llm.worker_status() (the workers' slots, slots.c),
 *	  llm.usage_buffer_status() (the usage buffer, usage.c),
 *	  llm.provider_status() and llm.clear_cooldown() (the traffic
 *	  control, ratelimit.c).  Each module keeps its shared memory to
 *	  itself and hands out a copy; this file only makes rows of it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "config.h"
#include "ratelimit.h"
#include "slots.h"
#include "usage.h"

PG_FUNCTION_INFO_V1(pg_llm_worker_status);
PG_FUNCTION_INFO_V1(pg_llm_usage_buffer_status);
PG_FUNCTION_INFO_V1(pg_llm_provider_status);
PG_FUNCTION_INFO_V1(pg_llm_clear_cooldown);

/*
 * llm.worker_status(): one row per running queue worker and usage writer,
 * from shared memory.
 */
Datum
pg_llm_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SlotView	slots[LLM_MAX_WORKERS];
	int			n;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	n = SlotsLook(slots);
	for (i = 0; i < n; i++)
	{
		SlotView   *w = &slots[i];
		Datum		values[11];
		bool		nulls[11];

		memset(nulls, 0, sizeof(nulls));
		values[0] = Int32GetDatum(w->pid);
		values[1] = ObjectIdGetDatum(w->dboid);
		values[2] = TimestampTzGetDatum(w->started_at);
		values[3] = Int32GetDatum(w->in_flight);
		values[4] = Int32GetDatum(w->claimed);
		values[5] = Int64GetDatum(w->completed);
		values[6] = Int64GetDatum(w->failed);
		values[7] = Float8GetDatum(w->rate);
		if (w->last_error[0])
		{
			values[8] = CStringGetTextDatum(w->last_error);
			values[9] = TimestampTzGetDatum(w->last_error_at);
		}
		else
			nulls[8] = nulls[9] = true;
		values[10] = CStringGetTextDatum(w->usage_only ? "usage writer" : "queue worker");
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}

/*
 * llm.usage_buffer_status(): records not yet in llm.usage (waiting in
 * shared memory, kept by their process, or being written), records
 * dropped (only a call being cleaned up after an error that found no room
 * for a long time drops its record), and records that waited for room.
 */
Datum
pg_llm_usage_buffer_status(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	uint32		pending;
	int64		dropped;
	int64		waited;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	UsageBufferLook(&pending, &dropped, &waited);
	values[0] = Int32GetDatum((int32) pending);
	values[1] = Int64GetDatum(dropped);
	values[2] = Int64GetDatum(waited);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * llm.provider_status(): per provider of this database, its limits and
 * what the last minute held, what holds its senders back and why, and the
 * callers waiting.
 */
Datum
pg_llm_provider_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ListCell   *lc;

	InitMaterializedSRF(fcinfo, 0);
	foreach(lc, ConfigProviders())
	{
		const LlmProvider *p = lfirst(lc);
		RateLimitView v;
		Datum		values[11];
		bool		nulls[11];

		RateLimitLook(p, &v);
		memset(nulls, 0, sizeof(nulls));
		values[0] = CStringGetTextDatum(p->name);
		values[1] = BoolGetDatum(p->enabled);
		values[2] = Int32GetDatum(p->rpm_limit);
		nulls[2] = p->rpm_limit <= 0;
		values[3] = Int64GetDatum(v.requests);
		values[4] = Int32GetDatum(p->tpm_limit);
		nulls[4] = p->tpm_limit <= 0;
		values[5] = Int64GetDatum(v.tokens);
		values[6] = TimestampTzGetDatum(v.until);
		values[7] = CStringGetTextDatum(v.why ? v.why : "");
		nulls[6] = nulls[7] = !v.held;
		values[8] = Int32GetDatum(v.waiting);
		values[9] = Int64GetDatum(v.limited);
		values[10] = TimestampTzGetDatum(v.last_429);
		nulls[10] = v.last_429 == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}

/*
 * llm.clear_cooldown(provider): let a provider's requests go out again now
 * (see RateLimitClear), for every backend.
 */
Datum
pg_llm_clear_cooldown(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	ListCell   *lc;
	bool		found = false;

	foreach(lc, ConfigProviders())
	{
		const LlmProvider *p = lfirst(lc);

		if (strcmp(p->name, name) != 0)
			continue;
		found = true;
		RateLimitClear(p);
	}
	if (!found)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("provider \"%s\" does not exist", name),
				 errhint("See SELECT name FROM llm.provider.")));
	PG_RETURN_VOID();
}
