"""Latency of networks as deployed, and a latency model of the user's machine (docs/latency.md).

* :mod:`musicnas.latency.measure`: measured latency, batch 1, of the exported ONNX model in onnxruntime
  or of the PyTorch module in eager mode, with N intra-op threads: warm-up, then median and IQR; and
  the drift-corrected latency, measured beside reference networks of known latency.
* :mod:`musicnas.latency.parts`: how an architecture decomposes into parts (op x input shape x channels
  x stride), the units of the lookup table.
* :mod:`musicnas.latency.table`: the per-machine lookup table (built once per machine, backend and
  thread count, kept in the user's cache) that predicts an architecture's latency as the sum of its parts
  plus a fitted overhead, cheap enough for every search step.
"""

BACKENDS = ("onnxruntime", "torch")
DEFAULT_BACKEND = "onnxruntime"
DEFAULT_THREADS = 1
