/*
 * httpd_int.h - what the three parts of the HTTP/1.1 server share; the
 * contract for everyone else is httpd.h. Only src/net/httpd*.c include it.
 *
 *   httpd.c        connections: accepting under the connection limits (and
 *                  evicting to make room), the body budget, reading,
 *                  writing, timers, closing and freeing
 *   httpd_parse.c  one request out of the read buffer: request line,
 *                  headers, framing, the chunked body, the on_head gate,
 *                  and handing the request to the handler
 *   httpd_reply.c  what a handler calls: the request's getters, response
 *                  headers, whole and streamed replies, abort
 *
 * Everything runs on the server's one loop thread; the only state shared
 * between threads is behind the atomics in struct kb_httpd_opts.
 */
#ifndef KB_NET_HTTPD_INT_H
#define KB_NET_HTTPD_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#include "core/buf.h"
#include "net/httpd.h"

struct event;
struct evbuffer;
typedef struct ssl_st SSL;

/* A limit of the options, now (see struct kb_httpd_opts). */
static inline int64_t httpd__lim(const _Atomic int64_t *v)
{
    return v ? atomic_load_explicit(v, memory_order_relaxed) : INT64_MAX; /* NULL: none */
}
static inline size_t httpd__limz(const _Atomic int64_t *v)
{
    return (size_t)httpd__lim(v);
}

#define RBUF_INIT 4096
/* Longest chunk-size line (with extensions) a chunked body may use. */
#define MAX_CHUNK_LINE 1024
/* How long a connection closed after an error keeps swallowing what the
 * client still sends, so that our answer is not destroyed by a reset. */
#define LINGER_MS 2000
#define OVERLOADED_MSG                                                                             \
    "the server holds as many request bodies as limits.max_buffered_body_bytes allows; retry "     \
    "later"

enum conn_state {
    C_READING = 0,  /* reading a request */
    C_HANDLING = 1, /* a request is with the handler or its answer is going out */
    C_LINGER = 2,   /* answered and half-closed; discarding input until EOF */
    C_CLOSED = 3,   /* closed; freed once no callback of ours is on the stack */
};

enum chunk_state {
    CH_SIZE = 0,     /* expecting a chunk-size line */
    CH_DATA = 1,     /* inside a chunk's data */
    CH_DATA_END = 2, /* expecting the CRLF after a chunk's data */
    CH_TRAILER = 3,  /* trailer lines until the blank one */
};

struct hoff {
    uint32_t name, value; /* offsets into the read buffer */
};

struct hconn {
    struct kb_httpd *h;      /* borrowed */
    int fd;                  /* owned */
    SSL *ssl;                /* owned; NULL on a plain listener */
    bool tls_done;           /* the TLS handshake completed */
    bool tls_rd_wants_write; /* a TLS read waits for the socket to be writable */
    bool tls_wr_wants_read;  /* a TLS write waits for the socket to be readable */
    bool tls_cut;            /* an answer was cut short (hreq_abort): no close_notify, which
                                would make a body that ends at the close look complete */
    char peer[48];           /* the client's address ("127.0.0.1"), "" if unknown */
    int source_slot;         /* its per-source counter, -1 when not counted */
    bool trusted;            /* a request on it carried valid credentials (hreq_trust, or
                                on_head let its head through when evict_untrusted) */
    enum conn_state state;
    struct event *rev, *wev, *timer; /* owned */
    char *rbuf;                      /* owned until handed to a request */
    size_t rlen, rcap;
    char *spare;    /* owned; a RBUF_INIT buffer back from the last request */
    size_t charged; /* body bytes of rbuf charged to the budget (moves with rbuf) */
    /* the request being read */
    size_t scanned;    /* head bytes already searched for the blank line */
    size_t head_len;   /* the head's length once whole, else 0 */
    struct hoff *hoff; /* owned; header offsets */
    size_t nh, hcap;
    uint32_t target_off;
    enum kb_method method;
    int minor;
    bool line_ok;                   /* the request line was read */
    size_t body_max;                /* the limits this request is read under, taken when */
    size_t header_max;              /* its head was parsed (a reload holds from the next) */
    bool gate_held;                 /* on_head holds the head (httpd_gate_hold) */
    kb_hgate_cancel_cb gate_cancel; /* told if the connection closes first */
    void *gate_arg;
    bool keepalive;
    bool expect_continue;
    bool chunked;
    int64_t clen; /* Content-Length, 0 when none */
    enum chunk_state ch;
    size_t body_end;   /* chunked: end of the decoded body */
    size_t cursor;     /* chunked: next raw byte */
    size_t chunk_left; /* chunked: data bytes left in the current chunk */
    size_t trailer;    /* chunked: trailer bytes so far */
    /* the answer */
    struct evbuffer *out; /* owned */
    struct kb_hreq *req;  /* the request being handled or answered */
    bool eof;             /* the client sent FIN */
    bool reading;         /* rev is registered */
    bool writing;         /* wev is registered */
    bool flush_soon;      /* wev was made active: a flush at the end of this loop turn */
    int depth;            /* our callbacks for it on the stack */
    struct hconn *prev, *next;
};

