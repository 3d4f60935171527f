package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/relaymesh/relaymesh/ingest/demo"
	"github.com/relaymesh/relaymesh/mesh"
)

// selfSigned writes a certificate for 127.0.0.1 and returns its paths and pool.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "relaymesh test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestTLSServesHTTP2 runs a node with --tls-cert/--tls-key and checks that
// a viewer gets the playlist over HTTP/2.
func TestTLSServesHTTP2(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	f := nodeFlags{HTTP: "127.0.0.1:0", TLSCert: certFile, TLSKey: keyFile,
		PartTarget: 200 * time.Millisecond, MinSegment: time.Second, Grace: time.Second, Idle: time.Second}
	n, err := newNode(f, mesh.RoleOrigin, slog.New(slog.NewTextHandler(io.Discard, nil)), func(string) bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	clip, err := demo.Load()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- n.run(ctx, func(ctx context.Context) error {
			return clip.Publish(ctx, n.registry, "demo", n.packager, demo.Options{Speed: 4})
		})
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run returned %v after shutdown", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("node did not shut down within 10s")
		}
	}()

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
	}}
	resp, err := client.Get("https://" + n.httpLn.Addr().String() + "/live/demo/index.m3u8")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Errorf("protocol %s, want HTTP/2", resp.Proto)
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `CODECS="avc1.`) {
		t.Errorf("status %d body %q", resp.StatusCode, body)
	}
}

func TestTLSFlagsGoTogether(t *testing.T) {
	f := nodeFlags{HTTP: ":0", TLSCert: "cert.pem", PartTarget: 200 * time.Millisecond, MinSegment: time.Second, Grace: time.Second, Idle: time.Second}
	if err := f.validate(); err == nil || !strings.Contains(err.Error(), "--tls-key") {
		t.Errorf("validate with only --tls-cert: %v", err)
	}
}

// TestFlagPrecedence: command line beats environment beats config file.
func TestFlagPrecedence(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "relaymesh.yaml")
	os.WriteFile(cfg, []byte("http: 127.0.0.1:1\nrtmp: 127.0.0.1:2\nsrt:\npart-target: 300ms\n"), 0o600)
	t.Setenv("RELAYMESH_RTMP", "127.0.0.1:3")
	t.Setenv("RELAYMESH_PART_TARGET", "250ms")

	var f nodeFlags
	fs := pflag.NewFlagSet("origin", pflag.ContinueOnError)
	f.register(fs, true)
	if err := fs.Parse([]string{"--config", cfg, "--part-target", "400ms"}); err != nil {
		t.Fatal(err)
	}
	if err := applyEnvAndConfig(fs); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, got, want string }{
		{"http (file)", f.HTTP, "127.0.0.1:1"},
		{"rtmp (env over file)", f.RTMP, "127.0.0.1:3"},
		{"srt (empty in file disables)", f.SRT, ""},
		{"part-target (flag over env and file)", f.PartTarget.String(), "400ms"},
		{"rtsp (default)", f.RTSP, ":8554"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ name, yaml, env, want string }{
		{"unknown key", "htp: :1\n", "", `unknown key "htp"`},
		{"bad value", "part-target: fast\n", "", "part-target"},
		{"not yaml", "{{{", "", "not valid YAML"},
		{"bad env", "", "RELAYMESH_GRACE=soon", "RELAYMESH_GRACE"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".yaml")
			os.WriteFile(path, []byte(c.yaml), 0o600)
			if k, v, ok := strings.Cut(c.env, "="); ok {
				t.Setenv(k, v)
			}
			var f nodeFlags
			fs := pflag.NewFlagSet("origin", pflag.ContinueOnError)
			f.register(fs, true)
			fs.Parse([]string{"--config", path})
			err := applyEnvAndConfig(fs)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want it to mention %q", err, c.want)
			}
		})
	}
}
