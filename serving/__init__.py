"""Serving: onnxruntime sessions of the exported generators, the noise, and the answer's
formats. Torch-free and independent of the ML library: the API samples with it, and so does
a worker's batch sampling. It imports neither `models`, `service` nor `worker`."""
