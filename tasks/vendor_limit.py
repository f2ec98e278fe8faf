"""One limit per vendor account across runs: a Prefect global concurrency limit of one slot per
account, held by a run for its whole delivery phase (a lease per run — never per request), while
the run's in-process limiter still paces each request at the campaign's ``max_per_second``.

Why one slot and a whole run: the issue run and the update run of one campaign, or two campaigns on
one account, otherwise each send at the full limit and the vendor sees the sum. With the lease they
send one after the other, each at the full limit: together never above it (in every sliding second)
and together at it. Per-batch leases would interleave runs more finely, but an API run overlaps its
batches (sending one while recording the previous), so a batch boundary is not a quiet moment.

The account key is the provider plus a short hash of its endpoint and account (never a credential),
e.g. ``passflow-vendor-passmachine-3f2a9c1d0b7e``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator

from passflow.config import Campaign

log = logging.getLogger("passflow.vendor_limit")
LEASE_SECONDS = 300.0  # renewed while held; a dead run's slot frees itself after this
WAIT_SECONDS = 6 * 3600.0  # longest wait for the account (a long run on the same account)
# The slot is kept this long after the last request: the next run's first second must not overlap
# this run's last one (the vendor counts sliding 1 s windows; measured: 31 in a second without it).
HANDOVER_SECONDS = 1.0
_IDENTITY_FIELDS = ("api_base_url", "base_url", "account", "account_id", "merchant_id")


def vendor_account_key(campaign: Campaign) -> str:
    """The name of the account's global concurrency limit (no secret goes into it)."""
    section = campaign.provider_sections.get(campaign.provider)
    parts = [campaign.provider] + [str(getattr(section, f, "") or "") for f in _IDENTITY_FIELDS]
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]
    return f"passflow-vendor-{campaign.provider}-{digest}"


def ensure_limit(name: str) -> None:
    """Create the account's limit (one slot) if it does not exist; an existing one is left as the
    operator configured it (e.g. deactivated, or 2 slots for an account with two halves)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


def needs_lease(campaign: Campaign, *, dry_run: bool) -> bool:
    """Only runs that call the vendor share its account: a link run signs locally, a dry run sends nothing."""
    from passflow.providers import provider_of

    return provider_of(campaign).calls_vendor and not dry_run


@contextlib.contextmanager
def vendor_lease(campaign: Campaign, *, active: bool = True) -> Iterator[str | None]:
    """Hold the vendor account's slot while the body runs (yields the limit's name, or None when not
    needed). Outside a Prefect API (no server) the body runs unlimited, with a warning."""
    if not active:
        yield None
        return
    from prefect.concurrency.sync import concurrency

    name = vendor_account_key(campaign)
    try:
        ensure_limit(name)
    except Exception as exc:  # noqa: BLE001 - no API: the in-process limiter still holds per run
        log.warning("vendor limit %s unavailable (%s): this run alone paces itself", name, type(exc).__name__)
        yield None
        return
    with concurrency(name, occupy=1, timeout_seconds=WAIT_SECONDS, lease_duration=LEASE_SECONDS, strict=True):
        try:
            yield name
        finally:
            time.sleep(HANDOVER_SECONDS)
