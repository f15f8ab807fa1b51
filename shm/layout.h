/*
 * layout.h - the byte layout of a throttle arena, shared by every process that maps it.
 *
 * The arena is one file (hugetlbfs, else /dev/shm) mapped MAP_SHARED at a different address in
 * every process, so it holds offsets from its own start, never pointers. All fields are
 * fixed-width and naturally aligned; every atomic is a lock-free 64- or 32-bit word (asserted
 * below); there are no 16-byte atomics (a cmpxchg16b load faults on shmctl's read-only mapping).
 *
 *   offset 0                                                                    hdr.arena_size
 *   +---------+-------------+----------------+------------------+-------------------------------+
 *   | header  | limiter dir | reader records | limiter counters | heap: param records, tables, |
 *   | 4096 B  | L * 128 B   | R * 640 B      | R rows of L*32 B | spare; the daemon's bump heap |
 *   +---------+-------------+----------------+------------------+-------------------------------+
 *   (L = dir_count, R = reader_count; a counter row is rounded up to whole cache lines)
 *
 * Header (struct thr_hdr, 4096 bytes): magic, layout major/minor, sizes, the clock description,
 * daemon identity and heartbeat, section offsets, the clock facts, the per-arena hash keys, then
 * headroom: a minor version may only add fields in the headroom, never move one.
 *
 * Limiter directory (struct thr_dir_entry[dir_count]): one 128-byte entry per limiter. `state`
 * says whether the entry is in use; `params_off` points at the limiter's current parameter record
 * (struct thr_params). Parameter records are immutable once published: a reload writes a new
 * record and swaps `params_off` with one release store, so a client reads either the old record or
 * the new one, never half of each. `table_off` points at the limiter's key table.
 *
 * Key table (struct thr_table, then shards, then slots, then per-slot storage for kinds that need
 * more than a word, e.g. a window's log; aux_stride 0 for GCRA):
 *
 *   thr_table | thr_shard[nshards] | slot[0] ... slot[nslots - 1] | aux[0] ... aux[nslots - 1]
 *
 *   A key hashes (a multilinear hash keyed with the arena's random hash keys, hash.h) to a shard
 *   and to a home slot inside that shard; lookup probes linearly (wrapping inside the shard)
 *   until it finds the key, an EMPTY slot, or the end of its home slot's reach (the farthest any
 *   live key of that home lies). Each slot is 64 bytes, one cache line, 64-byte aligned: so a
 * lookup touches one line per slot probed, and a live key costs 64 B * 1.5 = 96 B of table at the
 * design load (2/3).
 *
 *   struct thr_slot (64 bytes):
 *     0  meta      status | generation | hash tag (below)
 *     8  state     the kind's state word (below)
 *    16  key_len   the key's real length, 1 to THR_KEY_MAX (104)
 *    17  reach     the farthest a live key of this home lies (table.c)
 *    18  pad[2]
 *    20  key[44]   the key's stored form, its first min(key_len, 44) bytes meaningful
 *
 *   Stored form (keydigest.h). A key of LEN <= 44 bytes is stored as it is. A longer key is stored
 *   as its first THR_KEY_PREFIX (28) bytes followed by a 16-byte digest of the whole key:
 *   SipHash-2-4-128 keyed with the arena's digest_key (its secret). The table hash is of the stored
 * form (min(LEN, 44) bytes), so the daemon recomputes a key's home from its slot alone (reclaim.c),
 *   and a slot matches a key when key_len equals LEN and the stored forms are equal. Keys up to 44
 *   bytes are therefore compared whole, exactly as before. A long key and a short one never meet
 *   (their lengths differ), nor do two long keys of different lengths. Two different long keys of
 *   one length share state only if their first 28 bytes and their 128-bit digests both agree.
 *   For keys the secret's holder did not see, the digest is a 128-bit pseudo-random function
 *   (SipHash's design claim, unbroken since 2012): among n distinct long keys the chance of any
 *   collision is at most n^2 / 2^129 (n = 2^32 keys ever: 2^-65). Choosing a collision needs the
 *   secret: it is drawn from getrandom() when the arena is created and never leaves the arena
 *   file, whose mode and group already decide who may map it (and such processes are trusted with
 *   the limits anyway: they can write any state word). Without it, an attacker who can only send
 *   keys can only test for a collision by trial: a request tells at most whether its key shares
 *   state with one of the keys live in the table (at most capacity, <= 2^30), so finding a pair
 *   with chance p takes about p * 2^128 / 2^30 = p * 2^98 requests. (SipHash promises nothing to
 *   someone who knows its key; that is why the argument rests on the secret, as the table's
 *   defence against hash flooding already does.) The cost: one digest per call for a long key.
 *
 *   Slot lifecycle (meta word bits 63..62, and the state word):
 *     EMPTY  -> BUSY    an inserter holding the shard's insert lock claims it (key not yet valid)
 *     BUSY   -> LIVE    release store after key, length and state are written: readers that
 *                       acquire-load LIVE see the whole key
 *     LIVE   -> DEAD    eviction, under the shard's insert lock (the daemon for idle keys, an
 *                       inserter for on_full = evict): first a CAS of the state word from the TAT
 *                       observed to THR_TAT_DEAD (a concurrent admission makes it fail), then meta
 *                       LIVE -> DEAD carrying, in place of the hash tag, the low 32 bits of the
 *                       grace period it must wait for. Lookups skip DEAD slots and keep probing;
 *                       a CAS from a TAT fails on DEAD.
 *     DEAD   -> (state THR_TAT_FREE)  the daemon under the shard lock, once that grace period is
 *                       done (the 32-bit tag is widened against the 64-bit counter, never compared
 *                       modulo 2^32: reclaim.c); no reader can hold the slot any more
 *     DEAD/FREE -> BUSY reuse by an inserter under the lock, generation + 1 (also a DEAD slot
 *                       whose tag the header's gp_done covers: the inserter makes it FREE first)
 *     DEAD/FREE -> EMPTY the daemon, under the lock, where no live key's probe path crosses it
 *     BUSY   -> DEAD/FREE repair by whoever takes the lock over from a dead holder (never LIVE:
 *                       no reader can hold it)
 *   Bits 61..32 of meta carry a 30-bit generation bumped at every reuse; bits 31..0 the low half
 *   of the key's hash (a tag compared before the key bytes), or a DEAD slot's grace period.
 *
 *   All slot creation and every change of a shard's live count happen under that shard's insert
 *   lock (a CAS word, shm/shardlock.c; the lookup path never takes it). So "at most one live slot
 *   per key" holds: an inserter re-probes under the lock before claiming, and nobody else can
 *   create the key meanwhile. A holder that dies is detected through its reader record's liveness
 *   (or the daemon lock); the next locker takes the lock over and repairs the shard. Waiting for a
 *   live holder is bounded (THR_LOCK_WAIT_NS): a stopped holder costs waiters the on_full outcome,
 *   never an unbounded wait.
 *
 *   State word: the table reserves its two top values, THR_TAT_DEAD (evicted, retiring) and
 *   THR_TAT_FREE (reclaimed); below them it is the kind's.
 *   GCRA: the key's theoretical arrival time (TAT) as an unsigned count of units of 1/K ns since
 *   the arena epoch, K being the limiter's time scale (params.k), chosen so that the emission
 *   interval T is a whole number of units: T = P/N ns exactly, no drift ever. K <= 29 keeps 2^64
 *   units above 20 years. THR_TAT_FRESH is reserved too: inserted by a tool and never charged,
 *   the first request starts it at now + (B - initial) * T (clients insert with that start
 *   already computed).
 *   Budget: the key's balance, THR_BUDGET_WAITERS set while spenders wait (budget.h).
 *   Breaker: state | time | generation | consecutive failures | successes | probes in flight,
 *   top two bits never 11 (breaker.h), with 8 window bucket words in the aux storage.
 *   Window: the number of units ever admitted for the key (U), with its log in the slot's aux
 *   storage: a 64-byte header, then a ring of N + THR_WINDOW_SLACK words, unit u's admission time
 *   (ns + 1, 0 for none) in word u mod (N + THR_WINDOW_SLACK) (window.h has the protocol).
 *
 * pidns_ino: every process of an arena shares one pid namespace. Reader records carry their
 * owner's pid, and a record whose liveness lock is still held (by a descriptor a child made with
 * _Fork inherited) is judged by that pid: it must mean the same process to the daemon and to every
 * client. Clients check this at open and again at their first registration in a new process.
 *
 * Limiter counters (struct thr_lcount, lcount_off): a row per reader record, lcount_stride bytes
 * (dir_count blocks of 32 bytes, rounded up to a multiple of 64: each row on cache lines of its
 * own), block I of row J counting what the thread owning reader record J decided on limiter
 * (directory entry) I. Only the owner of record J writes row J, with a plain load and store (the
 * same idiom as the record's own counters): a decision adds no shared write. Whoever sums them
 * (the daemon's /metrics) reads every row. A row belongs to the record, not to its owner: it is
 * never zeroed, so what a thread counted stays counted after it dies and its record is reused
 * (the totals never go down, as a Prometheus counter must not), across daemon restarts too. A
 * directory entry is never given to another limiter (a removed one is RETIRED and comes back
 * under its own name only), so a block always counts one limiter.
 *
 * Reader records (struct thr_reader[reader_count], THR_READER_SIZE bytes each): one per client
 * thread per arena, claimed by CAS on `owner` (0 = free). Only the owning thread writes the
 * counters (from 0: each owner zeroes them when it claims the record, libclient/reader.c) and the
 * online word, so statistics never add a write to a line another thread writes.
 * `online` holds the grace-period counter seen on entry to a read-side section (+1), 0 when
 * offline; the second cache line is the daemon's (what it last saw of the reader). A record is held
 * by its owner's open-file-description lock on byte THR_LOCK_READERS + index, which the kernel
 * drops when the owner dies: the daemon then forces it offline and frees it (shm/reclaim.c). A
 * record whose lock outlives its owner (a descriptor inherited by a _Fork child) is freed when the
 * owner's pid is gone; it can be claimed again once that lock is released.
 */
