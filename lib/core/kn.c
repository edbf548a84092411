/* kn.c: status codes to text. */
#include "core/kn.h"

#include <stdarg.h>
#include <stdio.h>

const char *kn_strerror(int rc)
{
    switch (rc) {
    case KN_OK: return "success";
    case KN_ERR: return "error";
    case KN_ENOMEM: return "out of memory";
    case KN_EINVAL: return "invalid argument or input";
    case KN_EIO: return "input/output error";
    case KN_ENOTFOUND: return "not found";
    case KN_ETIMEDOUT: return "timed out";
    case KN_EKAFKA: return "kafka error";
    case KN_ECORRUPT: return "corrupt data";
    case KN_EEXIST: return "already exists";
    case KN_ECONFLICT: return "conflict";
    case KN_EUNSUPPORTED: return "unsupported";
    case KN_EHTTP: return "http error";
    case KN_ETOOBIG: return "too big";
    case KN_EDB: return "database error";
    case KN_EAUTH: return "not authorized";
    default: return "unknown error";
    }
}

int kn_seterr(char *errbuf, size_t errsz, int rc, const char *fmt, ...)
{
    if (errbuf && errsz > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errbuf, errsz, fmt, ap);
        va_end(ap);
    }
    return rc;
}
