-- UAIP Scoping database, schema v1.0.0 (the baseline).
--
-- This file is what the postgres:16 container runs on its first start and what
-- `inv db.seed` loads. It is frozen: later schema versions are Alembic revisions,
-- and a database built from this file is brought forward with
-- `inv db.stamp --rev 03033cebb647 && inv db.upgrade`.

CREATE EXTENSION IF NOT EXISTS "uuid-ossp";

-- One scoping session: a user walking an AI project idea through the five stages.
CREATE TABLE sessions (
    session_id     UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
    user_id        VARCHAR(255) NOT NULL,
    project_name   VARCHAR(500),
    current_stage  INTEGER NOT NULL DEFAULT 1
                   CONSTRAINT sessions_current_stage_check CHECK (current_stage BETWEEN 1 AND 5),
    status         VARCHAR(20) NOT NULL DEFAULT 'in_progress'
                   CONSTRAINT sessions_status_check
                   CHECK (status IN ('in_progress', 'completed', 'abandoned')),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    last_activity  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    metadata       JSONB NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX idx_sessions_user_id ON sessions (user_id);
CREATE INDEX idx_sessions_status ON sessions (status);
CREATE INDEX idx_sessions_last_activity ON sessions (last_activity);

-- The answers collected in each stage, one row per field.
CREATE TABLE stage_data (
    stage_data_id  UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
    session_id     UUID NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    stage_number   INTEGER NOT NULL
                   CONSTRAINT stage_data_stage_number_check CHECK (stage_number BETWEEN 1 AND 5),
    field_name     VARCHAR(255) NOT NULL,
    field_value    JSONB NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT stage_data_session_stage_field_key UNIQUE (session_id, stage_number, field_name)
);

CREATE INDEX idx_stage_data_session_stage ON stage_data (session_id, stage_number);

-- Every message exchanged between the user and the assistant.
CREATE TABLE conversation_history (
    message_id     UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
    session_id     UUID NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    stage_number   INTEGER NOT NULL
                   CONSTRAINT conversation_history_stage_number_check
                   CHECK (stage_number BETWEEN 1 AND 5),
    role           VARCHAR(20) NOT NULL
                   CONSTRAINT conversation_history_role_check
                   CHECK (role IN ('user', 'assistant', 'system')),
    content        TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    metadata       JSONB NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX idx_conversation_history_session_created
    ON conversation_history (session_id, created_at);

-- Saved states a session can be resumed from.
CREATE TABLE checkpoints (
    checkpoint_id    UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
    session_id       UUID NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    stage_number     INTEGER NOT NULL
                     CONSTRAINT checkpoints_stage_number_check CHECK (stage_number BETWEEN 1 AND 5),
    checkpoint_data  JSONB NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX idx_checkpoints_session_stage ON checkpoints (session_id, stage_number);

-- The project charter a completed session produces (one per session).
CREATE TABLE project_charters (
    charter_id           UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
    session_id           UUID NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    charter_data         JSONB NOT NULL,
    governance_decision  VARCHAR(30) NOT NULL
                         CONSTRAINT project_charters_governance_decision_check
                         CHECK (governance_decision IN
                                ('proceed', 'revise', 'halt', 'submit_to_committee')),
    feasibility_level    VARCHAR(10) NOT NULL
                         CONSTRAINT project_charters_feasibility_level_check
                         CHECK (feasibility_level IN ('low', 'medium', 'high')),
    markdown_path        TEXT,
    pdf_path             TEXT,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT project_charters_session_id_key UNIQUE (session_id)
);

-- Per-field answer quality scores from the quality validator.
CREATE TABLE quality_metrics (
    metric_id      UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
    session_id     UUID NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    stage_number   INTEGER NOT NULL
                   CONSTRAINT quality_metrics_stage_number_check CHECK (stage_number BETWEEN 1 AND 5),
    field_name     VARCHAR(255) NOT NULL,
    quality_score  INTEGER NOT NULL
                   CONSTRAINT quality_metrics_quality_score_check CHECK (quality_score BETWEEN 0 AND 10),
    issues         JSONB NOT NULL DEFAULT '[]'::jsonb,
    suggestions    JSONB NOT NULL DEFAULT '[]'::jsonb,
    validated_at   TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX idx_quality_metrics_session_stage ON quality_metrics (session_id, stage_number);

-- Cross-stage consistency checks of a session's answers.
CREATE TABLE consistency_reports (
    report_id            UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
    session_id           UUID NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    is_consistent        BOOLEAN NOT NULL,
    overall_feasibility  VARCHAR(10) NOT NULL
                         CONSTRAINT consistency_reports_overall_feasibility_check
                         CHECK (overall_feasibility IN ('low', 'medium', 'high')),
    contradictions       JSONB NOT NULL DEFAULT '[]'::jsonb,
    recommendations      JSONB NOT NULL DEFAULT '[]'::jsonb,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX idx_consistency_reports_session ON consistency_reports (session_id);

-- Keeps sessions.updated_at current on every change.
CREATE FUNCTION update_sessions_timestamp() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := NOW();
    RETURN NEW;
END;
$$;

-- Keeps stage_data.updated_at current and records activity on the owning session.
CREATE FUNCTION update_stage_data_timestamp() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := NOW();
    UPDATE sessions SET last_activity = NOW() WHERE session_id = NEW.session_id;
    RETURN NEW;
END;
$$;

-- How many sessions are still in progress.
CREATE FUNCTION get_active_sessions_count() RETURNS INTEGER
LANGUAGE sql STABLE AS $$
    SELECT COUNT(*)::INTEGER FROM sessions WHERE status = 'in_progress';
$$;

-- Per stage of one session: how many fields are filled in and when the last one changed.
CREATE FUNCTION get_session_progress(p_session_id UUID)
RETURNS TABLE (stage_number INTEGER, fields_completed INTEGER, last_updated TIMESTAMPTZ)
LANGUAGE sql STABLE AS $$
    SELECT sd.stage_number, COUNT(*)::INTEGER, MAX(sd.updated_at)
    FROM stage_data AS sd
    WHERE sd.session_id = p_session_id
    GROUP BY sd.stage_number
    ORDER BY sd.stage_number;
$$;

-- Marks sessions idle for more than 7 days as abandoned; returns how many it marked.
CREATE FUNCTION mark_abandoned_sessions() RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    marked INTEGER;
BEGIN
    UPDATE sessions
       SET status = 'abandoned'
     WHERE status = 'in_progress'
       AND last_activity < NOW() - INTERVAL '7 days';
    GET DIAGNOSTICS marked = ROW_COUNT;
    RETURN marked;
END;
$$;

CREATE TRIGGER trigger_update_sessions_timestamp
    BEFORE UPDATE ON sessions
    FOR EACH ROW EXECUTE FUNCTION update_sessions_timestamp();

CREATE TRIGGER trigger_update_stage_data_timestamp
    BEFORE INSERT OR UPDATE ON stage_data
    FOR EACH ROW EXECUTE FUNCTION update_stage_data_timestamp();
