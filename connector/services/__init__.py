"""Writes of the core app, one module per domain: endpoints, approvals, records."""
