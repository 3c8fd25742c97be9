"""Reports: findings, digests and exports computed from the lake's tables."""
