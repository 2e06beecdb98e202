# kiln cpu image of {{ id }} {{ version }}, rendered by `kiln build`: change service.yaml and
# build again rather than editing this file. Legacy-builder syntax only (no BuildKit).

# The OS layer, shared by the builder stage and the image: Python, system_packages, the user.
FROM {{ base }} AS system
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    LANG=C.UTF-8
COPY kiln-build/system.sh /tmp/kiln-system.sh
RUN sh /tmp/kiln-system.sh {{ python }}{{ system_packages }} && rm -f /tmp/kiln-system.sh

# The builder stage: the only one that sees the index URL and the CA bundle.
FROM system AS builder
{{ builder_settings }}
RUN "$(readlink -f /usr/local/bin/kiln-python)" -m venv /opt/venv
# The packages: requirements.lock's pins when the service has one, else service.yaml
# packages and the runtime's requirements; constraints.txt pins what CI tested.
COPY kiln-build/requirements.txt kiln-build/constraints.txt /tmp/kiln/
{{ install_packages }}
COPY kiln-build/runtime/ /tmp/kiln/runtime/
RUN /opt/venv/bin/pip install --no-deps --no-index --root /opt/kiln-root /tmp/kiln/runtime/*.whl

# The image: packages, then the runtime, then the service code, so a code change is one layer.
FROM system
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    HOME=/tmp
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/kiln-root/ /
COPY --chown=10001:0 service/ /srv/service/
WORKDIR /srv/service
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/api/v1.0/health/status', timeout=4)"]
{{ labels }}
CMD ["kiln", "serve", "/srv/service", "--host", "0.0.0.0", "--port", "8080"]
