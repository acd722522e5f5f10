/*
 * meter_int.h - what the meter files share with each other and with nobody
 * else: the parsed pricing tables, the per-request state behind struct
 * kb_meter, the SSE line splitter, the form decoder and the saturating
 * integer arithmetic every cost goes through.
 *
 * meter.c owns loading, dispatch and the request life cycle; each vendor file
 * (stripe.c, twilio.c, openai.c, anthropic.c, fixed.c) fills a struct
 * kb_meter in its meter__<vendor>_begin() and, when the cost depends on the
 * response, points m->ops at its callbacks.
 */
#ifndef KB_METER_METER_INT_H
#define KB_METER_METER_INT_H
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"
#include "meter/meter.h"

/* Largest single SSE event kept; a longer one is skipped, never buffered. */
#define METER__MAX_EVENT (1024 * 1024)
/* Largest non-streamed JSON response buffered to read usage from. */
#define METER__MAX_JSON_BODY (4 * 1024 * 1024)
/* Input tokens added to the byte bound: hidden prompt text the vendor adds
 * (Anthropic's tool-use system prompt is a few hundred tokens). */
#define METER__INPUT_SLACK_TOKENS 1024
/* Tokens per million, the unit of every LLM price. */
#define METER__MTOK 1000000LL

/* Prices of one model in micro-dollars per million tokens. */
struct meter__prices {
    int64_t input;          /* uncached input */
    int64_t cached_input;   /* OpenAI: prompt tokens served from cache */
    int64_t output;         /* output (reasoning included) */
    int64_t cache_write;    /* Anthropic: 5-minute cache write */
    int64_t cache_write_1h; /* Anthropic: 1-hour cache write */
    int64_t cache_read;     /* Anthropic: cache read */
};

struct meter__model {
    char *name;                   /* owned; the configured id or prefix */
    struct meter__prices base;    /* normal prices */
    struct meter__prices longctx; /* used when input tokens exceed long_threshold */
    int64_t long_threshold;       /* input tokens; 0 = no long-context pricing */
    int64_t max_output;           /* output cap when the request sets none */
};

struct meter__models {
    struct meter__model *v;              /* owned array */
    size_t n;                            /* entries in v */
    const struct meter__model *fallback; /* the "default" entry (points into v) or NULL */
};

struct meter__currency {
    char code[4]; /* lowercase ISO 4217 code, NUL-terminated */
    int exponent; /* digits of the minor unit (jpy 0, usd 2, kwd 3) */
    int64_t rate; /* micro-dollars per major unit; -1 = no rate configured */
};

struct meter__stripe_cfg {
    struct meter__currency *cur;    /* owned array */
    size_t ncur;                    /* entries in cur */
    int64_t unknown_amount_reserve; /* micros; -1 = refuse such requests */
};

struct meter__prefix_price {
    char *prefix;   /* owned; "+1", "+44", "whatsapp:+1", ... matched against To */
    int64_t micros; /* the price for destinations starting with prefix */
};

/* Prices by destination: the longest matching prefix, else dflt. */
struct meter__prefix_table {
    struct meter__prefix_price *v; /* owned array */
    size_t n;                      /* entries in v */
    int64_t dflt;                  /* price when no prefix matches */
};

/* Number types of meter__twilio_cfg.number (IncomingPhoneNumbers/{type}). */
enum meter__number_type {
    METER__NUMBER_LOCAL = 0,     /* Local */
    METER__NUMBER_MOBILE = 1,    /* Mobile */
    METER__NUMBER_TOLL_FREE = 2, /* TollFree */
    METER__NUMBER_TYPES = 3      /* count */
};

struct meter__twilio_cfg {
    struct meter__prefix_price *sms;    /* owned array */
    size_t nsms;                        /* entries in sms */
    int64_t sms_default;                /* per segment when no prefix matches */
    struct meter__prefix_table mms;     /* per MMS message, by To */
    struct meter__prefix_table channel; /* per message to "whatsapp:+..." etc., by To */
    struct meter__prefix_table call;    /* per started minute, by To */
    struct meter__prefix_table number[METER__NUMBER_TYPES]; /* per month, by number */
    int64_t call_estimate;          /* least reserved for a call without TimeLimit */
    int64_t call_estimate_minutes;  /* minutes reserved for a call without TimeLimit */
    int64_t recording_per_minute;   /* added per minute of a recorded call */
    int64_t conference_per_minute;  /* added per minute of a conference participant */
    int64_t amd_per_call;           /* answering machine detection, per call */
    int64_t engagement_per_message; /* scheduling or link shortening, per message */
    int64_t failed_message_fee;     /* a message Twilio answers as "failed" */
    int64_t unknown_segments;       /* segments reserved when Body is absent */
};

struct kb_policy;

