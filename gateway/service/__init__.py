"""Running as a service: the state-directory lock, the runtime directory, signals."""
