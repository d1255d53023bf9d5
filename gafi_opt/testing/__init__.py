"""Code that tests and benchmarks import: fixed-work trials run by the real worker loop, and the official
code's per-class filtering loop as the yardstick of the batched synthesis."""
