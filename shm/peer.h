/*
 * peer.h - peers: holders of semaphore leases with one expiry (pacman82/throttle's peers).
 *
 * A peer is a reader record claimed for the purpose by a client process (libclient/peer.c), apart
 * from every thread's record, like the process's own lease record (sem.h). Its leases name it as
 * their holder (record index and owner token) and carry THR_LEASE_PEER: they have no expiry of
 * their own but the peer's, the record's peer_expires word. One heartbeat (one CAS of that word)
 * keeps every lock the peer holds; the peer's expiry, its removal, or its process dying (the
 * daemon frees the record: its owner word changes) voids all of them at once, and each key gets
 * its units back at its next serve (sem.h: an acquire that does not fit, a queued waiter's check
 * every THR_SERIAL_POLL_NS, the daemon's maintenance pass).
 *
 * Expiry is final, decided by CAS on peer_expires:
 *   - a heartbeat at NOW moves it from E to NOW + TTL only while E > NOW (CAS from the E it read);
 *   - whoever judges a lease of the peer at NOW and reads E <= NOW kills the peer first: CAS
 *     E -> 0, then clears the lease. A peer whose word is 0 is dead for ever.
 * The two CASes are on one word, so they are ordered: a heartbeat that won keeps the peer alive
 * for every later judge (they read its new E, or a later one); a kill that won makes the
 * heartbeat's CAS fail (it answers -EKEYEXPIRED). So no lease of a peer is cleared while the
 * peer is told it is alive, and a peer told alive has lost no lease to expiry: the keys never
 * disagree about whether a peer expired. A process killed between its reads and its CAS leaves
 * the word as it was (both steps are one CAS).
 *
 * The record is untrusted like every byte of the arena, which every client can write: a client
 * rewriting a peer's word can keep that peer's leases longer or void them, as rewriting the lease
 * records themselves could; it can never make a judge read or write outside the arena. Judges
 * read the word through the index checked against the reader count and the token the lease
 * names (a record reused since has another owner: the lease is void).
 */
#ifndef THR_SHM_PEER_H
#define THR_SHM_PEER_H

#include <stdbool.h>
#include <stdint.h>

#include "arena.h"

/* The peer record IDX of M if it is still the peer TOK names (its owner word), else NULL. */
struct thr_reader *shm_peer_rec(const struct shm_map *m, uint64_t tok, uint32_t idx);

/*
 * shm_peer_expiry - when the leases of peer (TOK, IDX) expire, as judged at NOW: its expiry word
 * if above NOW; else 0, the peer being dead (its record reused, or its word 0), or killed here
 * (its word CASed from an expiry <= NOW to 0: final). KILL false: only read (shmctl maps the arena
 * read-only), an expired peer's expiry is returned as it is.
 */
uint64_t shm_peer_expiry(const struct shm_map *m, uint64_t tok, uint32_t idx, uint64_t now,
                         bool kill);

/*
 * shm_peer_prolong - the heartbeat of the peer whose record is R, at NOW: its leases now expire at
 * EXPIRES (> NOW). 0; -EKEYEXPIRED if it had expired (its word <= NOW: it is killed, if nobody
 * had yet) or was dead.
 */
int shm_peer_prolong(struct thr_reader *r, uint64_t now, uint64_t expires);

/* shm_peer_kill - make the peer of record R dead (its word 0), whatever its expiry. */
void shm_peer_kill(struct thr_reader *r);

#endif
