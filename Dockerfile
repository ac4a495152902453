# Minimal image; the multi-stage, locked-down build comes with the Helm chart (issue 7).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY config ./config
RUN pip install --no-cache-dir . && useradd --uid 10001 --no-create-home modgate
USER 10001
EXPOSE 8080 9090
ENTRYPOINT ["modgate"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--admin-listen", "0.0.0.0:9090"]
