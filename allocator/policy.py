"""The allocation policy: how GPU hosts, idle GPU time and shared charges are attributed.

:class:`AllocationPolicy` is the one schema of the ``[allocation]`` config section: the config
validates the TOML with it and hands the allocator the validated policy. Every choice is
documented with a worked example in ``docs/allocation.md``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

GpuBasis = Literal["usage", "allocation", "max"]
"""How a GPU host's cost is split over the projects that ran on it, per hour:

* ``usage``: busy GPU-seconds (``gpu_seconds_busy`` x MIG slice fraction: each sample's share
  of the device's utilisation among the pods present);
* ``allocation``: GPU-seconds held (``gpu_seconds_held`` x slice fraction: each sample's
  1/n among the pods present), whatever the utilisation: the view of Kubernetes requests,
  OpenCost and Kubecost;
* ``max``: per GPU row the larger of the two (capped at the GPU's seconds).
"""
IdlePolicy = Literal["owner", "users", "separate"]
"""Who pays for GPU-seconds nobody used: the host's owner (its project tag), the host's users
that hour in proportion to their use, or nobody (an ``idle`` line of its own)."""
SharedPolicy = Literal["even", "proportional", "headcount", "weights"]
"""How untagged shared charges (support, networking, untagged credits) are split over projects:
evenly over projects with cost that day, in proportion to their direct cost that day, by their
FTE that day, or by fixed weights."""


class AllocationPolicy(BaseModel):
    """Every choice the allocator makes that a finance team may want to make differently.

    ```toml
    [allocation]
    gpu_basis = "usage"                 # usage | allocation | max
    idle = "owner"                      # owner | users | separate
    shared = "headcount"                # even | proportional | headcount | weights
    shared_weights = { llm-serving = 2.0, recsys-training = 1.0 }   # only for "weights"
    shared_service_names = ["*Support*"]            # globs on ServiceName
    shared_service_categories = ["Networking"]      # FOCUS ServiceCategory values
    shared_charge_categories = ["Credit"]           # FOCUS ChargeCategory values
    owner_tag_key = "project"
    reporting_currency = "USD"
    ```

    A value outside the documented choices is a ``pydantic.ValidationError`` (a ValueError)
    naming the key: ``gpu_basis``, ``shared_weights.<project>``...
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_basis: GpuBasis = "usage"
    idle: IdlePolicy = "owner"
    shared: SharedPolicy = "proportional"
    shared_weights: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    """Project name -> weight (>= 0, at least one > 0) for ``shared = "weights"``."""
    shared_service_names: tuple[str, ...] = ("*Support*",)
    """Globs on ``ServiceName``: charges no rule matched whose service is shared by everyone."""
    shared_service_categories: tuple[str, ...] = ("Networking",)
    """FOCUS ``ServiceCategory`` values whose unmatched charges are shared."""
    shared_charge_categories: tuple[str, ...] = ("Credit",)
    """FOCUS ``ChargeCategory`` values whose unmatched charges are shared: by default a credit
    with no project follows the shared policy (a tagged or resource-bound credit follows its
    charge)."""
    owner_tag_key: str = Field(default="project", min_length=1)
    """The tag (AWS tag, GCP label, pod label) that names a resource's owning project."""
    reporting_currency: str = "USD"
    """Currency of rows that carry no money: headcount rows and GPU-hours of unbilled hosts."""

    @model_validator(mode="after")
    def _weights_for_weights(self) -> AllocationPolicy:
        if self.shared == "weights" and not any(w > 0 for w in self.shared_weights.values()):
            raise ValueError('shared = "weights" needs shared_weights with a weight > 0')
        return self
