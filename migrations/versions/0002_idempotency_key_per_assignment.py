"""idempotency key per assignment

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 10:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.drop_constraint('uq_submissions_student_id', type_='unique')
        batch_op.create_unique_constraint('uq_submissions_student_assignment_key', ['student_id', 'assignment_id', 'idempotency_key'])

    


def downgrade():
    
    # The old constraint allows a key once per student: keep it on the student's first
    # submission that used it and clear it on the others, which can then no longer be replayed.
    op.execute(sa.text(
        'UPDATE submissions SET idempotency_key = NULL '
        'WHERE idempotency_key IS NOT NULL AND EXISTS ('
        'SELECT 1 FROM submissions AS earlier '
        'WHERE earlier.student_id = submissions.student_id '
        'AND earlier.idempotency_key = submissions.idempotency_key '
        'AND earlier.id < submissions.id)'
    ))
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.drop_constraint('uq_submissions_student_assignment_key', type_='unique')
        batch_op.create_unique_constraint('uq_submissions_student_id', ['student_id', 'idempotency_key'])

    