#ifndef THR_SHM_LAYOUT_H
#define THR_SHM_LAYOUT_H

#include <assert.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define THR_MAGIC 0x414e455241524854ull /* "THRARENA" little-endian */
/* 10: GCRA params carry a clock (THR_PARAM_CLOCK). 11: keys hash with a multilinear hash
 * (hash.h) whose keys, hash_key, replace SipHash's secret and sit in the old headroom; slots are
 * 64 bytes with long keys stored digested; lookups stop at the home slot's reach (thr_slot.reach),
 * which older clients never set. 12: the limiter counters (lcount_off), which older clients would
 * not write (their decisions missing from the daemon's metrics), and the daemon's reload verdict
 * (reload_begun ... reload_msg). 13: circuit breakers (THR_KIND_BREAKER), which older clients
 * would take for a corrupt record. Older arenas must be recreated. Minors add fields in
 * headroom: 1, a semaphore waiter's class and deadline; 2, a directory entry's global lease.
 */
#define THR_LAYOUT_MAJOR   13u
#define THR_LAYOUT_MINOR   2u
#define THR_HDR_SIZE       4096u
#define THR_RELOAD_MSG     2048u /* bytes of the header's last reload message */
#define THR_NAME_MAX       63u   /* arena and limiter names, without the NUL */
#define THR_KEY_MAX        104u  /* bytes of a key; longer keys get -ENAMETOOLONG */
#define THR_KEY_INLINE     44u   /* bytes of a key's stored form: the key itself up to this */
#define THR_KEY_PREFIX     28u   /* a longer key's stored form: its first 28 bytes ... */
#define THR_KEY_DIGEST     16u   /* ... and a 16-byte keyed digest of it all (keydigest.h) */
#define THR_HASH_KEY_WORDS 30u   /* hdr.hash_key: 15 keys of 128 bits (hash.h) */
#define THR_SLOT_SIZE      64u
#define THR_DIR_ENTRY_SIZE 128u
#define THR_READER_SIZE    640u /* 192 of the record, then its composition journal */
#define THR_LCOUNT_SIZE    32u  /* one limiter's counters in a reader's row */
#define THR_ALIGN          64u
#define THR_MAX_K          29u /* time-scale cap: 2^64 units of 1/K ns last >= 20 years */
#define THR_MAX_SHARDS     4096u
#define THR_MAX_READERS    (1u << 20) /* reader records: an index fits the shard lock word */
#define THR_HORIZON_NS     (20ull * 365 * 24 * 3600 * 1000000000ull) /* arena time lasts 20 years */

