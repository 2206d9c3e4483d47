// Package dps speaks the wire protocol of the Azure IoT Hub Device Provisioning
// Service (DPS): an in-process emulator of the service, and clients for its
// device and service APIs that work against the emulator and the real service
// alike.
//
// Specifications followed (REST, JSON):
//
//   - Device API, "Runtime Registration" (register, operation status lookup,
//     device registration status lookup):
//     https://learn.microsoft.com/rest/api/iot-dps/device/runtime-registration
//   - Service API, individual enrollments, enrollment groups and device
//     registration states:
//     https://learn.microsoft.com/rest/api/iot-dps/service/individual-enrollment
//     https://learn.microsoft.com/rest/api/iot-dps/service/enrollment-group
//     https://learn.microsoft.com/rest/api/iot-dps/service/device-registration-state
//   - SAS tokens: https://learn.microsoft.com/azure/iot-dps/how-to-control-access
//   - Error codes: https://learn.microsoft.com/azure/iot-dps/how-to-troubleshoot-dps
//   - X.509 attestation and enrollment groups:
//     https://learn.microsoft.com/azure/iot-dps/concepts-x509-attestation
//   - Reprovisioning: https://learn.microsoft.com/azure/iot-dps/concepts-device-reprovision
//
// JSON field names were checked against the service's published models (the
// Azure SDKs' DeviceRegistrationResult, RegistrationOperationStatus,
// X509RegistrationResult, X509CertificateInfo, IndividualEnrollment,
// EnrollmentGroup, AttestationMechanism, X509Attestation,
// X509CertificateWithInfo, ReprovisionPolicy and
// ProvisioningServiceErrorDetails).
//
// # Emulator
//
// [Emulator] serves both APIs from one [http.Handler]. The device API
// authenticates devices by X.509 only: the TLS client certificate's subject
// CN must equal the registration ID, and the certificate must match an
// enabled individual enrollment (equal to its primary or secondary client
// certificate, or chaining to a CA certificate given there or as a signing
// certificate) or chain, through the intermediates the client sent, to an
// enabled enrollment group's signing certificate. An individual enrollment
// for a registration ID takes precedence over every group, as in DPS. TPM and
// symmetric-key attestation, custom allocation, CA references and the
// 2025-07-01-preview certificate issuance (csr) are refused with a 400 that
// says so.
//
// Devices are allocated to the configured IoT hubs by hashing the
// registration ID over the hubs the enrollment allows (DPS's "hashed",
// evenly weighted policy; "geoLatency" behaves the same here, "static" uses
// iotHubHostName). A device that registers again keeps its hub while the
// enrollment still allows it (substatus reprovisionedToInitialAssignment);
// if the enrollment's hubs changed and its reprovision policy allows it, the
// device moves (deviceDataMigrated or deviceDataReset).
//
// Registration is asynchronous as in DPS: the register call answers 202 with
// status "assigning" and an operation ID; the assignment is decided at once,
// so the first poll of the operation returns its outcome.
//
// The service API authenticates with shared access signatures checked against
// one configured key name and key; the signed resource (sr) must name the
// service host. Enrollment writes honour If-Match (412 on a stale etag, *
// for any); a write without If-Match only creates, and is refused with 409
// when the enrollment or group exists, as DPS refuses it.
//
// Refusals use DPS's error body, {"errorCode", "trackingId", "message",
// "timestampUtc"}, with six-digit codes whose first three digits are the HTTP
// status (the constants Code*). 401002 is the code DPS itself returns for a
// device certificate it does not accept; the other codes are this emulator's
// own catalogue in the same shape. Messages name the rule that was broken.
//
// # Clients
//
// [DeviceClient] registers a device the way the Azure device SDKs do over
// HTTPS (PUT register, then poll the operation every PollInterval, 2 s by
// default). [ServiceClient] manages enrollments with SAS tokens it signs
// itself. Both return [*Error] for refusals; a registration that ends failed
// or disabled returns [*RegistrationError].
package dps
