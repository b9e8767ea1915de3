// Package apikey is the format of the API keys consumers call the gateway
// with: generation, a checksum that refuses mistyped keys without a lookup,
// hashing and display masking. The gateway and the control plane both import
// it; the state machine and the lifecycle of keys live in control-plane/keys.
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
	"strings"
)

// A key reads veil_<env>_<body>, for example
//
//	veil_live_09sEnlPup2LeQpdf3yobIZ8xli1pT9yZUaSwH04
//
// which splits, spaces added, as
//
//	veil_live_ 09sEnlPup2LeQpdf3yobIZ8xli1pT9yZU aSwH 04
//	prefix+env random                            crc  w
//
// The body is BodyLen (39) base62 characters:
//
//   - random (33 characters): 24 bytes from crypto/rand, read as one
//     big-endian 192-bit number and written in base62, most significant digit
//     first, zero-padded to 33 digits. 33 is the least width that holds 2^192
//     (62^32 < 2^192 < 62^33), so the first digit is always 0, 1 or 2. The key
//     carries 192 bits of entropy, well above the 128 the issue asks for;
//     the stored display prefix and last four reveal at most 8 characters
//     (under 48 bits), which still leaves more than 144 bits unknown.
//   - crc (4 characters): CRC-32 (IEEE) of "veil_<env>_<random>", reduced
//     modulo 62^4 — about 24 bits against random garbage.
//   - w (2 characters): a weighted check chosen so that
//     envCode(env) + Σ (i+1)·value(body[i]) ≡ 0 (mod 67) over all 39 body
//     characters, the check characters included.
//
// Why not CRC-32 alone, written as 6 base62 digits: CRC-32 over the bytes of
// the random part does catch every substituted character and every adjacent
// swap there (each is a burst shorter than 32 bits), but it cannot promise
// anything about a swap that straddles the random part and the checksum, or
// a swap inside the checksum that happens to spell another valid value. The
// weighted sum covers every body position uniformly: 67 is a prime above 62,
// so two different characters differ modulo 67 and every weight 1..39 is
// invertible. A substitution of value d changes the sum by w·d ≢ 0, and a
// swap of two characters d positions apart changes it by d·(a−b) ≢ 0, so
// every substitution and every transposition in the body (not just adjacent
// ones) is refused. envCode makes a key issued for one env fail the check
// under the other. Dropped and added characters change the fixed length. The
// CRC adds detection of multi-character garbage; together a random string of
// the right shape passes with probability about 1/(62^4·67) ≈ 1e-9.
const (
	// Prefix starts every key.
	Prefix = "veil_"
	// RandomLen is the width of the random part of the body.
	RandomLen = 33
	// ChecksumLen is the width of the checksum after the random part.
	ChecksumLen = crcLen + weightLen
	// BodyLen is the width of the body after "veil_<env>_".
	BodyLen = RandomLen + ChecksumLen
	// EntropyBits is how much randomness a key carries.
	EntropyBits = randomBytes * 8
	// DisplayLen is how many characters of the random part the display
	// prefix shows.
	DisplayLen = 4

	randomBytes = 24
	crcLen      = 4
	weightLen   = 2
	crcMod      = 62 * 62 * 62 * 62 // 62^crcLen
	checkMod    = 67                // smallest prime above the alphabet size
)

// alphabet is base62 in the digit order math/big uses, so a key's random
// part reads the same as big.Int.Text(62).
const alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

// Errors returned by Parse and Generate.
var (
	// ErrMalformedKey means the key does not have the shape of a Veil key:
	// wrong prefix, unknown env, wrong length or a character outside base62.
	ErrMalformedKey = errors.New("malformed api key")
	// ErrBadChecksum means the key has the right shape but its checksum does
	// not match: almost always a typo.
	ErrBadChecksum = errors.New("api key checksum mismatch")
	// ErrUnknownEnv means Generate was asked for an env other than live or test.
	ErrUnknownEnv = errors.New("unknown key env")
)

// errParseChecksum is built once: a gateway fed garbage keys refuses most
// of them here, and should not allocate to do so.
var errParseChecksum = fmt.Errorf("parse key: %w", ErrBadChecksum)

// Env separates keys for production traffic from keys for testing; it is
// part of the key so both people and the gateway can tell them apart.
type Env string

// The key envs.
const (
	EnvLive Env = "live"
	EnvTest Env = "test"
)

// Valid reports whether e is a known env.
func (e Env) Valid() bool { return e == EnvLive || e == EnvTest }

// envCode seeds the weighted check; the values only need to differ modulo
// checkMod.
func envCode(e Env) int {
	if e == EnvTest {
		return 2
	}
	return 1
}

// Key is a freshly generated API key.
type Key struct {
	// Plaintext is the key itself. Show it to the consumer once; never store
	// or log it.
	Plaintext string
	// Hash is the hex SHA-256 of Plaintext, the only form that is stored.
	Hash string
	// Prefix is "veil_<env>_" plus the first DisplayLen characters of the
	// random part, kept for display.
	Prefix string
	// Last4 is the last four characters of Plaintext, kept for display.
	Last4 string
}

// Masked returns the key as it may be shown after creation,
// e.g. veil_live_abcd…wxyz.
func (k Key) Masked() string { return Mask(k.Prefix, k.Last4) }

// Mask joins a stored display prefix and last four characters into the
// masked form of a key.
func Mask(prefix, last4 string) string { return prefix + "…" + last4 }

// Hash returns the hex SHA-256 of a raw key: what the database and the
// gateway's records are keyed by (internal/enforcement names key records
// by it).
func Hash(raw string) string {
	sum := sha256.Sum256([]byte(raw))
	return hex.EncodeToString(sum[:])
}

