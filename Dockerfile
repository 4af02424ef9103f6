# One image for every role; the command picks it: api, worker or flower.
#   docker run storywire api
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    API_HOST=0.0.0.0 FLOWER_HOST=0.0.0.0
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY storyengine storyengine
COPY service service
COPY workers workers
COPY scripts scripts
RUN useradd --system --uid 10001 storywire
USER storywire
EXPOSE 8000 5555
ENTRYPOINT ["python", "scripts/run.py", "--role"]
CMD ["api"]
