"""The "Adding a collector" example, run as written: a new kind in a module of its own.

The example is read from README.md, so the two cannot drift; it runs in a fresh interpreter
so that its kind does not join the registry the other tests see.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    """The first Python block of the README's "Adding a collector" section."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Adding a collector") :]
    match = re.search(r"^```python\n(.*?)^```$", section, re.S | re.M)  # fences at column 0
    assert match, "README's Adding a collector section has no python block"
    return match.group(1)


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
    module.write_text(readme_example())
    script = "import negotiated_prices\n" + textwrap.dedent(CHECK)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "2"]
