"""The Open Inference Protocol (KServe V2, as Triton speaks it) for the trained generators.

`core` maps an inference request to the sampler and raises the protocol's errors; the REST
routes (service.routers.oip, under /v2 of the API) and the gRPC servicer
(service.oip.grpc_server, a process of its own) only translate. Torch-free.
"""
