/*
 * pybmpmon._rowpath, third part: BLAKE2b (RFC 7693) with an 8-octet digest
 * and a personalization string, no key: what rows.attribute_digest asks of
 * hashlib.blake2b(digest_size=8, person=...), without the Python calls.
 * Written from RFC 7693 §2-3; tests/test_rowpath.py checks it against
 * hashlib on inputs of every length around the block boundaries.
 */

#include "_rowpath.h"
#include <stdint.h>
#include <string.h>

/* RFC 7693 §2.6: the initialization vector (SHA-512's). */
static const uint64_t IV[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL,
    0xa54ff53a5f1d36f1ULL, 0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL,
    0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL};

/* RFC 7693 §2.7: the message schedule; rounds 10 and 11 reuse rows 0 and 1. */
static const uint8_t SIGMA[10][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0}};

static inline uint64_t
rotr(uint64_t x, int n)
{
    return (x >> n) | (x << (64 - n));
}

static inline uint64_t
load64(const uint8_t *p)  /* little-endian, whatever the host */
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* RFC 7693 §3.1: the mixing function G. */
#define MIX(a, b, c, d, x, y)                                   \
    do {                                                        \
        v[a] = v[a] + v[b] + (x); v[d] = rotr(v[d] ^ v[a], 32); \
        v[c] = v[c] + v[d];       v[b] = rotr(v[b] ^ v[c], 24); \
        v[a] = v[a] + v[b] + (y); v[d] = rotr(v[d] ^ v[a], 16); \
        v[c] = v[c] + v[d];       v[b] = rotr(v[b] ^ v[c], 63); \
    } while (0)

/* RFC 7693 §3.2: the compression function F of one 128-octet block; `done`
   octets hashed so far including this block (under 2**64 here). */
static void
compress(uint64_t h[8], const uint8_t block[128], uint64_t done, int last)
{
    uint64_t v[16], m[16];
    for (int i = 0; i < 16; i++)
        m[i] = load64(block + 8 * i);
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = IV[i];
    }
    v[12] ^= done;  /* the high word of the 128-bit counter stays 0 */
    if (last)
        v[14] = ~v[14];
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = SIGMA[r % 10];
        MIX(0, 4, 8, 12, m[s[0]], m[s[1]]);
        MIX(1, 5, 9, 13, m[s[2]], m[s[3]]);
        MIX(2, 6, 10, 14, m[s[4]], m[s[5]]);
        MIX(3, 7, 11, 15, m[s[6]], m[s[7]]);
        MIX(0, 5, 10, 15, m[s[8]], m[s[9]]);
        MIX(1, 6, 11, 12, m[s[10]], m[s[11]]);
        MIX(2, 7, 8, 13, m[s[12]], m[s[13]]);
        MIX(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < 8; i++)
        h[i] ^= v[i] ^ v[i + 8];
}

/* The 8-octet BLAKE2b digest of the parts, one after the other, as a
   big-endian signed number (rows._signed64).  person: 16 octets, zero
   padded. */
int64_t
rp_blake2b_64(const uint8_t *const *parts, const size_t *sizes, int count,
              const uint8_t person[16])
{
    uint64_t h[8];
    uint8_t block[128];
    size_t filled = 0;
    uint64_t done = 0, result = 0;

    memcpy(h, IV, sizeof h);
    /* Parameter block (RFC 7693 §2.5): digest length 8, no key, fanout 1,
       depth 1; the personalization is its last 16 octets (words 6, 7). */
    h[0] ^= 0x01010000ULL | 8;
    h[6] ^= load64(person);
    h[7] ^= load64(person + 8);
    for (int k = 0; k < count; k++) {
        const uint8_t *p = parts[k];
        size_t n = sizes[k];
        while (n > 0) {
            size_t take;
            if (filled == sizeof block) {  /* more follows: not the last block */
                done += sizeof block;
                compress(h, block, done, 0);
                filled = 0;
            }
            take = sizeof block - filled < n ? sizeof block - filled : n;
            memcpy(block + filled, p, take);
            filled += take;
            p += take;
            n -= take;
        }
    }
    memset(block + filled, 0, sizeof block - filled);
    done += filled;
    compress(h, block, done, 1);
    /* The digest is the first 8 octets of h, little-endian: h[0] itself;
       read big-endian, it is h[0] with its bytes reversed. */
    for (int i = 0; i < 8; i++)
        result = (result << 8) | ((h[0] >> (8 * i)) & 0xff);
    return (int64_t)result;
}

/* rows.attribute_digest of a set decoded from the wire, or NULL without an
   exception when the Python code must do it (no wire, a next hop that is
   not text).  New ref. */
PyObject *
rp_wire_digest(PyObject *next_hop, PyObject *wire)
{
    static const uint8_t person[16] = "pybmpmon-wire";  /* rows._WIRE_DOMAIN */
    const uint8_t *parts[3];
    size_t sizes[3];
    Py_ssize_t n = 0;
    const char *hop = "";

    if (!PyBytes_CheckExact(wire) || PyBytes_GET_SIZE(wire) == 0)
        return NULL;
    if (PyUnicode_CheckExact(next_hop)) {
        if ((hop = PyUnicode_AsUTF8AndSize(next_hop, &n)) == NULL) {
            PyErr_Clear();  /* e.g. a lone surrogate: Python's encode() raises */
            return NULL;
        }
    }
    else if (next_hop != Py_None)
        return NULL;
    /* next hop's UTF-8 (when any), NUL, the wire */
    parts[0] = (const uint8_t *)hop;
    sizes[0] = (size_t)n;
    parts[1] = (const uint8_t *)"";
    sizes[1] = 1;
    parts[2] = (const uint8_t *)PyBytes_AS_STRING(wire);
    sizes[2] = (size_t)PyBytes_GET_SIZE(wire);
    return PyLong_FromLongLong(rp_blake2b_64(parts, sizes, 3, person));
}

/* wire_digest(next_hop, wire) -> int or None */
PyObject *
rp_wire_digest_function(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *digest;
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "wire_digest(next_hop, wire) takes 2 arguments");
        return NULL;
    }
    digest = rp_wire_digest(args[0], args[1]);
    if (digest == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return digest;
}
