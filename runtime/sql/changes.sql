-- Change notifications for query subscriptions (runtime/subscriptions/).
--
-- notify_commit is one simple-query string, sent instead of COMMIT by a mutation that wrote
-- tables: the notification costs no extra round trip, is delivered only if the COMMIT
-- succeeds, and a retried attempt sends it again. {tables} is filled in with psycopg's
-- sql.Literal (a simple query has no bound parameters): the comma-separated table names, or
-- '*' for any table. NOTIFY rather than SELECT pg_notify(...): a utility statement is not
-- planned and returns no row (~75 us less per mutation, benchmarks/bench_notify.py).

-- name: notify_commit
NOTIFY swarm_changes, {tables}; COMMIT

-- name: listen
LISTEN swarm_changes