struct meter__fixed {
    char *vendor;             /* owned */
    struct kb_policy *policy; /* owned; the one compiled pattern */
    int64_t micros;           /* cost of a matching request */
};

struct kb_pricing {
    char *version;                  /* owned; "YYYY-MM-DD" */
    struct meter__models openai;    /* OpenAI models */
    struct meter__models anthropic; /* Anthropic models */
    struct meter__stripe_cfg stripe;
    struct meter__twilio_cfg twilio;
    struct meter__fixed *fixed; /* owned array, in the order added */
    size_t nfixed;              /* entries in fixed */
};

/* Incremental text/event-stream parser: bytes in, whole events out. */
struct meter__sse {
    struct kb_buf line; /* the current, unfinished line */
    struct kb_buf data; /* data: lines of the current event, joined by '\n' */
    char event[64];     /* event: name of the current event, "" if none */
    bool has_data;      /* a data: line was seen in the current event */
    bool line_seen;     /* the current line has bytes (kept or dropped) */
    bool skip;          /* the current event outgrew METER__MAX_EVENT */
    bool cr;            /* the last byte was CR: a following LF is part of it */
};

typedef void meter__sse_cb(void *ctx, const char *event, const char *data, size_t len);

struct kb_meter;

/* What a vendor meter does after meter_begin (all may be NULL). */
struct meter__ops {
    /* One complete SSE event of a 2xx streamed response. */
    void (*event)(struct kb_meter *m, const char *event, const char *data, size_t len);
    /* The cost of a 2xx response; m->body holds the buffered response when
     * m->body_cap was set and it fit. */
    int64_t (*settle)(struct kb_meter *m, bool complete);
    /* Frees m->state. */
    void (*free)(void *state);
};

struct kb_meter {
    const struct kb_pricing *p;   /* borrowed; outlives the meter */
    const struct meter__ops *ops; /* static; NULL: a 2xx costs on_success */
    void *state;                  /* owned by ops->free */
    int64_t reserve;              /* worst case, from begin */
    int64_t on_success;           /* cost of a 2xx when ops->settle is NULL */
    int status;                   /* final upstream status; 0 until known */
    bool req_stream;              /* the request asked for a stream */
    bool sse;                     /* the response is text/event-stream */
    size_t body_cap;              /* > 0: buffer a non-SSE response up to this */
    bool body_over;               /* the response outgrew body_cap */
    bool blind;                   /* the response cannot be read (encoding): settle
                                     charges what an unread metered answer costs */
    struct kb_buf body;           /* the buffered response */
    struct meter__sse sse_state;  /* used when sse */
};

/* ---- meter.c: arithmetic ---- */

/* ceil(a * b / d) for a, b >= 0, d > 0, saturating at KB_MONEY_MAX_MICROS. */
int64_t meter__mul_div_ceil(int64_t a, int64_t b, int64_t d);
/* a * b and a + b for values >= 0, saturating at KB_MONEY_MAX_MICROS. */
int64_t meter__mul_sat(int64_t a, int64_t b);
int64_t meter__add_sat(int64_t a, int64_t b);
/* Micro-dollars for `tokens` at `per_mtok` micros per million, rounded up. */
int64_t meter__token_cost(int64_t tokens, int64_t per_mtok);

/* ---- meter.c: models ---- */

/* Exact id, then the longest configured name that is a prefix of id followed
 * by '-' (dated snapshots), then the "default" entry; NULL when none. */
/* Reads the price member `key` of obj ("where.key" in messages): required,
 * or, with dflt >= 0, optional with that default. */
KB_MUSTCHECK enum kb_err meter__member_price(json_t *obj, const char *where, const char *key,
                                             int64_t dflt, int64_t *out, char **errmsg);

const struct meter__model *meter__model_find(const struct meter__models *t, const char *id);

/* Parses the JSON request body into *root (caller decrefs, set even on a
 * pricing failure) and finds the price of its "model" in t: KB_E_INVALID
 * without a model, KB_E_MODEL_NOT_PRICED without a price. */
KB_MUSTCHECK enum kb_err meter__model_for(const struct kb_meter_req *req,
                                          const struct meter__models *t, json_t **root,
                                          const struct meter__model **mod, char **errmsg);
/* The prices that apply to a request with `input` input tokens (long
 * context above the model's threshold). */
const struct meter__prices *meter__prices_for(const struct meter__model *mod, int64_t input);
/* Parses one vendor's "models" object into t. kind is "openai" or
 * "anthropic" (which price keys are allowed and required). */
KB_MUSTCHECK enum kb_err meter__models_parse(json_t *models, const char *kind,
                                             struct meter__models *t, char **errmsg);
/* Reads a price (a decimal string, or a JSON integer) as micros. */
KB_MUSTCHECK enum kb_err meter__price_parse(json_t *v, const char *where, int64_t *out,
                                            char **errmsg);