/* thr_slot.reach: a home whose keys may lie any distance away (a lookup probes to an EMPTY) */
#define THR_REACH_ANY 255u

#define THR_TAT_FRESH UINT64_MAX
#define THR_TAT_DEAD  (UINT64_MAX - 1) /* evicted: retiring until a grace period has passed */
#define THR_TAT_FREE  (UINT64_MAX - 2) /* reclaimed: a DEAD slot an inserter may reuse */
/* A state word a composed call (compose.h) has marked: THR_TAT_MARK_MIN + (reader << 32 | seq),
 * for a reader record below THR_MAX_READERS (2^20) and the low 32 bits of its call's sequence (a
 * mark's value comes round again only after 2^32 calls of one thread). */
#define THR_MARK_SEQ_BITS 32u
#define THR_TAT_MARK_MIN  (UINT64_MAX - 3 - (1ull << 52) + 1)
#define THR_TAT_MARK_MAX  (UINT64_MAX - 3)
#define THR_TAT_LIMIT     (THR_TAT_MARK_MIN - 1) /* largest storable TAT (2^52 below the top) */

/* Reader liveness: reader record I is held by an open-file-description write lock on byte
 * THR_LOCK_READERS + I of the arena file (beyond its end: the bytes need not exist). */
#define THR_LOCK_READERS (1ull << 40)

/* hdr.clock_id */
enum thr_clock_kind { THR_CLOCK_MONOTONIC = 1, THR_CLOCK_MANUAL = 2 };

/* hdr.backing */
enum thr_backing { THR_BACKING_HUGETLBFS = 1, THR_BACKING_SHM = 2 };

/* thr_dir_entry.state */
enum thr_dir_state { THR_DIR_FREE = 0, THR_DIR_LIVE = 1, THR_DIR_RETIRED = 2 };

/* thr_params.kind: how a key's state is decided on (gcra.h, window.h); the table does not care */
enum thr_limiter_kind {
        THR_KIND_GCRA = 1,
        THR_KIND_WINDOW = 2,
        THR_KIND_SEMAPHORE = 3,
        THR_KIND_BUDGET = 4,
        THR_KIND_BREAKER = 5
};

/* thr_params.flags */
#define THR_PARAM_SERIALIZE 1u /* window: one holder at a time per key (window.h) */
/* GCRA: the emission interval is the configured one rounded up to the time unit the limiter's
 * buckets already counted in (a reload changed the rate to one that needs another unit:
 * shm_params_in_units); never faster than configured */
#define THR_PARAM_ROUNDED 2u
/* A GCRA record's scale is in millionths: THR_SCALE_ONE is the whole configured rate. */
#define THR_SCALE_ONE 1000000u
/* A global limiter's state (thr_dir_entry.global_state bits 0..7). */
enum thr_global_state {
        THR_GLOBAL_NONE = 0, /* not global */
        THR_GLOBAL_STARTING, /* the safe share, no answer from Redis yet */
        THR_GLOBAL_LEASED,   /* a lease from Redis, current */
        THR_GLOBAL_HELD,     /* Redis unreachable, the last lease kept (on_redis_down = keep) */
        THR_GLOBAL_SAFE,     /* Redis unreachable, the safe share: global / expected_hosts */
        THR_GLOBAL_CLOSED,   /* Redis unreachable, fail closed: the least share */
        THR_GLOBAL_OPEN,     /* Redis unreachable, fail open: the whole global limit */
};
/* Bits 5..4: how a GCRA limiter's decisions read the arena clock (clock.h); 0 (precise) for
 * other kinds. */
#define THR_PARAM_CLOCK_SHIFT 4u
#define THR_PARAM_CLOCK_MASK  (3u << THR_PARAM_CLOCK_SHIFT)
#define THR_PARAM_CLOCK(f)    (((f)&THR_PARAM_CLOCK_MASK) >> THR_PARAM_CLOCK_SHIFT)
/* a limiter's clock_read: what its params carry (PRECISE, COARSE, TSC); AUTO in a spec only (a
 * zeroed spec reads the precise clock; the daemon's config defaults to auto) */
enum thr_clock_read {
        THR_CLOCK_READ_PRECISE = 0,
        THR_CLOCK_READ_COARSE = 1,
        THR_CLOCK_READ_TSC = 2,
        THR_CLOCK_READ_AUTO = 3 /* spec: the cheapest clock whose lag is at most T / 64 */
};

/* Window limiters: at most N units in any window of length W; a log of N unit times per key. */
#define THR_WINDOW_MAX   16384u /* largest N: the log is 8 bytes a unit, preallocated per slot */
#define THR_WINDOW_HDR   64u    /* bytes before a key's log: struct thr_serial (serial.h) */
#define THR_WINDOW_SLACK 8u     /* log words beyond N: units staged in flight (window.h) */

/* Serialized window keys: a waiter that is not woken checks the holder's liveness this often. */
#define THR_SERIAL_POLL_NS (10ull * 1000000)

/* Semaphore limiters (sem.h): at most max units held per key, by leases recorded in the key. */
#define THR_SEM_MAX            65535u /* largest max (a waiter's amount is 16 bits of its ticket) */
#define THR_SEM_LEASES_MAX     1024u  /* largest leases_per_key */
#define THR_SEM_LEASES_DEFAULT 8u     /* leases_per_key unless configured */
#define THR_SEM_HDR            64u    /* bytes before a key's lease records: struct thr_sem */
#define THR_LEASE_SIZE         64u
#define THR_SEM_LEVELS         64u /* lock levels 0..63: a peer's levels are one word's bits */
/* A semaphore's queue (sem.h, "Priority"): thr_params.reserved holds its bound on queued acquires
 * per key (bits 0..31, 0: unbounded), what an acquire finding it full does (bits 32..33, enum
 * thr_queue_full) and its share (bits 40..47: of every SHARE leases granted on a key, the last
 * goes to the oldest queued acquire whatever its class; 0: strict priority). A waiter's class is
 * bits 16..18 of its wait_flags (0 lowest, THR_WAIT_PRIO_MAX highest: THR_PRIORITY_MAX). */
