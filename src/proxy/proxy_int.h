/*
 * proxy_int.h - what the files of the request path share, and nobody else.
 *
 * One proxied request goes through these files in this order (each opens
 * with its contract):
 *   proxy.c         the spine: route by vendor prefix, then each step below
 *   authenticate.c  the vault token where the vendor's SDK sends it
 *   canonical.c     the one reading of the request (path, body, query, codings)
 *   endpoint.c      the key's endpoint policy, compiled once per worker
 *   (meter/)        the worst case, from the canonical request
 *   admit.c         reservation + audit record committed, then forwarded
 *   forward.c       the vendor's answer streamed back; revocation watch
 *   settle.c        the actual cost replaces the reservation; completion record
 *   finish.c        the one finish step (metrics, access log) and refusals
 *
 * struct preq owns everything of one request and is freed in exactly one
 * place, proxy__preq_free(). Everything here runs on the worker's loop,
 * except the *_job functions, which run on the writer thread while the
 * request waits for them (nothing else touches it then).
 */
#ifndef KB_PROXY_PROXY_INT_H
#define KB_PROXY_PROXY_INT_H
#include <event2/util.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/hdr.h"
#include "proxy/proxy.h"
#include "proxy/scrub.h"
#include "vendor/creds.h"

struct kb_audit_rec;
struct kb_canon_req;
struct kb_key;
struct kb_meter;
struct kb_policy;
struct kb_upstream_ops;
struct kb_vendor;

/* Pause the upstream when this much is waiting to go to a slow client. */
#define CLIENT_HIGH_WATER (256 * 1024)
/* Compiled endpoint policies kept per worker, direct-mapped by key seq. A
 * key's allowed_endpoints never change after issuance, so an entry is
 * valid for as long as it stays; a collision just recompiles. */
#define POLICY_CACHE_SLOTS 4096

/* How often requests in flight are checked for a revoked key: a revoked
 * key's streams are cut within this (issue: "within one second"). */
#define REVOCATION_WATCH_MS 250
#define KEY_CACHE_SLOTS 4096 /* per worker; ~200 KiB of slots plus the keys */

/* Refusals of requests without a valid key, per source (strangers.c). */
#define STRANGER_SLOTS 64      /* sources per worker and interval; the last is "*" */
#define STRANGER_CODES 8       /* distinct codes counted per source */
#define STRANGER_FLUSH_MS 5000 /* how often they become audit records */

struct proxy__stranger {
    char source[48];  /* the client's address, "*" for the overflow */
    int64_t count;    /* refusals */
    int64_t first_ms; /* wall clock of the first and last one */
    int64_t last_ms;
    struct {
        enum kb_err code;
        int64_t n;
    } codes[STRANGER_CODES];
    size_t ncodes;
};

struct proxy__strangers {
    struct proxy__stranger v[STRANGER_SLOTS];
    size_t n;            /* slots in use */
    struct event *timer; /* owned */
};

struct kb_proxy {
    struct event_base *base;               /* borrowed */
    const struct kb_runtime *rt;           /* borrowed */
    struct kb_writer_port *port;           /* owned; group-commit writes from this worker */
    struct kb_upstream *up;                /* owned */
    const struct kb_upstream_base **bases; /* owned array; per vendor index, owned by up */
    struct event *watch;                   /* owned; revocation watch timer */
    uint64_t watch_seen;                   /* revocation log position the watch has read */
    bool watch_lost;                       /* the log lost entries: read the keys in flight */
    bool watch_checking;                   /* that read is in flight */
    struct kb_keycache *keys;              /* owned; keys by token hash */
    struct kb_mailbox *mailbox;            /* owned; the store reader's answers */
    struct proxy__key_read *reads;         /* key reads in flight, doubly linked */
    int nreads;
    struct kb_hmac *token_mac; /* owned; HMAC under the server key, pads precomputed */
    struct {
        int64_t seq;              /* key seq, 0 when empty */
        struct kb_policy *policy; /* owned */
    } policies[POLICY_CACHE_SLOTS];
    struct preq *inflight; /* requests in flight, doubly linked */
    int ninflight;
    int unflushed; /* replies not yet written out to their client */
    bool draining;
    kb_drained_cb drained_cb;
    void *drained_arg;
    int worker;
    uint32_t seed;    /* random per worker: request ids differ across restarts */
    uint64_t counter; /* request ids within this worker */
    struct proxy__strangers strangers;
};

