-- Do these columns contain all the columns of a unique index (plain, not
-- partial) of the table?  Then they identify at most one row.
CREATE FUNCTION llm._key_identifies_row(rel regclass, key_columns text[]) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_catalog.pg_index i
        WHERE i.indrelid = rel AND i.indisunique AND i.indisvalid
          AND i.indexprs IS NULL AND i.indpred IS NULL
          AND (SELECT bool_and(a.attname = ANY (key_columns))
               FROM unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) AS k(attnum)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum));
$$;
COMMENT ON FUNCTION llm._key_identifies_row(regclass, text[]) IS 'Whether some columns contain all the columns of a plain unique index of a table (so they identify at most one row)';

-- Jobs: keep a column of a table filled with a model's analysis.  A job
-- says, once, which rows to analyze with which prompt template and where
-- the answer goes; its triggers (track_changes) and llm.run_job queue the
-- rows, and the queue worker does the calls.  The README's "Jobs
-- reference" describes the behaviour; the comments below say how.
--
-- A job is its row of llm.job, known by its id: its items carry the id
-- (llm.queue.job_id), its triggers pass it to llm._job_trigger(), and
-- nothing else is made for it.  Everything that runs a job (llm.run_job,
-- the triggers) is the extension's own code (src/jobs.c): it reads the job
-- as the extension owner, runs the job's SQL (llm._job_sql) as the job's
-- owner in a security-restricted operation with search_path pinned, and
-- queues the rows through the one function that puts items into the
-- queue, with the owner's cap on queued items and the checks of the
-- target.  A job's owner owns nothing of it, so there is nothing of hers
-- that anyone else could be made to run.

CREATE TABLE llm.job (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL UNIQUE
                    CHECK (name ~ '^[A-Za-z0-9_.-]{1,40}$'),
    owner           regrole NOT NULL DEFAULT (pg_catalog.quote_ident(CURRENT_USER)::regrole),
    source_table    regclass NOT NULL,
    key_columns     name[] NOT NULL,
    prompt_template text NOT NULL,
    input_columns   name[],
    result_table    regclass,
    result_column   name,
    model           text,
    system          text,
    options         jsonb,
    track_changes   boolean NOT NULL DEFAULT true,
    via             text NOT NULL DEFAULT 'realtime' CHECK (via IN ('realtime', 'batch_api')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_run_at     timestamptz,
    provider        text,
    task            text NOT NULL DEFAULT 'chat' CHECK (task IN ('chat', 'embed')),
    spread_columns  name[]
);
COMMENT ON TABLE llm.job IS 'Analysis jobs: which rows of a table to send to a model with which prompt template, and the column the reply goes to; each role sees and drops the jobs of the roles it belongs to';
COMMENT ON COLUMN llm.job.id IS 'The job''s identity: its items and triggers refer to it (a name can be used again once the job is dropped)';
COMMENT ON COLUMN llm.job.owner IS 'The role the job runs as: its triggers and run_job read and write as this role, and its queue items are enqueued by it';
COMMENT ON COLUMN llm.job.input_columns IS 'The columns the prompt template refers to (derived from it)';
COMMENT ON COLUMN llm.job.result_table IS 'Where the result column is; NULL: the source table';
COMMENT ON COLUMN llm.job.model IS 'The model, resolved when the job was created (llm.default_model if none was given)';
COMMENT ON COLUMN llm.job.via IS 'How its items are sent: realtime calls, or the provider''s batch API';
COMMENT ON COLUMN llm.job.provider IS 'The provider its items go to (one of the model''s routes), batch or realtime; NULL: the model''s routes in order';
COMMENT ON COLUMN llm.job.spread_columns IS 'With a json_schema and no result_column: the columns of the result table each answer is spread over, named by the schema''s properties (derived from it); NULL: the answer goes into result_column';
COMMENT ON COLUMN llm.job.task IS 'chat: the rendered prompt is answered; embed: it is embedded, and its vector written into the result column (a row whose rendered input did not change is not embedded again)';
COMMENT ON COLUMN llm.job.last_run_at IS 'When llm.run_job last ran the job (the start of its transaction)';
SELECT pg_catalog.pg_extension_config_dump('llm.job', '');
SELECT pg_catalog.pg_extension_config_dump('llm.job_id_seq', '');

-- A role creates jobs with llm.create_job, as itself, and sees and drops
-- those of the roles whose rights it has; nobody updates a job (drop and
-- create it).  Rows inserted by anyone but a superuser (a restore) or
-- llm.create_job are refused by llm._job_prepare.
ALTER TABLE llm.job ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_jobs ON llm.job FOR SELECT
    USING (pg_catalog.pg_has_role(owner::oid, 'USAGE'));
CREATE POLICY create_own_jobs ON llm.job FOR INSERT
    WITH CHECK (owner::oid = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER));
CREATE POLICY drop_own_jobs ON llm.job FOR DELETE
    USING (pg_catalog.pg_has_role(owner::oid, 'USAGE'));
COMMENT ON POLICY own_jobs ON llm.job IS 'A role sees the jobs of the roles whose privileges it has';
COMMENT ON POLICY create_own_jobs ON llm.job IS 'A job belongs to the role that creates it';
COMMENT ON POLICY drop_own_jobs ON llm.job IS 'A role drops the jobs of the roles whose privileges it has';

-- Looking up a job's pending and running items by row, for run_job (not
-- twice) and for the triggers (a newer input replaces a pending item).  A
-- hash index: keys of any length, and it is small.
CREATE INDEX queue_job_key ON llm.queue USING hash (target_key)
    WHERE job_id IS NOT NULL AND status IN ('pending', 'running');
COMMENT ON INDEX llm.queue_job_key IS 'The pending and running items of jobs, by target row';
-- The finished items of jobs by time, for llm.job_status.
CREATE INDEX queue_job_finished ON llm.queue (job_id, status, finished_at)
    WHERE job_id IS NOT NULL AND finished_at IS NOT NULL;
COMMENT ON INDEX llm.queue_job_finished IS 'The finished items of jobs, by time';

