FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The runtime lock first (every package, by hash, wheels only), so a code change does not reinstall it; it is
# what `make run` installs, so it holds the embedded server's wheel too, unused here.
COPY requirements.txt /tmp/requirements.txt
RUN pip install --require-hashes --only-binary :all: -r /tmp/requirements.txt && rm /tmp/requirements.txt

# Built outside the working directory: a source tree in /app would shadow the installed package.
COPY pyproject.toml /src/
COPY sprockets_cache/ /src/sprockets_cache/
RUN pip install --no-deps --no-build-isolation /src && rm -rf /src

RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app

WORKDIR /app
COPY seeds/ seeds/

USER 10001:10001
EXPOSE 8000

# No curl in slim images: probe /health (liveness, no Redis) with the standard library.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]

CMD ["python", "-m", "sprockets_cache", "serve", "--host", "0.0.0.0", "--port", "8000"]
