/*
 * canon.c - the request-target gate in front of the endpoint policy.
 *
 * A proxy that matches one reading of a path and forwards bytes the vendor
 * reads another way has no policy at all (the Envoy/Istio %2F, "..", ";" and
 * "\" advisories). So this file never rewrites: it makes one pass over the
 * target and either proves that the path has a single reading or refuses it.
 * The accepted bytes are then matched (pattern.c) and forwarded unchanged.
 *
 * Hot path: called once per proxied request. It allocates only when it
 * refuses (the errmsg), and looks each byte up in one static table.
 */
#include "policy/canon.h"

#include <stdbool.h>

#include "core/alloc.h"
#include "core/crypto.h"

/* What a raw byte may be inside the path part. */
enum byte_class {
    B_BAD = 0,   /* not allowed raw in a path (outside RFC 3986 pchar) */
    B_PCHAR = 1, /* unreserved, sub-delim (not ';'), ':' or '@' */
    B_SLASH = 2, /* segment separator */
    B_PCT = 3,   /* start of a percent escape */
    B_QUERY = 4, /* '?': end of the path */
};

/* RFC 3986 pchar minus ';' (a matrix parameter to Tomcat/Spring, a plain
 * byte to others), plus the three structural bytes. */
static const unsigned char path_class[256] = {
    ['A'] = B_PCHAR, ['B'] = B_PCHAR, ['C'] = B_PCHAR, ['D'] = B_PCHAR, ['E'] = B_PCHAR,
    ['F'] = B_PCHAR, ['G'] = B_PCHAR, ['H'] = B_PCHAR, ['I'] = B_PCHAR, ['J'] = B_PCHAR,
    ['K'] = B_PCHAR, ['L'] = B_PCHAR, ['M'] = B_PCHAR, ['N'] = B_PCHAR, ['O'] = B_PCHAR,
    ['P'] = B_PCHAR, ['Q'] = B_PCHAR, ['R'] = B_PCHAR, ['S'] = B_PCHAR, ['T'] = B_PCHAR,
    ['U'] = B_PCHAR, ['V'] = B_PCHAR, ['W'] = B_PCHAR, ['X'] = B_PCHAR, ['Y'] = B_PCHAR,
    ['Z'] = B_PCHAR, ['a'] = B_PCHAR, ['b'] = B_PCHAR, ['c'] = B_PCHAR, ['d'] = B_PCHAR,
    ['e'] = B_PCHAR, ['f'] = B_PCHAR, ['g'] = B_PCHAR, ['h'] = B_PCHAR, ['i'] = B_PCHAR,
    ['j'] = B_PCHAR, ['k'] = B_PCHAR, ['l'] = B_PCHAR, ['m'] = B_PCHAR, ['n'] = B_PCHAR,
    ['o'] = B_PCHAR, ['p'] = B_PCHAR, ['q'] = B_PCHAR, ['r'] = B_PCHAR, ['s'] = B_PCHAR,
    ['t'] = B_PCHAR, ['u'] = B_PCHAR, ['v'] = B_PCHAR, ['w'] = B_PCHAR, ['x'] = B_PCHAR,
    ['y'] = B_PCHAR, ['z'] = B_PCHAR, ['0'] = B_PCHAR, ['1'] = B_PCHAR, ['2'] = B_PCHAR,
    ['3'] = B_PCHAR, ['4'] = B_PCHAR, ['5'] = B_PCHAR, ['6'] = B_PCHAR, ['7'] = B_PCHAR,
    ['8'] = B_PCHAR, ['9'] = B_PCHAR, ['-'] = B_PCHAR, ['.'] = B_PCHAR, ['_'] = B_PCHAR,
    ['~'] = B_PCHAR, ['!'] = B_PCHAR, ['$'] = B_PCHAR, ['&'] = B_PCHAR, ['\''] = B_PCHAR,
    ['('] = B_PCHAR, [')'] = B_PCHAR, ['*'] = B_PCHAR, ['+'] = B_PCHAR, [','] = B_PCHAR,
    ['='] = B_PCHAR, [':'] = B_PCHAR, ['@'] = B_PCHAR, ['/'] = B_SLASH, ['%'] = B_PCT,
    ['?'] = B_QUERY,
};

