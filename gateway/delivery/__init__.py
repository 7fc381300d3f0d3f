"""Durable delivery: the spool (outbox on disk) and the loop that drains it into a sink."""
