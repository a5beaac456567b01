"""`anydepth bench`: SDT against DPT — parameters, FLOPs, latency, memory and FLOP/s.

The heads in catalogue, their FLOP counts in flops, timings and memory in measure, the run in suite, its files in
report, and random weights fit for parity checks in weights.
"""
