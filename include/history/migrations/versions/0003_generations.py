"""generations of a topic, the live-generation pointer, rebuilds; the ledger's status fits waiting_for_rebuild

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'generations',
        sa.Column('base_topic', sa.String(length=255), nullable=False),
        sa.Column('generation', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('topic', sa.String(length=255), nullable=False),
        sa.Column('model_name', sa.String(length=128), nullable=True),
        sa.Column('lineage', sa.String(length=128), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('rebuild_id', sa.Integer(), nullable=True),
        sa.Column('created_at', _WHEN, nullable=False),
        sa.Column('changed_at', _WHEN, nullable=False),
        sa.Column('retired_at', _WHEN, nullable=True),
        sa.PrimaryKeyConstraint('base_topic', 'generation'),
        sa.UniqueConstraint('topic', name='uq_generations_topic'),
    )
    op.create_table(
        'generation_pointers',
        sa.Column('base_topic', sa.String(length=255), nullable=False),
        sa.Column('live_generation', sa.Integer(), nullable=False),
        sa.Column('previous_generation', sa.Integer(), nullable=True),
        sa.Column('changed_by', sa.String(length=255), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('changed_at', _WHEN, nullable=False),
        sa.PrimaryKeyConstraint('base_topic'),
    )
    op.create_table(
        'rebuilds',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('base_topic', sa.String(length=255), nullable=False),
        sa.Column('generation', sa.Integer(), nullable=False),
        sa.Column('topic', sa.String(length=255), nullable=False),
        sa.Column('model_name', sa.String(length=128), nullable=False),
        sa.Column('lineage', sa.String(length=128), nullable=False),
        sa.Column('from_generation', sa.Integer(), nullable=False),
        sa.Column('active_key', sa.String(length=255), nullable=True),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('requested_by', sa.String(length=255), nullable=False),
        sa.Column('requests', sa.JSON(), nullable=False),
        sa.Column('files_planned', sa.Integer(), nullable=False),
        sa.Column('files_ingested', sa.Integer(), nullable=False),
        sa.Column('rows_ingested', sa.BigInteger(), nullable=False),
        sa.Column('files_left_out', sa.JSON(), nullable=False),
        sa.Column('trained_up_to', sa.JSON(), nullable=False),
        sa.Column('records_trained', sa.BigInteger(), nullable=False),
        sa.Column('candidate_version', sa.Integer(), nullable=True),
        sa.Column('gate', sa.JSON(), nullable=True),
        sa.Column('decision', sa.String(length=16), nullable=True),
        sa.Column('decision_reason', sa.Text(), nullable=True),
        sa.Column('message', sa.Text(), nullable=True),
        sa.Column('created_at', _WHEN, nullable=False),
        sa.Column('updated_at', _WHEN, nullable=False),
        sa.Column('decided_at', _WHEN, nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('active_key', name='uq_rebuilds_active'),
        sa.UniqueConstraint('base_topic', 'generation', name='uq_rebuilds_generation'),
    )
    # 'waiting_for_rebuild' is 19 characters (SQLite does not enforce the length; PostgreSQL does).
    with op.batch_alter_table('ingest_files') as batch:
        batch.alter_column('status', existing_type=sa.String(length=16), type_=sa.String(length=32),
                           existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('ingest_files') as batch:
        batch.alter_column('status', existing_type=sa.String(length=32), type_=sa.String(length=16),
                           existing_nullable=False)
    op.drop_table('rebuilds')
    op.drop_table('generation_pointers')
    op.drop_table('generations')
