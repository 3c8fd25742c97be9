"""``gpucost synth``: a deterministic synthetic GPU fleet, its bills, its metrics and the truth.

:func:`generate` writes a fleet's FOCUS 1.0 bill, inventory, GPU metrics (dcgm-exporter text or
the ``gpu_usage`` rollup), CPU metrics of model servers, a people roster and ``truth.json``, the
ground truth an allocator and the findings are tested against. Same arguments, same bytes: every
random draw comes from ``random.Random`` / ``numpy.random.Generator`` seeded with ``seed``, no
clock is read and every output is sorted before it is written.

The fleet always holds, at every size (counts grow with ``gpus``, at least one of each):

* H100, A100, L4 and T4 GPUs on AWS, Google Cloud and on-prem hosts;
* training hosts with bursts (jobs at 82-96 % utilisation for hours, then nothing), model
  servers whose utilisation follows a day curve, notebooks busy only in office hours;
* an idle GPU host (no pod, 0 % utilisation, no memory, still billed): ``idle_gpu_server``;
* a model server on a CPU-only instance whose CPU p95 is above 70 %:
  ``cpu_misplaced_model_server``;
* a model server on a GPU host whose GPU shows 0 % and 0 MiB while its CPU is busy:
  ``model_on_cpu_in_gpu_host``;
* a small model on an A100 (peak memory under 20 %, utilisation under 30 %): ``oversized_gpu``;
* an H100 split into MIG slices (3g.40gb, 2g.20gb, 1g.10gb used by different projects and one
  1g.10gb slice left unused) and a T4 time-sliced between two pods of two projects.

The parts, in the order data flows through them:

* :mod:`~gpucost.synth.catalog`: GPU models, machine types and prices, from ``catalog.toml``
  (each price with its source);
* :mod:`~gpucost.synth.fleet`: hosts, GPU rows, projects, workloads and training jobs;
* :mod:`~gpucost.synth.simulate`: hourly activity and the 12 scrapes per hour, CPU use;
* :mod:`~gpucost.synth.billing`: the bill (instances, Savings Plan, storage, network, support,
  credit);
* writers, one per format: :mod:`~gpucost.synth.write_focus` (FOCUS CSV),
  :mod:`~gpucost.synth.write_dcgm` (dcgm-exporter text), :mod:`~gpucost.synth.write_gpu_usage`
  (Parquet), :mod:`~gpucost.synth.write_inventory` (inventory and host metrics CSV),
  :mod:`~gpucost.synth.roster` (people and their CSV);
* :mod:`~gpucost.synth.truth`: ``truth.json``;
* :mod:`~gpucost.synth.generator`: :func:`generate`, which runs them in order.
"""

from gpucost.synth.fleet import MIN_GPUS
from gpucost.synth.generator import SynthSummary, UsageFormat, generate
from gpucost.synth.write_focus import FOCUS_HEADER

__all__ = ["FOCUS_HEADER", "MIN_GPUS", "SynthSummary", "UsageFormat", "generate"]
