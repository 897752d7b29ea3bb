"""Storage: the durable spool and the stores (embedded SQLite, TimescaleDB)."""

from storage.base import BillingRead, ConsumptionBucket, FeedPage, LastValue, RetentionResult, Store, WriteResult

__all__ = ["BillingRead", "ConsumptionBucket", "FeedPage", "LastValue", "RetentionResult", "Store", "WriteResult"]
