package reconnect

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ebb-ws/ebb/websocket"
)

const (
	text   = websocket.MessageText
	binary = websocket.MessageBinary
)

func TestParseResumeMessage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		typ  websocket.MessageType
		in   string
		want ResumeMessage
		err  string // substring of the error; "" means no error
	}{
		{"data text", text, "1\nhello", ResumeMessage{Kind: ResumeData, Seq: 1, Payload: []byte("hello")}, ""},
		{"data binary", binary, "42\n\x00\xff", ResumeMessage{Kind: ResumeData, Seq: 42, Payload: []byte("\x00\xff")}, ""},
		{"data empty payload", text, "7\n", ResumeMessage{Kind: ResumeData, Seq: 7, Payload: []byte{}}, ""},
		{"data payload with newlines and !", binary, "9\n!gap 1 2\n3\n", ResumeMessage{Kind: ResumeData, Seq: 9, Payload: []byte("!gap 1 2\n3\n")}, ""},
		{"data max seq", text, "18446744073709551615\nx", ResumeMessage{Kind: ResumeData, Seq: math.MaxUint64, Payload: []byte("x")}, ""},
		{"gap", text, "!gap 5 9", ResumeMessage{Kind: ResumeGap, From: 5, Next: 9}, ""},
		{"live", text, "!live 12", ResumeMessage{Kind: ResumeLive, Next: 12}, ""},
		{"unknown word", text, "!ping 1 2 3", ResumeMessage{Kind: ResumeOther, Word: "ping"}, ""},
		{"unknown word alone", text, "!hello", ResumeMessage{Kind: ResumeOther, Word: "hello"}, ""},
		{"near-known word", text, "!gaps 1 2", ResumeMessage{Kind: ResumeOther, Word: "gaps"}, ""},
		{"long word cut", text, "!" + strings.Repeat("é", 40), ResumeMessage{Kind: ResumeOther, Word: strings.Repeat("é", 32)}, ""},

		{"empty", text, "", ResumeMessage{}, "empty message"},
		{"bad type", 0, "1\nx", ResumeMessage{}, "neither text nor binary"},
		{"no newline", text, "12hello", ResumeMessage{}, `sequence "12" is followed by 'h'`},
		{"no newline at all", text, "123", ResumeMessage{}, `sequence "123" is not followed by a newline`},
		{"seq too long", text, "123456789012345678901\nx", ResumeMessage{}, "more than 20 digits"},
		{"seq overflow", text, "18446744073709551616\nx", ResumeMessage{}, "larger than 18446744073709551615"},
		{"seq zero", text, "0\nx", ResumeMessage{}, "sequences start at 1"},
		{"seq leading zero", binary, "01\nx", ResumeMessage{}, "leading zero"},
		{"seq with space", text, "1 \nx", ResumeMessage{}, `sequence "1" is followed by ' '`},
		{"starts with letter", text, "hello", ResumeMessage{}, `starts with 'h'`},
		{"starts with newline", binary, "\n1", ResumeMessage{}, `starts with '\n'`},
		{"control in binary", binary, "!live 3", ResumeMessage{}, "control message in a binary frame"},
		{"bang alone", text, "!", ResumeMessage{}, "no word after"},
		{"bang space", text, "! live 3", ResumeMessage{}, "no word after"},
		{"gap one field", text, "!gap 5", ResumeMessage{}, "two sequences"},
		{"gap no fields", text, "!gap", ResumeMessage{}, "two sequences"},
		{"gap three fields", text, "!gap 5 9 10", ResumeMessage{}, `next "9 10": not a decimal number`},
		{"gap double space", text, "!gap 5  9", ResumeMessage{}, `next " 9"`},
		{"gap from zero", text, "!gap 0 9", ResumeMessage{}, "sequences start at 1"},
		{"gap empty range", text, "!gap 9 9", ResumeMessage{}, "want from < next"},
		{"gap backwards", text, "!gap 9 5", ResumeMessage{}, "want from < next"},
		{"gap negative", text, "!gap -1 5", ResumeMessage{}, `from "-1": not a decimal number`},
		{"live none", text, "!live", ResumeMessage{}, `!live next "": empty`},
		{"live trailing space", text, "!live 3 ", ResumeMessage{}, "not a decimal number"},
		{"live trailing newline", text, "!live 3\n", ResumeMessage{}, "not a decimal number"},
		{"live plus", text, "!live +3", ResumeMessage{}, "not a decimal number"},
		{"live zero", text, "!live 0", ResumeMessage{}, "sequences start at 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseResumeMessage(tc.typ, []byte(tc.in))
			if tc.err != "" {
				var me *MalformedResumeError
				if !errors.As(err, &me) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseResumeMessage(%v, %q) = %+v, %v; want a *MalformedResumeError containing %q", tc.typ, tc.in, got, err, tc.err)
				}
				if !strings.HasPrefix(err.Error(), "reconnect: malformed ebb.resume.v1 message (") {
					t.Errorf("error %q does not say what was malformed", err)
				}
				if got.Kind != 0 {
					t.Errorf("a malformed message decoded as %v", got.Kind)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseResumeMessage(%v, %q): %v", tc.typ, tc.in, err)
			}
			if got.Kind != tc.want.Kind || got.Seq != tc.want.Seq || got.From != tc.want.From || got.Next != tc.want.Next ||
				!bytes.Equal(got.Payload, tc.want.Payload) || got.Word != tc.want.Word {
				t.Errorf("ParseResumeMessage(%v, %q) = %+v, want %+v", tc.typ, tc.in, got, tc.want)
			}
		})
	}
}