-- Split a prompt template into its literal parts and its placeholders:
-- 'a {x} b {y}' gives parts {'a ', ' b ', ''} and columns {x, y}.
CREATE FUNCTION llm._job_parse_template(template text, OUT parts text[], OUT columns text[])
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i integer := 1;
    k integer;
    e integer;
    lit text := '';
    col text;
BEGIN
    parts := '{}';
    columns := '{}';
    IF template IS NULL THEN
        RAISE EXCEPTION 'prompt_template must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    LOOP
        k := regexp_instr(template, '[{}]', i);
        IF k = 0 THEN
            lit := lit || substr(template, i);
            EXIT;
        END IF;
        lit := lit || substr(template, i, k - i);
        IF substr(template, k, 2) IN ('{{', '}}') THEN
            lit := lit || substr(template, k, 1);
            i := k + 2;
            CONTINUE;
        END IF;
        IF substr(template, k, 1) = '}' THEN
            RAISE EXCEPTION 'unmatched "}" at character % of the prompt template', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {column} for a column''s value, and {{ or }} for a literal brace.';
        END IF;
        e := regexp_instr(template, '[{}]', k + 1);
        IF e = 0 OR substr(template, e, 1) = '{' THEN
            RAISE EXCEPTION 'unclosed "{" at character % of the prompt template', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {column} for a column''s value, and {{ or }} for a literal brace.';
        END IF;
        col := btrim(substr(template, k + 1, e - k - 1));
        IF col = '' THEN
            RAISE EXCEPTION 'empty placeholder at character % of the prompt template', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {column} for a column''s value, and {{ or }} for a literal brace.';
        END IF;
        parts := parts || lit;
        columns := columns || col;
        lit := '';
        i := e + 1;
    END LOOP;
    parts := parts || lit;
END;
$$;
COMMENT ON FUNCTION llm._job_parse_template(text) IS 'The literal parts and the placeholders of a job''s prompt template';

