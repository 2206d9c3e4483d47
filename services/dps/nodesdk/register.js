// Registers one device with Azure DPS (or Custody's DPS emulator) using the
// official Node.js provisioning device SDK over HTTPS with X.509
// attestation, and prints the registration result as JSON on stdout.
//
//   node register.js <host> <idScope> <registrationId> <cert.pem> <key.pem>
//
// The SDK takes a bare host name and talks to https://<host>:443; extra
// trusted CAs come from NODE_EXTRA_CA_CERTS. Exit status 0 when assigned.
'use strict';

const fs = require('fs');
const { Http } = require('azure-iot-provisioning-device-http');
const { X509Security } = require('azure-iot-security-x509');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');

const [host, idScope, registrationId, certFile, keyFile] = process.argv.slice(2);
if (!keyFile) {
  console.error('usage: node register.js <host> <idScope> <registrationId> <cert.pem> <key.pem>');
  process.exit(2);
}
const deviceCert = {
  cert: fs.readFileSync(certFile, 'utf8'),
  key: fs.readFileSync(keyFile, 'utf8'),
};
const client = ProvisioningDeviceClient.create(host, idScope, new Http(), new X509Security(registrationId, deviceCert));
client.register((err, result) => {
  if (err) {
    console.error('registration failed: ' + (err.message || err));
    if (err.result) console.error(JSON.stringify(err.result));
    process.exit(1);
  }
  console.log(JSON.stringify(result));
  process.exit(result && result.status === 'assigned' ? 0 : 1);
});
