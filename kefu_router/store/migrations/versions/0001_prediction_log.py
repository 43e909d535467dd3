"""prediction log and feedback

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.String(100), nullable=False),
        sa.Column("conversation_id", sa.String(200)),
        sa.Column("turn", sa.Integer),
        sa.Column("decision_id", sa.String(32)),
        sa.Column("emotion", sa.String(32)),
        sa.Column("intent", sa.String(32)),
        sa.Column("customer_type", sa.JSON),
        sa.Column("scores", sa.JSON),
        sa.Column("playbook", sa.String(64)),
        sa.Column("rule", sa.String(64)),
        sa.Column("needs_human_review", sa.Boolean),
        sa.Column("text_masked", sa.Text),
        sa.Column("text_hmac", sa.String(64)),
    )
    op.create_index("ix_predictions_created_at", "predictions", ["created_at"])
    op.create_index("ix_predictions_conversation_turn", "predictions", ["conversation_id", "turn"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
        sa.Column("request_digest", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("agent_id", sa.String(200), nullable=False),
        sa.Column("prediction_id", sa.String(32), sa.ForeignKey("predictions.id", ondelete="CASCADE")),
        sa.Column("decision_id", sa.String(32), sa.ForeignKey("predictions.id", ondelete="CASCADE")),
        sa.Column("emotion", sa.String(32)),
        sa.Column("intent", sa.String(32)),
        sa.Column("customer_type", sa.JSON),
        sa.Column("playbook", sa.String(64)),
    )
    op.create_index("ix_feedback_created_at", "feedback", ["created_at"])
    op.create_index("ix_feedback_prediction_id", "feedback", ["prediction_id"])
    op.create_index("ix_feedback_decision_id", "feedback", ["decision_id"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("predictions")
