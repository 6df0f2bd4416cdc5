"""Where repository objects are kept: one small key/value interface that every backend implements.

Keys are `/`-separated relative names (`chunks/ab/ab12...`, `backups/<id>.json`). The engine only
ever calls the `Backend` methods, so an object store (S3, Swift) serves by implementing them; retries,
fault injection and metrics wrap a backend instead of living inside one.
"""

from __future__ import annotations

from .base import Backend, ObjectInfo, open_backend

__all__ = ["Backend", "ObjectInfo", "open_backend"]
