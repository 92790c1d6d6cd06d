-- Jobs: the triggers of the jobs made before the update, calling the
-- extension's llm._job_trigger with the job's id (before-jobs.sql dropped
-- those that called the job's own functions).
DO $$
DECLARE
    j llm.job;
BEGIN
    FOR j IN SELECT * FROM llm.job WHERE track_changes ORDER BY id LOOP
        PERFORM llm._job_triggers(j);
    END LOOP;
END;
$$;
