// Package certpool builds the certificate pool a TLS client trusts when an operator
// names a CA bundle (--s3-ca-file, --redis-ca-file): the system's roots plus the
// bundle's certificates, so that a private CA is added, not substituted.
package certpool

import (
	"crypto/x509"
	"fmt"
	"os"
)

// FromFile returns the system's roots (none where the system has no pool) plus every
// PEM certificate in file. A file without one is an error: a bundle that adds nothing
// is a mistake the operator should hear of at start, not at the first handshake.
func FromFile(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}