#define THR_SEMQ_MAX_WAITERS(r) ((uint32_t)(r))
#define THR_SEMQ_ON_FULL(r)     ((uint32_t)((r) >> 32) & 3u)
#define THR_SEMQ_SHARE(r)       ((uint32_t)((r) >> 40) & 0xffu)
#define THR_SEMQ(max, full, share)                                                                 \
        ((uint64_t)(uint32_t)(max) | (uint64_t)((full)&3u) << 32 | (uint64_t)((share)&0xffu) << 40)
#define THR_SEMQ_SHARE_MAX   255u
#define THR_SEMQ_WAITERS_MAX (1u << 20)
#define THR_WAIT_PRIO_MAX    7u
#define THR_WAIT_PRIO(flags) ((uint32_t)(flags) >> 16 & 7u)
enum thr_queue_full {
        THR_QUEUE_REJECT = 0,      /* the new acquire is refused (-EBUSY) */
        THR_QUEUE_DROP_OLDEST = 1, /* the oldest queued acquire is dropped (-ECANCELED) */
        THR_QUEUE_DROP_LOWEST =
            2 /* the last of the lowest class is dropped, if below the new one */
};

/* Budget limiters (budget.h): a balance per key, spent by cost, raised by adds. The state word
 * is the balance, with THR_BUDGET_WAITERS set while spenders are queued (then only the key's
 * shard lock holder changes it). Its top bit is never set: no balance reaches the table's
 * reserved values. */
#define THR_BUDGET_WAITERS (1ull << 62)
#define THR_BUDGET_MAX     (THR_BUDGET_WAITERS - 1) /* largest balance */
#define THR_BUDGET_HDR     64u                      /* a key's aux storage: struct thr_budget */

/* Breaker limiters (breaker.h): closed / open / half-open per key in the state word, the sliding
 * window's 8 bucket words in the key's aux storage (THR_BRK_AUX bytes). The record carries:
 * rate_n = failures (consecutive, 0 off), burst = failure_rate (percent, 0 off), initial =
 * min_calls, period_ns = window, max_reserve_units = cooldown ns, leases = probe_timeout ns,
 * level = probes, reserved = successes; k = t_units = 1, bt_units = 0, flags = 0. */
#define THR_BRK_FAILURES_MAX  255u       /* consecutive failures are 8 bits of the word */
#define THR_BRK_PROBES_MAX    15u        /* probes in flight: 4 bits */
#define THR_BRK_SUCCESSES_MAX 15u        /* half-open successes: 4 bits */
#define THR_BRK_MIN_CALLS_MAX (1u << 23) /* a window's 8 buckets count up to 2^20 - 1 calls */
#define THR_BRK_TIME_SHIFT    20u        /* the word's times: units of 2^20 ns, rounded up */
#define THR_BRK_AUX           64u        /* a key's aux storage: 8 bucket words */

/*
 * thr_reader.wait_state: the futex word a waiter sleeps on (serial.h, sem.h): a state in its low
 * 3 bits, and above them the wait's epoch, raised by each enqueue of the record. Whoever changes
 * a waiter's word CASes from the exact word it read (the epoch included), so a granter that
 * found a wait never changes a later one of the same record (a waiter that left without the
 * key's lock and queued again elsewhere): the epoch names the wait.
 */
#define THR_WAIT_STATE(w)     ((uint32_t)(w)&7u)
#define THR_WAIT_EPOCH(w)     ((uint32_t)(w) >> 3)
#define THR_WAIT_AS(w, state) (((uint32_t)(w) & ~7u) | (uint32_t)(state))           /* same wait */
#define THR_WAIT_NEXT(w)      ((((uint32_t)(w) >> 3) + 1u) << 3 | THR_WAIT_WAITING) /* enqueue */
enum thr_wait_state {
        THR_WAIT_NONE = 0,
        THR_WAIT_WAITING = 1,
        THR_WAIT_GRANTED = 2,
        THR_WAIT_HEAD = 3,    /* semaphore keys: waiting, at the head of the queue (sem.h) */
        THR_WAIT_REFUSED = 4, /* semaphore keys: its amount is above max (a reload lowered it) */
        THR_WAIT_DROPPED = 5  /* semaphore keys: dropped from a full queue (THR_QUEUE_DROP_*) */
};

/* thr_params.on_full: what an insert does when the table (or the key's shard) is full */
enum thr_on_full {
        THR_FULL_DENY = 0, /* the request is denied */
        THR_FULL_ALLOW =
            1,             /* the fresh-key decision stands, unrecorded (counted in allowed_full) */
        THR_FULL_EVICT = 2 /* the shard's least-indebted key is evicted, its debt kept as floor */
};

/* slot meta status, bits 63..62 */
enum thr_slot_status {
        THR_SLOT_EMPTY = 0,
        THR_SLOT_BUSY = 1,
        THR_SLOT_LIVE = 2,
        THR_SLOT_DEAD = 3
};

#define THR_META_STATUS(m) ((unsigned)((m) >> 62))
#define THR_META_GEN(m)    ((uint32_t)(((m) >> 32) & 0x3fffffffu))
#define THR_META_TAG(m)    ((uint32_t)(m))
#define THR_META_MAKE(st, gen, tag)                                                                \
        (((uint64_t)(st) << 62) | ((uint64_t)((gen)&0x3fffffffu) << 32) | (uint64_t)(tag))

struct thr_hdr {
        uint64_t magic;      /* THR_MAGIC, written last at creation (release) */
        uint32_t major;      /* THR_LAYOUT_MAJOR: a client of another major refuses */
        uint32_t minor;      /* THR_LAYOUT_MINOR: only adds fields in the headroom */
        uint64_t arena_size; /* bytes of the whole file */
        uint32_t hdr_size;   /* THR_HDR_SIZE */
        uint32_t backing;    /* enum thr_backing, as verified after mapping */
        uint64_t page_size;  /* page size of the mapping, verified in /proc/self/smaps */
        uint64_t thp_bytes;  /* /dev/shm only: bytes the kernel backed with huge pages */
        char name[THR_NAME_MAX + 1];

