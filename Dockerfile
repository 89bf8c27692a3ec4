# One image for every Pressroom service: `pressroom worker fetcher|renderer|distributor|scheduler`.
# Two stages: the package is built into a wheel first, so no source tree, build folder or
# build dependency ends up in the image that runs.
FROM python:3.11-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm

# WeasyPrint's system libraries (Pango, HarfBuzz, HarfBuzz-Subset: without it CJK renders take
# 10-25 s more). Fonts for every script come with the package: services/renderer/fontdata (static
# Noto faces) and the noto-cjk-sans-otc wheel; `pressroom fonts` lists them.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 libjpeg62-turbo fonts-dejavu-core \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin pressroom
WORKDIR /app

# Only the wheel comes over (no source tree, build folder or egg-info). COPY, not a bind
# mount: podman's builder (buildah) keys its cache on a COPY's content but not on what a
# `RUN --mount=from=` mounts, so a changed wheel would silently reuse a stale install.
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-cache-dir /tmp/wheels/*.whl \
 && rm -rf /root/.cache /tmp/wheels

COPY templates ./templates
COPY deploy/pressroom.yaml ./deploy/pressroom.yaml
RUN mkdir -p /app/out /app/.pressroom /app/auth && chown -R pressroom:pressroom /app/out /app/.pressroom /app/auth

USER pressroom
# Fontconfig's cache of the bundled fonts, built once here rather than by the first report.
RUN pressroom fonts > /dev/null
ENV PRESSROOM_TEMPLATES_DIR=/app/templates \
    PRESSROOM_OUT_DIR=/app/out \
    PRESSROOM_DATA_DIR=/app/.pressroom \
    PRESSROOM_HEALTH_HOST=0.0.0.0 \
    PRESSROOM_HEALTH_PORT=8080 \
    PRESSROOM_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1

EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=40s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=4); sys.exit(0 if r.status == 200 else 1)"]

ENTRYPOINT ["pressroom"]
CMD ["worker", "renderer"]
