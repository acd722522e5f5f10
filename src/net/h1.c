/* h1.c - HTTP/1.1 line grammar shared by the server and the upstream client (see h1.h). */
#include "net/h1.h"

#include <string.h>

/* RFC 9110 5.6.2: "!#$%&'*+-.^_`|~", DIGIT, ALPHA. */
static const unsigned char tchars[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,  ['~'] = 1, ['0'] = 1,
    ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,  ['7'] = 1, ['8'] = 1,
    ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,  ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1,  ['N'] = 1, ['O'] = 1,
    ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1,
    ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,  ['d'] = 1, ['e'] = 1,
    ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,  ['l'] = 1, ['m'] = 1,
    ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,  ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

bool h1_tchar(unsigned char c)
{
    return tchars[c];
}

/* Text in a value or reason phrase: HTAB, SP, visible ASCII, obs-text. */
static bool text(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

static bool version(const char *v, size_t n, int *minor)
{
    if (n != 8 || memcmp(v, "HTTP/1.", 7) != 0 || (v[7] != '0' && v[7] != '1'))
        return false;
    *minor = v[7] - '0';
    return true;
}

bool h1_request_line(const char *l, size_t n, size_t *mlen, size_t *toff, size_t *tlen, int *minor,
                     bool *bad_version)
{
    size_t i = 0;
    *bad_version = false;
    while (i < n && tchars[(unsigned char)l[i]])
        i++;
    if (i == 0 || i > H1_MAX_METHOD || i == n || l[i] != ' ')
        return false;
    size_t t = ++i;
    while (i < n && (unsigned char)l[i] > 0x20 && (unsigned char)l[i] != 0x7f)
        i++;
    if (i == t || i == n || l[i] != ' ')
        return false;
    if (!version(l + i + 1, n - i - 1, minor)) {
        *bad_version = true;
        return false;
    }
    *mlen = t - 1;
    *toff = t;
    *tlen = i - t;
    return true;
}

bool h1_status_line(const char *l, size_t n, int *minor, int *status)
{
    if (n < 12 || !version(l, 8, minor) || l[8] != ' ')
        return false;
    int st = 0;
    for (int i = 9; i < 12; i++) {
        if (l[i] < '0' || l[i] > '9')
            return false;
        st = st * 10 + (l[i] - '0');
    }
    if (st < 100 || st > 599 || (n > 12 && (l[12] != ' ' || !text(l + 13, n - 13))))
        return false;
    *status = st;
    return true;
}

enum h1_field h1_field_line(const char *l, size_t n, size_t *nlen, size_t *voff, size_t *vlen)
{
    if (n > 0 && (l[0] == ' ' || l[0] == '\t'))
        return H1_FIELD_FOLD;
    size_t i = 0;
    while (i < n && tchars[(unsigned char)l[i]])
        i++;
    if (i == 0 || i == n || l[i] != ':')
        return H1_FIELD_NAME; /* no name, or a space before the colon */
    size_t b = i + 1, e = n;
    while (b < e && (l[b] == ' ' || l[b] == '\t'))
        b++;
    while (e > b && (l[e - 1] == ' ' || l[e - 1] == '\t'))
        e--;
    if (!text(l + b, e - b))
        return H1_FIELD_CTL;
    *nlen = i;
    *voff = b;
    *vlen = e - b;
    return H1_FIELD_OK;
}

bool h1_content_length(const char *v, size_t n, int64_t *out)
{
    if (n == 0 || n > H1_MAX_CLEN_DIGITS)
        return false;
    int64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        x = x * 10 + (v[i] - '0');
    }
    *out = x;
    return true;
}

bool h1_chunk_size(const char *l, size_t n, int64_t *out)
{
    int64_t x = 0;
    size_t i = 0;
    for (; i < n; i++) {
        char c = l[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            break;
        if (i == H1_MAX_CHUNK_DIGITS)
            return false;
        x = x * 16 + d;
    }
    if (i == 0 || (i < n && l[i] != ';'))
        return false;
    /* an extension is ignored, but not one holding a control byte: a bare
     * CR ends the line for some parsers, which would read the rest as data */
    if (i < n && !text(l + i, n - i))
        return false;
    *out = x;
    return true;
}
