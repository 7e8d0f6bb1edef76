package ratelimit

import "strings"

// hashTag returns the part of key that Redis Cluster hashes: the text
// between the first '{' and the next '}' when it is not empty, else the
// whole key.
func hashTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// slotOf returns key's Redis Cluster slot: CRC16 (XMODEM) of its hash tag,
// modulo 16384.
func slotOf(key string) uint16 { return crc16([]byte(hashTag(key)), 0) & 16383 }
