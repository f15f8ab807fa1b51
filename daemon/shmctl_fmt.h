/*
 * shmctl_fmt.h - what shmctl's output files share (shmctl_out.c: the tables and the formatting;
 * shmctl_out_sem.c: semaphore keys and `leases`; shmctl_budget.c: budget keys; shmctl_peer.c:
 * `peers`): the cell sizes, the aligned-table printer and the formatting of names, keys and
 * durations. Output only: nothing here reads the arena. Not installed.
 */
#ifndef THR_DAEMON_SHMCTL_FMT_H
#define THR_DAEMON_SHMCTL_FMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shmctl_out.h"

#define ESC_MAX  (6 * THR_KEY_MAX + 1) /* a key escaped as JSON \u00XX, the widest form */
#define KEY_JSON (ESC_MAX + 96)        /* key_members: a key as JSON members */
#define CELL     ESC_MAX
#define MAX_COLS 24

/* A table's columns, and the function that formats row I of its data into CELLS. */
struct cols {
        size_t n;
        const char *const *head;
        const bool *right; /* right-aligned (numbers) */
};
typedef void (*row_fn)(const void *data, long i, char cells[][CELL]);

/* The rows of a `keys` (or `get`) table: L's keys V, at the answer's arena time. */
struct key_rows {
        const struct shmctl_lim *l;
        const struct shmctl_key *v;
        uint64_t now_ns;
};

/* N bytes of S escaped into OUT (OUTLEN bytes; 6 per input byte suffice): for people, or the
 * body of a JSON string. Returns OUT. */
const char *escape(char *out, size_t outlen, const void *s, size_t n, bool json);

/*
 * Key K for people into OUT (OUTLEN bytes, CELL suffice): its bytes escaped; a key longer than
 * THR_KEY_INLINE, of which the arena keeps only its first THR_KEY_PREFIX bytes and a digest
 * (layout.h), as those bytes followed by "…" (an ellipsis, never a byte of the key's: those are
 * ASCII or escaped). Returns OUT.
 */
const char *key_text(char *out, size_t outlen, const struct shmctl_key *k);

/*
 * Key K as the members of a JSON object into OUT (OUTLEN bytes, KEY_JSON suffice):
 * "key":"<bytes>" and, for a long key (see key_text), the prefix only, followed by
 * "key_truncated":true,"key_len":<its real length>. Returns OUT.
 */
const char *key_members(char *out, size_t outlen, const struct shmctl_key *k);

/* A duration as ns, us, ms or s with up to three decimals (truncated: "1.5ms"). */
const char *fmt_dur(char *buf, size_t len, uint64_t ns);

/* Print a table: column widths from a first pass over every row, then the rows, aligned. */
void table_print(const struct cols *t, row_fn fn, const void *data, long nrow);

const char *dir_state_name(uint32_t st);

/* An arena time T seen from NOW_NS, as an expiry: "9.5s" to go, or "expired 1s ago". */
const char *fmt_expires(char *buf, size_t len, uint64_t t, uint64_t now_ns);

/* An expiry T at NOW_NS as JSON members: "expires_in_ns" (negative once past) and "expired". */
void expires_json(uint64_t t, uint64_t now_ns);

/* shmctl_out_sem.c: a semaphore key's table (keys and get) and JSON object, and whether an
 * answer shows the queue columns (sem.h's remainder, units pending and longest pending). */
bool sem_queue_shown(const struct shmctl_key *v, long n);
void sem_table(const struct key_rows *kr, long shown);
void sem_json(const struct shmctl_lim *l, const struct shmctl_key *k, bool queue);

/* shmctl_budget.c: a budget key's table (keys and get) and JSON object. */
void budget_table(const struct key_rows *kr, long shown);
void budget_json(const struct shmctl_lim *l, const struct shmctl_key *k);

/* shmctl_breaker.c: a breaker key's table and JSON object; the limiter's configuration as the
 * keys' heading (UNIT) and as JSON members (each followed by a comma). */
void breaker_table(const struct key_rows *kr, long shown);
void breaker_json(const struct shmctl_key *k);
void breaker_unit(const struct shmctl_lim *l, char *out, size_t len);
void breaker_lim_json(const struct shmctl_lim *l);

/* shmctl_compose.c: a marked key (K->mark.on) as text ("marked by reader R (call seq S, ...)");
 * as a row's cells: DASHES cells "-", then that text; as the JSON member ",\"marked\":{...}"
 * (nothing for a key not marked). */
const char *mark_text(char *buf, size_t len, const struct shmctl_mark *m);
void mark_cells(char cells[][CELL], int dashes, const struct shmctl_mark *m);
void mark_json(const struct shmctl_mark *m);
/* A marked GCRA or window key L's JSON object, from its "{" to its state member (null), with the
 * members a state would give null; KJ: its key's members (key_members). The caller closes it. */
void mark_key_json(const struct shmctl_lim *l, const char *kj);

#endif
