/* crc32c.h: CRC-32C (Castagnoli), as used by shard headers. Uses the SSE4.2
 * crc32 instruction when the CPU has it, a slicing-by-8 table otherwise;
 * both give the same answer. */
#ifndef KN_CRC32C_H
#define KN_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends crc (0 to start) over len bytes: crc32c(crc32c(0, a), b) equals
 * crc32c(0, a || b). */
uint32_t kn_crc32c(uint32_t crc, const void *data, size_t len);

/* The portable implementation, exposed so tests can compare both paths. */
uint32_t kn_crc32c_sw(uint32_t crc, const void *data, size_t len);

#endif
