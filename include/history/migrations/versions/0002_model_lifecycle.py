"""model lifecycle: versions, the champion pointer, the audit trail, alerts

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'model_versions',
        sa.Column('model_name', sa.String(length=128), nullable=False),
        sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('checkpoint_id', sa.String(length=64), nullable=False),
        sa.Column('run_id', sa.String(length=64), nullable=True),
        sa.Column('schema_id', sa.String(length=128), nullable=False),
        sa.Column('topic', sa.String(length=255), nullable=False),
        sa.Column('offsets', sa.JSON(), nullable=False),
        sa.Column('records_total', sa.BigInteger(), nullable=False),
        sa.Column('event_time_min', sa.BigInteger(), nullable=True),
        sa.Column('event_time_max', sa.BigInteger(), nullable=True),
        sa.Column('path', sa.Text(), nullable=False),
        sa.Column('metrics', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('gate', sa.JSON(), nullable=True),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('created_at', _WHEN, nullable=False),
        sa.Column('decided_at', _WHEN, nullable=True),
        sa.Column('files_removed_at', _WHEN, nullable=True),
        sa.PrimaryKeyConstraint('model_name', 'version'),
        sa.UniqueConstraint('model_name', 'checkpoint_id', name='uq_model_version_checkpoint'),
    )
    op.create_index('ix_model_versions_status', 'model_versions', ['model_name', 'status'])
    op.create_table(
        'model_pointers',
        sa.Column('model_name', sa.String(length=128), nullable=False),
        sa.Column('champion_version', sa.Integer(), nullable=True),
        sa.Column('previous_version', sa.Integer(), nullable=True),
        sa.Column('changed_by', sa.String(length=255), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('changed_at', _WHEN, nullable=False),
        sa.PrimaryKeyConstraint('model_name'),
    )
    op.create_table(
        'model_events',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('model_name', sa.String(length=128), nullable=False),
        sa.Column('event_key', sa.String(length=255), nullable=False),
        sa.Column('version', sa.Integer(), nullable=True),
        sa.Column('action', sa.String(length=32), nullable=False),
        sa.Column('actor', sa.String(length=255), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('details', sa.JSON(), nullable=True),
        sa.Column('created_at', _WHEN, nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('model_name', 'event_key', name='uq_model_event_key'),
    )
    op.create_index('ix_model_events_model', 'model_events', ['model_name', 'id'])
    op.create_table(
        'alerts',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('model_name', sa.String(length=128), nullable=False),
        sa.Column('alert_key', sa.String(length=255), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('version', sa.Integer(), nullable=True),
        sa.Column('message', sa.Text(), nullable=False),
        sa.Column('details', sa.JSON(), nullable=True),
        sa.Column('created_at', _WHEN, nullable=False),
        sa.Column('notified_at', _WHEN, nullable=True),
        sa.Column('notified_by', sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('model_name', 'alert_key', name='uq_alert_key'),
    )


def downgrade() -> None:
    op.drop_table('alerts')
    op.drop_index('ix_model_events_model', table_name='model_events')
    op.drop_table('model_events')
    op.drop_table('model_pointers')
    op.drop_index('ix_model_versions_status', table_name='model_versions')
    op.drop_table('model_versions')
