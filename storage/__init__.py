"""Storage: the durable spool and the stores (embedded SQLite, TimescaleDB)."""

from storage.base import LastValue, Store, WriteResult

__all__ = ["LastValue", "Store", "WriteResult"]
