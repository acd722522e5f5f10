/* err.c - lookups into the KB_ERR_MAP table (see err.h). */
#include "core/err.h"

static const struct {
    int status;       /* HTTP status */
    const char *code; /* stable client code */
    const char *msg;  /* default human message */
} table[] = {
#define KB_ERR_ROW(name, st, c, m) {st, c, m},
    KB_ERR_MAP(KB_ERR_ROW)
#undef KB_ERR_ROW
};

const char *kb_strerror(enum kb_err err)
{
    return (unsigned)err < KB_E__COUNT ? table[err].code : "unknown_error";
}

const char *kb_errmsg(enum kb_err err)
{
    return (unsigned)err < KB_E__COUNT ? table[err].msg : "unknown error";
}

int kb_err_status(enum kb_err err)
{
    return (unsigned)err < KB_E__COUNT ? table[err].status : 500;
}
