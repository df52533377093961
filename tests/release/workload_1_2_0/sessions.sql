-- The application moves a session along: every request touches its session.
\set stage random(1, 5)
UPDATE sessions SET last_activity = now(), current_stage = :stage
WHERE user_id = 'uaip-load-' || :client_id;
