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
-- For each job three functions are generated (members of the extension):
-- llm._job_<name>_trigger() and llm._job_<name>_run(), owned by the job's
-- owner and SECURITY DEFINER (so they run as the owner), and
-- llm._job_<name>_sink(text[], jsonb[], boolean), owned by the extension
-- owner and executable by the job's owner only, which inserts the items
-- into llm.queue set-based.  The privilege on the sink is what proves, to
-- the extension owner's code, that a call comes from the job's owner.

CREATE TABLE llm.job (
    name            text PRIMARY KEY
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
    last_run_at     timestamptz
);
COMMENT ON TABLE llm.job IS 'Analysis jobs: which rows of a table to send to a model with which prompt template, and the column the reply goes to; each role sees and drops the jobs of the roles it belongs to';
COMMENT ON COLUMN llm.job.owner IS 'The role the job runs as: its triggers and run_job read and write as this role, and its queue items are enqueued by it';
COMMENT ON COLUMN llm.job.input_columns IS 'The columns the prompt template refers to (derived from it)';
COMMENT ON COLUMN llm.job.result_table IS 'Where the result column is; NULL: the source table';
COMMENT ON COLUMN llm.job.model IS 'The model, resolved when the job was created (llm.default_model if none was given)';
COMMENT ON COLUMN llm.job.via IS 'How its items are sent: realtime calls, or the provider''s batch API';
COMMENT ON COLUMN llm.job.last_run_at IS 'When llm.run_job last ran the job (the start of its transaction)';
SELECT pg_catalog.pg_extension_config_dump('llm.job', '');

-- A role creates jobs as itself, and sees and drops those of the roles
-- whose rights it has; nobody updates a job (drop and create it).
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
    WHERE job IS NOT NULL AND status IN ('pending', 'running');
COMMENT ON INDEX llm.queue_job_key IS 'The pending and running items of jobs, by target row';
-- The finished items of jobs by time, for llm.job_status.
CREATE INDEX queue_job_finished ON llm.queue (job, status, finished_at)
    WHERE job IS NOT NULL AND finished_at IS NOT NULL;
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

-- Before a job is stored: derive its input columns from the template,
-- check what does not depend on privileges (so that a restore of llm.job
-- passes too), and resolve and check the model and the options with
-- llm.enqueue's own checks.
CREATE FUNCTION llm._job_prepare() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
    c text;
    inputs name[] := '{}';
    target regclass;
    a pg_attribute;
    probe bigint;
BEGIN
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

    -- the result column
    IF NEW.result_column IS NULL AND NEW.result_table IS NOT NULL THEN
        SELECT CASE WHEN count(*) = 1 THEN min(attname) END INTO NEW.result_column
        FROM pg_attribute
        WHERE attrelid = NEW.result_table AND attnum > 0 AND NOT attisdropped
          AND attgenerated = '' AND NOT attname = ANY (NEW.key_columns);
        IF NEW.result_column IS NULL THEN
            RAISE EXCEPTION 'result_column is needed: result table % has no single column besides the key', NEW.result_table
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF NEW.result_column IS NULL THEN
        RAISE EXCEPTION 'result_column must name the column the replies go to'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give result_column, and result_table to write them into a separate table.';
    END IF;
    a := llm._job_column(target, NEW.result_column, 'result column');
    IF NOT llm._job_storable(a.atttypid) THEN
        RAISE EXCEPTION 'column "%" of table % cannot take a reply', NEW.result_column, target
            USING ERRCODE = 'datatype_mismatch',
                  DETAIL = format('Its type is %s.', format_type(a.atttypid, a.atttypmod));
    END IF;
    IF a.attgenerated <> '' THEN
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

    -- the model, the system prompt and the options, as llm.enqueue checks
    -- them; the model is resolved now (llm.default_model if none is given)
    IF NEW.options IS NOT NULL AND jsonb_typeof(NEW.options) <> 'object' THEN
        RAISE EXCEPTION 'options must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    probe := llm.enqueue('pg_llm job check', NEW.model, NEW.system, options => NEW.options, via => NEW.via);
    SELECT q.model INTO NEW.model FROM llm.queue q WHERE q.id = probe;
    DELETE FROM llm.queue q WHERE q.id = probe;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION llm._job_prepare() IS 'Trigger: derive a job''s input columns, check its columns, resolve and check its model and options';

