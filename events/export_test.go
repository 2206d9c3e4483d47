package events

// DecodeEnvelopeForTest is decodeEnvelope, for the external tests.
var DecodeEnvelopeForTest = decodeEnvelope

// StatementFromDocForTest is statementFromDoc, for the external tests.
var StatementFromDocForTest = statementFromDoc

// DecodeBatchParcelForTest is decodeBatchParcel, for the external tests.
var DecodeBatchParcelForTest = decodeBatchParcel
