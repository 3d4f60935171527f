package peertls

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/relaymesh/relaymesh/relay/wire"
)

// node is a relay endpoint for tests: one UDP socket, one quic.Transport
// that both listens and dials, as a relaymesh node will.
type node struct {
	name     string
	tr       *quic.Transport
	addr     net.Addr
	accepted chan accepted
}

// accepted is what the listening side learnt from a connection.
type accepted struct {
	peer  string // PeerName of the dialler
	hello string // the Node its Hello announced
	err   error
}

var quicConf = &quic.Config{HandshakeIdleTimeout: 2 * time.Second, MaxIdleTimeout: 5 * time.Second}

func startNode(t *testing.T, name string, server *tls.Config) *node {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(server, quicConf)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{name: name, tr: tr, addr: ln.Addr(), accepted: make(chan accepted, 16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			go n.serve(ctx, conn)
		}
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		<-done
		tr.Close()
		udp.Close()
	})
	return n
}

// serve answers one control stream's Hello with its own.
func (n *node) serve(ctx context.Context, conn *quic.Conn) {
	defer conn.CloseWithError(0, "")
	a := accepted{peer: PeerName(conn.ConnectionState().TLS)}
	a.hello, a.err = func() (string, error) {
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			return "", err
		}
		m, err := wire.NewReader(str, 0).ReadMessage()
		if err != nil {
			return "", err
		}
		h, ok := m.(*wire.Hello)
		if !ok {
			return "", errors.New("first frame is not a Hello")
		}
		if err := wire.WriteMessage(str, &wire.Hello{Version: wire.Version, Node: n.name}); err != nil {
			return "", err
		}
		// Wait for the dialler to finish with the stream.
		_, _ = str.Read(make([]byte, 1))
		return h.Node, nil
	}()
	n.accepted <- a
}

// dial connects from's transport to to with client, exchanges Hellos and
// returns the server's PeerName and the Node of its Hello.
func dial(from, to *node, client *tls.Config) (peer, hello string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := from.tr.Dial(ctx, to.addr, client, quicConf)
	if err != nil {
		return "", "", err
	}
	defer conn.CloseWithError(0, "")
	if got := conn.ConnectionState().TLS.NegotiatedProtocol; got != wire.ALPN {
		return "", "", errors.New("negotiated ALPN " + got)
	}
	peer = PeerName(conn.ConnectionState().TLS)
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return "", "", err
	}
	if err := wire.WriteMessage(str, &wire.Hello{Version: wire.Version, Node: from.name}); err != nil {
		return "", "", err
	}
	str.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := wire.NewReader(str, 0).ReadMessage()
	if err != nil {
		return "", "", err
	}
	str.Close()
	h, ok := m.(*wire.Hello)
	if !ok {
		return "", "", errors.New("reply is not a Hello")
	}
	return peer, h.Node, nil
}

func (n *node) expectAccepted(t *testing.T, peer string) {
	t.Helper()
	select {
	case a := <-n.accepted:
		if a.err != nil || a.peer != peer || a.hello != peer {
			t.Fatalf("%s accepted peer %q hello %q err %v; want %q", n.name, a.peer, a.hello, a.err, peer)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s accepted no connection", n.name)
	}
}

func (n *node) expectNothingAccepted(t *testing.T) {
	t.Helper()
	select {
	case a := <-n.accepted:
		t.Fatalf("%s accepted a connection from %q", n.name, a.peer)
	case <-time.After(300 * time.Millisecond):
	}
}

func mustClusterKey(t *testing.T, key, name string) *Config {
	t.Helper()
	c, err := FromClusterKey(key, name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClusterKeyHandshakeBothWays(t *testing.T) {
	ca := mustClusterKey(t, "cluster secret", "node-a")
	cb := mustClusterKey(t, "cluster secret", "node-b")
	a := startNode(t, "node-a", ca.Server())
	b := startNode(t, "node-b", cb.Server())

	for _, dir := range []struct {
		from, to *node
		client   *tls.Config
	}{
		{a, b, ca.Client()},
		{b, a, cb.Client()},
		{a, b, ca.ClientFor("node-b")},
	} {
		peer, hello, err := dial(dir.from, dir.to, dir.client)
		if err != nil {
			t.Fatalf("%s -> %s: %v", dir.from.name, dir.to.name, err)
		}
		if peer != dir.to.name || hello != dir.to.name {
			t.Fatalf("%s -> %s: client sees peer %q hello %q", dir.from.name, dir.to.name, peer, hello)
		}
		dir.to.expectAccepted(t, dir.from.name)
	}
}

// rejected checks that a dial fails with a TLS alert sent by the server
// (byServer) or by the client, and that the server never accepted the
// connection. A client the server rejects may only learn it at its first
// read: a TLS 1.3 client finishes before the server has checked its
// certificate.
func rejected(t *testing.T, from, to *node, client *tls.Config, byServer bool) error {
	t.Helper()
	_, _, err := dial(from, to, client)
	if err == nil {
		t.Fatalf("%s -> %s: handshake succeeded", from.name, to.name)
	}
	var te *quic.TransportError
	if !errors.As(err, &te) || !te.ErrorCode.IsCryptoError() {
		t.Fatalf("%s -> %s: %v, want a TLS alert", from.name, to.name, err)
	}
	if te.Remote != byServer {
		t.Fatalf("%s -> %s: %v, want the alert sent by the server: %v", from.name, to.name, err, byServer)
	}
	t.Logf("%s -> %s rejected: %v", from.name, to.name, err)
	to.expectNothingAccepted(t)
	return err
}

func TestWrongClusterKeyRejected(t *testing.T) {
	good := mustClusterKey(t, "cluster secret", "node-a")
	evil := mustClusterKey(t, "another secret", "node-a-impostor")
	a := startNode(t, "node-a", good.Server())
	x := startNode(t, "node-x", evil.Server())

	// A client of another cluster is refused by the server, even when it
	// does not check the server itself.
	err := rejected(t, x, a, trustingClient(t, evil), true)
	if !strings.Contains(err.Error(), "unknown certificate authority") {
		t.Errorf("server-side rejection does not say why: %v", err)
	}
	// A server of another cluster is refused by the client, both by a
	// client of this cluster and by one of the other.
	err = rejected(t, a, x, good.Client(), false)
	if !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("client-side rejection does not say why: %v", err)
	}
	rejected(t, x, a, evil.Client(), false)
}

// trustingClient presents c's certificate but accepts any server, so that
// the server's own check is what a test sees.
func trustingClient(t *testing.T, c *Config) *tls.Config {
	t.Helper()
	cert, err := c.certificate()
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{wire.ALPN},
		InsecureSkipVerify: true,
		// Present it whatever CAs the server asks for.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
	}
}

func TestClientWithoutCertificateRejected(t *testing.T) {
	srv := mustClusterKey(t, "cluster secret", "node-a")
	a := startNode(t, "node-a", srv.Server())
	anon := startNode(t, "anon", mustClusterKey(t, "cluster secret", "anon").Server())
	err := rejected(t, anon, a, &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{wire.ALPN},
		InsecureSkipVerify: true,
	}, true)
	if !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("rejection does not say why: %v", err)
	}
}

