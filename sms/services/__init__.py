"""Writes of the SMS app: setup, appointments, messages, inbound texts."""
