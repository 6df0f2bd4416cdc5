"""Catalog tables. One row per job, backup and backed-up disk; never one per block."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    repo_id: Mapped[str] = mapped_column(String(40), index=True)
    started: Mapped[str] = mapped_column(String(40))
    finished: Mapped[str | None] = mapped_column(String(40), nullable=True)
    status: Mapped[str] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(String, default="")
    backup_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    report: Mapped[dict] = mapped_column(JSON, default=dict)
    # The lease of a running job (catalog/leases.py); None in rows written before leases existed.
    host: Mapped[str | None] = mapped_column(String, nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    heartbeat: Mapped[str | None] = mapped_column(String(40), nullable=True)  # last renewal, ISO time
    lease_expires: Mapped[float | None] = mapped_column(Float, nullable=True)  # Unix time


class BackupRow(Base):
    __tablename__ = "backups"

    backup_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    repo_id: Mapped[str] = mapped_column(String(40), index=True)
    created: Mapped[str] = mapped_column(String(40), index=True)
    finished: Mapped[str] = mapped_column(String(40))
    level: Mapped[str] = mapped_column(String(20))
    requested_level: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String, default="")
    host: Mapped[str] = mapped_column(String, default="")
    consistency: Mapped[str | None] = mapped_column(String(40), nullable=True)
    source: Mapped[dict] = mapped_column(JSON, default=dict)
    tags: Mapped[dict] = mapped_column(JSON, default=dict)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_read: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_stored: Mapped[int] = mapped_column(BigInteger, default=0)
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    disks: Mapped[list[DiskRow]] = relationship(back_populates="backup", cascade="all, delete-orphan",
                                                order_by="DiskRow.position")


class DiskRow(Base):
    __tablename__ = "disks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    backup_id: Mapped[str] = mapped_column(ForeignKey("backups.backup_id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String)
    disk_key: Mapped[str] = mapped_column(String, index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    block_size: Mapped[int] = mapped_column(Integer)
    level: Mapped[str] = mapped_column(String(20))
    bytes_read: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_stored: Mapped[int] = mapped_column(BigInteger, default=0)
    blocks_total: Mapped[int] = mapped_column(BigInteger, default=0)
    blocks_changed: Mapped[int] = mapped_column(BigInteger, default=0)
    backup: Mapped[BackupRow] = relationship(back_populates="disks")


class PolicyRunRow(Base):
    """One due run of a scheduling policy: made once per (repository, policy, slot) whichever proxy
    sees it due first; its items are the queue that every proxy's workers take from."""

    __tablename__ = "policy_runs"
    __table_args__ = (
        UniqueConstraint("repo_id", "policy", "slot", name="uq_policy_runs_slot"),
        # A policy never runs twice at once, even when two proxies open a run within the same instant.
        Index("uq_policy_runs_unfinished", "repo_id", "policy", unique=True,
              postgresql_where=text("status != 'done'"), sqlite_where=text("status != 'done'")),
        Index("ix_policy_runs_newest", "repo_id", "policy", "created"),  # last_slot, at every poll
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    repo_id: Mapped[str] = mapped_column(String(40), index=True)
    policy: Mapped[str] = mapped_column(String(200), index=True)
    slot: Mapped[str] = mapped_column(String(40))  # the schedule's time this run is for, ISO with offset
    level: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))  # queued -> finishing -> done
    created: Mapped[str] = mapped_column(String(40))
    finished: Mapped[str | None] = mapped_column(String(40), nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(40), nullable=True)  # the catalog job recording it
    report: Mapped[dict] = mapped_column(JSON, default=dict)
    # The finisher's lease (catalog/leases.py): a run whose finisher was killed is finished by another.
    host: Mapped[str | None] = mapped_column(String, nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    heartbeat: Mapped[str | None] = mapped_column(String(40), nullable=True)
    lease_expires: Mapped[float | None] = mapped_column(Float, nullable=True)

    @property
    def kind(self) -> str:  # what a lease names its holder's work by (leases.stopped)
        return "policy"


class PolicyItemRow(Base):
    """One server or volume of a run: queued, claimed by one proxy's worker under a lease, then done."""

    __tablename__ = "policy_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("policy_runs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # server | volume
    item_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String, default="")
    availability_zone: Mapped[str | None] = mapped_column(String, nullable=True)
    status: Mapped[str] = mapped_column(String(20), index=True)  # queued | claimed | done
    result: Mapped[str | None] = mapped_column(String(20), nullable=True)  # the item's backup status
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[dict] = mapped_column(JSON, default=dict)
    # The claim's lease, as a running job row's (catalog/leases.py).
    host: Mapped[str | None] = mapped_column(String, nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    heartbeat: Mapped[str | None] = mapped_column(String(40), nullable=True)
    lease_expires: Mapped[float | None] = mapped_column(Float, nullable=True)


class PolicyRow(Base):
    """A policy written through the API: the keys of a `[policy.NAME]` table, as JSON, parsed by the
    config's own parser wherever it is read (service/policies.py). It backs up into the repository of
    `repo_id`, as the config's policies back up into the repository of the config."""

    __tablename__ = "policies"

    repo_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    settings: Mapped[dict] = mapped_column(JSON, default=dict)
    created: Mapped[str] = mapped_column(String(40))
    updated: Mapped[str] = mapped_column(String(40))
