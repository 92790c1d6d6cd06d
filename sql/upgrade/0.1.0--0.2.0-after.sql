-- pg_llm 0.1.0 to 0.2.0, after the definitions: what needs the new
-- functions.

-- header values move from the options to the secret table
INSERT INTO llm._provider_secret AS s (provider, headers)
SELECT p.name, p.options -> 'headers' FROM llm.provider p WHERE p.options ? 'headers'
ON CONFLICT (provider) DO UPDATE SET headers = EXCLUDED.headers;
UPDATE llm.provider p SET headers = llm._header_names(p.options), options = p.options - 'headers'
WHERE p.options ? 'headers';
COMMENT ON TABLE llm.provider IS 'LLM endpoints pg_llm can call; keys and the values of extra headers are kept apart, in a table only the extension owner can read';
COMMENT ON COLUMN llm.provider.headers IS 'The names of the extra request headers sent to the provider; their values are secret';
COMMENT ON TABLE llm._provider_secret IS 'API keys of providers and the values of their extra headers; never granted to anyone';
COMMENT ON COLUMN llm.queue.leased_by IS 'The running worker that holds the item (a token of its life; a restarted server or worker has new ones)';
COMMENT ON TABLE llm.budget IS 'Monthly spending and call limits per role, and a cap on its queued items';

-- the privileges granted on the functions and views that were replaced
DO $$
DECLARE
    g jsonb;
BEGIN
    FOR g IN SELECT * FROM pg_catalog.jsonb_array_elements(
                 pg_catalog.current_setting('pg_llm.upgrade_grants')::jsonb)
    LOOP
        IF g ->> 'kind' = 'function' THEN
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I',
                (SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
                 WHERE p.pronamespace = 'llm'::regnamespace AND p.proname = g ->> 'name'),
                (g ->> 'grantee')::oid::regrole);
        ELSE
            EXECUTE pg_catalog.format('GRANT %s ON llm.%I TO %I', g ->> 'privilege', g ->> 'name',
                (g ->> 'grantee')::oid::regrole);
        END IF;
    END LOOP;
END;
$$;
COMMENT ON COLUMN llm.queue.via IS 'realtime: a call of its own; batch_api: through its provider''s batch API (half the price, answered within the provider''s window)';
COMMENT ON COLUMN llm.queue.batch_id IS 'The provider batch (llm.batches) that holds or held the item';
COMMENT ON COLUMN llm.model.batch_price_factor IS 'The share of the prices a request through the provider''s batch API costs (0.5: half price)';
COMMENT ON COLUMN llm.job.via IS 'How its items are sent: realtime calls, or the provider''s batch API';
