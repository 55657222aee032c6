"""What the API, the activities and the workers share: settings, database, security, Temporal."""

__version__ = "0.1.0"
