package apikey

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
)

func generate(t testing.TB, env Env) Key {
	t.Helper()
	k, err := Generate(env)
	if err != nil {
		t.Fatalf("Generate(%s) = %v", env, err)
	}
	return k
}

func TestGenerate(t *testing.T) {
	max := new(big.Int).Lsh(big.NewInt(1), EntropyBits)
	for _, env := range []Env{EnvLive, EnvTest} {
		for range 50 {
			k := generate(t, env)
			head := "veil_" + string(env) + "_"
			if !strings.HasPrefix(k.Plaintext, head) || len(k.Plaintext) != len(head)+BodyLen {
				t.Fatalf("Generate(%s).Plaintext = %q; want %s followed by %d characters", env, k.Plaintext, head, BodyLen)
			}
			if got, err := Parse(k.Plaintext); err != nil || got != env {
				t.Errorf("Parse(%q) = %q, %v; want %s, nil", k.Plaintext, got, err, env)
			}
			// The random part is the zero-padded base62 form of a number
			// below 2^192, in math/big's digit order.
			random := k.Plaintext[len(head) : len(head)+RandomLen]
			n, ok := new(big.Int).SetString(random, 62)
			if !ok || n.Cmp(max) >= 0 {
				t.Errorf("random part %q = %v; want a base62 number below 2^%d", random, n, EntropyBits)
			} else if text := n.Text(62); strings.Repeat("0", RandomLen-len(text))+text != random {
				t.Errorf("random part %q; want zero-padded big.Int.Text(62) %q", random, text)
			}
			sum := sha256.Sum256([]byte(k.Plaintext))
			if want := hex.EncodeToString(sum[:]); k.Hash != want {
				t.Errorf("Generate(%s).Hash = %q; want %q", env, k.Hash, want)
			}
			if want := head + random[:DisplayLen]; k.Prefix != want {
				t.Errorf("Generate(%s).Prefix = %q; want %q", env, k.Prefix, want)
			}
			if want := k.Plaintext[len(k.Plaintext)-4:]; k.Last4 != want {
				t.Errorf("Generate(%s).Last4 = %q; want %q", env, k.Last4, want)
			}
			masked := k.Masked()
			if want := k.Prefix + "…" + k.Last4; masked != want {
				t.Errorf("Masked() = %q; want %q", masked, want)
			}
			// Nothing of the key between the display prefix and the last
			// four shows.
			hidden := k.Plaintext[len(k.Prefix) : len(k.Plaintext)-4]
			if strings.Contains(masked, hidden[:8]) || strings.Contains(masked, hidden[len(hidden)-8:]) {
				t.Errorf("Masked() = %q shows part of the hidden %q", masked, hidden)
			}
		}
	}
}

func TestGenerateUnknownEnv(t *testing.T) {
	for _, env := range []Env{"", "prod", "LIVE"} {
		if k, err := Generate(env); !errors.Is(err, ErrUnknownEnv) {
			t.Errorf("Generate(%q) = %+v, %v; want ErrUnknownEnv", env, k, err)
		}
	}
}

func TestParseMalformed(t *testing.T) {
	good := generate(t, EnvLive).Plaintext
	body := good[len("veil_live_"):]
	tests := []struct {
		name string
		raw  string
	}{
		{"empty", ""},
		{"prefix only", "veil_"},
		{"no body", "veil_live_"},
		{"no env separator", "veil_live" + body},
		{"wrong prefix", "vail_live_" + body},
		{"upper-case prefix", "VEIL_live_" + body},
		{"other vendor", "sk_live_" + body},
		{"unknown env", "veil_prod_" + body},
		{"upper-case env", "veil_LIVE_" + body},
		{"empty env", "veil__" + body},
		{"short", good[:len(good)-1]},
		{"long", good + "0"},
		{"leading space", " " + good},
		{"trailing space", good + " "},
		{"trailing newline", good + "\n"},
		{"inner space", good[:20] + " " + good[21:]},
		{"hyphen", good[:20] + "-" + good[21:]},
		{"underscore in body", good[:20] + "_" + good[21:]},
		{"non-ascii", good[:20] + "é" + good[22:]},
		{"base64 plus", good[:len(good)-1] + "+"},
		{"nul", good[:len(good)-1] + "\x00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if env, err := Parse(tt.raw); !errors.Is(err, ErrMalformedKey) {
				t.Errorf("Parse(%q) = %q, %v; want ErrMalformedKey", tt.raw, env, err)
			}
		})
	}
}

