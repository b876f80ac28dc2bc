"""Initial ledger schema: usage intervals and their per-resource requests.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ledger_intervals",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("workload", sa.String(317), nullable=False),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("cluster_queue", sa.String(253), nullable=False),
        sa.Column("local_queue", sa.String(253), nullable=False),
        sa.Column("flavor", sa.String(253), nullable=True),
        sa.Column("workload_type", sa.String(16), nullable=False),
        sa.Column("admitted_at", sa.Double(), nullable=False),
        sa.Column("ended_at", sa.Double(), nullable=True),
        sa.Column("end_reason", sa.String(16), nullable=True),
        sa.Column("gpus", sa.Double(), nullable=False),
        sa.Column("gpu_seconds", sa.Double(), nullable=True),
        sa.CheckConstraint("workload_type IN ('training', 'inference')", name="ck_ledger_intervals_workload_type"),
        sa.CheckConstraint(
            "end_reason IS NULL OR end_reason IN ('Finished', 'Preempted', 'Evicted')",
            name="ck_ledger_intervals_end_reason",
        ),
        sa.CheckConstraint("(ended_at IS NULL) = (end_reason IS NULL)", name="ck_ledger_intervals_ended"),
        sa.CheckConstraint("ended_at IS NULL OR ended_at >= admitted_at", name="ck_ledger_intervals_order"),
        sa.CheckConstraint("gpus >= 0", name="ck_ledger_intervals_gpus"),
    )
    op.create_index("ix_ledger_intervals_workload", "ledger_intervals", ["workload"])
    op.create_index("ix_ledger_intervals_local_queue", "ledger_intervals", ["namespace", "local_queue"])
    op.create_index("ix_ledger_intervals_admitted_at", "ledger_intervals", ["admitted_at"])
    op.create_index("ix_ledger_intervals_ended_at", "ledger_intervals", ["ended_at"])
    # At most one open interval per workload (partial index: SQLite and PostgreSQL).
    op.create_index(
        "uq_ledger_intervals_open",
        "ledger_intervals",
        ["workload"],
        unique=True,
        sqlite_where=sa.text("ended_at IS NULL"),
        postgresql_where=sa.text("ended_at IS NULL"),
    )

    op.create_table(
        "ledger_interval_resources",
        sa.Column(
            "interval_id",
            sa.Integer(),
            sa.ForeignKey("ledger_intervals.id", ondelete="CASCADE", name="fk_ledger_interval_resources_interval"),
            primary_key=True,
        ),
        sa.Column("resource", sa.String(317), primary_key=True),
        sa.Column("quantity", sa.Double(), nullable=False),
        sa.Column("accelerator", sa.Boolean(), nullable=False),
        sa.Column("resource_seconds", sa.Double(), nullable=True),
        sa.CheckConstraint("quantity >= 0", name="ck_ledger_interval_resources_quantity"),
    )
    op.create_index("ix_ledger_interval_resources_resource", "ledger_interval_resources", ["resource"])


def downgrade() -> None:
    op.drop_index("ix_ledger_interval_resources_resource", table_name="ledger_interval_resources")
    op.drop_table("ledger_interval_resources")
    op.drop_index("uq_ledger_intervals_open", table_name="ledger_intervals")
    op.drop_index("ix_ledger_intervals_ended_at", table_name="ledger_intervals")
    op.drop_index("ix_ledger_intervals_admitted_at", table_name="ledger_intervals")
    op.drop_index("ix_ledger_intervals_local_queue", table_name="ledger_intervals")
    op.drop_index("ix_ledger_intervals_workload", table_name="ledger_intervals")
    op.drop_table("ledger_intervals")
