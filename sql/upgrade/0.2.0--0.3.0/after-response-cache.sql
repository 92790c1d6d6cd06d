COMMENT ON TABLE llm.cache IS 'The response cache: one reply per request kept for llm.cache_ttl (or its model''s cache_ttl), about llm.cache_max_rows of them; each role sees the rows of its own requests; TRUNCATE empties it (calls then miss)';
COMMENT ON COLUMN llm.cache.key IS 'SHA-256 of the kind of reply, the role (none when shared), the provider, the upstream model and the request with its keys sorted (messages, system prompt, the options that change the reply)';
COMMENT ON COLUMN llm.cache.role_oid IS 'The role whose request the reply answered';
COMMENT ON COLUMN llm.cache.scope IS 'role: served to that role only; shared: to every role that sends the same request (llm.cache_scope when it was kept)';
COMMENT ON COLUMN llm.cache.kind IS 'text: the reply of llm.chat and llm.chat_many; response: the whole response of llm.chat_completion';
COMMENT ON COLUMN llm.cache.cost_usd IS 'What the call that got the reply cost: what each hit saves';
COMMENT ON COLUMN llm.cache.expires_at IS 'When it stops being served (NULL: when it is pruned for room)';
COMMENT ON COLUMN llm.model.cache_ttl IS 'How long the response cache serves a reply of this route (0: until it is pruned for room); NULL: llm.cache_ttl';
COMMENT ON COLUMN llm.usage.outcome IS 'ok, error, cancelled, retry (the item goes back to the queue), invalid (paid, but the answer broke its schema), refused (the provider refused the request or filtered its reply), or cache (served by the response cache, or by an identical call in flight: no request, no cost)';
