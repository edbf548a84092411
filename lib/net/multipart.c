/* multipart.c: multipart/form-data bodies, parsed in place (see multipart.h). */
#include "net/multipart.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

void kn_multipart_param(const char *h, size_t hl, const char *key, char *out, size_t outsz)
{
    char pat[32];
    int pl = snprintf(pat, sizeof(pat), "%s=", key);
    out[0] = '\0';
    if (pl <= 1 || (size_t)pl >= sizeof(pat)) return;
    for (size_t i = 0; i + (size_t)pl <= hl; i++) {
        if (strncasecmp(h + i, pat, (size_t)pl) != 0) continue;
        if (i > 0 && h[i - 1] != ' ' && h[i - 1] != ';') continue; /* "filename=" is not "name=" */
        const char *v = h + i + pl, *end = h + hl;
        size_t n = 0;
        if (v < end && *v == '"') {
            v++;
            while (v + n < end && v[n] != '"')
                n++;
        } else {
            while (v + n < end && v[n] != ';' && v[n] != '\r' && v[n] != ' ')
                n++;
        }
        if (n >= outsz) n = outsz - 1;
        memcpy(out, v, n);
        out[n] = '\0';
        return;
    }
}

/* Reads the headers of one part, h[0..hl_all) (lines ending in CRLF, the
 * last one too). */
static void part_headers(const char *h, const char *hend, kn_multipart_part *pt)
{
    while (h < hend) {
        const char *eol = memmem(h, (size_t)(hend - h), "\r\n", 2);
        size_t hl = eol ? (size_t)(eol - h) : (size_t)(hend - h);
        if (hl > 20 && strncasecmp(h, "Content-Disposition:", 20) == 0) {
            kn_multipart_param(h, hl, "name", pt->name, sizeof(pt->name));
            kn_multipart_param(h, hl, "filename", pt->filename, sizeof(pt->filename));
        } else if (hl > 13 && strncasecmp(h, "Content-Type:", 13) == 0) {
            size_t v = 13;
            while (v < hl && h[v] == ' ')
                v++;
            snprintf(pt->ctype, sizeof(pt->ctype), "%.*s", (int)(hl - v), h + v);
        }
        h += hl + 2;
    }
}

int kn_multipart_parse(const char *body, size_t len, const char *boundary, kn_multipart_part *parts,
                       int maxparts)
{
    char delim[80]; /* "--" + boundary (RFC 2046: 1 to 70 characters) */
    size_t bl = strlen(boundary);
    if (bl < 1 || bl > 70) return -1;
    int dl = snprintf(delim, sizeof(delim), "--%s", boundary);
    const char *end = body + len;
    const char *p = memmem(body, len, delim, (size_t)dl);
    if (!p) return -1;
    int n = 0;
    for (;;) {
        p += dl;
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') return n; /* closing delimiter */
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n') return -1;
        p += 2;
        /* headers end at an empty line; a part may have no headers at all */
        const char *content, *hend;
        if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') {
            hend = p;
            content = p + 2;
        } else {
            const char *blank = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
            if (!blank) return -1;
            hend = blank + 2; /* keeps the last header's CRLF */
            content = blank + 4;
        }
        char ndelim[84];
        int ndl = snprintf(ndelim, sizeof(ndelim), "\r\n%s", delim);
        const char *next = memmem(content, (size_t)(end - content), ndelim, (size_t)ndl);
        if (!next) return -1;
        if (n < maxparts) {
            kn_multipart_part *pt = &parts[n];
            memset(pt, 0, sizeof(*pt));
            pt->data = content;
            pt->len = (size_t)(next - content);
            part_headers(p, hend, pt);
        }
        n++;
        p = next + 2;
    }
}