        /* clock: every process reads time the same way */
        uint32_t clock_id; /* enum thr_clock_kind */
        uint32_t pad0;
        uint8_t boot_id[16];            /* /proc/sys/kernel/random/boot_id at creation */
        int64_t timens_mono_ns;         /* CLOCK_MONOTONIC offset of the creator's time namespace */
        int64_t epoch_ns;               /* CLOCK_MONOTONIC value that arena time 0 stands for */
        _Atomic uint64_t manual_now_ns; /* THR_CLOCK_MANUAL: the arena's time, set by tests */

        /* daemon identity (informational; liveness is the lock on byte 0 of the file) */
        _Atomic uint64_t daemon_pid;
        _Atomic uint64_t daemon_start_ns; /* arena time the current daemon attached */
        _Atomic uint64_t heartbeat_ns;    /* arena time of the daemon's last heartbeat */
        _Atomic uint64_t attach_count;    /* how many times a daemon attached (restarts + 1) */

        /* sections */
        uint64_t dir_off;
        uint32_t dir_count;
        uint32_t pad1;
        uint64_t reader_off;
        uint32_t reader_count;
        uint32_t pad2;
        uint64_t heap_off;           /* first byte of the heap */
        uint64_t heap_end;           /* one past its last byte (== arena_size) */
        _Atomic uint64_t heap_top;   /* bump pointer; written by the daemon only */
        _Atomic uint64_t config_gen; /* bumped by the daemon at every (re)configuration */

        /* grace periods (reclaim.c): the counter readers snapshot on entry, and the last one
         * the daemon saw completed (informational: the daemon recomputes it at every scan) */
        _Atomic uint64_t grace_periods;

        uint64_t pidns_ino; /* creator's pid namespace (/proc/self/ns/pid inode), see below */

        _Atomic uint64_t gp_done;        /* last grace period the daemon saw complete */
        _Atomic uint64_t readers_forced; /* records of dead processes forced offline */
        _Atomic uint32_t mb_fallback;    /* a client could not register for expedited
                                          * membarrier: the daemon uses MEMBARRIER_CMD_GLOBAL */
        _Atomic uint32_t gp_error;       /* errno of the daemon's last failed grace period (no
                                          * membarrier: nothing is reclaimed), 0 when they work */

        /* named groups of limiters for composed calls (config `compose = a, b`): the table
         * (struct thr_group_table) the daemon wrote last, 0 none; a reload writes a new one */
        _Atomic uint64_t groups_off;

        /* what the cheap clocks of this machine are (clock.h, struct shm_clock_facts), measured
         * by the daemon: written at creation and again at every configuration from its own
         * measurement (a client's scribble lasts until the next reload; the daemon never chooses
         * from these). tsc_mult: ns per TSC cycle times 2^32, lowered by THR_TSC_MARGIN_PPM; 0
         * when the TSC is not usable here. tsc_gap: the widest (CLOCK_MONOTONIC, TSC) read a
         * thread may anchor on, cycles. tsc_lag_ns, coarse_lag_ns: how far behind
         * CLOCK_MONOTONIC a TSC / CLOCK_MONOTONIC_COARSE reading can be. */
        _Atomic uint64_t tsc_mult;
        _Atomic uint64_t tsc_gap;
        _Atomic uint64_t tsc_lag_ns;
        _Atomic uint64_t coarse_lag_ns;

        /* the limiter counters (struct thr_lcount): reader_count rows of lcount_stride bytes
         * from lcount_off, after the reader records and before the heap (checked at mapping:
         * lcount_stride == THR_LCOUNT_STRIDE(dir_count)) */
        uint64_t lcount_off;
        uint64_t lcount_stride;

        /* the table hash's keys (hash.h): random, written at creation and never again, so that
         * chosen keys cannot pile onto one probe run. On cache lines of their own: no write to
         * another header field takes them out of a reader's cache (bytes 384..623, asserted). */
        uint64_t pad3[4];
        uint64_t hash_key[THR_HASH_KEY_WORDS];
        /* the long-key digest's SipHash key (keydigest.h): random, written at creation only */
        uint64_t digest_key[2];

        /* the daemon's verdict on its last reload, for `throttled --reload` (which waits for it)
         * and shmctl: reload_begun counts reloads begun (bumped before the configuration is
         * read); reload_done is the number of the last one finished, release-stored after its
         * rc (0 applied, else a negative errno) and its message (reload_len bytes, not NUL
         * terminated) were written. Readers copy the message and check reload_done again; the
         * record is client-writable like all of the arena, so they bound reload_len. */
        _Atomic uint64_t reload_begun;
        _Atomic uint64_t reload_done;
        _Atomic int32_t reload_rc;
        _Atomic uint32_t reload_len;
        char reload_msg[THR_RELOAD_MSG];

        uint8_t headroom[THR_HDR_SIZE - 664 - THR_RELOAD_MSG];
};

struct thr_params {
        uint32_t kind;              /* enum thr_limiter_kind */
        uint32_t size;              /* sizeof(struct thr_params) when written */
        uint64_t rate_n;            /* N tokens ... */
        uint64_t period_ns;         /* ... per P ns, as configured */
        uint64_t k;                 /* time scale: units of 1/k ns */
        uint64_t t_units;           /* emission interval T = P/N ns, in units (exact) */
        uint64_t burst;             /* B >= 1 */
        uint64_t initial;           /* tokens a new key starts with, <= B */
        uint64_t bt_units;          /* B * T, checked not to overflow */
        uint64_t max_reserve_units; /* how far past now + B*T a reservation may push the TAT */
        uint64_t gen;               /* config generation that wrote this record */
        uint64_t idle_ttl_ns;       /* the daemon evicts keys full for this long; 0 never */
        uint32_t on_full;           /* enum thr_on_full */
        uint32_t flags;             /* THR_PARAM_* */
        uint64_t lock_wait_ns;      /* how long a new key's insert waits for a live holder of its
                                     * shard's lock before on_full applies; 0: THR_LOCK_WAIT_NS */
        uint64_t leases;            /* kind = THR_KIND_SEMAPHORE: lease records per key; else 0 */
        uint64_t level;             /* kind = THR_KIND_SEMAPHORE: its lock level (peers acquire
                                     * downwards only, peer.h), < THR_SEM_LEVELS; else 0 */
        uint64_t reserved;          /* kind = THR_KIND_SEMAPHORE: its queue, THR_SEMQ();
                                     * kind = THR_KIND_GCRA: the scale in millionths that
                                     * t_units, burst and initial were made at (0: whole;
                                     * THR_SCALE_ONE), read back only by the daemon */
        /* kind = THR_KIND_SEMAPHORE reuses: rate_n = burst = initial = max; period_ns = 0; k = 1,
         * t_units = 1 (times are ns), bt_units = 0; max_reserve_units = the longest lease ttl, ns.
         * kind = THR_KIND_BREAKER reuses: see THR_BRK_FAILURES_MAX above.
         * kind = THR_KIND_WINDOW reuses: rate_n = N units per period_ns = W ns; burst = initial =
         * N (the largest cost); k = 1 and t_units = 1 (its times are ns), bt_units = 0 */
};

