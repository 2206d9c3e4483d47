package events_test

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
)

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func itoa(i int) string { return strconv.Itoa(i) }
