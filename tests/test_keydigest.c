/*
 * test_keydigest.c - a key's stored form (shm/keydigest.h, layout.h): SipHash-2-4-128 gives the
 * published test vectors of the reference implementation; keys up to 44 bytes are stored as they
 * are and longer ones as their first 28 bytes and a digest that depends on every byte and on the
 * arena's secret; the inline key compare agrees with memcmp for every length and every differing
 * byte and reads nothing past either side's bytes; a slot is one 64-byte cache line.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shm.h"

/*
 * SipHash-2-4 with 128-bit output, key 00 01 .. 0f, message 00 01 .. (i - 1) for i = 0 .. 63:
 * vectors_sip128 of the reference implementation's vectors.h (github.com/veorq/SipHash, commit
 * 1a7d041abc95055170c996d9af80887d4046aa5a), as hex.
 */
static const char *const sip128[64] = {
    "a3817f04ba25a8e66df67214c7550293", "da87c1d86b99af44347659119b22fc45",
    "8177228da4a45dc7fca38bdef60affe4", "9c70b60c5267a94e5f33b6b02985ed51",
    "f88164c12d9c8faf7d0f6e7c7bcd5579", "1368875980776f8854527a07690e9627",
    "14eeca338b208613485ea0308fd7a15e", "a1f1ebbed8dbc153c0b84aa61ff08239",
    "3b62a9ba6258f5610f83e264f31497b4", "264499060ad9baabc47f8b02bb6d71ed",
    "00110dc378146956c95447d3f3d0fbba", "0151c568386b6677a2b4dc6f81e5dc18",
    "d626b266905ef35882634df68532c125", "9869e247e9c08b10d029934fc4b952f7",
    "31fcefac66d7de9c7ec7485fe4494902", "5493e99933b0a8117e08ec0f97cfc3d9",
    "6ee2a4ca67b054bbfd3315bf85230577", "473d06e8738db89854c066c47ae47740",
    "a426e5e423bf4885294da481feaef723", "78017731cf65fab074d5208952512eb1",
    "9e25fc833f2290733e9344a5e83839eb", "568e495abe525a218a2214cd3e071d12",
    "4a29b54552d16b9a469c10528eff0aae", "c9d184ddd5a9f5e0cf8ce29a9abf691c",
    "2db479ae78bd50d8882a8a178a6132ad", "8ece5f042d5e447b5051b9eacb8d8f6f",
    "9c0b53b4b3c307e87eaee08678141f66", "abf248af69a6eae4bfd3eb2f129eeb94",
    "0664da1668574b88b935f3027358aef4", "aa4b9dc4bf337de90cd4fd3c467c6ab7",
    "ea5c7f471faf6bde2b1ad7d4686d2287", "2939b0183223fafc1723de4f52c43d35",
    "7c3956ca5eeafc3e363e9d556546eb68", "77c6077146f01c32b6b69d5f4ea9ffcf",
    "37a6986cb8847edf0925f0f1309b54de", "a705f0e69da9a8f907241a2e923c8cc8",
    "3dc47d1f29c448461e9e76ed904f6711", "0d62bf01e6fc0e1a0d3c4751c5d3692b",
    "8c03468bca7c669ee4fd5e084bbee7b5", "528a5bb93baf2c9c4473cce5d0d22bd9",
    "df6a301e95c95dad97ae0cc8c6913bd8", "801189902c857f39e73591285e70b6db",
    "e617346ac9c231bb3650ae34ccca0c5b", "27d93437efb721aa401821dcec5adf89",
    "89237d9ded9c5e78d8b1c9b166cc7342", "4a6d8091bf5e7d651189fa94a250b14c",
    "0e33f96055e7ae893ffc0e3dcf492902", "e61c432b720b19d18ec8d84bdc63151b",
    "f7e5aef549f782cf379055a608269b16", "438d030fd0b7a54fa837f2ad201a6403",
    "a590d3ee4fbf04e3247e0d27f286423f", "5fe2c1a172fe93c4b15cd37caef9f538",
    "2c97325cbd06b36eb2133dd08b3a017c", "92c814227a6bca949ff0659f002ad39e",
    "dce850110bd8328cfbd50841d6911d87", "67f14984c7da791248e32bb5922583da",
    "1938f2cf72d54ee97e94166fa91d2a36", "74481e9646ed49fe0f6224301604698e",
    "57fca5de98a9d6d8006438d0583d8a1d", "9fecde1cefdc1cbed4763674d9575359",
    "e3040c00eb28f15366ca73cbd872e740", "7697009a6a831dfecca91c5993670f7a",
    "5853542321f567a005d547a4f04759bd", "5150d1772f50834a503e069a973fbd7c",
};

static void hex(const uint8_t *b, size_t n, char *out)
{
        for (size_t i = 0; i < n; i++)
                sprintf(out + 2 * i, "%02x", b[i]);
}

static const uint64_t ref_key[2] = {0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull};

/* table hash keys for the tests of what is hashed (any values: hash.h has the hash's own tests) */
static const uint64_t ref_hk[THR_HASH_KEY_WORDS] = {0x0706050403020100ull,
                                                    0x0f0e0d0c0b0a0908ull,
                                                    0x9e3779b97f4a7c15ull,
                                                    0xbf58476d1ce4e5b9ull,
                                                    0x94d049bb133111ebull,
                                                    0x2545f4914f6cdd1dull,
                                                    3,
                                                    5,
                                                    7,
                                                    11,
                                                    13,
                                                    17,
                                                    19,
                                                    23,
                                                    29,
                                                    31,
                                                    37,
                                                    41,
                                                    43,
                                                    47,
                                                    53,
                                                    59,
                                                    61,
                                                    67,
                                                    71,
                                                    73,
                                                    79,
                                                    83,
                                                    89,
                                                    97};

