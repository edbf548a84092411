/* config.h: the stack's configuration: one INI-style file plus KILN_*
 * environment overrides.
 *
 * File syntax: `[section]` headers (dots allowed: `[model.cnn]`), `key = value`
 * lines, `#` or `;` comments, values unquoted (surrounding whitespace trimmed).
 * Keys are addressed as "section.key" ("kafka.brokers", "model.cnn.arch").
 *
 * Override rule: kn_config_get("kafka.brokers") first looks at the environment
 * variable KILN_KAFKA_BROKERS (upper-cased, '.' and '-' become '_'), then the
 * file, then the caller's default. */
#ifndef KN_CONFIG_H
#define KN_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef struct kn_config kn_config;

/* An empty configuration; caller frees with kn_config_destroy. NULL on OOM. */
kn_config *kn_config_new(void);
void kn_config_destroy(kn_config *cfg);

/* Adds the entries of an INI file (later entries win). On error nothing is
 * kept from that file and errbuf names the file and line. */
int kn_config_load_file(kn_config *cfg, const char *path, char *errbuf, size_t errsz);

/* Same, from a string (`name` is used in error messages). */
int kn_config_load_string(kn_config *cfg, const char *text, const char *name, char *errbuf,
                          size_t errsz);

/* Sets a value (copied). */
int kn_config_set(kn_config *cfg, const char *key, const char *value);

/* The value for key: environment override, then file, then def. The returned
 * pointer is owned by cfg (or the environment) and valid until cfg changes. */
const char *kn_config_get(const kn_config *cfg, const char *key, const char *def);

/* Typed getters. Integers accept k/m/g suffixes (powers of 1024). On a value
 * that does not parse, *ok (if not NULL) is set to 0 and def is returned. */
int64_t kn_config_get_int(const kn_config *cfg, const char *key, int64_t def, int *ok);
double kn_config_get_double(const kn_config *cfg, const char *key, double def, int *ok);
int kn_config_get_bool(const kn_config *cfg, const char *key, int def, int *ok);

/* Calls fn for every distinct section name that starts with prefix (e.g.
 * prefix "model." yields "model.cnn", "model.gpt"), in file order. */
void kn_config_foreach_section(const kn_config *cfg, const char *prefix,
                               void (*fn)(const char *section, void *ctx), void *ctx);

/* Calls fn for every entry in the order first set, with where its value came
 * from: the file (or kn_config_load_string's name) and line, or NULL and 0
 * for a value set by kn_config_set. The environment is not visited. */
void kn_config_foreach(const kn_config *cfg,
                       void (*fn)(const char *key, const char *value, const char *file, int line,
                                  void *ctx),
                       void *ctx);

/* The line of the file that set key (*file names it); 0 and *file NULL when
 * the key was set by kn_config_set or is absent. */
int kn_config_origin(const kn_config *cfg, const char *key, const char **file);

/* The environment variable name for a key, e.g. "KILN_KAFKA_BROKERS". */
void kn_config_env_name(const char *key, char *out, size_t outsz);

#endif
