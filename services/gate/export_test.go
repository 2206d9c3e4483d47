package gate

// DecodeRegistration exposes decodeRegistration to the external tests.
var DecodeRegistration = decodeRegistration