// Generate returns a new key for env with 192 bits from crypto/rand.
func Generate(env Env) (Key, error) {
	if !env.Valid() {
		return Key{}, fmt.Errorf("generate key: %w: %q", ErrUnknownEnv, env)
	}
	var random [randomBytes]byte
	if _, err := rand.Read(random[:]); err != nil {
		return Key{}, fmt.Errorf("generate key: %w", err)
	}
	head := len(Prefix) + len(env) + 1
	buf := make([]byte, head+BodyLen)
	copy(buf, Prefix+string(env)+"_")
	body := buf[head:]
	putBase62(body[:RandomLen], random)
	putCRC(body[RandomLen:RandomLen+crcLen], crcString(string(buf[:head+RandomLen])))
	a, b, ok := checkChars(env, body[:BodyLen-weightLen])
	if !ok {
		// Unreachable while checkMod is a prime between 62 and 124; see
		// checkChars.
		return Key{}, fmt.Errorf("generate key: no check characters for %q", buf[:BodyLen-weightLen])
	}
	body[BodyLen-2], body[BodyLen-1] = alphabet[a], alphabet[b]

	plain := string(buf)
	return Key{
		Plaintext: plain,
		Hash:      Hash(plain),
		Prefix:    plain[:head+DisplayLen],
		Last4:     plain[len(plain)-4:],
	}, nil
}

// Parse checks that raw is a well-formed key with a valid checksum and
// returns its env. It does no lookup: a key that parses may still be
// unknown, revoked or expired. Nothing is trimmed; surrounding whitespace
// makes the key malformed.
func Parse(raw string) (Env, error) {
	rest, ok := strings.CutPrefix(raw, Prefix)
	if !ok {
		return "", fmt.Errorf("parse key: %w: missing %q prefix", ErrMalformedKey, Prefix)
	}
	envPart, body, ok := strings.Cut(rest, "_")
	if !ok {
		return "", fmt.Errorf("parse key: %w: missing env", ErrMalformedKey)
	}
	env := Env(envPart)
	if !env.Valid() {
		return "", fmt.Errorf("parse key: %w: unknown env", ErrMalformedKey)
	}
	if len(body) != BodyLen {
		return "", fmt.Errorf("parse key: %w: body is %d characters, want %d", ErrMalformedKey, len(body), BodyLen)
	}
	head := len(raw) - BodyLen
	sum := envCode(env)
	for i := 0; i < BodyLen; i++ {
		v := digit(body[i])
		if v < 0 {
			return "", fmt.Errorf("parse key: %w: character %d is not base62", ErrMalformedKey, head+i)
		}
		sum += (i + 1) * v
	}
	if sum%checkMod != 0 {
		return "", errParseChecksum
	}
	var want [crcLen]byte
	putCRC(want[:], crcString(raw[:head+RandomLen]))
	if string(want[:]) != body[RandomLen:RandomLen+crcLen] {
		return "", errParseChecksum
	}
	return env, nil
}

// putBase62 writes the 192-bit big-endian number in b into dst as
// len(dst) base62 digits, most significant first, zero-padded.
func putBase62(dst []byte, b [randomBytes]byte) {
	var n [3]uint64 // most significant limb first
	for i := range n {
		for _, x := range b[i*8 : i*8+8] {
			n[i] = n[i]<<8 | uint64(x)
		}
	}
	for i := len(dst) - 1; i >= 0; i-- {
		var rem uint64
		for j := range n {
			n[j], rem = bits.Div64(rem, n[j], 62)
		}
		dst[i] = alphabet[rem]
	}
}

// crcString is crc32.ChecksumIEEE of s, computed a byte at a time from the
// package's table: handing s to crc32 would copy it to the heap on every
// Parse, which costs more than the table walk over a few dozen bytes.
func crcString(s string) uint32 {
	crc := ^uint32(0)
	for i := 0; i < len(s); i++ {
		crc = crc32.IEEETable[byte(crc)^s[i]] ^ crc>>8
	}
	return ^crc
}

// putCRC writes crc modulo 62^crcLen into dst as crcLen base62 digits.
func putCRC(dst []byte, crc uint32) {
	c := crc % crcMod
	for i := crcLen - 1; i >= 0; i-- {
		dst[i] = alphabet[c%62]
		c /= 62
	}
}

// checkChars returns the values of the two weighted check characters that
// bring envCode(env) + Σ (i+1)·value(body[i]) to zero modulo checkMod, given
// the first BodyLen-2 body characters in partial. Each first value a fixes
// the second; a few a give a second value of 62 or more, which is no
// character, and the smallest a that works is taken. The 62 values of a give
// 62 different second values modulo 67, of which at most 5 fall in 62..66,
// so ok is always true.
func checkChars(env Env, partial []byte) (a, b int, ok bool) {
	sum := envCode(env)
	for i, c := range partial {
		sum += (i + 1) * digit(c)
	}
	const wa = BodyLen - 1 // weight of the first check position; the second is BodyLen
	for a = 0; a < 62; a++ {
		t := (checkMod - (sum+wa*a)%checkMod) % checkMod
		b = t * invWB % checkMod
		if b < 62 {
			return a, b, true
		}
	}
	return 0, 0, false
}

// invWB is the inverse of the last body position's weight, BodyLen = 39,
// modulo checkMod: 39·55 = 2145 = 32·67 + 1.
const invWB = 55

// digit returns the base62 value of c, or -1 if c is not in the alphabet.
func digit(c byte) int { return int(digits[c]) }

// digits maps every byte to its base62 value, or -1.
var digits = func() (d [256]int8) {
	for i := range d {
		d[i] = -1
	}
	for i := range len(alphabet) {
		d[alphabet[i]] = int8(i)
	}
	return d
}()
