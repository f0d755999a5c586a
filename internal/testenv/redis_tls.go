package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// StartRedisTLS starts redis-server (as StartRedis) answering TLS only, with a
// server certificate for 127.0.0.1 from a certificate authority made for the test
// (r.CAFile, PEM) and extra configuration args (like "--user", "app", "on", ">pw", "~*", "+@all").
// Clients need no certificate of their own.
func StartRedisTLS(tb testing.TB, args ...string) *Redis {
	tb.Helper()
	r := &Redis{
		bin:  Binary(tb, "redis-server", "SLUICE_REDIS_SERVER_BIN", "apt-get install -y redis-server"),
		port: FreePort(tb),
		dir:  tb.TempDir(),
	}
	certDir := tb.TempDir()
	ca, cert, key := WriteTestCertificates(tb, certDir)
	r.CAFile = ca
	all := append([]string{"--bind", "127.0.0.1", "--port", "0", "--tls-port", strconv.Itoa(r.port),
		"--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "no",
		"--save", "", "--appendonly", "no", "--dir", r.dir, "--maxmemory-policy", "noeviction"}, args...)
	p := startProcess(tb, r.dir, r.bin, nil, all...)
	p.Addr = "127.0.0.1:" + strconv.Itoa(r.port)
	waitTCP(tb, p.Addr, 10*time.Second, p.Log)
	r.Process = p
	r.URL = "rediss://" + p.Addr + "/0"
	return r
}

// WriteTestCertificates writes a CA and a server certificate for 127.0.0.1 and
// localhost signed by it, and returns the PEM files' paths.
func WriteTestCertificates(tb testing.TB, dir string) (caFile, certFile, keyFile string) {
	tb.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sluice test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		tb.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			tb.Fatal(err)
		}
		return path
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", srvDER), write("server.key", "EC PRIVATE KEY", keyDER)
}
