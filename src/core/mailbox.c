/*
 * mailbox.c - thread-to-loop messages (see mailbox.h): a list under a
 * mutex and an eventfd that wakes the loop, which takes the whole list at
 * once. References: the loop's own, plus one per hold; the last one frees.
 */
#include "core/mailbox.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/alloc.h"

struct kb_mailbox {
    pthread_mutex_t mu;   /* guards head, tail, closed */
    struct kb_mail *head; /* posted, not yet delivered */
    struct kb_mail *tail;
    bool closed;
    _Atomic int refs;
    int efd;              /* owned */
    struct event *ev;     /* owned; loop thread */
    bool dispatching;     /* loop thread: inside on_mail */
    bool close_requested; /* loop thread: closed from a deliver function */
};

static void unref(struct kb_mailbox *mb, int n)
{
    if (atomic_fetch_sub(&mb->refs, n) != n)
        return;
    close(mb->efd);
    pthread_mutex_destroy(&mb->mu);
    free(mb);
}

static void drop_list(struct kb_mail *list)
{
    for (struct kb_mail *m = list, *next; m; m = next) {
        next = m->next;
        m->drop(m);
    }
}

static void finish_close(struct kb_mailbox *mb)
{
    event_free(mb->ev);
    mb->ev = NULL;
    pthread_mutex_lock(&mb->mu);
    mb->closed = true;
    struct kb_mail *list = mb->head;
    mb->head = mb->tail = NULL;
    pthread_mutex_unlock(&mb->mu);
    drop_list(list);
    unref(mb, 1); /* the loop's */
}

static void on_mail(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct kb_mailbox *mb = arg;
    uint64_t n;
    if (read(fd, &n, sizeof n) < 0 && errno != EAGAIN && errno != EINTR)
        abort(); /* an eventfd read fails only on a bad fd */
    pthread_mutex_lock(&mb->mu);
    struct kb_mail *list = mb->head;
    mb->head = mb->tail = NULL;
    pthread_mutex_unlock(&mb->mu);
    mb->dispatching = true;
    for (struct kb_mail *m = list, *next; m; m = next) {
        next = m->next;
        if (mb->close_requested) {
            m->drop(m);
            continue;
        }
        m->deliver(m);
    }
    mb->dispatching = false;
    if (mb->close_requested)
        finish_close(mb);
}

struct kb_mailbox *mailbox_new(struct event_base *base)
{
    struct kb_mailbox *mb = kb_calloc(1, sizeof *mb);
    pthread_mutex_init(&mb->mu, NULL);
    atomic_init(&mb->refs, 1);
    mb->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (mb->efd < 0)
        abort();
    mb->ev = event_new(base, mb->efd, EV_READ | EV_PERSIST, on_mail, mb);
    if (!mb->ev || event_add(mb->ev, NULL) != 0)
        abort();
    return mb;
}

void mailbox_close(struct kb_mailbox *mb)
{
    if (!mb)
        return;
    if (mb->dispatching) {
        mb->close_requested = true; /* on_mail finishes it */
        return;
    }
    finish_close(mb);
}

void mailbox_hold(struct kb_mailbox *mb)
{
    atomic_fetch_add(&mb->refs, 1);
}

void mailbox_post(struct kb_mailbox *mb, struct kb_mail *m)
{
    m->next = NULL;
    mailbox_post_chain(mb, m, m, 1);
}

void mailbox_post_chain(struct kb_mailbox *mb, struct kb_mail *m, struct kb_mail *last, int n)
{
    pthread_mutex_lock(&mb->mu);
    bool closed = mb->closed, wake = !closed && !mb->head;
    if (!closed) {
        if (mb->tail)
            mb->tail->next = m;
        else
            mb->head = m;
        mb->tail = last;
    }
    if (wake) {
        /* under the mutex: the loop cannot close (and the fd go) first */
        uint64_t one = 1;
        if (write(mb->efd, &one, sizeof one) < 0 && errno != EAGAIN)
            abort();
    }
    pthread_mutex_unlock(&mb->mu);
    if (closed)
        drop_list(m);
    unref(mb, n);
}
