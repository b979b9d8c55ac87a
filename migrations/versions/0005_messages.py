"""course and assignment conversations, private threads with staff, read positions

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 02:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('conversation', sa.String(length=64), nullable=False),
    sa.Column('course_id', sa.Integer(), nullable=False),
    sa.Column('assignment_id', sa.Integer(), nullable=True),
    sa.Column('student_id', sa.Integer(), nullable=True),
    sa.Column('author_id', sa.Integer(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('pinned_at', sa.DateTime(), nullable=True),
    sa.Column('pinned_by_id', sa.Integer(), nullable=True),
    sa.Column('hidden_at', sa.DateTime(), nullable=True),
    sa.Column('hidden_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['assignment_id'], ['assignments.id'], name=op.f('fk_messages_assignment_id_assignments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_messages_author_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['course_id'], ['courses.id'], name=op.f('fk_messages_course_id_courses'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['hidden_by_id'], ['users.id'], name=op.f('fk_messages_hidden_by_id_users')),
    sa.ForeignKeyConstraint(['pinned_by_id'], ['users.id'], name=op.f('fk_messages_pinned_by_id_users')),
    sa.ForeignKeyConstraint(['student_id'], ['users.id'], name=op.f('fk_messages_student_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_messages'))
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index('ix_messages_conversation_id', ['conversation', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_course_id'), ['course_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_author_id'), ['author_id'], unique=False)

    op.create_table('message_reads',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('conversation', sa.String(length=64), nullable=False),
    sa.Column('last_read_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_message_reads_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_message_reads')),
    sa.UniqueConstraint('user_id', 'conversation', name=op.f('uq_message_reads_user_id'))
    )


def downgrade():
    op.drop_table('message_reads')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_messages_author_id'))
        batch_op.drop_index(batch_op.f('ix_messages_course_id'))
        batch_op.drop_index('ix_messages_conversation_id')

    op.drop_table('messages')
