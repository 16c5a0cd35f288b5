# ninbatch as a container: `docker build -t ninbatch .`, then
#   docker run --rm -v /data:/data ninbatch run --model /models/nin-mnist.nin --out /data/scored /data/in
# The build stage compiles with cgo against Debian's OpenBLAS; the runtime
# stage is slim Debian with only the shared libraries the binary links
# (scripts/container-check.sh checks that list and runs the build steps).
FROM golang:1.26-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopenblas-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# kernels are chosen from CPUID at run time, so one image serves AVX2 and AVX-512 nodes
RUN CGO_ENABLED=1 go build -trimpath -ldflags='-s -w' -o /out/ninbatch ./cmd/ninbatch \
 && /out/ninbatch info --model models/nin-mnist.nin >/dev/null

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopenblas0-pthread ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /work --create-home ninbatch
COPY --from=build /out/ninbatch /usr/local/bin/ninbatch
COPY models/nin-mnist.nin /models/nin-mnist.nin
USER 10001:10001
WORKDIR /work
# JSON log lines for the cluster's log pipeline; override with --log-format
ENV NINBATCH_LOG_FORMAT=json
ENTRYPOINT ["ninbatch"]
CMD ["--help"]
