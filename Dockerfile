# One image for every EmbedHub service (web, workers, beat, search).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    DJANGO_SETTINGS_MODULE=embedhub.settings \
    ARTIFACTS_ROOT=/data/artifacts \
    VAR_DIR=/data/var \
    STATIC_ROOT=/app/staticfiles

WORKDIR /app
COPY requirements/ requirements/
# Everything from the hash-pinned lock; torch is locked to its CPU build (2.13.0+cpu), found on
# PyTorch's CPU index (the GPU worker image swaps in a CUDA lock the same way).
ARG PYTORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --require-hashes --extra-index-url "$PYTORCH_INDEX" -r requirements/base.txt

COPY . .
RUN SECRET_KEY=build-only VAR_DIR=/tmp/var python manage.py collectstatic --noinput \
    && useradd --create-home --uid 1000 embedhub \
    && mkdir -p /data/artifacts /data/var && chown -R embedhub /data
USER embedhub
EXPOSE 8000 8001
CMD ["gunicorn", "embedhub.wsgi:application", "--bind", "0.0.0.0:8000"]