-- Give a generated function exactly the privileges it must have: none for
-- PUBLIC or anyone else (whatever default privileges say), EXECUTE for
-- the grantee if one is given.
CREATE FUNCTION llm._job_restrict(fn regprocedure, grantee regrole) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    g oid;
BEGIN
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
    FOR g IN SELECT DISTINCT a.grantee FROM pg_proc p, aclexplode(p.proacl) a
             WHERE p.oid = fn AND a.grantee <> p.proowner AND a.grantee <> 0 LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %I', fn, (SELECT rolname FROM pg_roles WHERE oid = g));
    END LOOP;
    IF grantee IS NOT NULL THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, (SELECT rolname FROM pg_roles WHERE oid = grantee));
    END IF;
END;
$$;
COMMENT ON FUNCTION llm._job_restrict(regprocedure, regrole) IS 'Revoke every privilege on a generated function, then grant EXECUTE to one role';

-- The loop of a job's generated functions that sends rows to the sink in
-- chunks of 10,000, over a FROM clause whose row alias is s (and x for the
-- result table's row).
CREATE FUNCTION llm._job_loop_sql(j llm.job, from_clause text, supersede boolean) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format($f$
    FOR r IN SELECT %1$s AS prompt, jsonb_build_object(%2$s) AS key
             FROM %3$s
             WHERE %4$s.%5$I IS NULL AND num_nulls(%6$s) = 0 AND num_nonnulls(%7$s) > 0 LOOP
        prompts := array_append(prompts, r.prompt);
        keys := array_append(keys, r.key);
        IF cardinality(prompts) >= 10000 THEN
            n := n + llm.%8$I(prompts, keys, %9$s);
            prompts := '{}';
            keys := '{}';
        END IF;
    END LOOP;
    IF cardinality(prompts) > 0 OR NOT %9$s THEN
        n := n + llm.%8$I(prompts, keys, %9$s);
    END IF;$f$,
        llm._job_prompt_sql(j.prompt_template, 's'),
        llm._job_list(j.key_columns, '%1$L, s.%1$I', ', '),
        from_clause,
        CASE WHEN j.result_table IS NULL THEN 's' ELSE 'x' END, j.result_column,
        llm._job_list(j.key_columns, 's.%1$I', ', '),
        llm._job_list(j.input_columns, 's.%1$I', ', '),
        '_job_' || j.name || '_sink',
        CASE WHEN supersede THEN 'true' ELSE 'false' END);
$$;
COMMENT ON FUNCTION llm._job_loop_sql(llm.job, text, boolean) IS 'The loop of a job''s generated functions that queues rows in chunks';

-- The statement of a job with a result table that adds the key rows the
-- result table lacks, for the rows (alias s) of a FROM clause.
CREATE FUNCTION llm._job_add_keys_sql(j llm.job, from_clause text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format($f$
    INSERT INTO %1$s AS x (%2$s)
    SELECT %3$s FROM %4$s
    WHERE num_nulls(%3$s) = 0 AND num_nonnulls(%5$s) > 0
      AND NOT EXISTS (SELECT 1 FROM %1$s AS x WHERE %6$s)
    ON CONFLICT DO NOTHING;$f$,
        j.result_table, llm._job_list(j.key_columns, '%1$I', ', '),
        llm._job_list(j.key_columns, 's.%1$I', ', '),
        from_clause,
        llm._job_list(j.input_columns, 's.%1$I', ', '),
        llm._job_list(j.key_columns, 'x.%1$I = s.%1$I', ' AND '));
$$;
COMMENT ON FUNCTION llm._job_add_keys_sql(llm.job, text) IS 'The statement that adds missing key rows to a job''s result table';

-- After a job is stored: generate its functions.  The trigger and run
-- functions are owned by the job's owner and run as it; the sink is the
-- extension owner's, executable by the job's owner only.
CREATE FUNCTION llm._job_install() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    owner_name name := (SELECT rolname FROM pg_roles WHERE oid = NEW.owner);
    src text := NEW.source_table::text;
    sep boolean := NEW.result_table IS NOT NULL;
    tgt text := coalesce(NEW.result_table, NEW.source_table)::text;
    trigger_fn text := '_job_' || NEW.name || '_trigger';
    run_fn text := '_job_' || NEW.name || '_run';
    sink_fn text := '_job_' || NEW.name || '_sink';
    key_join text := llm._job_list(NEW.key_columns, 'x.%1$I = s.%1$I', ' AND ');
    may_write text;
    denied text;
    body text;
    fn text;
BEGIN
    IF sep THEN
        -- the owner may still add key rows and write the result
        may_write := format('(%s AND has_column_privilege(%s::oid, %L, %L))',
            llm._job_list(NEW.key_columns,
                          format('has_column_privilege(%s::oid, %%1$L, %L)', NEW.result_table::oid, 'INSERT'),
                          ' AND '),
            NEW.result_table::oid, NEW.result_column, 'UPDATE');
        denied := format($f$
        IF NOT %s THEN
            RAISE WARNING USING MESSAGE = %L, HINT = %L;
            RETURN NULL;
        END IF;$f$, may_write,
            format('pg_llm job "%s": role %s may not write the result table %s; rows not queued', NEW.name, owner_name, tgt),
            'Grant it INSERT on the key columns and UPDATE on the result column, or drop the job.');
    END IF;

    -- the run function: the backfill, as the owner
    body := format($f$
#variable_conflict use_column
DECLARE
    r record;
    prompts text[] := '{}';
    keys jsonb[] := '{}';
    n bigint := 0;
BEGIN
    -- one run of a job at a time
    PERFORM pg_advisory_xact_lock(hashtext(%L));
%s
%s
    RETURN n;
END;$f$,
        'pg_llm job ' || NEW.name,
        CASE WHEN sep THEN llm._job_add_keys_sql(NEW, src || ' AS s') ELSE '' END,
        llm._job_loop_sql(NEW, CASE WHEN sep THEN format('%s AS s JOIN %s AS x ON (%s)', src, tgt, key_join)
                                    ELSE src || ' AS s' END, false));
    EXECUTE format('CREATE FUNCTION llm.%I() RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER '
                   'SET search_path = pg_catalog, pg_temp AS %L', run_fn, body);

    -- the trigger function: rows inserted (a statement at a time, from the
    -- transition table) and rows whose input changed (a row at a time)
    body := format($f$
#variable_conflict use_column
DECLARE
    r record;
    prompts text[] := '{}';
    keys jsonb[] := '{}';
    n bigint := 0;
BEGIN
    IF TG_RELID <> %s::oid AND NOT EXISTS (
           SELECT 1 FROM pg_partition_ancestors(TG_RELID) a WHERE a.relid = %s::oid) THEN
        RAISE EXCEPTION USING MESSAGE = %L, ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF TG_LEVEL = 'STATEMENT' THEN%s
%s
%s
        RETURN NULL;
    END IF;
%s
END;$f$,
        NEW.source_table::oid, NEW.source_table::oid,
        format('the trigger function of pg_llm job "%s" fired on another table than %s', NEW.name, src),
        coalesce(denied, ''),
        CASE WHEN sep THEN llm._job_add_keys_sql(NEW, 'new_rows AS s') ELSE '' END,
        llm._job_loop_sql(NEW, CASE WHEN sep THEN format('new_rows AS s JOIN %s AS x ON (%s)', tgt, key_join)
                                    ELSE 'new_rows AS s' END, true),
        CASE WHEN NOT sep THEN format($g$
    IF TG_WHEN = 'BEFORE' THEN
        -- an input changed: the result is no longer current, unless this
        -- statement set it too
        IF record_image_eq(ROW(NEW.%1$I), ROW(OLD.%1$I)) THEN
            NEW.%1$I := NULL;
        END IF;
        RETURN NEW;
    END IF;
    -- queue the new input; a pending item for the old input is replaced
    -- (an empty prompt only removes it)
    PERFORM llm.%2$I(ARRAY[CASE WHEN NEW.%1$I IS NULL AND num_nulls(%3$s) = 0 AND num_nonnulls(%4$s) > 0
                               THEN %5$s ELSE '' END],
                    ARRAY[jsonb_build_object(%6$s)], true);
    RETURN NULL;$g$,
            NEW.result_column, sink_fn,
            llm._job_list(NEW.key_columns, 'NEW.%1$I', ', '),
            llm._job_list(NEW.input_columns, 'NEW.%1$I', ', '),
            llm._job_prompt_sql(NEW.prompt_template, 'NEW'),
            llm._job_list(NEW.key_columns, '%1$L, NEW.%1$I', ', '))
        ELSE format($g$
    IF num_nulls(%1$s) > 0 THEN
        RETURN NULL;
    END IF;%2$s
    IF TG_OP = 'UPDATE' THEN
        -- an input changed: the result is no longer current
        UPDATE %3$s AS x SET %5$I = NULL WHERE %6$s AND x.%5$I IS NOT NULL;
    ELSIF EXISTS (SELECT 1 FROM %3$s AS x WHERE %6$s AND x.%5$I IS NOT NULL) THEN
        -- inserted (into a partition) with a result already there
        RETURN NULL;
    END IF;
    IF num_nonnulls(%8$s) > 0 THEN
        INSERT INTO %3$s AS x (%4$s) VALUES (%1$s) ON CONFLICT DO NOTHING;
    END IF;
    -- a pending item for the old input is replaced (an empty prompt only
    -- removes it)
    PERFORM llm.%7$I(ARRAY[CASE WHEN num_nonnulls(%8$s) > 0 THEN %9$s ELSE '' END],
                    ARRAY[jsonb_build_object(%10$s)], true);
    RETURN NULL;$g$,
            llm._job_list(NEW.key_columns, 'NEW.%1$I', ', '), denied,
            tgt, llm._job_list(NEW.key_columns, '%1$I', ', '), NEW.result_column,
            llm._job_list(NEW.key_columns, 'x.%1$I = NEW.%1$I', ' AND '),
            sink_fn, llm._job_list(NEW.input_columns, 'NEW.%1$I', ', '),
            llm._job_prompt_sql(NEW.prompt_template, 'NEW'),
            llm._job_list(NEW.key_columns, '%1$L, NEW.%1$I', ', '))
        END);
    EXECUTE format('CREATE FUNCTION llm.%I() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER '
                   'SET search_path = pg_catalog, pg_temp AS %L', trigger_fn, body);

    -- the sink: inserts the items as the extension owner
    EXECUTE format('CREATE FUNCTION llm.%I(prompts text[], keys jsonb[], supersede boolean) RETURNS bigint '
                   'LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp '
                   'AS %L', sink_fn, format('SELECT llm._job_sink(%L, prompts, keys, supersede)', NEW.name));

    FOREACH fn IN ARRAY ARRAY[run_fn, trigger_fn] LOOP
        EXECUTE format('ALTER FUNCTION llm.%I() OWNER TO %I', fn, owner_name);
        PERFORM llm._job_restrict(format('llm.%I()', fn)::regprocedure, NULL);
    END LOOP;
    PERFORM llm._job_restrict(format('llm.%I(text[], jsonb[], boolean)', sink_fn)::regprocedure, NEW.owner);
    EXECUTE format('COMMENT ON FUNCTION llm.%I() IS %L', run_fn,
                   format('The backfill of pg_llm job "%s", as its owner (called by llm.run_job)', NEW.name));
    EXECUTE format('COMMENT ON FUNCTION llm.%I() IS %L', trigger_fn,
                   format('Trigger: queue the inserted and changed rows of %s for pg_llm job "%s", as its owner', src, NEW.name));
    EXECUTE format('COMMENT ON FUNCTION llm.%I(text[], jsonb[], boolean) IS %L', sink_fn,
                   format('Queue prompts for pg_llm job "%s" (executable by its owner only)', NEW.name));
    -- members of the extension: dropped with it, and not dumped (a restore
    -- of llm.job generates them again)
    EXECUTE format('ALTER EXTENSION pg_llm ADD FUNCTION llm.%I()', run_fn);
    EXECUTE format('ALTER EXTENSION pg_llm ADD FUNCTION llm.%I()', trigger_fn);
    EXECUTE format('ALTER EXTENSION pg_llm ADD FUNCTION llm.%I(text[], jsonb[], boolean)', sink_fn);
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION llm._job_install() IS 'Trigger: generate a new job''s trigger, run and sink functions';

-- After a job is deleted: drop its triggers and functions.
CREATE FUNCTION llm._job_uninstall() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fn regprocedure;
    tg record;
BEGIN
    FOREACH fn IN ARRAY ARRAY[
            to_regprocedure(format('llm.%I()', '_job_' || OLD.name || '_trigger')),
            to_regprocedure(format('llm.%I()', '_job_' || OLD.name || '_run')),
            to_regprocedure(format('llm.%I(text[], jsonb[], boolean)', '_job_' || OLD.name || '_sink'))] LOOP
        CONTINUE WHEN fn IS NULL;
        FOR tg IN SELECT t.tgname, t.tgrelid::regclass AS rel FROM pg_trigger t
                  WHERE t.tgfoid = fn AND t.tgparentid = 0 LOOP
            EXECUTE format('DROP TRIGGER %I ON %s', tg.tgname, tg.rel);
        END LOOP;
        IF EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = fn
                   AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e') THEN
            EXECUTE format('ALTER EXTENSION pg_llm DROP FUNCTION %s', fn);
        END IF;
        EXECUTE format('DROP FUNCTION %s', fn);
    END LOOP;
    IF current_setting('pg_llm_job.cancel', true) = OLD.name THEN
        DELETE FROM llm.queue q WHERE q.job = OLD.name AND q.status IN ('pending', 'submitted');
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION llm._job_uninstall() IS 'Trigger: drop a deleted job''s triggers and functions (and, for llm.drop_job(name, cancel => true), its unanswered items)';

CREATE FUNCTION llm._job_no_truncate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'llm.job cannot be truncated' USING HINT = 'Drop jobs with llm.drop_job().';
END;
$$;
COMMENT ON FUNCTION llm._job_no_truncate() IS 'Trigger: refuse TRUNCATE of llm.job, which would leave the jobs'' triggers behind';

CREATE TRIGGER prepare BEFORE INSERT ON llm.job
    FOR EACH ROW EXECUTE FUNCTION llm._job_prepare();
CREATE TRIGGER install AFTER INSERT ON llm.job
    FOR EACH ROW EXECUTE FUNCTION llm._job_install();
CREATE TRIGGER uninstall AFTER DELETE ON llm.job
    FOR EACH ROW EXECUTE FUNCTION llm._job_uninstall();
CREATE TRIGGER no_truncate BEFORE TRUNCATE ON llm.job
    FOR EACH STATEMENT EXECUTE FUNCTION llm._job_no_truncate();

-- Insert a job's items into the queue, with the job's target, model and
-- owner.  Only the job's sink, which only its owner may call, calls this.
-- supersede (the triggers): a pending item of the same row is replaced;
-- otherwise (run_job) a row with a pending or running item is skipped.
-- Empty prompts are not queued.  The first time in a transaction, a call
-- of llm.enqueue (whose item is removed at once) makes the workers wake up
-- at commit.
CREATE FUNCTION llm._job_sink(job_name text, prompts text[], keys jsonb[], supersede boolean)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j llm.job;
    n bigint;
    wake bigint;
BEGIN
    SELECT * INTO j FROM llm.job WHERE llm.job.name = job_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job "%" does not exist', job_name USING ERRCODE = 'undefined_object';
    END IF;
    -- planned at each call (EXECUTE): a plan kept from the first chunks of a
    -- run, when the queue held none of the job's items, would check each
    -- key of the later chunks against all of them one by one
    IF supersede THEN
        EXECUTE 'DELETE FROM llm.queue q USING unnest($2) AS k(key)
                 WHERE q.job = $1 AND q.status = ''pending'' AND q.target_key = k.key'
        USING j.name, keys;
    END IF;
    EXECUTE 'INSERT INTO llm.queue (prompt, model, system, options, target_table, target_column,
                                    target_key, enqueued_by, job, via)
             SELECT u.prompt, $3, $4, $5, $6, $7, u.key, $8, $9, $10
             FROM unnest($1, $2) AS u(prompt, key)
             WHERE u.prompt <> '''' AND u.key IS NOT NULL
               AND ($11 OR NOT EXISTS (SELECT 1 FROM llm.queue q
                                        WHERE q.job = $9 AND q.status IN (''pending'', ''running'', ''submitted'')
                                          AND q.target_key = u.key))'
    USING prompts, keys, j.model, j.system, j.options, coalesce(j.result_table, j.source_table),
          j.result_column, j.owner::oid, j.name, j.via, supersede;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF NOT supersede AND j.last_run_at IS DISTINCT FROM now() THEN
        UPDATE llm.job SET last_run_at = now() WHERE llm.job.name = j.name;
    END IF;
    IF n > 0 AND current_setting('pg_llm_job.wakeup', true) IS DISTINCT FROM 'on' THEN
        wake := llm.enqueue('pg_llm job wake-up', j.model, via => j.via);
        DELETE FROM llm.queue q WHERE q.id = wake;
        PERFORM set_config('pg_llm_job.wakeup', 'on', true);
    END IF;
    RETURN n;
END;
$$;
COMMENT ON FUNCTION llm._job_sink(text, text[], jsonb[], boolean) IS 'Insert a job''s items into the queue as its owner''s; called by the job''s own sink only';

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
    via text DEFAULT 'realtime')
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j llm.job;
    target regclass;
    c name;
    trig text;
    inputs text;
    changed text;
    func text;
BEGIN
    -- (this function runs as the caller, who may execute only the internal
    -- functions of llm granted to PUBLIC, such as llm._key_identifies_row)
    -- the definition (name, structure, template, model and options are
    -- checked by llm._job_prepare, which also serves restores of llm.job)
    BEGIN
        INSERT INTO llm.job AS jj (name, source_table, key_columns, prompt_template, result_table,
                                   result_column, model, system, options, track_changes, via)
        VALUES (create_job.name, create_job.source_table, create_job.key_columns::name[],
                create_job.prompt_template, create_job.result_table, create_job.result_column,
                create_job.model, create_job.system, create_job.options,
                coalesce(create_job.track_changes, true), coalesce(create_job.via, 'realtime'))
        RETURNING * INTO j;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'job "%" already exists', create_job.name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Drop it first with llm.drop_job(), or choose another name.';
    END;
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
          AND NOT a.attname = ANY (j.key_columns) AND a.attname <> j.result_column
        ORDER BY a.attnum LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'column "%" of result table % is NOT NULL without a default', c, j.result_table
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'The job adds the key rows the result table lacks, with nothing else in them.';
        END IF;
    END IF;

    -- the creating role, which the job will run as, may do what the job does
    FOREACH c IN ARRAY j.key_columns || j.input_columns LOOP
        IF NOT has_column_privilege(j.source_table, c, 'SELECT') THEN
            RAISE EXCEPTION 'permission denied to read column "%" of table %', c, j.source_table
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'A job runs with the rights of the role that creates it.';
        END IF;
    END LOOP;
    FOREACH c IN ARRAY j.key_columns LOOP
        IF NOT has_column_privilege(target, c, 'SELECT') THEN
            RAISE EXCEPTION 'permission denied to read column "%" of table %', c, target
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'A job runs with the rights of the role that creates it.';
        END IF;
        IF j.result_table IS NOT NULL AND NOT has_column_privilege(target, c, 'INSERT') THEN
            RAISE EXCEPTION 'permission denied to insert into column "%" of table %', c, target
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'The job adds the key rows the result table lacks, with the rights of the role that creates it.';
        END IF;
    END LOOP;
    IF NOT has_column_privilege(target, j.result_column, 'UPDATE') THEN
        RAISE EXCEPTION 'permission denied to update column "%" of table %', j.result_column, target
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'The worker writes replies back with the rights of the job''s owner, the role that creates it.';
    END IF;
    IF j.result_table IS NOT NULL THEN
        -- the key columns can be copied and compared across the two tables
        EXECUTE (SELECT format('EXPLAIN INSERT INTO %s AS x (%s) SELECT %s FROM %s AS s '
                               'WHERE NOT EXISTS (SELECT 1 FROM %s AS x WHERE %s)',
                               target, string_agg(quote_ident(k), ', ' ORDER BY o),
                               string_agg('s.' || quote_ident(k), ', ' ORDER BY o), j.source_table, target,
                               string_agg(format('x.%1$I = s.%1$I', k), ' AND ' ORDER BY o))
                 FROM unnest(j.key_columns) WITH ORDINALITY AS u(k, o));
    END IF;

    IF j.track_changes THEN
        IF NOT has_table_privilege(j.source_table, 'TRIGGER') THEN
            RAISE EXCEPTION 'permission denied to create triggers on table %', j.source_table
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'track_changes puts triggers on the source table; create the job with track_changes => false and run it with llm.run_job().';
        END IF;
        IF row_security_active(j.source_table) THEN
            RAISE EXCEPTION 'table % has row-level security for role %', j.source_table, current_user
                USING ERRCODE = 'feature_not_supported',
                      DETAIL = 'The job''s trigger sees every row written, also those the job''s owner may not read.',
                      HINT = 'Create the job with track_changes => false and run it with llm.run_job(): it reads only the rows its owner may read.';
        END IF;
        -- the triggers are created by the calling role, with its rights
        func := format('llm.%I()', '_job_' || j.name || '_trigger');
        trig := 'llm_job_' || j.name;
        SELECT string_agg(quote_ident(k), ', ' ORDER BY o),
               format('NOT record_image_eq(ROW(%s), ROW(%s))',
                      string_agg('OLD.' || quote_ident(k), ', ' ORDER BY o),
                      string_agg('NEW.' || quote_ident(k), ', ' ORDER BY o))
        INTO inputs, changed
        FROM unnest(j.input_columns) WITH ORDINALITY AS u(k, o);
        IF (SELECT relkind FROM pg_class WHERE oid = j.source_table) = 'p' THEN
            -- a row trigger is cloned to every partition (also those
            -- attached later), so rows inserted into a partition directly
            -- are seen too; a statement trigger of the parent would miss them
            EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s FOR EACH ROW %s EXECUTE FUNCTION %s',
                           trig || '_insert', j.source_table,
                           CASE WHEN j.result_table IS NULL
                                THEN format('WHEN (NEW.%I IS NULL)', j.result_column) ELSE '' END,
                           func);
        ELSE
            EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows '
                           'FOR EACH STATEMENT EXECUTE FUNCTION %s',
                           trig || '_insert', j.source_table, func);
        END IF;
        IF j.result_table IS NULL THEN
            EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OF %s ON %s FOR EACH ROW WHEN (%s) '
                           'EXECUTE FUNCTION %s',
                           trig || '_reset', inputs,
                           j.source_table, changed, func);
        END IF;
        EXECUTE format('CREATE TRIGGER %I AFTER UPDATE OF %s ON %s FOR EACH ROW WHEN (%s) '
                       'EXECUTE FUNCTION %s',
                       trig || '_update', inputs,
                       j.source_table, changed, func);
    END IF;
END;
$$;
COMMENT ON FUNCTION llm.create_job(text, regclass, text[], text, name, regclass, text, text, jsonb, boolean, text) IS 'Define a job that sends each row of source_table, rendered through prompt_template ({column} placeholders), to a model and writes the reply into result_column (of result_table, keyed like the source, if given); with track_changes, inserted and changed rows are queued by triggers; via => ''batch_api'' sends its items through the provider''s batch API. The job runs as the role that creates it';

CREATE FUNCTION llm.run_job(name text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j llm.job;
    run_fn text;
    n bigint;
BEGIN
    SELECT * INTO j FROM llm.job WHERE llm.job.name = run_job.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job "%" does not exist', run_job.name
            USING ERRCODE = 'undefined_object',
                  HINT = 'See SELECT name FROM llm.job.';
    END IF;
    run_fn := format('llm.%I()', '_job_' || j.name || '_run');
    IF to_regprocedure(run_fn) IS NULL THEN
        RAISE EXCEPTION 'the functions of job "%" are missing', j.name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Drop the job and create it again.';
    END IF;
    IF NOT has_function_privilege(run_fn, 'EXECUTE') THEN
        RAISE EXCEPTION 'permission denied to run job "%"', j.name
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('A job runs as its owner, %s; only that role and its members may run it.', j.owner);
    END IF;
    EXECUTE format('SELECT %s', run_fn) INTO n;
    RETURN n;
END;
$$;
COMMENT ON FUNCTION llm.run_job(text) IS 'Queue every row of a job that has no result (NULL) and no pending or running item of the job; returns the number of rows queued. Runs as the job''s owner';

CREATE FUNCTION llm.drop_job(name text, cancel boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- the job's trigger (llm._job_uninstall) removes its unanswered items
    -- when asked to, after row-level security let the caller drop the job
    IF cancel THEN
        PERFORM set_config('pg_llm_job.cancel', drop_job.name, true);
    END IF;
    DELETE FROM llm.job WHERE llm.job.name = drop_job.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job "%" does not exist', drop_job.name
            USING ERRCODE = 'undefined_object',
                  HINT = 'See SELECT name FROM llm.job.';
    END IF;
    PERFORM set_config('pg_llm_job.cancel', '', true);
END;
$$;
COMMENT ON FUNCTION llm.drop_job(text, boolean) IS 'Remove a job and its triggers; its queue items stay, unless cancel: then its items not yet answered (pending, or waiting in a provider batch) go too, and a provider batch left without items is cancelled';

CREATE VIEW llm.job_status AS
    SELECT j.name AS job,
           j.owner,
           j.source_table,
           coalesce(j.result_table, j.source_table)::text || '.' || quote_ident(j.result_column) AS result,
           c.pending, c.running, c.submitted, c.done, c.failed,
           CASE WHEN f.finished + c.pending + c.running + c.submitted > 0
                THEN round(100.0 * f.finished / (f.finished + c.pending + c.running + c.submitted), 1) END
               AS percent_done,
           round(m.per_second, 1) AS items_per_second,
           CASE WHEN c.pending + c.running > 0 AND m.per_second > 0
                THEN make_interval(secs => round((c.pending + c.running) / m.per_second)) END AS eta,
           l.last_finished,
           e.last_error
    FROM llm.job j
    -- each part is served by an index of llm.queue, so that the view stays
    -- quick with a million items
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE q.status = 'pending') AS pending,
               count(*) FILTER (WHERE q.status = 'running') AS running,
               count(*) FILTER (WHERE q.status = 'submitted') AS submitted,
               count(*) FILTER (WHERE q.status = 'done') AS done,
               count(*) FILTER (WHERE q.status = 'failed') AS failed
        FROM llm.queue q WHERE q.job = j.name) c
    CROSS JOIN LATERAL (
        SELECT count(*) AS finished FROM llm.queue q
        WHERE q.job = j.name AND q.status IN ('done', 'failed')
          AND q.finished_at >= coalesce(j.last_run_at, '-infinity')) f
    -- finished in the last minute, per second since the first of them
    -- started (at most 60 s)
    CROSS JOIN LATERAL (
        SELECT coalesce(count(*) / greatest(1.0, least(60.0, extract(epoch FROM now() - min(q.started_at)))), 0)
                   AS per_second
        FROM llm.queue q
        WHERE q.job = j.name AND q.status IN ('done', 'failed')
          AND q.finished_at > now() - interval '1 minute') m
    CROSS JOIN LATERAL (
        SELECT greatest(
                   (SELECT max(q.finished_at) FROM llm.queue q
                    WHERE q.job = j.name AND q.status = 'done' AND q.finished_at IS NOT NULL),
                   (SELECT max(q.finished_at) FROM llm.queue q
                    WHERE q.job = j.name AND q.status = 'failed' AND q.finished_at IS NOT NULL))
               AS last_finished) l
    LEFT JOIN LATERAL (
        SELECT q.error AS last_error FROM llm.queue q
        WHERE q.job = j.name AND q.status = 'failed' AND q.finished_at IS NOT NULL
        ORDER BY q.finished_at DESC LIMIT 1) e ON true
    WHERE pg_catalog.pg_has_role(j.owner::oid, 'USAGE')
    ORDER BY j.name;
COMMENT ON VIEW llm.job_status IS 'Per job: queue items pending, running, submitted (in a provider batch), done and failed; percent of the work since the last run_job that is finished; items per second over the last minute; estimated time to finish; last finished item and last error. Watch it with \watch 1';
