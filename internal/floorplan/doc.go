// Package floorplan holds no code. Its test enforces the floor plan of
// docs/design/architecture.md ("Floors"): imports point only down
// (cmd → services → ledger → events → the attest verifier and schemas), the
// contract and the ledger build without cgo and never link the TPM
// simulator, the device agent links neither the ledger nor the gate, and
// leaf libraries do not log. It reads the import graph from
// `go list -deps -json`, as the build sees it (test files excluded).
package floorplan
