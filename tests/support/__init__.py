"""Helpers shared by several test modules (servers, fakes); no tests live here."""
