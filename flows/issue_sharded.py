"""Scale-out: one campaign split across several Prefect workers.

* ``issue-passes-shard`` runs one shard: the customers whose id hashes to it (a stable hash, see
  :mod:`passflow.run.shards`), with ``1/N`` (less 1 request/s of headroom) of the campaign's vendor limit (a documented static split,
  so N shards together never exceed the limit, with no per-request coordination) and its own
  ledger lock (campaign, shard) — shards run side by side; an unsharded run of the campaign waits.
* ``issue-passes-sharded`` starts the N shards as runs of an ``issue-passes-shard`` deployment (on a
  process work pool, any number of workers) — child flow runs of this one — and waits for them.
  Without a deployment it runs the shards one after another in this process (a local check).

A shard whose worker died is simply run again (or the whole split: finished shards skip their
issued rows): its ``pending`` rows are reconciled with the vendor before anything is re-created.
"""

from __future__ import annotations

import asyncio
from typing import Any

from passflow.tasks.issue_tasks import deliver_segment, end_staging, stage_segment
from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact
from prefect.deployments import arun_deployment
from pydantic import BaseModel, ConfigDict, Field

from passflow.config import load_campaign
from passflow.run import IssueRun, run_sequence
from passflow.store.ledger import Ledger


class ShardRequest(BaseModel):
    """One shard of a split campaign run."""

    model_config = ConfigDict(extra="forbid")

    campaign: str = Field(title="Campaign file", description="Path of the campaign TOML file")
    shard_index: int = Field(ge=0, title="Shard", description="Which shard this run issues (0 … count-1)")
    shard_count: int = Field(ge=1, le=64, title="Shards", description="How many shards the campaign is split into")
    max_per_second: float | None = Field(
        default=None, gt=0, title="Vendor limit, requests/s (override)",
        description="The whole campaign's limit; this shard uses 1/count of it",
    )


class ShardedIssueRequest(BaseModel):
    """A campaign split across workers."""

    model_config = ConfigDict(extra="forbid")

    campaign: str = Field(title="Campaign file", description="Path of the campaign TOML file (same path on every worker)")
    shards: int = Field(default=2, ge=1, le=64, title="Shards", description="Child runs; each gets 1/shards of the limit")
    deployment: str | None = Field(
        default="issue-passes-shard/issue-passes-shard",
        title="Shard deployment",
        description="'flow/deployment' of issue-passes-shard on a process work pool; empty = run here, one by one",
    )
    max_per_second: float | None = Field(
        default=None, gt=0, title="Vendor limit, requests/s (override)", description="Overrides [limits] max_per_second"
    )

    def shard(self, index: int) -> ShardRequest:
        return ShardRequest(
            campaign=self.campaign, shard_index=index, shard_count=self.shards, max_per_second=self.max_per_second
        )


@flow(name="issue-passes-shard", persist_result=False)
def issue_passes_shard(request: ShardRequest) -> dict[str, Any]:
    """Issue one shard of a campaign (its customers, its share of the vendor limit).

    Args:
        request: The campaign, which shard of how many, and an optional limit override.
    """
    logger = get_run_logger()
    overrides = {"limits.max_per_second": request.max_per_second} if request.max_per_second else {}
    campaign = load_campaign(request.campaign, overrides=overrides)
    shard = (request.shard_index, request.shard_count)
    run = IssueRun(campaign, logger=logger, shard=shard, flow_name="issue-passes-shard")
    logger.info("run %s: %s shard %d of %d", run.run_id, campaign.name, shard[0] + 1, shard[1])
    # The same sequence as an unsharded run, SIGTERM handling included: calls in flight are recorded.
    result = run_sequence(run, stage=stage_segment, check=end_staging, deliver=deliver_segment, logger=logger)
    return result.summary()


@flow(name="issue-passes-sharded", persist_result=False)
async def issue_passes_sharded(request: ShardedIssueRequest) -> dict[str, Any]:
    """Split a campaign into shards, run them as child runs on the shard deployment, and report.

    Args:
        request: The campaign, how many shards, the shard deployment and an optional limit override.
    """
    logger = get_run_logger()
    campaign = load_campaign(request.campaign)  # fails here, before any child starts, on a bad file
    if request.deployment:
        runs = await asyncio.gather(
            *(
                arun_deployment(
                    request.deployment,
                    parameters={"request": request.shard(i).model_dump()},
                    timeout=None,
                    as_subflow=True,
                )
                for i in range(request.shards)
            )
        )
        states = {i: (r.state.type.value if r.state else "UNKNOWN") for i, r in enumerate(runs)}
    else:
        states = {}
        for i in range(request.shards):
            await asyncio.to_thread(issue_passes_shard, request.shard(i))
            states[i] = "COMPLETED"
    ledger = Ledger(campaign.ledger.url)
    try:
        counts = ledger.status_counts(campaign.name)
    finally:
        ledger.close()
    failed = sorted(i for i, s in states.items() if s != "COMPLETED")
    await acreate_table_artifact(
        key=f"{campaign.name.lower()}-shards"[:100].replace("_", "-"),
        table=[{"shard": i, "state": s} for i, s in states.items()]
        + [{"shard": f"ledger: {k}", "state": v} for k, v in counts.items()],
        description=f"{campaign.name}: {request.shards} shards",
    )
    if failed:
        raise RuntimeError(
            f"shards {failed} of {campaign.name} did not complete; run this flow again (finished shards skip "
            "their issued customers, the others reconcile and complete)"
        )
    logger.info("%s: %d shards completed; ledger %s", campaign.name, request.shards, counts)
    return {"campaign": campaign.name, "shards": states, "ledger": counts}