func TestParseBadChecksum(t *testing.T) {
	k := generate(t, EnvLive)
	body := k.Plaintext[len("veil_live_"):]
	flip := func(c byte) string {
		if c == '0' {
			return "1"
		}
		return "0"
	}
	tests := []struct {
		name string
		raw  string
	}{
		{"other env", "veil_test_" + body},
		{"first random char", "veil_live_" + flip(body[0]) + body[1:]},
		{"crc char", "veil_live_" + body[:RandomLen] + flip(body[RandomLen]) + body[RandomLen+1:]},
		{"last char", "veil_live_" + body[:BodyLen-1] + flip(body[BodyLen-1])},
		{"all zeros", "veil_live_" + strings.Repeat("0", BodyLen)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if env, err := Parse(tt.raw); !errors.Is(err, ErrBadChecksum) {
				t.Errorf("Parse(%q) = %q, %v; want ErrBadChecksum", tt.raw, env, err)
			}
		})
	}
}

// TestMistypesRefused is the property the format exists for: every single
// typo in a key is refused by Parse alone.
func TestMistypesRefused(t *testing.T) {
	const n = 300
	refused := func(k, typo, what string) {
		t.Helper()
		if typo == k {
			return // swapping two equal characters is no typo
		}
		if env, err := Parse(typo); err == nil {
			t.Fatalf("Parse(%q) = %q, nil (%s of %q); want an error", typo, env, what, k)
		}
	}
	alpha := alphabet + "_"
	for i := range n {
		env := EnvLive
		if i%2 == 1 {
			env = EnvTest
		}
		k := generate(t, env).Plaintext
		for p := range len(k) {
			// Substitution.
			for c := range len(alpha) {
				if alpha[c] != k[p] {
					refused(k, k[:p]+alpha[c:c+1]+k[p+1:], "substitution")
				}
			}
			// Deletion.
			refused(k, k[:p]+k[p+1:], "deletion")
			// Transposition, adjacent and (within the body) any distance.
			for q := p + 1; q < len(k); q++ {
				if q > p+1 && p < len(k)-BodyLen {
					break
				}
				b := []byte(k)
				b[p], b[q] = b[q], b[p]
				refused(k, string(b), "transposition")
			}
		}
		// Insertion, at every position including both ends.
		for p := range len(k) + 1 {
			for c := range len(alpha) {
				refused(k, k[:p]+alpha[c:c+1]+k[p:], "insertion")
			}
		}
	}
}

