-- The application saves a field of the current stage (an upsert).
\set stage random(1, 5)
INSERT INTO stage_data (session_id, stage_number, field_name, field_value)
SELECT session_id, :stage, 'load', jsonb_build_object('at', now()::text)
FROM sessions WHERE user_id = 'uaip-load-' || :client_id
ON CONFLICT (session_id, stage_number, field_name)
DO UPDATE SET field_value = EXCLUDED.field_value, updated_at = now();