func TestClientForWrongNameRejected(t *testing.T) {
	ca := mustClusterKey(t, "cluster secret", "node-a")
	cb := mustClusterKey(t, "cluster secret", "node-b")
	a := startNode(t, "node-a", ca.Server())
	b := startNode(t, "node-b", cb.Server())
	err := rejected(t, a, b, ca.ClientFor("node-c"), false)
	if !strings.Contains(err.Error(), `want "node-c"`) {
		t.Errorf("error does not name the expected peer: %v", err)
	}
}

func TestClusterKeyDeterministicCA(t *testing.T) {
	a := mustClusterKey(t, "cluster secret", "node-a")
	b := mustClusterKey(t, "cluster secret", "node-b")
	a2 := mustClusterKey(t, "cluster secret", "node-a")
	other := mustClusterKey(t, "cluster secret!", "node-a")
	if !bytes.Equal(a.caDER, b.caDER) || !bytes.Equal(a.caDER, a2.caDER) {
		t.Fatal("same cluster key gave different CA certificates")
	}
	if bytes.Equal(a.caDER, other.caDER) {
		t.Fatal("different cluster keys gave the same CA certificate")
	}
	if bytes.Equal(a.leaf.Certificate[0], a2.leaf.Certificate[0]) {
		t.Fatal("two configs for one node share a leaf certificate")
	}
	ca, err := x509.ParseCertificate(a.caDER)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.IsCA || ca.SerialNumber.Int64() != 1 || ca.Subject.CommonName != caName {
		t.Fatalf("CA certificate %+v", ca.Subject)
	}
	leaf := a.leaf.Leaf
	if leaf.Subject.CommonName != "node-a" || a.Name() != "node-a" {
		t.Fatalf("leaf names %q", leaf.Subject.CommonName)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life != leafLifetime+leafBackdate {
		t.Fatalf("leaf lifetime %v", life)
	}
	if time.Until(leaf.NotBefore) > -leafBackdate+time.Minute {
		t.Fatalf("leaf not back-dated: NotBefore %v", leaf.NotBefore)
	}
	// b's CA pool trusts a's leaf for both roles.
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if err := verify(a.leaf.Certificate, b.roots, usage); err != nil {
			t.Fatalf("usage %v: %v", usage, err)
		}
	}
	if err := verify(a.leaf.Certificate, other.roots, x509.ExtKeyUsageClientAuth); err == nil {
		t.Fatal("another cluster's CA trusts this leaf")
	}
}

