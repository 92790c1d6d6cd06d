COMMENT ON COLUMN llm._provider_secret.transport IS 'The secret transport options: the proxy URL with its credentials, and client_key';
