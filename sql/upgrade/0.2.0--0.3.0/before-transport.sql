-- Transport options: the secret ones (a proxy URL with its credentials,
-- client_key) are kept with the key; llm.provider_status shows the proxy
-- each provider's requests go through.
ALTER TABLE llm._provider_secret ADD COLUMN transport jsonb;
DROP VIEW llm.provider_status;
