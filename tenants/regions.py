"""Where this deployment sits among the installation's regions (data residency).

A multi-region installation runs one complete deployment per region (a "cell"): its
own PostgreSQL, Redis and workers, and an organization's rows exist only in the
database of the region it was approved in. Nothing is replicated. The deployments
share only a secret, with which they ask each other one question: "which region
hosts this organization?" (tenants/internal_api.py).

Configuration, from the environment (connector/settings.py):

    CONNECTOR_REGION=europe
    CONNECTOR_REGIONS="americas=https://us.connector.example.org
                       europe=https://eu.connector.example.org"
    REGION_LOOKUP_SECRET=<at least 32 random characters, the same in every region>

With CONNECTOR_REGION empty (the default, and the demo) the installation is a
single region and none of the routing applies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings

from tenants.models import DataRegion


class RegionConfigError(ValueError):
    """CONNECTOR_REGIONS or CONNECTOR_REGION cannot be understood."""


@dataclass(frozen=True)
class RegionLayout:
    current: str  # "" in a single-region installation
    base_urls: dict[str, str]  # region -> public base URL, without a trailing slash

    @property
    def is_multi_region(self) -> bool:
        return bool(self.current)

    def base_url(self, region: str) -> str:
        return self.base_urls.get(region, "")

    def others(self) -> list[tuple[str, str]]:
        return [(region, url) for region, url in self.base_urls.items() if region != self.current]


def parse_region_lines(text: str) -> dict[str, str]:
    """ "americas=https://us.example.org\\neurope=https://eu.example.org" -> {region: url}."""
    base_urls: dict[str, str] = {}
    for raw in re.split(r"[\n;,]+", text or ""):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        region, sep, url = line.partition("=")
        region, url = region.strip(), url.strip().rstrip("/")
        if not sep or not region or not url:
            raise RegionConfigError(
                f"CONNECTOR_REGIONS line {line!r} is not region=https://base-url "
                "(for example europe=https://eu.connector.example.org)."
            )
        if region not in DataRegion.values:
            raise RegionConfigError(
                f"CONNECTOR_REGIONS names the region {region!r}; known regions are "
                + ", ".join(DataRegion.values)
                + "."
            )
        if not re.match(r"^https?://[^/\s]+$", url):
            raise RegionConfigError(
                f"The base URL of {region} in CONNECTOR_REGIONS must be a scheme and host only "
                f"(like https://eu.connector.example.org), not {url!r}."
            )
        if region in base_urls:
            raise RegionConfigError(f"CONNECTOR_REGIONS names {region} twice.")
        base_urls[region] = url
    return base_urls


def layout() -> RegionLayout:
    """The installation's regions as configured (read from settings on every call: cheap, and
    tests can override the settings)."""
    current = getattr(settings, "CONNECTOR_REGION", "") or ""
    try:
        base_urls = parse_region_lines(getattr(settings, "CONNECTOR_REGIONS_TEXT", ""))
    except RegionConfigError:
        # The system check (tenants/checks.py) reports it; routing must not crash meanwhile.
        base_urls = {}
    return RegionLayout(current=current, base_urls=base_urls)


def is_multi_region() -> bool:
    return layout().is_multi_region


def current_region() -> str:
    return layout().current


def region_label(region: str) -> str:
    try:
        return DataRegion(region).label
    except ValueError:
        return region or "single region"


def regional_base_url(region: str | None = None) -> str:
    """The public base URL for `region` (this deployment's own when None or single-region)."""
    current = layout()
    if region and current.is_multi_region and region != current.current:
        return current.base_url(region) or settings.PUBLIC_BASE_URL
    return settings.PUBLIC_BASE_URL


def config_problems() -> list[str]:
    """What is wrong with the region settings, in words an operator can act on."""
    current = getattr(settings, "CONNECTOR_REGION", "") or ""
    text = getattr(settings, "CONNECTOR_REGIONS_TEXT", "") or ""
    if not current:
        if text.strip():
            return ["CONNECTOR_REGIONS is set but CONNECTOR_REGION is empty: set the region this deployment serves."]
        return []
    problems: list[str] = []
    if current not in DataRegion.values:
        problems.append(
            f"CONNECTOR_REGION is {current!r}; it must be one of " + ", ".join(DataRegion.values) + "."
        )
    try:
        base_urls = parse_region_lines(text)
    except RegionConfigError as error:
        return [*problems, str(error)]
    if current not in base_urls:
        problems.append(
            f"CONNECTOR_REGIONS has no line for this deployment's region {current!r}; add "
            f"{current}=<this deployment's PUBLIC_BASE_URL>."
        )
    elif base_urls[current] != settings.PUBLIC_BASE_URL.rstrip("/"):
        problems.append(
            f"PUBLIC_BASE_URL ({settings.PUBLIC_BASE_URL}) differs from this region's line in "
            f"CONNECTOR_REGIONS ({base_urls[current]}); integration records and links would point elsewhere."
        )
    if len(base_urls) > 1 and len(getattr(settings, "REGION_LOOKUP_SECRET", "") or "") < 32:
        problems.append(
            "REGION_LOOKUP_SECRET must be set to the same random value of at least 32 characters in every "
            "region: the regions sign their lookups with it."
        )
    return problems
