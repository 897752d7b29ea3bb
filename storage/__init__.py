"""Storage: the durable spool and the stores (embedded SQLite, TimescaleDB)."""

from storage.base import Store
from storage.records import BillingRead, ConsumptionBucket, FeedPage, LastValue, RetentionResult, WriteResult

__all__ = ["BillingRead", "ConsumptionBucket", "FeedPage", "LastValue", "RetentionResult", "Store", "WriteResult"]
