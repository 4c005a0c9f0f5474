# One image for the API and the worker (docker-compose.yml picks the command).
#   docker build -t gan-service .
#   docker build --build-arg ORT_PACKAGE=onnxruntime-gpu -t gan-service:gpu .   # CUDA sampling
FROM python:3.11-slim

ARG ORT_PACKAGE=onnxruntime
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# g++: torch.compile (training.compile) generates C++ on the CPU, and Triton builds its
# launchers with a C compiler on a GPU.
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY models ./models
COPY gan_platform ./gan_platform
COPY serving ./serving
COPY service ./service
COPY worker ./worker
COPY cli ./cli
# torch from PyPI (CUDA build on x86_64 Linux: the worker trains on the GPU when one is lent,
# on the CPU otherwise). ORT_PACKAGE=onnxruntime-gpu gives the API the CUDA provider too.
RUN pip install ".[s3]" \
    && if [ "$ORT_PACKAGE" != "onnxruntime" ]; then \
         pip uninstall -y onnxruntime && pip install "$ORT_PACKAGE"; \
       fi \
    && useradd --create-home --uid 1000 gan \
    && mkdir -p /var/lib/gan /data \
    && chown -R gan /var/lib/gan

USER gan
# 8000: the HTTP API; 8001: the gRPC inference server (python -m service.oip.grpc_server)
EXPOSE 8000 8001
CMD ["python", "-m", "uvicorn", "service.main:app", "--host", "0.0.0.0", "--port", "8000"]
