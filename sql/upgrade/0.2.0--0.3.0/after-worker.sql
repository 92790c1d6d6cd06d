-- Items answered before the update: their replies were paid for.
UPDATE llm.queue SET answered = true
 WHERE reply IS NOT NULL
   AND (status = 'done' OR (status = 'failed' AND error LIKE 'the reply could not be written back%'));
COMMENT ON COLUMN llm.queue.answered IS 'reply is the item''s paid answer: what is left is its write-back (put off after llm.writeback_timeout, or failed and given to llm.retry), done without a new call';
COMMENT ON COLUMN llm.queue.provider IS 'The provider the item is sent to (enqueue''s or the job''s provider =>): its route of the model, batch or realtime; NULL: the model''s routes in order (a batch goes to the first)';
COMMENT ON COLUMN llm.job.provider IS 'The provider its items go to (one of the model''s routes), batch or realtime; NULL: the model''s routes in order';
