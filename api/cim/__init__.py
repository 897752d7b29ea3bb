"""IEC 61968-9 documents for account systems: MeterReadings and EndDeviceEvents in an IEC 61968-100
reply, with ReadingType, ReadingQuality and EndDeviceEventType codes from tables that are data."""
