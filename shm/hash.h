/*
 * hash.h - the key table's hash: multilinear hashing keyed with the arena's random hash keys,
 * then a fixed bijective mixer (inline: it is on every call's path).
 *
 * The function. A key of LEN bytes (0..THR_KEY_MAX) is padded injectively: one byte 0x01 after
 * it, then zero bytes up to a multiple of 8, and read as little-endian 64-bit words x_1..x_m
 * (m = LEN / 8 + 1 <= SHM_HASH_WORDS = 14; a vector shorter than 14 words is taken as padded
 * with zero words). With the arena's 128-bit keys k_0..k_14 (hdr.hash_key, from getrandom when
 * the arena is created):
 *
 *     z = (k_0 + k_1 x_1 + ... + k_m x_m) mod 2^128,    hash = fmix(z div 2^64)
 *
 * fmix is a fixed bijection of 64-bit words (xor-shifts and odd multiplications). Each term is
 * one 64x64->128 multiplication and one 64-bit one; an 8- to 15-byte key costs two terms.
 *
 * Why keys chosen without the keys cannot pile onto one probe run. The multilinear part (without
 * fmix) is strongly universal (Dietzfelbinger 1996; Lemire and Kaser 2014): for any two distinct
 * padded vectors x != y, fixed before the keys are drawn, the pair (h(x), h(y)) of top halves is
 * uniform over all 2^128 pairs. Proof: take i with x_i != y_i and write y_i - x_i = 2^s u with u
 * odd, s <= 63. Fix every key but k_0 and k_i. Then k_i (y_i - x_i) mod 2^128 is uniform over the
 * multiples of 2^s (u is invertible mod 2^128), so D = z(y) - z(x) is uniform over a coset of
 * 2^s Z / 2^128 Z, and z(x) is uniform (k_0) and independent of D. h(x) = a fixes z(x) to 2^64
 * values; h(y) = b asks z(x) + D to lie in an interval of 2^64 values, which holds exactly
 * 2^(64-s) members of any coset of spacing 2^s: probability 2^-64 * 2^-64 exactly. The padding
 * is injective (the last 0x01 byte marks where the key ends), so distinct keys of any lengths
 * are distinct vectors: "a" and "a\0" hash independently. A fixed bijection after it keeps that
 * (pairs map to pairs one to one), so the hash is a pairwise independent uniform 64-bit value.
 *
 * What that gives against someone who picks keys without knowing the hash keys (the arena file
 * is readable only by its users): every fixed set of n keys, however it was made, behaves as
 * under a random function as far as pairs go. A key's shard and home (the high 32 bits,
 * table_lookup.h) equal another's with exactly the random-function probability (about
 * 1/slots), so the expected number of keys sharing a home with a given key is (n - 1)/slots
 * for every set: keys crafted to collide under some other function, or under this one with
 * other keys, collide no more than random ones. Pairwise independence also bounds clusters of
 * nearby homes (Chebyshev on each interval of slots): linear probing's expected cost per insert
 * is then O(log n) in the worst case over key sets (Pagh, Pagh and Ruzic 2007), not O(1); the
 * O(1) of a random function needs 5-wise independence, and Patrascu and Thorup (ICALP 2010)
 * show that plain multiply-shift hashing does badly with linear probing on some structured sets
 * (the outputs of an arithmetic progression of keys form an arithmetic progression). That is
 * what fmix is for: it is fixed, so it adds no proven independence, but it turns the
 * arithmetic progression z, z + d, z + 2d, ... of an unknown step into the output of a
 * SplitMix-style generator (a mixer of a counter stepped by an unknown odd increment), which
 * has no structure linear probing notices. tests/test_hash.c floods a real table with keys
 * crafted to share one shard and home under the same function with other keys, and with
 * sequential keys, and checks their probe lengths against random keys'.
 *
 * What it does not cover: an adaptive attacker who learns collisions from the answers. Strong
 * universality says nothing about keys chosen after seeing outputs, and the multilinear part is
 * linear: from one exact collision z(x) div 2^64 = z(y) div 2^64 with x - y = d in one word,
 * the keys x + jd would mostly collide too. But the table never shows a hash: the only signal
 * is lookup time, a probe of a few extra cache lines (nanoseconds) inside a request whose
 * service time varies by microseconds, and a shared home says nothing about z (fmix scrambles
 * which z share high bits). Learning an exact 64-bit collision would need about 2^32 keys
 * resident at once for a birthday match plus a way to see it, far beyond any table's capacity
 * (the limiter's capacity caps resident keys), and the daemon evicts idle keys. SipHash, the
 * hash this replaces, also resisted adaptive attackers (a PRF); this one trades that margin for
 * about a quarter of its instructions on short keys (issue 12). A process that can read the
 * arena knows the keys; such a process can rewrite any state anyway.
 *
 * Why every process computes the same value: the keys live in the arena header, written once by
 * its creator before the magic is published and never changed; every client, the daemon and
 * shmctl read them from their mapping (or copy of the header) of the same arena. The function
 * reads the key bytes in little-endian order (x86_64, aarch64 hosts) and nothing else.
 */
