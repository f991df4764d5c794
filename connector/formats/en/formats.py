"""Django's date formats for English, set to the product's one format (connector/datetimes.py).

So a datetime Django renders by itself (the admin's lists and forms' read-only fields, a
bare `{{ value }}` in a template) reads "5 Dec 2026, 08:44 UTC" too, zone named.
"""

DATETIME_FORMAT = "j M Y, H:i T"
SHORT_DATETIME_FORMAT = "j M Y, H:i T"
DATE_FORMAT = "j M Y"
SHORT_DATE_FORMAT = "j M Y"
TIME_FORMAT = "H:i T"
MONTH_DAY_FORMAT = "j M"
YEAR_MONTH_FORMAT = "F Y"
