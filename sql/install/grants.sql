-- Nothing is granted to PUBLIC: administrators grant USAGE on the schema
-- and EXECUTE on the call functions to the roles that may call models.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA llm FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA llm FROM PUBLIC;
