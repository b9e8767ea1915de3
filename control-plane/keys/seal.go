package keys

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// Sealer seals the plaintext of a successor key issued by automatic
// rotation until its consumer reveals it: AES-256-GCM with a random nonce,
// the key id as associated data so a sealed copy cannot be moved to
// another key.
type Sealer struct{ aead cipher.AEAD }

// NewSealer returns a Sealer under key, 32 bytes (AES-256).
func NewSealer(key []byte) (*Sealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("key seal: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("key seal: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// Seal seals the plaintext of key id.
func (s *Sealer) Seal(id uuid.UUID, plaintext string) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal key: %w", err)
	}
	return s.aead.Seal(nonce, nonce, []byte(plaintext), id[:]), nil
}

// Open returns the plaintext Seal sealed for key id.
func (s *Sealer) Open(id uuid.UUID, sealed []byte) (string, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return "", errors.New("sealed key too short")
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], id[:])
	if err != nil {
		return "", fmt.Errorf("unseal key: %w", err)
	}
	return string(plain), nil
}
