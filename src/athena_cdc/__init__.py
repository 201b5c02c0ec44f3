"""athena-cdc: change-data-capture over WebSocket, with replay from a durable log."""

__version__ = "0.1.0"
