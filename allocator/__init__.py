"""The allocator: pure Polars functions that attribute costs and headcount to ML projects."""