-- The SQL expression of a job's prompt over a row alias: the literal parts
-- and each placeholder's value as text, NULL as nothing.
CREATE FUNCTION llm._job_prompt_sql(template text, alias text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
    pieces text[] := '{}';
    i integer;
BEGIN
    t := llm._job_parse_template(template);
    FOR i IN 1 .. cardinality(t.parts) LOOP
        IF t.parts[i] <> '' THEN
            pieces := pieces || quote_literal(t.parts[i]);
        END IF;
        IF i <= cardinality(t.columns) THEN
            pieces := pieces || format('coalesce((%s.%I)::text, %L)', alias, t.columns[i], '');
        END IF;
    END LOOP;
    RETURN array_to_string(pieces, ' || ');
END;
$$;
COMMENT ON FUNCTION llm._job_prompt_sql(text, text) IS 'The SQL expression that renders a job''s prompt template for a row alias';

-- Columns formatted with a pattern (%1$I is the column) and joined.
CREATE FUNCTION llm._job_list(columns name[], pattern text, separator text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT string_agg(format(pattern, c), separator ORDER BY o)
    FROM unnest(columns) WITH ORDINALITY AS u(c, o);
$$;
COMMENT ON FUNCTION llm._job_list(name[], text, text) IS 'Column names formatted with a pattern and joined, for generated SQL';

-- Can a column of this type take a reply (as llm.enqueue checks)?
CREATE FUNCTION llm._job_storable(typid oid) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.typtype <> 'p'
    FROM pg_type t
    WHERE t.oid = CASE WHEN (SELECT d.typtype FROM pg_type d WHERE d.oid = typid) = 'd'
                       THEN (SELECT d.typbasetype FROM pg_type d WHERE d.oid = typid)
                       ELSE typid END;
$$;
COMMENT ON FUNCTION llm._job_storable(oid) IS 'Whether a column of this type can take a reply (any type but a pseudo-type: the reply is read by the type''s input function)';

-- The column of a table, or an error that lists the table's columns.
CREATE FUNCTION llm._job_column(tab regclass, col text, what text) RETURNS pg_attribute
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a pg_attribute;
BEGIN
    SELECT * INTO a FROM pg_attribute
    WHERE attrelid = tab AND attname = col AND attnum > 0 AND NOT attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% "%" of table % does not exist', what, col, tab
            USING ERRCODE = 'undefined_column',
                  HINT = format('The columns of %s are: %s.', tab,
                                (SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum)
                                 FROM pg_attribute WHERE attrelid = tab AND attnum > 0 AND NOT attisdropped));
    END IF;
    RETURN a;
END;
$$;
COMMENT ON FUNCTION llm._job_column(regclass, text, text) IS 'A column of a table, or an error listing the table''s columns';

-- Before a job is stored: refuse it unless llm.create_job (which runs as
-- the extension owner) or a superuser (a restore) stores it; derive its
-- input columns from the template, check what does not depend on
-- privileges or indexes (so that a restore of llm.job passes too), and
-- resolve and check the model and the options with llm.enqueue's own
-- checks.  It runs as the role that inserts (not SECURITY DEFINER), so
-- that it sees who that is.
CREATE FUNCTION llm._job_prepare() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
    c text;
    inputs name[] := '{}';
    target regclass;
    a pg_attribute;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = current_user AND r.rolsuper)
       AND NOT EXISTS (SELECT 1 FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner
                       WHERE n.nspname = 'llm' AND r.rolname = current_user) THEN
        RAISE EXCEPTION 'jobs are created with llm.create_job()'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'A row inserted into llm.job directly would skip the checks of llm.create_job.',
                  HINT = 'Call llm.create_job(name, source_table, key_columns, prompt_template, result_column, ...).';
    END IF;
    IF NEW.name IS NULL OR NEW.name !~ '^[A-Za-z0-9_.-]{1,40}$' THEN
        RAISE EXCEPTION 'invalid job name %', coalesce(quote_literal(NEW.name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use 1 to 40 letters, digits, "_", "." or "-".';
    END IF;
    IF NEW.source_table IS NULL THEN
        RAISE EXCEPTION 'source_table must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF (SELECT relkind FROM pg_class WHERE oid = NEW.source_table) NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'source % is not a table', NEW.source_table
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF NEW.result_table = NEW.source_table THEN
        NEW.result_table := NULL;
    END IF;
    target := coalesce(NEW.result_table, NEW.source_table);
    IF NEW.result_table IS NOT NULL
       AND (SELECT relkind FROM pg_class WHERE oid = NEW.result_table) NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'result % is not a table', NEW.result_table
            USING ERRCODE = 'wrong_object_type';
    END IF;

    -- the key
    IF coalesce(cardinality(NEW.key_columns), 0) = 0 OR array_position(NEW.key_columns, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'key_columns must name the columns that identify a row'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example ''{id}''.';
    END IF;
    IF cardinality(NEW.key_columns) > 50 THEN
        RAISE EXCEPTION 'a job''s key has at most 50 columns' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (SELECT count(DISTINCT k) FROM unnest(NEW.key_columns) k) < cardinality(NEW.key_columns) THEN
        RAISE EXCEPTION 'key_columns names a column twice' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH c IN ARRAY NEW.key_columns LOOP
        PERFORM llm._job_column(NEW.source_table, c, 'key column');
        IF NEW.result_table IS NOT NULL THEN
            PERFORM llm._job_column(NEW.result_table, c, 'key column');
        END IF;
    END LOOP;

    -- the template and its input columns
    t := llm._job_parse_template(NEW.prompt_template);
    IF cardinality(t.columns) = 0 THEN
        RAISE EXCEPTION 'the prompt template refers to no column'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Write {column} where the row''s value goes, as in ''Classify the sentiment of: {body}''.';
    END IF;
    FOREACH c IN ARRAY t.columns LOOP
        a := llm._job_column(NEW.source_table, c, 'column');
        IF NOT c = ANY (inputs) THEN
            IF NEW.track_changes AND a.attgenerated <> '' THEN
                RAISE EXCEPTION 'input column "%" of table % is generated', c, NEW.source_table
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Refer to the columns it is computed from, or create the job with track_changes => false.';
            END IF;
            inputs := inputs || c::name;
        END IF;
    END LOOP;
    NEW.input_columns := inputs;

    -- the result: with a json_schema and no result_column, each answer is
    -- spread over the columns its schema's properties name (as llm.enqueue
    -- spreads one): each a column of the result table that can take its
    -- member, neither a key nor (in the source table) an input column
    NEW.spread_columns := NULL;
    IF NEW.result_column IS NULL AND coalesce(NEW.task, 'chat') = 'chat'
       AND jsonb_typeof(NEW.options) = 'object' AND NEW.options ? 'json_schema' THEN
        IF jsonb_typeof(NEW.options -> 'json_schema' -> 'properties') IS DISTINCT FROM 'object'
           OR NOT EXISTS (SELECT 1 FROM jsonb_object_keys(NEW.options -> 'json_schema' -> 'properties')) THEN
            RAISE EXCEPTION 'an answer spread over columns needs a json_schema with properties'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Name the columns to write as the properties of the schema, or give result_column.';
        END IF;
        FOR c IN SELECT k FROM jsonb_object_keys(NEW.options -> 'json_schema' -> 'properties') k ORDER BY k LOOP
            IF octet_length(c) >= 64 THEN
                RAISE EXCEPTION 'property "%" of the json_schema is longer than a column name', c
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Each property of the schema names a column of the result table.';
            END IF;
            IF NOT EXISTS (SELECT 1 FROM pg_attribute
                           WHERE attrelid = target AND attname = c AND attnum > 0 AND NOT attisdropped) THEN
                RAISE EXCEPTION 'property "%" of the json_schema names no column of table %', c, target
                    USING ERRCODE = 'undefined_column',
                          DETAIL = 'Without result_column, each answer is spread over the columns its properties name.',
                          HINT = format('The columns of %s are: %s.', target,
                                        (SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum)
                                         FROM pg_attribute WHERE attrelid = target AND attnum > 0 AND NOT attisdropped));
            END IF;
            a := llm._job_column(target, c, 'column');
            IF NOT llm._job_storable(a.atttypid) THEN
                RAISE EXCEPTION 'column "%" of table % cannot take a reply', c, target
                    USING ERRCODE = 'datatype_mismatch',
                          DETAIL = format('Its type is %s.', format_type(a.atttypid, a.atttypmod));
            END IF;
            IF a.attgenerated <> '' OR a.attidentity = 'a' THEN
                RAISE EXCEPTION 'column "%" of table % is generated', c, target
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Each property of the schema names a column the answers are written into.';
            END IF;
            IF c = ANY (NEW.key_columns) THEN
                RAISE EXCEPTION 'property "%" of the json_schema names a key column', c
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'An answer cannot change which row it belongs to: take the property out of the schema.';
            END IF;
            IF NEW.result_table IS NULL AND c = ANY (inputs) THEN
                RAISE EXCEPTION 'property "%" of the json_schema names an input column of the prompt template', c
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'A job cannot write into a column its prompt reads: each reply would queue the row again.';
            END IF;
            NEW.spread_columns := coalesce(NEW.spread_columns, '{}') || c::name;
        END LOOP;
    END IF;

    -- the result column
    IF NEW.spread_columns IS NULL AND NEW.result_column IS NULL AND NEW.result_table IS NOT NULL THEN
        SELECT CASE WHEN count(*) = 1 THEN min(attname) END INTO NEW.result_column
        FROM pg_attribute
        WHERE attrelid = NEW.result_table AND attnum > 0 AND NOT attisdropped
          AND attgenerated = '' AND NOT attname = ANY (NEW.key_columns);
        IF NEW.result_column IS NULL THEN
            RAISE EXCEPTION 'result_column is needed: result table % has no single column besides the key', NEW.result_table
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF NEW.spread_columns IS NOT NULL THEN
        -- the columns an answer is spread over are checked above
        NEW.result_column := NULL;
    ELSIF NEW.result_column IS NULL THEN
        RAISE EXCEPTION 'result_column must name the column the replies go to'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give result_column, and result_table to write them into a separate table (or, with a json_schema, leave it out to spread each answer over the columns its properties name).';
    ELSE
        a := llm._job_column(target, NEW.result_column, 'result column');
        IF NOT llm._job_storable(a.atttypid) THEN
            RAISE EXCEPTION 'column "%" of table % cannot take a reply', NEW.result_column, target
                USING ERRCODE = 'datatype_mismatch',
                      DETAIL = format('Its type is %s.', format_type(a.atttypid, a.atttypmod));
        END IF;
        IF a.attgenerated <> '' OR a.attidentity = 'a' THEN
            RAISE EXCEPTION 'result column "%" of table % is generated', NEW.result_column, target
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF NEW.result_column = ANY (NEW.key_columns) THEN
            RAISE EXCEPTION 'result column "%" is a key column', NEW.result_column
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF NEW.result_table IS NULL AND NEW.result_column = ANY (inputs) THEN
            RAISE EXCEPTION 'result column "%" is an input column of the prompt template', NEW.result_column
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A job cannot write into a column its prompt reads: each reply would queue the row again.';
        END IF;
    END IF;

    -- the model, the system prompt and the options, as llm.enqueue (or
    -- llm.enqueue_embedding) checks them; the model is resolved now
    -- (llm.default_model, or llm.default_embedding_model, if none is given)
    IF NEW.options IS NOT NULL AND jsonb_typeof(NEW.options) <> 'object' THEN
        RAISE EXCEPTION 'options must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.task IS NULL OR NEW.task NOT IN ('chat', 'embed') THEN
        RAISE EXCEPTION 'task must be "chat" or "embed"'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'chat sends the rendered prompt to a model; embed writes its embedding into the result column.';
    END IF;
    IF NEW.task = 'embed' THEN
        IF NEW.system IS NOT NULL THEN
            RAISE EXCEPTION 'an embedding job has no system prompt'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'The prompt template renders the text to embed; leave system out.';
        END IF;
        NEW.model := llm._job_check_embedding(NEW.model, NEW.options, NEW.via, target, NEW.result_column);
    ELSE
        NEW.model := llm._job_check_request(NEW.model, NEW.system, NEW.options, NEW.via);
    END IF;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION llm._job_prepare() IS 'Trigger: derive a job''s input columns, check its columns, resolve and check its model and options';

-- A table in a FROM clause of a job's SQL: only its own rows for a table
-- that other tables may inherit from (their rows are not the job's, and
-- their keys would name rows the write-back cannot reach); a partitioned
-- table is read whole.
CREATE FUNCTION llm._job_only(rel regclass) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN c.relkind = 'p' THEN '' ELSE 'ONLY ' END || rel::text
    FROM pg_class c WHERE c.oid = rel;
$$;
COMMENT ON FUNCTION llm._job_only(regclass) IS 'A table as a job''s SQL reads it: ONLY its own rows, unless it is partitioned';

-- The statement of a job with a result table that adds the key rows the
-- result table lacks, for the rows (alias s) of a FROM clause.
CREATE FUNCTION llm._job_add_keys_sql(j llm.job, from_clause text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format($f$INSERT INTO %1$s AS x (%2$s)
SELECT %3$s FROM %4$s
WHERE num_nulls(%3$s) = 0 AND num_nonnulls(%5$s) > 0
  AND NOT EXISTS (SELECT 1 FROM %6$s AS x WHERE %7$s)
ON CONFLICT DO NOTHING$f$,
        j.result_table, llm._job_list(j.key_columns, '%1$I', ', '),
        llm._job_list(j.key_columns, 's.%1$I', ', '),
        from_clause,
        llm._job_list(j.input_columns, 's.%1$I', ', '),
        llm._job_only(j.result_table),
        llm._job_list(j.key_columns, 'x.%1$I = s.%1$I', ' AND '));
$$;
COMMENT ON FUNCTION llm._job_add_keys_sql(llm.job, text) IS 'The statement that adds missing key rows to a job''s result table';

-- The SQL of a job, which src/jobs.c runs as the job's owner (in a
-- security-restricted operation, search_path pinned) for llm.run_job and
-- the job's triggers; s is the source row, x the result table's row.
-- statements, by position:
--   1  why the owner may not run the job now (NULL: it may), and whether
--      row-level security applies to it on the source and on the target
--   2  run_job: add the key rows the result table lacks
--   3  run_job: the rows to queue (prompt, key)
--   4  insert trigger: add the key rows the result table lacks (new_rows)
--   5  insert trigger: the rows to queue
--   6  row trigger, changed input, result table: the result is reset
--   7  row trigger, inserted row, result table: whether it has a result
--   8  row trigger, result table: add the key row
--   9  row trigger: the row to queue (an empty prompt only replaces a
--      pending item)
--  10  the alias of the row written back in 3 and 5
--  11  row trigger, result table with row-level security: whether the
--      owner may update the result row (FOR KEY SHARE applies the UPDATE
--      policies)
--  12  row trigger of an embedding job: the row's rendered input and key,
--      whatever its result (to tell whether the input really changed)
-- The row triggers' statements take the row's values as parameters, in
-- the order of row_columns.
CREATE FUNCTION llm._job_sql(j llm.job, OUT statements text[], OUT row_columns name[])
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    sep boolean := j.result_table IS NOT NULL;
    tgt regclass := coalesce(j.result_table, j.source_table);
    src_only text := llm._job_only(j.source_table);
    tgt_only text := llm._job_only(coalesce(j.result_table, j.source_table));
    -- the columns the answers go to: the result column, or those an
    -- answer is spread over; a row has its result when one is not NULL
    results name[] := coalesce(j.spread_columns, ARRAY[j.result_column]);
    res_null text := llm._job_list(results, CASE WHEN j.result_table IS NULL THEN 's' ELSE 'x' END || '.%1$I IS NULL',
                                   ' AND ');
    results_text text := llm._job_list(results, '%1$I', ', ');
    keys_s text := llm._job_list(j.key_columns, 's.%1$I', ', ');
    inputs_s text := llm._job_list(j.input_columns, 's.%1$I', ', ');
    key_json text := format('jsonb_build_object(%s)', llm._job_list(j.key_columns, '%1$L, s.%1$I', ', '));
    key_join text := llm._job_list(j.key_columns, 'x.%1$I = s.%1$I', ' AND ');
    prompt text := llm._job_prompt_sql(j.prompt_template, 's');
    join_x text := CASE WHEN j.result_table IS NULL THEN ''
                        ELSE format(' JOIN %s AS x ON (%s)', llm._job_only(j.result_table), key_join) END;
    owner_name text := j.owner::text;
    params text;
    may_write text;
BEGIN
    row_columns := j.key_columns
        || ARRAY(SELECT c FROM unnest(j.input_columns) AS c WHERE NOT c = ANY (j.key_columns));
    IF NOT sep THEN
        row_columns := row_columns || results;
    END IF;
    params := format('(SELECT %s) AS s',
                     (SELECT string_agg(format('$%s AS %I', o, c), ', ' ORDER BY o)
                      FROM unnest(row_columns) WITH ORDINALITY AS u(c, o)));
    -- the write-back reads the key and updates the result; with a result
    -- table the job also adds its key rows
    may_write := llm._job_list(j.key_columns, format('has_column_privilege(%s::oid, %%1$L, ''SELECT'')', tgt::oid), ' AND ')
        || CASE WHEN sep THEN ' AND ' || llm._job_list(j.key_columns,
                   format('has_column_privilege(%s::oid, %%1$L, ''INSERT'')', tgt::oid), ' AND ') ELSE '' END
        || ' AND ' || llm._job_list(results, format('has_column_privilege(%s::oid, %%1$L, ''UPDATE'')', tgt::oid), ' AND ');
    statements[1] := format($f$SELECT CASE
    WHEN NOT has_schema_privilege(%1$s::oid, 'USAGE') THEN %2$L
    WHEN NOT (%3$s) THEN %4$L
    WHEN NOT has_schema_privilege(%5$s::oid, 'USAGE') THEN %6$L
    WHEN NOT (%7$s) THEN %8$L END AS denied,
    row_security_active(%9$s::oid) AS source_rls, row_security_active(%10$s::oid) AS target_rls$f$,
        (SELECT c.relnamespace FROM pg_class c WHERE c.oid = j.source_table),
        format('role %s has no USAGE on schema %s', owner_name,
               (SELECT quote_ident(n.nspname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.oid = j.source_table)),
        llm._job_list(j.key_columns || j.input_columns,
                      format('has_column_privilege(%s::oid, %%1$L, ''SELECT'')', j.source_table::oid), ' AND '),
        format('role %s may not read the columns of %s that the job reads', owner_name, j.source_table),
        (SELECT c.relnamespace FROM pg_class c WHERE c.oid = tgt),
        format('role %s has no USAGE on schema %s', owner_name,
               (SELECT quote_ident(n.nspname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.oid = tgt)),
        may_write,
        CASE WHEN sep
             THEN format('role %s may not write the result table %s (INSERT on the key columns, UPDATE on %s)',
                         owner_name, tgt, results_text)
             ELSE format('role %s may not write the results into %s (UPDATE on %s)', owner_name, tgt, results_text) END,
        j.source_table::oid, tgt::oid);
    IF sep THEN
        statements[2] := llm._job_add_keys_sql(j, src_only || ' AS s');
    END IF;
    statements[3] := format('SELECT %s AS prompt, %s AS key FROM %s AS s%s '
                            'WHERE %s AND num_nulls(%s) = 0 AND num_nonnulls(%s) > 0',
                            prompt, key_json, src_only, join_x, res_null, keys_s, inputs_s);
    IF sep THEN
        statements[4] := llm._job_add_keys_sql(j, 'new_rows AS s');
    END IF;
    statements[5] := format('SELECT %s AS prompt, %s AS key FROM new_rows AS s%s '
                            'WHERE %s AND num_nulls(%s) = 0 AND num_nonnulls(%s) > 0',
                            prompt, key_json, join_x, res_null, keys_s, inputs_s);
    IF sep THEN
        statements[6] := format('UPDATE %s AS x SET %s FROM %s WHERE %s AND NOT (%s)',
                                tgt_only, llm._job_list(results, '%1$I = NULL', ', '), params, key_join, res_null);
        statements[7] := format('SELECT EXISTS (SELECT 1 FROM %s AS x, %s WHERE %s AND NOT (%s))',
                                tgt_only, params, key_join, res_null);
        statements[8] := llm._job_add_keys_sql(j, params);
    END IF;
    statements[9] := format('SELECT CASE WHEN %snum_nonnulls(%s) > 0 THEN %s ELSE %L END AS prompt, %s AS key '
                            'FROM %s WHERE num_nulls(%s) = 0',
                            CASE WHEN sep THEN '' ELSE res_null || ' AND ' END,
                            inputs_s, prompt, '', key_json, params, keys_s);
    statements[10] := CASE WHEN sep THEN 'x' ELSE 's' END;
    IF sep THEN
        statements[11] := format('SELECT 1 FROM %s AS x, %s WHERE %s FOR KEY SHARE OF x',
                                 tgt_only, params, key_join);
    END IF;
    statements[12] := format('SELECT CASE WHEN num_nonnulls(%s) > 0 THEN %s ELSE %L END AS prompt, %s AS key '
                             'FROM %s WHERE num_nulls(%s) = 0',
                             inputs_s, prompt, '', key_json, params, keys_s);
END;
$$;
COMMENT ON FUNCTION llm._job_sql(llm.job) IS 'The statements a job runs as its owner (for llm.run_job and its triggers), and the columns its row triggers pass';

-- The triggers of a job with track_changes on its source table, calling
-- the extension's trigger function with the job's id (created by the
-- extension owner: nobody else may execute llm._job_trigger()).
CREATE FUNCTION llm._job_triggers(j llm.job) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    func text := format('llm._job_trigger(%L)', j.id::text);
    trig text := 'llm_job_' || j.name;
    inputs text;
    changed text;
BEGIN
    SELECT string_agg(quote_ident(k), ', ' ORDER BY o),
           format('NOT record_image_eq(ROW(%s), ROW(%s))',
                  string_agg('OLD.' || quote_ident(k), ', ' ORDER BY o),
                  string_agg('NEW.' || quote_ident(k), ', ' ORDER BY o))
    INTO inputs, changed
    FROM unnest(j.input_columns) WITH ORDINALITY AS u(k, o);
    IF (SELECT relkind FROM pg_class WHERE oid = j.source_table) = 'p' THEN
        -- a row trigger is cloned to every partition (also those attached
        -- later), so rows inserted into a partition directly are seen too;
        -- a statement trigger of the parent would miss them
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s FOR EACH ROW %s EXECUTE FUNCTION %s',
                       trig || '_insert', j.source_table,
                       CASE WHEN j.result_table IS NULL
                            THEN format('WHEN (%s)', llm._job_list(coalesce(j.spread_columns, ARRAY[j.result_column]),
                                                                   'NEW.%1$I IS NULL', ' AND '))
                            ELSE '' END,
                       func);
    ELSE
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION %s',
                       trig || '_insert', j.source_table, func);
    END IF;
    IF j.result_table IS NULL THEN
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OF %s ON %s FOR EACH ROW WHEN (%s) '
                       'EXECUTE FUNCTION %s',
                       trig || '_reset', inputs, j.source_table, changed, func);
    END IF;
    EXECUTE format('CREATE TRIGGER %I AFTER UPDATE OF %s ON %s FOR EACH ROW WHEN (%s) '
                   'EXECUTE FUNCTION %s',
                   trig || '_update', inputs, j.source_table, changed, func);
