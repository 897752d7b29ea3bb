"""meter-gateway: meter-data ingestion gateway for smart and PAYG utility meters."""

__version__ = "0.1.0"
