// Package device is a connected device's factory API: HTTP JSON endpoints
// over the device's TPM (an *attest.TPM), used by the factory stations of
// the TPM vendor, ODM, OEM and EMS, and a Go client for them.
//
// The device models what a real device's firmware offers on a factory
// line: it reports its TPM identity (EK, EK certificate, IAK), accepts an EK
// certificate for its TPM's NV, answers credential-activation challenges
// and quote requests, takes firmware images (measured into a PCR, as a boot
// ROM would measure them at every boot), reboots, and creates
// IAK-certified LDevID keys.
//
// Nothing the device says is trusted by the stations on its own: every
// answer is evidence to be verified with package attest (EK certificate
// chains, credential activation, quotes, TPM2_Certify).
//
// Endpoints (JSON bodies; []byte fields are standard base64):
//
//	GET  /v1/identity            → Identity
//	PUT  /v1/ek-certificate      {"certificate"} → 204
//	POST /v1/activate-credential {"idObject","encryptedSecret"} → {"secret"}
//	POST /v1/quote               {"nonce","pcrs":[0]} → {"attest","signature","pcrs":{"0":…}}
//	POST /v1/firmware            {"image"} → {"digest": hex SHA-256}
//	POST /v1/reboot              → 204
//	POST /v1/ldevid              {"nonce"} → {"public","attest","signature"}
//
// Errors are {"error": "..."} with a 4xx status for bad requests (and for
// evidence the TPM refuses, such as a credential made for another key) and
// 5xx for TPM or storage failures.
package device
