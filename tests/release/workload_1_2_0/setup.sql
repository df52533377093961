-- Run once on the rehearsal copy before the writers start: the sessions they write in, one per
-- pgbench client (user_id uaip-load-0, uaip-load-1, ...). %(clients)s is the number of clients.
INSERT INTO sessions (user_id, project_name)
SELECT 'uaip-load-' || n, 'rehearsal load' FROM generate_series(0, %(clients)s - 1) AS n;
