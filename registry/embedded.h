/* embedded.h: files compiled into kiln-registry by embed.cmake. */
#ifndef REG_EMBEDDED_H
#define REG_EMBEDDED_H

typedef struct {
    const char *name; /* "001_init.sql"; the table ends with {NULL, NULL} */
    const char *sql;  /* NUL-terminated */
} reg_migration;

extern const reg_migration reg_migrations[];
extern const char reg_web_index[]; /* the web page, NUL-terminated */

#endif
