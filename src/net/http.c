/* http.c - JSON and error replies over evhttp (see http.h). */
#include "net/http.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <stdlib.h>
#include <string.h>

void http_reply_json(struct evhttp_request *req, int status, json_t *body)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    struct evbuffer *buf = evbuffer_new();
    if (body) {
        char *text = json_dumps(body, JSON_COMPACT);
        if (text) {
            evbuffer_add(buf, text, strlen(text));
            evbuffer_add(buf, "\n", 1);
            free(text);
        }
        json_decref(body);
        evhttp_add_header(out, "Content-Type", "application/json");
    }
    evhttp_send_reply(req, status, NULL, buf);
    evbuffer_free(buf);
}

static json_t *error_body(enum kb_err err, const char *message, const char *field)
{
    json_t *o = json_object();
    json_object_set_new(o, "code", json_string(kb_strerror(err)));
    /* a message quoting bad input may not be UTF-8: fall back to the default */
    json_t *m = message ? json_string(message) : NULL;
    json_object_set_new(o, "message", m ? m : json_string(kb_errmsg(err)));
    if (field)
        json_object_set_new(o, "field", json_string(field));
    return o;
}

void http_reply_error(struct evhttp_request *req, enum kb_err err, const char *message,
                      const char *field)
{
    json_t *o = error_body(err, message, field);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Keybrake-Error", kb_strerror(err));
    http_reply_json(req, kb_err_status(err), o);
}

const char *http_method_name(struct evhttp_request *req)
{
    switch (evhttp_request_get_command(req)) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    default:
        return NULL;
    }
}

void http_reply_proxy_error(struct evhttp_request *req, enum kb_err err, const char *message)
{
    json_t *o = error_body(err, message, NULL);
    json_object_set_new(o, "error",
                        json_pack("{s:s, s:O, s:O}", "type", "keybrake_error", "code",
                                  json_object_get(o, "code"), "message",
                                  json_object_get(o, "message")));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Keybrake-Error", kb_strerror(err));
    http_reply_json(req, kb_err_status(err), o);
}
