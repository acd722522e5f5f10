/*
 * upstream.c - libcurl multi on a libevent loop (see upstream.h).
 *
 * The classic hiperfifo wiring: curl tells us which sockets to watch
 * (sock_cb) and when to time out (timer_cb); libevent tells curl when a
 * socket is ready. Traps from ../shared/notes/evhttp-libcurl.md handled
 * here: MAXCONNECTS set large, no proxy/env lookups, "Expect:" suppressed,
 * the header list reset on every status line (1xx blocks), the result read
 * before the handle is removed.
 *
 * Sockets (notes, trick 2): curl tells us to stop watching a connection
 * when its transfer ends and to watch it again when the next transfer
 * reuses it from the pool, which in the textbook wiring is an epoll_ctl
 * DEL and ADD per request (4.9 epoll_ctl per request were measured). Here
 * the sockets curl opens are tracked from open to close (opensocket_cb,
 * closesocket_cb) and stay registered while pooled: an idle one that turns
 * readable has been closed by the vendor and is simply unwatched (curl
 * finds it dead on reuse and closes it). The close callback is what makes
 * this safe: a registration never outlives its fd.
 */
#include "proxy/upstream.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"

struct kb_upstream {
    struct event_base *base; /* borrowed */
    CURLM *multi;            /* owned */
    struct event *timer;     /* owned */
    struct kb_upstream_opts opts;
    struct kb_upstream_req *reqs; /* owned; running transfers, doubly linked */
    CURL *idle[64];               /* owned; reset easy handles ready for reuse */
    int nidle;
    struct sock **socks; /* owned; watched sockets, indexed by fd */
    size_t nsocks;
};

struct kb_upstream_req {
    struct kb_upstream *u;             /* borrowed */
    CURL *easy;                        /* owned */
    struct curl_slist *headers;        /* owned */
    const struct kb_upstream_ops *ops; /* borrowed */
    void *arg;                         /* borrowed */
    int status;                        /* status of the current header block */
    bool head_sent;                    /* on_head fired */
    bool cancelled;                    /* upstream_cancel inside a callback */
    int in_cb;                         /* depth of curl callbacks on the stack */
    struct kb_upstream_req *prev, *next;
};

struct sock {
    struct event *ev; /* owned */
    short kind;       /* events registered, 0 when none */
    bool ours;        /* opened by opensocket_cb; freed by closesocket_cb */
    bool idle;        /* in curl's pool: watched only for the vendor closing it */
};

static void check_done(struct kb_upstream *u);

static struct sock *sock_at(const struct kb_upstream *u, curl_socket_t fd)
{
    return fd >= 0 && (size_t)fd < u->nsocks ? u->socks[fd] : NULL;
}

static void event_cb(evutil_socket_t fd, short kind, void *arg)
{
    struct kb_upstream *u = arg;
    struct sock *so = sock_at(u, fd);
    if (so && so->idle) {
        /* a pooled connection has something to say: the vendor closed it */
        event_del(so->ev);
        so->kind = 0;
        return;
    }
    int action = (kind & EV_READ ? CURL_CSELECT_IN : 0) | (kind & EV_WRITE ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(u->multi, fd, action, &running);
    check_done(u);
}

static void timeout_cb(evutil_socket_t fd, short kind, void *arg)
{
    (void)fd;
    (void)kind;
    struct kb_upstream *u = arg;
    int running;
    curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(u);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct kb_upstream *u = userp;
    if (timeout_ms < 0) {
        evtimer_del(u->timer);
    } else {
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        evtimer_add(u->timer, &tv);
    }
    return 0;
}

static struct sock *sock_new(struct kb_upstream *u, curl_socket_t fd, bool ours)
{
    if ((size_t)fd >= u->nsocks) {
        size_t n = u->nsocks ? u->nsocks : 64;
        while (n <= (size_t)fd)
            n *= 2;
        u->socks = kb_realloc(u->socks, n * sizeof *u->socks);
        memset(u->socks + u->nsocks, 0, (n - u->nsocks) * sizeof *u->socks);
        u->nsocks = n;
    }
    struct sock *so = kb_calloc(1, sizeof *so);
    so->ev = event_new(u->base, fd, EV_PERSIST, event_cb, u);
    so->ours = ours;
    u->socks[fd] = so;
    return so;
}

static void sock_free(struct kb_upstream *u, curl_socket_t fd)
{
    struct sock *so = sock_at(u, fd);
    if (!so)
        return;
    event_free(so->ev);
    free(so);
    u->socks[fd] = NULL;
}

/* Registers exactly `kind` for the socket; no system call when it already
 * is (the common case when a pooled connection is reused for reading). */
static void sock_watch(struct kb_upstream *u, curl_socket_t fd, struct sock *so, short kind)
{
    if (so->kind == kind)
        return;
    if (so->kind)
        event_del(so->ev);
    so->kind = kind;
    if (kind) {
        event_assign(so->ev, u->base, fd, (short)(kind | EV_PERSIST), event_cb, u);
        event_add(so->ev, NULL);
    }
}

static int sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *sockp)
{
    (void)easy;
    (void)sockp;
    struct kb_upstream *u = userp;
    struct sock *so = sock_at(u, s);
    if (what == CURL_POLL_REMOVE) {
        if (so && so->ours) {
            /* pooled (or about to be closed, which closesocket_cb sees):
             * stay registered for reading, where a reuse usually wants it */
            so->idle = true;
            sock_watch(u, s, so, EV_READ);
        } else if (so) {
            sock_free(u, s); /* not ours (a resolver's): nobody tells us of its close */
        }
        return 0;
    }
    if (!so)
        so = sock_new(u, s, false);
    so->idle = false;
    sock_watch(
        u, s, so,
        (short)((what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0)));
    return 0;
}