/* Decodes the escape whose '%' is at s[i]; -1 when it is not '%' and two
 * hex digits inside the first len bytes. */
static int decode_escape(const unsigned char *s, size_t len, size_t i)
{
    if (len - i < 3)
        return -1;
    int hi = crypto_hexdigit((char)s[i + 1]);
    int lo = crypto_hexdigit((char)s[i + 2]);
    if (hi < 0 || lo < 0)
        return -1;
    return hi * 16 + lo;
}

/* Why raw byte c at offset `at` of the path or query (`where`) is refused. */
static void refuse_byte(char **errmsg, const char *where, unsigned char c, size_t at)
{
    if (c == '\0')
        kb_set_errmsg(errmsg, "the %s contains a NUL byte at offset %zu", where, at);
    else if (c < 0x20 || c == 0x7f)
        kb_set_errmsg(errmsg, "the %s contains control byte 0x%02x at offset %zu", where, c, at);
    else if (c >= 0x80)
        kb_set_errmsg(errmsg, "the %s contains non-ASCII byte 0x%02x at offset %zu", where, c, at);
    else if (c == ' ')
        kb_set_errmsg(errmsg, "the %s contains a space at offset %zu", where, at);
    else if (c == '\\')
        kb_set_errmsg(errmsg, "the %s contains a backslash at offset %zu", where, at);
    else if (c == ';')
        kb_set_errmsg(errmsg, "the %s contains a ';' parameter at offset %zu", where, at);
    else if (c == '#')
        kb_set_errmsg(errmsg, "the target contains a fragment ('#') at offset %zu", at);
    else
        kb_set_errmsg(errmsg, "the %s contains '%c' at offset %zu, which must be percent-encoded",
                      where, c, at);
}

/* Why a well-formed escape decoding to d is refused, or false if it is fine.
 * Everything that is structure to some parser stays raw: an encoded '/',
 * '\', '.' or '%' is a second spelling a decoding upstream reads otherwise. */
static bool refuse_escape(char **errmsg, int d, size_t at)
{
    switch (d) {
    case '/':
        kb_set_errmsg(errmsg, "the path contains an encoded '/' (%%2F) at offset %zu", at);
        return true;
    case '\\':
        kb_set_errmsg(errmsg, "the path contains an encoded backslash (%%5C) at offset %zu", at);
        return true;
    case '.':
        kb_set_errmsg(errmsg, "the path contains an encoded '.' (%%2E) at offset %zu", at);
        return true;
    case '%':
        kb_set_errmsg(errmsg, "the path contains an encoded '%%' (%%25) at offset %zu", at);
        return true;
    default:
        if (d < 0x20 || d == 0x7f) {
            kb_set_errmsg(errmsg, "the path contains an encoded control byte at offset %zu", at);
            return true;
        }
        return false;
    }
}

/* Checks the segment s[start, end) just closed by a '/' or the end of the
 * path; raw '.' and ".." are the only dot segments left to catch, since
 * encoded dots never get this far. */
static bool refuse_segment(char **errmsg, const unsigned char *s, size_t start, size_t end,
                           bool last)
{
    size_t n = end - start;
    if (n == 0) {
        if (last)
            kb_set_errmsg(errmsg, "the path ends with '/' (only \"/\" itself may)");
        else
            kb_set_errmsg(errmsg, "the path contains an empty segment (\"//\") at offset %zu",
                          start);
        return true;
    }
    if (s[start] == '.' && (n == 1 || (n == 2 && s[start + 1] == '.'))) {
        kb_set_errmsg(errmsg, "the path contains a \"%s\" segment at offset %zu",
                      n == 1 ? "." : "..", start);
        return true;
    }
    return false;
}

