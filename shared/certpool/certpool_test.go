package certpool

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/sluice-dl/sluice/internal/testenv"
)

// A certificate signed by the bundle's CA is trusted; a file with no certificate, or
// none at all, is refused.
func TestFromFile(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, _ := testenv.WriteTestCertificates(t, dir)
	raw, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := FromFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
		t.Errorf("a certificate of the bundle's CA is not trusted: %v", err)
	}

	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{empty, filepath.Join(dir, "missing.pem")} {
		if _, err := FromFile(file); err == nil {
			t.Errorf("FromFile(%s) succeeded", file)
		}
	}
}
