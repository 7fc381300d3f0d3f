"""What the gateway knows about itself: counters, the status document, self-metrics."""
