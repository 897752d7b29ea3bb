"""The durable local spool between the pipeline and the sink."""

from storage.spool.spool import Spool, SpoolStats

__all__ = ["Spool", "SpoolStats"]