static curl_socket_t opensocket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
    struct kb_upstream *u = clientp;
    if (purpose != CURLSOCKTYPE_IPCXN)
        return CURL_SOCKET_BAD;
    curl_socket_t fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
    if (fd >= 0)
        sock_new(u, fd, true);
    return fd;
}

static int closesocket_cb(void *clientp, curl_socket_t fd)
{
    sock_free(clientp, fd);
    return close(fd);
}

enum kb_err upstream_new(struct event_base *base, const struct kb_upstream_opts *o,
                         struct kb_upstream **out, char **errmsg)
{
    struct kb_upstream *u = kb_calloc(1, sizeof *u);
    u->base = base;
    u->opts = *o;
    u->multi = curl_multi_init();
    if (!u->multi) {
        free(u);
        kb_set_errmsg(errmsg, "curl_multi_init failed");
        return KB_E_INTERNAL;
    }
    u->timer = evtimer_new(base, timeout_cb, u);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, o->max_connections);
    *out = u;
    return KB_OK;
}

static void req_unlink(struct kb_upstream_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        r->u->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void req_free(struct kb_upstream_req *r)
{
    struct kb_upstream *u = r->u;
    curl_multi_remove_handle(u->multi, r->easy);
    /* easy handles are reused (notes: pool them per thread); a reset one
     * keeps its buffers and caches but no option of the last request */
    if (u->nidle < (int)(sizeof u->idle / sizeof u->idle[0])) {
        curl_easy_reset(r->easy);
        u->idle[u->nidle++] = r->easy;
    } else {
        curl_easy_cleanup(r->easy);
    }
    curl_slist_free_all(r->headers);
    req_unlink(r);
    free(r);
}

void upstream_free(struct kb_upstream *u)
{
    if (!u)
        return;
    while (u->reqs)
        req_free(u->reqs);
    while (u->nidle > 0)
        curl_easy_cleanup(u->idle[--u->nidle]);
    curl_multi_cleanup(u->multi); /* closes the pool: closesocket_cb for each */
    for (size_t i = 0; i < u->nsocks; i++)
        sock_free(u, (curl_socket_t)i);
    free(u->socks);
    event_free(u->timer);
    free(u);
}

static enum kb_err map_result(CURLcode rc)
{
    switch (rc) {
    case CURLE_OK:
        return KB_OK;
    case CURLE_OPERATION_TIMEDOUT:
        return KB_E_UPSTREAM_TIMEOUT;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
        return KB_E_UPSTREAM_UNREACHABLE;
    default:
        return KB_E_UPSTREAM_ERROR;
    }
}

static void check_done(struct kb_upstream *u)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(u->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURLcode rc = msg->data.result; /* read before remove: remove invalidates msg */
        struct kb_upstream_req *r = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        enum kb_err err = map_result(rc);
        if (err == KB_OK && !r->head_sent)
            err = KB_E_UPSTREAM_ERROR; /* a response with no final status */
        if (err != KB_OK && rc != CURLE_OK)
            kb_log(KB_LOG_DEBUG, "upstream transfer failed", "error", curl_easy_strerror(rc), NULL);
        bool cancelled = r->cancelled;
        const struct kb_upstream_ops *ops = r->ops;
        void *arg = r->arg;
        req_free(r);
        if (!cancelled)
            ops->on_done(arg, err);
    }
}

