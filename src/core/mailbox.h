/*
 * mailbox.h - hands work from any thread to one event loop: a message runs
 * its `deliver` function on the loop's thread, messages in the order they
 * were posted. The store's reader threads answer the workers through it.
 *
 * Messages are intrusive (a struct kb_mail inside the poster's own
 * struct), so posting allocates nothing. A thread that will post later
 * takes a hold first (mailbox_hold, on any thread); mailbox_post consumes
 * it. The loop closes its mailbox with mailbox_close: messages not yet
 * delivered, and every message posted afterwards, are handed to their
 * `drop` function instead (on the thread that closes or posts), so the
 * poster's memory is always freed exactly once. The mailbox itself lives
 * until the last hold is gone.
 */
#ifndef KB_CORE_MAILBOX_H
#define KB_CORE_MAILBOX_H

struct event_base;
struct kb_mailbox;

struct kb_mail {
    struct kb_mail *next;               /* the mailbox's */
    void (*deliver)(struct kb_mail *m); /* on the loop's thread */
    void (*drop)(struct kb_mail *m);    /* the loop is gone: free what m belongs to */
};

/* A mailbox for `base`'s loop. Loop or main thread, before posting. Aborts
 * when the process is out of file descriptors (start-up only). */
struct kb_mailbox *mailbox_new(struct event_base *base);

/* Closes it (loop thread; may be called from a deliver function). */
void mailbox_close(struct kb_mailbox *mb);

/* Reserves one future post. Any thread. */
void mailbox_hold(struct kb_mailbox *mb);

/* Posts m, consuming a hold. Any thread. */
void mailbox_post(struct kb_mailbox *mb, struct kb_mail *m);

/* Posts the n messages chained from first through their `next` (last's
 * next is NULL), in that order, consuming n holds: one lock and at most
 * one wake-up for them all. Any thread. */
void mailbox_post_chain(struct kb_mailbox *mb, struct kb_mail *first, struct kb_mail *last, int n);

#endif
