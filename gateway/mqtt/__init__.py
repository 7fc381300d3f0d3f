"""MQTT: one hub (connection, subscriptions, routing) per broker."""
