package dps

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkServiceEnroll measures what the enrollment gate does for every
// device it enrolls: ServiceClient.Enroll (a first enrollment: one create)
// against the emulator over TLS, 32 at once, with the
// connections kept alive, over HTTP/1.1 and over HTTP/2. Client and
// emulator share the process, so ns/op times GOMAXPROCS is the CPU of one
// enrollment on both sides.
func BenchmarkServiceEnroll(b *testing.B) {
	for _, h2 := range []bool{false, true} {
		b.Run(fmt.Sprintf("http2=%v", h2), func(b *testing.B) {
			env := newEnv(b)
			svc := NewServiceClient(env.srv.URL, testKeyName, testKey, &http.Client{Transport: &http.Transport{
				TLSClientConfig:     &tls.Config{RootCAs: env.roots},
				MaxIdleConnsPerHost: 64, ForceAttemptHTTP2: h2,
			}})
			key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
			cert := must(env.devCA.Issue(&x509.Certificate{
				Subject: pkix.Name{CommonName: "bench"}, NotAfter: time.Now().Add(time.Hour),
				KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			}, key.Public()))
			var n atomic.Int64
			b.SetParallelism(16) // 32 goroutines on 2 cores
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := fmt.Sprintf("bench-%d", n.Add(1))
					if err := svc.Enroll(context.Background(), id, cert); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
