"""`anydepth bench`: SDT against DPT — parameters, FLOPs, latency, memory and FLOP/s (runner), and the report."""