struct kb_hreq {
    struct hconn *conn;      /* borrowed; NULL once the client is gone */
    char *buf;               /* owned; the request's bytes */
    size_t bufcap;           /* its size */
    size_t charged;          /* body bytes of buf charged to *budget; given back by req_free */
    _Atomic int64_t *budget; /* borrowed; the server's body budget, NULL if none */
    enum kb_method method;
    const char *method_name; /* into buf, or "" */
    const char *target;      /* into buf, or NULL */
    int minor;
    enum kb_err error;
    const char *errmsg; /* static */
    const char *body;   /* into buf */
    size_t body_len;
    struct kb_buf head; /* response header lines added by the handler */
    char peer[48];      /* the client's address, "" if unknown */
    bool close_after;
    bool has_clen; /* the handler added Content-Length */
    bool has_date;
    bool started;  /* the response head went out */
    bool chunked;  /* the streamed body is chunk-encoded */
    bool no_body;  /* HEAD, 1xx, 204, 304: no body bytes */
    bool finished; /* the handler made its final reply */
    kb_hreq_cb complete_cb, close_cb, drain_cb;
    void *complete_arg, *close_arg, *drain_arg;
    size_t nh;
    struct kb_hdr hdrs[]; /* nh of them */
};

struct kb_httpd {
    struct event_base *base; /* borrowed */
    int listen_fd;           /* owned; -1 once stopped */
    struct event *accept_ev; /* owned; NULL once stopped */
    struct kb_httpd_opts o;
    struct timeval read_tv, linger_tv; /* common timeouts */
    struct timeval handshake_tv;       /* TLS handshake deadline */
    struct hconn *conns;               /* open connections, doubly linked */
};

/* ---- httpd.c: connections ---- */

/* Our callback for `c` returns: the outermost frees a closed connection. */
void httpd__conn_leave(struct hconn *c);
/* Closes `c` (the request detached: its close or complete callback runs);
 * freed now, or by the outermost of our callbacks on the stack. */
void httpd__conn_close(struct hconn *c);
/* Starts (on) or stops reading the connection's socket; on, bytes TLS
 * already decrypted are read on the next loop turn (the socket may never
 * say so again). */
void httpd__conn_read(struct hconn *c, bool on);
/* One write of the answer's buffered bytes to the socket (through TLS
 * when the listener has it): as evbuffer_write. */
int httpd__conn_send(struct hconn *c);
/* Writes what the kernel takes; registers for more, or finishes the
 * answer (the next request, linger or close). May close `c`. */
void httpd__conn_flush(struct hconn *c);
/* Raises what `c`'s buffer holds charged to the body budget to `want`
 * bytes; false, and nothing charged, when that would pass the budget. */
bool httpd__budget_charge(struct hconn *c, size_t want);
/* Frees a request and gives its budget charge back. */
void httpd__req_free(struct kb_hreq *r);

/* ---- httpd_parse.c: requests ---- */

/* Forgets the request being read (not the buffered bytes). */
void httpd__parse_reset(struct hconn *c);
/* How far the read buffer may grow for the request being read. */
size_t httpd__read_limit(const struct hconn *c);
/* Makes what progress the buffered bytes allow on the request being read;
 * dispatches it when whole (or refused). May close `c`. */
void httpd__parse(struct hconn *c);
/* The request being read is refused: the handler answers it with `err`
 * (`msg` static, or NULL for the default), and the connection closes
 * after (what follows cannot be trusted). */
void httpd__dispatch_error(struct hconn *c, enum kb_err err, const char *msg);

#endif