struct thr_dir_entry {
        char name[THR_NAME_MAX + 1];
        _Atomic uint32_t state; /* enum thr_dir_state */
        uint32_t pad;
        _Atomic uint64_t params_off; /* current immutable parameter record */
        uint64_t table_off;          /* key table of this limiter */
        uint64_t table_bytes;
        /* an adaptive limiter's controller (the daemon's, daemon/adapt.c), for shmctl and tests:
         * arena ns of its next step (0: not adaptive, or not started), and steps taken */
        _Atomic uint64_t adapt_next_ns;
        _Atomic uint64_t adapt_steps;
        /* a global limiter's lease (the daemon's, daemon/global.c), for shmctl and tests (minor
         * 2): the share its buckets run at now (millionths of the global rate and burst, 0: not
         * global), its state (THR_GLOBAL_* in bits 0..7, the hosts holding a lease at the last
         * answer in bits 8..31) and the arena ns its lease ends. Nothing reads them to decide. */
        _Atomic uint32_t global_share;
        _Atomic uint32_t global_state;
        _Atomic uint64_t global_expiry_ns;
};

struct thr_table {
        uint32_t nshards;             /* power of two */
        uint32_t shard_slots;         /* slots per shard */
        uint64_t capacity;            /* hard cap on live keys in this table */
        uint64_t shard_max;           /* cap on live keys per shard (keeps probe runs short) */
        uint64_t shards_off;          /* offset of thr_shard[nshards] from the arena start */
        uint64_t slots_off;           /* offset of slot[0] from the arena start */
        _Atomic uint64_t live;        /* live keys in the table (insert path and daemon only) */
        _Atomic uint64_t insert_fail; /* inserts that found no room, whatever the policy did */
        uint32_t aux_stride; /* bytes of per-slot storage after the slots (a window's log), or 0;
                              * slot I's is at slots_off + nslots * THR_SLOT_SIZE + I * stride */
        uint32_t pad;
};

/*
 * One per shard, cache-line aligned; touched by the insert path and the daemon, never by lookups.
 * `lock` is the shard's insert lock (shm/shardlock.c): a word that only ever changes by CAS, never
 * a pthread mutex (glibc would write through pointers a client can rewrite, in the daemon too).
 * Every count below that an insert or an eviction changes (`live`) is changed only by the lock's
 * holder, so a recount under the lock is exact and nobody else's decrement can race it.
 */
struct thr_shard {
        _Atomic uint64_t lock; /* 0 free; else the holder, see shardlock.c */
        _Atomic uint64_t live; /* live slots in this shard (changed under the lock only) */
        _Atomic uint64_t inserts;
        _Atomic uint64_t repairs;       /* locks taken over from a dead holder, shard repaired */
        _Atomic uint64_t floor_units;   /* TAT new keys start from at least (on_full=evict) */
        _Atomic uint64_t evicted;       /* idle keys evicted by the daemon */
        _Atomic uint64_t evicted_full;  /* keys evicted by an insert into a full table */
        _Atomic uint64_t reclaimed;     /* retired slots made reusable after a grace period */
        _Atomic uint64_t allowed_full;  /* requests admitted unrecorded (on_full=allow) */
        _Atomic uint64_t lock_waits;    /* inserts that found the lock held by a live holder */
        _Atomic uint64_t lock_timeouts; /* of those, gave up after THR_LOCK_WAIT_NS (on_full) */
        _Atomic uint64_t evict_next;    /* on_full = evict: where the next victim search starts */
        /* gp_done + 1 as an insert read it that walked the whole shard and found no slot to take
         * (0: none); while gp_done reads the same and no locked pass has changed the shard,
         * inserts walk only their home's reach (table.c probe_locked). In the headroom, 0 in
         * arenas made before it: no hint. */
        _Atomic uint64_t no_place;
        /* CLOCK_MONOTONIC ns at which a client began, or last renewed, its wait for this lock (0:
         * nobody announced): a holder that takes the lock again at once (the daemon between two
         * segments of its pass) lets that waiter in first (shardlock.c, shm_shard_handoff).
         * Advisory, never trusted for who holds the lock. In the headroom, 0 in older arenas. */
        _Atomic uint64_t lock_wanted;
        uint8_t pad[128 - 112];
};

struct thr_slot {
        _Atomic uint64_t meta;  /* status | generation | hash tag, see above */
        _Atomic uint64_t state; /* GCRA: TAT in units, or THR_TAT_FRESH / THR_TAT_DEAD */
        uint8_t key_len;        /* the key's real length, 1..THR_KEY_MAX */
        /* the farthest, in slots past this one, that a live key whose home is this slot lies
         * (THR_REACH_ANY: unbounded, probe to the first EMPTY): bounds a lookup's probe. A
         * property of the slot as a home, whatever occupies it (table.c) */
        _Atomic uint8_t reach;
        uint8_t pad[2];
        uint8_t key[THR_KEY_INLINE]; /* 44: the key's stored form (see above) */
};

