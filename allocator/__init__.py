"""The allocator: pure Polars functions that attribute costs and headcount to ML projects.

```python
from gpucost.allocator.allocate import allocate
from gpucost.allocator.policy import AllocationPolicy
from gpucost.allocator.projects import ProjectRule
from gpucost.allocator.summary import summarise

rules = [ProjectRule.model_validate({"name": "llm", "match": {"namespaces": ["llm-*"]}})]
result = allocate(billing, gpu_usage, inventory, headcount, rules, AllocationPolicy())
result.allocation       # the ``allocation`` table (gpucost.core.contracts.ALLOCATION)
result.reconciliation   # billed vs allocated per day and currency: differences are 0
summarise(result.allocation)   # cost, GPU-hours and FTE per project, per FTE
```

See ``docs/allocation.md`` for the policies, with worked examples.
"""
