# citystream processes (bridge, worker, sink, gateway) in one image; the command picks the stage.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-tha tesseract-ocr-eng fonts-thai-tlwg \
      libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY citystream ./citystream
COPY ingest ./ingest
COPY processors ./processors
COPY sinks ./sinks
COPY schemas ./schemas
COPY bench ./bench
RUN pip install --no-cache-dir . && useradd --system --uid 10001 citystream
USER citystream
ENTRYPOINT ["citystream"]
CMD ["--help"]