struct thr_reader {
        _Atomic uint64_t owner;  /* 0 free; else a token unique to (process, thread) */
        _Atomic uint64_t online; /* grace-period counter seen on entry; 0 when offline */
        _Atomic uint64_t pid;    /* pid of the owner, as the owner sees itself (informational) */
        _Atomic uint64_t tid;
        _Atomic uint64_t admitted; /* counters written only by the owner thread */
        _Atomic uint64_t denied;
        _Atomic uint64_t inserts;
        _Atomic uint64_t cas_retries;
        /* line 1: the daemon's (never written by the owner, no false sharing), then the wait fields
         */
        _Atomic uint64_t gp_seen;      /* last grace period this reader was seen not to block */
        _Atomic uint64_t blocking_ns;  /* arena time it was first seen blocking one, else 0 */
        _Atomic uint64_t stalled;      /* 1 while reported stalled */
        _Atomic uint64_t forced_token; /* owner token of the last dead owner forced offline */
        /* a serialized window key this thread waits for (serial.h): written under that key's
         * shard lock, by the owner when it queues and leaves, by a granter when it grants */
        _Atomic uint64_t wait_slot;   /* arena offset of the slot, 0: none */
        _Atomic uint64_t wait_ticket; /* ticket << 16 | cost: FIFO order, units asked */
        _Atomic uint32_t wait_state;  /* enum thr_wait_state: the futex word */
        _Atomic uint32_t wait_gen;    /* the slot's generation when queued */
        /* a semaphore key this thread waits for (sem.h), besides the fields above: what its lease
         * is to be (written by the owner when it queues), and which lease it got (by the granter,
         * before the grant's CAS of wait_state) */
        _Atomic uint64_t wait_ttl;    /* the lease's time to live, ns; a budget wait: its cost */
        _Atomic uint64_t wait_holder; /* owner token of the process's lease record ... */
        _Atomic uint32_t wait_holder_idx; /* ... and its index: the lease's holder */
        _Atomic uint32_t wait_quit;       /* a budget wait: the epoch of the last wait it gave up */
        _Atomic uint64_t wait_gen_floor;  /* the key's next lease generation when it queued: a
                                           * lease older than the wait is never its grant */
        _Atomic uint64_t wait_since;      /* arena ns the wait began (the longest pending) */
        _Atomic uint32_t wait_flags;      /* THR_LEASE_PEER | level << 8 | class << 16 */
        /* a peer's record (peer.h): a holder of leases with one expiry, apart from any thread */
        _Atomic uint32_t peer_pending;  /* its acquires queued now (informational) */
        _Atomic uint64_t peer_expires;  /* arena ns its leases expire at; 0: not a live peer */
        _Atomic uint64_t peer_levels;   /* bit L: it holds, or waits for, a lock at level L */
        _Atomic uint64_t wait_deadline; /* a semaphore wait: arena ns it ends at (a serve
                                         * passes over it from then: it is leaving) */
        /* bytes 192..: the journal of this thread's composed call in progress (compose.h) */
        struct thr_journal {
                _Atomic uint64_t status; /* seq << 2 | enum thr_journal_state */
                _Atomic uint32_t n;      /* members in the call */
                uint32_t pad;
                uint8_t reserved[48];
                struct thr_jentry {
                        _Atomic uint64_t slot_off; /* the member's slot, arena offset */
                        _Atomic uint64_t old;      /* its state before the mark */
                        _Atomic uint64_t next;     /* the state a commit stores */
                        _Atomic uint64_t cost;
                        _Atomic uint32_t kind;
                        _Atomic uint32_t gen; /* the slot's generation when found */
                        uint64_t pad;
                } e[8];
        } journal;
};

/*
 * One limiter's counters in a reader's row (see the top): written only by the thread owning the
 * row's reader record, by a relaxed load and store (thr_count); read by anyone, racily (a sum may
 * miss an increment in flight, never count one twice). Never reset.
 */
struct thr_lcount {
        _Atomic uint64_t
            admitted;            /* decisions admitted (try), or places taken (reserve, acquire) */
        _Atomic uint64_t denied; /* decisions denied */
        _Atomic uint64_t waited; /* of the admitted, places due later than the call (a wait) */
        _Atomic uint64_t overload; /* calls the caller's downstream refused for overload
                                    * (thr_limiter_overload): an adaptive limiter's signal */
};
/* Bytes of a counter row for DIR_COUNT limiters: whole cache lines. */
#define THR_LCOUNT_STRIDE(dir_count)                                                               \
        (((uint64_t)(dir_count)*THR_LCOUNT_SIZE + THR_ALIGN - 1) / THR_ALIGN * THR_ALIGN)

/* thr_journal.status's low 2 bits: the call's state; commit and abort are final for its seq. */
enum thr_journal_state {
        THR_JOURNAL_IDLE = 0,
        THR_JOURNAL_UNDECIDED = 1,
        THR_JOURNAL_COMMIT = 2,
        THR_JOURNAL_ABORT = 3
};
#define THR_COMPOSE_MAX 8u /* members of one composed call */

/*
 * A serialized window key's header (the first THR_WINDOW_HDR bytes of its aux storage; unused,
 * zero, for other window keys). Written only under the key's shard lock (serial.h); read racily
 * by shmctl and by a waiter checking whether it was granted.
 */
struct thr_serial {
        _Atomic uint64_t hold_token; /* owner token of the holder's reader record; 0: no holder */
        _Atomic uint32_t hold_idx;   /* the holder's reader record */
        _Atomic uint32_t waiters;    /* waiters queued (exact after each serve) */
        _Atomic uint64_t hold_cost;  /* units its end completes; 0 once they are logged */
        _Atomic uint64_t hold_since; /* arena ns it was granted */
        _Atomic uint64_t hold_pid;   /* informational */
        _Atomic uint64_t next_ticket;
        _Atomic uint64_t served;   /* holds granted so far */
        _Atomic uint64_t released; /* holds of dead holders released */
};

/*
 * A semaphore key's header (the first THR_SEM_HDR bytes of its aux storage), followed by its
 * leases_per_key lease records. Written only under the key's shard lock (sem.h); read racily by
 * shmctl and by a waiter checking whether it was granted.
 */
