# The control plane image: web (gunicorn, the default command), the Celery
# worker and Celery beat all run from it; compose.yaml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/app app

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# collectstatic signs nothing, so it runs without a SECRET_KEY.
RUN ENV_FILE= python manage.py collectstatic --no-input \
    && mkdir -p var && chown app:app var

USER app
EXPOSE 8000
# The Procfile's web process; fleet/gunicorn.conf.py reads HOST, PORT and
# WEB_CONCURRENCY (2 workers by default).
ENV PORT=8000
CMD ["gunicorn", "--config", "fleet/gunicorn.conf.py", "fleet.wsgi"]