/* What is still owed to the client once the settlement is durable. */
enum reply_after {
    REPLY_NONE = 0,   /* already answered or cut */
    REPLY_FINISH = 1, /* end the streamed answer */
    REPLY_ERROR = 2,  /* answer with the error r->fail */
};

/* A request moves through these stages; in each, exactly one party may
 * finish it: the writer's callback (ADMIT, SETTLE) or the upstream client
 * and the client connection (UPSTREAM). */
enum preq_stage {
    ST_ADMIT = 0,    /* reservation + audit record queued for commit */
    ST_UPSTREAM = 1, /* forwarded; the vendor transfer runs */
    ST_SETTLE = 2,   /* settlement + completion record queued for commit */
};

struct preq {
    struct kb_proxy *px; /* borrowed */
    enum preq_stage stage;
    struct kb_hreq *req;            /* borrowed; NULL once replied or gone */
    struct kb_upstream_req *up;     /* owned while the transfer runs */
    const struct kb_key *key;       /* shared with the key cache (keycache_put) */
    const struct kb_vendor *vendor; /* borrowed from the config */
    const struct kb_cred *cred;     /* borrowed; the vendor's credentials at admission */
    bool key_revoked;               /* the watch saw its key's revocation */
    int64_t expires_at;             /* the key's expiry: as cached, then as admitted, then as
                                       the watch re-read it after a change (a PATCH) */
    bool recheck;                   /* worker: its key changed while it was being admitted */
    struct kb_meter *meter;         /* owned */
    char *body;                     /* owned when rewritten, else NULL */
    int64_t reserved;               /* micro-dollars reserved on `day` */
    int64_t day;                    /* UTC day of the reservation */
    int64_t remaining;              /* cap left after the reservation */
    struct kb_budget_hold *holds;   /* owned; the budgets `reserved` is held on (settle.c) */
    size_t nholds;
    char *exhausted;           /* owned; BUDGET_EXHAUSTED: the budget that refused */
    char *refusal;             /* owned; its audit detail, JSON text */
    int status;                /* upstream status, 0 until known */
    bool head_sent;            /* reply headers went to the client */
    bool head_deferred;        /* the vendor's head is in, ours waits (forward.c) */
    bool paused;               /* upstream paused for a slow client */
    bool client_gone;          /* the client connection closed */
    bool outcome_unknown;      /* the vendor may have acted; charged its worst case */
    bool ended;                /* logged, counted and answered (settle.c) */
    struct event *retry;       /* owned; a settlement that did not commit, again */
    int64_t settle_backoff_ms; /* its current back-off */
    bool settle_again;         /* a settlement of it failed: it may have committed all
                                  the same (an answer lost), so the retry first looks
                                  for its completion record */
    bool settle_done_already;  /* writer: that record was there (nothing to do) */
    char id[40];               /* request id */
    char *resp_ctype;          /* owned; the vendor's Content-Type */
    char *resp_cenc;           /* owned; the vendor's Content-Encoding(s), or NULL */
    int64_t resp_clen;         /* the vendor's Content-Length; -1 when none */
    struct kb_buf hold;        /* owned; answer bytes sent only after settlement: what
                                  may begin a secret, or the last byte */
    struct kb_buf scratch;     /* owned; a scrubbed copy of a chunk (scrub.h) */
    const char *method;        /* static string */
    char *path;                /* owned; canonical vendor path, no query */
    const char *query;         /* borrowed from the target, after its '?'; NULL: none */
    struct kb_buf headers;     /* owned until handed to the upstream client */
    const char *fwd_body;      /* borrowed: r->body or the request's body */
    size_t fwd_len;
    int64_t ts_ms;          /* arrival, wall clock */
    int64_t start_us;       /* arrival, monotonic */
    int64_t audit_seq;      /* the request's audit record */
    enum kb_err outcome;    /* admission: KB_OK, CAP_EXHAUSTED, BUDGET_EXHAUSTED or RATE_LIMITED */
    int64_t retry_ms;       /* RATE_LIMITED: until one request fits */
    int64_t bytes_in;       /* request body bytes as the client sent them */
    int64_t bytes_out;      /* response body bytes sent to the client */
    int64_t actual;         /* settled cost */
    int64_t latency_us;     /* arrival to settlement */
    enum kb_err fail;       /* completion failure, KB_OK when whole */
    int64_t up_start_us;    /* forwarded at, monotonic; 0 if never */
    enum reply_after reply; /* what settlement must still send the client */
    struct preq *prev, *next;
};

