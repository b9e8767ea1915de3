package subscriptions

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// sealer seals the plaintext of a successor key issued by automatic
// rotation until its consumer reveals it: AES-256-GCM with a random nonce,
// the key id as associated data so a sealed copy cannot be moved to
// another key.
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("key seal: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("key seal: %w", err)
	}
	return &sealer{aead: aead}, nil
}

func (s *sealer) seal(id uuid.UUID, plaintext string) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal key: %w", err)
	}
	return s.aead.Seal(nonce, nonce, []byte(plaintext), id[:]), nil
}

func (s *sealer) open(id uuid.UUID, sealed []byte) (string, error) {
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
