// Package peertls owns the mutual TLS that authenticates node-to-node QUIC
// relay connections: where each node's certificate and the trusted CA come
// from, and the server and client tls.Configs that require both ends to
// present a certificate chaining to that CA.
//
// There are two sources. FromClusterKey derives a CA from the cluster key
// every node already shares (--cluster-key), so a mesh needs no files:
// every node derives the identical CA certificate and key, and issues
// itself a fresh leaf certificate at start-up. Anyone who holds the cluster
// key can therefore join the relay, exactly as they can join the gossip.
// FromFiles instead loads an operator's CA, certificate and key
// (--relay-ca, --relay-cert, --relay-key).
//
// Node certificates name nodes, not hosts: the node name is the
// certificate's Common Name. Clients verify the server's chain against the
// CA but not a host name, because peers are dialled by address.
package peertls

import (
	"crypto"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"sync"
	"time"

	"github.com/relaymesh/relaymesh/relay/wire"
)

const (
	// caInfo is the HKDF info string for the CA key; a new CA scheme gets
	// a new string, never a changed derivation under this one.
	caInfo = "relaymesh relay ca v1"
	// caName is the derived CA's Common Name.
	caName = "relaymesh relay CA"

	// leafLifetime is how long a derived leaf certificate is valid, and
	// leafBackdate how far its validity starts in the past, to tolerate
	// clocks that disagree.
	leafLifetime = 365 * 24 * time.Hour
	leafBackdate = time.Hour
	// leafRenew is how long before expiry a derived leaf is replaced, so a
	// node that runs for a year keeps working.
	leafRenew = 30 * 24 * time.Hour
)

// The derived CA's validity is fixed, so that every node derives the same
// certificate bytes: 2025-01-01 to 2125-01-01 UTC, in Unix seconds.
const (
	caNotBefore = 1735689600
	caNotAfter  = 4891363200
)

// Config holds a node's relay identity: its certificate and the CA pool
// that peers must chain to. It is safe for concurrent use, and the
// tls.Configs it returns may be used for any number of connections.
type Config struct {
	name  string
	roots *x509.CertPool
	caDER []byte // the first CA certificate

	// Set only when the CA key is known (FromClusterKey), so that the
	// leaf can be reissued before it expires.
	caCert *x509.Certificate
	caKey  crypto.Signer
	now    func() time.Time

	mu   sync.Mutex
	leaf *tls.Certificate
}

// FromClusterKey derives the cluster's relay CA from clusterKey and issues
// nodeName a fresh leaf certificate signed by it. The CA key is the
// ed25519 key whose seed is HKDF-SHA256(clusterKey, info "relaymesh relay
// ca v1"); its certificate has a fixed serial and validity, so every node
// with the same key derives the same CA certificate, byte for byte.
func FromClusterKey(clusterKey, nodeName string) (*Config, error) {
	if clusterKey == "" {
		return nil, errors.New("relay TLS: empty cluster key")
	}
	if err := checkName(nodeName); err != nil {
		return nil, fmt.Errorf("relay TLS: node name: %w", err)
	}
	seed, err := hkdf.Key(sha256.New, []byte(clusterKey), nil, caInfo, ed25519.SeedSize)
	if err != nil {
		return nil, fmt.Errorf("relay TLS: deriving CA key: %w", err)
	}
	caKey := ed25519.NewKeyFromSeed(seed)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: caName},
		NotBefore:             time.Unix(caNotBefore, 0).UTC(),
		NotAfter:              time.Unix(caNotAfter, 0).UTC(),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("relay TLS: creating CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("relay TLS: parsing CA certificate: %w", err)
	}
	c := &Config{name: nodeName, roots: x509.NewCertPool(), caDER: der, caCert: ca, caKey: caKey, now: time.Now}
	c.roots.AddCert(ca)
	if c.leaf, err = c.issue(); err != nil {
		return nil, err
	}
	return c, nil
}

