"""One file per schema revision, oldest first; alembic orders them by `down_revision`, not by name."""
