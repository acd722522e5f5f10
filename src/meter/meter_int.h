/*
 * meter_int.h - what the meter files share with each other and with nobody
 * else: the parsed pricing tables, the per-request state behind struct
 * kb_meter, the SSE line splitter, the form decoder and the saturating
 * integer arithmetic every cost goes through.
 *
 * meter.c owns loading, dispatch and the request life cycle, common.c the
 * helpers every vendor meter uses; each vendor file
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
#include "core/codec.h"
#include "core/err.h"
#include "meter/meter.h"

/* A body_cap value that asks for the answer's body. There is no size limit
 * any more: the answer is scanned into a bounded skeleton (jscan.c), so any
 * non-zero body_cap means "read the body"; the name stays for the vendor
 * files that set it. */
#define METER__MAX_JSON_BODY ((size_t)1)
/* Caps of the decoder for a compressed answer (gzip, deflate, br, zstd).
 * 1 GiB decoded is far beyond any answer a meter reads (an LLM answer is
 * megabytes) yet bounds the work of one response to about a second of
 * decoding and scanning. 1000 decoded bytes per encoded byte is past what
 * JSON or SSE text reaches (10-50x typically; deflate itself stops at
 * 1032x), so only a bomb hits it, and it stops a bomb after at most 1000x
 * the bytes the vendor actually sent. Past either cap the meter is blind. */
#define METER__DECODE_MAX_OUT ((size_t)1 << 30)
#define METER__DECODE_MAX_RATIO 1000
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
    int64_t audio_input;    /* OpenAI: audio input tokens (the text input price when unlisted) */
    int64_t audio_cached;   /* OpenAI: cached audio input tokens (audio_input when unlisted) */
    int64_t audio_output;   /* OpenAI: audio output tokens (the text output price when unlisted) */
};

/* Most snapshot ids (exact or dated patterns) one model entry may list. */
#define METER__MAX_SNAPSHOTS 32

struct meter__model {
    char *name;                    /* owned; the configured id, matched exactly */
    char **snapshots;              /* owned; other ids of the same model: exact, or a
                                      pattern where YYYY, MM, DD stand for digits */
    size_t nsnapshots;             /* entries in snapshots */
    struct meter__prices base;     /* normal prices */
    struct meter__prices longctx;  /* used when input tokens exceed long_threshold */
    int64_t long_threshold;        /* input tokens; 0 = no long-context pricing */
    int64_t max_output;            /* output cap when the request sets none */
    int64_t context;               /* context window in tokens; 0 = not configured */
    struct meter__prices priority; /* OpenAI service_tier "priority" (valid if has_priority) */
    struct meter__prices flex;     /* OpenAI service_tier "flex" (valid if has_flex) */
    bool has_priority;             /* the model is sold at a priority tier */
    bool has_flex;                 /* the model is sold at a flex tier */
    int64_t fast_multiplier;       /* Anthropic speed "fast": micro-units (6x = 6000000);
                                      0 = the model has no fast mode */
    int64_t web_search_per_call;   /* micros per web search call; -1 = the vendor default */
};

struct meter__models {
    struct meter__model *v;              /* owned array */
    size_t n;                            /* entries in v */
    const struct meter__model *fallback; /* the "default" entry (points into v) or NULL */
};

/* One entry of an image model's table: "quality/size" -> a price per image
 * (micros) or, for token-priced models, the output tokens of one image. */
struct meter__image_size {
    char *key;     /* owned; "hd/1024x1792" */
    int64_t value; /* micros per image, or output tokens per image */
};

/* An OpenAI image model (POST /v1/images/generations). */
struct meter__image_model {
    char *name;                     /* owned; the model id */
    struct meter__image_size *size; /* owned array */
    size_t nsize;                   /* entries in size */
    bool tokens;                    /* billed by tokens (gpt-image-*), else per image */
    int64_t text_input;             /* tokens: µ$ per million prompt text tokens */
    int64_t image_input;            /* tokens: µ$ per million input image tokens */
    int64_t output;                 /* tokens: µ$ per million output image tokens */
};

/* An OpenAI text-to-speech model priced per character (POST /v1/audio/speech). */
struct meter__speech_model {
    char *name;        /* owned; the model id */
    int64_t per_mchar; /* µ$ per million characters of `input` */
};

