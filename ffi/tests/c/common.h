/* Helpers shared by the C test programs: checks that exit with the line
 * and status text, and the payload generator the Rust side mirrors
 * (ffi/tests/common/mod.rs). */
#ifndef SHMPORT_TEST_COMMON_H
#define SHMPORT_TEST_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmport.h"

/* A shmport call must return `want`. */
#define EXPECT(call, want)                                                    \
  do {                                                                        \
    shmport_status got_ = (call);                                             \
    if (got_ != (shmport_status)(want)) {                                     \
      fprintf(stderr, "%s:%d: %s\n  returned %u (%s), expected %u (%s)\n",    \
              __FILE__, __LINE__, #call, (unsigned)got_,                      \
              shmport_status_str(got_), (unsigned)(want),                     \
              shmport_status_str(want));                                      \
      exit(1);                                                                \
    }                                                                         \
  } while (0)

#define OK(call) EXPECT(call, SHMPORT_OK)

/* A plain condition. */
#define CHECK(cond)                                                           \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,        \
              #cond);                                                         \
      exit(1);                                                                \
    }                                                                         \
  } while (0)

/* splitmix64: sizes and seeds. */
static inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* Size of message `i` in direction `dir` (0: Rust to C, 1: C to Rust):
 * mostly small, some medium, a few large, two in ten thousand out of line
 * (over half of the default 1 MiB ring). */
static inline size_t message_size(uint64_t i, uint64_t dir) {
  uint64_t x = mix64(i ^ (dir << 40));
  uint64_t class_ = x % 10000, r = x >> 20;
  if (class_ < 8000) return (size_t)(r % 512);
  if (class_ < 9900) return (size_t)(512 + r % 7680);
  if (class_ < 9998) return (size_t)(8192 + r % 57344);
  return (size_t)(600000 + r % 100000);
}

/* Fill `buf` with message `i`'s bytes in direction `dir` (xorshift64,
 * little-endian words). */
static inline void message_fill(uint8_t *buf, size_t len, uint64_t i,
                                uint64_t dir) {
  uint64_t x = mix64(i * 2 + dir) | 1;
  size_t k = 0;
  while (k < len) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    for (int b = 0; b < 8 && k < len; b++, k++) buf[k] = (uint8_t)(x >> (8 * b));
  }
}

/* FNV-1a over 8-byte little-endian words, then the tail, then the length
 * (the Rust tests' checksum). */
static inline uint64_t checksum(const uint8_t *p, size_t len) {
  uint64_t h = 0xcbf29ce484222325ull;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w = 0;
    for (int b = 0; b < 8; b++) w |= (uint64_t)p[i + b] << (8 * b);
    h ^= w;
    h *= 0x100000001b3ull;
  }
  for (; i < len; i++) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h ^ (uint64_t)len;
}

#endif
