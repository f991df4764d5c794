"""Daily roll-ups of visits and texts, the build bookkeeping, and allotment warnings sent.

A roll-up row holds only numbers that add up: counts and sums, plus a small
histogram of lobby waits. Any range (a week, a month, one department or all)
is the sum of its rows, and its 90th percentile comes from the summed
histogram, so no report ever reads the raw visits again.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from tenants.scoping import TenantOwnedModel

# Lobby-wait histogram: (field, lower bound, upper bound) in seconds; a wait of
# w seconds counts in the bucket with lower <= w < upper. The last bucket is
# open-ended; percentiles falling in it use the range's longest wait as its end.
LOBBY_WAIT_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("lw_0s_30s", 0, 30),
    ("lw_30s_1m", 30, 60),
    ("lw_1m_2m", 60, 120),
    ("lw_2m_3m", 120, 180),
    ("lw_3m_4m", 180, 240),
    ("lw_4m_5m", 240, 300),
    ("lw_5m_7m", 300, 420),
    ("lw_7m_10m", 420, 600),
    ("lw_10m_15m", 600, 900),
    ("lw_15m_20m", 900, 1200),
    ("lw_20m_30m", 1200, 1800),
    ("lw_30m_45m", 1800, 2700),
    ("lw_45m_60m", 2700, 3600),
    ("lw_60m_plus", 3600, None),
)
BUCKET_FIELDS = tuple(name for name, _, _ in LOBBY_WAIT_BUCKETS)

# Fields that add up across rows (everything a report sums).
ADDITIVE_FIELDS = (
    "visits",
    "completed",
    "no_shows",
    "total_seconds",
    "attendees_sum",
    "lobby_wait_sum_seconds",
    "lobby_wait_count",
    *BUCKET_FIELDS,
    "sms_sent",
    "sms_delivered",
    "sms_failed",
)


class DailyRollup(TenantOwnedModel):
    """One organization's visits and texts of one local day, department and environment.

    `day` is the date in the department's time zone (the endpoint's): a visit
    belongs to the local day of its start (its scheduled start for a no-show).
    Only finished visits count: completed ones and no-shows.
    """

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    department = models.CharField(max_length=200, blank=True, help_text="The EHR's department ID.")
    environment = models.CharField(
        max_length=12, blank=True, help_text="Empty for texts not tied to an appointment (help, opt-out)."
    )
    visits = models.PositiveIntegerField(default=0, help_text="Completed visits plus no-shows.")
    completed = models.PositiveIntegerField(default=0)
    no_shows = models.PositiveIntegerField(default=0)
    total_seconds = models.BigIntegerField(default=0, help_text="Summed duration of the completed visits.")
    attendees_sum = models.PositiveIntegerField(default=0, help_text="Summed peak attendees.")
    lobby_wait_sum_seconds = models.BigIntegerField(default=0)
    lobby_wait_count = models.PositiveIntegerField(default=0, help_text="Visits with a measured lobby wait.")
    lobby_wait_max_seconds = models.PositiveIntegerField(null=True, blank=True)
    lobby_wait_p90_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Estimated from the histogram below, for this row alone."
    )
    lw_0s_30s = models.PositiveIntegerField("lobby wait under 30 s", default=0)
    lw_30s_1m = models.PositiveIntegerField("lobby wait 30 s to 1 min", default=0)
    lw_1m_2m = models.PositiveIntegerField("lobby wait 1 to 2 min", default=0)
    lw_2m_3m = models.PositiveIntegerField("lobby wait 2 to 3 min", default=0)
    lw_3m_4m = models.PositiveIntegerField("lobby wait 3 to 4 min", default=0)
    lw_4m_5m = models.PositiveIntegerField("lobby wait 4 to 5 min", default=0)
    lw_5m_7m = models.PositiveIntegerField("lobby wait 5 to 7 min", default=0)
    lw_7m_10m = models.PositiveIntegerField("lobby wait 7 to 10 min", default=0)
    lw_10m_15m = models.PositiveIntegerField("lobby wait 10 to 15 min", default=0)
    lw_15m_20m = models.PositiveIntegerField("lobby wait 15 to 20 min", default=0)
    lw_20m_30m = models.PositiveIntegerField("lobby wait 20 to 30 min", default=0)
    lw_30m_45m = models.PositiveIntegerField("lobby wait 30 to 45 min", default=0)
    lw_45m_60m = models.PositiveIntegerField("lobby wait 45 to 60 min", default=0)
    lw_60m_plus = models.PositiveIntegerField("lobby wait 60 min or more", default=0)
    sms_sent = models.PositiveIntegerField(
        default=0, help_text="Texts handed to the provider (incl. delivered)."
    )
    sms_delivered = models.PositiveIntegerField(default=0)
    sms_failed = models.PositiveIntegerField(default=0)
    built_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-day", "department", "environment"]
        verbose_name = "daily roll-up"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "day", "department", "environment"],
                name="one_rollup_per_day_department_env",
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.department or '(no department)'} {self.environment or '-'}"

    @property
    def total_minutes(self) -> float:
        return self.total_seconds / 60

    @property
    def histogram(self) -> list[int]:
        return [getattr(self, name) for name in BUCKET_FIELDS]


class ReportBuild(TenantOwnedModel):
    """Where an organization's roll-ups stand: the last local day built, and when."""

    tenant = models.OneToOneField("tenants.Tenant", on_delete=models.CASCADE, related_name="report_build")
    last_built_day = models.DateField(null=True, blank=True)
    built_at = models.DateTimeField(null=True, blank=True)
    last_range_start = models.DateField(null=True, blank=True)
    last_range_end = models.DateField(null=True, blank=True)
    last_duration_ms = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        verbose_name = "report build"

    def __str__(self) -> str:
        return f"Roll-ups of {self.tenant_id} built to {self.last_built_day or 'nothing yet'}"