#ifndef THR_SHM_HASH_H
#define THR_SHM_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "layout.h"

#define SHM_HASH_WORDS ((THR_KEY_MAX + 1 + 7) / 8) /* padded key words: 14 */
static_assert(THR_HASH_KEY_WORDS == 2 * (SHM_HASH_WORDS + 1), "hash keys k_0..k_14, 128 bits");

typedef unsigned __int128 shm_u128;

static inline uint64_t shm_load64(const uint8_t *p)
{
        uint64_t v;
        memcpy(&v, p, 8); /* little-endian host */
        return v;
}

static inline uint64_t shm_load32(const uint8_t *p)
{
        uint32_t v;
        memcpy(&v, p, 4);
        return v;
}

/* The last word of the padded key: its final LEN % 8 bytes, then the 0x01 byte. Reads only
 * inside the key: a key of 8 bytes or more loads its last 8 and shifts, a shorter one uses two
 * overlapping loads. */
static inline uint64_t shm_hash_tail(const uint8_t *p, size_t len)
{
        size_t r = len & 7;
        const uint8_t *t = p + (len - r);
        uint64_t w;
        if (r == 0)
                w = 0;
        else if (len >= 8)
                w = shm_load64(t + r - 8) >> (64 - 8 * r);
        else if (r >= 4)
                w = shm_load32(t) | shm_load32(t + r - 4) << (8 * (r - 4));
        else
                w = (uint64_t)t[0] | (uint64_t)t[r / 2] << (8 * (r / 2)) |
                    (uint64_t)t[r - 1] << (8 * (r - 1));
        return w | 1ull << (8 * r);
}

/* k * x mod 2^128 for the 128-bit key k = k[1]:k[0] */
static inline shm_u128 shm_hash_term(const uint64_t k[2], uint64_t x)
{
        return (shm_u128)k[0] * x + ((shm_u128)(k[1] * x) << 64);
}

/* A fixed bijection of 64-bit words: each step (xor with a right shift, multiplication by an
 * odd constant) is invertible. */
static inline uint64_t shm_hash_mix(uint64_t z)
{
        z ^= z >> 33;
        z *= 0xff51afd7ed558ccdull;
        z ^= z >> 33;
        z *= 0xc4ceb9fe1a85ec53ull;
        z ^= z >> 33;
        return z;
}

/*
 * shm_hash - the 64-bit hash of KEY (LEN bytes) under the arena's hash keys K (hdr.hash_key);
 * the high 32 bits choose shard and home, the low 32 bits are the tag (table_lookup.h). Pure,
 * thread-safe. A key longer than THR_KEY_MAX (never stored) hashes as its first THR_KEY_MAX bytes.
 */
static inline __attribute__((always_inline)) uint64_t shm_hash(const uint64_t k[THR_HASH_KEY_WORDS],
                                                               const void *key, size_t len)
{
        const uint8_t *p = key;
        if (len > THR_KEY_MAX)
                len = THR_KEY_MAX;
        shm_u128 z = (shm_u128)k[1] << 64 | k[0];
        size_t whole = len / 8;
        for (size_t i = 0; i < whole; i++)
                z += shm_hash_term(k + 2 + 2 * i, shm_load64(p + 8 * i));
        z += shm_hash_term(k + 2 + 2 * whole, shm_hash_tail(p, len));
        return shm_hash_mix((uint64_t)(z >> 64));
}

#endif
