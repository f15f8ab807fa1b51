/*
 * keydigest.h - a key's stored form (layout.h): what a slot holds of it, and what the table hashes.
 *
 * A key of up to THR_KEY_INLINE (44) bytes is stored as it is. A longer one (up to THR_KEY_MAX)
 * is stored as its first THR_KEY_PREFIX (28) bytes followed by a THR_KEY_DIGEST (16) byte digest
 * of the whole key: SipHash-2-4 with its 128-bit output, keyed with the arena's secret. The slot
 * keeps the key's real length beside it, so a long key and a 44-byte key equal to its stored form
 * stay apart; two long keys of one length share a slot only if their digests collide, which
 * layout.h argues no one without the secret can arrange. Everything that names a key to the table
 * (lookups, inserts, the daemon's rehash of a slot in reclaim.c, shmctl) goes through the stored
 * form, computed once per call, on the caller's stack.
 *
 * Inline and pure: thread-safe, no syscall. A long key costs one digest per call (34 SipRounds for
 * 100 bytes: about 690 instructions under callgrind); a short key costs nothing here.
 */
#ifndef THR_SHM_KEYDIGEST_H
#define THR_SHM_KEYDIGEST_H

#include <stdint.h>
#include <string.h>

#include "hash.h"
#include "layout.h"

static inline uint64_t shm_kd_rotl(uint64_t x, int b)
{
        return (x << b) | (x >> (64 - b));
}

/* One SipRound over the state V (SipHash's ARX round: add, rotate, xor). */
static inline __attribute__((always_inline)) void shm_kd_round(uint64_t v[4])
{
        v[0] += v[1];
        v[1] = shm_kd_rotl(v[1], 13) ^ v[0];
        v[0] = shm_kd_rotl(v[0], 32);
        v[2] += v[3];
        v[3] = shm_kd_rotl(v[3], 16) ^ v[2];
        v[0] += v[3];
        v[3] = shm_kd_rotl(v[3], 21) ^ v[0];
        v[2] += v[1];
        v[1] = shm_kd_rotl(v[1], 17) ^ v[2];
        v[2] = shm_kd_rotl(v[2], 32);
}

/* Absorb one 64-bit message word M with SipHash-2-4's two compression rounds. */
static inline __attribute__((always_inline)) void shm_kd_absorb(uint64_t v[4], uint64_t m)
{
        v[3] ^= m;
        shm_kd_round(v);
        shm_kd_round(v);
        v[0] ^= m;
}

/*
 * shm_siphash128 - SipHash-2-4 with 128-bit output of LEN bytes at MSG under KEY (k0 = KEY[0],
 * k1 = KEY[1], each the little-endian reading of 8 key bytes), into OUT (16 bytes, the two output
 * words little-endian): the reference algorithm's byte for byte (test_keydigest.c checks the
 * published vectors). Little-endian hosts only, as hash.h.
 */
static inline void shm_siphash128(const uint64_t key[2], const void *msg, size_t len,
                                  uint8_t out[16])
{
        const uint8_t *p = msg;
        uint64_t v[4] = {key[0] ^ 0x736f6d6570736575ull, key[1] ^ 0x646f72616e646f6dull ^ 0xee,
                         key[0] ^ 0x6c7967656e657261ull, key[1] ^ 0x7465646279746573ull};
        size_t whole = len & ~(size_t)7;
        for (size_t i = 0; i < whole; i += 8) {
                uint64_t m;
                memcpy(&m, p + i, 8);
                shm_kd_absorb(v, m);
        }
        uint64_t last = (uint64_t)len << 56;
        for (size_t i = 0; i < (len & 7); i++)
                last |= (uint64_t)p[whole + i] << (8 * i);
        shm_kd_absorb(v, last);
        v[2] ^= 0xee;
        for (int i = 0; i < 4; i++)
                shm_kd_round(v);
        uint64_t w0 = v[0] ^ v[1] ^ v[2] ^ v[3];
        v[1] ^= 0xdd;
        for (int i = 0; i < 4; i++)
                shm_kd_round(v);
        uint64_t w1 = v[0] ^ v[1] ^ v[2] ^ v[3];
        memcpy(out, &w0, 8);
        memcpy(out + 8, &w1, 8);
}

/* Bytes of a key of LEN bytes that its stored form has (and a slot compares): min(LEN, 44). */
static inline uint32_t shm_key_stored_len(uint32_t len)
{
        return len < THR_KEY_INLINE ? len : THR_KEY_INLINE;
}

/* A long key's stored form into OUT: its first THR_KEY_PREFIX bytes, then its digest under the
 * arena's SECRET. LEN: THR_KEY_INLINE < LEN <= THR_KEY_MAX. */
static inline void shm_key_digest(const uint64_t secret[2], const void *key, uint32_t len,
                                  uint8_t out[THR_KEY_INLINE])
{
        memcpy(out, key, THR_KEY_PREFIX);
        shm_siphash128(secret, key, len, out + THR_KEY_PREFIX);
}

/*
 * KEY's stored form: KEY itself when it has at most THR_KEY_INLINE bytes (nothing computed, OUT
 * untouched), else OUT filled by shm_key_digest. What is returned is read for
 * shm_key_stored_len(LEN) bytes. LEN: 1 to THR_KEY_MAX (checked by the caller).
 */
static inline const void *shm_key_store(const uint64_t secret[2], const void *key, uint32_t len,
                                        uint8_t out[THR_KEY_INLINE])
{
        if (__builtin_expect(len <= THR_KEY_INLINE, 1))
                return key;
        shm_key_digest(secret, key, len, out);
        return out;
}

/*
 * The table's hash of a key of real length LEN whose stored form is STORED: SipHash of the stored
 * form (hash.h), so that the daemon recomputes a key's home from its slot alone (reclaim.c).
 */
static inline __attribute__((always_inline)) uint64_t
shm_stored_hash(const uint64_t hk[THR_HASH_KEY_WORDS], const void *stored, uint32_t len)
{
        return shm_hash(hk, stored, shm_key_stored_len(len));
}

/* The table's hash of KEY (LEN bytes, 1 to THR_KEY_MAX) as the caller has it: store, then hash. */
static inline uint64_t shm_key_hash(const uint64_t hk[THR_HASH_KEY_WORDS], const uint64_t dk[2],
                                    const void *key, uint32_t len)
{
        uint8_t buf[THR_KEY_INLINE];
        return shm_stored_hash(hk, shm_key_store(dk, key, len, buf), len);
}

#endif
