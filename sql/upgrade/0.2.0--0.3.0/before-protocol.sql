-- Protocol fidelity: the price of input read from a provider's prompt
-- cache and the multiple of the priority service tier on each route; what
-- llm.usage books of a reply besides its tokens in and out (cached input,
-- cache writes, reasoning, how it ended, the tier that served it).
ALTER TABLE llm.model
    ADD COLUMN cached_input_usd_per_mtok numeric CHECK (cached_input_usd_per_mtok >= 0),
    ADD COLUMN priority_price_factor numeric NOT NULL DEFAULT 2 CHECK (priority_price_factor >= 0);
ALTER TABLE llm.usage
    ADD COLUMN cached_input_tokens integer,
    ADD COLUMN cache_write_tokens integer,
    ADD COLUMN reasoning_tokens integer,
    ADD COLUMN finish_reason text,
    ADD COLUMN service_tier text;
DROP FUNCTION llm.add_model(text, text, text, integer, numeric, numeric, numeric);
-- provider batches that expire: counted per item (no attempt used), the
-- item sent realtime after llm.batch_max_expiries of them, and counted in
-- llm.batches
ALTER TABLE llm.queue ADD COLUMN batch_expiries integer NOT NULL DEFAULT 0;
ALTER TABLE llm._batch ADD COLUMN to_realtime integer NOT NULL DEFAULT 0;
DROP VIEW llm.batches;