/* Names the wrong form of a target that does not start with '/'. */
static void refuse_form(char **errmsg, const unsigned char *s, size_t len)
{
    if (len == 1 && s[0] == '*') {
        kb_set_errmsg(errmsg, "asterisk-form request targets (\"*\") are not accepted");
        return;
    }
    /* absolute-form starts with a scheme and ':' ("http:", "https:") */
    size_t i = 0;
    while (i < len && ((s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'z'))
        i++;
    if (i > 0 && i < len && s[i] == ':') {
        kb_set_errmsg(errmsg, "absolute-form request targets are not accepted; send the path only");
        return;
    }
    kb_set_errmsg(errmsg, "the request target does not start with '/'");
}

enum kb_err policy_canon_check(const char *target, size_t len, size_t max_path, size_t *path_len,
                               char **errmsg)
{
    const unsigned char *s = (const unsigned char *)target;
    if (len == 0) {
        kb_set_errmsg(errmsg, "the request target is empty");
        return KB_E_BAD_PATH;
    }
    if (s[0] != '/') {
        refuse_form(errmsg, s, len);
        return KB_E_BAD_PATH;
    }

    /* The path is s[0, end). Scanning stops one byte past max_path, so an
     * over-long path costs no more than a limit-sized one. */
    size_t lim = max_path < len ? max_path + 1 : len;
    size_t seg = 1; /* where the current segment starts */
    size_t i = 1;
    for (; i < lim; i++) {
        unsigned char c = s[i];
        switch (path_class[c]) {
        case B_PCHAR:
            continue;
        case B_SLASH:
            /* i == 1 is "//...": the empty first segment of a network-path. */
            if (refuse_segment(errmsg, s, seg, i, false))
                return KB_E_BAD_PATH;
            seg = i + 1;
            continue;
        case B_PCT: {
            int d = decode_escape(s, len, i);
            if (d < 0) {
                kb_set_errmsg(errmsg, "the path contains a malformed percent escape at offset %zu",
                              i);
                return KB_E_BAD_PATH;
            }
            if (refuse_escape(errmsg, d, i))
                return KB_E_BAD_PATH;
            i += 2;
            continue;
        }
        case B_QUERY:
            break;
        default:
            refuse_byte(errmsg, "path", c, i);
            return KB_E_BAD_PATH;
        }
        break; /* only B_QUERY gets here */
    }
    size_t end = i;
    if (end > max_path) {
        kb_set_errmsg(errmsg, "the path is longer than the limit of %zu bytes", max_path);
        return KB_E_BAD_PATH;
    }
    if (end > 1 && refuse_segment(errmsg, s, seg, end, true))
        return KB_E_BAD_PATH;

    /* The query is forwarded as is; only what no parser agrees on is refused. */
    for (i = end + 1; i < len; i++) {
        unsigned char c = s[i];
        if (c == '%') {
            if (decode_escape(s, len, i) < 0) {
                kb_set_errmsg(errmsg, "the query contains a malformed percent escape at offset %zu",
                              i);
                return KB_E_BAD_PATH;
            }
            i += 2;
        } else if (c <= 0x20 || c >= 0x7f || c == '#') {
            refuse_byte(errmsg, "query", c, i);
            return KB_E_BAD_PATH;
        }
    }
    *path_len = end;
    return KB_OK;
}

char *policy_canon_path(const char *path, size_t path_len, size_t *out_len)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *s = (const unsigned char *)path;
    char *out = kb_malloc(path_len + 1);
    size_t o = 0;
    for (size_t i = 0; i < path_len; i++) {
        int d = s[i] == '%' ? decode_escape(s, path_len, i) : -1;
        if (d < 0) {
            out[o++] = (char)s[i]; /* checked already: a raw pchar or '/' */
        } else if (path_class[d] == B_PCHAR) {
            out[o++] = (char)d; /* the same byte to every decoding reader */
            i += 2;
        } else {
            out[o++] = '%';
            out[o++] = hex[d >> 4];
            out[o++] = hex[d & 15];
            i += 2;
        }
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}
