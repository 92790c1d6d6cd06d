-- Transport options of providers: checked when given, the secret ones (a
-- proxy's credentials, client_key) kept with the key and shown masked,
-- and llm.provider_status naming the proxy each provider goes through.
-- Nothing here connects anywhere: test/transport_test.sh runs the
-- transports against nginx (TLS, HTTP/2) and tinyproxy.  (Errors without
-- their context: line numbers of the option check move with every option.)
\set SHOW_CONTEXT never

-- refused: bad values, a key without its certificate, turning checks off
SELECT llm.create_provider('t-bad', 'openai', 'https://h.example/v1', options => '{"proxy": "ftp://p.example:21"}');
SELECT llm.create_provider('t-bad', 'openai', 'https://h.example/v1', options => '{"proxy": "http://p.example:3128/path"}');
SELECT llm.create_provider('t-bad', 'openai', 'https://h.example/v1', options => '{"proxy": 3128}');
SELECT llm.create_provider('t-bad', 'openai', 'https://h.example/v1', options => '{"no_proxy": "a.example;b.example"}');
SELECT llm.create_provider('t-bad', 'openai', 'https://h.example/v1', options => '{"ca_file": "certs/ca.pem"}');
SELECT llm.create_provider('t-bad', 'openai', 'https://h.example/v1', options => '{"client_cert": "client.pem"}');
SELECT llm.create_provider('t-bad', 'openai', 'https://h.example/v1', options => '{"client_key": "/etc/pg_llm/client.key"}');
SELECT llm.create_provider('t-bad', 'openai', 'https://h.example/v1', options => '{"http_version": "3"}');
SELECT llm.create_provider('t-bad', 'openai', 'https://h.example/v1', options => '{"http_version": 2}');
SELECT llm.create_provider('t-bad', 'openai', 'https://h.example/v1', options => '{"ssl_verify": false}');
SELECT llm.create_provider('t-bad', 'openai', 'https://h.example/v1', options => '{"insecure": true}');
SELECT llm.create_provider('t-bad', 'openai', 'https://h.example/v1', options => '{"skip_tls_verify": true}');
SELECT llm.create_provider('t-bad', 'openai', 'https://h.example/v1',
                           options => '{"client_cert": "/etc/pg_llm/client.pem", "client_key": "[secret]"}');
SELECT llm.create_provider('t-bad', 'openai', 'https://h.example/v1', options => '{"proxy": "http://[secret]@p.example:3128"}');
SELECT count(*) FROM llm.provider WHERE name = 't-bad';

-- accepted; the proxy's credentials and the client key are shown masked
SELECT llm.create_provider('t-ok', 'openai', 'https://llm.internal.example:8443/v1', api_key => 'sk-t',
    options => '{"proxy": "http://alice:s3cret-pw@proxy.internal.example:3128", "no_proxy": "localhost,.corp.example",
                 "ca_file": "/etc/pg_llm/ca.pem", "client_cert": "/etc/pg_llm/client.pem",
                 "client_key": "-----BEGIN PRIVATE KEY-----\nMIIsecretkeymaterial\n-----END PRIVATE KEY-----\n",
                 "http_version": "2", "timeout_ms": 30000}');
SELECT jsonb_pretty(options) FROM llm.provider WHERE name = 't-ok';
SELECT options::text ~ 's3cret|MIIsecret|alice' AS secret_shown FROM llm.provider WHERE name = 't-ok';
SELECT transport ->> 'proxy' AS stored_proxy, transport ->> 'client_key' ~ 'MIIsecret' AS key_stored
FROM llm._provider_secret WHERE provider = 't-ok';

-- options given back as shown keep the stored secrets
SELECT llm.alter_provider('t-ok', options => (SELECT options || '{"timeout_ms": 5000}' FROM llm.provider WHERE name = 't-ok'));
SELECT transport ->> 'proxy' AS stored_proxy, transport ->> 'client_key' ~ 'MIIsecret' AS key_stored
FROM llm._provider_secret WHERE provider = 't-ok';
SELECT options ->> 'timeout_ms' AS timeout_ms FROM llm.provider WHERE name = 't-ok';
-- new options replace them; a provider without secrets keeps no secret row
SELECT llm.alter_provider('t-ok', options => '{"proxy": "socks5h://proxy.internal.example:1080"}');
SELECT options, (SELECT transport FROM llm._provider_secret WHERE provider = 't-ok') AS stored
FROM llm.provider WHERE name = 't-ok';
SELECT llm.create_provider('t-tls', 'openai', 'https://h.example/v1', options => '{"ca_file": "/etc/pg_llm/ca.pem"}');
SELECT llm.alter_provider('t-tls', options => '{"proxy": "http://bob:pw-12345@p.example:3128"}');
SELECT llm.alter_provider('t-tls', options => '{}');
SELECT count(*) AS secret_rows FROM llm._provider_secret WHERE provider = 't-tls';

-- the proxy each provider goes through, credentials removed; no_proxy
-- (libcurl's rules: host names and their subdomains, IP blocks, "*")
-- sends the hosts it names direct
SELECT llm.alter_provider('t-ok', options => '{"proxy": "http://alice:s3cret-pw@proxy.internal.example:3128"}');
SELECT llm.create_provider('t-direct', 'openai', 'https://api.corp.example/v1',
                           options => '{"proxy": "http://proxy.internal.example:3128", "no_proxy": "localhost, .corp.example"}');
SELECT llm.create_provider('t-suffix', 'openai', 'https://notcorp.example/v1',
                           options => '{"proxy": "http://proxy.internal.example:3128", "no_proxy": "corp.example"}');
SELECT llm.create_provider('t-cidr', 'openai', 'http://10.1.2.3:8000/v1',
                           options => '{"proxy": "http://proxy.internal.example:3128", "no_proxy": "10.0.0.0/8"}');
SELECT llm.create_provider('t-ip6', 'openai', 'http://[fd00::7]:8000/v1',
                           options => '{"proxy": "https://proxy.internal.example:3129", "no_proxy": "fd00::/8"}');
SELECT llm.create_provider('t-star', 'openai', 'https://api.example/v1',
                           options => '{"proxy": "socks5://proxy.internal.example:1080", "no_proxy": "*"}');
SELECT provider, proxy, proxy_source FROM llm.provider_status WHERE provider LIKE 't-%' ORDER BY provider;
SELECT count(*) AS shown FROM llm.provider_status WHERE proxy ~ 's3cret|alice|pw-12345';

SELECT llm.drop_provider(name) FROM llm.provider WHERE name LIKE 't-%' ORDER BY name;
