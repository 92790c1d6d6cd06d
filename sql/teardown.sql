-- The end of the run: stop the mock provider sql/setup.sql started, if it
-- started one.
\! bash test/regress_mock.sh stop
SELECT 'done' AS regress;
