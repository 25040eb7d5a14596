// Package sagas is the client side of the fulfilment saga; the workflow
// itself, in package workflows, stays deterministic code only. Its files,
// in the order an order's saga meets them:
//
//   - starter.go: the Watermill handler that queues a saga start for every
//     placed order in the saga_starts inbox;
//   - backlog.go: the API's admission control, which counts that inbox and
//     refuses orders while it is too long;
//   - launcher.go: starts the queued sagas on Temporal, a bounded number at
//     a time;
//   - client.go: the API's calls to sagas (a customer's cancel, an
//     operator's decision, progress, state, counts and lists);
//   - namespace.go: the Temporal namespace and the saga's search attributes;
//   - repair.go: finding the sagas that ended without a business outcome,
//     and starting their repair runs.
package sagas
