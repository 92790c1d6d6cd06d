-- Provider batch APIs: each batch the worker sends, recorded (and
-- committed, with its items) before it is sent, so that after a crash it
-- is resumed and never sent twice while it may still answer.

CREATE TABLE llm._batch (
    id                bigserial PRIMARY KEY,
    token             text NOT NULL UNIQUE,
    provider          text NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('inline', 'openai', 'anthropic')),
    model             text NOT NULL,
    upstream_model    text NOT NULL,
    status            text NOT NULL DEFAULT 'preparing'
                      CHECK (status IN ('preparing', 'submitted', 'ended', 'split', 'failed', 'cancelled')),
    provider_batch_id text,
    provider_status   text,
    input_file_id     text,
    output_file_id    text,
    error_file_id     text,
    results_url       text,
    requests          integer NOT NULL,
    succeeded         integer NOT NULL DEFAULT 0,
    errored           integer NOT NULL DEFAULT 0,
    expired           integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    submitted_at      timestamptz,
    polled_at         timestamptz,
    finished_at       timestamptz,
    error             text,
    to_realtime       integer NOT NULL DEFAULT 0,
    task              text NOT NULL DEFAULT 'chat' CHECK (task IN ('chat', 'embed'))
);
CREATE INDEX batch_active ON llm._batch (id) WHERE status IN ('preparing', 'submitted');
COMMENT ON TABLE llm._batch IS 'Each provider batch the worker sends: its items are in llm.queue with its id; see llm.batches';
COMMENT ON COLUMN llm._batch.task IS 'chat, or embed: its requests are embeddings (endpoint /v1/embeddings), one input each';
COMMENT ON COLUMN llm._batch.token IS 'pg_llm''s own name for the batch, sent in its metadata where the provider keeps it, to find it again after a crash';

CREATE VIEW llm.batches AS
    SELECT b.id, b.provider, b.kind, b.model, b.upstream_model, b.status, b.provider_batch_id,
           b.provider_status, b.requests, b.succeeded, b.errored, b.expired, b.to_realtime,
           b.created_at, b.submitted_at, b.polled_at,
           -- a submitted batch is polled every llm.batch_poll_interval
           CASE WHEN b.status = 'submitted'
                THEN coalesce(b.polled_at, b.submitted_at)
                     + coalesce(nullif(current_setting('llm.batch_poll_interval', true), ''), '60s')::interval
           END AS next_poll_at,
           b.finished_at, b.error, b.task
    FROM llm._batch b
    ORDER BY b.id;
COMMENT ON VIEW llm.batches IS 'Each provider batch: kind (inline, openai, anthropic), the provider''s batch id and status, what happened to its requests (succeeded: answered; errored: failed, or sent again after an error or with a batch the provider refused; expired: expired or cancelled before they ran, sent again; to_realtime: of those, sent realtime after their last allowed expiry), when it was submitted, last polled and finished, and for a submitted batch when the worker polls it next (its last poll plus llm.batch_poll_interval), and its task (chat, or embed: embeddings)';