/* Per-vendor LLM settings beside the models (pricing.json "<vendor>"). */
struct meter__llm_cfg {
    struct meter__image_model *images;  /* owned array (OpenAI) */
    size_t nimages;                     /* entries in images */
    struct meter__speech_model *speech; /* owned array (OpenAI) */
    size_t nspeech;                     /* entries in speech */
    struct meter__image_model *videos;  /* owned array (OpenAI): size -> µ$ per second */
    size_t nvideos;                     /* entries in videos */
    int64_t web_search_per_call;        /* micros per web search call (tool fee) */
    int64_t file_search_per_call;       /* OpenAI: micros per file_search call */
    int64_t web_fetch_per_call;         /* Anthropic: micros per web fetch (0: tokens only) */
    int64_t code_execution_per_call;    /* micros charged per request that may run code */
    int64_t geo_multiplier;             /* Anthropic inference_geo other than global: micro-units */
    bool default_geo_regional;          /* Anthropic: the workspace's default geo is not global */
    int64_t residency_multiplier;       /* OpenAI data residency uplift on token costs (micro-
                                           units); 0 = the project has none */
    int64_t batch_percent;              /* Anthropic batches: percent of the normal price */
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
    char *version;                       /* owned; "YYYY-MM-DD" */
    struct meter__models openai;         /* OpenAI models */
    struct meter__models anthropic;      /* Anthropic models */
    struct meter__llm_cfg openai_cfg;    /* OpenAI fees beside the models */
    struct meter__llm_cfg anthropic_cfg; /* Anthropic fees beside the models */
    struct meter__stripe_cfg stripe;
    struct meter__twilio_cfg twilio;
    struct meter__fixed *fixed; /* owned array, in the order added */
    size_t nfixed;              /* entries in fixed */
};

/*
 * Incremental JSON skeleton scanner (jscan.c). JSON text goes in, in pieces
 * split anywhere; out comes, in bounded memory, a compact JSON text that
 * keeps the structure a meter reads and drops the bulk:
 *  - strings (values) whose raw text is longer than METER__JSCAN_STR_MAX
 *    bytes become ""; shorter ones are kept byte for byte (escapes as sent);
 *  - members whose key is longer than that are dropped (lossy);
 *  - numbers and literals longer than that become null (lossy);
 *  - scalar elements of arrays are dropped (no meter reads a scalar array;
 *    embedding vectors are huge);
 *  - object/array elements of an array are kept, at most
 *    METER__JSCAN_ARRAY_MAX per array and none once the skeleton passes
 *    half its cap (lossy beyond);
 *  - a container that would be nested deeper than METER__JSCAN_KEEP_DEPTH
 *    becomes null (lossy);
 *  - whitespace outside strings is dropped.
 * The scan fails (and stays failed) on a syntax error the tokenizer sees,
 * nesting deeper than METER__JSCAN_MAX_DEPTH, or a skeleton past
 * METER__JSCAN_SKEL_MAX. Text inside strings never counts as structure.
 * Scalars that are dropped are checked only for their character set, so
 * some invalid input gives a valid skeleton; the values a meter reads are
 * kept verbatim and jansson checks them. One pass, no backtracking: the
 * work is linear in the input.
 */
#define METER__JSCAN_STR_MAX 256
#define METER__JSCAN_KEEP_DEPTH 6
#define METER__JSCAN_ARRAY_MAX 4096
#define METER__JSCAN_MAX_DEPTH 2048 /* jansson's own parse depth limit */
#define METER__JSCAN_SKEL_MAX (1024 * 1024)

struct meter__jscan {
    struct kb_buf out;                         /* the skeleton so far (owned) */
    char tok[METER__JSCAN_STR_MAX];            /* the current string or scalar, when kept */
    size_t tok_len;                            /* bytes in tok; > METER__JSCAN_STR_MAX: too long */
    uint64_t arr[METER__JSCAN_MAX_DEPTH / 64]; /* bit per open container: 1 = array */
    uint32_t count[METER__JSCAN_KEEP_DEPTH + 1]; /* members/elements kept per kept level */
    unsigned depth;                              /* containers open */
    unsigned edepth;                             /* of which the outer ones kept (<= KEEP_DEPTH) */
    unsigned char state;                         /* tokenizer state (jscan.c) */
    bool first;                                  /* just after '{' or '[': a close is allowed */
    bool esc;                                    /* in a string, after a backslash */
    bool is_key;                                 /* the current string is a member name */
    bool tok_keep;                               /* the current token goes into the skeleton */
    bool key_drop;                               /* the member being read was dropped */
    bool lossy;                                  /* something a meter might count was dropped */
    bool failed;                                 /* syntax error or a cap passed */
};

