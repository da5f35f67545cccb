"""Pure-PyTorch references of every cvops op: short, obviously correct, float64-capable.
Used by tests and benchmarks only; cvops never imports them."""
