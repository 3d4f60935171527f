package srt

import (
	"errors"
	"strings"
	"testing"

	"github.com/relaymesh/relaymesh/relay"
)

func TestParseStreamID(t *testing.T) {
	long := strings.Repeat("a", 128)
	for _, tc := range []struct {
		id          string
		stream, key string
		err         error // nil: accepted
	}{
		{"publish:cam", "cam", "", nil},
		{"publish:cam:secret", "cam", "secret", nil},
		{"publish:Cam_1.backup-2:s3cr3t", "Cam_1.backup-2", "s3cr3t", nil},
		{"publish:cam:user:pass", "cam", "user:pass", nil}, // everything after the name is the key
		{"publish:cam:", "cam", "", nil},
		{"PUBLISH:cam", "cam", "", nil},
		{"publish:" + long, long, "", nil},
		{"publish:" + long + "a", "", "", relay.ErrBadStreamName},
		{"publish:", "", "", relay.ErrBadStreamName},
		{"publish::key", "", "", relay.ErrBadStreamName},
		{"publish:../cam", "", "", relay.ErrBadStreamName},
		{"publish:.cam", "", "", relay.ErrBadStreamName},
		{"publish:c am", "", "", relay.ErrBadStreamName},
		{"publish:cam/x", "", "", relay.ErrBadStreamName},
		{"publish:kamera\u00e9", "", "", relay.ErrBadStreamName},
		{"read:cam", "", "", errReadMode},
		{"play:cam", "", "", errReadMode},
		{"request:cam", "", "", errReadMode},
		{"cam", "", "", errReadMode},
		{"", "", "", errStreamID},
		{"push:cam", "", "", errStreamID},
		{":cam", "", "", errStreamID},

		{"#!::r=cam,m=publish", "cam", "", nil},
		{"#!::m=publish,r=cam", "cam", "", nil},
		{"#!::r=cam,m=publish,s=secret", "cam", "secret", nil},
		{"#!::u=alice,r=cam,m=publish,s=secret", "cam", "secret", nil},
		{"#!::r=cam,m=publish,s=a=b", "cam", "a=b", nil},
		{"#!::r=cam,m=publish,s=", "cam", "", nil},
		{"#!::r=cam,m=publish,t=stream,h=example.com,x-custom=1", "cam", "", nil},
		{"#!::r=cam", "", "", errReadMode},
		{"#!::r=cam,m=request", "", "", errReadMode},
		{"#!::r=cam,m=bidirectional", "", "", errBadMode},
		{"#!::r=cam,m=PUBLISH", "", "", errBadMode},
		{"#!::m=publish", "", "", errStreamID},
		{"#!::r=cam,m=publish,t=file", "", "", errStreamID},
		{"#!::r=cam,r=other,m=publish", "", "", errStreamID},
		{"#!::r=cam,m=publish,secret", "", "", errStreamID},
		{"#!::r=cam,m=publish,", "", "", errStreamID},
		{"#!::", "", "", errStreamID},
		{"#!::r=,m=publish", "", "", relay.ErrBadStreamName},
		{"#!::r=a b,m=publish", "", "", relay.ErrBadStreamName},
		{"#!:r=cam,m=publish", "", "", errStreamID}, // not the access-control prefix
	} {
		stream, key, err := parseStreamID(tc.id)
		if tc.err == nil {
			if err != nil || stream != tc.stream || key != tc.key {
				t.Errorf("parseStreamID(%q) = %q, %q, %v; want %q, %q", tc.id, stream, key, err, tc.stream, tc.key)
			}
			continue
		}
		if !errors.Is(err, tc.err) || stream != "" || key != "" {
			t.Errorf("parseStreamID(%q) = %q, %q, %v; want error %v", tc.id, stream, key, err, tc.err)
		}
	}
}

// A key must never end up in an error message, which is logged.
func TestParseStreamIDErrorsHideKey(t *testing.T) {
	for _, id := range []string{
		"#!::r=cam,m=publish,hunter2hunter2",
		"#!::r=bad name,m=publish,s=hunter2hunter2",
		"#!::r=cam,m=request,s=hunter2hunter2",
		"publish:bad name:hunter2hunter2",
		"read:cam:hunter2hunter2",
	} {
		_, _, err := parseStreamID(id)
		if err == nil {
			t.Fatalf("parseStreamID(%q) accepted", id)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("parseStreamID(%q): error %q shows the key", id, err)
		}
	}
}

func FuzzParseStreamID(f *testing.F) {
	for _, s := range []string{
		"publish:cam", "publish:cam:key", "read:cam", "cam", "", "publish:", "publish:a:b:c",
		"#!::r=cam,m=publish", "#!::r=cam,m=publish,s=k", "#!::u=x,r=cam,m=publish", "#!::r=cam",
		"#!::r=cam,r=cam,m=publish", "#!::,", "#!::=", "#!::r=" + strings.Repeat("z", 130) + ",m=publish",
	} {
		f.Add(s, "cam", "key")
	}
	f.Fuzz(func(t *testing.T, id, name, key string) {
		stream, k, err := parseStreamID(id)
		if err != nil {
			if stream != "" || k != "" {
				t.Fatalf("parseStreamID(%q) = %q, %q with error %v", id, stream, k, err)
			}
		} else if !relay.ValidName(stream) {
			t.Fatalf("parseStreamID(%q) accepted invalid name %q", id, stream)
		}

		// Ids built from a valid name and key parse back to them.
		if !relay.ValidName(name) {
			return
		}
		ids := []string{"publish:" + name + ":" + key, "#!::r=" + name + ",m=publish,s=" + key, "#!::s=" + key + ",u=x,m=publish,r=" + name}
		if key == "" {
			ids = append(ids, "publish:"+name, "#!::r="+name+",m=publish")
		}
		for i, id := range ids {
			if i > 0 && strings.Contains(key, ",") {
				break // a comma cannot be written inside an access-control value
			}
			stream, k, err := parseStreamID(id)
			if err != nil || stream != name || k != key {
				t.Fatalf("parseStreamID(%q) = %q, %q, %v; want %q, %q", id, stream, k, err, name, key)
			}
		}
	})
}