class RollupJobState(models.TextChoices):
    DUE = "due", "Due"
    BUILDING = "building", "Building"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class RollupJob(TenantOwnedModel):
    """One organization's local day to build: the unit the nightly roll-up fans out into.

    The hourly planner marks days due (and moves the organization's
    ReportBuild bookkeeping); one task per job builds its day. A job is claimed
    with a lease, so a worker killed mid-build delays the day by at most the
    lease: the sweeper queues it again (connector/sweeper.py).
    """

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    state = models.CharField(max_length=10, choices=RollupJobState.choices, default=RollupJobState.DUE)
    # Due: when the sweeper queues it again if no task has taken it; building: when its build is presumed dead.
    lease_until = models.DateTimeField(null=True, blank=True)
    # Marked due again while it was building (late data): built once more when this build ends.
    again = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    requested_at = models.DateTimeField(default=timezone.now)
    built_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "day"], name="one_rollup_job_per_day")]
        indexes = [models.Index(fields=["state", "lease_until"], name="rollup_jobs_by_lease")]

    def __str__(self) -> str:
        return f"Roll-up of {self.day} for {self.tenant_id} ({self.get_state_display()})"


class AllotmentWarning(TenantOwnedModel):
    """An allotment warning (80% or 100% used) emailed to the administrators, once per month."""

    class Threshold(models.IntegerChoices):
        EIGHTY = 80, "80% used"
        FULL = 100, "100% used"

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    month = models.DateField(help_text="The first day of the month.")
    threshold = models.PositiveSmallIntegerField(choices=Threshold.choices)
    used = models.PositiveIntegerField(help_text="Visits used when the warning was made.")
    allotment = models.PositiveIntegerField()
    recipients = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-month", "-threshold"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "month", "threshold"], name="one_allotment_warning_per_month_and_threshold"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_threshold_display()} in {self.month:%B %Y}"
