/*
 * hash.h - SipHash-1-3 keyed with the arena's secret (inline: it is on the hot path).
 *
 * The key table is open to keys chosen by whoever sends requests (API keys, IP addresses). With
 * an unkeyed hash an attacker could choose keys that all land in one probe run and turn every
 * lookup into a scan; with a per-arena random secret they cannot predict where a key lands.
 * SipHash-1-3 (one compression round, three finalisation rounds) is the variant hash tables use
 * for this; it costs a few nanoseconds for short keys.
 */
#ifndef THR_SHM_HASH_H
#define THR_SHM_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t shm_rotl(uint64_t x, int b)
{
        return (x << b) | (x >> (64 - b));
}

#define SHM_SIPROUND(v0, v1, v2, v3)                                                               \
        do {                                                                                       \
                v0 += v1;                                                                          \
                v1 = shm_rotl(v1, 13);                                                             \
                v1 ^= v0;                                                                          \
                v0 = shm_rotl(v0, 32);                                                             \
                v2 += v3;                                                                          \
                v3 = shm_rotl(v3, 16);                                                             \
                v3 ^= v2;                                                                          \
                v0 += v3;                                                                          \
                v3 = shm_rotl(v3, 21);                                                             \
                v3 ^= v0;                                                                          \
                v2 += v1;                                                                          \
                v1 = shm_rotl(v1, 17);                                                             \
                v1 ^= v2;                                                                          \
                v2 = shm_rotl(v2, 32);                                                             \
        } while (0)

static inline uint64_t shm_hash(const uint64_t secret[2], const void *key, size_t len)
{
        const uint8_t *p = key;
        uint64_t v0 = secret[0] ^ 0x736f6d6570736575ull;
        uint64_t v1 = secret[1] ^ 0x646f72616e646f6dull;
        uint64_t v2 = secret[0] ^ 0x6c7967656e657261ull;
        uint64_t v3 = secret[1] ^ 0x7465646279746573ull;
        size_t whole = len & ~(size_t)7;

        for (size_t i = 0; i < whole; i += 8) {
                uint64_t m;
                memcpy(&m, p + i, 8); /* little-endian host: x86_64, aarch64 */
                v3 ^= m;
                SHM_SIPROUND(v0, v1, v2, v3);
                v0 ^= m;
        }
        uint64_t last = (uint64_t)len << 56;
        for (size_t i = 0; i < (len & 7); i++)
                last |= (uint64_t)p[whole + i] << (8 * i);
        v3 ^= last;
        SHM_SIPROUND(v0, v1, v2, v3);
        v0 ^= last;
        v2 ^= 0xff;
        SHM_SIPROUND(v0, v1, v2, v3);
        SHM_SIPROUND(v0, v1, v2, v3);
        SHM_SIPROUND(v0, v1, v2, v3);
        return v0 ^ v1 ^ v2 ^ v3;
}

#endif