void meter__jscan_init(struct meter__jscan *j);
/* Forgets the text scanned so far (keeps a small buffer for reuse). */
void meter__jscan_reset(struct meter__jscan *j);
void meter__jscan_cleanup(struct meter__jscan *j);
/* Scans n more bytes of the text. */
void meter__jscan_feed(struct meter__jscan *j, const char *d, size_t n);
/* Ends the text. True when it was one whole JSON value (as far as the
 * scanner checks) and the skeleton fits: *skel (NUL-terminated, owned by j,
 * valid until the next feed/reset) and *len are then set. */
bool meter__jscan_finish(struct meter__jscan *j, const char **skel, size_t *len);

/*
 * Incremental text/event-stream parser: bytes in, whole events out. An
 * event's data lines are never buffered raw: they stream into a jscan, and
 * the callback gets the skeleton of the data. Data that is not JSON (such as
 * "[DONE]") is passed as it came when it is at most METER__SSE_RAW_MAX
 * bytes; a larger non-JSON event is dropped.
 */
#define METER__SSE_RAW_MAX (64 * 1024)
/* A non-SSE body up to this size is kept as sent and parsed whole; a
 * longer one is read by the skeleton scanner (bounded memory either way,
 * and the common small answer skips the scanner's per-byte work). */
#define METER__BODY_RAW_MAX (64 * 1024)

struct meter__sse {
    struct meter__jscan scan; /* the current event's data, joined by '\n' */
    struct kb_buf raw;        /* the same data as sent, while it fits in
                                 METER__SSE_RAW_MAX (owned) */
    bool scanning;            /* it did not: the data goes to scan instead */
    char field[8];            /* the current line's field name, while it may matter */
    size_t field_len;         /* bytes in field; > sizeof field: no field we read */
    unsigned char lstate;     /* where in the line we are (meter.c) */
    char event[64];           /* event: name of the current event, "" if none */
    size_t event_len;         /* bytes in event */
    bool has_data;            /* a data: line was seen in the current event */
    bool line_seen;           /* the current line has bytes */
    bool cr;                  /* the last byte was CR: a following LF is part of it */
};

typedef void meter__sse_cb(void *ctx, const char *event, const char *data, size_t len);

struct kb_meter;

/* What a vendor meter does after meter_begin (all may be NULL). */
struct meter__ops {
    /* One complete SSE event of a 2xx streamed response: data is the
     * skeleton of the event's data (meter__jscan), or the data as sent when
     * it is short and not JSON. During the call m->sse_state.scan.lossy
     * says whether the skeleton dropped array elements or deep values. */
    void (*event)(struct kb_meter *m, const char *event, const char *data, size_t len);
    /* The cost of a 2xx response; when m->body_cap was set, m->body holds
     * the skeleton of the JSON body, or m->body_over is set. */
    int64_t (*settle)(struct kb_meter *m, bool complete);
    /* Frees m->state. */
    void (*free)(void *state);
};

struct kb_meter {
    const struct kb_pricing *p;    /* borrowed; outlives the meter */
    const struct meter__ops *ops;  /* static; NULL: a 2xx costs on_success */
    void *state;                   /* owned by ops->free */
    int64_t reserve;               /* worst case, from begin */
    int64_t on_success;            /* cost of a 2xx when ops->settle is NULL */
    int status;                    /* final upstream status; 0 until known */
    bool req_stream;               /* the request asked for a stream */
    bool sse;                      /* the response is text/event-stream */
    size_t body_cap;               /* > 0: the meter reads a non-SSE response's body */
    bool body_over;                /* the body could not be read (scan failed, cut,
                                      or blind): settle charges its unread case */
    bool blind;                    /* the response cannot be read (encoding): settle
                                      charges at least the reservation */
    bool charge_on_5xx;            /* money may have moved even on a 5xx: charge the
                                      reservation (Stripe and Twilio writes) */
    bool body_lossy;               /* the skeleton in body dropped array elements or
                                      deep values (jscan) */
    bool body_done;                /* body was filled from body_scan at settle */
    bool body_scanning;            /* the body outgrew METER__BODY_RAW_MAX: body_scan
                                      reads it (until then body holds it as sent) */
    struct kb_buf body;            /* at settle: the skeleton of the response body */
    struct meter__jscan body_scan; /* the body as it streams (non-SSE, body_cap) */
    struct kb_decoder *dec;        /* owned; decodes a compressed answer, or NULL */
    struct meter__sse sse_state;   /* used when sse */
    char **models;                 /* owned; the model ids the request names (meter_model) */
    size_t nmodels;                /* entries in models */
    bool model_unread;             /* a write whose body the meter could not read a model from */
    json_t *allowed_models;        /* owned; the key's list, NULL: any model */
    char *refused_model;           /* owned; the first noted model not in allowed_models */
};

/* Notes that the request names model `id` (each id once), for meter_model
 * and the key's allowed_models: called where a vendor file reads the model
 * it prices, before it prices it. */
