# Runtime image for every slatimer process (ingest, worker, dispatcher, migrations, flower).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system slatimer \
    && useradd --system --gid slatimer --home-dir /home/slatimer --create-home \
       --shell /usr/sbin/nologin slatimer

WORKDIR /src
COPY . .
# flower is only used by the `flower` service; it is not a runtime dependency of slatimer.
RUN pip install . "flower>=2.0" \
    && rm -rf /src

WORKDIR /home/slatimer
USER slatimer

CMD ["slatimer", "--help"]
