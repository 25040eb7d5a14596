# One image for every orderflow role: api, projector, worker, migrate and the tools.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -o /orderflow ./cmd/orderflow

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /orderflow /orderflow
ENTRYPOINT ["/orderflow"]
