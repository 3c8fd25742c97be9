"""The "Adding a collector" example, run as written: a new kind in a module of its own.

EXAMPLE is the README's example verbatim; it runs in a fresh interpreter so that its kind does
not join the registry the other tests see.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

EXAMPLE = '''
from decimal import Decimal
from typing import ClassVar

import polars as pl
from pydantic import Field

from gpucost.collector.base import Collected, CollectorContext, SourceSettings, register
from gpucost.core.contracts import PRICES
from gpucost.core.window import Window


class NegotiatedPricesSettings(SourceSettings):
    """The kind's own keys, stated once (unknown keys are errors)."""

    provider: str = Field(description="Who sells the GPU-hours.")
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    prices: dict[str, Decimal] = Field(description="Price per GPU-hour, by GPU model.")


@register("negotiated-prices")
class NegotiatedPrices:
    """GPU-hour prices of a contract no API lists: one ``prices`` row per model and day.

    ```toml
    [[sources]]
    name = "colo-contract"
    kind = "negotiated-prices"
    provider = "colo-fra"
    prices = { "H100-80GB" = "2.10", "A100-80GB" = "1.35" }
    ```
    """

    output_tables: ClassVar[tuple[str, ...]] = ("prices",)
    Settings: ClassVar[type[SourceSettings]] = NegotiatedPricesSettings

    def __init__(self, settings: NegotiatedPricesSettings, context: CollectorContext) -> None:
        self.settings, self.context, self.name = settings, context, settings.name

    def collect(self, window: Window) -> Collected:
        """Every model's price on every day of the window; the shell writes them."""
        settings = self.settings
        prices = pl.DataFrame(
            {"gpu_model": list(settings.prices), "unit_price": list(settings.prices.values())},
            schema={"gpu_model": pl.String, "unit_price": PRICES.schema["unit_price"]},
        )
        days = pl.date_range(window.start, window.end, "1d", closed="left", eager=True)
        rows = prices.join(pl.DataFrame({"day": days}), how="cross").with_columns(
            pl.col("gpu_model").alias("sku_id"),
            pl.lit(settings.provider).alias("provider"),
            pl.lit("h").alias("unit"),
            pl.lit(settings.currency).alias("currency"),
            pl.lit(self.name).alias("source"),
        )
        return Collected({"prices": rows}, notes={"models": prices.height})
'''

CHECK = """
import re, tomllib
from datetime import date
from decimal import Decimal
from gpucost.collector.base import CollectorContext, get_spec
from gpucost.config import validate_config
from gpucost.core.contracts import PRICES
from gpucost.core.window import Window

spec = get_spec("negotiated-prices")
example = tomllib.loads(re.search(r"```toml\\n(.*?)```", spec.doc, re.S).group(1))
settings = validate_config(example).sources[0]
collected = spec.build(settings, CollectorContext()).collect(
    Window(date(2024, 9, 1), date(2024, 9, 3))
)
prices = PRICES.conform(collected.frames["prices"], settings.name)
assert prices.height == 4, prices
assert prices.filter(gpu_model="H100-80GB")["unit_price"].to_list() == [Decimal("2.10")] * 2
assert set(prices["source"]) == {"colo-contract"}
print("ok", collected.notes["models"])
"""


def test_the_adding_a_collector_example_runs(tmp_path: Path) -> None:
    module = tmp_path / "negotiated_prices.py"
    module.write_text(textwrap.dedent(EXAMPLE))
    script = "import negotiated_prices\n" + textwrap.dedent(CHECK)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "2"]
