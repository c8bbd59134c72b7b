# The image of artifacts/deploy: tailscale-gateway-apiserver, static, as a non-root user; and the
# image of the proxies it deploys (--proxy-image), the target proxy:
#   docker build -t ghcr.io/tailscale-gateway/tailscale-gateway-apiserver:dev .
#   docker build --target proxy -t ghcr.io/tailscale-gateway/tailscale-gateway-proxy:dev .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/tailscale-gateway-apiserver ./cmd/tailscale-gateway-apiserver
RUN CGO_ENABLED=0 go build -trimpath -o /out/tailscale-gateway-proxy ./cmd/tailscale-gateway-proxy

FROM gcr.io/distroless/static-debian12:nonroot AS proxy
COPY --from=build /out/tailscale-gateway-proxy /tailscale-gateway-proxy
USER 65532:65532
ENTRYPOINT ["/tailscale-gateway-proxy"]

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tailscale-gateway-apiserver /tailscale-gateway-apiserver
USER 65532:65532
ENTRYPOINT ["/tailscale-gateway-apiserver"]