/* Never forwarded: framing and hop-by-hop headers (we frame the request
 * ourselves), the client's credentials (the vendor gets exactly one, ours),
 * and headers that make a server act on another method or URL than the
 * one that was checked and metered. */
/* ---- proxy.c ---- */

/* Calls the drain callback once nothing is in flight or unwritten. */
void proxy__maybe_drained(struct kb_proxy *px);
/* Ends the client's answer where it stands (it sees it cut short). */
void proxy__abort_connection(struct preq *r);
/* Frees r and all it owns; unlinks it from the in-flight list. */
void proxy__preq_free(struct preq *r);
/* Starts the client's answer with the vendor's status and the headers
 * added so far. */
void proxy__reply_start(struct preq *r);
/* The index of v in the config's vendors, -1 for NULL (metrics). */
int proxy__vendor_index(const struct kb_proxy *px, const struct kb_vendor *v);
/* Whether name (len bytes) is in the NULL-terminated list, any case. */
bool proxy__in_list(const char *const *list, const char *name, size_t len);

/* ---- authenticate.c ---- */

/*
 * The key of the vault token in headers h, where the SDK of the vendor the
 * target names (if any) sends it, from the worker's key cache: KB_OK with
 * *out a key-cache reference (keycache_put it), whatever the key's state;
 * KB_E_NOT_FOUND when the cache does not have it (*hash is set: read it
 * with proxy__key_read); KB_E_INVALID_TOKEN when there is no well-formed
 * token (absent, ambiguous, malformed).
 */
enum kb_err proxy__key_find(struct kb_proxy *px, const char *target, const struct kb_hdr *h,
                            size_t nh, uint8_t hash[KB_HASH_LEN], const struct kb_key **out);

/* Whether `key` (NULL: none found) may spend at `now`: KB_OK,
 * KB_E_INVALID_TOKEN, KB_E_KEY_REVOKED or KB_E_KEY_EXPIRED. */
enum kb_err proxy__key_verdict(const struct kb_key *key, int64_t now);

/* A tenant key's own vendor credential, read and opened with the key on
 * the reader thread (lookup.c) and kept with it (key->ext). */
struct proxy__tenant_cred {
    enum kb_err err;      /* KB_OK, or why the tenant's secret cannot be used
                             (KB_E_SECRET_UNAVAILABLE: its master key is not configured) */
    struct kb_cred *cred; /* owned; NULL: the tenant has no secret of its own */
};
/* The credential a request of `key` must use for vendor index vi: the
 * tenant's own, or the global one when it has none and the setting allows;
 * else *err (KB_E_TENANT_SECRET_MISSING, KB_E_SECRET_UNAVAILABLE,
 * KB_E_VENDOR_NOT_CONFIGURED) and NULL. */
struct kb_cred;
const struct kb_cred *proxy__cred_for(const struct kb_proxy *px, const struct kb_key *key,
                                      size_t vi, enum kb_err *err);

/* ---- lookup.c ---- */

/* Where a waiter goes on once its key was read: key is a key-cache
 * reference or NULL, err KB_OK, KB_E_INVALID_TOKEN (no such key) or
 * KB_E_STORE. */
typedef void (*proxy__key_cb)(struct kb_proxy *px, void *waiter, const struct kb_key *key,
                              enum kb_err err);

/*
 * Reads the key whose token hashes to `hash` off the loop, then calls
 * resume(px, waiter, ...) (a request, or a head at the gate), first
 * detach(waiter) to let go of the hook the waiter has on the read (its
 * close callback). A waiter that goes away first calls
 * proxy__key_read_forget. NULL when the store's reader queue is full
 * (nothing started).
 */
struct proxy__key_read *proxy__key_read(struct kb_proxy *px, const uint8_t hash[KB_HASH_LEN],
                                        proxy__key_cb resume, void *waiter,
                                        void (*detach)(void *waiter));
void proxy__key_read_forget(struct proxy__key_read *l);

/* Lets go of every read in flight (proxy_free: their answers are dropped). */
void proxy__key_reads_orphan(struct kb_proxy *px);

