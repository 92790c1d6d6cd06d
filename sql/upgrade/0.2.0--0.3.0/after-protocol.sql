-- Protocol fidelity: the comments of the new columns of llm.model and llm.usage,
-- and of the columns whose meaning they made precise.
COMMENT ON COLUMN llm.model.batch_price_factor IS 'The share of the prices a request through the provider''s batch API costs (0.5: half price); also the price of the flex service tier, which is billed at batch rates';
COMMENT ON COLUMN llm.model.cached_input_usd_per_mtok IS 'The price per million input tokens read from the provider''s prompt cache; NULL: the input price';
COMMENT ON COLUMN llm.model.priority_price_factor IS 'The multiple of the prices a call served at the priority service tier costs (2: twice)';
COMMENT ON COLUMN llm.usage.outcome IS 'ok, error, cancelled, retry (the item goes back to the queue), invalid (paid, but the answer broke its schema), or refused (the provider refused the request or filtered its reply)';
COMMENT ON COLUMN llm.usage.input_tokens IS 'Every input token the provider counted, those read from and written to its prompt cache included';
COMMENT ON COLUMN llm.usage.output_tokens IS 'Every output token, reasoning tokens included';
COMMENT ON COLUMN llm.usage.cached_input_tokens IS 'Of the input tokens, those read from the provider''s prompt cache (priced at the route''s cached_input_usd_per_mtok)';
COMMENT ON COLUMN llm.usage.cache_write_tokens IS 'Of the input tokens, those written to the provider''s prompt cache (Anthropic bills them at 1.25 times the input price, 2 times for a one-hour cache)';
COMMENT ON COLUMN llm.usage.reasoning_tokens IS 'Of the output tokens, those the model spent reasoning';
COMMENT ON COLUMN llm.usage.finish_reason IS 'How the reply ended, in the provider''s own word (stop, length, content_filter, tool_calls; end_turn, max_tokens, stop_sequence, tool_use, pause_turn, refusal)';
COMMENT ON COLUMN llm.usage.service_tier IS 'The service tier that served the call, as the provider reported it (default, flex, priority; standard, batch)';
COMMENT ON COLUMN llm.queue.batch_expiries IS 'Provider batches that expired (or were cancelled) before the item ran; none uses an attempt, and the llm.batch_max_expiries-th sends the item realtime (via becomes realtime)';