struct thr_sem {
        _Atomic uint64_t held;        /* units held by the leases in use (their amounts' sum) */
        _Atomic uint32_t waiters;     /* acquires queued (exact after each serve) */
        _Atomic uint16_t leases;      /* lease records in use */
        _Atomic uint16_t dirty;       /* set while a locker changes records and sums (sem.h) */
        _Atomic uint64_t next_ticket; /* FIFO places of queued acquires */
        _Atomic uint64_t next_gen;    /* the generation the next lease gets (never 0) */
        _Atomic uint64_t granted;     /* leases granted so far */
        _Atomic uint64_t released;    /* leases released by a holder */
        _Atomic uint64_t expired;     /* leases reclaimed after their time to live */
        _Atomic uint64_t reclaimed;   /* leases reclaimed because their holder process died */
};

/*
 * A budget key's header (its whole aux storage). Written only under the key's shard lock
 * (budget.h); read racily by shmctl and by thr_budget_stat. The journal (j_*) describes the one
 * grant in progress, so that whoever takes the lock over from a granter killed half-way completes
 * or undoes it.
 */
struct thr_budget {
        _Atomic uint32_t waiters; /* spenders queued (exact after each serve) */
        _Atomic uint32_t j_idx;   /* journal: the waiter's reader record + 1; 0 none */
        _Atomic uint32_t j_word;  /* its wait word as the serve found it (its epoch) */
        _Atomic uint32_t pad;
        _Atomic uint64_t j_before;    /* the state word before the grant's spend ... */
        _Atomic uint64_t j_after;     /* ... and after it */
        _Atomic uint64_t next_ticket; /* FIFO places of queued spenders */
        _Atomic uint64_t need;        /* units the queued spenders ask for in all (after a serve) */
        _Atomic uint64_t head_need;   /* units the one served next asks for */
        _Atomic uint64_t granted;     /* spends granted to queued spenders so far */
};

/* A named group of limiters (compose.h): its members' directory indices, in config order. */
struct thr_group_rec {
        char name[THR_NAME_MAX + 1];
        uint32_t n;         /* 1 to THR_COMPOSE_MAX */
        uint32_t member[8]; /* directory indices */
        uint8_t reserved[28];
};

/* The groups' table: a count, then the records. Immutable once published (hdr.groups_off). */
struct thr_group_table {
        uint64_t count;
        uint64_t gen; /* config generation that wrote it */
        uint8_t reserved[112];
        struct thr_group_rec g[];
};

/* One lease: free while gen is 0. */
struct thr_lease_rec {
        _Atomic uint64_t gen;         /* unique in the key; 0: free */
        _Atomic uint64_t holder;      /* owner token of the holder process's lease record */
        _Atomic uint32_t holder_idx;  /* that record's index */
        _Atomic uint32_t amount;      /* units held */
        _Atomic uint64_t acquired_ns; /* arena ns */
        _Atomic uint64_t expires_ns;  /* arena ns: reclaimable from then on */
        _Atomic uint32_t pid;         /* informational: the holder's pid and thread id */
        _Atomic uint32_t tid;
        /* granted to a queued waiter: (its reader record + 1) << 32 | its wait's epoch, until the
         * waiter takes it (CAS to 0); 0 for a lease taken at once (sem.h) */
        _Atomic uint64_t waiter;
        _Atomic uint32_t flags; /* THR_LEASE_PEER: it lasts as long as its holder, a peer */
        _Atomic uint32_t level; /* the limiter's lock level when it was granted */
};

/* thr_lease_rec.flags: the lease expires with its holder, a peer (peer.h); its own expires_ns is
 * not read */
#define THR_LEASE_PEER 1u

static_assert(sizeof(struct thr_sem) == THR_SEM_HDR, "semaphore header size");
static_assert(sizeof(struct thr_budget) == THR_BUDGET_HDR, "budget header size");
static_assert(sizeof(struct thr_group_rec) == 128 && sizeof(struct thr_group_table) == 128,
              "group records");
static_assert(sizeof(struct thr_lease_rec) == THR_LEASE_SIZE, "lease record size");
static_assert(sizeof(struct thr_hdr) == THR_HDR_SIZE, "header is one page");
static_assert(sizeof(struct thr_lcount) == THR_LCOUNT_SIZE, "limiter counter block size");
static_assert(offsetof(struct thr_hdr, hash_key) == 384 &&
                  offsetof(struct thr_hdr, reload_begun) == 640 &&
                  offsetof(struct thr_hdr, headroom) == 664 + THR_RELOAD_MSG,
              "hash keys on lines of their own, then the reload record, then the headroom");
static_assert(sizeof(struct thr_params) == 128, "params record size");
static_assert(sizeof(struct thr_dir_entry) == THR_DIR_ENTRY_SIZE, "dir entry size");
static_assert(sizeof(struct thr_table) == 64, "table header is one line");
static_assert(sizeof(struct thr_shard) == 128, "shard header size");
static_assert(sizeof(struct thr_slot) == THR_SLOT_SIZE && THR_SLOT_SIZE == THR_ALIGN,
              "a slot is one cache line");
static_assert(offsetof(struct thr_slot, key) + THR_KEY_INLINE == THR_SLOT_SIZE,
              "the stored form ends the slot");
static_assert(THR_KEY_PREFIX + THR_KEY_DIGEST == THR_KEY_INLINE, "a long key's stored form");
static_assert(THR_KEY_MAX <= UINT8_MAX && THR_KEY_MAX > THR_KEY_INLINE, "key_len is one byte");
static_assert(ATOMIC_CHAR_LOCK_FREE == 2, "8-bit atomics must be lock-free");
static_assert(sizeof(struct thr_reader) == THR_READER_SIZE, "reader size");
static_assert(offsetof(struct thr_reader, journal) == 192 && sizeof(struct thr_journal) == 448,
              "the journal after the record's three lines");
static_assert(sizeof(struct thr_serial) == THR_WINDOW_HDR, "serial header fills the log's header");
static_assert(ATOMIC_LLONG_LOCK_FREE == 2 && ATOMIC_LONG_LOCK_FREE == 2,
              "64-bit atomics must be lock-free");
static_assert(sizeof(long) == 8, "LP64: uint64_t is unsigned long");
static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free");
static_assert(offsetof(struct thr_hdr, magic) == 0, "magic first");

#endif
