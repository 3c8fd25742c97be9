"""The allocator's small parts: MIG fractions, the policy's checks, the module boundaries."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from gpucost.allocator.gpu import slice_fraction
from gpucost.allocator.policy import AllocationPolicy

ALLOCATOR = Path(__file__).resolve().parents[2] / "allocator"


@pytest.mark.parametrize(
    ("profile", "fraction"),
    [
        (None, 1.0),
        ("1g.10gb", 1 / 7),  # H100 80GB / A100 80GB: 7 compute slices
        ("1g.5gb", 1 / 7),  # A100 40GB
        ("2g.20gb", 2 / 7),
        ("3g.40gb", 3 / 7),
        ("4g.40gb", 4 / 7),
        ("7g.80gb", 1.0),
        ("1g.18gb", 1 / 7),  # H200
        ("1c.3g.40gb", 1 / 7),  # one compute instance of a 3g GPU instance
        ("1g.6gb", 1 / 4),  # A30: 4 compute slices
        ("2g.12gb+me", 2 / 4),
        ("4g.24gb", 1.0),
        ("not-a-profile", 1.0),
    ],
)
def test_mig_profiles_weigh_their_share_of_the_gpu(profile: str | None, fraction: float) -> None:
    frame = pl.DataFrame({"mig_profile": [profile]}, schema={"mig_profile": pl.String})
    assert frame.select(slice_fraction()).item() == pytest.approx(fraction)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"gpu_basis": "requests"}, "gpu_basis"),
        ({"idle": "nobody"}, "idle"),
        ({"shared": "random"}, "shared"),
        ({"shared": "weights"}, "shared_weights"),
        ({"shared_weights": {"a": -1.0}}, "shared_weights.a"),
        ({"owner_tag_key": ""}, "owner_tag_key"),
    ],
)
def test_policy_refuses_unknown_choices(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AllocationPolicy(**arguments)  # type: ignore[arg-type]
