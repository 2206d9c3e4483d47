package tpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/attest/internal/attesttest"
)

func TestLDevIDCertify(t *testing.T) {
	tpm := openSim(t, 31)
	iak, err := tpm.IAK()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tpm.LDevIDSigner(); !errors.Is(err, ErrNoLDevID) {
		t.Errorf("signer before NewLDevID: %v", err)
	}
	if _, _, err := tpm.NewLDevID(nil); !errors.Is(err, attest.ErrEmptyNonce) {
		t.Errorf("NewLDevID(nil): %v", err)
	}
	nonce := []byte("gate nonce 1")
	key, ev, err := tpm.NewLDevID(nonce)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := attest.VerifyCertify(iak.Public, ev, nonce)
	if err != nil {
		t.Fatalf("VerifyCertify: %v", err)
	}
	if !attest.SamePublicKey(pub, key.PublicKey) {
		t.Error("verified key is not the LDevID")
	}

	t.Run("wrong nonce", func(t *testing.T) {
		if _, err := attest.VerifyCertify(iak.Public, ev, []byte("gate nonce 2")); !errors.Is(err, attest.ErrNonceMismatch) {
			t.Errorf("got %v", err)
		}
		if _, err := attest.VerifyCertify(iak.Public, ev, nil); !errors.Is(err, attest.ErrEmptyNonce) {
			t.Errorf("empty nonce: %v", err)
		}
	})
	t.Run("swapped public", func(t *testing.T) {
		// A second LDevID's public with the first one's certification.
		key2, ev2, err := tpm.NewLDevID(nonce)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(key2.Public, key.Public) {
			t.Fatal("NewLDevID returned the same key twice")
		}
		swapped := *ev
		swapped.Public = ev2.Public
		if _, err := attest.VerifyCertify(iak.Public, &swapped, nonce); !errors.Is(err, attest.ErrNameMismatch) {
			t.Errorf("got %v", err)
		}
		// The IAK's own public with the LDevID's certification.
		swapped.Public = iak.Public
		if _, err := attest.VerifyCertify(iak.Public, &swapped, nonce); !errors.Is(err, attest.ErrNameMismatch) {
			t.Errorf("IAK public: got %v", err)
		}
	})
	t.Run("restricted key", func(t *testing.T) {
		// A real TPM2_Certify, by the IAK, of a restricted key (the IAK
		// itself): it must not pass as an LDevID.
		if err := tpm.lock(); err != nil {
			t.Fatal(err)
		}
		objs, err := tpm.ensure(objIAK)
		if err != nil {
			tpm.mu.Unlock()
			t.Fatal(err)
		}
		rsp, err := tpm2.Certify{
			ObjectHandle:   objs[0].authHandle(),
			SignHandle:     objs[0].authHandle(),
			QualifyingData: tpm2.TPM2BData{Buffer: nonce},
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		}.Execute(tpm.tp)
		tpm.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		restricted := &attest.CertifyEvidence{Public: iak.Public, Attest: rsp.CertifyInfo.Bytes(), Signature: tpm2.Marshal(rsp.Signature)}
		if _, err := attest.VerifyCertify(iak.Public, restricted, nonce); !errors.Is(err, attest.ErrKeyAttributes) {
			t.Errorf("got %v, want ErrKeyAttributes", err)
		}
	})
	t.Run("tampered", func(t *testing.T) {
		bad := *ev
		bad.Attest = bytes.Clone(ev.Attest)
		bad.Attest[len(bad.Attest)-1] ^= 1
		if _, err := attest.VerifyCertify(iak.Public, &bad, nonce); !errors.Is(err, attest.ErrBadSignature) {
			t.Errorf("got %v", err)
		}
	})
	t.Run("a quote is not a certify", func(t *testing.T) {
		q, err := tpm.Quote(nonce, []int{0})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := attest.VerifyCertify(iak.Public, &attest.CertifyEvidence{Public: ev.Public, Attest: q.Attest, Signature: q.Signature}, nonce); !errors.Is(err, attest.ErrNotACertify) {
			t.Errorf("got %v", err)
		}
	})
	t.Run("wrong signer", func(t *testing.T) {
		ek, _ := tpm.EK(ECCP256)
		if _, err := attest.VerifyCertify(ek.Public, ev, nonce); !errors.Is(err, attest.ErrKeyAttributes) {
			t.Errorf("got %v", err)
		}
	})
}

