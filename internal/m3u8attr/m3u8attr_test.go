package m3u8attr

import (
	"maps"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want map[string]string
		bad  bool
	}{
		{`BANDWIDTH=1,CODECS="avc1.64001f,mp4a.40.2",RESOLUTION=640x360, PATHWAY-ID="a=b"`,
			map[string]string{"BANDWIDTH": "1", "CODECS": "avc1.64001f,mp4a.40.2", "RESOLUTION": "640x360", "PATHWAY-ID": "a=b"}, false},
		{`URI="part1.m4s",DURATION=0.2`, map[string]string{"URI": "part1.m4s", "DURATION": "0.2"}, false},
		{``, map[string]string{}, false},
		{`A=1,LAST`, map[string]string{"A": "1"}, true},
		{`A="open`, map[string]string{}, true},
		{`A="x"junk,B=2`, map[string]string{}, true},
		{`=1`, map[string]string{}, true},
	} {
		got, err := Parse(tc.in)
		if (err != nil) != tc.bad || !maps.Equal(got, tc.want) {
			t.Errorf("Parse(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.bad)
		}
	}
}
