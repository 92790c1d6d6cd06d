COMMENT ON COLUMN llm.usage.job_id IS 'The job (llm.job.id) whose queue item the call answered; NULL outside jobs';
COMMENT ON COLUMN llm.usage.job IS 'The name of that job when the call was recorded';
COMMENT ON COLUMN llm.usage.tag IS 'The call''s option tag: a label of the caller''s (a job''s items carry the job''s options), for usage_summary and cost_report by tag';