func TestMalformedResumeErrorQuotesHead(t *testing.T) {
	t.Parallel()
	big := append([]byte("x"), bytes.Repeat([]byte("y"), 1000)...)
	_, err := ParseResumeMessage(binary, big)
	want := `reconnect: malformed ebb.resume.v1 message (binary "xyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"… (1001 bytes)): starts with 'x'`
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error = %v, want it to start %s", err, want)
	}
}

func TestAppendResume(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		got, want string
	}{
		{string(AppendResumeData(nil, 1, []byte("hi"))), "1\nhi"},
		{string(AppendResumeData([]byte("prefix:"), 1234567890, nil)), "prefix:1234567890\n"},
		{string(AppendResumeData(nil, math.MaxUint64, []byte("x"))), "18446744073709551615\nx"},
		{string(AppendResumeGap(nil, 3, 10)), "!gap 3 10"},
		{string(AppendResumeLive(nil, 1)), "!live 1"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	for name, f := range map[string]func(){
		"data 0":   func() { AppendResumeData(nil, 0, nil) },
		"gap 0 1":  func() { AppendResumeGap(nil, 0, 1) },
		"gap 2 2":  func() { AppendResumeGap(nil, 2, 2) },
		"live 0":   func() { AppendResumeLive(nil, 0) },
		"gap 5 4 ": func() { AppendResumeGap(nil, 5, 4) },
	} {
		func() {
			defer func() {
				if r := recover(); r == nil || !strings.HasPrefix(r.(string), "reconnect: ") {
					t.Errorf("%s: recovered %v, want a reconnect: panic", name, r)
				}
			}()
			f()
		}()
	}
}

func TestParseResumeFrom(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]uint64{"1": 1, "42": 42, "18446744073709551615": math.MaxUint64} {
		if got, err := ParseResumeFrom(in); err != nil || got != want {
			t.Errorf("ParseResumeFrom(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "01", "-1", "+1", "1.5", " 1", "0x10", "18446744073709551616", "1e3"} {
		if got, err := ParseResumeFrom(in); err == nil || !strings.Contains(err.Error(), "from=") {
			t.Errorf("ParseResumeFrom(%q) = %d, %v; want an error naming from=", in, got, err)
		}
	}
}

// FuzzResumeMessage: ParseResumeMessage never panics; whatever it accepts
// re-encodes to the same bytes (so the codec has one spelling per
// message), and data messages round-trip through AppendResumeData.
func FuzzResumeMessage(f *testing.F) {
	for _, s := range []string{"1\nhello", "42\n", "!gap 5 9", "!live 3", "!ping", "!", "", "0\n", "01\nx", "18446744073709551616\n", "!gap 9 5"} {
		f.Add(true, []byte(s))
	}
	f.Add(false, []byte("7\n\x00\x01"))
	f.Fuzz(func(t *testing.T, isText bool, p []byte) {
		typ := binary
		if isText {
			typ = text
		}
		m, err := ParseResumeMessage(typ, p)
		if err != nil {
			var me *MalformedResumeError
			if !errors.As(err, &me) || m.Kind != 0 {
				t.Fatalf("error %v (%T) with kind %v", err, err, m.Kind)
			}
			return
		}
		switch m.Kind {
		case ResumeData:
			if got := AppendResumeData(nil, m.Seq, m.Payload); !bytes.Equal(got, p) {
				t.Fatalf("data %d %q re-encodes to %q, want %q", m.Seq, m.Payload, got, p)
			}
			if typ == text && utf8.Valid(p) && !utf8.Valid(m.Payload) {
				t.Fatalf("a valid UTF-8 message gave an invalid payload %q", m.Payload)
			}
		case ResumeGap:
			if got := AppendResumeGap(nil, m.From, m.Next); !bytes.Equal(got, p) {
				t.Fatalf("gap re-encodes to %q, want %q", got, p)
			}
		case ResumeLive:
			if got := AppendResumeLive(nil, m.Next); !bytes.Equal(got, p) {
				t.Fatalf("live re-encodes to %q, want %q", got, p)
			}
		case ResumeOther:
			if typ != text || len(p) < 2 || p[0] != '!' || m.Word == "" || !bytes.HasPrefix(p[1:], []byte(m.Word)) {
				t.Fatalf("other %q from %v %q", m.Word, typ, p)
			}
		default:
			t.Fatalf("kind %v without an error", m.Kind)
		}
		// Every encoder output parses back to what was encoded.
		seq := uint64(len(p)) + 1
		if back, err := ParseResumeMessage(typ, AppendResumeData(nil, seq, p)); err != nil || back.Seq != seq || !bytes.Equal(back.Payload, p) {
			t.Fatalf("AppendResumeData(%d, %q) parses back as %+v, %v", seq, p, back, err)
		}
	})
}