void meter__note_model(struct kb_meter *m, const char *id);

/* ---- common.c: arithmetic ---- */

/* ceil(a * b / d) for a, b >= 0, d > 0, saturating at KB_MONEY_MAX_MICROS. */
int64_t meter__mul_div_ceil(int64_t a, int64_t b, int64_t d);
/* a * b and a + b for values >= 0, saturating at KB_MONEY_MAX_MICROS. */
int64_t meter__mul_sat(int64_t a, int64_t b);
int64_t meter__add_sat(int64_t a, int64_t b);
/* Micro-dollars for `tokens` at `per_mtok` micros per million, rounded up. */
int64_t meter__token_cost(int64_t tokens, int64_t per_mtok);

/* ---- models.c, openai_media.c, common.c: models and prices ---- */

/* Reads the price member `key` of obj ("where.key" in messages): required,
 * or, with dflt >= 0, optional with that default. */
KB_MUSTCHECK enum kb_err meter__member_price(json_t *obj, const char *where, const char *key,
                                             int64_t dflt, int64_t *out, char **errmsg);

/* The entry whose name is id, else the first whose snapshot list matches id
 * (an exact id, or a dated pattern: YYYY, MM, DD each match that many
 * digits), else the "default" entry an operator configured; NULL when none.
 * Never a bare prefix: "claude-opus-4-6" is not a "claude-opus-4". */
const struct meter__model *meter__model_find(const struct meter__models *t, const char *id);
/* Whether id matches a snapshot pattern (exact bytes, YYYY/MM/DD digits). */
bool meter__snapshot_match(const char *pattern, const char *id);
/* prices scaled by mult micro-units (1000000 = 1x), each price rounded up. */
struct meter__prices meter__prices_scale(const struct meter__prices *pr, int64_t mult);

/* Parses the JSON request body into *root (caller decrefs, set even on a
 * pricing failure), notes its model in m (meter__note_model) and finds the price of its "model" in
 * t: KB_E_INVALID without a model, KB_E_MODEL_NOT_PRICED without a price. */
KB_MUSTCHECK enum kb_err meter__model_for(struct kb_meter *m, const struct kb_meter_req *req,
                                          const struct meter__models *t, json_t **root,
                                          const struct meter__model **mod, char **errmsg);
/* The price of the "model" member of obj (a request, or a batch entry's
 * params): KB_E_INVALID without a model, KB_E_MODEL_NOT_PRICED without a
 * price. */
KB_MUSTCHECK enum kb_err meter__model_of(json_t *obj, const struct meter__models *t,
                                         const struct meter__model **mod, char **errmsg);
/* The prices that apply to a request with `input` input tokens (long
 * context above the model's threshold). */
const struct meter__prices *meter__prices_for(const struct meter__model *mod, int64_t input);
/* Parses one vendor's "models" object into t. kind is "openai" or
 * "anthropic" (which price keys are allowed and required). */
KB_MUSTCHECK enum kb_err meter__models_parse(json_t *models, const char *kind,
                                             struct meter__models *t, char **errmsg);
/* Parses the "openai" or "anthropic" section (kind) of pricing.json: its
 * models into t and its fees into cfg. */
KB_MUSTCHECK enum kb_err meter__llm_section(json_t *sec, const char *kind, struct meter__models *t,
                                            struct meter__llm_cfg *cfg, char **errmsg);
void meter__models_cleanup(struct meter__models *t);
void meter__llm_cfg_cleanup(struct meter__llm_cfg *cfg);
/* Parses openai.images, openai.speech and openai.videos (absent: none priced). */
KB_MUSTCHECK enum kb_err meter__media_config(json_t *sec, struct meter__llm_cfg *cfg,
                                             char **errmsg);
/* POST /v1/images/generations and /v1/audio/speech (openai_media.c). */
KB_MUSTCHECK enum kb_err meter__openai_image_begin(struct kb_meter *m,
                                                   const struct kb_meter_req *req, char **errmsg);
KB_MUSTCHECK enum kb_err meter__openai_speech_begin(struct kb_meter *m,
                                                    const struct kb_meter_req *req, char **errmsg);
KB_MUSTCHECK enum kb_err meter__openai_video_begin(struct kb_meter *m,
                                                   const struct kb_meter_req *req, char **errmsg);
/* Reads a price (a decimal string, or a JSON integer) as micros. */
KB_MUSTCHECK enum kb_err meter__price_parse(json_t *v, const char *where, int64_t *out,
                                            char **errmsg);
