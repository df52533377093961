-- The application appends a message to the conversation.
\set stage random(1, 5)
INSERT INTO conversation_history (session_id, stage_number, role, content)
SELECT session_id, :stage, 'user', 'A message written during the rehearsal.'
FROM sessions WHERE user_id = 'uaip-load-' || :client_id;