func TestLeafRenewedBeforeExpiry(t *testing.T) {
	c := mustClusterKey(t, "cluster secret", "node-a")
	first, err := c.certificate()
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := c.certificate(); again != first {
		t.Fatal("leaf reissued while fresh")
	}
	later := first.Leaf.NotAfter.Add(-leafRenew + time.Hour)
	c.now = func() time.Time { return later }
	renewed, err := c.certificate()
	if err != nil {
		t.Fatal(err)
	}
	if renewed == first || !renewed.Leaf.NotAfter.After(first.Leaf.NotAfter) {
		t.Fatalf("leaf not renewed: NotAfter %v", renewed.Leaf.NotAfter)
	}
	if err := renewed.Leaf.CheckSignatureFrom(c.caCert); err != nil {
		t.Fatalf("renewed leaf not signed by the cluster CA: %v", err)
	}
	if renewed.Leaf.Subject.CommonName != "node-a" {
		t.Fatalf("renewed leaf names %q", renewed.Leaf.Subject.CommonName)
	}
}

func TestFromClusterKeyErrors(t *testing.T) {
	for _, tc := range []struct{ key, name, want string }{
		{"", "node-a", "empty cluster key"},
		{"k", "", "node name"},
		{"k", "bad\nname", "node name"},
		{"k", strings.Repeat("n", wire.MaxNameLen+1), "node name"},
	} {
		if _, err := FromClusterKey(tc.key, tc.name); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("FromClusterKey(%q, %.10q): %v, want %q", tc.key, tc.name, err, tc.want)
		}
	}
}

// pki writes a CA and leaf certificates as PEM files into dir.
type pki struct {
	t    *testing.T
	dir  string
	ca   *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newPKI(t *testing.T, dir, name string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &pki{t: t, dir: dir, ca: ca, key: key, file: filepath.Join(dir, name+".pem")}
	writePEM(t, p.file, "CERTIFICATE", der)
	return p
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// leaf issues name a certificate and returns its cert and key files.
func (p *pki) leaf(name string, usages ...x509.ExtKeyUsage) (certFile, keyFile string) {
	p.t.Helper()
	if usages == nil {
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usages,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		p.t.Fatal(err)
	}
	certFile = filepath.Join(p.dir, name+".crt")
	keyFile = filepath.Join(p.dir, name+".key")
	writePEM(p.t, certFile, "CERTIFICATE", der)
	writePEM(p.t, keyFile, "PRIVATE KEY", kder)
	return certFile, keyFile
}

func TestFromFiles(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir, "ops-ca")
	xCert, xKey := p.leaf("node-x")
	yCert, yKey := p.leaf("node-y")
	cx, err := FromFiles(p.file, xCert, xKey)
	if err != nil {
		t.Fatal(err)
	}
	cy, err := FromFiles(p.file, yCert, yKey)
	if err != nil {
		t.Fatal(err)
	}
	if cx.Name() != "node-x" {
		t.Fatalf("Name %q", cx.Name())
	}
	x := startNode(t, "node-x", cx.Server())
	y := startNode(t, "node-y", cy.Server())
	for _, dir := range []struct {
		from, to *node
		client   *tls.Config
	}{{x, y, cx.ClientFor("node-y")}, {y, x, cy.Client()}} {
		peer, hello, err := dial(dir.from, dir.to, dir.client)
		if err != nil || peer != dir.to.name || hello != dir.to.name {
			t.Fatalf("%s -> %s: peer %q hello %q err %v", dir.from.name, dir.to.name, peer, hello, err)
		}
		dir.to.expectAccepted(t, dir.from.name)
	}

	// A node of a cluster-key mesh and a node of the operator's CA do not
	// trust each other.
	ck := mustClusterKey(t, "cluster secret", "node-k")
	k := startNode(t, "node-k", ck.Server())
	rejected(t, k, x, ck.Client(), false)
	rejected(t, x, k, cx.Client(), false)
	for _, err := range []error{
		rejected(t, k, x, trustingClient(t, ck), true),
		rejected(t, x, k, trustingClient(t, cx), true),
	} {
		if !strings.Contains(err.Error(), "unknown certificate authority") {
			t.Errorf("server-side rejection does not say why: %v", err)
		}
	}
}

func TestFromFilesErrors(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir, "ops-ca")
	other := newPKI(t, dir, "other-ca")
	cert, key := p.leaf("node-x")
	foreignCert, foreignKey := other.leaf("node-f")
	serverOnlyCert, serverOnlyKey := p.leaf("node-s", x509.ExtKeyUsageServerAuth)
	missing := filepath.Join(dir, "missing.pem")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name                string
		ca, cert, key, want string
	}{
		{"missing CA", missing, cert, key, missing},
		{"missing cert", p.file, missing, key, missing},
		{"missing key", p.file, cert, missing, missing},
		{"CA not PEM", garbage, cert, key, garbage},
		{"cert not PEM", p.file, garbage, key, garbage},
		{"key mismatch", p.file, cert, foreignKey, foreignKey},
		{"other CA", p.file, foreignCert, foreignKey, foreignCert},
		{"server-only cert", p.file, serverOnlyCert, serverOnlyKey, serverOnlyCert},
	} {
		_, err := FromFiles(tc.ca, tc.cert, tc.key)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
}

func TestPeerNameEmpty(t *testing.T) {
	if got := PeerName(tls.ConnectionState{}); got != "" {
		t.Fatalf("PeerName of no certificate = %q", got)
	}
}
