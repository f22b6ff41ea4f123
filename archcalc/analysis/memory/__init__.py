"""The memory model of one device: buffer liveness and onnxruntime's planner (``liveness``), the
execution orders (``schedule``), the runtimes' constants (``runtimes``), and one training step --
its per-layer account (``step_peak``) and its terms (``training``)."""