/* Refuses keys of obj other than `allowed` (NULL-terminated) and "_"-comments. */
KB_MUSTCHECK enum kb_err meter__keys_check(json_t *obj, const char *where,
                                           const char *const *allowed, char **errmsg);

/* ---- common.c: JSON helpers ---- */

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

/* ---- jparse.c: json_loadb, faster ---- */

/* Members of an object to build: key NULL ends the list. sub NULL keeps
 * the member's value whole; otherwise sub is applied to it (to each
 * element when it is an array, recursively; to nothing when a scalar). */
struct meter__jkeep {
    const char *key;                /* member name, matched after unescaping */
    const struct meter__jkeep *sub; /* what to keep of its value; NULL: all */
};

/* json_loadb(text, len, flags, err), faster: the same result for every
 * text (the same tree on success; NULL and jansson's own error on
 * failure, since every text this parser does not accept goes to
 * json_loadb). flags other than 0, JSON_REJECT_DUPLICATES and
 * METER_JSON_KEPT_ONCE also go to json_loadb. With keep (and flags 0) the
 * root object holds only the members keep names, but the text is accepted
 * or refused exactly as a whole: a caller that reads only those members
 * reads what it read before. The caller owns the result (json_decref).
 * Any thread. */
json_t *meter__json_loadb(const char *text, size_t len, size_t flags,
                          const struct meter__jkeep *keep, json_error_t *err);

/* A flag of meter__json_loadb with a keep list: a member named twice in
 * an object the result holds (a kept one, or one inside a value kept
 * whole) refuses the text, as JSON_REJECT_DUPLICATES would; names repeated
 * only in skipped values do not. For answers, whose figures must not be
 * read last-wins (a usage, then a zero one): such an answer is unreadable,
 * so charged its reservation. Not a jansson flag: text this parser hands
 * to json_loadb goes with JSON_REJECT_DUPLICATES instead, which refuses a
 * repeated name anywhere. */
#define METER_JSON_KEPT_ONCE ((size_t)1 << 20)

/* ---- common.c: request paths ---- */

/* Splits path into at most max segments (pointers into path). Returns the
 * number of segments, or max + 1 when there are more. */
size_t meter__path_split(const char *path, size_t len, const char **seg, size_t *seg_len,
                         size_t max);
/* True when segment (len bytes) equals the C string s. */
bool meter__seg_is(const char *seg, size_t len, const char *s);

/* ---- llm_routes.c: route tables of the LLM meters ---- */

struct meter__route {
    const char *method; /* "POST" */
    const char *path;   /* "/v1/threads/ * /runs" (without the spaces): "*" is one id segment */
    int cls;            /* the vendor's cost class (its own enum) */
};

/* Index of the first route in routes[0..n) whose method and path match req
 * (segments ASCII case-insensitive, "*" any one non-empty segment; a
 * trailing '/' matches nothing); -1 when none. */
int meter__route_find(const struct meter__route *routes, size_t n, const struct kb_meter_req *req);

/* ---- common.c: form bodies ---- */

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

/* ---- sse.c ---- */

void meter__sse_init(struct meter__sse *s);
void meter__sse_cleanup(struct meter__sse *s);
/* Feeds bytes; calls cb for every event with data completed by a blank
 * line (data as described at struct meter__sse). Lines may end in CRLF, LF
 * or CR, split anywhere across calls. */
void meter__sse_feed(struct meter__sse *s, const char *d, size_t n, meter__sse_cb *cb, void *ctx);

/* ---- vendor meters ---- */

/*
 * Each sets m up for one request (reserve, on_success, ops, state, body_cap)
 * and *metered = true when the vendor meter has a rule for the request, or
 * leaves *metered false so fixed entries may price it. May set *new_body.
 * Reached through the vendor profiles (vendor/profile.c, kb_meter_begin_fn).
 */
KB_MUSTCHECK enum kb_err meter__stripe_begin(struct kb_meter *m, const struct kb_meter_req *req,
                                             bool *metered, char **new_body, size_t *new_len,
                                             char **errmsg);
KB_MUSTCHECK enum kb_err meter__twilio_begin(struct kb_meter *m, const struct kb_meter_req *req,
                                             bool *metered, char **new_body, size_t *new_len,
                                             char **errmsg);
KB_MUSTCHECK enum kb_err meter__openai_begin(struct kb_meter *m, const struct kb_meter_req *req,
                                             bool *metered, char **new_body, size_t *new_len,
                                             char **errmsg);
KB_MUSTCHECK enum kb_err meter__anthropic_begin(struct kb_meter *m, const struct kb_meter_req *req,
                                                bool *metered, char **new_body, size_t *new_len,
                                                char **errmsg);
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
