/*
 * upstream_int.h - what the three files of the upstream client share: the
 * states and structures of origins, connections and requests. Private to
 * upstream.c (the API, batches, life cycle), upstream_conn.c (origins,
 * DNS, connections, TLS, I/O) and upstream_parse.c (reading an answer).
 * One event loop thread per struct kb_upstream: nothing here is locked.
 */
#ifndef KB_PROXY_UPSTREAM_INT_H
#define KB_PROXY_UPSTREAM_INT_H
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "proxy/upstream.h"

#include "net/h1.h"

#define MAX_ADDRS 4            /* addresses tried per connection attempt */
#define MAX_HEAD (64 * 1024)   /* response status line and headers */
#define READ_BUF (16 * 1024)   /* read buffer of a connection */
#define DNS_TTL_MS (60 * 1000) /* an origin's addresses are looked up again after this */
#define MAX_INTERIM 16         /* 1xx blocks before the final answer */

enum conn_state { C_CONNECTING, C_HANDSHAKE, C_ACTIVE, C_IDLE };

/* where the parser stands in the response */
enum pstate {
    P_STATUS,     /* status line */
    P_HEADER,     /* header lines */
    P_LENGTH,     /* Content-Length body */
    P_EOF,        /* body up to the connection's end */
    P_CHUNK_SIZE, /* chunk size line */
    P_CHUNK_DATA, /* chunk bytes */
    P_CHUNK_END,  /* the CRLF after a chunk */
    P_TRAILER,    /* trailer lines after the last chunk */
};

struct origin {
    char *key; /* owned; "scheme://authority" as the URLs spell it */
    size_t keylen;
    char *host;    /* owned; brackets removed */
    char *hosthdr; /* owned; the Host header's value */
    int port;
    bool tls;
    bool literal; /* the host is an IP address */
    struct sockaddr_storage addrs[MAX_ADDRS];
    socklen_t addrlen[MAX_ADDRS];
    int naddrs;
    int64_t resolved_ms;                   /* monotonic; 0 until looked up */
    bool resolving;                        /* a lookup runs */
    struct evdns_getaddrinfo_request *dns; /* the lookup, while it runs */
    struct kb_upstream_req *waiting;       /* requests waiting for it */
    struct conn *idle;                     /* pooled connections, most recent first */
    struct kb_upstream *u;                 /* borrowed */
    struct origin *next;
};

struct conn {
    struct kb_upstream *u; /* borrowed */
    struct origin *o;      /* borrowed */
    int fd;
    SSL *ssl;            /* owned; NULL for http */
    struct event *ev;    /* owned; the socket */
    struct event *timer; /* owned; connect or idle deadline */
    short watching;      /* EV_READ / EV_WRITE registered */
    enum conn_state state;
    int addr;                    /* index of the address being tried */
    bool reused;                 /* served a whole response before */
    bool read_wants_write;       /* TLS: SSL_read asked for writability */
    int64_t deadline_ms;         /* connect deadline, or last I/O + idle timeout */
    struct kb_upstream_req *req; /* the request on it, NULL when idle */
    char *buf;                   /* owned; read buffer */
    size_t start, end, cap;      /* unparsed bytes are buf[start, end) */
    struct conn *prev, *next;    /* in the origin's pool */
};

/* which list a request is on */
enum where { W_NONE, W_STARTING, W_DNS, W_CONN };

struct kb_upstream_req {
    struct kb_upstream *u;             /* borrowed */
    struct origin *o;                  /* borrowed; NULL until started */
    struct conn *c;                    /* borrowed; the connection it is on */
    const struct kb_upstream_ops *ops; /* borrowed */
    void *arg;                         /* borrowed */
    enum where where;
    char *out; /* owned; request line and headers */
    size_t out_len;
    const char *body; /* borrowed */
    size_t body_len;
    size_t sent; /* bytes of out + body written */
    bool no_body;
    enum pstate ps;
    int status;
    int64_t remaining; /* of the Content-Length body or of the chunk */
    int64_t clen;      /* Content-Length, -1 when none */
    bool chunked;
    bool te;                           /* a Transfer-Encoding came: it frames, not Content-Length */
    int interim;                       /* 1xx blocks so far */
    bool keep_alive;                   /* the connection may serve another request */
    bool got_bytes;                    /* some byte of the answer arrived */
    bool head_sent;                    /* on_head fired */
    size_t head_bytes;                 /* of the header block so far */
    bool paused;                       /* on_body refused */
    bool retried;                      /* already moved off a dead pooled connection */
    bool wrote;                        /* a byte of the request was written: never re-sent */
    bool cancelled;                    /* upstream_cancel inside a callback */
    int in_cb;                         /* depth of the caller's callbacks on the stack */
    struct kb_upstream_req *next_wait; /* in the origin's or the batch's list */
    struct kb_upstream_req *prev, *next; /* every live request */
};

struct kb_upstream {
    struct event_base *base; /* borrowed */
    struct evdns_base *dns;  /* owned */
    SSL_CTX *tls;            /* owned */
    struct kb_upstream_opts opts;
    const struct timeval *connect_tv, *idle_tv; /* libevent common timeouts */
    struct event *kick;                         /* owned; starts the batch */
    struct kb_upstream_req *starting, **starting_tail;
    struct kb_upstream_req *reqs;   /* every live request */
    struct origin *origins;         /* owned */
    struct kb_upstream_base *bases; /* owned */
    long nidle;                     /* pooled connections over all origins */
};

/* A base URL, parsed once: its origin and the path that prefixes every
 * request's target. */
struct kb_upstream_base {
    struct origin *o; /* borrowed from the origin list */
    char *prefix;     /* owned; what follows the authority */
    size_t prefix_len;
    struct kb_upstream_base *next;
};

/* upstream.c: a request that cannot start fails through its callbacks */
void upstream__req_fail(struct kb_upstream_req *r, enum kb_err err, const char *why);

/* upstream_conn.c: connections, the pool and a request's end */
const struct timeval *upstream__common_timeout(struct event_base *base, int64_t ms);
struct origin *upstream__origin_get(struct kb_upstream *u, const char *url, size_t *target_at);
void upstream__req_connect(struct kb_upstream_req *r); /* the origin's address, then a connection */
void upstream__conn_watch(struct conn *c, short what);
void upstream__conn_arm(struct conn *c, int64_t ms, const struct timeval *tv);
void upstream__conn_send(struct conn *c);
void upstream__conn_fail(struct conn *c, enum kb_err err, const char *why);
void upstream__conn_release(struct conn *c, bool pool); /* back to the pool, or closed */
void upstream__conn_close(struct conn *c);
void upstream__pool_unlink(struct conn *c);
void upstream__req_finish(struct kb_upstream_req *r, enum kb_err err); /* on_done, then freed */
void upstream__req_free(struct kb_upstream_req *r);

/* upstream_parse.c: parses what the connection read; false when the
 * connection is gone */
bool upstream__conn_process(struct conn *c);

#endif
