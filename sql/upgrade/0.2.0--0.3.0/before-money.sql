-- Money not spent silently: the reason a call failed, in its usage row.
ALTER TABLE llm.usage ADD COLUMN error text;
-- llm.enqueue takes if_queued
DROP FUNCTION llm.enqueue(text, text, text, regclass, name, jsonb, jsonb, text);
CREATE INDEX queue_target ON llm.queue (target_table, target_key)
    WHERE job IS NULL AND target_table IS NOT NULL AND status IN ('pending', 'running', 'submitted');
