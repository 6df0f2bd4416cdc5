"""Alembic migrations of the catalog schema, run by `stackvault.catalog.schema` when a catalog is opened."""
