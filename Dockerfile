# One image for every role; the command picks it: api, worker, beat or flower.
#   docker build -t storywire .
#   docker run --rm -e REDIS_URL=redis://cache:6379/0 -e STORYWIRE_API_KEY -p 127.0.0.1:8000:8000 storywire api
#   docker run --rm -e REDIS_URL=redis://cache:6379/0 storywire worker
# The entrypoint is `scripts/run.py --role <role>`, which execs exactly role_command(role):
# the command `make run` starts and the tests exercise, so a container runs nothing else.
# docker-compose.yml runs all four against one Redis; tests/test_deploy.py checks both files.
FROM python:3.11-slim

# Inside a container the API and Flower listen on every interface (publish their
# ports on 127.0.0.1 only); Flower then refuses to start without FLOWER_BASIC_AUTH.
# No secret here: STORYWIRE_API_KEY and FLOWER_BASIC_AUTH come from the environment at run time.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    API_HOST=0.0.0.0 FLOWER_HOST=0.0.0.0 STORYWIRE_DATA_DIR=/tmp/storywire
WORKDIR /app
# Dependencies first, so a code change does not reinstall them; every wheel is
# prebuilt (manylinux), so the slim image needs no compiler. Only the runtime
# part of requirements.txt: the embedded Redis, the test tools and the browser
# driver stay out of the image.
COPY requirements.txt .
RUN sed '/^# ===== development/,$d' requirements.txt > /tmp/runtime.txt \
    && pip install --no-cache-dir -r /tmp/runtime.txt && rm /tmp/runtime.txt
# The code stays owned by root, so the service user cannot change it.
COPY storyengine storyengine
COPY service service
COPY workers workers
COPY scripts scripts
COPY importer importer
COPY embedded_redis embedded_redis
COPY evaluation evaluation
COPY pyproject.toml .
# The project itself, editable (the code stays here, imported in place) and without
# dependencies (installed above): scripts/run.py imports its packages by name.
RUN pip install --no-cache-dir --no-deps -e .
RUN groupadd --system --gid 10001 storywire \
    && useradd --system --uid 10001 --gid storywire --no-create-home --shell /usr/sbin/nologin storywire
# Numeric, so a runtime that checks for non-root (Kubernetes runAsNonRoot) can verify it.
USER 10001:10001
EXPOSE 8000 5555
# The API's health check (the default role). One image runs four roles, so
# docker-compose.yml gives the worker and Flower their own checks and turns this
# one off for beat; with `docker run` of another role, pass --no-healthcheck.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", \
    "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz'%os.getenv('API_PORT','8000'), timeout=4)"]
ENTRYPOINT ["python", "scripts/run.py", "--role"]
CMD ["api"]
