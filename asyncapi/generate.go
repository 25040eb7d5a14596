package asyncapi

// Regenerates the committed document; a change that breaks consumers is refused.
//go:generate go run ../cmd/orderflow asyncapi -o ../docs/asyncapi.json