/* ---- endpoint.c ---- */

/* The compiled policy of `key` (borrowed from the worker's cache), or NULL
 * when its stored patterns no longer compile (fail closed). */
const struct kb_policy *proxy__key_policy(struct kb_proxy *px, const struct kb_key *key);

/* ---- admit.c ---- */

/* The header lines the vendor receives: the client's, less hop-by-hop,
 * credentials and what the canonical request replaced, plus the secret. */
void proxy__build_headers(const struct kb_hreq *req, const struct kb_vendor *v,
                          const struct kb_cred *cred, const struct kb_canon_req *c,
                          struct kb_buf *out);
/* Writer thread: rate limit, reservation and audit record, in one batch
 * (writer_submit_group; struct kb_job_group is store/writer.h's). */
struct kb_job_group;
extern const struct kb_job_group proxy__admit_group;
/* Worker: answers a refusal, or forwards the admitted request. */
void proxy__admit_done(void *arg, enum kb_err err);

/* ---- forward.c ---- */

extern const struct kb_upstream_ops proxy__upstream_ops;
/* The client connection closed while its request was in flight. */
void proxy__client_closed(struct kb_hreq *req, void *arg);
/* Stops the vendor transfer of a request whose key was revoked or expired
 * (why) and ends its answer where it stands, charged fail-closed. */
void proxy__cut(struct preq *r, enum kb_err why);

/* ---- watch.c ---- */

/* Timer: cuts requests in flight whose key expired or was revoked. */
void proxy__watch_revocations(evutil_socket_t fd, short what, void *arg);

/* ---- strangers.c ---- */

/* Counts a refusal of a request that showed no valid, active key. */
void proxy__stranger_note(struct kb_proxy *px, const char *source, enum kb_err code);
/* Turns what was counted into audit records (one writer job). */
void proxy__strangers_flush(struct kb_proxy *px);
/* Arms the periodic flush; stop flushes and disarms. */
void proxy__strangers_start(struct kb_proxy *px);
void proxy__strangers_stop(struct kb_proxy *px);

/* ---- settle.c ---- */

/* The audit record's fields known at admission. */
void proxy__rec_fill(const struct preq *r, struct kb_audit_rec *rec);
/* Ends the request's life: `actual` replaces the reservation; `fail` is the
 * failure for the audit record (KB_OK when the answer was whole); `reply` is
 * what the client is sent after the commit. With REPLY_NONE it was already
 * answered or cut and the connection is let go now. */
void proxy__settle(struct preq *r, int64_t actual, enum kb_err fail, enum reply_after reply);

/* The same, for a request that is freed at once (shutdown): the
 * settlement and its completion record go to the writer on their own
 * (they run before the writer stops) and nothing is answered. */
void proxy__settle_detached(struct preq *r, int64_t actual, enum kb_err fail);

/* ---- finish.c ---- */

/* How a request ended, for the one finish step. */
struct proxy__end {
    const char *id;          /* request id */
    const char *key_id;      /* may be NULL (no key found) */
    const char *vendor_name; /* may be NULL */
    const char *method;      /* may be NULL */
    const char *path;        /* canonical path, no query; may be NULL */
    int vendor;              /* vendor index for metrics, -1 if unknown */
    int status;              /* the vendor's status, 0 if none */
    enum kb_err code;        /* KB_OK, or why it was refused or failed */
    int64_t cost;            /* micro-dollars settled */
    int64_t latency_us;      /* arrival to end */
    int64_t upstream_us;     /* time at the vendor; 0 never forwarded; -1 refused */
};

/* The one finish step of every request, whatever ended it: its metrics
 * and its access log line (keyed by its id; never a token, a query or a
 * body: the log escapes every value). */
void proxy__finish(const struct proxy__end *e);
/* Refuses `req` with err; msg (may be NULL) is taken. With a key, the
 * refusal is audited with what is known of the request (vendor, the path
 * without its query, capped; never a token) and answered once its record
 * is durable. Without one (never authenticated) it is answered at once and
 * counted for an aggregated record (strangers.c). */
void proxy__refuse(struct kb_proxy *px, struct kb_hreq *req, enum kb_err err, char *msg,
                   const char *id, int64_t start_us, const char *method, const struct kb_key *key,
                   const struct kb_vendor *vendor, const char *path, size_t path_len);

#endif
