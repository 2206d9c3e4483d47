package pki

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// EncodeCertsPEM returns certs as concatenated PEM "CERTIFICATE" blocks.
func EncodeCertsPEM(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

// ParseCertsPEM parses every "CERTIFICATE" block in data, in order. Other
// block types are an error; so is data without any certificate.
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("pki: unexpected PEM block %q where certificates were expected", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pki: certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("pki: trailing data that is not PEM after the certificates")
	}
	if len(certs) == 0 {
		return nil, errors.New("pki: no PEM certificate found")
	}
	return certs, nil
}

// WriteCertPEM writes certs, in order, to path as PEM (mode 0644), replacing
// the file atomically.
func WriteCertPEM(path string, certs ...*x509.Certificate) error {
	if len(certs) == 0 {
		return errors.New("pki: no certificate to write")
	}
	return writeFileAtomic(path, EncodeCertsPEM(certs...), 0o644)
}

// ReadCertsPEM reads every certificate in the PEM file at path.
func ReadCertsPEM(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	certs, err := ParseCertsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return certs, nil
}

// EncodeKeyPEM returns key as a PKCS#8 "PRIVATE KEY" PEM block.
func EncodeKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: encoding private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKeyPEM parses a private key from PEM: PKCS#8 "PRIVATE KEY", or the
// legacy "EC PRIVATE KEY" (SEC 1) and "RSA PRIVATE KEY" (PKCS#1) forms.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("pki: no PEM private key found")
	}
	var (
		key any
		err error
	)
	switch b.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("pki: unexpected PEM block %q where a private key was expected", b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("pki: parsing private key: %w", err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("pki: private key of type %T cannot sign", key)
	}
	return s, nil
}

// WriteKeyPEM writes key to path as PKCS#8 PEM with mode 0600, replacing the
// file atomically.
func WriteKeyPEM(path string, key crypto.Signer) error {
	data, err := EncodeKeyPEM(key)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, data, 0o600)
}

// ReadKeyPEM reads the private key in the PEM file at path.
func ReadKeyPEM(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	k, err := ParseKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return k, nil
}

// WritePublicKeyPEM writes pub to path as a PKIX "PUBLIC KEY" PEM block (mode
// 0644), replacing the file atomically.
func WritePublicKeyPEM(path string, pub crypto.PublicKey) error {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return fmt.Errorf("pki: encoding public key: %w", err)
	}
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
}

// ReadPublicKeyPEM reads a PKIX "PUBLIC KEY" PEM file.
func ReadPublicKeyPEM(path string) (crypto.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("pki: no PEM \"PUBLIC KEY\" block in %s", path)
	}
	pub, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: parsing public key in %s: %w", path, err)
	}
	return pub, nil
}

// writeFileAtomic writes data to a temporary file beside path, syncs it and
// renames it over path, so readers never see a partial file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	ok = true
	return nil
}