// issue creates a fresh key and leaf certificate for c.name, signed by the
// derived CA, for both server and client authentication.
func (c *Config) issue() (*tls.Certificate, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("relay TLS: generating node key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("relay TLS: generating serial: %w", err)
	}
	now := c.now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: c.name},
		NotBefore:    now.Add(-leafBackdate),
		NotAfter:     now.Add(leafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.caCert, pub, c.caKey)
	if err != nil {
		return nil, fmt.Errorf("relay TLS: creating node certificate for %q: %w", c.name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("relay TLS: parsing node certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// FromFiles loads an operator's relay CA bundle (PEM, one or more
// certificates), this node's certificate chain and its private key (PEM).
// The certificate must chain to the CA and allow both server and client
// authentication; the node name is its Common Name (or, without one, its
// first DNS name). Errors name the file at fault.
func FromFiles(caFile, certFile, keyFile string) (*Config, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("relay CA file %q: %w", caFile, err)
	}
	roots := x509.NewCertPool()
	var first []byte
	for rest := caPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		ca, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("relay CA file %q: %w", caFile, err)
		}
		if first == nil {
			first = block.Bytes
		}
		roots.AddCert(ca)
	}
	if first == nil {
		return nil, fmt.Errorf("relay CA file %q: no PEM certificate found", caFile)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("relay certificate file %q: %w", certFile, err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("relay key file %q: %w", keyFile, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("relay certificate %q with key %q: %w", certFile, keyFile, err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("relay certificate file %q: %w", certFile, err)
		}
	}
	name := nameOf(pair.Leaf)
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("relay certificate file %q: node name (Common Name): %w", certFile, err)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if err := verify(pair.Certificate, roots, usage); err != nil {
			return nil, fmt.Errorf("relay certificate file %q against CA file %q: %w", certFile, caFile, err)
		}
	}
	return &Config{name: name, roots: roots, caDER: first, now: time.Now, leaf: &pair}, nil
}

// Name returns this node's name as its certificate states it.
func (c *Config) Name() string { return c.name }

// certificate returns the node's certificate, reissuing a derived one that
// is close to expiry.
func (c *Config) certificate() (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.caKey != nil && c.now().After(c.leaf.Leaf.NotAfter.Add(-leafRenew)) {
		leaf, err := c.issue()
		if err != nil {
			return nil, err
		}
		c.leaf = leaf
	}
	return c.leaf, nil
}

// Server returns the TLS configuration for the relay listener: TLS 1.3,
// ALPN wire.ALPN, and a client certificate that chains to the CA required.
func (c *Config) Server() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		NextProtos:     []string{wire.ALPN},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.certificate() },
		ClientAuth:     tls.RequireAndVerifyClientCert,
		ClientCAs:      c.roots,
	}
}

// Client returns the TLS configuration for dialling any relay peer: TLS
// 1.3, ALPN wire.ALPN, this node's certificate, and the server's chain
// verified against the CA. No host name is checked: node certificates name
// nodes, and peers are dialled by address.
func (c *Config) Client() *tls.Config { return c.client("") }

// ClientFor is Client for dialling a particular node: the server's
// certificate must also name peer. This pins an address learnt from gossip
// to the node that announced it. It only adds assurance with FromFiles
// certificates; with a cluster key, every member can issue any name.
func (c *Config) ClientFor(peer string) *tls.Config { return c.client(peer) }

func (c *Config) client(peer string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{wire.ALPN},
		// Chain verification happens in VerifyConnection, without the host
		// name check that the standard verifier cannot skip.
		InsecureSkipVerify:   true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c.certificate() },
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("relay peer sent no certificate")
			}
			raw := make([][]byte, len(cs.PeerCertificates))
			for i, cert := range cs.PeerCertificates {
				raw[i] = cert.Raw
			}
			if err := verify(raw, c.roots, x509.ExtKeyUsageServerAuth); err != nil {
				return fmt.Errorf("relay peer %q: %w", nameOf(cs.PeerCertificates[0]), err)
			}
			if got := nameOf(cs.PeerCertificates[0]); peer != "" && got != peer {
				return fmt.Errorf("relay peer is %q, want %q", got, peer)
			}
			return nil
		},
	}
}

// verify checks that chain[0], with chain[1:] as intermediates, chains to
// roots for usage, now.
func verify(chain [][]byte, roots *x509.CertPool, usage x509.ExtKeyUsage) error {
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return fmt.Errorf("parsing certificate: %w", err)
	}
	inter := x509.NewCertPool()
	for _, der := range chain[1:] {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("parsing intermediate certificate: %w", err)
		}
		inter.AddCert(cert)
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
	if err != nil {
		return fmt.Errorf("certificate not trusted: %w", err)
	}
	return nil
}

// PeerName returns the node name of the peer of a relay connection: the
// Common Name (or first DNS name) of its verified certificate. state must
// come from a connection made with a Server or Client configuration from
// this package, whose handshake only completes once the peer's chain has
// been verified against the CA. It returns "" when there is no peer
// certificate.
func PeerName(state tls.ConnectionState) string {
	if len(state.VerifiedChains) > 0 && len(state.VerifiedChains[0]) > 0 {
		return nameOf(state.VerifiedChains[0][0])
	}
	if len(state.PeerCertificates) > 0 {
		return nameOf(state.PeerCertificates[0])
	}
	return ""
}

func nameOf(cert *x509.Certificate) string {
	if cert.Subject.CommonName != "" {
		return cert.Subject.CommonName
	}
	if len(cert.DNSNames) > 0 {
		return cert.DNSNames[0]
	}
	return ""
}

// checkName applies the rules a wire.Hello applies to node names, so that
// the name a certificate proves is one a peer can also announce.
func checkName(name string) error {
	if !wire.ValidNodeName(name) {
		return fmt.Errorf("%q must be 1-%d bytes of printable UTF-8", name, wire.MaxNameLen)
	}
	return nil
}
