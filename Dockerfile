# The serving container for Vertex AI (upload with invokeRoutePrefix "/*").
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /srv
COPY pyproject.toml README.md LICENSE ./
COPY client ./client
COPY app ./app
RUN pip install ".[server]" && useradd --create-home --uid 1000 serve

USER serve
EXPOSE 8080
CMD ["python", "-m", "app"]