END;
$$;
COMMENT ON FUNCTION llm._job_triggers(llm.job) IS 'Create the triggers of a job that tracks changes on its source table';

-- The work of llm.create_job (src/jobs.c), run as the extension owner for
-- the calling role: the definition (checked by llm._job_prepare, which
-- also serves restores of llm.job), then what the calling role, which the
-- job will run as, must be allowed to do, then the triggers.  Returns the
-- job's id and a statement that src/jobs.c runs as the calling role (the
-- key columns can be copied and compared across the two tables).
CREATE FUNCTION llm._job_create(
    caller oid, name text, source_table regclass, key_columns text[], prompt_template text,
    result_column name, result_table regclass, model text, system text, options jsonb,
    track_changes boolean, via text, task text, provider text, OUT id bigint, OUT check_sql text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j llm.job;
    target regclass;
    c name;
    nsp name;
    caller_name text := caller::regrole::text;
BEGIN
    BEGIN
        INSERT INTO llm.job AS jj (name, owner, source_table, key_columns, prompt_template, result_table,
                                   result_column, model, system, options, track_changes, via, task, provider)
        VALUES (_job_create.name, caller::regrole, _job_create.source_table, _job_create.key_columns::name[],
                _job_create.prompt_template, _job_create.result_table, _job_create.result_column,
                _job_create.model, _job_create.system, _job_create.options,
                coalesce(_job_create.track_changes, true), coalesce(_job_create.via, 'realtime'),
                coalesce(_job_create.task, 'chat'), _job_create.provider)
        RETURNING * INTO j;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'job "%" already exists', _job_create.name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Job names are shared by all roles: drop it first with llm.drop_job(), or choose another name.';
    END;
    id := j.id;
    target := coalesce(j.result_table, j.source_table);

    -- the key identifies one row, in the source and in the result table:
    -- it contains all the columns of a unique index (plain, not partial)
    IF NOT llm._key_identifies_row(j.source_table, j.key_columns) THEN
        RAISE EXCEPTION 'key_columns do not identify one row of table %', j.source_table
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'No primary key or unique index of the table is made of the key''s columns.',
                  HINT = 'Use the primary key''s columns, such as ''{id}''.';
    END IF;
    IF j.result_table IS NOT NULL THEN
        IF NOT llm._key_identifies_row(j.result_table, j.key_columns) THEN
            RAISE EXCEPTION 'key_columns do not identify one row of result table %', j.result_table
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'No primary key or unique index of the table is made of the key''s columns.',
                      HINT = 'Give the result table a primary key on the key columns.';
        END IF;
        SELECT a.attname INTO c FROM pg_attribute a
        WHERE a.attrelid = j.result_table AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''
          AND NOT a.attname = ANY (j.key_columns || coalesce(j.spread_columns, ARRAY[j.result_column]))
        ORDER BY a.attnum LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'column "%" of result table % is NOT NULL without a default', c, j.result_table
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'The job adds the key rows the result table lacks, with nothing else in them.';
        END IF;
    END IF;

    -- the calling role, which the job will run as, may do what the job does
    FOR nsp IN SELECT DISTINCT n.nspname FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace
               WHERE r.oid IN (j.source_table, target) ORDER BY 1 LOOP
        IF NOT has_schema_privilege(caller, nsp, 'USAGE') THEN
            RAISE EXCEPTION 'permission denied for schema %', quote_ident(nsp)
                USING ERRCODE = 'insufficient_privilege',
                      HINT = format('A job runs with the rights of the role that creates it; %s needs USAGE on the schema.', caller_name);
        END IF;
    END LOOP;
    FOREACH c IN ARRAY j.key_columns || j.input_columns LOOP
        IF NOT has_column_privilege(caller, j.source_table, c, 'SELECT') THEN
            RAISE EXCEPTION 'permission denied to read column "%" of table %', c, j.source_table
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'A job runs with the rights of the role that creates it.';
        END IF;
    END LOOP;
    FOREACH c IN ARRAY j.key_columns LOOP
        IF NOT has_column_privilege(caller, target, c, 'SELECT') THEN
            RAISE EXCEPTION 'permission denied to read column "%" of table %', c, target
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'A job runs with the rights of the role that creates it.';
        END IF;
        IF j.result_table IS NOT NULL AND NOT has_column_privilege(caller, target, c, 'INSERT') THEN
            RAISE EXCEPTION 'permission denied to insert into column "%" of table %', c, target
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'The job adds the key rows the result table lacks, with the rights of the role that creates it.';
        END IF;
    END LOOP;
    FOREACH c IN ARRAY coalesce(j.spread_columns, ARRAY[j.result_column]) LOOP
        IF NOT has_column_privilege(caller, target, c, 'UPDATE') THEN
            RAISE EXCEPTION 'permission denied to update column "%" of table %', c, target
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'The worker writes replies back with the rights of the job''s owner, the role that creates it.';
        END IF;
    END LOOP;
    IF j.result_table IS NOT NULL THEN
        check_sql := (SELECT format('EXPLAIN INSERT INTO %s AS x (%s) SELECT %s FROM %s AS s '
                                    'WHERE NOT EXISTS (SELECT 1 FROM %s AS x WHERE %s)',
                                    target, string_agg(quote_ident(k), ', ' ORDER BY o),
                                    string_agg('s.' || quote_ident(k), ', ' ORDER BY o), j.source_table, target,
                                    string_agg(format('x.%1$I = s.%1$I', k), ' AND ' ORDER BY o))
                      FROM unnest(j.key_columns) WITH ORDINALITY AS u(k, o));
    END IF;

    IF j.track_changes THEN
        IF NOT has_table_privilege(caller, j.source_table, 'TRIGGER') THEN
            RAISE EXCEPTION 'permission denied to create triggers on table %', j.source_table
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'track_changes puts triggers on the source table; create the job with track_changes => false and run it with llm.run_job().';
        END IF;
        PERFORM llm._job_triggers(j);
    END IF;
END;
$$;
COMMENT ON FUNCTION llm._job_create(oid, text, regclass, text[], text, name, regclass, text, text, jsonb, boolean, text, text, text) IS 'The work of llm.create_job, run as the extension owner for the calling role';

-- After a job is deleted: drop its triggers.
CREATE FUNCTION llm._job_uninstall() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tg record;
    unsafe text;
BEGIN
    FOR tg IN SELECT t.tgname, t.tgrelid::regclass AS rel FROM pg_trigger t
              WHERE t.tgfoid = 'llm._job_trigger()'::regprocedure AND t.tgparentid = 0
                AND t.tgnargs = 1 AND t.tgargs = convert_to(OLD.id::text, 'UTF8') || '\x00'::bytea LOOP
        -- a table distributed by Citus after its job was made: Citus drops
        -- the trigger (on every shard) only with its unsafe triggers allowed
        unsafe := NULL;
        IF to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
            unsafe := current_setting('citus.enable_unsafe_triggers', true);
            PERFORM set_config('citus.enable_unsafe_triggers', 'on', true);
        END IF;
        EXECUTE format('DROP TRIGGER %I ON %s', tg.tgname, tg.rel);
        IF unsafe IS NOT NULL THEN
            PERFORM set_config('citus.enable_unsafe_triggers', unsafe, true);
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION llm._job_uninstall() IS 'Trigger: drop a deleted job''s triggers';

CREATE FUNCTION llm._job_no_truncate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'llm.job cannot be truncated' USING HINT = 'Drop jobs with llm.drop_job().';
END;
$$;
COMMENT ON FUNCTION llm._job_no_truncate() IS 'Trigger: refuse TRUNCATE of llm.job, which would leave the jobs'' triggers behind';

CREATE TRIGGER prepare BEFORE INSERT ON llm.job
    FOR EACH ROW EXECUTE FUNCTION llm._job_prepare();
CREATE TRIGGER uninstall AFTER DELETE ON llm.job
    FOR EACH ROW EXECUTE FUNCTION llm._job_uninstall();
CREATE TRIGGER no_truncate BEFORE TRUNCATE ON llm.job
    FOR EACH STATEMENT EXECUTE FUNCTION llm._job_no_truncate();

-- The model (resolved: llm.default_model if none is given), the system
-- prompt, the options and the way of sending of a job, checked as
-- llm.enqueue checks an item's.
CREATE FUNCTION llm._job_check_request(model text, system text, options jsonb, via text) RETURNS text
AS 'MODULE_PATHNAME', 'pg_llm_job_check_request'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION llm._job_check_request(text, text, jsonb, text) IS 'Check a job''s model, system prompt, options and via as llm.enqueue would; returns the resolved model';

-- The model (resolved: llm.default_embedding_model if none is given), the
-- options and the way of sending of an embedding job, and its result
-- column, checked as llm.enqueue_embedding checks an item's.
CREATE FUNCTION llm._job_check_embedding(model text, options jsonb, via text, target regclass,
                                         result_column name) RETURNS text
AS 'MODULE_PATHNAME', 'pg_llm_job_check_embedding'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION llm._job_check_embedding(text, jsonb, text, regclass, name) IS 'Check an embedding job''s model, options, via and result column as llm.enqueue_embedding would; returns the resolved model';

-- Every job's triggers call this, with the job's id: it runs the job's
-- SQL as the job's owner (src/jobs.c).
CREATE FUNCTION llm._job_trigger() RETURNS trigger
AS 'MODULE_PATHNAME', 'pg_llm_job_trigger'
LANGUAGE C;
COMMENT ON FUNCTION llm._job_trigger() IS 'Trigger of every job (its argument: the job''s id): queue the inserted and changed rows of the job''s source table, as the job''s owner';

CREATE FUNCTION llm.create_job(
    name text,
    source_table regclass,
    key_columns text[],
    prompt_template text,
    result_column name DEFAULT NULL,
    result_table regclass DEFAULT NULL,
    model text DEFAULT NULL,
    system text DEFAULT NULL,
    options jsonb DEFAULT NULL,
    track_changes boolean DEFAULT true,
    via text DEFAULT 'realtime',
    task text DEFAULT 'chat',
    provider text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'pg_llm_create_job'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION llm.create_job(text, regclass, text[], text, name, regclass, text, text, jsonb, boolean, text, text, text) IS 'Define a job that sends each row of source_table, rendered through prompt_template ({column} placeholders), to a model and writes the reply into result_column (of result_table, keyed like the source, if given), or, with a json_schema and no result_column, spreads each answer over the columns its properties name; with track_changes, inserted and changed rows are queued by triggers; via => ''batch_api'' sends its items through the provider''s batch API; task => ''embed'' writes the rendered text''s embedding instead, and embeds a changed row again only when its rendered text changed; provider names the provider (one of the model''s routes) its items go to. The job runs as the role that creates it';

CREATE FUNCTION llm.run_job(name text) RETURNS bigint
AS 'MODULE_PATHNAME', 'pg_llm_run_job'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION llm.run_job(text) IS 'Queue every row of a job that has no result (NULL) and no pending or running item of the job; returns the number of rows queued. Runs as the job''s owner, whoever calls it';

CREATE FUNCTION llm.drop_job(name text, cancel boolean DEFAULT false) RETURNS void
AS 'MODULE_PATHNAME', 'pg_llm_drop_job'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION llm.drop_job(text, boolean) IS 'Remove a job and its triggers; its queue items stay, unless cancel: then its items not yet answered (pending, or waiting in a provider batch) go too, and a provider batch left without items is cancelled';

CREATE VIEW llm.job_status WITH (security_barrier) AS
    SELECT j.name AS job,
           j.owner,
           j.source_table,
           coalesce(j.result_table, j.source_table)::text || '.'
               || coalesce(quote_ident(j.result_column), '(' || llm._job_list(j.spread_columns, '%1$I', ', ') || ')')
               AS result,
           c.pending, c.running, c.submitted, c.done, c.failed,
           CASE WHEN f.done + f.failed + c.pending + c.running + c.submitted > 0
                THEN round(100.0 * f.done / (f.done + f.failed + c.pending + c.running + c.submitted), 1) END
               AS percent_done,
           CASE WHEN f.done + f.failed + c.pending + c.running + c.submitted > 0
                THEN round(100.0 * f.failed / (f.done + f.failed + c.pending + c.running + c.submitted), 1) END
               AS percent_failed,
           round(m.per_second, 1) AS items_per_second,
           CASE WHEN c.pending + c.running > 0 AND m.per_second > 0
                THEN make_interval(secs => round((c.pending + c.running) / m.per_second)) END AS eta,
           round(k.cost_usd, 6) AS cost_usd,
           -- what the items left would cost at what the answered ones did
           CASE WHEN c.pending + c.running + c.submitted = 0 THEN 0
                WHEN a.answered > 0 AND k.cost_usd IS NOT NULL
                THEN round(k.cost_usd / a.answered * (c.pending + c.running + c.submitted), 6) END
               AS cost_to_finish_usd,
           l.last_finished,
           e.last_error
    FROM llm.job j
    CROSS JOIN llm._reader v
    -- each part is served by an index of llm.queue (or of llm.usage), so
    -- that the view stays quick with a million items
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE q.status = 'pending') AS pending,
               count(*) FILTER (WHERE q.status = 'running') AS running,
               count(*) FILTER (WHERE q.status = 'submitted') AS submitted,
               count(*) FILTER (WHERE q.status = 'done') AS done,
               -- a failure that a newer item of the row followed (a run,
               -- a trigger) no longer counts
               count(*) FILTER (WHERE q.status = 'failed'
                                  AND NOT EXISTS (SELECT 1 FROM llm.queue n
                                                  WHERE n.job_id = q.job_id AND n.target_key = q.target_key
                                                    AND n.id > q.id)) AS failed
        FROM llm.queue q WHERE q.job_id = j.id AND q.enqueued_by = j.owner::oid) c
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE q.status = 'done') AS done,
               count(*) FILTER (WHERE q.status = 'failed'
                                  AND NOT EXISTS (SELECT 1 FROM llm.queue n
                                                  WHERE n.job_id = q.job_id AND n.target_key = q.target_key
                                                    AND n.id > q.id)) AS failed
        FROM llm.queue q
        WHERE q.job_id = j.id AND q.enqueued_by = j.owner::oid AND q.status IN ('done', 'failed')
          AND q.finished_at >= coalesce(j.last_run_at, '-infinity')) f
    CROSS JOIN LATERAL (
        SELECT count(*) AS answered FROM llm.queue q
        WHERE q.job_id = j.id AND q.enqueued_by = j.owner::oid AND q.status IN ('done', 'failed')
          AND q.finished_at IS NOT NULL) a
    CROSS JOIN LATERAL (
        SELECT sum(u.cost_usd) AS cost_usd FROM llm.usage u WHERE u.job_id = j.id) k
    -- finished in the last minute, per second since the first of them
    -- started (at most 60 s)
    CROSS JOIN LATERAL (
        SELECT coalesce(count(*) / greatest(1.0, least(60.0, extract(epoch FROM now() - min(q.started_at)))), 0)
                   AS per_second
        FROM llm.queue q
        WHERE q.job_id = j.id AND q.enqueued_by = j.owner::oid AND q.status IN ('done', 'failed')
          AND q.finished_at > now() - interval '1 minute') m
    CROSS JOIN LATERAL (
        SELECT greatest(
                   (SELECT max(q.finished_at) FROM llm.queue q
                    WHERE q.job_id = j.id AND q.enqueued_by = j.owner::oid AND q.status = 'done' AND q.finished_at IS NOT NULL),
                   (SELECT max(q.finished_at) FROM llm.queue q
                    WHERE q.job_id = j.id AND q.enqueued_by = j.owner::oid AND q.status = 'failed' AND q.finished_at IS NOT NULL))
               AS last_finished) l
    LEFT JOIN LATERAL (
        SELECT q.error AS last_error FROM llm.queue q
        WHERE q.job_id = j.id AND q.enqueued_by = j.owner::oid AND q.status = 'failed' AND q.finished_at IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM llm.queue n
                          WHERE n.job_id = q.job_id AND n.target_key = q.target_key AND n.id > q.id)
        ORDER BY q.finished_at DESC LIMIT 1) e ON true
    WHERE v.all_roles OR j.owner::oid = ANY (v.roles)
    ORDER BY j.name;
COMMENT ON VIEW llm.job_status IS 'Per job (of the roles whose privileges the reader has; every job for administrators): queue items pending, running, submitted (in a provider batch), done and failed (a failure a newer item of the same row followed no longer counts); percent of the work since the last run_job that is done, and that failed; items per second over the last minute; estimated time to finish; what the job''s calls cost so far (llm.usage), and what the items left would cost at the same rate; last finished item and last error. Watch it with \watch 1';