func TestLDevIDSigner(t *testing.T) {
	tpm := openSim(t, 32)
	key, _, err := tpm.NewLDevID([]byte("n"))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := tpm.LDevIDSigner()
	if err != nil {
		t.Fatal(err)
	}
	if !attest.SamePublicKey(signer.Public(), key.PublicKey) {
		t.Fatal("signer public key is not the LDevID")
	}
	d := sha256.Sum256([]byte("to be signed"))
	sig, err := signer.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(key.PublicKey.(*ecdsa.PublicKey), d[:], sig) {
		t.Fatal("ecdsa.VerifyASN1 refused the TPM signature")
	}
	other := sha256.Sum256([]byte("something else"))
	if ecdsa.VerifyASN1(key.PublicKey.(*ecdsa.PublicKey), other[:], sig) {
		t.Fatal("signature verified for another digest")
	}
	if _, err := signer.Sign(rand.Reader, d[:], crypto.SHA384); err == nil {
		t.Error("signed with SHA-384 options")
	}

	// The key survives a reboot (it is reloaded from its wrapped blob)
	// and being swapped out of the TPM's object slots.
	if err := tpm.Reboot(); err != nil {
		t.Fatal(err)
	}
	for _, alg := range []KeyAlg{RSA2048, ECCP256} {
		if _, err := tpm.EK(alg); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tpm.IAK(); err != nil {
		t.Fatal(err)
	}
	sig, err = signer.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil || !ecdsa.VerifyASN1(key.PublicKey.(*ecdsa.PublicKey), d[:], sig) {
		t.Fatalf("after reboot: %v", err)
	}

	// A new LDevID retires the old signer.
	if _, _, err := tpm.NewLDevID([]byte("n2")); err != nil {
		t.Fatal(err)
	}
	if _, err := signer.Sign(rand.Reader, d[:], crypto.SHA256); !errors.Is(err, ErrLDevIDReplaced) {
		t.Errorf("old signer: %v, want ErrLDevIDReplaced", err)
	}
}

// TestLDevIDTLSClientAuth uses the TPM-backed signer as a TLS client key,
// with TLS 1.2 and 1.3.
func TestLDevIDTLSClientAuth(t *testing.T) {
	tpm := openSim(t, 33)
	key, _, err := tpm.NewLDevID([]byte("n"))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := tpm.LDevIDSigner()
	if err != nil {
		t.Fatal(err)
	}
	ca := attesttest.NewRootCA(t, "LDevID CA")
	now := time.Now()
	clientCert := ca.Issue(t, &x509.Certificate{
		SerialNumber: attesttest.NextSerial(),
		Subject:      pkix.Name{CommonName: "device-ldevid"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, key.PublicKey)
	serverKey := attesttest.NewKey(t)
	serverCert := ca.Issue(t, &x509.Certificate{
		SerialNumber: attesttest.NextSerial(),
		Subject:      pkix.Name{CommonName: "gate"},
		DNSNames:     []string{"gate.test"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, serverKey.Public())
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)

	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			cc, sc := net.Pipe()
			server := tls.Server(sc, &tls.Config{
				Certificates: []tls.Certificate{{Certificate: [][]byte{serverCert.Raw}, PrivateKey: serverKey}},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    pool,
				MinVersion:   v,
				MaxVersion:   v,
			})
			client := tls.Client(cc, &tls.Config{
				Certificates: []tls.Certificate{{Certificate: [][]byte{clientCert.Raw}, PrivateKey: signer}},
				RootCAs:      pool,
				ServerName:   "gate.test",
				MinVersion:   v,
				MaxVersion:   v,
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- server.HandshakeContext(ctx) }()
			if err := client.HandshakeContext(ctx); err != nil {
				t.Fatalf("client handshake: %v", err)
			}
			if err := <-errc; err != nil {
				t.Fatalf("server handshake: %v", err)
			}
			st := server.ConnectionState()
			if st.Version != v || len(st.PeerCertificates) != 1 || st.PeerCertificates[0].Subject.CommonName != "device-ldevid" {
				t.Errorf("state %+v", st)
			}
			// Application data flows; then close the pipe itself (a TLS
			// close_notify on a synchronous pipe nobody reads would wait
			// for its deadline).
			go client.Write([]byte("ping"))
			buf := make([]byte, 4)
			if _, err := server.Read(buf); err != nil || string(buf) != "ping" {
				t.Errorf("read %q: %v", buf, err)
			}
			cc.Close()
			sc.Close()
		})
	}
}