// TestRandomBodiesRefused checks the checksum against garbage of the right
// shape: about one in 1e9 should pass, so none of these.
func TestRandomBodiesRefused(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	b := []byte("veil_live_" + strings.Repeat("0", BodyLen))
	for range 200_000 {
		for i := len("veil_live_"); i < len(b); i++ {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		if _, err := Parse(string(b)); !errors.Is(err, ErrBadChecksum) {
			t.Fatalf("Parse(%q) = %v; want ErrBadChecksum", b, err)
		}
	}
}

func TestUnique(t *testing.T) {
	const n = 100_000
	plain := make(map[string]bool, n)
	hashes := make(map[string]bool, n)
	for range n {
		k := generate(t, EnvLive)
		if plain[k.Plaintext] || hashes[k.Hash] {
			t.Fatalf("Generate returned %q twice in %d keys", k.Plaintext, n)
		}
		plain[k.Plaintext], hashes[k.Hash] = true, true
	}
}

// TestEntropy pins the documented widths: 192 random bits, at least the 128
// the issue requires, in the fewest base62 digits that hold them.
func TestEntropy(t *testing.T) {
	if EntropyBits < 128 {
		t.Errorf("EntropyBits = %d; want at least 128", EntropyBits)
	}
	pow := func(n int) *big.Int { return new(big.Int).Exp(big.NewInt(62), big.NewInt(int64(n)), nil) }
	space := new(big.Int).Lsh(big.NewInt(1), EntropyBits)
	if pow(RandomLen).Cmp(space) < 0 || pow(RandomLen-1).Cmp(space) >= 0 {
		t.Errorf("RandomLen = %d; want the least n with 62^n >= 2^%d", RandomLen, EntropyBits)
	}
	if BodyLen != 39 || ChecksumLen != 6 {
		t.Errorf("BodyLen, ChecksumLen = %d, %d; want 39, 6", BodyLen, ChecksumLen)
	}
	if crcMod != 14776336 {
		t.Errorf("crcMod = %d; want 62^4", crcMod)
	}
	if BodyLen*invWB%checkMod != 1 {
		t.Errorf("%d·invWB mod %d = %d; want 1", BodyLen, checkMod, BodyLen*invWB%checkMod)
	}
	if !big.NewInt(checkMod).ProbablyPrime(0) || checkMod <= len(alphabet) || BodyLen >= checkMod {
		t.Errorf("checkMod = %d; want a prime above %d and above BodyLen", checkMod, len(alphabet))
	}
}

func TestCRCString(t *testing.T) {
	for _, s := range []string{"", "a", "veil_live_", "veil_test_" + strings.Repeat("Zz9", 11)} {
		if got, want := crcString(s), crc32.ChecksumIEEE([]byte(s)); got != want {
			t.Errorf("crcString(%q) = %08x; want %08x", s, got, want)
		}
	}
}

// TestCheckCharsAlwaysFound runs checkChars over every target residue.
func TestCheckCharsAlwaysFound(t *testing.T) {
	partial := []byte(strings.Repeat("0", BodyLen-weightLen))
	for v := range len(alphabet) {
		for _, env := range []Env{EnvLive, EnvTest} {
			partial[0] = alphabet[v] // shifts the sum through every residue
			a, b, ok := checkChars(env, partial)
			if !ok || a >= 62 || b >= 62 {
				t.Errorf("checkChars(%s, %q) = %d, %d, %v; want two digits", env, partial, a, b, ok)
			}
		}
	}
}

func TestHash(t *testing.T) {
	tests := []struct{ raw, want string }{
		{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	}
	for _, tt := range tests {
		if got := Hash(tt.raw); got != tt.want {
			t.Errorf("Hash(%q) = %q; want %q", tt.raw, got, tt.want)
		}
	}
	k := generate(t, EnvTest)
	if got := Hash(k.Plaintext); got != k.Hash || got != Hash(k.Plaintext) {
		t.Errorf("Hash(%q) = %q; want stable %q", k.Plaintext, got, k.Hash)
	}
	if _, err := hex.DecodeString(k.Hash); err != nil || len(k.Hash) != 64 || strings.ToLower(k.Hash) != k.Hash {
		t.Errorf("Hash = %q; want 64 lower-case hex characters", k.Hash)
	}
}

func TestMask(t *testing.T) {
	if got, want := Mask("veil_live_abcd", "wxyz"), "veil_live_abcd…wxyz"; got != want {
		t.Errorf("Mask(veil_live_abcd, wxyz) = %q; want %q", got, want)
	}
}

func BenchmarkParse(b *testing.B) {
	k := generate(b, EnvLive).Plaintext
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(k); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGenerate(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Generate(EnvLive); err != nil {
			b.Fatal(err)
		}
	}
}