/* Refuses keys of obj other than `allowed` (NULL-terminated) and "_"-comments. */
KB_MUSTCHECK enum kb_err meter__keys_check(json_t *obj, const char *where,
                                           const char *const *allowed, char **errmsg);

/* ---- meter.c: JSON helpers ---- */

/* A non-negative JSON integer member of obj. Returns false when absent,
 * null or not a non-negative integer (then *out is untouched). */
bool meter__json_uint(json_t *obj, const char *key, int64_t *out);
/* An optional non-negative integer member of a request: absent or null
 * sets *present false; anything but a non-negative integer is KB_E_INVALID. */
KB_MUSTCHECK enum kb_err meter__json_opt_uint(json_t *obj, const char *key, int64_t *out,
                                              bool *present, char **errmsg);
/* Parses a request body that must be a JSON object; KB_E_INVALID otherwise.
 * Duplicate keys are refused: the vendor might read the other one. */
KB_MUSTCHECK enum kb_err meter__json_body(const struct kb_meter_req *req, json_t **out,
                                          char **errmsg);

/* ---- meter.c: request paths ---- */

/* Splits path into at most max segments (pointers into path). Returns the
 * number of segments, or max + 1 when there are more. */
size_t meter__path_split(const char *path, size_t len, const char **seg, size_t *seg_len,
                         size_t max);
/* True when segment (len bytes) equals the C string s. */
bool meter__seg_is(const char *seg, size_t len, const char *s);

/* ---- meter.c: form bodies ---- */

struct meter__form_pair {
    char *key;   /* owned, decoded, NUL-terminated */
    size_t klen; /* bytes of key */
    char *val;   /* owned, decoded, NUL-terminated (may contain NUL bytes) */
    size_t vlen; /* bytes of val */
};

struct meter__form {
    struct meter__form_pair *v; /* owned array, in body order */
    size_t n;                   /* entries in v */
};

/* Decodes an application/x-www-form-urlencoded body ('+' is a space, %XX a
 * byte). Refuses malformed escapes (KB_E_INVALID). */
KB_MUSTCHECK enum kb_err meter__form_parse(const char *body, size_t len, struct meter__form *f,
                                           char **errmsg);
void meter__form_cleanup(struct meter__form *f);
/* The value of key: *val NULL when absent. A key given twice with different
 * values is refused (KB_E_INVALID): which one the vendor reads is unknown. */
KB_MUSTCHECK enum kb_err meter__form_get(const struct meter__form *f, const char *key,
                                         const struct meter__form_pair **val, char **errmsg);

/* ---- meter.c: SSE ---- */

void meter__sse_init(struct meter__sse *s);
void meter__sse_cleanup(struct meter__sse *s);
/* Feeds bytes; calls cb for every event completed by a blank line. Lines may
 * end in CRLF, LF or CR, split anywhere across calls. */
void meter__sse_feed(struct meter__sse *s, const char *d, size_t n, meter__sse_cb *cb, void *ctx);

/* ---- vendor meters ---- */

/*
 * Each sets m up for one request (reserve, on_success, ops, state, body_cap)
 * and *metered = true when the vendor meter has a rule for the request, or
 * leaves *metered false so fixed entries may price it. May set *new_body.
 */
KB_MUSTCHECK enum kb_err meter__stripe_begin(struct kb_meter *m, const struct kb_meter_req *req,
                                             bool *metered, char **errmsg);
KB_MUSTCHECK enum kb_err meter__twilio_begin(struct kb_meter *m, const struct kb_meter_req *req,
                                             bool *metered, char **errmsg);
KB_MUSTCHECK enum kb_err meter__openai_begin(struct kb_meter *m, const struct kb_meter_req *req,
                                             bool *metered, char **new_body, size_t *new_len,
                                             char **errmsg);
KB_MUSTCHECK enum kb_err meter__anthropic_begin(struct kb_meter *m, const struct kb_meter_req *req,
                                                bool *metered, char **errmsg);
/* Prices the request from the fixed entries (first match). False when no
 * entry matches (the cost is then 0). */
bool meter__fixed_begin(struct kb_meter *m, const struct kb_meter_req *req);
void meter__fixed_cleanup(struct kb_pricing *p);

/* Vendor sections of pricing.json. */
KB_MUSTCHECK enum kb_err meter__stripe_config(json_t *obj, struct meter__stripe_cfg *cfg,
                                              char **errmsg);
void meter__stripe_config_cleanup(struct meter__stripe_cfg *cfg);
KB_MUSTCHECK enum kb_err meter__twilio_config(json_t *obj, struct meter__twilio_cfg *cfg,
                                              char **errmsg);
void meter__twilio_config_cleanup(struct meter__twilio_cfg *cfg);

/* Exposed for the unit tests: SMS segments of a UTF-8 body. */
int64_t meter__sms_segments(const char *body, size_t len);

#endif
