package events

// DecodeEnvelopeForTest is decodeEnvelope, for the external tests.
var DecodeEnvelopeForTest = decodeEnvelope
