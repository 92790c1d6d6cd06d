-- The end of the run: stop the mock provider sql/setup.sql started, if it
-- started one (not when the runner gave one in MOCK_PORT).
\getenv mock_port MOCK_PORT
\if :{?mock_port}
\else
\! bash test/regress_mock.sh stop
\endif
SELECT 'done' AS regress;
