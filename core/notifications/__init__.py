"""Notifications: channels, templates, preferences, dispatch and delivery senders."""