Test(keydigest, siphash128_gives_the_reference_vectors)
{
        uint8_t msg[64], out[16];
        char got[33];
        for (int i = 0; i < 64; i++)
                msg[i] = (uint8_t)i;
        for (size_t len = 0; len < 64; len++) {
                shm_siphash128(ref_key, msg, len, out);
                hex(out, 16, got);
                cr_assert_str_eq(got, sip128[len], "length %zu", len);
        }
}

Test(keydigest, short_keys_are_stored_as_they_are)
{
        uint8_t buf[THR_KEY_INLINE], key[THR_KEY_INLINE];
        memset(buf, 0xa5, sizeof(buf));
        memset(key, 'k', sizeof(key));
        for (uint32_t len = 1; len <= THR_KEY_INLINE; len++) {
                cr_assert_eq(shm_key_store(ref_key, key, len, buf), (const void *)key);
                cr_assert_eq(shm_key_stored_len(len), len);
                cr_assert_eq(shm_key_hash(ref_hk, ref_key, key, len), shm_hash(ref_hk, key, len),
                             "a short key's table hash is its own");
        }
        for (size_t i = 0; i < sizeof(buf); i++)
                cr_assert_eq(buf[i], 0xa5, "OUT untouched");
}

Test(keydigest, long_keys_are_a_prefix_and_a_digest_of_everything)
{
        uint8_t key[THR_KEY_MAX], a[THR_KEY_INLINE], b[THR_KEY_INLINE], d[16];
        memset(key, 'x', sizeof(key));
        const uint64_t other[2] = {ref_key[0] ^ 1, ref_key[1]};
        for (uint32_t len = THR_KEY_INLINE + 1; len <= THR_KEY_MAX; len++) {
                cr_assert_eq(shm_key_store(ref_key, key, len, a), (const void *)a);
                cr_assert_eq(shm_key_stored_len(len), THR_KEY_INLINE);
                cr_assert_eq(memcmp(a, key, THR_KEY_PREFIX), 0, "the first 28 bytes");
                shm_siphash128(ref_key, key, len, d);
                cr_assert_eq(memcmp(a + THR_KEY_PREFIX, d, 16), 0, "then the digest of it all");
                cr_assert_eq(shm_key_hash(ref_hk, ref_key, key, len),
                             shm_hash(ref_hk, a, THR_KEY_INLINE),
                             "the table hashes the stored form");
                shm_key_store(other, key, len, b);
                cr_assert_neq(memcmp(a, b, THR_KEY_INLINE), 0, "another secret, another digest");
                for (uint32_t at = 0; at < len; at++) { /* every byte counts, the last ones too */
                        key[at] ^= 1;
                        shm_key_store(ref_key, key, len, b);
                        key[at] ^= 1;
                        cr_assert_neq(memcmp(a, b, THR_KEY_INLINE), 0, "len %u byte %u", len, at);
                }
        }
}

/* N bytes at the very end of a page followed by an inaccessible one: a read past them faults. */
static uint8_t *edge(uint8_t *pages, long pg, uint32_t n)
{
        return pages + pg - n;
}

Test(keydigest, the_inline_compare_is_memcmp_and_reads_nothing_past_its_bytes)
{
        long pg = sysconf(_SC_PAGESIZE);
        uint8_t *pa =
            mmap(NULL, 2 * (size_t)pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        uint8_t *pb =
            mmap(NULL, 2 * (size_t)pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        cr_assert(pa != MAP_FAILED && pb != MAP_FAILED);
        cr_assert_eq(mprotect(pa + pg, (size_t)pg, PROT_NONE), 0);
        cr_assert_eq(mprotect(pb + pg, (size_t)pg, PROT_NONE), 0);
        for (uint32_t n = 1; n <= THR_KEY_INLINE; n++) {
                uint8_t *a = edge(pa, pg, n), *b = edge(pb, pg, n);
                for (uint32_t i = 0; i < n; i++)
                        a[i] = b[i] = (uint8_t)(i * 7 + n);
                cr_assert(shm_key_equal(a, b, n), "equal, n %u", n);
                for (uint32_t at = 0; at < n; at++) {
                        for (int bit = 0; bit < 8; bit++) {
                                b[at] ^= (uint8_t)(1u << bit);
                                cr_assert(!shm_key_equal(a, b, n), "n %u byte %u bit %d", n, at,
                                          bit);
                                b[at] ^= (uint8_t)(1u << bit);
                        }
                }
        }
        munmap(pa, 2 * (size_t)pg);
        munmap(pb, 2 * (size_t)pg);
}

Test(keydigest, a_slot_is_one_cache_line)
{
        cr_assert_eq(sizeof(struct thr_slot), 64);
        cr_assert_eq(THR_SLOT_SIZE, 64);
        cr_assert_eq(offsetof(struct thr_slot, meta), 0);
        cr_assert_eq(offsetof(struct thr_slot, state), 8);
        cr_assert_eq(offsetof(struct thr_slot, key_len), 16);
        cr_assert_eq(offsetof(struct thr_slot, reach), 17);
        cr_assert_eq(offsetof(struct thr_slot, key), 20);
        cr_assert_eq(sizeof(((struct thr_slot *)0)->key), THR_KEY_INLINE);
        cr_assert_eq(THR_KEY_INLINE, 44);
        cr_assert_eq(THR_KEY_PREFIX + THR_KEY_DIGEST, THR_KEY_INLINE);
        cr_assert_eq(THR_KEY_MAX, 104);
        cr_assert_eq(THR_LAYOUT_MAJOR, 13); /* 13: breakers (layout.h) */
}
