"""gpucost: GPU cost and resource accounting for ML teams.

The package is the application shell: configuration, lake IO, table contracts, the run
manifest, the command line and the wiring between collectors, allocator and reports.
"""

__version__ = "0.1.0"
