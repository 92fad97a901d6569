FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY modelyard modelyard
COPY schemas schemas
COPY streams streams
COPY workers workers
RUN pip install --no-cache-dir .
ENTRYPOINT ["modelyard"]
