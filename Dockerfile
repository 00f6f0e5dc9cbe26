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
# at the versions CI and the benchmarks ran with (constraints.txt; flower serves the `flower`
# service and is one of slatimer's dependencies)
RUN pip install -c constraints.txt . \
    && rm -rf /src

WORKDIR /home/slatimer
USER slatimer

CMD ["slatimer", "--help"]
