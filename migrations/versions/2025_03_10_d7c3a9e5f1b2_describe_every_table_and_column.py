"""Describe every table and column with comments

Schema v1.2.0: the comments say what each table and column holds in the scoping assistant's
terms; `inv db.docs` turns them into docs/schema/. No data or structure changes.

Revision ID: d7c3a9e5f1b2
Revises: b41d9e0c7f25
Create Date: 2025-03-10 09:00:00.000000

"""

from collections.abc import Sequence

from alembic import op

from uaip_db.ops import set_comments

# revision identifiers, used by Alembic.
revision: str = "d7c3a9e5f1b2"
down_revision: str | Sequence[str] | None = "b41d9e0c7f25"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COMMENTS: dict[str, str | None] = {
    "sessions": "One scoping session: a user walking an AI project idea through the five stages.",
    "sessions.session_id": "Identifies the session; every other table points here.",
    "sessions.user_id": "The user who owns the session, as the application's identity provider names them.",
    "sessions.project_name": "Working title of the AI project being scoped, once the user gives one.",
    "sessions.current_stage": "Stage the user is in: 1 business objective, 2 value, 3 data, 4 users, 5 ethics.",
    "sessions.status": "in_progress while the user works, completed once a charter exists, abandoned after 7 idle days.",
    "sessions.created_at": "When the session started.",
    "sessions.updated_at": "When the session row last changed (set by trigger_update_sessions_timestamp).",
    "sessions.last_activity": "When the user last answered anything; drives mark_abandoned_sessions().",
    "sessions.metadata": "Free-form client details (JSONB): UI version, language, feature flags.",
    "sessions.email": "Contact address of the user, when they chose to give one.",
    "stage_data": "The answers collected in each stage, one row per field of the stage's questionnaire.",
    "stage_data.stage_data_id": "Identifies the answer.",
    "stage_data.session_id": "The session the answer belongs to.",
    "stage_data.stage_number": "Stage (1-5) whose questionnaire the field belongs to.",
    "stage_data.field_name": "Questionnaire field, e.g. business_objective or data_sources.",
    "stage_data.field_value": "The answer as JSONB: text, a list or a structured object, as the field needs.",
    "stage_data.created_at": "When the field was first answered.",
    "stage_data.updated_at": "When the answer last changed (set by trigger_update_stage_data_timestamp).",
    "conversation_history": "Every message exchanged between the user and the assistant, in order.",
    "conversation_history.message_id": "Identifies the message.",
    "conversation_history.session_id": "The session the message belongs to.",
    "conversation_history.stage_number": "Stage (1-5) the conversation was in.",
    "conversation_history.role": "Who spoke: user, assistant or system.",
    "conversation_history.content": "The message text as shown to the user.",
    "conversation_history.created_at": "When the message was sent.",
    "conversation_history.metadata": "Details of the turn (JSONB): model, token counts, tool calls.",
    "checkpoints": "Saved states a session can be resumed from, one or more per stage.",
    "checkpoints.checkpoint_id": "Identifies the checkpoint.",
    "checkpoints.session_id": "The session the checkpoint saves.",
    "checkpoints.stage_number": "Stage (1-5) the session was in when saved.",
    "checkpoints.checkpoint_data": "The serialized assistant state (JSONB) needed to resume.",
    "checkpoints.created_at": "When the checkpoint was taken.",
    "project_charters": "The AI project charter a completed session produces (one per session).",
    "project_charters.charter_id": "Identifies the charter.",
    "project_charters.session_id": "The session that produced the charter (unique).",
    "project_charters.charter_data": "The charter's content (JSONB): objectives, value, data, users, ethics.",
    "project_charters.governance_decision": "Recommendation: proceed, revise, halt or submit_to_committee.",
    "project_charters.feasibility_level": "Overall feasibility judged from the five stages: low, medium or high.",
    "project_charters.markdown_path": "Where the rendered Markdown charter was stored, if exported.",
    "project_charters.pdf_path": "Where the rendered PDF charter was stored, if exported.",
    "project_charters.created_at": "When the charter was generated.",
    "quality_metrics": "Per-field answer quality scores from the quality validator.",
    "quality_metrics.metric_id": "Identifies the score.",
    "quality_metrics.session_id": "The session whose answer was scored.",
    "quality_metrics.stage_number": "Stage (1-5) of the scored field.",
    "quality_metrics.field_name": "The questionnaire field that was scored.",
    "quality_metrics.quality_score": "Score from 0 (unusable) to 10 (complete and specific).",
    "quality_metrics.issues": "Problems the validator found (JSONB list).",
    "quality_metrics.suggestions": "Follow-up questions the validator proposed (JSONB list).",
    "quality_metrics.validated_at": "When the answer was scored.",
    "consistency_reports": "Cross-stage consistency checks of a session's answers.",
    "consistency_reports.report_id": "Identifies the report.",
    "consistency_reports.session_id": "The session that was checked.",
    "consistency_reports.is_consistent": "Whether the stages agree with each other.",
    "consistency_reports.overall_feasibility": "Feasibility judged across stages: low, medium or high.",
    "consistency_reports.contradictions": "Contradictions found between stages (JSONB list).",
    "consistency_reports.recommendations": "What to revisit to resolve them (JSONB list).",
    "consistency_reports.created_at": "When the check ran.",
}


def upgrade() -> None:
    """Comment every table and column."""
    set_comments(op, COMMENTS)


def downgrade() -> None:
    """Remove the comments again."""
    set_comments(op, dict.fromkeys(COMMENTS))