static size_t header_cb(char *data, size_t size, size_t n, void *userp)
{
    struct kb_upstream_req *r = userp;
    size_t len = size * n;
    if (r->cancelled)
        return 0;
    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        /* a status line starts a new header block (1xx, or the final one) */
        const char *sp = memchr(data, ' ', len);
        r->status = 0;
        if (sp && (size_t)(sp - data) + 4 <= len) {
            int st = 0;
            for (int i = 1; i <= 3; i++) {
                char c = sp[i];
                if (c < '0' || c > '9')
                    return 0;
                st = st * 10 + (c - '0');
            }
            r->status = st;
        }
        return r->status >= 100 ? len : 0;
    }
    if (len <= 2 && (len == 0 || data[0] == '\r' || data[0] == '\n')) {
        if (r->status >= 200 && !r->head_sent) {
            r->head_sent = true;
            r->in_cb++;
            r->ops->on_head(r->arg, r->status);
            r->in_cb--;
        }
        return r->cancelled ? 0 : len;
    }
    if (r->status < 200 || r->head_sent)
        return len; /* interim block or trailers: not forwarded */
    const char *colon = memchr(data, ':', len);
    if (!colon || colon == data)
        return len;
    size_t nlen = (size_t)(colon - data);
    const char *v = colon + 1;
    size_t vlen = len - nlen - 1;
    while (vlen && (*v == ' ' || *v == '\t'))
        v++, vlen--;
    while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' ' ||
                    v[vlen - 1] == '\t'))
        vlen--;
    r->in_cb++;
    r->ops->on_header(r->arg, data, nlen, v, vlen);
    r->in_cb--;
    return r->cancelled ? 0 : len;
}

static size_t write_cb(char *data, size_t size, size_t n, void *userp)
{
    struct kb_upstream_req *r = userp;
    size_t len = size * n;
    if (r->cancelled)
        return 0;
    r->in_cb++;
    bool took = r->ops->on_body(r->arg, data, len);
    r->in_cb--;
    if (r->cancelled)
        return 0;
    return took ? len : CURL_WRITEFUNC_PAUSE;
}

struct kb_upstream_req *upstream_start(struct kb_upstream *u, const char *method, const char *url,
                                       struct curl_slist *headers, const char *body,
                                       size_t body_len, const struct kb_upstream_ops *ops,
                                       void *arg)
{
    struct kb_upstream_req *r = kb_calloc(1, sizeof *r);
    r->u = u;
    r->ops = ops;
    r->arg = arg;
    r->headers = headers;
    CURL *e = r->easy = u->nidle > 0 ? u->idle[--u->nidle] : curl_easy_init();
    if (!e)
        abort(); /* only out of memory makes this fail */
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, opensocket_cb);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, u);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, closesocket_cb);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, u);
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (u->opts.ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, u->opts.ca_file);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)u->opts.connect_timeout_ms);
    /* idle timeout: under 1 byte/s for the whole period */
    long idle_s = (long)((u->opts.idle_timeout_ms + 999) / 1000);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, idle_s > 0 ? idle_s : 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
        if (strcmp(method, "POST") == 0 || body_len > 0) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        }
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
    r->next = u->reqs;
    if (u->reqs)
        u->reqs->prev = r;
    u->reqs = r;
    curl_multi_add_handle(u->multi, e);
    return r;
}

void upstream_resume(struct kb_upstream_req *r)
{
    curl_easy_pause(r->easy, CURLPAUSE_CONT);
}

void upstream_cancel(struct kb_upstream_req *r)
{
    if (!r)
        return;
    if (r->in_cb) {
        /* inside one of its own callbacks: curl still holds the handle, so
         * mark it; the callback returns an error and check_done frees it */
        r->cancelled = true;
        return;
    }
    req_free(r);
}
