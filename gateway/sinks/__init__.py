"""Sinks: where spooled readings are delivered (InfluxDB, the local store)."""
