"""``payweave bench``: benchmarks measured against baselines run on the same servers in the same run."""
